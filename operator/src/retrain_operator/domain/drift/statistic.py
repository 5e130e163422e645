"""What every drift statistic shares: its inputs, its result and its entry in the registry.

A statistic compares rows of binned counts: ``reference`` and ``current`` are arrays of shape
(rows, buckets), one row per feature (or per window), with identical bucket edges. Counts need not
be integers (PromQL ``increase()`` extrapolates) and need not sum to the same total: every
statistic here works on proportions, or on the contingency table of the two rows. A row whose total
is zero has no distribution and gives NaN; :func:`~retrain_operator.domain.drift.compare` never
passes one, because it asks for at least one sample on each side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Scores:
    """One value per row; ``p_values`` too for the statistics that are tests (chi-square, KS)."""

    values: FloatArray
    p_values: FloatArray | None = None


@dataclass(frozen=True)
class Statistic:
    """A drift statistic as the registry holds it.

    ``compute(reference, current, edges)`` takes two (rows, buckets) arrays of counts and the
    buckets' upper edges (only Wasserstein reads them). A higher value always means more drift.
    ``symmetric``: swapping reference and current gives the same value. ``scale_invariant``:
    multiplying either side's counts by a constant gives the same value (the statistic sees only
    proportions). ``upper`` is the largest possible value, ``None`` when unbounded.

    ``effect_floor`` is the smallest drift worth acting on, in the statistic's own units: the value a
    shift of about a fifth of a standard deviation of a normal feature gives (PSI 0.05), so a learned
    threshold never falls below it; ``None`` where the statistic's scale depends on the data (chi-square
    grows with the sample size, Wasserstein is in the feature's units). ``noise`` gives the expected
    value under no drift for (buckets, reference samples, current samples), ``None`` where unknown;
    ``noise_power`` is 0.5 for the statistics that are square roots of a divergence (a margin of 3 over
    the noise of the divergence is a margin of 1.7 over theirs).
    """

    name: str
    description: str
    compute: Callable[[FloatArray, FloatArray, FloatArray], Scores]
    symmetric: bool
    scale_invariant: bool
    upper: float | None
    has_p_value: bool = False
    effect_floor: float | None = None
    noise: Callable[[int, float, float], float] | None = None
    noise_power: float = 1.0


def rows(values: npt.ArrayLike, what: str) -> FloatArray:
    """Counts as a float (rows, buckets) array; a single histogram becomes one row."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{what} counts must be (rows, buckets) with at least one bucket, got shape {array.shape}")
    if array.size and not (array.min() >= 0.0 and np.isfinite(array.max())):
        raise ValueError(f"{what} counts must be finite and non-negative")
    return array


def pair(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    ref = rows(reference, "reference")
    cur = rows(current, "current")
    if ref.shape != cur.shape:
        raise ValueError(f"reference and current counts differ in shape: {ref.shape} and {cur.shape}")
    return ref, cur


def proportions(counts: FloatArray) -> FloatArray:
    """Each row divided by its total; a row of zeros becomes NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        result: FloatArray = counts / counts.sum(axis=1, keepdims=True)
    return result
