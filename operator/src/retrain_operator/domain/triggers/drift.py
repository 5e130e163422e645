"""drift: fires when the distribution of a histogram metric moved between a reference and the current window.

One comparison per value of ``featureLabel``, with a statistic from :mod:`~retrain_operator.domain.drift`
and a threshold either fixed or learned from the reference period's own sub-windows. Triggers that
share a template (metric, feature label, windows, reference, label names) are read together.
The reference is a past window, fixed counts, or the current model's training data (from status).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any, ClassVar

from retrain_operator.domain import drift, promql
from retrain_operator.domain.drift import STATISTIC_NAMES, VERDICT_MODES, get_statistic
from retrain_operator.domain.limits import MAX_BUCKETS, MAX_FEATURES, MAX_LABEL_VALUE, MAX_MIN_SAMPLES
from retrain_operator.domain.triggers.base import (
    MAX_METRIC_NAME,
    METRIC_NAME,
    Buckets,
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
    label_name_problem,
    missing,
    since_based,
)
from retrain_operator.settings.durations import format_duration
from retrain_operator.settings.reader import Reader, is_finite_number


@dataclass(frozen=True)
class DriftTrigger(TriggerKind):
    """Drift of a histogram metric (one comparison per value of ``feature_label``) between two windows."""

    type_name: ClassVar[str] = "drift"

    metric: str
    statistic: str = "psi"
    feature_label: str = "feature"
    features: tuple[str, ...] = ()
    window: float = 3600.0
    reference: str = "Window"  # Window, Fixed or Model (the champion's training data)
    reference_offset: float = 7 * 86400.0
    reference_window: float = 86400.0
    reference_counts: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    threshold: float | None = None
    learn_k: float | None = None
    learn_windows: int = 24
    learn_floor: float | None = None  # None: the statistic's own effect floor
    use_p_value: bool = False
    min_samples: float = 100.0
    mode: str = "any"
    min_share: float | None = None
    adjust_for_features: bool = True


# A fixed threshold within this many times a feature's no-drift noise floor cannot tell drift from noise
# (for the square-root statistics, within its square root: see Statistic.noise_power).
NOISE_MULTIPLE = 3.0
MAX_LEARN_WINDOWS = 48
MIN_LEARN_WINDOWS = 5
MAX_FLOOR = 1e6
MAX_K = 100.0
_NORMAL = NormalDist()


def adjusted_k(k: float, features: int) -> float:
    """``k`` raised so that ``features`` independent features together fire as often as one did at ``k``:
    the Gaussian tail beyond ``k`` divided among them (Bonferroni), e.g. 3 -> 3.9 for 30 features."""
    if features <= 1:
        return k
    tail = (1.0 - _NORMAL.cdf(k)) / features
    return max(k, _NORMAL.inv_cdf(1.0 - tail)) if tail > 0 else k


def learned_floor(spec: DriftTrigger) -> float:
    """The least a learned threshold may be: the spec's floor, else the statistic's effect floor, else 0."""
    if spec.learn_floor is not None:
        return spec.learn_floor
    return get_statistic(spec.statistic).effect_floor or 0.0


def use_p_value_requested(body: Mapping[str, Any]) -> bool:
    return body.get("usePValue") is True


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
        return missing(
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
        return missing(
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
    except (drift.BucketMismatch, drift.MalformedHistogram, drift.StatisticNotApplicable) as exc:
        problem = type(exc).__name__
        return missing(trigger, problem=problem, detail=str(exc), threshold=fixed, previous=previous, now=now)
    if not current:
        return missing(
            trigger,
            problem="NoData",
            detail=f"no series of {spec.metric}_bucket in the current window",
            threshold=fixed,
            previous=previous,
            now=now,
        )
    if not comparison.scores:
        detail = "; ".join(i.message for i in comparison.insufficient[:3]) or "no feature to compare"
        return missing(
            trigger, problem="InsufficientSamples", detail=detail, threshold=fixed, previous=previous, now=now
        )
    details: dict[str, Any] = {}
    thresholds: float | dict[str, float]
    adjust = spec.adjust_for_features and spec.mode == "any" and len(comparison.scores) > 1
    if spec.learn_k is not None:
        learned: dict[str, float] = {}
        summary: dict[str, Any] = {}
        scored = {score.feature for score in comparison.scores}
        by_feature: dict[str, list[drift.Histogram]] = {}
        try:
            # One batched parse per sub-window (features sharing a layout are differenced together).
            for w in observation.reference_windows:
                for feature, histogram in drift.histograms(
                    {f: b for f, b in w.items() if f in scored}, metric=spec.metric
                ).items():
                    by_feature.setdefault(feature, []).append(histogram)
        except drift.MalformedHistogram as exc:
            return missing(
                trigger, problem="MalformedHistogram", detail=str(exc), threshold=None, previous=previous, now=now
            )
        # In mode any, k is raised with the number of features compared, so a policy with 30 features
        # raises no more false alarms than one with a single feature.
        k = adjusted_k(spec.learn_k, len(comparison.scores)) if adjust else spec.learn_k
        floor = learned_floor(spec)
        for score in comparison.scores:
            windows = by_feature.get(score.feature, [])
            # Each sub-window is as long as the current window (the parser sees to it): the same minimum applies.
            result = drift.learn_threshold(
                windows,
                statistic=statistic,
                min_samples=spec.min_samples,
                k=k,
                floor=floor,
                feature=score.feature,
                metric=spec.metric,
            )
            if isinstance(result, drift.InsufficientHistory):
                return missing(
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
        if adjust and k != spec.learn_k:
            details["adjustedK"] = round(k, 3)
    else:
        assert fixed is not None
        thresholds = fixed / len(comparison.scores) if spec.use_p_value and adjust else fixed
    values = dict(comparison.p_values if spec.use_p_value else comparison.values)
    noisy: list[str] = []
    if spec.learn_k is None and not spec.use_p_value and statistic.noise is not None:
        noisy = _within_noise(spec, statistic, reference, current, values, fixed or 0.0)
        for feature in noisy:
            values.pop(feature)
        if noisy:
            details["belowNoiseFloor"] = noisy[:5]
            if not values:
                return missing(
                    trigger,
                    problem="BelowNoiseFloor",
                    detail=_noise_message(spec, statistic, reference, current, noisy, fixed or 0.0),
                    threshold=fixed,
                    previous=previous,
                    now=now,
                )
    verdict = drift.verdict(
        values,
        threshold=thresholds,
        mode=spec.mode,
        min_share=spec.min_share,
        statistic=f"{spec.statistic} p-value" if spec.use_p_value else spec.statistic,
        drift_when="below" if spec.use_p_value else "above",
        threshold_name="learned threshold" if spec.learn_k is not None else "threshold",
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
    message = verdict.message
    if spec.use_p_value and adjust:
        message += f" (significance {fixed:.3g} shared by {len(comparison.scores)} features)"
    if noisy:
        message += f"; {_noise_message(spec, statistic, reference, current, noisy, fixed or 0.0)}"
    return since_based(
        trigger,
        breach=verdict.drifted,
        value=value,
        threshold=shown_threshold,
        previous=previous,
        now=now,
        message=message,
        details=details,
    )


def _noise(statistic: drift.Statistic, reference: drift.Histogram, current: drift.Histogram) -> tuple[float, float]:
    """The statistic's expected value without drift for this feature's buckets (those seen on either side)
    and sample sizes, and the level a fixed threshold must exceed to be told apart from it."""
    assert statistic.noise is not None
    buckets = sum(1 for r, c in zip(reference.counts, current.counts, strict=True) if r > 0 or c > 0)
    expected = statistic.noise(buckets, reference.total, current.total)
    return expected, expected * NOISE_MULTIPLE**statistic.noise_power


def _within_noise(
    spec: DriftTrigger,
    statistic: drift.Statistic,
    reference: Mapping[str, drift.Histogram],
    current: Mapping[str, drift.Histogram],
    values: Mapping[str, float],
    threshold: float,
) -> list[str]:
    """Features whose fixed threshold sits within NOISE_MULTIPLE times their no-drift noise floor."""
    return [f for f in values if threshold <= _noise(statistic, reference[f], current[f])[1]]


def _noise_message(
    spec: DriftTrigger,
    statistic: drift.Statistic,
    reference: Mapping[str, drift.Histogram],
    current: Mapping[str, drift.Histogram],
    noisy: Sequence[str],
    threshold: float,
) -> str:
    first = noisy[0]
    ref, cur = reference[first], current[first]
    expected, level = _noise(statistic, ref, cur)
    others = f" and {len(noisy) - 1} more" if len(noisy) > 1 else ""
    return (
        f"{len(noisy)} of the features inconclusive: threshold {threshold:.3g} is not clear of their no-drift "
        f"noise floor; {first!r}{others}: {spec.statistic} {expected:.3g} expected from noise alone with "
        f"{ref.total:.0f} reference and {cur.total:.0f} current samples, so a threshold must exceed {level:.3g}; "
        "raise threshold or minSamples, or use learnThreshold"
    )


def _buckets(
    samples: Sequence[Series], labels: Sequence[str], feature_label: str
) -> dict[tuple[str, ...], dict[str, dict[str, float]]]:
    """Split merged histogram results per policy: policy key -> feature -> le -> cumulative count."""
    out: dict[tuple[str, ...], dict[str, dict[str, float]]] = {}
    for s in samples:
        key = tuple(s.labels.get(label, "") for label in labels)
        feature = s.labels.get(feature_label, "")
        out.setdefault(key, {}).setdefault(feature, {})[s.labels.get("le", "")] = s.value
    return out


class DriftType(TriggerType[DriftTrigger]):
    """The drift trigger: reference and current histogram buckets per feature, compared by a drift statistic."""

    spec_type = DriftTrigger

    def parse(self, r: Reader, body: Mapping[str, Any], path: str) -> DriftTrigger | None:
        metric = r.str_(body, "metric", path, required=True, pattern=METRIC_NAME, max_length=MAX_METRIC_NAME)
        statistic = r.enum(body, "statistic", path, allowed=STATISTIC_NAMES, default="psi")
        label = r.str_(body, "featureLabel", path, default="feature") or "feature"
        problem = label_name_problem(label)
        if problem is not None:
            r.fail(f"{path}.featureLabel", problem)
        reference = r.obj(body.get("reference"), f"{path}.reference", required=True)
        source = r.enum(
            reference, "source", f"{path}.reference", allowed=("Window", "Fixed", "Model"), default="Window"
        )
        counts: dict[str, dict[str, float]] = {}
        if source == "Fixed":
            raw_counts = r.obj(reference.get("counts"), f"{path}.reference.counts", required=True)
            if len(raw_counts) > MAX_FEATURES:
                r.fail(f"{path}.reference.counts", f"holds {len(raw_counts)} features; at most {MAX_FEATURES}")
                raw_counts = {}
            for feature, buckets in raw_counts.items():
                where = f"{path}.reference.counts.{str(feature)[:64]}"
                if not isinstance(buckets, Mapping) or not all(
                    is_finite_number(v) and v >= 0 for v in buckets.values()
                ):
                    r.fail(where, "must map each 'le' bound to a cumulative count (a finite number, 0 or more)")
                    continue
                if len(buckets) > MAX_BUCKETS + 1:
                    r.fail(where, f"holds {len(buckets)} buckets; at most {MAX_BUCKETS + 1} with +Inf")
                    continue
                try:
                    for le in buckets:
                        drift.parse_le(str(le))
                except drift.MalformedHistogram as exc:
                    r.fail(where, f"{exc}; use finite bounds and +Inf for the last bucket")
                    continue
                counts[str(feature)] = {str(le): float(v) for le, v in buckets.items()}
            if not counts and "counts" in reference:
                r.fail(f"{path}.reference.counts", "holds no feature")
        threshold = r.num(body, "threshold", path, minimum=0.0)
        learn = r.obj(body.get("learnThreshold"), f"{path}.learnThreshold")
        learning = body.get("learnThreshold") is not None  # {} asks for every default
        learn_k = (
            r.num(learn, "k", f"{path}.learnThreshold", default=3.0, minimum=0.0, maximum=MAX_K) if learning else None
        )
        if (threshold is None) == (learn_k is None):
            r.fail(path, "set exactly one of threshold (fixed) or learnThreshold (from the reference period)")
        if learning and use_p_value_requested(body):
            r.fail(
                f"{path}.learnThreshold", "cannot be combined with usePValue; give the significance level as threshold"
            )
        if learning and source != "Window":
            r.fail(f"{path}.learnThreshold", "needs reference.source Window: it learns from the reference period")
        use_p = r.bool_(body, "usePValue", path)
        if use_p and statistic is not None and not get_statistic(statistic).has_p_value:
            r.fail(f"{path}.usePValue", f"{statistic} has no p-value; use chiSquare or ks, or a threshold on the value")
        mode = r.enum(body, "mode", path, allowed=VERDICT_MODES, default="any")
        share = r.num(body, "minShare", path, minimum=0.0, maximum=1.0)
        if share is not None and share <= 0:
            r.fail(f"{path}.minShare", "must be greater than 0 (the fraction of features that must drift), at most 1")
            share = None
        if mode == "share" and share is None:
            r.fail(f"{path}.minShare", "is required when mode is share (the fraction of features that must drift)")
        window = r.duration(body, "window", path, default="1h", minimum=1.0)
        reference_window = r.duration(reference, "window", f"{path}.reference", default="1d", minimum=1.0)
        windows = (
            self._learn_windows(r, learn, path, window=window, reference_window=reference_window) if learning else 24
        )
        floor = r.num(learn, "floor", f"{path}.learnThreshold", minimum=0.0, maximum=MAX_FLOOR) if learning else None
        if metric is None or statistic is None or source is None or mode is None:
            return None
        return DriftTrigger(
            metric=metric,
            statistic=statistic,
            feature_label=label,
            features=r.str_list(body, "features", path, max_items=MAX_FEATURES, max_length=MAX_LABEL_VALUE),
            window=window,
            reference=source,
            reference_offset=r.duration(reference, "offset", f"{path}.reference", default="7d", minimum=0.0),
            reference_window=reference_window,
            reference_counts=counts,
            threshold=threshold,
            learn_k=learn_k,
            learn_windows=windows,
            learn_floor=floor,
            use_p_value=use_p,
            min_samples=r.num(body, "minSamples", path, default=100.0, minimum=1.0, maximum=MAX_MIN_SAMPLES) or 100.0,
            mode=mode,
            min_share=share,
            adjust_for_features=r.bool_(body, "adjustForFeatures", path, default=True),
        )

    @staticmethod
    def _learn_windows(
        r: Reader, learn: Mapping[str, Any], path: str, *, window: float, reference_window: float
    ) -> int:
        """The sub-windows a threshold is learned from, each as long as the current window: derived from
        ``reference.window / window`` when not given, refused when given and they would differ in length.
        Sub-windows longer than the current window vary less than it does and learn a threshold that
        fires on noise; shorter ones learn one that misses drift."""
        where = f"{path}.learnThreshold.windows"
        ratio = reference_window / window
        given = (
            r.int_(learn, "windows", f"{path}.learnThreshold", default=24, minimum=MIN_LEARN_WINDOWS)
            if learn.get("windows") is not None
            else None
        )
        shown = f"drift.reference.window {format_duration(reference_window)} / drift.window {format_duration(window)}"
        if given is None:
            derived = round(ratio)
            if abs(ratio - derived) > 0.01 * ratio or not MIN_LEARN_WINDOWS <= derived <= MAX_LEARN_WINDOWS:
                r.fail(
                    where,
                    f"is derived as {shown} = {ratio:.4g} sub-windows as long as the current window, which must be a "
                    f"whole number from {MIN_LEARN_WINDOWS} to {MAX_LEARN_WINDOWS}; set drift.reference.window to "
                    f"between {MIN_LEARN_WINDOWS} and {MAX_LEARN_WINDOWS} times drift.window",
                )
                return 24
            return derived
        if given > MAX_LEARN_WINDOWS:
            r.fail(where, f"is {given}; at most {MAX_LEARN_WINDOWS}")
            return 24
        sub = reference_window / given
        if abs(sub - window) > 0.01 * window:
            r.fail(
                where,
                f"splits drift.reference.window {format_duration(reference_window)} into {given} sub-windows of "
                f"{format_duration(sub)}, but drift.window is {format_duration(window)}: sub-windows must be as long "
                "as the current window, or the learned threshold does not fit its noise; remove windows to derive it "
                f"({shown}), or change one of the three",
            )
        return given

    def spans(self, spec: DriftTrigger, trigger: TriggerSpec) -> Sequence[Span]:
        spans = [Span(f"{self.name}.window", spec.window, "window")]
        if spec.reference == "Window":
            spans += [
                Span(f"{self.name}.reference.window", spec.reference_window, "window"),
                Span(f"{self.name}.reference.offset", spec.reference_offset, "offset"),
                Span(
                    "",
                    spec.reference_offset + spec.reference_window,
                    "range",
                    "drift.reference.offset + drift.reference.window",
                ),
            ]
        return spans

    def merge_key(self, spec: DriftTrigger, trigger: TriggerSpec, target: Target) -> Hashable:
        return (
            spec.metric,
            spec.feature_label,
            spec.window,
            spec.reference,
            spec.reference_offset,
            spec.reference_window,
            spec.learn_k is not None,
            spec.learn_windows,
        )

    def plan(
        self,
        spec: DriftTrigger,
        trigger: TriggerSpec,
        targets: Sequence[Target],
        *,
        labels: tuple[str, ...],
        now: datetime,
    ) -> QueryPlan:
        """Current window, reference window and (to learn a threshold) its sub-windows, merged across policies."""
        values_by_label = {label: [t.matchers[label] for t in targets] for label in labels}

        def query(window: float) -> str:
            return promql.histogram_increase(
                metric=spec.metric,
                values_by_label=values_by_label,
                group_by=labels,
                feature_label=spec.feature_label,
                window=window,
            )

        plan: list[tuple[str, datetime]] = [(query(spec.window), now)]
        if spec.reference == "Window":
            reference_end = now - timedelta(seconds=spec.reference_offset)
            plan.append((query(spec.reference_window), reference_end))
            if spec.learn_k is not None:
                step = spec.reference_window / spec.learn_windows
                plan += [(query(step), reference_end - timedelta(seconds=i * step)) for i in range(spec.learn_windows)]

        def read(results: Sequence[Sequence[Series]]) -> list[Observation]:
            split = [_buckets(r, labels, spec.feature_label) for r in results]
            out = []
            for target in targets:
                key = target.key(labels)
                current = split[0].get(key)
                read_series = max(sum(len(b) for b in part.get(key, {}).values()) for part in split)
                ceiling = target.limits.ceiling("driftSeries")
                if read_series > ceiling.seconds_or_count:
                    out.append(
                        Observation.missing(
                            "TooManySeries",
                            f"one window of {spec.metric}_bucket holds {read_series} series (features x buckets), "
                            f"more than the ceiling of {int(ceiling.seconds_or_count)} ({ceiling.who}); "
                            "list fewer features in drift.features or select fewer series",
                        )
                    )
                    continue
                if not current:
                    shown = promql.selector(f"{spec.metric}_bucket", target.matchers)
                    out.append(
                        Observation.missing(
                            "NoData", f"no series of {shown} in the last {format_duration(spec.window)}"
                        )
                    )
                    continue
                reference = split[1].get(key, {}) if spec.reference == "Window" else None
                if spec.reference == "Window" and not reference:
                    out.append(
                        Observation.missing(
                            "NoReference",
                            f"no series of {spec.metric}_bucket in the reference window "
                            f"({format_duration(spec.reference_window)} ending "
                            f"{format_duration(spec.reference_offset)} ago)",
                        )
                    )
                    continue
                out.append(
                    Observation(
                        current_buckets=current,
                        reference_buckets=reference,
                        reference_windows=tuple(w.get(key, {}) for w in split[2:]),
                    )
                )
            return out

        return QueryPlan(tuple(plan), read, what=f"{spec.metric}_bucket")

    def evaluate(self, spec: DriftTrigger, trigger: TriggerSpec, facts: Facts) -> TriggerResult:
        return evaluate_drift(
            trigger,
            observation=facts.observation,
            previous=facts.previous,
            now=facts.now,
            model_reference=facts.model_reference,
        )


TRIGGER = DriftType()
