"""Chi-square test of homogeneity between two histograms, with its p-value.

The two rows of counts form a 2 x B contingency table; buckets empty on both sides carry no
information and are dropped (they would make an expected count zero), so the degrees of freedom
are the number of non-empty buckets minus one. Without Yates' correction this is exactly
``scipy.stats.chi2_contingency(table, correction=False)`` on the reduced table.

For a 2 x B table the statistic has the closed form ``sum_j (r_j * C - c_j * R)**2 / (R * C * (r_j + c_j))``
with ``R`` and ``C`` the two totals, which needs no expected-count table. The p-value uses the
closed forms of the chi-square survival function at integer degrees of freedom (a finite Poisson
sum, plus ``erfc`` for odd degrees), exact to rounding.

Limits: the statistic grows with the sample size, so a fixed threshold on it means different things
for a busy and a quiet model; threshold the p-value, or learn the threshold from reference windows
of the same length as the current one. With expected counts below about 5 in many buckets the
chi-square approximation of the p-value is poor. Counts from ``increase()`` are not integers; the
test treats them as if they were.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from retrain_operator.domain.drift.statistic import FloatArray, pair

IntArray = npt.NDArray[np.int64]


class ChiSquare(NamedTuple):
    """Pearson's chi-square statistic, its p-value and degrees of freedom, one per compared pair."""

    statistic: FloatArray
    p_value: FloatArray
    dof: IntArray


def chi2_sf(x: npt.ArrayLike, dof: npt.ArrayLike) -> FloatArray:
    """``P(X > x)`` for ``X`` chi-square with integer ``dof >= 1`` degrees of freedom, elementwise.

    The regularised upper incomplete gamma ``Q(k/2, x/2)`` at half-integer or integer order is a
    finite sum: ``Q(n, h) = exp(-h) * sum_{j<n} h**j / j!`` and
    ``Q(n + 1/2, h) = erfc(sqrt(h)) + exp(-h) * sum_{j<n} h**(j + 1/2) / Gamma(j + 3/2)``, with every
    term taken in log space so that neither large ``h`` nor large ``j`` overflows.
    """
    xs, ks = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(dof, dtype=np.int64))
    if ks.size and ks.min() < 1:
        raise ValueError("degrees of freedom must be at least 1")
    h = xs / 2.0
    even = ks % 2 == 0
    n = ks // 2
    offset = np.where(even, 0.0, 0.5)
    result = np.zeros(h.shape, dtype=np.float64)
    odd = ~even
    if odd.any():
        erfc = np.frompyfunc(lambda v: math.erfc(math.sqrt(v)) if v >= 0 else math.nan, 1, 1)
        with np.errstate(invalid="ignore"):
            result[odd] = erfc(h[odd]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_h = np.log(h)
        for j in range(int(n.max()) if n.size else 0):
            log_gamma = np.where(even, math.lgamma(j + 1.0), math.lgamma(j + 1.5))
            term = np.exp(-h + (j + offset) * log_h - log_gamma)
            result += np.where(j < n, term, 0.0)
    result = np.where(h == 0.0, 1.0, result)
    final: FloatArray = np.clip(result, 0.0, 1.0)
    return final


def chi_square(reference: npt.ArrayLike, current: npt.ArrayLike) -> ChiSquare:
    """Statistic, p-value and degrees of freedom per row.

    A row whose only non-empty bucket is shared by both sides has nothing to test: statistic 0,
    p-value 1, 0 degrees of freedom (as SciPy reports for a one-column table).
    """
    ref, cur = pair(reference, current)
    r_total = ref.sum(axis=1, keepdims=True)
    c_total = cur.sum(axis=1, keepdims=True)
    column = ref + cur
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = ref * c_total - cur * r_total
        terms = np.where(column > 0.0, gap * gap / (r_total * c_total * column), 0.0)
    both = (r_total[:, 0] > 0.0) & (c_total[:, 0] > 0.0)
    statistic: FloatArray = np.where(both, terms.sum(axis=1), np.nan)
    dof: IntArray = ((column > 0.0).sum(axis=1) - 1).astype(np.int64)
    p_value: FloatArray = np.where(dof > 0, chi2_sf(statistic, np.maximum(dof, 1)), 1.0)
    p_value = np.where(both, p_value, np.nan)
    return ChiSquare(statistic, p_value, np.maximum(dof, 0))
