"""Two-sample Kolmogorov-Smirnov statistic and p-value approximated from histogram buckets.

The statistic is the largest gap between the two empirical CDFs, looked at only where they are
known: at the buckets' upper edges. The p-value is the asymptotic one, ``P(K > sqrt(n_e) * D)``
for the Kolmogorov distribution ``K`` (``scipy.special.kolmogorov``), with the effective sample size
``n_e = n * m / (n + m)`` of the two windows.

Limits, to read before trusting a p-value:
- Binning can only *underestimate* the true KS statistic: the true one is a supremum over every
  point of the line, this one over the bucket edges only. So drift inside a bucket is missed and
  the p-value is too large (conservative): fewer false alarms, and some real drift unseen when the
  buckets are coarse where the distributions differ.
- The asymptotic distribution assumes continuous data; binned data is full of ties, which also
  makes the test conservative. SciPy's ``ks_2samp(method="asymp")`` uses
  ``kstwo.sf(D, round(n_e))`` instead, which differs by O(1/sqrt(n_e)): negligible at the thousands
  of samples a window usually holds, noticeable below a hundred.
- Counts from ``increase()`` are not integers; ``n_e`` uses them as they are.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from retrain_operator.domain.drift.statistic import FloatArray, pair

_TERMS = 8


class KolmogorovSmirnov(NamedTuple):
    """The two-sample KS statistic from bucket edges, its p-value and the effective sample size."""

    statistic: FloatArray
    p_value: FloatArray
    effective_n: FloatArray


def kolmogorov_sf(y: npt.ArrayLike) -> FloatArray:
    """``P(K > y)`` for the Kolmogorov distribution, elementwise (``scipy.special.kolmogorov``).

    Below 1 the Jacobi theta form ``1 - sqrt(2 pi) / y * sum exp(-(2k-1)**2 pi**2 / (8 y**2))``
    converges in a few terms; from 1 up the alternating series ``2 * sum (-1)**(k-1) exp(-2 k**2 y**2)``
    does. Eight terms of either are exact to rounding on its side of 1.
    """
    values = np.asarray(y, dtype=np.float64)
    k = np.arange(1, _TERMS + 1, dtype=np.float64)
    flat = values.reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        theta = 1.0 - math.sqrt(2.0 * math.pi) / flat[:, 0] * np.exp(
            -((2.0 * k - 1.0) ** 2) * math.pi**2 / (8.0 * flat * flat)
        ).sum(axis=1)
        signs = np.where(k % 2 == 1, 1.0, -1.0)
        alternating = 2.0 * (signs * np.exp(-2.0 * k * k * flat * flat)).sum(axis=1)
    result = np.where(flat[:, 0] < 1.0, theta, alternating)
    result = np.where(flat[:, 0] <= 0.0, 1.0, result)
    final: FloatArray = np.clip(result, 0.0, 1.0).reshape(values.shape)
    return final


def ks(reference: npt.ArrayLike, current: npt.ArrayLike) -> KolmogorovSmirnov:
    """Largest CDF gap at the bucket edges, its asymptotic p-value and the effective n, per row. Symmetric."""
    ref, cur = pair(reference, current)
    r_total = ref.sum(axis=1)
    c_total = cur.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.cumsum(cur, axis=1) / c_total[:, None] - np.cumsum(ref, axis=1) / r_total[:, None]
        effective_n: FloatArray = r_total * c_total / (r_total + c_total)
    statistic: FloatArray = np.abs(gap).max(axis=1)
    p_value = kolmogorov_sf(np.sqrt(effective_n) * statistic)
    p_value = np.where(np.isnan(statistic), np.nan, p_value)
    return KolmogorovSmirnov(statistic, p_value, effective_n)
