"""Drift between a reference and a current window, computed from Prometheus histogram buckets.

The pipeline, all pure and vectorised over features:

1. :func:`histograms` (or :meth:`Histogram.from_cumulative`) turns ``{feature: {le: cumulative}}``
   from ``increase(metric_bucket[w])`` into per-bucket counts, refusing malformed buckets.
2. :func:`get_statistic` resolves a statistic's API name (an unknown name is an error listing the
   allowed ones); :data:`STATISTICS` is the registry.
3. :func:`compare` computes it for every feature, after checking that both sides have identical
   buckets (:class:`BucketMismatch`) and enough samples (:class:`InsufficientSamples`, a result).
4. :func:`learn_threshold` derives a threshold from the reference period's own sub-windows.
5. :func:`verdict` turns the per-feature values into one verdict and a one-line message.

Every statistic reads "higher means more drift" and is also callable directly on (rows, buckets)
arrays, with its choices (smoothing, log base, open buckets) on its function.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from retrain_operator.domain.drift.chisquare import ChiSquare, chi2_sf, chi_square
from retrain_operator.domain.drift.compare import Comparison, FeatureScore, StatisticNotApplicable, compare
from retrain_operator.domain.drift.divergences import (
    KL_EPSILON,
    PSI_EPSILON,
    hellinger,
    jensen_shannon_distance,
    jensen_shannon_divergence,
    kl_divergence,
    psi,
    total_variation,
)
from retrain_operator.domain.drift.histograms import (
    NOISE_TOLERANCE,
    BucketMismatch,
    Histogram,
    InsufficientSamples,
    MalformedHistogram,
    bucket_counts,
    check_edges,
    format_le,
    histograms,
    parse_le,
)
from retrain_operator.domain.drift.ks import KolmogorovSmirnov, kolmogorov_sf, ks
from retrain_operator.domain.drift.statistic import FloatArray, Scores, Statistic
from retrain_operator.domain.drift.thresholds import InsufficientHistory, LearnedThreshold, learn_threshold
from retrain_operator.domain.drift.verdict import VERDICT_MODES, DriftedFeature, DriftVerdict, verdict
from retrain_operator.domain.drift.wasserstein import bin_centres, wasserstein

__all__ = [
    "KL_EPSILON",
    "NOISE_TOLERANCE",
    "PSI_EPSILON",
    "STATISTICS",
    "STATISTIC_NAMES",
    "VERDICT_MODES",
    "BucketMismatch",
    "ChiSquare",
    "Comparison",
    "DriftVerdict",
    "DriftedFeature",
    "FeatureScore",
    "Histogram",
    "InsufficientHistory",
    "InsufficientSamples",
    "KolmogorovSmirnov",
    "LearnedThreshold",
    "MalformedHistogram",
    "Scores",
    "Statistic",
    "StatisticNotApplicable",
    "UnknownStatistic",
    "bin_centres",
    "bucket_counts",
    "check_edges",
    "chi2_sf",
    "chi_square",
    "compare",
    "format_le",
    "get_statistic",
    "hellinger",
    "histograms",
    "jensen_shannon_distance",
    "jensen_shannon_divergence",
    "kl_divergence",
    "kolmogorov_sf",
    "ks",
    "learn_threshold",
    "parse_le",
    "psi",
    "total_variation",
    "verdict",
    "wasserstein",
]


def _psi(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    return Scores(psi(reference, current))


def _js_divergence(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    return Scores(jensen_shannon_divergence(reference, current, base=2.0))


def _js_distance(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    return Scores(jensen_shannon_distance(reference, current, base=2.0))


def _hellinger(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    return Scores(hellinger(reference, current))


def _kl(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    return Scores(kl_divergence(reference, current))


def _total_variation(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    return Scores(total_variation(reference, current))


def _chi_square(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    result = chi_square(reference, current)
    return Scores(result.statistic, result.p_value)


def _wasserstein(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    return Scores(wasserstein(reference, current, edges=edges))


def _ks(reference: FloatArray, current: FloatArray, edges: FloatArray) -> Scores:
    result = ks(reference, current)
    return Scores(result.statistic, result.p_value)


STATISTICS: Mapping[str, Statistic] = MappingProxyType(
    {
        s.name: s
        for s in (
            Statistic(
                "psi",
                "Population stability index, natural log, proportions floored at 1e-4.",
                _psi,
                symmetric=True,
                scale_invariant=True,
                upper=None,
            ),
            Statistic(
                "jensenShannonDivergence",
                "Jensen-Shannon divergence in base 2, in [0, 1].",
                _js_divergence,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
            ),
            Statistic(
                "jensenShannonDistance",
                "Square root of the Jensen-Shannon divergence in base 2, in [0, 1].",
                _js_distance,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
            ),
            Statistic(
                "hellinger",
                "Hellinger distance, in [0, 1].",
                _hellinger,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
            ),
            Statistic(
                "klDivergence",
                "KL(current || reference) in nats, proportions smoothed by 1e-4.",
                _kl,
                symmetric=False,
                scale_invariant=True,
                upper=None,
            ),
            Statistic(
                "totalVariation",
                "Total variation distance: the share of mass that moved, in [0, 1].",
                _total_variation,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
            ),
            Statistic(
                "chiSquare",
                "Chi-square statistic of homogeneity (grows with sample size), with its p-value.",
                _chi_square,
                symmetric=True,
                scale_invariant=False,
                upper=None,
                has_p_value=True,
            ),
            Statistic(
                "wasserstein",
                "Wasserstein-1 distance with mass at bucket centres, in the feature's units.",
                _wasserstein,
                symmetric=True,
                scale_invariant=True,
                upper=None,
            ),
            Statistic(
                "ks",
                "Kolmogorov-Smirnov statistic at bucket edges (a lower bound), asymptotic p-value.",
                _ks,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
                has_p_value=True,
            ),
        )
    }
)
STATISTIC_NAMES: tuple[str, ...] = tuple(STATISTICS)


class UnknownStatistic(ValueError):
    """A statistic name that is not in the registry; the message lists the allowed names."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.allowed = STATISTIC_NAMES
        super().__init__(f"unknown drift statistic {name!r}; allowed: {', '.join(STATISTIC_NAMES)}")


def get_statistic(name: str) -> Statistic:
    """The registered statistic called ``name``, or :class:`UnknownStatistic`."""
    try:
        return STATISTICS[name]
    except KeyError:
        raise UnknownStatistic(name) from None
