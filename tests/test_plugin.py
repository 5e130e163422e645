"""``kubectl retrain``'s views, from statuses the operator's own domain code builds (tests/plugin_cases.py).

The API-server side (every command against a real control plane, and discovery by kubectl) is in
tests/test_plugin_e2e.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from retrain_operator.domain.jobs import ANNOTATION_ACTION, ANNOTATION_TRIGGER
from retrain_operator.plugin import main as plugin
from retrain_operator.plugin import views
from tests.plugin_cases import CASES, build

NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)


def why(case: str) -> tuple[dict, str]:
    built = build(case, namespace="team-a", now=NOW)
    view = views.explain(built.policy, budget=built.budget, now=NOW)
    return view, views.explain_text(view, now=NOW)


@pytest.mark.parametrize(
    ("case", "decision", "lines"),
    [
        (
            "firing",
            "Decision: Retrain (TriggerFiring) since 2026-12-02T14:00:00Z (0s ago).",
            [
                "accuracy-drop (accuracyDecay) is firing since 2026-12-02T13:54:00Z (6m ago): "
                "value 0.8, threshold 0.86",
                "Running: Job firing-retrain-",
                "Cooldown: 1h between retrain starts; the last started 2026-12-02T14:00:00Z (0s ago), "
                "so it ends in 1h.",
                "Model: v1 (accuracy 0.91), trained 2026-12-02T12:15:00Z (1h ago).",
            ],
        ),
        (
            "pending",
            "Decision: Wait (TriggerPending) since 2026-12-02T14:00:00Z (0s ago).",
            [
                "accuracy-drop (accuracyDecay) is pending since 2026-12-02T13:58:00Z (2m ago): "
                "value 0.8, threshold 0.85",
                "history shorter than 5m",
                "Triggers (0 of 1 firing):",
                "Cooldown: 1h between retrain starts; no retrain has started yet, so none applies.",
            ],
        ),
        (
            "over-budget",
            "Decision: Wait (OverBudget) since 2026-12-02T14:00:00Z (0s ago).",
            [
                "RetrainBudget team: runs 1+1 > 1 in the window ending 2026-12-03T00:00:00Z",
                "Budget: RetrainBudget team: runs 1 of 1 (0 left), cost 0.125 of 10 (9.875 left) in the window "
                "2026-12-02T00:00:00Z to 2026-12-03T00:00:00Z; exhausted (used up: runs 1/1).",
                "the last started 2026-12-02T12:00:00Z (2h ago), so it is over.",
            ],
        ),
        (
            "not-worth-it",
            "Decision: Wait (NotWorthRetraining) since 2026-12-02T14:00:00Z (0s ago).",
            [
                # benefit 11 points x 0.8 (the prior) x 0.5 per point per day x 7 days; cost 1 core x 15 min
                # (the one past run) x 2 per hour + 50 per retrain.
                "Cost-benefit: not worth it: expected benefit 30.8 vs expected cost 50.5, net -19.7 (minimum 0); "
                "accuracy drop 11 points, 80% of it recovered by a retrain, expected duration 15m.",
                "is firing since 2026-12-02T13:54:00Z (6m ago)",
            ],
        ),
    ],
)
def test_why_says_the_decision_and_the_numbers_behind_it(case: str, decision: str, lines: list[str]) -> None:
    view, text = why(case)
    assert text.splitlines()[1] == decision
    for line in lines:
        assert line in text, f"{line!r} not in:\n{text}"
    assert view["decision"]["reason"] == decision.split("(")[1].split(")")[0]


def test_why_names_each_state_only_where_it_applies() -> None:
    _, firing = why("firing")
    _, pending = why("pending")
    _, budget = why("over-budget")
    assert "Budget: none" in firing and "Cost-benefit: no gate" in firing
    assert "Model:" not in pending  # nothing trained yet
    assert "exhausted" not in firing and "exhausted" in budget


def test_why_as_json_holds_every_trigger_field() -> None:
    view, _ = why("pending")
    trigger = view["triggers"][0]
    assert trigger == {
        "name": "accuracy-drop",
        "type": "accuracyDecay",
        "state": "pending",
        "value": 0.8,
        "threshold": 0.85,
        "since": "2026-12-02T13:58:00Z",
        "message": trigger["message"],
    }
    assert json.loads(json.dumps(view)) == view


def test_why_of_a_policy_not_yet_evaluated() -> None:
    built = build("pending", namespace="team-a", now=NOW)
    del built.policy["status"]
    text = views.explain_text(views.explain(built.policy, budget=None, now=NOW), now=NOW)
    assert "is not yet evaluated." in text
    assert "No decision yet" in text and "Triggers: none evaluated yet." in text


def test_why_says_a_force_or_rollback_is_waiting() -> None:
    built = build("pending", namespace="team-a", now=NOW)
    built.policy["metadata"]["annotations"] = {"retrain.dev/force-retrain": "now", "retrain.dev/rollback-to": "v0"}
    text = views.explain_text(views.explain(built.policy, budget=None, now=NOW), now=NOW)
    assert "Force: retrain.dev/force-retrain='now' is waiting" in text
    assert "Rollback: retrain.dev/rollback-to='v0' is waiting" in text


def test_list_rows_and_table() -> None:
    rows = [views.summary(build(c, namespace="team-a", now=NOW).policy, now=NOW) for c in CASES]
    by_name = {r["name"]: r for r in rows}
    assert by_name["firing"]["phase"] == "Training"
    assert by_name["firing"]["nextEvaluation"].startswith("when Job firing-retrain-")
    assert by_name["pending"]["modelVersion"] is None and by_name["over-budget"]["modelVersion"] == "v1"
    assert by_name["not-worth-it"]["lastDecision"]["reason"] == "NotWorthRetraining"
    assert by_name["pending"]["nextEvaluation"] == "within 30s"
    text = views.list_table(rows, all_namespaces=True, now=NOW + timedelta(minutes=3)).splitlines()
    assert text[0].split() == [
        "NAMESPACE",
        "NAME",
        "MODEL",
        "PHASE",
        "LAST",
        "DECISION",
        "SINCE",
        "MODEL",
        "VERSION",
        "NEXT",
        "EVALUATION",
    ]
    assert text[3].split()[:7] == ["team-a", "over-budget", "churn", "Watching", "Wait", "(OverBudget)", "3m"]
    assert views.list_table(rows, all_namespaces=False, now=NOW).startswith("NAME ")


def test_history_merges_status_jobs_ledger_and_registry() -> None:
    built = build("over-budget", namespace="team-a", now=NOW)
    first = built.policy["status"]["history"][0]["job"]
    older = {
        "metadata": {
            "name": "over-budget-retrain-old",
            "annotations": {ANNOTATION_TRIGGER: "nightly", ANNOTATION_ACTION: "Train"},
            "creationTimestamp": "2026-12-01T03:00:00Z",
        },
        "status": {"startTime": "2026-12-01T03:00:00Z", "completionTime": "2026-12-01T03:20:00Z", "succeeded": 1},
    }
    promote = {"metadata": {"name": "rollback-job", "annotations": {ANNOTATION_ACTION: "Promote"}}, "status": {}}
    registry = views.RegistryView(
        "s3://models/churn/",
        versions={
            "v0": views.VersionInfo("v0", job="over-budget-retrain-old", trigger="nightly", score=0.88, promoted=False),
            "v1": views.VersionInfo("v1", job=first, trigger="accuracy-drop", score=0.91, promoted=True),
        },
        champion="v1",
    )
    view = views.history(
        built.policy, jobs=[older, promote], ledgers=[built.budget["status"]], registry=registry, now=NOW
    )
    retrains = view["retrains"]
    assert [r["job"] for r in retrains] == ["over-budget-retrain-old", first]
    old, last = retrains
    assert old == {
        "job": "over-budget-retrain-old",
        "trigger": "nightly",
        "startedAt": "2026-12-01T03:00:00Z",
        "finishedAt": "2026-12-01T03:20:00Z",
        "outcome": "Succeeded",
        "modelVersion": "v0",
        "promoted": False,
        "score": 0.88,
        "durationSeconds": 1200.0,
    }
    assert last["cost"] == 0.125 and last["costState"] == "Settled" and last["promoted"] is True
    assert last["durationSeconds"] == 900.0 and last["trigger"] == "accuracy-drop"
    text = views.history_text(view, now=NOW).splitlines()
    assert text[0].split() == ["JOB", "STARTED", "TRIGGER", "DURATION", "OUTCOME", "COST", "VERSION", "PROMOTED"]
    assert text[1].split() == ["over-budget-retrain-old", "1d", "ago", "nightly", "20m", "Succeeded", "-", "v0", "no"]
    assert text[2].split() == [first, "2h", "ago", "accuracy-drop", "15m", "Succeeded", "0.125", "v1", "yes"]
    assert "Champion: v1." in text


def test_history_says_why_the_registry_was_not_read() -> None:
    built = build("pending", namespace="team-a", now=NOW)
    view = views.history(
        built.policy, jobs=[], ledgers=[], registry=views.RegistryView("s3://m/", problem="no Secret"), now=NOW
    )
    text = views.history_text(view, now=NOW)
    assert "No retrains recorded for team-a/pending." in text
    assert "Registry s3://m/ not read: no Secret." in text


def test_version_info_from_metadata() -> None:
    metadata = {
        "run": {"job": "j-1", "trigger": "accuracy-drop"},
        "promotion": {"gate": {"passed": False, "reason": "did not beat the champion"}},
        "durationSeconds": 12.5,
        "score": 0.9,
        "metric": "accuracy",
        "trainedAt": "2026-12-02T10:00:00Z",
    }
    info = views.version_info("v2", metadata, promoted={"v1"})
    assert (info.job, info.trigger, info.promoted, info.gate_passed) == ("j-1", "accuracy-drop", False, False)
    assert views.version_info("v1", {}, promoted={"v1"}).promoted is True


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "-"), (0.9824561403508771, "0.9825"), (0.8999999999999999, "0.9"), (12345.6, "12346")],
)
def test_numbers_are_rounded(value: float | None, shown: str) -> None:
    assert views.num(value) == shown


def test_all_namespaces_applies_to_list_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        plugin.main(["why", "x", "-A"])
    assert exit_.value.code == 2
    assert "-A/--all-namespaces applies to list only" in capsys.readouterr().err


def test_flags_before_or_after_the_command() -> None:
    parser = plugin._parser()
    before = parser.parse_args(["-n", "a", "--context", "c", "-o", "json", "why", "p"])
    after = parser.parse_args(["why", "p", "-n", "a", "--context", "c", "-o", "json"])
    assert (before.namespace, before.context, before.output) == (after.namespace, after.context, after.output)
    assert parser.parse_args(["list"]).output == "table"


def _kubeconfig(tmp_path: Path, *, namespace: str | None) -> Path:
    context: dict = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        # Port 9 on loopback: nothing listens, so a call fails at once.
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "main", "context": context}],
        "current-context": "main",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_unknown_context_is_an_error_naming_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _kubeconfig(tmp_path, namespace=None)
    assert plugin.main(["list", "--kubeconfig", str(path), "--context", "other"]) == 1
    assert f'error: --context "other" is not in {path}; its contexts: main' in capsys.readouterr().err


def test_an_unreachable_server_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _kubeconfig(tmp_path, namespace="team-a")
    assert plugin.main(["why", "churn", "--kubeconfig", str(path)]) == 1
    assert "error: cannot reach the API server" in capsys.readouterr().err


def test_the_namespace_comes_from_the_context(tmp_path: Path) -> None:
    from retrain_operator.plugin.kube import connect

    assert connect(kubeconfig=str(_kubeconfig(tmp_path, namespace="team-a")), context=None).namespace == "team-a"
    assert connect(kubeconfig=str(_kubeconfig(tmp_path, namespace=None)), context="main").namespace == "default"
