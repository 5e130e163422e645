"""Prometheus histogram history built from a real dataset, as serving code would have exported it.

Every 15 s the "serving code" observes a batch of rows and increments one cumulative ``le`` bucket
counter per feature, exactly like a classic Prometheus histogram; from ``shift_at`` on, a feature's
values can be shifted (the world changing under the model). The exact counts at every sample time
are kept, so tests can compute the expected drift independently of the operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.datasets import load_breast_cancer

from sandbox.prometheus import Series

STEP = 15.0
FEATURES = {"radius": "mean radius", "texture": "mean texture", "smoothness": "mean smoothness"}


def dataset() -> dict[str, np.ndarray]:
    frame = load_breast_cancer(as_frame=True).frame
    return {name: frame[column].to_numpy(dtype=float) for name, column in FEATURES.items()}


def edges_for(values: np.ndarray, buckets: int = 8) -> list[float]:
    """Finite bucket bounds at the data's quantiles (serving code would fix them from training data)."""
    return [round(float(q), 4) for q in np.quantile(values, np.linspace(0, 1, buckets + 1)[1:-1])]


def le(edge: float) -> str:
    return f"{edge:g}"


@dataclass
class History:
    """Cumulative bucket counts per feature at each sample time."""

    times: list[float] = field(default_factory=list)
    counts: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # feature -> per time -> le -> cum

    def at(self, feature: str, moment: float) -> dict[str, float]:
        """The counts of the last sample at or before ``moment``."""
        index = max(i for i, t in enumerate(self.times) if t <= moment)
        return self.counts[feature][index]

    def increase(self, feature: str, start: float, end: float) -> dict[str, float]:
        """Counts added in (start, end], between the first and last samples inside it (what increase() sees)."""
        inside = [i for i, t in enumerate(self.times) if start < t <= end]
        first, last = self.counts[feature][inside[0]], self.counts[feature][inside[-1]]
        return {k: last[k] - first[k] for k in last}


def simulate(
    *,
    labels: Mapping[str, str],
    start: float,
    end: float,
    seed: int,
    shift_at: float | None = None,
    shift: Mapping[str, float] | None = None,
    batch: int = 20,
    edges: Mapping[str, Sequence[float]],
    metric: str = "feature_value",
    column_names: bool = False,
) -> tuple[list[Series], History]:
    """Histogram series for one model from ``start`` to ``end`` (Unix seconds), samples every 15 s."""
    data = dataset()
    rng = np.random.default_rng(seed)
    history = History()
    running = {f: np.zeros(len(edges[f]) + 1) for f in data}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    moment = start
    while moment <= end:
        rows = rng.integers(0, len(next(iter(data.values()))), size=batch)
        history.times.append(moment)
        for feature, values in data.items():
            observed = values[rows]
            if shift_at is not None and moment >= shift_at and shift and feature in shift:
                observed = observed + shift[feature] * values.std()
            bucket = np.searchsorted(np.asarray(edges[feature]), observed, side="left")
            running[feature] += np.bincount(bucket, minlength=len(edges[feature]) + 1)
            cumulative = np.cumsum(running[feature])
            bounds = [le(e) for e in edges[feature]] + ["+Inf"]
            snapshot = dict(zip(bounds, cumulative.tolist(), strict=True))
            history.counts.setdefault(feature, []).append(snapshot)
            for bound, value in snapshot.items():
                samples.setdefault((feature, bound), []).append((moment, float(value)))
        moment += STEP
    # Serving code may label features by their training column names (what drift against the model needs).
    series = [
        Series(
            f"{metric}_bucket",
            {**labels, "feature": FEATURES[feature] if column_names else feature, "le": bound},
            points,
        )
        for (feature, bound), points in samples.items()
    ]
    return series, history
