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

import math
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


# Expected values without drift, from the first-order expansion of each divergence around equal
# distributions: sum((p - q)^2 / p) over B buckets has mean (B - 1)(1/n_ref + 1/n_cur) (the two-sample
# chi-square with B - 1 degrees of freedom, divided by its scale). PSI (the symmetrised KL) is that sum,
# KL half of it, Jensen-Shannon 1/(8 ln 2) of it in base 2, Hellinger squared 1/8 of it; total
# variation is half the sum of |p - q|, about 0.4 sqrt((B - 1)(1/n_ref + 1/n_cur)); KS is the mean of
# the Kolmogorov distribution, 0.87 sqrt(1/n_ref + 1/n_cur), less at B bucket edges; chi-square's is B - 1.
def _spread(buckets: int, n_ref: float, n_cur: float) -> float:
    return max(0, buckets - 1) * (1.0 / max(n_ref, 1.0) + 1.0 / max(n_cur, 1.0))


def _noise_psi(b: int, n_ref: float, n_cur: float) -> float:
    return _spread(b, n_ref, n_cur)


def _noise_kl(b: int, n_ref: float, n_cur: float) -> float:
    return 0.5 * _spread(b, n_ref, n_cur)


def _noise_js_divergence(b: int, n_ref: float, n_cur: float) -> float:
    return _spread(b, n_ref, n_cur) / (8.0 * math.log(2.0))


def _noise_js_distance(b: int, n_ref: float, n_cur: float) -> float:
    return math.sqrt(_noise_js_divergence(b, n_ref, n_cur))


def _noise_hellinger(b: int, n_ref: float, n_cur: float) -> float:
    return math.sqrt(_spread(b, n_ref, n_cur) / 8.0)


def _noise_total_variation(b: int, n_ref: float, n_cur: float) -> float:
    return 0.4 * math.sqrt(_spread(b, n_ref, n_cur))


def _noise_ks(b: int, n_ref: float, n_cur: float) -> float:
    # Looking only at bucket edges sees less of the largest gap: about 1 - 0.7 / sqrt(B) of it.
    return 0.87 * (1.0 - 0.7 / math.sqrt(max(b, 1))) * math.sqrt(_spread(2, n_ref, n_cur))


def _noise_chi_square(b: int, n_ref: float, n_cur: float) -> float:
    return float(max(0, b - 1))


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
                effect_floor=0.05,
                noise=_noise_psi,
            ),
            Statistic(
                "jensenShannonDivergence",
                "Jensen-Shannon divergence in base 2, in [0, 1].",
                _js_divergence,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
                effect_floor=0.009,
                noise=_noise_js_divergence,
            ),
            Statistic(
                "jensenShannonDistance",
                "Square root of the Jensen-Shannon divergence in base 2, in [0, 1].",
                _js_distance,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
                effect_floor=0.095,
                noise=_noise_js_distance,
                noise_power=0.5,
            ),
            Statistic(
                "hellinger",
                "Hellinger distance, in [0, 1].",
                _hellinger,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
                effect_floor=0.08,
                noise=_noise_hellinger,
                noise_power=0.5,
            ),
            Statistic(
                "klDivergence",
                "KL(current || reference) in nats, proportions smoothed by 1e-4.",
                _kl,
                symmetric=False,
                scale_invariant=True,
                upper=None,
                effect_floor=0.025,
                noise=_noise_kl,
            ),
            Statistic(
                "totalVariation",
                "Total variation distance: the share of mass that moved, in [0, 1].",
                _total_variation,
                symmetric=True,
                scale_invariant=True,
                upper=1.0,
                effect_floor=0.09,
                noise=_noise_total_variation,
                noise_power=0.5,
            ),
            Statistic(
                "chiSquare",
                "Chi-square statistic of homogeneity (grows with sample size), with its p-value.",
                _chi_square,
                symmetric=True,
                scale_invariant=False,
                upper=None,
                has_p_value=True,
                noise=_noise_chi_square,
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
                effect_floor=0.09,
                noise=_noise_ks,
                noise_power=0.5,
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
