"""A policy with metrics but nothing to compare them with says NoBaseline, never MetricsUnavailable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from retrain_operator.domain.api import parse_policy_spec
from retrain_operator.domain.decision import decide
from retrain_operator.domain.evaluation import evaluate_triggers
from retrain_operator.domain.policy_status import PolicyStatus
from retrain_operator.domain.triggers import Observation
from tests.policies import policy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CREATED = datetime(2026, 11, 1, tzinfo=UTC)
MODEL_BASELINE = {"metric": "model_accuracy", "window": "5m", "baseline": "Model", "maxDrop": 0.05}
VOLUME = {"name": "volume", "dataVolume": {"metric": "labelled_total", "minRelative": 0.5}}
TRAINED = {"model": {"version": "v1", "score": 0.95, "metric": "accuracy", "rows": 1000}}


def evaluated(
    triggers: list[dict[str, Any]], observations: dict[str, Observation], status: dict[str, Any] | None = None
) -> tuple[str, dict[str, dict[str, Any]], str]:
    spec = parse_policy_spec(policy(triggers=triggers)["spec"])
    before = PolicyStatus.from_dict(status)
    results = evaluate_triggers(spec, observations=observations, status=before, created=CREATED, now=NOW)
    decision = decide(spec, results=results, active_job=None, last_retrain_start=None, now=NOW)
    after = before.evaluated(results=results, decision=decision, suspended=False, generation=1, now=NOW).to_dict()
    conditions = {c["type"]: c for c in after["conditions"]}
    return decision.reason, conditions, decision.message


def test_model_baseline_without_a_model_is_no_baseline() -> None:
    triggers = [{"name": "acc", "accuracyDecay": MODEL_BASELINE}]
    reason, conditions, message = evaluated(triggers, {"acc": Observation(value=0.9)})
    assert reason == "NoBaseline"
    assert "fixedBaseline" in message
    assert conditions["MetricsAvailable"]["status"] == "True"
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "NoBaseline")


def test_relative_volume_without_training_rows_is_no_baseline() -> None:
    reason, conditions, _ = evaluated([VOLUME], {"volume": Observation(value=120.0)})
    assert reason == "NoBaseline"
    assert conditions["MetricsAvailable"]["status"] == "True"


@pytest.mark.parametrize(
    ("observations", "status", "reason"),
    [
        # A trained model gives both baselines: judged as usual.
        ({"acc": Observation(value=0.94), "volume": Observation(value=1.0)}, TRAINED, "NoTriggerFiring"),
        ({"acc": Observation(value=0.5), "volume": Observation(value=1.0)}, TRAINED, "TriggerFiring"),
        # A metric that is truly missing is still MetricsUnavailable, and wins over a missing baseline.
        (
            {"acc": Observation.missing("NoData", "no samples"), "volume": Observation(value=1.0)},
            None,
            "MetricsUnavailable",
        ),
        (
            {"acc": Observation(value=0.9), "volume": Observation.missing("NoData", "no series")},
            None,
            "MetricsUnavailable",
        ),
    ],
)
def test_other_cases_keep_their_reasons(
    observations: dict[str, Observation], status: dict[str, Any] | None, reason: str
) -> None:
    triggers = [{"name": "acc", "accuracyDecay": MODEL_BASELINE}, VOLUME]
    got, conditions, _ = evaluated(triggers, observations, status)
    assert got == reason
    assert conditions["MetricsAvailable"]["status"] == ("False" if reason == "MetricsUnavailable" else "True")
