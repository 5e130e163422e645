"""Learning a drift threshold from the reference period's own variation.

A fixed threshold ("PSI above 0.2") ignores how noisy a feature is: a quiet model's hourly
histograms wander more than a busy one's. Here the reference period is cut into sub-windows (for
example hourly histograms over the week the model was trained on) and each is compared with the
rest of the reference, *leaving that sub-window out*, with the statistic the trigger uses. The
threshold is ``mean + k * std`` of those values (sample standard deviation), never below ``floor``.

Leave-one-out rather than each sub-window against the whole reference: the whole contains the
sub-window, which pulls the two together (by a quarter when there are four sub-windows) and gives
thresholds that are too low; leaving it out makes the two sides disjoint, as the current window and
the reference are when the trigger runs.

Limits: divergences of binned counts have a finite-sample bias that shrinks with the window's
sample count, so sub-windows should be as long as the current window the trigger compares (or hold
a similar number of samples). Sub-windows are treated as independent, which hourly windows with a
daily cycle are not; the cycle then shows up as variation and raises the threshold, which is the
intent. The status carries the values' mean, standard deviation, median, 95th percentile and maximum
on their own scale, and the power the threshold was learned at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrain_operator.domain.drift.histograms import Histogram, check_edges, check_min_samples
from retrain_operator.domain.drift.statistic import Statistic


@dataclass(frozen=True)
class LearnedThreshold:
    """A threshold and the distribution of the reference values it came from, for the policy's status."""

    statistic: str
    threshold: float
    k: float
    mean: float
    std: float
    minimum: float
    median: float
    p95: float
    maximum: float
    windows: int
    skipped: int
    power: float = 1.0

    @property
    def message(self) -> str:
        skipped = f", {self.skipped} skipped for too few samples" if self.skipped else ""
        scale = "" if self.power == 1.0 else f" of the values to the power {self.power:.3g}"
        return (
            f"{self.statistic} threshold {self.threshold:.3g} = mean + {self.k:.3g} x std{scale} over "
            f"{self.windows} reference windows (mean {self.mean:.3g}, std {self.std:.3g}){skipped}"
        )

    def as_status(self) -> dict[str, float | int | str]:
        return {
            "statistic": self.statistic,
            "threshold": self.threshold,
            "k": self.k,
            "mean": self.mean,
            "std": self.std,
            "min": self.minimum,
            "median": self.median,
            "p95": self.p95,
            "max": self.maximum,
            "windows": self.windows,
            "skipped": self.skipped,
            "power": self.power,
        }


@dataclass(frozen=True)
class InsufficientHistory:
    """Too few reference sub-windows with enough samples to learn a threshold from."""

    feature: str
    windows: int
    usable: int
    min_windows: int
    min_samples: float

    @property
    def message(self) -> str:
        subject = f"feature {self.feature!r}: " if self.feature else ""
        return (
            f"{subject}{self.usable} of {self.windows} reference windows hold at least {self.min_samples:.6g} "
            f"samples (with as many in the rest of the reference); {self.min_windows} needed to learn a threshold"
        )


def learn_threshold(
    windows: Sequence[Histogram],
    *,
    statistic: Statistic,
    min_samples: float,
    k: float = 3.0,
    floor: float = 0.0,
    min_windows: int = 5,
    feature: str = "",
    metric: str = "",
) -> LearnedThreshold | InsufficientHistory:
    """``mean + k * std`` of each sub-window's statistic against the rest of the reference.

    ``windows`` are consecutive histograms of the reference period with identical edges (else
    :class:`BucketMismatch`). A window with fewer than ``min_samples``, or whose complement has
    fewer, is skipped; with fewer than ``min_windows`` left (at least 2) the answer is
    :class:`InsufficientHistory`. All comparisons run as one batch.
    """
    check_min_samples(min_samples)
    if min_windows < 2:
        raise ValueError(f"min_windows must be at least 2 (a standard deviation needs two values), got {min_windows}")
    if not k >= 0.0:
        raise ValueError(f"k must be non-negative, got {k}")
    if not windows:
        return InsufficientHistory(feature, 0, 0, min_windows, min_samples)
    for i, window in enumerate(windows[1:], start=1):
        check_edges(windows[0], window, feature=feature, metric=metric, sides=("window 0", f"window {i}"))
    counts = np.array([w.counts for w in windows], dtype=np.float64)
    rest = np.maximum(counts.sum(axis=0) - counts, 0.0)
    usable = (counts.sum(axis=1) >= min_samples) & (rest.sum(axis=1) >= min_samples)
    used = int(usable.sum())
    if used < min_windows:
        return InsufficientHistory(feature, len(windows), used, min_windows, min_samples)
    values = statistic.compute(rest[usable], counts[usable], np.array(windows[0].edges, dtype=np.float64)).values
    mean = float(values.mean())
    std = float(values.std(ddof=1))
    power = transform_power(statistic)
    scaled = np.maximum(values, 0.0) ** power
    level = max(0.0, float(scaled.mean() + k * scaled.std(ddof=1))) ** (1.0 / power)
    return LearnedThreshold(
        statistic=statistic.name,
        threshold=max(level, floor),
        k=k,
        mean=mean,
        std=std,
        minimum=float(values.min()),
        median=float(np.median(values)),
        p95=float(np.percentile(values, 95)),
        maximum=float(values.max()),
        windows=used,
        skipped=len(windows) - used,
        power=power,
    )


def transform_power(statistic: Statistic) -> float:
    """The power that makes the statistic's no-drift values nearly normal: 1/3 for chi-square-like
    divergences, 2/3 for their square roots, 1 for a statistic without a noise model (Wasserstein)."""
    if statistic.noise is None:
        return 1.0
    return (1.0 / 3.0) / statistic.noise_power
