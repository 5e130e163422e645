"""What the README says of the tools and the examples in the sandbox holds.

The tools: ``eval "$(make -s env)"`` and the sandbox's ``env`` file put ``retrain-operator`` and
``kubectl`` on PATH. The examples: on the world ``sandbox/examples.py`` sets up (the very function
the sandbox calls), every policy and budget of ``examples/`` applies as it is, unchanged, to the
real API server, and the real operator, watching the examples' namespaces as the sandbox's does,
finds every example policy valid.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sandbox.cluster import LocalCluster, install_tenant
from sandbox.examples import ENDPOINT, EXAMPLE_NAMESPACES, STORE, example_world
from sandbox.processes import OperatorProcess
from sandbox.prometheus import PrometheusServer
from sandbox.s3 import S3Server
from sandbox.story import CHART_VALUES, write_env
from tests.support.cluster import Kubectl
from tests.support.stack import wait_for

ROOT = Path(__file__).resolve().parents[1]
# The admin's examples describe a real cluster (services the sandbox does not run); the README says so.
ADMIN_EXAMPLES = {"metricsendpoint.yaml", "modelstore.yaml"}
TENANT_EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.name not in ADMIN_EXAMPLES)


def on_path(script: str) -> dict[str, str]:
    """Where ``retrain-operator`` and ``kubectl`` are found after ``script``, in a shell with a bare PATH."""
    found = subprocess.run(
        ["sh", "-c", f"{script} && command -v retrain-operator && command -v kubectl"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")},
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    retrain, kubectl = found.stdout.split()[-2:]
    return {"retrain-operator": retrain, "kubectl": kubectl}


def test_make_env_puts_the_tools_on_path() -> None:
    bare = subprocess.run(["sh", "-c", "command -v retrain-operator"], env={"PATH": "/usr/bin:/bin"}, check=False)
    assert bare.returncode != 0  # not on PATH by itself: the README says where they are
    tools = on_path('eval "$(make -s env)"')
    assert tools == {
        "retrain-operator": str(ROOT / ".venv/bin/retrain-operator"),
        "kubectl": str(ROOT / ".venv/bin/kubectl"),
    }


def test_the_sandbox_env_file_puts_the_tools_on_path_and_names_the_cluster(tmp_path: Path) -> None:
    env = write_env(tmp_path / "env", kubeconfig=tmp_path / "admin.kubeconfig")
    tools = on_path(f". {env}")
    assert Path(tools["retrain-operator"]).parent == Path(tools["kubectl"]).parent
    shown = subprocess.run(["sh", "-c", f'. {env} && echo "$KUBECONFIG"'], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == str(tmp_path / "admin.kubeconfig")


def test_the_readme_says_so() -> None:
    readme = (ROOT / "README.md").read_text()
    for words in ('eval "$(make -s env)"', "source .sandbox/env", "`team-a` and `team-b`", "sandbox/examples.py"):
        assert words in readme, words
    for path in TENANT_EXAMPLES:
        assert f"examples/{path.name}" in readme, path.name


@pytest.fixture
def examples_world(
    admin: Kubectl, cluster: LocalCluster, prometheus: PrometheusServer, s3_server: S3Server
) -> Iterator[str]:
    """The sandbox's world of the examples on the session's cluster; yields the training ServiceAccount."""
    docs = example_world(
        prometheus_url=prometheus.url,
        s3_endpoint=s3_server.endpoint,
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    applied = admin.apply(*docs)
    assert applied.returncode == 0, applied.stderr
    try:
        accounts = {install_tenant(cluster.kubeconfig, values=CHART_VALUES, namespace=ns) for ns in EXAMPLE_NAMESPACES}
        (account,) = accounts
        yield account
    finally:
        admin("delete", "metricsendpoint", ENDPOINT, "--ignore-not-found", "--wait=false")
        admin("delete", "modelstore", STORE, "--ignore-not-found", "--wait=false")
        for namespace in EXAMPLE_NAMESPACES:
            admin("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")


@pytest.mark.integration
def test_every_example_applies_as_it_is_and_is_valid(
    admin: Kubectl, operator_kubeconfig: Path, examples_world: str, tmp_path: Path
) -> None:
    applied = admin("apply", *(arg for p in TENANT_EXAMPLES for arg in ("-f", str(p))))
    assert applied.returncode == 0, applied.stderr
    policies = [
        (doc["metadata"]["namespace"], doc["metadata"]["name"])
        for p in TENANT_EXAMPLES
        for doc in yaml.safe_load_all(p.read_text())
        if doc and doc["kind"] == "RetrainPolicy"
    ]
    assert len(policies) == 3
    operator = OperatorProcess(
        kubeconfig=operator_kubeconfig,
        log_path=tmp_path / "operator.log",
        args=[
            "--operator-namespace",
            "retrain-system",
            "--trainer-image",
            "retrain-operator:test",
            "--training-service-account",
            examples_world,
            *(f"--namespace={ns}" for ns in EXAMPLE_NAMESPACES),
        ],
    ).start()
    try:

        def valid(namespace: str, name: str) -> dict[str, str] | None:
            body = admin.get("retrainpolicy", name, namespace=namespace) or {}
            conditions = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}
            return conditions.get("Valid")

        for namespace, name in policies:
            condition = wait_for(
                f"{namespace}/{name} evaluated", lambda ns=namespace, n=name: valid(ns, n), timeout=90, log=operator.log
            )
            assert condition["status"] == "True", (namespace, name, condition)
    finally:
        operator.stop()
