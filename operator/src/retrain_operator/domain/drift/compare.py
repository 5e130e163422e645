"""Compare the histograms of many features in one pass, one statistic for all.

Features are matched by name. A feature seen on one side only counts as having no samples on the
other, so it shows up as :class:`InsufficientSamples` rather than vanishing. Bucket edges are
checked for every feature present on both sides before anything is computed, so a layout change is
reported even for a feature too quiet to compare. Features that share a bucket layout are stacked
into one array and computed together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from retrain_operator.domain.drift.histograms import Histogram, InsufficientSamples, check_edges, check_min_samples
from retrain_operator.domain.drift.statistic import Statistic


class StatisticNotApplicable(ValueError):
    """The statistic cannot be computed on these buckets (Wasserstein needs two finite edges), whatever the data."""


@dataclass(frozen=True)
class FeatureScore:
    """One feature's drift statistic (and p-value, for the tests that have one)."""

    feature: str
    value: float
    p_value: float | None = None


@dataclass(frozen=True)
class Comparison:
    """The statistic for every feature with enough samples, and the features without, both sorted by name."""

    statistic: str
    scores: tuple[FeatureScore, ...]
    insufficient: tuple[InsufficientSamples, ...]

    @property
    def values(self) -> dict[str, float]:
        return {s.feature: s.value for s in self.scores}

    @property
    def p_values(self) -> dict[str, float]:
        return {s.feature: s.p_value for s in self.scores if s.p_value is not None}


def compare(
    reference: Mapping[str, Histogram],
    current: Mapping[str, Histogram],
    *,
    statistic: Statistic,
    min_samples: float,
    metric: str = "",
) -> Comparison:
    """The statistic of ``current`` against ``reference`` for every feature.

    Raises :class:`BucketMismatch` for the first feature (by name) whose edges differ; features
    with fewer than ``min_samples`` (at least 1) on either side are listed in ``insufficient``.
    """
    check_min_samples(min_samples)
    features = sorted(reference.keys() | current.keys())
    for feature in features:
        if feature in reference and feature in current:
            check_edges(reference[feature], current[feature], feature=feature, metric=metric)
    insufficient: list[InsufficientSamples] = []
    groups: dict[tuple[float, ...], list[str]] = {}
    for feature in features:
        ref, cur = reference.get(feature), current.get(feature)
        r_total = ref.total if ref is not None else 0.0
        c_total = cur.total if cur is not None else 0.0
        if ref is None or cur is None or r_total < min_samples or c_total < min_samples:
            insufficient.append(InsufficientSamples(feature, r_total, c_total, min_samples))
        else:
            groups.setdefault(ref.edges, []).append(feature)
    scores: dict[str, FeatureScore] = {}
    for edges, names in groups.items():
        ref_counts = np.array([reference[n].counts for n in names], dtype=np.float64)
        cur_counts = np.array([current[n].counts for n in names], dtype=np.float64)
        try:
            result = statistic.compute(ref_counts, cur_counts, np.array(edges, dtype=np.float64))
        except ValueError as e:
            where = f"metric {metric}, " if metric else ""
            raise StatisticNotApplicable(
                f"{where}features {', '.join(names)}: {statistic.name} cannot be computed on these buckets: {e}; "
                "choose another statistic (e.g. psi or ks) or export more buckets"
            ) from None
        values = result.values.tolist()
        p_values = result.p_values.tolist() if result.p_values is not None else [None] * len(names)
        for name, value, p_value in zip(names, values, p_values, strict=True):
            scores[name] = FeatureScore(name, value, p_value)
    return Comparison(statistic.name, tuple(scores[f] for f in features if f in scores), tuple(insufficient))
