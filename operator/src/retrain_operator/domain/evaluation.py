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

from retrain_operator.domain.api import AccuracyDecay, DataVolumeTrigger, DriftTrigger, PolicySpec, QueryTrigger
from retrain_operator.domain.policy_status import PolicyStatus
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


def evaluate_triggers(
    spec: PolicySpec, *, observations: Mapping[str, Observation], status: PolicyStatus, created: datetime, now: datetime
) -> list[TriggerResult]:
    """Every trigger's result, in the order of the spec."""
    previous = status.previous_states()
    model = status.model
    active = status.active_job
    starts = (created, status.last_retrain_started, active.started if active is not None else None)
    reference = max(t for t in starts if t is not None)
    results = []
    for trigger in spec.triggers:
        before = previous.get(trigger.name, PreviousState())
        observation = observations.get(trigger.name) or Observation.missing("NoData", "not observed")
        if isinstance(trigger.kind, AccuracyDecay):
            results.append(
                evaluate_accuracy(
                    trigger, observation=observation, model_score=status.model_score, previous=before, now=now
                )
            )
        elif isinstance(trigger.kind, QueryTrigger):
            results.append(evaluate_query(trigger, observation=observation, previous=before, now=now))
        elif isinstance(trigger.kind, DriftTrigger):
            results.append(
                evaluate_drift(
                    trigger,
                    observation=observation,
                    previous=before,
                    now=now,
                    model_reference=model.reference if model is not None else None,
                )
            )
        elif isinstance(trigger.kind, DataVolumeTrigger):
            rows = model.rows if model is not None else None
            results.append(
                evaluate_data_volume(
                    trigger,
                    observation=observation,
                    previous=before,
                    now=now,
                    training_rows=float(rows) if rows else None,
                )
            )
        else:
            results.append(evaluate_schedule(trigger, reference=reference, now=now))
    return results


def accuracy_now(
    spec: PolicySpec, results: Sequence[TriggerResult], model_score: float | None
) -> tuple[float | None, float | None]:
    """Baseline and current accuracy from the first accuracyDecay trigger that has a value."""
    for trigger, result in zip(spec.triggers, results, strict=True):
        if isinstance(trigger.kind, AccuracyDecay) and result.value is not None:
            baseline, _ = baseline_for(trigger.kind, model_score)
            return baseline, result.value
    return None, None
