"""One evaluation of a policy's triggers against what its status remembers.

Shared by the operator and ``retrain-operator evaluate``, so the command line judges a policy
exactly as the operator would. The status supplies what the triggers compare with: each trigger's
previous state (hysteresis, ``for``), the champion's score, reference histograms and training rows,
and the last start of a retrain (schedules). Limits: a trigger without an observation is judged on
"not observed", never skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from retrain_operator.domain.api import AccuracyDecay, DataVolumeTrigger, DriftTrigger, PolicySpec, QueryTrigger
from retrain_operator.domain.times import parse_rfc3339
from retrain_operator.domain.triggers import (
    Observation,
    PreviousState,
    TriggerResult,
    baseline_for,
    evaluate_accuracy,
    evaluate_data_volume,
    evaluate_drift,
    evaluate_query,
    evaluate_schedule,
)


def previous_states(status: Mapping[str, Any]) -> dict[str, PreviousState]:
    out = {}
    for item in status.get("triggers") or []:
        if isinstance(item, Mapping) and item.get("name"):
            out[str(item["name"])] = PreviousState(item.get("state"), parse_rfc3339(item.get("since")))
    return out


def evaluate_triggers(spec: PolicySpec, *, observations: Mapping[str, Observation], status: Mapping[str, Any],
                      created: datetime, now: datetime) -> list[TriggerResult]:
    """Every trigger's result, in the order of the spec."""
    previous = previous_states(status)
    model_score = (status.get("model") or {}).get("score")
    last_start = parse_rfc3339((status.get("lastRetrain") or {}).get("startedAt"))
    active_start = parse_rfc3339((status.get("activeJob") or {}).get("startedAt"))
    reference = max([t for t in (created, last_start, active_start) if t is not None])
    results = []
    for trigger in spec.triggers:
        before = previous.get(trigger.name, PreviousState())
        observation = observations.get(trigger.name) or Observation.missing("NoData", "not observed")
        if isinstance(trigger.kind, AccuracyDecay):
            results.append(evaluate_accuracy(trigger, observation=observation,
                                             model_score=float(model_score) if model_score is not None else None,
                                             previous=before, now=now))
        elif isinstance(trigger.kind, QueryTrigger):
            results.append(evaluate_query(trigger, observation=observation, previous=before, now=now))
        elif isinstance(trigger.kind, DriftTrigger):
            champion_reference = (status.get("model") or {}).get("reference")
            results.append(evaluate_drift(
                trigger, observation=observation, previous=before, now=now,
                model_reference=champion_reference if isinstance(champion_reference, Mapping) else None))
        elif isinstance(trigger.kind, DataVolumeTrigger):
            rows = (status.get("model") or {}).get("rows")
            results.append(evaluate_data_volume(trigger, observation=observation, previous=before, now=now,
                                                training_rows=float(rows) if rows else None))
        else:
            results.append(evaluate_schedule(trigger, reference=reference, now=now))
    return results


def accuracy_now(spec: PolicySpec, results: Sequence[TriggerResult],
                 model_score: float | None) -> tuple[float | None, float | None]:
    """Baseline and current accuracy from the first accuracyDecay trigger that has a value."""
    for trigger, result in zip(spec.triggers, results, strict=True):
        if isinstance(trigger.kind, AccuracyDecay) and result.value is not None:
            baseline, _ = baseline_for(trigger.kind, model_score)
            return baseline, result.value
    return None, None
