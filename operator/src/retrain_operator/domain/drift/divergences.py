"""Divergences and distances between the bucket proportions of two histograms.

All are functions of proportions only, so they do not change when either side's counts are scaled
(a one-hour and a one-day window of the same distribution compare as equal), and all are
invariant to the order of the buckets. Where an empty bucket would make a logarithm infinite the
smoothing is explicit and documented on the function; Jensen-Shannon, Hellinger and total
variation need none, they are finite for any pair of distributions.

Limits: these see only how mass moves between buckets, not how far; a shift within one bucket is
invisible and a shift to the neighbouring bucket counts as much as one to the far end (use
Wasserstein or KS for a sense of distance along the axis).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from retrain_operator.domain.drift.statistic import FloatArray, pair, proportions

PSI_EPSILON = 1e-4
KL_EPSILON = 1e-4


def _plogp_over_q(p: FloatArray, q: FloatArray) -> FloatArray:
    """``p * log(p / q)`` with 0 where p is 0, +inf where only q is 0, NaN kept."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = p * np.log(p / q)
    result: FloatArray = np.where(p == 0.0, 0.0, terms)
    return result


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, *, epsilon: float = PSI_EPSILON) -> FloatArray:
    """Population stability index, ``sum((c - r) * ln(c / r))`` over bucket proportions, natural log.

    An empty bucket makes the logarithm infinite, so every proportion is floored at ``epsilon``
    (default 1e-4, the usual convention) before the sum, without renormalising: a bucket empty on
    one side and holding a share ``s`` on the other adds ``(s - eps) * ln(s / eps)``, large but
    finite, and a bucket empty on both sides adds exactly 0. The usual reading (0.1 small, 0.25
    large) assumes this natural-log form. Symmetric.
    """
    if not epsilon > 0.0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    ref, cur = pair(reference, current)
    q = np.maximum(proportions(ref), epsilon)
    p = np.maximum(proportions(cur), epsilon)
    result: FloatArray = np.maximum(((p - q) * np.log(p / q)).sum(axis=1), 0.0)
    return result


def kl_divergence(reference: npt.ArrayLike, current: npt.ArrayLike, *, epsilon: float = KL_EPSILON) -> FloatArray:
    """Kullback-Leibler divergence ``KL(current || reference)`` in nats (natural log).

    The direction asks how surprising today's data is under the reference distribution: mass in a
    bucket the reference (almost) never saw weighs heavily. Additive smoothing on proportions keeps
    it finite: each side becomes ``(p + eps) / (1 + B * eps)`` for ``B`` buckets (default eps 1e-4),
    which still sums to 1 and, being applied to proportions rather than counts, keeps the value
    independent of the window's length. With ``epsilon=0`` it is the raw divergence: +inf when the
    current side has mass in a bucket empty in the reference. Not symmetric.
    """
    if not epsilon >= 0.0:
        raise ValueError(f"epsilon must be non-negative, got {epsilon}")
    ref, cur = pair(reference, current)
    buckets = ref.shape[1]
    q = (proportions(ref) + epsilon) / (1.0 + buckets * epsilon)
    p = (proportions(cur) + epsilon) / (1.0 + buckets * epsilon)
    result: FloatArray = np.maximum(_plogp_over_q(p, q).sum(axis=1), 0.0)
    return result


def jensen_shannon_divergence(reference: npt.ArrayLike, current: npt.ArrayLike, *, base: float = 2.0) -> FloatArray:
    """Jensen-Shannon divergence: the mean KL of each side to their average ``m = (r + c) / 2``.

    Finite without smoothing (``m`` is positive wherever either side is). In ``base`` 2 (the
    default) it lies in [0, 1], 1 meaning disjoint supports; in base e its upper bound is ln 2.
    Symmetric.
    """
    if not (base > 0.0 and base != 1.0):
        raise ValueError(f"base must be positive and not 1, got {base}")
    ref, cur = pair(reference, current)
    q = proportions(ref)
    p = proportions(cur)
    m = (p + q) / 2.0
    total = (_plogp_over_q(p, m) + _plogp_over_q(q, m)).sum(axis=1) / (2.0 * math.log(base))
    result: FloatArray = np.maximum(total, 0.0)
    return result


def jensen_shannon_distance(reference: npt.ArrayLike, current: npt.ArrayLike, *, base: float = 2.0) -> FloatArray:
    """The square root of :func:`jensen_shannon_divergence`, a metric; in [0, 1] for base 2.

    This is what ``scipy.spatial.distance.jensenshannon`` returns.
    """
    result: FloatArray = np.sqrt(jensen_shannon_divergence(reference, current, base=base))
    return result


def hellinger(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """Hellinger distance ``sqrt(sum((sqrt(c) - sqrt(r))**2) / 2)``, in [0, 1]. Symmetric.

    Computed from the differences of square roots rather than as ``sqrt(1 - sum(sqrt(r * c)))``,
    which loses all precision for close distributions.
    """
    ref, cur = pair(reference, current)
    diff = np.sqrt(proportions(cur)) - np.sqrt(proportions(ref))
    result: FloatArray = np.sqrt((diff * diff).sum(axis=1) / 2.0)
    return result


def total_variation(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """Total variation distance ``sum(|c - r|) / 2``: the share of mass that has to move. In [0, 1]."""
    ref, cur = pair(reference, current)
    result: FloatArray = np.abs(proportions(cur) - proportions(ref)).sum(axis=1) / 2.0
    return result
