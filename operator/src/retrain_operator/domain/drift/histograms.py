"""From Prometheus classic histogram buckets to per-bucket counts, and the checks before comparing.

Prometheus exports a histogram as cumulative counters, one per upper bound ``le`` ("0.1", "+Inf"),
and ``increase(metric_bucket[window])`` turns them into cumulative counts over a window. Here they
become counts per bucket ``(le_prev, le]``: sorted by bound, differenced, the ``+Inf`` bucket
holding everything above the last finite bound.

Differences slightly below zero come from floating-point noise in ``increase()``'s extrapolation and
are set to zero; anything below a relative ``tolerance`` of the histogram's total is a real decrease
of a cumulative count, which ``increase()`` cannot produce from well-formed data (it handles
counter resets itself), so it is an error naming the buckets. Bounds that parse to the same number
("1" and "1.0") are one bucket and their counts are summed: Prometheus 3 normalises ``le`` labels,
so a window spanning the change sees the same bucket under both spellings, each for part of the time.

Two histograms are comparable only with identical bucket edges; anything else is a
:class:`BucketMismatch` naming both edge lists, never a silent re-binning (which would invent how
mass spreads inside a bucket). Too few samples on either side is an :class:`InsufficientSamples`
result, not an exception: it is the normal state of a quiet model, and the trigger is inconclusive.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from retrain_operator.domain.drift.statistic import FloatArray

NOISE_TOLERANCE = 1e-9


class MalformedHistogram(ValueError):
    """Buckets that cannot be a Prometheus histogram: a bad ``le``, no ``+Inf``, a count that decreases."""


class BucketMismatch(ValueError):
    """Two histograms of one feature with different bucket edges."""

    def __init__(
        self,
        *,
        feature: str,
        metric: str,
        reference: Sequence[float],
        current: Sequence[float],
        sides: tuple[str, str] = ("reference", "current"),
    ) -> None:
        self.feature = feature
        self.metric = metric
        self.reference = tuple(reference)
        self.current = tuple(current)
        super().__init__(
            f"{_subject(feature, metric)}: bucket edges differ between the {sides[0]} "
            f"[{', '.join(format_le(e) for e in self.reference)}] and the {sides[1]} "
            f"[{', '.join(format_le(e) for e in self.current)}]; histograms are compared only with identical "
            f"buckets, so record the {sides[0]} again with the current buckets"
        )


def _subject(feature: str, metric: str) -> str:
    if metric and feature:
        return f"metric {metric}, feature {feature!r}"
    if metric:
        return f"metric {metric}"
    return f"feature {feature!r}" if feature else "histogram"


def format_le(edge: float) -> str:
    """An edge as a Prometheus ``le`` label would show it."""
    return "+Inf" if edge == math.inf else repr(float(edge))


def parse_le(value: str) -> float:
    """The upper bound of a bucket from its ``le`` label: a float literal, or ``+Inf``."""
    try:
        edge = float(value)
    except (TypeError, ValueError):
        raise MalformedHistogram(f"le={value!r} is not a number") from None
    if math.isnan(edge) or edge == -math.inf:
        raise MalformedHistogram(f"le={value!r} is not a bucket bound")
    if edge == math.inf and value.strip().lstrip("+").lower() not in ("inf", "infinity"):
        # 1e400 overflows to infinity; merging it into +Inf would silently change the histogram.
        raise MalformedHistogram(f"le={value!r} is too large for a finite bound (it overflows to infinity)")
    return edge


@dataclass(frozen=True)
class Histogram:
    """Counts of one feature over one window: ``counts[i]`` observations fell in ``(edges[i-1], edges[i]]``.

    ``edges`` are the upper bounds, strictly increasing, the last ``+inf``; the first bucket is
    open below. Counts are non-negative and need not be integers.
    """

    edges: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self) -> None:
        edges = tuple(map(float, self.edges))
        counts = tuple(map(float, self.counts))
        if not edges or len(edges) != len(counts):
            raise MalformedHistogram(f"{len(edges)} edges for {len(counts)} counts")
        if edges[-1] != math.inf:
            raise MalformedHistogram("the last bucket must be le=+Inf")
        if not all(map(operator.lt, edges, edges[1:])):
            raise MalformedHistogram(f"edges must be strictly increasing: {list(edges)}")
        if not (all(map(math.isfinite, counts)) and min(counts) >= 0.0):
            raise MalformedHistogram(f"counts must be finite and non-negative: {list(counts)}")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "counts", counts)

    @property
    def total(self) -> float:
        return math.fsum(self.counts)

    @classmethod
    def from_cumulative(
        cls, buckets: Mapping[str, float], *, feature: str = "", metric: str = "", tolerance: float = NOISE_TOLERANCE
    ) -> Histogram:
        """One histogram from ``{le: cumulative count}``, as ``increase(metric_bucket[w])`` gives it."""
        edges, cumulative = _sorted_buckets(buckets, feature=feature, metric=metric, parsed={})
        counts = bucket_counts(
            np.array([cumulative]), edges=edges, features=[feature], metric=metric, tolerance=tolerance
        )
        return cls(edges, tuple(counts[0].tolist()))


def _sorted_buckets(
    buckets: Mapping[str, float], *, feature: str, metric: str, parsed: dict[str, float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Edges and cumulative counts sorted by edge; ``parsed`` caches ``le`` strings, shared by all features."""
    merged: dict[float, float] = {}
    for le, count in buckets.items():
        edge = parsed.get(le)
        if edge is None:
            try:
                edge = parsed[le] = parse_le(le)
            except MalformedHistogram as e:
                raise MalformedHistogram(f"{_subject(feature, metric)}: {e}") from None
        merged[edge] = merged.get(edge, 0.0) + float(count)
    if math.inf not in merged:
        raise MalformedHistogram(f'{_subject(feature, metric)}: no le="+Inf" bucket, so the total is unknown')
    edges = tuple(sorted(merged))
    return edges, tuple(merged[e] for e in edges)


def bucket_counts(
    cumulative: npt.ArrayLike,
    *,
    edges: Sequence[float],
    features: Sequence[str] | None = None,
    metric: str = "",
    tolerance: float = NOISE_TOLERANCE,
) -> FloatArray:
    """Per-bucket counts from cumulative counts, for many features at once.

    ``cumulative`` is (features, buckets), columns in the order of ``edges`` (sorted upper bounds).
    A decrease within ``tolerance`` times the row's largest count (at least 1) is rounding noise
    and becomes 0; a larger one raises :class:`MalformedHistogram` naming the feature and buckets.
    """
    table = np.asarray(cumulative, dtype=np.float64)
    if table.ndim == 1:
        table = table.reshape(1, -1)
    names = list(features) if features is not None else [f"row {i}" for i in range(table.shape[0])]
    if table.ndim != 2 or table.shape[1] != len(edges) or len(names) != table.shape[0]:
        raise ValueError(
            f"cumulative counts of shape {table.shape} do not match {len(edges)} edges and {len(names)} features"
        )
    if table.size == 0:
        return table.copy()
    bad_value = ~np.isfinite(table) | (table < 0.0)
    if bad_value.any():
        row, col = np.argwhere(bad_value)[0]
        raise MalformedHistogram(
            f"{_subject(names[row], metric)}: le={format_le(edges[col])} has count "
            f"{table[row, col]!r}; cumulative counts must be finite and non-negative"
        )
    counts = np.diff(table, axis=1, prepend=0.0)
    scale = np.maximum(table.max(axis=1, keepdims=True), 1.0)
    decrease = counts < -tolerance * scale
    if decrease.any():
        row, col = np.argwhere(decrease)[0]
        raise MalformedHistogram(
            f"{_subject(names[row], metric)}: cumulative count falls from {table[row, col - 1]:.6g} at "
            f"le={format_le(edges[col - 1])} to {table[row, col]:.6g} at le={format_le(edges[col])}; "
            "bucket counts of one window must not decrease with le"
        )
    result: FloatArray = np.maximum(counts, 0.0)
    return result


def histograms(
    buckets_by_feature: Mapping[str, Mapping[str, float]], *, metric: str = "", tolerance: float = NOISE_TOLERANCE
) -> dict[str, Histogram]:
    """Histograms of many features from ``{feature: {le: cumulative count}}``, differenced in batches.

    Features sharing a bucket layout (the common case) are differenced together as one array.
    """
    les: dict[str, float] = {}
    parsed = {
        feature: _sorted_buckets(buckets, feature=feature, metric=metric, parsed=les)
        for feature, buckets in buckets_by_feature.items()
    }
    groups: dict[tuple[float, ...], list[str]] = {}
    for feature, (edges, _) in parsed.items():
        groups.setdefault(edges, []).append(feature)
    result: dict[str, Histogram] = {}
    for edges, features in groups.items():
        counts = bucket_counts(
            np.array([parsed[f][1] for f in features]),
            edges=edges,
            features=features,
            metric=metric,
            tolerance=tolerance,
        )
        for feature, row in zip(features, counts.tolist(), strict=True):
            result[feature] = Histogram(edges, tuple(row))
    return {feature: result[feature] for feature in buckets_by_feature}


def check_edges(
    reference: Histogram,
    current: Histogram,
    *,
    feature: str = "",
    metric: str = "",
    sides: tuple[str, str] = ("reference", "current"),
) -> None:
    """Raise :class:`BucketMismatch` unless both histograms have the same bucket edges."""
    if reference.edges != current.edges:
        raise BucketMismatch(
            feature=feature, metric=metric, reference=reference.edges, current=current.edges, sides=sides
        )


@dataclass(frozen=True)
class InsufficientSamples:
    """A feature that was not compared: one side had fewer than ``min_samples`` observations."""

    feature: str
    reference: float
    current: float
    min_samples: float

    @property
    def message(self) -> str:
        return (
            f"feature {self.feature!r}: {self.current:.6g} samples in the current window and "
            f"{self.reference:.6g} in the reference, at least {self.min_samples:.6g} needed in each"
        )


def check_min_samples(min_samples: float) -> None:
    if not min_samples >= 1:
        raise ValueError(f"min_samples must be at least 1 (an empty histogram has no distribution), got {min_samples}")
