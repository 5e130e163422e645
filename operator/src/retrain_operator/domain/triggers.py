"""Trigger evaluation: from observed values (or their absence) to firing, pending, clear or inconclusive.

A trigger fires only on evidence. ``for`` is judged from the metric's own history (the observation
carries the least favourable value over the period and how many points it saw), so an operator
that restarts, or a policy created while accuracy is already low, needs no memory of its own.
Hysteresis uses the previous state from status: once firing, a trigger clears only past its clear
level. Missing data is never a value of 0: by default it makes the trigger inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from croniter import croniter

from retrain_operator.domain import drift
from retrain_operator.domain.api import (
    AccuracyDecay,
    DataVolumeTrigger,
    DriftTrigger,
    QueryTrigger,
    ScheduleTrigger,
    TriggerSpec,
)
from retrain_operator.settings.durations import format_duration

State = Literal["firing", "pending", "clear", "inconclusive"]
Buckets = Mapping[str, Mapping[str, float]]  # feature -> le -> cumulative count


@dataclass(frozen=True)
class Observation:
    """What the metric source said for one trigger of one policy.

    ``value`` is the current value; ``held`` the least favourable value over ``for`` and
    ``held_points``/``expected_points`` its coverage. ``problem`` (CamelCase) and ``detail`` are set
    when the value could not be had: NoData, NotANumber, QueryFailed, Unreachable, Ambiguous.
    """

    value: float | None = None
    held: float | None = None
    held_points: int = 0
    expected_points: int = 0
    problem: str | None = None
    detail: str = ""
    current_buckets: Buckets | None = None
    reference_buckets: Buckets | None = None
    reference_windows: tuple[Buckets, ...] = ()

    @classmethod
    def missing(cls, problem: str, detail: str) -> Observation:
        return cls(problem=problem, detail=detail)


@dataclass(frozen=True)
class PreviousState:
    state: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class TriggerResult:
    name: str
    type: str
    state: State
    value: float | None
    threshold: float | None
    since: datetime | None
    message: str
    problem: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def firing(self) -> bool:
        return self.state == "firing"


def _breach(value: float, operator: str, level: float) -> bool:
    return {
        ">": value > level,
        ">=": value >= level,
        "<": value < level,
        "<=": value <= level,
    }[operator]


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _missing(
    trigger: TriggerSpec, *, problem: str, detail: str, threshold: float | None, previous: PreviousState, now: datetime
) -> TriggerResult:
    if trigger.on_missing_data == "Clear":
        return TriggerResult(
            trigger.name,
            trigger.type,
            "clear",
            None,
            threshold,
            None,
            f"{detail}; treated as clear (onMissingData: Clear)",
            problem,
        )
    if trigger.on_missing_data == "Fire":
        since = previous.since if previous.state == "firing" and previous.since else now
        return TriggerResult(
            trigger.name,
            trigger.type,
            "firing",
            None,
            threshold,
            since,
            f"{detail}; treated as firing (onMissingData: Fire)",
            problem,
        )
    return TriggerResult(trigger.name, trigger.type, "inconclusive", None, threshold, None, detail, problem)


def evaluate_threshold(
    trigger: TriggerSpec,
    *,
    observation: Observation,
    operator: str,
    threshold: float,
    clear_level: float,
    previous: PreviousState,
    now: datetime,
    what: str,
) -> TriggerResult:
    """The common state machine of threshold triggers.

    Fires when ``value operator threshold`` holds now and, with ``for``, held over the whole period
    with full coverage; once firing, stays firing while ``value operator clear_level`` holds.
    """
    if observation.problem is not None or observation.value is None:
        return _missing(
            trigger,
            problem=observation.problem or "NoData",
            detail=observation.detail or f"no value for {what}",
            threshold=threshold,
            previous=previous,
            now=now,
        )
    value = observation.value
    if math.isnan(value):
        return _missing(
            trigger, problem="NotANumber", detail=f"{what} is NaN", threshold=threshold, previous=previous, now=now
        )
    shown = f"{what} = {_fmt(value)}"
    if previous.state == "firing" and _breach(value, operator, clear_level):
        return TriggerResult(
            trigger.name,
            trigger.type,
            "firing",
            value,
            threshold,
            previous.since or now,
            f"{shown}, still {operator} clear level {_fmt(clear_level)}",
        )
    if not _breach(value, operator, threshold):
        return TriggerResult(
            trigger.name, trigger.type, "clear", value, threshold, None, f"{shown}, not {operator} {_fmt(threshold)}"
        )
    if trigger.for_seconds <= 0:
        return TriggerResult(
            trigger.name, trigger.type, "firing", value, threshold, now, f"{shown} {operator} {_fmt(threshold)}"
        )
    period = format_duration(trigger.for_seconds)
    covered = observation.held_points >= max(1, observation.expected_points - 1)
    held = observation.held
    if held is not None and not math.isnan(held) and covered and _breach(held, operator, threshold):
        return TriggerResult(
            trigger.name,
            trigger.type,
            "firing",
            value,
            threshold,
            previous.since if previous.state == "firing" and previous.since else now,
            f"{shown} {operator} {_fmt(threshold)} for at least {period}",
        )
    since = previous.since if previous.state == "pending" and previous.since else now
    reason = "history shorter than" if not covered else "not yet for"
    return TriggerResult(
        trigger.name,
        trigger.type,
        "pending",
        value,
        threshold,
        since,
        f"{shown} {operator} {_fmt(threshold)}, {reason} {period}",
    )


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
    if baseline is None:
        return _missing(
            trigger,
            problem="NoBaseline",
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
        f"{result.message} (baseline {_fmt(baseline)}, {source})",
        result.problem,
    )


def evaluate_query(
    trigger: TriggerSpec, *, observation: Observation, previous: PreviousState, now: datetime
) -> TriggerResult:
    spec = trigger.kind
    assert isinstance(spec, QueryTrigger)
    clear = spec.threshold if spec.clear_threshold is None else spec.clear_threshold
    return evaluate_threshold(
        trigger,
        observation=observation,
        operator=spec.operator,
        threshold=spec.threshold,
        clear_level=clear,
        previous=previous,
        now=now,
        what="query",
    )


def evaluate_schedule(trigger: TriggerSpec, *, reference: datetime, now: datetime) -> TriggerResult:
    """Fires when a cron time lies after ``reference`` (the last retrain, or the policy's creation)."""
    spec = trigger.kind
    assert isinstance(spec, ScheduleTrigger)
    last_due: datetime = croniter(spec.cron, now).get_prev(datetime)
    if last_due > reference:
        return TriggerResult(
            trigger.name,
            trigger.type,
            "firing",
            None,
            None,
            last_due,
            f"scheduled at {last_due.isoformat()} ({spec.cron}), no retrain since",
        )
    next_due: datetime = croniter(spec.cron, now).get_next(datetime)
    return TriggerResult(
        trigger.name, trigger.type, "clear", None, None, None, f"next scheduled at {next_due.isoformat()} ({spec.cron})"
    )


def _since_based(
    trigger: TriggerSpec,
    *,
    breach: bool,
    value: float | None,
    threshold: float | None,
    previous: PreviousState,
    now: datetime,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> TriggerResult:
    """``for`` counted from when the condition was first seen (kept in status), for triggers without history."""
    details = dict(details or {})
    if not breach:
        return TriggerResult(trigger.name, trigger.type, "clear", value, threshold, None, message, None, details)
    held_since = previous.since if previous.state in ("pending", "firing") and previous.since else now
    if previous.state == "firing" or (now - held_since).total_seconds() >= trigger.for_seconds:
        since = previous.since if previous.state == "firing" and previous.since else now
        return TriggerResult(trigger.name, trigger.type, "firing", value, threshold, since, message, None, details)
    remaining = trigger.for_seconds - (now - held_since).total_seconds()
    return TriggerResult(
        trigger.name,
        trigger.type,
        "pending",
        value,
        threshold,
        held_since,
        f"{message}; fires in {format_duration(remaining)} if it holds",
        None,
        details,
    )


def evaluate_drift(
    trigger: TriggerSpec,
    *,
    observation: Observation,
    previous: PreviousState,
    now: datetime,
    model_reference: Buckets | None = None,
) -> TriggerResult:
    """Compare reference and current histograms feature by feature and judge the policy-level verdict."""
    spec = trigger.kind
    assert isinstance(spec, DriftTrigger)
    fixed = spec.threshold
    if observation.problem is not None or observation.current_buckets is None:
        return _missing(
            trigger,
            problem=observation.problem or "NoData",
            detail=observation.detail or f"no buckets of {spec.metric}",
            threshold=fixed,
            previous=previous,
            now=now,
        )
    statistic = drift.get_statistic(spec.statistic)
    wanted = set(spec.features)

    def pick(buckets: Buckets) -> Buckets:
        return {f: b for f, b in buckets.items() if not wanted or f in wanted}

    if spec.reference == "Model" and not model_reference:
        return _missing(
            trigger,
            problem="NoReference",
            detail="no reference histograms from the current model: train one with the built-in trainer "
            "and spec.training.builtin.histograms.features set",
            threshold=fixed,
            previous=previous,
            now=now,
        )
    try:
        current = drift.histograms(pick(observation.current_buckets), metric=spec.metric)
        raw_reference = (
            spec.reference_counts
            if spec.reference == "Fixed"
            else model_reference or {}
            if spec.reference == "Model"
            else observation.reference_buckets or {}
        )
        reference = drift.histograms(pick(raw_reference), metric=spec.metric)
        comparison = drift.compare(
            reference, current, statistic=statistic, min_samples=spec.min_samples, metric=spec.metric
        )
    except (drift.BucketMismatch, drift.MalformedHistogram) as exc:
        problem = "BucketMismatch" if isinstance(exc, drift.BucketMismatch) else "MalformedHistogram"
        return _missing(trigger, problem=problem, detail=str(exc), threshold=fixed, previous=previous, now=now)
    if not current:
        return _missing(
            trigger,
            problem="NoData",
            detail=f"no series of {spec.metric}_bucket in the current window",
            threshold=fixed,
            previous=previous,
            now=now,
        )
    if not comparison.scores:
        detail = "; ".join(i.message for i in comparison.insufficient[:3]) or "no feature to compare"
        return _missing(
            trigger, problem="InsufficientSamples", detail=detail, threshold=fixed, previous=previous, now=now
        )
    details: dict[str, Any] = {}
    thresholds: float | dict[str, float]
    if spec.learn_k is not None:
        learned: dict[str, float] = {}
        summary: dict[str, Any] = {}
        for score in comparison.scores:
            try:
                windows = [
                    drift.Histogram.from_cumulative(w[score.feature], feature=score.feature, metric=spec.metric)
                    for w in observation.reference_windows
                    if score.feature in w
                ]
            except drift.MalformedHistogram as exc:
                return _missing(
                    trigger, problem="MalformedHistogram", detail=str(exc), threshold=None, previous=previous, now=now
                )
            # Each sub-window holds a share of the reference period's samples; ask it for the same share.
            share = spec.min_samples / max(1, len(observation.reference_windows))
            result = drift.learn_threshold(
                windows,
                statistic=statistic,
                min_samples=max(1.0, share),
                k=spec.learn_k,
                feature=score.feature,
                metric=spec.metric,
            )
            if isinstance(result, drift.InsufficientHistory):
                return _missing(
                    trigger,
                    problem="InsufficientHistory",
                    detail=result.message,
                    threshold=None,
                    previous=previous,
                    now=now,
                )
            learned[score.feature] = result.threshold
            summary[score.feature] = result.as_status()
        thresholds = learned
        details["learnedThreshold"] = summary
    else:
        assert fixed is not None
        thresholds = fixed
    values = comparison.p_values if spec.use_p_value else comparison.values
    if spec.use_p_value and values is None:
        values = {}
    verdict = drift.verdict(
        dict(values or {}),
        threshold=thresholds,
        mode=spec.mode,
        min_share=spec.min_share,
        statistic=f"{spec.statistic} p-value" if spec.use_p_value else spec.statistic,
        drift_when="below" if spec.use_p_value else "above",
    )
    ranked = sorted((values or {}).items(), key=lambda kv: kv[1], reverse=not spec.use_p_value)
    details["features"] = [{"name": f, "value": round(v, 6)} for f, v in ranked[:5]]
    value = ranked[0][1] if ranked else None
    shown_threshold = (
        fixed
        if fixed is not None
        else (max(thresholds.values()) if isinstance(thresholds, dict) and thresholds else None)
    )
    if comparison.insufficient:
        details["insufficient"] = len(comparison.insufficient)
    return _since_based(
        trigger,
        breach=verdict.drifted,
        value=value,
        threshold=shown_threshold,
        previous=previous,
        now=now,
        message=verdict.message,
        details=details,
    )


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
    if spec.min_relative is not None:
        if not training_rows:
            return _missing(
                trigger,
                problem="NoBaseline",
                detail="minRelative needs the row count of a model trained by the operator",
                threshold=None,
                previous=previous,
                now=now,
            )
        threshold = spec.min_relative * training_rows
        basis = f"{spec.min_relative:g} x {training_rows:g} training rows"
    else:
        assert spec.min_new_samples is not None
        threshold, basis = spec.min_new_samples, "minNewSamples"
    if observation.problem is not None or observation.value is None or math.isnan(observation.value):
        return _missing(
            trigger,
            problem=observation.problem or "NoData",
            detail=observation.detail or f"no value for {spec.metric}",
            threshold=threshold,
            previous=previous,
            now=now,
        )
    value = observation.value
    breach = value >= threshold
    verb = "reached" if breach else "below"
    return _since_based(
        trigger,
        breach=breach,
        value=value,
        threshold=threshold,
        previous=previous,
        now=now,
        message=f"{value:.0f} new samples of {spec.metric} since the model was trained, {verb} "
        f"{threshold:.0f} ({basis})",
    )
