"""``kubectl retrain`` against the real API server: every command, read back from the objects it changed.

Two ways to get statuses. The four ``why`` cases (firing, pending, over budget, not worth it) are
written to the status subresource as the operator's own domain code builds them (tests/plugin_cases.py)
for policies created with kubectl, so no operator runs and each state holds still. The rest runs the
real operator on the real stack: it trains twice (the second a forced candidate), and the plugin's
``history`` reads the runs from status, the Jobs, the ledger and the registry in S3, ``rollback``
refuses a version the registry does not hold and moves the champion to one it does, and ``suspend`` /
``resume`` flip ``spec.suspend``. The installed ``kubectl-retrain`` script runs as a subprocess
throughout, and once as ``kubectl retrain`` through kubectl's plugin discovery.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.controlplane import ControlPlane
from sandbox.processes import kubectl_path, venv_bin
from tests.plugin_cases import CASES, build
from tests.support.cluster import Kubectl
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration
PLUGIN = str(venv_bin() / "kubectl-retrain")


def retrain(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as kubectl would run it."""
    result = subprocess.run(
        [PLUGIN, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60, check=False
    )
    print(f"\n$ kubectl retrain {' '.join(args)}\n{result.stdout}{result.stderr}", end="")
    return result


def _patch_status(admin: Kubectl, kind: str, name: str, namespace: str, status: dict[str, Any]) -> None:
    patched = admin(
        "patch",
        kind,
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert patched.returncode == 0, patched.stderr


def _without_status(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "status"}


@pytest.fixture
def four_policies(admin: Kubectl, unique_namespace: str) -> dict[str, dict[str, Any]]:
    """The four cases created with kubectl, their statuses (built for the uid the server gave) written."""
    namespace = unique_namespace
    now = datetime.now(UTC)
    built: dict[str, Any] = {}
    for case in CASES:
        body = build(case, namespace=namespace, now=now).policy
        body["metadata"] = {"name": case, "namespace": namespace}
        applied = admin.apply(_without_status(body))
        assert applied.returncode == 0, applied.stderr
        uid = admin.get("retrainpolicy", case, namespace=namespace)["metadata"]["uid"]
        built[case] = build(case, namespace=namespace, now=now, uid=uid)
        _patch_status(admin, "retrainpolicy", case, namespace, built[case].policy["status"])
    budget = built["over-budget"].budget
    assert budget is not None
    applied = admin.apply(_without_status(budget))
    assert applied.returncode == 0, applied.stderr
    _patch_status(admin, "retrainbudget", budget["metadata"]["name"], namespace, budget["status"])
    return {case: admin.get("retrainpolicy", case, namespace=namespace) for case in CASES}


def test_why_list_and_history_read_what_the_server_holds(
    control_plane: ControlPlane, admin: Kubectl, unique_namespace: str, four_policies: dict[str, dict[str, Any]]
) -> None:
    kubeconfig, namespace = control_plane.admin_kubeconfig, unique_namespace
    expected = {
        "firing": [
            "Decision: Retrain (TriggerFiring)",
            "accuracy-drop (accuracyDecay) is firing since",
            "Running: Job",
        ],
        "pending": ["Decision: Wait (TriggerPending)", "is pending since", "history shorter than 5m"],
        "over-budget": ["Decision: Wait (OverBudget)", "RetrainBudget team: runs 1 of 1 (0 left)", "exhausted"],
        "not-worth-it": ["Decision: Wait (NotWorthRetraining)", "Cost-benefit: not worth it: expected benefit 30.8"],
    }
    for case, lines in expected.items():
        result = retrain(kubeconfig, "why", case, "-n", namespace)
        assert result.returncode == 0, result.stderr
        for line in lines:
            assert line in result.stdout, f"{line!r} not in:\n{result.stdout}"
        held = four_policies[case]["status"]
        trigger = held["triggers"][0]
        assert f"value {trigger['value']:.4g}, threshold {trigger['threshold']:.4g}" in result.stdout
        assert held["lastDecision"]["message"] in result.stdout

    as_json = json.loads(retrain(kubeconfig, "why", "pending", "-n", namespace, "-o", "json").stdout)
    held = four_policies["pending"]["status"]
    assert as_json["decision"]["since"] == held["lastDecision"]["time"]
    assert as_json["triggers"][0]["since"] == held["triggers"][0]["since"]

    listed = retrain(kubeconfig, "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == set(CASES)
    for case, body in four_policies.items():
        status = body["status"]
        assert status["phase"] in rows[case] and f"({status['lastDecision']['reason']})" in rows[case]
        assert (status.get("model") or {}).get("version", "-") in rows[case]
    items = yaml.safe_load(retrain(kubeconfig, "list", "-n", namespace, "-o", "yaml").stdout)["items"]
    assert {i["name"]: i["phase"] for i in items} == {c: b["status"]["phase"] for c, b in four_policies.items()}
    everywhere = retrain(kubeconfig, "list", "-A")
    assert everywhere.stdout.startswith("NAMESPACE") and f"{namespace}   over-budget" in everywhere.stdout

    history = retrain(kubeconfig, "history", "over-budget", "-n", namespace, "--no-registry", "-o", "json")
    runs = json.loads(history.stdout)["retrains"]
    job = four_policies["over-budget"]["status"]["lastRetrain"]["job"]
    assert [(r["job"], r["cost"], r["promoted"], r["modelVersion"]) for r in runs] == [(job, 0.125, True, "v1")]
    text = retrain(kubeconfig, "history", "over-budget", "-n", namespace)
    assert 'Registry s3://models/churn/ not read: ModelStore "default" does not exist.' in text.stdout

    # kubectl finds the plugin on PATH and passes every argument through.
    env = {**os.environ, "PATH": f"{venv_bin()}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def through_kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_path(), "retrain", *args, "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        print(f"\n$ kubectl retrain {' '.join(args)}  (through kubectl)\n{result.stdout}{result.stderr}", end="")
        return result

    discovered = through_kubectl("why", "firing", "-n", namespace)
    assert discovered.returncode == 0, discovered.stderr
    assert discovered.stdout.startswith(f"RetrainPolicy {namespace}/firing (model churn) is Training.")
    via_kubectl = json.loads(through_kubectl("why", "firing", "-n", namespace, "-o", "json").stdout)
    direct = json.loads(retrain(kubeconfig, "why", "firing", "-n", namespace, "-o", "json").stdout)
    # Only the cooldown's remaining seconds depend on the moment of the call.
    assert via_kubectl.pop("cooldown")["lastRetrainStartedAt"] == direct.pop("cooldown")["lastRetrainStartedAt"]
    assert via_kubectl == direct
    plugins = subprocess.run([kubectl_path(), "plugin", "list"], capture_output=True, text=True, env=env, check=False)
    assert str(venv_bin() / "kubectl-retrain") in plugins.stdout


def test_namespace_from_the_context_and_clear_errors(
    control_plane: ControlPlane, unique_namespace: str, four_policies: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    config = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    config["contexts"].append({"name": "tenant", "context": {**current["context"], "namespace": unique_namespace}})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    listed = retrain(kubeconfig, "--context", "tenant", "list", "-o", "json")
    assert sorted(i["name"] for i in json.loads(listed.stdout)["items"]) == sorted(CASES)
    missing = retrain(kubeconfig, "--context", "tenant", "why", "nope")
    assert missing.returncode == 1
    assert f'error: RetrainPolicy "nope" not found in namespace "{unique_namespace}"' in missing.stderr
    elsewhere = retrain(kubeconfig, "why", "firing")  # the current context names no namespace: default
    assert elsewhere.returncode == 1 and 'not found in namespace "default"' in elsewhere.stderr
    bad = retrain(kubeconfig, "--context", "tenant", "rollback", "firing", "--to", "../etc")
    assert bad.returncode == 1 and "--to: invalid version id '../etc'" in bad.stderr
    champion = retrain(kubeconfig, "--context", "tenant", "rollback", "firing", "--to", "v1")
    assert champion.returncode == 1 and "version v1 is already the champion" in champion.stderr


def test_force_suspend_resume_and_rollback_write_what_the_operator_reads(
    control_plane: ControlPlane, admin: Kubectl, unique_namespace: str, four_policies: dict[str, dict[str, Any]]
) -> None:
    kubeconfig, namespace = control_plane.admin_kubeconfig, unique_namespace

    def held(name: str) -> dict[str, Any]:
        return admin.get("retrainpolicy", name, namespace=namespace)

    forced = retrain(kubeconfig, "force", "pending", "-n", namespace)
    assert forced.returncode == 0, forced.stderr
    value = held("pending")["metadata"]["annotations"]["retrain.dev/force-retrain"]
    assert f"retrain.dev/force-retrain={value} set" in forced.stdout
    again = retrain(kubeconfig, "force", "pending", "-n", namespace, "--value", value)
    assert again.returncode == 1 and "each value forces once" in again.stderr
    why = retrain(kubeconfig, "why", "pending", "-n", namespace).stdout
    assert f"Force: retrain.dev/force-retrain='{value}' is waiting for the next evaluation." in why

    assert retrain(kubeconfig, "suspend", "over-budget", "-n", namespace).returncode == 0
    assert held("over-budget")["spec"]["suspend"] is True
    assert "already suspended" in retrain(kubeconfig, "suspend", "over-budget", "-n", namespace).stdout
    assert retrain(kubeconfig, "resume", "over-budget", "-n", namespace).returncode == 0
    assert held("over-budget")["spec"]["suspend"] is False

    rolled = retrain(kubeconfig, "rollback", "not-worth-it", "--to", "v0", "-n", namespace)
    assert rolled.returncode == 0, rolled.stderr
    assert held("not-worth-it")["metadata"]["annotations"]["retrain.dev/rollback-to"] == "v0"
    assert "could not check the version in the registry" in rolled.stdout


def test_history_and_rollback_with_the_real_operator_and_registry(stack: Stack) -> None:
    """The real loop: two trainings (the second forced by the plugin), then a rollback through the plugin."""
    kubeconfig, namespace = stack.cluster.kubeconfig, stack.namespace
    stack.push_accuracy(stack.model, [0.80] * 80)
    policy = stack.example_policy()
    policy["spec"]["decision"].update(limits={"window": "24h", "runs": 5, "cost": 100}, prices={"cpuHour": 1.2})
    assert stack.apply(policy).returncode == 0
    first = wait_for("the first model", lambda: stack.status("churn").get("model"), timeout=120, log=stack.operator.log)

    why = retrain(kubeconfig, "why", "churn", "-n", namespace)
    assert why.returncode == 0 and "accuracy-drop (accuracyDecay) is" in why.stdout
    assert f"Model: {first['version']} (accuracy" in why.stdout

    forced = retrain(kubeconfig, "force", "churn", "-n", namespace)
    assert forced.returncode == 0, forced.stderr
    second = wait_for(
        "the forced run",
        lambda: (
            (stack.status("churn").get("lastRetrain") or {}).get("modelVersion") not in (None, first["version"])
            and stack.status("churn")["lastRetrain"]
        ),
        timeout=120,
        log=stack.operator.log,
    )
    assert second["promoted"] is False

    history = retrain(kubeconfig, "history", "churn", "-n", namespace, "-o", "json")
    assert history.returncode == 0, history.stderr
    view = json.loads(history.stdout)
    assert view["registry"]["problem"] is None and view["registry"]["champion"] == first["version"]
    runs = view["retrains"]
    assert [(r["modelVersion"], r["promoted"], r["outcome"]) for r in runs] == [
        (first["version"], True, "Succeeded"),
        (second["modelVersion"], False, "Succeeded"),
    ]
    assert runs[0]["trigger"] == "accuracy-drop" and "force-retrain" in runs[1]["trigger"]
    ledger = {c["key"]: c for c in stack.status("churn")["spending"]["ledger"]}
    for run in runs:
        assert run["cost"] == ledger[f"{namespace}/{run['job']}"]["cost"] and run["durationSeconds"] > 0
    retrain(kubeconfig, "history", "churn", "-n", namespace)

    nope = retrain(kubeconfig, "rollback", "churn", "--to", "20990101T000000Z-deadbeef", "-n", namespace)
    assert nope.returncode == 1
    assert "no such version '20990101T000000Z-deadbeef'" in nope.stderr and second["modelVersion"] in nope.stderr

    rolled = retrain(kubeconfig, "rollback", "churn", "--to", second["modelVersion"], "-n", namespace)
    assert rolled.returncode == 0, rolled.stderr
    annotations = stack.get("retrainpolicies", "churn")["metadata"]["annotations"]
    assert annotations["retrain.dev/rollback-to"] == second["modelVersion"]
    rollback = stack.rollback_outcome("churn")
    assert rollback["outcome"] == "Succeeded", rollback
    assert stack.status("churn")["model"]["version"] == second["modelVersion"]
    twice = retrain(kubeconfig, "rollback", "churn", "--to", second["modelVersion"], "-n", namespace)
    assert twice.returncode == 1 and "already" in twice.stderr

    assert retrain(kubeconfig, "suspend", "churn", "-n", namespace).returncode == 0
    assert stack.get("retrainpolicies", "churn")["spec"]["suspend"] is True
    wait_for(
        "the Suspended phase in list",
        lambda: "Suspended" in retrain(kubeconfig, "list", "-n", namespace).stdout,
        timeout=60,
        log=stack.operator.log,
    )
    assert retrain(kubeconfig, "resume", "churn", "-n", namespace).returncode == 0
    assert stack.get("retrainpolicies", "churn")["spec"]["suspend"] is False
    retrain(kubeconfig, "list", "-n", namespace)
    retrain(kubeconfig, "why", "churn", "-n", namespace)
