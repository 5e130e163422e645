"""Trigger types: one file each, and :data:`TRIGGERS`, the registry everything else goes through.

A trigger type owns its spec and its parser (every problem names the field and the fix), the
queries it plans (built here, pure; the observer only runs them and merges equal templates), how
its observations are judged, and whether it reads metrics. The parser, the observer and the
evaluation iterate :data:`TRIGGERS`; nothing outside a type's own file tests for a type. A name
that is not registered is an error listing the allowed ones (:func:`get_trigger_type`).

Adding a type: a file beside these with its spec (a :class:`TriggerKind`) and a
:class:`TriggerType`, its entry below, and its schema in ``crds/retrainpolicies.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from retrain_operator.domain.triggers import accuracy_decay, data_volume, drift, query, schedule
from retrain_operator.domain.triggers.accuracy_decay import (
    AccuracyDecay,
    accuracy_levels,
    baseline_for,
    evaluate_accuracy,
)
from retrain_operator.domain.triggers.base import (
    NO_BASELINE,
    Buckets,
    Facts,
    Observation,
    PreviousState,
    QueryPlan,
    Series,
    State,
    Target,
    TriggerKind,
    TriggerResult,
    TriggerSpec,
    TriggerType,
    evaluate_threshold,
)
from retrain_operator.domain.triggers.data_volume import DataVolumeTrigger, evaluate_data_volume
from retrain_operator.domain.triggers.drift import DriftTrigger, evaluate_drift
from retrain_operator.domain.triggers.query import COMPARISONS, QueryTrigger, evaluate_query
from retrain_operator.domain.triggers.schedule import ScheduleTrigger, evaluate_schedule

__all__ = [
    "COMPARISONS",
    "NO_BASELINE",
    "TRIGGERS",
    "TRIGGER_TYPES",
    "AccuracyDecay",
    "Buckets",
    "DataVolumeTrigger",
    "DriftTrigger",
    "Facts",
    "Observation",
    "PreviousState",
    "QueryPlan",
    "QueryTrigger",
    "ScheduleTrigger",
    "Series",
    "State",
    "Target",
    "TriggerKind",
    "TriggerResult",
    "TriggerSpec",
    "TriggerType",
    "UnknownTriggerType",
    "accuracy_levels",
    "baseline_for",
    "evaluate_accuracy",
    "evaluate_data_volume",
    "evaluate_drift",
    "evaluate_query",
    "evaluate_schedule",
    "evaluate_threshold",
    "get_trigger_type",
]

# The order is the order of every message that lists the types.
TRIGGERS: Mapping[str, TriggerType[Any]] = MappingProxyType(
    {
        t.name: t
        for t in (
            accuracy_decay.TRIGGER,
            query.TRIGGER,
            schedule.TRIGGER,
            drift.TRIGGER,
            data_volume.TRIGGER,
        )
    }
)
TRIGGER_TYPES: tuple[str, ...] = tuple(TRIGGERS)


class UnknownTriggerType(ValueError):
    """A trigger type that is not in the registry; the message lists the allowed names."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.allowed = TRIGGER_TYPES
        super().__init__(f"unknown trigger type {name!r}; allowed: {', '.join(TRIGGER_TYPES)}")


def get_trigger_type(name: str) -> TriggerType[Any]:
    """The registered trigger type called ``name``, or :class:`UnknownTriggerType`."""
    try:
        return TRIGGERS[name]
    except KeyError:
        raise UnknownTriggerType(name) from None
