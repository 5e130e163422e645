"""Wasserstein-1 (earth mover's) distance approximated from histogram buckets.

Each bucket's mass is placed at its centre and the distance between the two discrete distributions
is exact for that placement: ``sum_i |F_c(i) - F_r(i)| * (x_{i+1} - x_i)`` over the cumulative
proportions ``F`` and the centres ``x``. This equals ``scipy.stats.wasserstein_distance`` with the
centres as values and the counts as weights.

Open buckets: a Prometheus histogram's first bucket is ``(-inf, le_0]`` and its last ``(le_last, +inf)``.
The first bucket's mass is placed half a width below its edge, ``le_0 - (le_1 - le_0) / 2``, and the
``+Inf`` bucket's half a width above the last finite edge, ``le_last + (le_last - le_prev) / 2``,
each taking the width of its finite neighbour. So at least two finite edges are needed.

Limits: the value is in the feature's own units, so one threshold does not fit features of
different scales; learn a threshold per feature. Movement inside a bucket is invisible, and mass in
an open bucket is assumed to sit half a width beyond the edge whatever its real spread, so a tail
growing further out is underestimated. A feature that cannot be negative with a first edge of 0
has that bucket's mass placed at a negative value; this only matters when mass moves into or out of
that bucket, and then by at most half a width.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from retrain_operator.domain.drift.statistic import FloatArray, pair, proportions


def bin_centres(edges: npt.ArrayLike) -> FloatArray:
    """Where each bucket's mass is placed, from the buckets' upper edges (the last one ``+inf``)."""
    upper = np.asarray(edges, dtype=np.float64)
    if upper.ndim != 1 or upper.size < 3 or upper[-1] != math.inf:
        raise ValueError(
            "Wasserstein needs the upper edges of at least three buckets, the last one +Inf "
            f"(two finite edges give the open buckets a width), got {upper.tolist()}"
        )
    finite = upper[:-1]
    if not (np.isfinite(finite).all() and (np.diff(finite) > 0.0).all()):
        raise ValueError(f"bucket edges must be finite and strictly increasing before +Inf, got {upper.tolist()}")
    centres = np.empty(upper.size, dtype=np.float64)
    centres[0] = finite[0] - (finite[1] - finite[0]) / 2.0
    centres[1:-1] = (finite[:-1] + finite[1:]) / 2.0
    centres[-1] = finite[-1] + (finite[-1] - finite[-2]) / 2.0
    return centres


def wasserstein(reference: npt.ArrayLike, current: npt.ArrayLike, *, edges: npt.ArrayLike) -> FloatArray:
    """Wasserstein-1 distance per row, in the units of the bucket edges. Symmetric."""
    ref, cur = pair(reference, current)
    centres = bin_centres(edges)
    if centres.size != ref.shape[1]:
        raise ValueError(f"{centres.size} bucket edges for {ref.shape[1]} buckets")
    gap = np.cumsum(proportions(cur) - proportions(ref), axis=1)[:, :-1]
    result: FloatArray = np.abs(gap) @ np.diff(centres)
    return result
