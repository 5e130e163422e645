"""Drift statistics benchmark: the vectorised batch against SciPy called once per feature, side by side.

For every registered statistic it times one batch of N comparisons (features x buckets arrays)
and the same comparisons made one feature at a time with SciPy's functions, prints comparisons
per second per core for each, their ratio, and the largest relative difference between the two
answers. BLAS and OpenMP are limited to one thread, and the CPU time over wall time of each run is
printed so that "per core" can be checked. The last lines time the whole path from ``le`` strings:
parsing and differencing buckets with ``histograms()``, then ``compare()``.
Figures, not assertions: ``python bench/drift.py [--features 10000 --buckets 50]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import spatial, special, stats  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "operator" / "src")]

from retrain_operator.domain.drift import (  # noqa: E402
    STATISTICS,
    Histogram,
    Statistic,
    bin_centres,
    compare,
    get_statistic,
    histograms,
)

Row = np.ndarray
PerRow = Callable[[Row, Row, Row], float]


def _share(row: Row) -> Row:
    result: Row = row / row.sum()
    return result


def _psi(r: Row, c: Row, _: Row) -> float:
    p, q = np.maximum(_share(c), 1e-4), np.maximum(_share(r), 1e-4)
    return float(np.sum(special.rel_entr(p, q) + special.rel_entr(q, p)))


def _kl(r: Row, c: Row, _: Row) -> float:
    eps, b = 1e-4, len(r)
    return float(stats.entropy((_share(c) + eps) / (1 + b * eps), (_share(r) + eps) / (1 + b * eps)))


def _chi2(r: Row, c: Row, _: Row) -> float:
    table = np.array([r, c])
    return float(stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False).statistic)


def _ks(r: Row, c: Row, _: Row) -> float:
    """The statistic; its p-value is computed as well, as the batch does, and not compared here."""
    d = float(np.abs(np.cumsum(_share(c)) - np.cumsum(_share(r))).max())
    n, m = r.sum(), c.sum()
    special.kolmogorov(math.sqrt(n * m / (n + m)) * d)
    return d


SCIPY: dict[str, tuple[str, PerRow]] = {
    "psi": ("special.rel_entr both ways", _psi),
    "jensenShannonDivergence": (
        "spatial.distance.jensenshannon**2",
        lambda r, c, e: float(spatial.distance.jensenshannon(c, r, base=2)) ** 2,
    ),
    "jensenShannonDistance": (
        "spatial.distance.jensenshannon",
        lambda r, c, e: float(spatial.distance.jensenshannon(c, r, base=2)),
    ),
    "hellinger": (
        "spatial.distance.euclidean of roots",
        lambda r, c, e: float(spatial.distance.euclidean(np.sqrt(_share(c)), np.sqrt(_share(r)))) / math.sqrt(2),
    ),
    "klDivergence": ("stats.entropy", _kl),
    "totalVariation": (
        "spatial.distance.cityblock / 2",
        lambda r, c, e: float(spatial.distance.cityblock(_share(c), _share(r))) / 2,
    ),
    "chiSquare": ("stats.chi2_contingency", _chi2),
    "wasserstein": ("stats.wasserstein_distance", lambda r, c, e: float(stats.wasserstein_distance(e, e, c, r))),
    "ks": ("numpy CDF gap + special.kolmogorov", _ks),
}


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall time over ``repeats`` and the CPU/wall ratio of that run (about 1.0 on one core)."""
    best, ratio = math.inf, 1.0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best:
            best, ratio = wall, cpu / wall
    return best, ratio


def data(features: int, buckets: int, seed: int) -> tuple[Row, Row, Row]:
    rng = np.random.default_rng(seed)
    base = np.exp(-0.5 * ((np.arange(buckets) - buckets / 2) / (buckets / 6)) ** 2) + 0.002
    ref = rng.multinomial(5000, base / base.sum(), size=features).astype(np.float64)
    moved = base * np.exp(rng.normal(0.0, 0.2, size=(features, buckets)))
    cur = np.array([rng.multinomial(2000, row / row.sum()) for row in moved], dtype=np.float64)
    edges = np.append(np.linspace(-3.0, 3.0, buckets - 1), math.inf)
    return ref, cur, edges


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--features", type=int, default=10_000, help="comparisons per batch")
    parser.add_argument("--buckets", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="vectorised runs; the best is reported")
    parser.add_argument(
        "--scipy-features", type=int, default=None, help="comparisons in the SciPy loop (default: --features)"
    )
    args = parser.parse_args()
    n, loop_n = args.features, args.scipy_features or args.features
    ref, cur, edges = data(n, args.buckets, seed=1)
    centres = bin_centres(edges)

    with threadpool_limits(limits=1):
        print(
            f"drift statistics: {n} comparisons at {args.buckets} buckets (SciPy loop: {loop_n}), "
            f"1 thread (BLAS/OpenMP limited), numpy {np.__version__}, scipy {scipy.__version__}, "
            f"python {sys.version.split()[0]}"
        )
        print(
            f"{'statistic':<24} {'vectorised/s/core':>18} {'cpu/wall':>9} {'scipy loop/s/core':>18} "
            f"{'cpu/wall':>9} {'ratio':>8} {'max rel diff':>13}  scipy function"
        )
        for name, statistic in STATISTICS.items():
            label, per_row = SCIPY[name]

            def batch(s: Statistic = statistic) -> None:
                s.compute(ref, cur, edges)

            fast, fast_ratio = timed(batch, args.repeats)
            ours = statistic.compute(ref, cur, edges).values[:loop_n]
            theirs = np.empty(loop_n)

            def loop(f: PerRow = per_row, out: Row = theirs) -> None:
                for i in range(loop_n):
                    out[i] = f(ref[i], cur[i], centres)

            slow, slow_ratio = timed(loop, 1)
            diff = float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)))
            fast_rate, slow_rate = n / fast, loop_n / slow
            print(
                f"{name:<24} {fast_rate:>18,.0f} {fast_ratio:>9.2f} {slow_rate:>18,.0f} {slow_ratio:>9.2f} "
                f"{fast_rate / slow_rate:>7.0f}x {diff:>13.1e}  {label}"
            )

        raw = {
            f"f{i}": {
                ("+Inf" if math.isinf(e) else repr(float(e))): float(v)
                for e, v in zip(edges, np.cumsum(row), strict=True)
            }
            for i, row in enumerate(cur)
        }
        reference = {f"f{i}": Histogram(tuple(edges.tolist()), tuple(row)) for i, row in enumerate(ref.tolist())}
        parsed, parse_ratio = timed(lambda: histograms(raw), 3)
        current = histograms(raw)
        psi = get_statistic("psi")
        compared, compare_ratio = timed(lambda: compare(reference, current, statistic=psi, min_samples=100), 3)
        print(f"histograms() from le strings: {n / parsed:>12,.0f} features/s/core (cpu/wall {parse_ratio:.2f})")
        print(f"compare(psi) from Histograms: {n / compared:>12,.0f} features/s/core (cpu/wall {compare_ratio:.2f})")


if __name__ == "__main__":
    main()
