"""dataVolume: fires when enough new labelled samples arrived since the current model was trained.

Reads a Prometheus counter's increase over the time since training, so each trigger is read alone
(its window is its own model's age). ``minRelative`` needs the row count of a model the operator
trained; without one the trigger has no baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from retrain_operator.domain import promql
from retrain_operator.domain.numbers import number
from retrain_operator.domain.times import rfc3339
from retrain_operator.domain.triggers.base import (
    MAX_METRIC_NAME,
    METRIC_NAME,
    NO_BASELINE,
    Facts,
    Observation,
    PreviousState,
    QueryPlan,
    Series,
    Target,
    TriggerKind,
    TriggerResult,
    TriggerSpec,
    TriggerType,
    missing,
    since_based,
)
from retrain_operator.settings.durations import format_duration
from retrain_operator.settings.reader import Reader


@dataclass(frozen=True)
class DataVolumeTrigger(TriggerKind):
    """New labelled samples since the current model was trained, from a Prometheus counter."""

    type_name: ClassVar[str] = "dataVolume"

    metric: str
    min_new_samples: float | None = None
    min_relative: float | None = None


def evaluate_data_volume(
    trigger: TriggerSpec,
    *,
    observation: Observation,
    training_rows: float | None,
    previous: PreviousState,
    now: datetime,
) -> TriggerResult:
    spec = trigger.kind
    assert isinstance(spec, DataVolumeTrigger)
    unobserved = observation.problem is not None or observation.value is None or math.isnan(observation.value)
    if spec.min_relative is not None:
        if not training_rows and not unobserved:
            return missing(
                trigger,
                problem=NO_BASELINE,
                detail="minRelative needs the row count of a model trained by the operator",
                threshold=None,
                previous=previous,
                now=now,
            )
        threshold = spec.min_relative * (training_rows or 0.0)
        basis = f"{number(spec.min_relative)} x {number(training_rows)} training rows"
    else:
        assert spec.min_new_samples is not None
        threshold, basis = spec.min_new_samples, "minNewSamples"
    if unobserved:
        return missing(
            trigger,
            problem=observation.problem or "NoData",
            detail=observation.detail or f"no value for {spec.metric}",
            threshold=threshold if training_rows or spec.min_relative is None else None,
            previous=previous,
            now=now,
        )
    value = observation.value
    assert value is not None
    breach = value >= threshold
    verb = "reached" if breach else "below"
    return since_based(
        trigger,
        breach=breach,
        value=value,
        threshold=threshold,
        previous=previous,
        now=now,
        message=f"{value:.0f} new samples of {spec.metric} {observation.detail or 'since the model was trained'}, "
        f"{verb} {threshold:.0f} ({basis})",
    )


class DataVolumeType(TriggerType[DataVolumeTrigger]):
    """The dataVolume trigger: ``increase()`` of a counter since the current model was trained."""

    spec_type = DataVolumeTrigger

    def parse(self, r: Reader, body: Mapping[str, Any], path: str) -> DataVolumeTrigger | None:
        metric = r.str_(body, "metric", path, required=True, pattern=METRIC_NAME, max_length=MAX_METRIC_NAME)
        absolute = r.num(body, "minNewSamples", path, minimum=0.0)
        relative = r.num(body, "minRelative", path, minimum=0.0)
        if (absolute is None) == (relative is None):
            r.fail(path, "set exactly one of minNewSamples (a count) or minRelative (a share of training rows)")
            return None
        if metric is None:
            return None
        return DataVolumeTrigger(metric=metric, min_new_samples=absolute, min_relative=relative)

    def moving_counter(self, spec: DataVolumeTrigger, matchers: Mapping[str, str]) -> str | None:
        return promql.selector(spec.metric, matchers)

    def plan(
        self,
        spec: DataVolumeTrigger,
        trigger: TriggerSpec,
        targets: Sequence[Target],
        *,
        labels: tuple[str, ...],
        now: datetime,
    ) -> QueryPlan:
        (target,) = targets
        ceiling = target.limits.max_range
        if target.trained_at is None:
            # Nothing says since when: the longest range a query may read, and the words say so.
            window = ceiling
            span = (
                f"in the last {format_duration(window)} (no training time known: counted over the longest range a "
                f"query may read, {target.limits.ceiling('range').who})"
            )
        else:
            age = max(1.0, (now - target.trained_at).total_seconds())
            # A model older than the admin's query range is counted over that range only: a lower bound.
            window = min(age, ceiling)
            span = f"in the last {format_duration(window)} (since {rfc3339(target.trained_at)})"
            if window < age:
                span = (
                    f"in the last {format_duration(window)} only (trained {format_duration(age)} ago, at "
                    f"{rfc3339(target.trained_at)}; that is the longest range a query may read, "
                    f"{target.limits.ceiling('range').who})"
                )
        query = promql.counter_increase(metric=spec.metric, matchers=target.matchers, window=window)

        def read(results: Sequence[Sequence[Series]]) -> list[Observation]:
            if not results[0]:
                shown = promql.selector(spec.metric, target.matchers)
                return [Observation.missing("NoData", f"no series of {shown} {span}")]
            return [Observation(value=results[0][0].value, detail=span)]

        return QueryPlan(((query, now),), read)

    def evaluate(self, spec: DataVolumeTrigger, trigger: TriggerSpec, facts: Facts) -> TriggerResult:
        return evaluate_data_volume(
            trigger,
            observation=facts.observation,
            training_rows=facts.training_rows,
            previous=facts.previous,
            now=facts.now,
        )


TRIGGER = DataVolumeType()
