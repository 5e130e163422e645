"""No silent stalls: whatever raises while a policy or budget is judged ends up in its status and an event.

Component tests with the fake Kubernetes port and a fake metric source: one trigger's exception leaves
that trigger inconclusive (EvaluationError) while the others are judged and can fire; a policy whose
whole evaluation raises says EvaluationError in Ready and a Warning event, once per message, and the
next policy of the cycle is still reconciled; an invalid budget gets Valid=False with the field; a
rollback to a value that is no version id starts nothing; the admin's estimator list and query ceilings
are checked before any Job and the list reaches the Job; a dataVolume count stays within the range ceiling.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from retrain_operator.domain.api import check_query_cost, parse_policy_spec
from retrain_operator.domain.evaluation import sanitise
from retrain_operator.domain.limits import QueryLimits
from retrain_operator.domain.triggers import TRIGGERS, Target
from retrain_operator.domain.triggers.drift import DriftType
from retrain_operator.domain.triggers.schedule import ScheduleType
from retrain_operator.reconcile.budgets import Accountant
from retrain_operator.reconcile.telemetry import Telemetry
from retrain_operator.settings.durations import DurationError, parse_duration
from tests.policies import policy
from tests.test_reconcile import NOW, Harness, ModelAccuracy, named

NIGHTLY = {"name": "nightly", "schedule": {"cron": "0 3 * * *"}}


def states(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {t["name"]: (t["state"], t["message"]) for t in status["triggers"]}


async def test_one_triggers_exception_never_stops_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise ZeroDivisionError("division by zero\nin a\x00bad place")

    monkeypatch.setattr(DriftType, "evaluate", broken)
    h = Harness(ModelAccuracy({"churn": 0.5}))
    drift = {"name": "drift", "drift": {"metric": "f", "reference": {"source": "Fixed", "counts": {"a": {"+Inf": 1}}},
                                        "threshold": 0.2}}  # fmt: skip
    body = named("churn", "u1", triggers=[drift, policy()["spec"]["triggers"][0], NIGHTLY])
    h.add(body)
    await h.cycle()
    status = h.status()
    seen = states(status)
    assert seen["drift"][0] == "inconclusive"
    assert seen["drift"][1] == "evaluating this trigger failed: ZeroDivisionError: division by zero in a bad place"
    accuracy = policy()["spec"]["triggers"][0]["name"]
    assert seen[accuracy][0] == "firing", "the policy's other triggers are judged and can fire"
    assert len(h.kube.created_jobs) == 1


async def test_a_policy_whose_evaluation_raises_says_so_and_the_others_carry_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(ModelAccuracy({"churn": 0.5, "fraud": 0.5}))
    h.add(named("bad", "u1", model="churn"))
    h.add(named("good", "u2", model="fraud"))
    real = h.scheduler._reconciler._retrain

    async def flaky(entry: Any, *args: Any, **kwargs: Any) -> Any:
        if entry.name == "bad":
            raise OverflowError("date value out of range")
        return await real(entry, *args, **kwargs)

    monkeypatch.setattr(h.scheduler._reconciler, "_retrain", flaky)
    await h.cycle()
    bad = h.status("bad")
    ready = {c["type"]: c for c in bad["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "EvaluationError")
    assert "OverflowError: date value out of range" in ready["message"]
    assert bad["lastDecision"]["reason"] == "EvaluationError" and bad["phase"] == "Degraded"
    events = [(e["involvedObject"]["name"], e["reason"], e["type"]) for e in h.kube.events]
    assert ("bad", "EvaluationError", "Warning") in events
    assert h.status("good")["lastDecision"]["reason"] == "TriggerFiring"
    assert [h.kube.jobs[("team-a", n)]["metadata"]["ownerReferences"][0]["name"] for n in h.kube.created_jobs] == [
        "good"
    ]
    h.now += timedelta(minutes=1)
    await h.cycle()
    assert [e for e in h.kube.events if e["reason"] == "EvaluationError"] == [
        e for e in h.kube.events[:3] if e["reason"] == "EvaluationError"
    ], "the same message is announced once"


async def test_an_invalid_budget_gets_a_status_and_an_event() -> None:
    kube = Harness(ModelAccuracy({})).kube
    body = {
        "metadata": {"namespace": "team-a", "name": "team", "resourceVersion": "1", "generation": 1},
        "spec": {"window": "366d366d", "limits": {"runs": 1}},
    }
    kube.budgets[("team-a", "team")] = body
    accountant = Accountant(kube=kube, clock=lambda: NOW, telemetry=Telemetry())
    assert await accountant.refresh(body)
    stored = kube.budgets[("team-a", "team")]["status"]
    (valid,) = [c for c in stored["conditions"] if c["type"] == "Valid"]
    assert (valid["status"], valid["reason"]) == ("False", "InvalidSpec")
    assert valid["message"].startswith("spec.window: '366d366d' is longer than the maximum of 366d")
    assert [(e["reason"], e["type"]) for e in kube.events] == [("InvalidSpec", "Warning")]


async def test_rollback_to_a_path_starts_nothing_and_says_why() -> None:
    h = Harness(ModelAccuracy({"churn": 0.95}))
    body = named("churn", "u1")
    body["metadata"]["annotations"] = {"retrain.dev/rollback-to": "../../etc/passwd"}
    h.add(body)
    await h.cycle()
    last = h.status()["lastRollback"]
    assert last["outcome"] == "Failed" and "invalid version id '../../etc/passwd'" in last["message"]
    assert h.kube.created_jobs == []
    assert [e["reason"] for e in h.kube.events] == ["RollbackFailed"]
    await h.cycle()
    assert h.kube.created_jobs == []
    assert [e["reason"] for e in h.kube.events].count("RollbackFailed") == 1, "the same value acts once"


async def test_estimator_outside_the_admins_list_is_invalid_and_the_list_reaches_the_job() -> None:
    h = Harness(ModelAccuracy({"churn": 0.5, "fraud": 0.5}))
    h.scheduler._reconciler.estimator_allowlist = ("sklearn", "xgboost")
    builtin = {"data": {"key": "k"}, "target": "y", "estimator": "lightgbm.LGBMClassifier"}
    h.add(named("other", "u1", model="churn", training={"builtin": builtin}))
    h.add(named("xgb", "u2", model="fraud", training={"builtin": {**builtin, "estimator": "xgboost.XGBClassifier"}}))
    await h.cycle()
    valid = {c["type"]: c for c in h.status("other")["conditions"]}["Valid"]
    assert valid["status"] == "False" and valid["message"].startswith("spec.training.builtin.estimator: ")
    assert "--estimator-allowlist" in valid["message"] and "training.estimatorAllowlist" in valid["message"]
    (name,) = h.kube.created_jobs
    env = {
        e["name"]: e.get("value")
        for e in h.kube.jobs[("team-a", name)]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["RETRAIN_ESTIMATOR_ALLOWLIST"] == "sklearn,xgboost"


async def test_a_policy_over_a_query_ceiling_is_invalid_and_queries_nothing() -> None:
    source = ModelAccuracy({"churn": 0.5})
    h = Harness(source)
    body = named("churn", "u1")
    body["spec"]["triggers"][0]["for"] = "99999d"
    h.add(body)
    await h.cycle()
    valid = {c["type"]: c for c in h.status()["conditions"]}["Valid"]
    assert valid["message"] == ("spec.triggers[0].for: '99999d' is longer than 3650d, the longest any duration may be")
    body = named("churn", "u1")
    body["metadata"]["generation"] = 2
    body["spec"]["triggers"][0]["for"] = "2d"
    h.add(body)
    await h.cycle()
    valid = {c["type"]: c for c in h.status()["conditions"]}["Valid"]
    assert valid["message"].startswith(
        "spec.triggers[0].for: 2d is longer than the ceiling of 1d for for (set by the cluster admin with the "
        "operator flag --max-for, chart value queryLimits.maxFor); shorten it"
    )
    assert source.queries == [] and h.kube.created_jobs == []


@pytest.mark.parametrize(
    ("changes", "field", "ceiling"),
    [
        ({"for": "2h"}, "spec.triggers[0].for", "--max-for"),
        ({"window": "2h"}, "spec.triggers[0].accuracyDecay.window", "--max-window"),
        ({"for": "1h", "window": "1h"}, "spec.triggers[0]", "--max-query-range"),
    ],
)
def test_ceilings_name_the_field_and_the_flag(changes: dict[str, str], field: str, ceiling: str) -> None:
    body = policy()
    trigger = body["spec"]["triggers"][0]
    if "for" in changes:
        trigger["for"] = changes["for"]
    if "window" in changes:
        trigger["accuracyDecay"]["window"] = changes["window"]
    limits = QueryLimits(max_range=3600 * 1.5, max_for=3600, max_window=3600, max_offset=3600)
    problems = check_query_cost(parse_policy_spec(body["spec"]), limits=limits)
    assert any(p.field == field and ceiling in p.message for p in problems), problems


def test_raw_promql_ranges_and_offsets_meet_the_ceilings() -> None:
    body = policy(triggers=[{"name": "q", "query": {"promql": "sum(rate(x[40d] offset 90d))", "operator": ">",
                                                    "threshold": 1}}])  # fmt: skip
    problems = [str(p) for p in check_query_cost(parse_policy_spec(body["spec"]))]
    assert any(p.startswith("spec.triggers[0].query.promql: the longest range selector") for p in problems)
    assert any("--max-offset" in p for p in problems)


def test_data_volume_counts_no_further_back_than_the_range_ceiling() -> None:
    spec = parse_policy_spec(
        policy(triggers=[{"name": "d", "dataVolume": {"metric": "samples_total", "minNewSamples": 10}}])["spec"]
    )
    trigger = spec.triggers[0]
    target = Target(matchers={"model": "m"}, interval=60, trained_at=NOW - timedelta(days=400))
    plan = TRIGGERS["dataVolume"].plan(trigger.kind, trigger, [target], labels=("model",), now=NOW)
    assert plan is not None and "[31d]" in plan.queries[0][0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("999999999999999999999d", "longer than 3650d"),
        ("99999999999d", "longer than 3650d"),
        ("1s1s1s1s1s", "at most 4"),
        ("1" * 70 + "s", "at most 64 characters"),
    ],
)
def test_durations_are_bounded(text: str, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        parse_duration(text)


def test_a_cron_that_never_fires_is_invalid() -> None:
    from retrain_operator.settings.reader import Reader

    r = Reader()
    assert ScheduleType().parse(r, {"cron": "0 0 30 2 *"}, "spec.triggers[0].schedule") is None
    assert [str(p) for p in r.problems] == [
        "spec.triggers[0].schedule.cron: '0 0 30 2 *' never fires: no date matches it (e.g. 30 February); give a "
        "day that exists, e.g. '0 0 28 2 *'"
    ]


def test_sanitise_bounds_and_folds() -> None:
    assert sanitise(ValueError("a\r\nb\tc" + "x" * 1000)).startswith("ValueError: a b c")
    assert len(sanitise(ValueError("x" * 1000))) == 300
