"""One evaluation of a policy's triggers against what its status remembers.

Shared by the operator and ``retrain-operator evaluate``, so the command line judges a policy
exactly as the operator would. The status supplies what the triggers compare with: each trigger's
previous state (hysteresis, ``for``), the champion's score, reference histograms and training rows,
and the last start of a retrain (schedules). Limits: a trigger without an observation is judged on
"not observed", never skipped.

One trigger's failure is its own: an exception while judging it makes that trigger inconclusive with
the reason ``EvaluationError`` and the exception's message (sanitised, bounded), and the others are
judged as usual, so a schedule still fires next to a drift trigger that cannot be computed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

from retrain_operator.domain.api import PolicySpec
from retrain_operator.domain.policy_status import PolicyStatus
from retrain_operator.domain.triggers import Facts, Observation, PreviousState, TriggerResult, get_trigger_type


def evaluate_triggers(
    spec: PolicySpec, *, observations: Mapping[str, Observation], status: PolicyStatus, created: datetime, now: datetime
) -> list[TriggerResult]:
    """Every trigger's result, in the order of the spec."""
    previous = status.previous_states()
    model = status.model
    active = status.active_job
    starts = (created, status.last_retrain_started, active.started if active is not None else None)
    reference = max(t for t in starts if t is not None)
    rows = model.rows if model is not None else None
    results = []
    for trigger in spec.triggers:
        facts = Facts(
            observation=observations.get(trigger.name) or Observation.missing("NoData", "not observed"),
            previous=previous.get(trigger.name, PreviousState()),
            now=now,
            last_start=reference,
            model_score=status.model_score,
            model_reference=model.reference if model is not None else None,
            training_rows=float(rows) if rows else None,
        )
        try:
            result = get_trigger_type(trigger.type).evaluate(trigger.kind, trigger, facts)
        except Exception as exc:  # one trigger's bug or bad data never silences the policy's other triggers
            result = TriggerResult(
                trigger.name,
                trigger.type,
                "inconclusive",
                None,
                None,
                None,
                f"evaluating this trigger failed: {sanitise(exc)}",
                "EvaluationError",
            )
        results.append(result)
    return results


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
MAX_ERROR = 300


def sanitise(exc: BaseException, *, limit: int = MAX_ERROR) -> str:
    """An exception as one bounded line for status and events: its type and message, control characters folded."""
    text = _CONTROL.sub(" ", f"{type(exc).__name__}: {exc}").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def accuracy_now(
    spec: PolicySpec, results: Sequence[TriggerResult], model_score: float | None
) -> tuple[float | None, float | None]:
    """Baseline and current accuracy from the first trigger that measures accuracy and has a value."""
    for trigger, result in zip(spec.triggers, results, strict=True):
        found = get_trigger_type(trigger.type).accuracy(trigger.kind, result, model_score)
        if found is not None:
            return found
    return None, None
