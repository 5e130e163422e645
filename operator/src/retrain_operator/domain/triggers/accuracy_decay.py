"""accuracyDecay: fires when a model's live accuracy drops below its baseline by more than ``maxDrop``.

The baseline is the current model's holdout score (or a fixed value). The live accuracy is a gauge
averaged over ``window``; triggers that share a template (metric, window, ``for``, label names) are
read together in one query, whatever the number of policies.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from retrain_operator.domain import promql
from retrain_operator.domain.triggers.base import (
    MAX_METRIC_NAME,
    METRIC_NAME,
    NO_BASELINE,
    Facts,
    Observation,
    PreviousState,
    QueryPlan,
    Series,
    Span,
    Target,
    TriggerKind,
    TriggerResult,
    TriggerSpec,
    TriggerType,
    evaluate_threshold,
    fmt,
    missing,
)
from retrain_operator.settings.durations import format_duration
from retrain_operator.settings.reader import Reader


@dataclass(frozen=True)
class AccuracyDecay(TriggerKind):
    """``accuracyDecay``: a gauge over a window against the current model's score (or a fixed baseline)."""

    type_name: ClassVar[str] = "accuracyDecay"

    metric: str
    max_drop: float
    window: float = 300.0
    baseline: Literal["Model", "Fixed"] = "Model"
    fixed_baseline: float | None = None
    clear_drop: float | None = None
    relative: bool = False


def accuracy_levels(spec: AccuracyDecay, baseline: float) -> tuple[float, float]:
    """Threshold and clear level of an accuracyDecay trigger for a given baseline."""
    clear_drop = spec.max_drop if spec.clear_drop is None else spec.clear_drop
    if spec.relative:
        return baseline * (1 - spec.max_drop), baseline * (1 - clear_drop)
    return baseline - spec.max_drop, baseline - clear_drop


def baseline_for(spec: AccuracyDecay, model_score: float | None) -> tuple[float | None, str]:
    """The accuracy to compare with, and where it came from (for the message)."""
    if spec.baseline == "Model" and model_score is not None:
        return model_score, "current model's holdout score"
    if spec.fixed_baseline is not None:
        return spec.fixed_baseline, "fixed baseline"
    return None, ""


def evaluate_accuracy(
    trigger: TriggerSpec, *, observation: Observation, model_score: float | None, previous: PreviousState, now: datetime
) -> TriggerResult:
    spec = trigger.kind
    assert isinstance(spec, AccuracyDecay)
    baseline, source = baseline_for(spec, model_score)
    if baseline is None and (observation.problem is not None or observation.value is None):
        # No data and no baseline: the missing data is what to fix first, and it is what MetricsAvailable says.
        return missing(
            trigger,
            problem=observation.problem or "NoData",
            detail=observation.detail or f"no value for {spec.metric}",
            threshold=None,
            previous=previous,
            now=now,
        )
    if baseline is None:
        return missing(
            trigger,
            problem=NO_BASELINE,
            detail="no baseline: the policy has no trained model yet and no fixedBaseline",
            threshold=None,
            previous=previous,
            now=now,
        )
    threshold, clear = accuracy_levels(spec, baseline)
    result = evaluate_threshold(
        trigger,
        observation=observation,
        operator="<",
        threshold=threshold,
        clear_level=clear,
        previous=previous,
        now=now,
        what=f"{spec.metric} over {format_duration(spec.window)}",
    )
    return TriggerResult(
        result.name,
        result.type,
        result.state,
        result.value,
        result.threshold,
        result.since,
        f"{result.message} (baseline {fmt(baseline)}, {source})",
        result.problem,
    )


def _index(samples: Sequence[Series], labels: Sequence[str]) -> dict[tuple[str, ...], Series]:
    return {tuple(s.labels.get(label, "") for label in labels): s for s in samples}


class AccuracyDecayType(TriggerType[AccuracyDecay]):
    """The accuracyDecay trigger: queries merged per metric and window, ``for`` judged from Prometheus history."""

    spec_type = AccuracyDecay
    history = True

    def parse(self, r: Reader, body: Mapping[str, Any], path: str) -> AccuracyDecay | None:
        baseline = r.enum(body, "baseline", path, allowed=("Model", "Fixed"), default="Model")
        fixed = r.num(body, "fixedBaseline", path, minimum=0.0, maximum=1.0)
        max_drop = r.num(body, "maxDrop", path, required=True, minimum=0.0)
        clear_drop = r.num(body, "clearDrop", path, minimum=0.0)
        if max_drop is not None and max_drop <= 0:
            r.fail(f"{path}.maxDrop", "must be greater than 0")
        if clear_drop is not None and max_drop is not None and clear_drop > max_drop:
            r.fail(f"{path}.clearDrop", f"{clear_drop} exceeds maxDrop {max_drop}; set it at most maxDrop")
        if baseline == "Fixed" and fixed is None:
            r.fail(f"{path}.fixedBaseline", "is required when baseline is Fixed")
        metric = r.str_(body, "metric", path, required=True, pattern=METRIC_NAME, max_length=MAX_METRIC_NAME)
        window = r.duration(body, "window", path, default="5m", minimum=1.0)
        if metric is None or max_drop is None or baseline is None:
            return None
        return AccuracyDecay(
            metric=metric,
            max_drop=max_drop,
            window=window,
            baseline=baseline,  # type: ignore[arg-type]
            fixed_baseline=fixed,
            clear_drop=clear_drop,
            relative=r.bool_(body, "relative", path),
        )

    def spans(self, spec: AccuracyDecay, trigger: TriggerSpec) -> Sequence[Span]:
        spans = [Span(f"{self.name}.window", spec.window, "window")]
        if trigger.for_seconds > 0:
            spans.append(Span("", trigger.for_seconds + spec.window, "range", "for + accuracyDecay.window"))
        return spans

    def merge_key(self, spec: AccuracyDecay, trigger: TriggerSpec, target: Target) -> Hashable:
        step = promql.subquery_step(trigger.for_seconds, target.interval)
        return spec.metric, spec.window, trigger.for_seconds, step

    def plan(
        self,
        spec: AccuracyDecay,
        trigger: TriggerSpec,
        targets: Sequence[Target],
        *,
        labels: tuple[str, ...],
        now: datetime,
    ) -> QueryPlan:
        values_by_label = {label: [t.matchers[label] for t in targets] for label in labels}
        step = promql.subquery_step(trigger.for_seconds, targets[0].interval)
        queries = promql.accuracy_queries(
            metric=spec.metric,
            values_by_label=values_by_label,
            group_by=labels,
            window=spec.window,
            for_seconds=trigger.for_seconds,
            step=step,
        )
        wanted = tuple((q, now) for q in (queries.current, queries.held_max, queries.held_count) if q is not None)

        def read(results: Sequence[Sequence[Series]]) -> list[Observation]:
            by_key = [_index(r, labels) for r in results]
            current = by_key[0]
            held = by_key[1] if len(by_key) > 1 else {}
            count = by_key[2] if len(by_key) > 2 else {}
            out = []
            for target in targets:
                key = target.key(labels)
                sample = current.get(key)
                if sample is None:
                    shown = promql.selector(spec.metric, target.matchers)
                    out.append(
                        Observation.missing(
                            "NoData", f"no samples of {shown} in the last {format_duration(spec.window)}"
                        )
                    )
                    continue
                held_sample = held.get(key)
                count_sample = count.get(key)
                out.append(
                    Observation(
                        value=sample.value,
                        held=held_sample.value if held_sample else None,
                        held_points=int(count_sample.value)
                        if count_sample and not math.isnan(count_sample.value)
                        else 0,
                        expected_points=queries.expected_points,
                    )
                )
            return out

        return QueryPlan(wanted, read, what=spec.metric)

    def evaluate(self, spec: AccuracyDecay, trigger: TriggerSpec, facts: Facts) -> TriggerResult:
        return evaluate_accuracy(
            trigger,
            observation=facts.observation,
            model_score=facts.model_score,
            previous=facts.previous,
            now=facts.now,
        )

    def accuracy(
        self, spec: AccuracyDecay, result: TriggerResult, model_score: float | None
    ) -> tuple[float | None, float] | None:
        if result.value is None:
            return None
        baseline, _ = baseline_for(spec, model_score)
        return baseline, result.value


TRIGGER = AccuracyDecayType()
