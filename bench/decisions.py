"""Decision-quality benchmark: which retraining policy pays, measured in simulated time on labelled streams.

Each stream is a labelled data stream with a known change point (or none): scikit-learn's bundled
data sets resampled with jitter, with an injected covariate shift (some features move by a share of
their standard deviation) or prior shift (class proportions change), and the concept-drift
generators of ``river`` (SEA, Hyperplane, Agrawal: the labelling function changes, the inputs do
not). Time advances one evaluation interval (1h) at a time. In every interval:

- the served model (a Pipeline fitted by the built-in trainer's own ``fit_and_score``) predicts the
  interval's rows; its accuracy becomes a gauge sample, the rows' features go into cumulative
  histogram buckets per feature (standardised with the first model's training data, in the deciles of
  a standard normal), and a counter counts the labelled rows;
- the operator's own code decides: the real :class:`Observer` plans and runs each trigger type's
  queries against :class:`SimulatedPrometheus`, which evaluates exactly the PromQL shapes the built-in
  triggers build over the simulated series; then ``evaluate_triggers``, the cost-benefit ``assess``
  (through ``accuracy_now``), ``decide`` and the status transitions (``PolicyStatus.evaluated``) run
  as the operator runs them;
- a retrain occupies the policy for its expected duration (rounded up to whole intervals), fits the
  same estimator on the most recent ``--train-window`` of rows, and replaces the served model.

Every policy sees the same streams and seeds. Figures per policy: retrains, mean accuracy, the
accuracy-weighted value (accuracy points x value per point per day x days), total cost with the
policy's prices, net value, detection delay of every true change (from the change to the first
retrain decided after it), retrains on the streams without a change, and, for the drift triggers,
the share of evaluations they fired on the unchanged streams (false alarms) and the changes they
flagged (power). Figures, not assertions.

Limits: labels arrive with their rows (no label delay); rows per interval are constant, so a
``dataVolume`` trigger behaves like a schedule; the bundled data sets are small, so streams resample
the same rows (with jitter) and live accuracy is optimistic for every policy alike; windows are
counted in whole intervals. Run: ``python bench/decisions.py [--quick] [--jobs 2]`` (needs the
``bench`` extra: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "operator" / "src")]

from retrain_operator.adapters.prometheus import Sample  # noqa: E402
from retrain_operator.domain.api import EndpointSpec, PolicySpec, parse_policy_spec  # noqa: E402
from retrain_operator.domain.budget import assess, cost_of  # noqa: E402
from retrain_operator.domain.drift import format_le  # noqa: E402
from retrain_operator.domain.evaluation import accuracy_now, evaluate_triggers  # noqa: E402
from retrain_operator.domain.policy_status import (  # noqa: E402
    ActiveJob,
    HistoryEntry,
    ModelRecord,
    PolicyStatus,
    RetrainRecord,
)
from retrain_operator.domain.times import rfc3339  # noqa: E402
from retrain_operator.reconcile.observe import Observer, QuerySource, Subject  # noqa: E402
from retrain_operator.reconcile.spending import resources_of  # noqa: E402
from retrain_operator.settings.durations import parse_duration  # noqa: E402
from retrain_operator.trainer.data import Dataset  # noqa: E402
from retrain_operator.trainer.fit import fit_and_score, make_estimator  # noqa: E402

HOUR = 3600.0
DAY = 86400.0
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, 00:00 UTC
ESTIMATOR = "sklearn.linear_model.LogisticRegression"
ESTIMATOR_PARAMS: dict[str, object] = {"max_iter": 500}
ACCURACY = "model_accuracy"
FEATURES = "model_feature_value"
LABELLED = "model_labelled_samples_total"
VALUE_PER_POINT_PER_DAY = 40.0


# The streams.


@dataclass(frozen=True)
class StreamSpec:
    """A labelled stream; ``change`` says what happens at the change point (``None``: noise only)."""

    name: str
    source: str
    change: str | None


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("breast_cancer", "breast_cancer", None),
    StreamSpec("wine", "wine", None),
    StreamSpec("sea", "sea", None),
    StreamSpec("breast_cancer+covariate", "breast_cancer", "covariate"),
    StreamSpec("wine+prior", "wine", "prior"),
    StreamSpec("sea+concept", "sea", "concept"),
    StreamSpec("hyperplane+concept", "hyperplane", "concept"),
    StreamSpec("agrawal+concept", "agrawal", "concept"),
)
# 64 features: about twice the time of the others together; ``--stream digits+covariate`` adds it.
EXTRA_STREAMS: tuple[StreamSpec, ...] = (StreamSpec("digits+covariate", "digits", "covariate"),)


@dataclass
class StreamData:
    """Rows per interval: ``x[i]``/``y[i]`` for interval i; ``change_step`` the first changed interval."""

    spec: StreamSpec
    columns: list[str]
    x: np.ndarray  # (steps, rows, features) float32
    y: np.ndarray  # (steps, rows)
    change_step: int | None


def _sklearn_rows(source: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine, "digits": datasets.load_digits}[
        source
    ]
    bunch = loader()
    names = [re.sub(r"[^a-zA-Z0-9_]", "_", str(n)) for n in bunch.feature_names]
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target), names


def _sklearn_stream(
    spec: StreamSpec, *, steps: int, rows: int, change_step: int, rng: np.random.Generator
) -> StreamData:
    data, target, names = _sklearn_rows(spec.source)
    sd = data.std(axis=0)
    sd[sd == 0] = 1.0
    classes = np.unique(target)
    by_class = [np.flatnonzero(target == c) for c in classes]
    base = np.array([len(i) for i in by_class], dtype=np.float64)
    base /= base.sum()
    shifted = base.copy()
    if spec.change == "prior":  # the first class doubles its share (wine: 33% -> 66%)
        shifted = base * 0.5
        shifted[0] = min(0.9, base[0] * 2)
        shifted /= shifted.sum()
    moved: np.ndarray = np.array([], dtype=np.intp)
    if spec.change == "covariate":  # the features that matter most move, as after a sensor's recalibration
        with np.errstate(invalid="ignore", divide="ignore"):  # constant pixels have no correlation
            signal = np.abs(np.corrcoef(np.c_[data, target].T)[-1, :-1])
        moved = np.argsort(-np.nan_to_num(signal))[: max(3, len(names) // 10)]
    total = steps * rows
    changed = np.arange(steps) >= change_step if spec.change else np.zeros(steps, dtype=bool)
    shares = np.where(changed[:, None], shifted[None, :], base[None, :])
    picks = np.empty((steps, rows), dtype=np.intp)
    for s in range(steps):
        cls = rng.choice(len(classes), size=rows, p=shares[s])
        for k, members in enumerate(by_class):
            where = cls == k
            picks[s, where] = rng.choice(members, size=int(where.sum()))
    x = data[picks.reshape(-1)] + rng.normal(0.0, 0.1, size=(total, data.shape[1])) * sd
    x = x.reshape(steps, rows, -1)
    if len(moved):
        x[np.ix_(changed, np.arange(rows), moved)] += 1.0 * sd[moved]
    y = target[picks]
    return StreamData(spec, names, x.astype(np.float32), y, change_step if spec.change else None)


def _river_stream(spec: StreamSpec, *, steps: int, rows: int, change_step: int, seed: int) -> StreamData:
    from river import datasets
    from river.datasets import synth

    def make(variant: int) -> datasets.base.SyntheticDataset:
        if spec.source == "sea":
            return synth.SEA(variant=variant, noise=0.05, seed=seed)
        if spec.source == "hyperplane":
            return synth.Hyperplane(seed=seed + 97 * variant, n_features=10, noise_percentage=0.05)
        return synth.Agrawal(classification_function=variant, seed=seed, balance_classes=False, perturbation=0.05)

    total = steps * rows
    before, after = (0, 2) if spec.source != "hyperplane" else (0, 1)
    # An abrupt switch of concept at the change point (river's ConceptDriftStream with a width of one row).
    parts = (
        [(make(before), change_step * rows), (make(after), total - change_step * rows)]
        if spec.change
        else [(make(before), total)]
    )
    xs: list[list[float]] = []
    ys: list[int] = []
    columns: list[str] = []
    for stream, count in parts:
        for features, label in stream.take(count):
            if not columns:
                keys = list(features)
                columns = [str(c) for c in keys]
            xs.append([float(features[k]) for k in keys])
            ys.append(int(label))
    x = np.asarray(xs, dtype=np.float32).reshape(steps, rows, -1)
    y = np.asarray(ys).reshape(steps, rows)
    return StreamData(spec, columns, x, y, change_step if spec.change else None)


def make_stream(spec: StreamSpec, *, steps: int, rows: int, change_step: int, seed: int) -> StreamData:
    if spec.source in ("sea", "hyperplane", "agrawal"):
        return _river_stream(spec, steps=steps, rows=rows, change_step=change_step, seed=seed)
    return _sklearn_stream(spec, steps=steps, rows=rows, change_step=change_step, rng=np.random.default_rng(seed))


# The simulated Prometheus: the series a serving process would export, and the built-in triggers' PromQL.


_RANGE = r"\[(\w+)\]"
_ACCURACY = re.compile(r"^avg by \(([^)]*)\) \(avg_over_time\((\w+)\{[^}]*\}" + _RANGE + r"\)\)$")
_SUBQUERY = re.compile(r"^(max|count)_over_time\(\((.*)\)\[(\w+):(\w+)\]\)$")
_HISTOGRAM = re.compile(r"^sum by \(([^)]*)\) \(increase\((\w+)_bucket\{[^}]*\}" + _RANGE + r"\)\)$")
_COUNTER = re.compile(r"^sum\(increase\((\w+)\{[^}]*\}" + _RANGE + r"\)\)$")


class _Point:
    """One series of a result: what the triggers read of a sample (labels, value), and nothing else."""

    __slots__ = ("labels", "value")

    def __init__(self, labels: Mapping[str, str], value: float) -> None:
        self.labels = labels
        self.value = value


class SimulatedPrometheus:
    """Answers the PromQL the built-in triggers build, over per-interval series; anything else is an error.

    Series: a gauge sample per interval (accuracy over the interval's rows) at the interval's end; per
    feature, bucket counts that arrive at the interval's end; a counter of labelled rows. ``[w]``
    covers the samples of the intervals ending in ``(t - w, t]``; subqueries evaluate their inner
    expression at multiples of their step, as Prometheus aligns them.
    """

    def __init__(
        self,
        *,
        model: str,
        columns: Sequence[str],
        les: Sequence[Sequence[str]],
        bucket_counts: np.ndarray,
        accuracy: np.ndarray,
        rows: int,
        shared: dict[tuple[int, int], list[_Point]],
    ) -> None:
        self.model = model
        self.columns = list(columns)
        # Per feature its own le labels; counts beyond a feature's last bucket are 0.
        self.series = [
            [{"model": model, "feature": feature, "le": le} for le in les[f]] for f, feature in enumerate(columns)
        ]
        self.shared = shared  # histogram results by window, the same for every policy on this stream
        self.cumulative = np.cumsum(bucket_counts, axis=2)  # (steps, features, buckets) cumulative per le
        self.prefix = np.concatenate([np.zeros((1, *self.cumulative.shape[1:])), np.cumsum(self.cumulative, axis=0)])
        self.accuracy = accuracy  # filled in by the simulation as intervals pass; NaN: not yet
        self.rows = rows
        self.queries = 0

    def _steps(self, at: datetime, window: float) -> tuple[int, int]:
        """Intervals whose end lies in (at - window, at]: [lo, hi)."""
        end = (at - START).total_seconds() / HOUR  # interval i ends at i + 1
        hi = min(math.floor(end + 1e-9), len(self.accuracy))
        lo = max(0, math.floor(end - window / HOUR + 1e-9))
        return lo, hi

    def _accuracy(self, at: datetime, window: float) -> float | None:
        lo, hi = self._steps(at, window)
        values = self.accuracy[lo:hi]
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else None

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        self.queries += 1
        ts = at.timestamp()
        labels = {"model": self.model}
        if m := _SUBQUERY.match(promql):
            reducer, inner, span, step = m.group(1), m.group(2), parse_duration(m.group(3)), parse_duration(m.group(4))
            acc = _ACCURACY.match(inner)
            if acc is None:
                raise ValueError(f"SimulatedPrometheus cannot evaluate subquery {promql!r}")
            window = parse_duration(acc.group(3))
            last = math.floor(ts / step) * step
            points = [
                v
                for k in range(int(span // step) + 1)
                if last - k * step > ts - span
                and (v := self._accuracy(datetime.fromtimestamp(last - k * step, UTC), window)) is not None
            ]
            if not points:
                return []
            value = max(points) if reducer == "max" else float(len(points))
            return [Sample(labels=labels, value=value, timestamp=ts)]
        if m := _ACCURACY.match(promql):
            value = self._accuracy(at, parse_duration(m.group(3)))
            return [] if value is None else [Sample(labels=labels, value=value, timestamp=ts)]
        if m := _HISTOGRAM.match(promql):
            lo, hi = self._steps(at, parse_duration(m.group(3)))
            if hi <= lo:
                return []
            key = (lo, hi)
            cached = self.shared.get(key)
            if cached is None:
                counts = (self.prefix[hi] - self.prefix[lo]).tolist()
                cached = self.shared[key] = [
                    _Point(label, row[b])
                    for labelled, row in zip(self.series, counts, strict=True)
                    for b, label in enumerate(labelled)
                ]
            return cached  # type: ignore[return-value]
        if m := _COUNTER.match(promql):
            lo, hi = self._steps(at, parse_duration(m.group(2)))
            return [Sample(labels={}, value=float(max(0, hi - lo) * self.rows), timestamp=ts)]
        raise ValueError(f"SimulatedPrometheus cannot evaluate {promql!r}")


# The policies.


def _policy(triggers: list[dict[str, Any]], **decision: Any) -> dict[str, Any]:
    return {
        "model": {"name": "bench", "registry": {"store": "default", "bucket": "models", "prefix": "bench/"}},
        "metrics": {"endpoint": "default", "selector": {"model": "bench"}},
        "evaluation": {"interval": "1h"},
        "triggers": triggers,
        "decision": {"cooldown": "6h", "prices": {"cpuHour": 0.05, "perRetrain": 15}, **decision},
        "training": {
            "builtin": {"data": {"key": "data/bench.csv"}, "target": "label", "estimator": ESTIMATOR},
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
        },
    }


ACCURACY_TRIGGER = {
    "name": "accuracy",
    "for": "1h",
    "accuracyDecay": {"metric": ACCURACY, "window": "2h", "maxDrop": 0.04},
}
DRIFT_FIXED = {
    "name": "drift",
    "for": "1h",
    "drift": {
        "metric": FEATURES,
        "statistic": "psi",
        "window": "1h",
        "reference": {"source": "Window", "offset": "7d", "window": "1d"},
        "threshold": 0.2,
        "minSamples": 100,
    },
}
DRIFT_LEARNED = {
    "name": "drift",
    "for": "1h",
    "drift": {
        "metric": FEATURES,
        "statistic": "psi",
        "window": "1h",
        "reference": {"source": "Window", "offset": "7d", "window": "1d"},
        "learnThreshold": {"k": 3},
        "minSamples": 100,
    },
}
VOLUME_TRIGGER = {"name": "volume", "dataVolume": {"metric": LABELLED, "minRelative": 2}}
GATE = {
    "valuePerAccuracyPointPerDay": VALUE_PER_POINT_PER_DAY,
    "horizon": "7d",
    "estimatedDuration": "20m",
    "recoveryPrior": 0.7,
    "humanCostPerRetrain": 15,
    "minNetBenefit": 300,
}

POLICIES: dict[str, dict[str, Any] | None] = {
    "none": None,
    "daily": _policy([{"name": "daily", "schedule": {"cron": "0 0 * * *"}}]),
    "weekly": _policy([{"name": "weekly", "schedule": {"cron": "0 0 * * 1"}}]),
    "accuracy": _policy([ACCURACY_TRIGGER]),
    "drift-fixed": _policy([DRIFT_FIXED]),
    "drift-learned": _policy([DRIFT_LEARNED]),
    "volume": _policy([VOLUME_TRIGGER]),
    "gated": _policy([ACCURACY_TRIGGER, DRIFT_LEARNED, VOLUME_TRIGGER], costBenefit=GATE),
    # The same without the volume trigger (rows arrive at a constant rate here, so it is a schedule) and with
    # a day's cooldown, so the retrain after a change has a day of the new data to learn from.
    "gated-1d": _policy([ACCURACY_TRIGGER, DRIFT_LEARNED], costBenefit=GATE, cooldown="1d"),
}


# One simulation: a stream, a policy.


@dataclass
class Served:
    model: Any
    score: float
    trained_step: int
    rows: int


def train(stream: StreamData, *, end_step: int, window_steps: int, seed: int) -> Served:
    """The built-in trainer's fit on the rows of the ``window_steps`` intervals before ``end_step``."""
    lo = max(0, end_step - window_steps)
    x = stream.x[lo:end_step].reshape(-1, stream.x.shape[2])
    y = stream.y[lo:end_step].reshape(-1)
    features = pd.DataFrame(x, columns=stream.columns)
    dataset = Dataset(
        features=features,
        target=pd.Series(y, name="label"),
        numeric=tuple(stream.columns),
        categorical=(),
        unlabelled=0,
    )
    estimator = make_estimator(ESTIMATOR, ESTIMATOR_PARAMS, metric="accuracy", seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = fit_and_score(dataset, estimator=estimator, metric="accuracy", test_size=0.2, seed=seed)
    return Served(fitted.model, float(fitted.score), end_step, fitted.train_rows)


def accuracy_from(stream: StreamData, served: Served, *, start: int) -> np.ndarray:
    """Per-interval accuracy of ``served`` from ``start`` on (one batch prediction)."""
    steps, rows, width = stream.x.shape
    x = pd.DataFrame(stream.x[start:].reshape(-1, width), columns=stream.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = np.asarray(served.model.predict(x)).reshape(steps - start, rows)
    result: np.ndarray = (predicted == stream.y[start:]).mean(axis=1)
    return result


@dataclass
class Outcome:
    """What one policy did on one stream and seed."""

    stream: str
    seed: int
    policy: str
    changed: bool
    retrains: int = 0
    retrain_steps: list[int] = field(default_factory=list)
    mean_accuracy: float = 0.0
    value: float = 0.0
    cost: float = 0.0
    delay_hours: float | None = None
    drift_firing: int = 0
    drift_evaluations: int = 0
    drift_first_firing: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)


def simulate(
    stream: StreamData,
    *,
    policy_name: str,
    body: dict[str, Any] | None,
    first: Served,
    warmup: int,
    train_window: int,
    seed: int,
    les: Sequence[Sequence[str]],
    bucket_counts: np.ndarray,
    shared: dict[tuple[int, int], list[_Point]],
) -> Outcome:
    steps, rows, _ = stream.x.shape
    accuracy = np.full(steps, np.nan)
    accuracy[warmup:] = accuracy_from(stream, first, start=warmup)
    served = first
    outcome = Outcome(stream.spec.name, seed, policy_name, stream.change_step is not None)
    retrain_steps: list[int] = []
    if body is not None:
        spec: PolicySpec = parse_policy_spec(body)
        prometheus = SimulatedPrometheus(
            model="bench",
            columns=stream.columns,
            les=les,
            bucket_counts=bucket_counts,
            accuracy=np.full(steps, np.nan),
            rows=rows,
            shared=shared,
        )
        endpoint = EndpointSpec(url="http://simulated", allow_raw_queries=False)

        async def source(_: str) -> QuerySource:
            return prometheus

        observer = Observer(source_for=source)
        created = START + timedelta(hours=warmup)
        status = PolicyStatus(
            model=ModelRecord(
                version="v0", score=first.score, trained_at=rfc3339(created), rows=first.rows, metric="accuracy"
            )
        )
        duration = spec.decision.cost_benefit.estimated_duration if spec.decision.cost_benefit else 600.0
        busy_steps = max(1, math.ceil(duration / HOUR))
        resources = resources_of(spec)
        prices = spec.decision.prices
        assert prices is not None
        _, _, run_cost = cost_of(resources, seconds=duration, prices=replace(prices, per_retrain=0.0))
        run_cost += prices.per_retrain
        pending: tuple[int, Served, ActiveJob] | None = None
        loop = asyncio.new_event_loop()
        try:
            for step in range(warmup, steps):
                now = START + timedelta(hours=step + 1)  # the interval's rows and metrics are in
                if pending is not None and pending[0] <= step:
                    done_at, served, active = pending
                    pending = None
                    finished = rfc3339(START + timedelta(hours=done_at))
                    record = RetrainRecord(
                        job=active.name,
                        trigger=active.trigger,
                        started_at=active.started_at,
                        finished_at=finished,
                        outcome="Succeeded",
                        message="model trained",
                        model_version=f"v{len(retrain_steps)}",
                        score=served.score,
                        promoted=True,
                    )
                    model = ModelRecord(
                        version=f"v{len(retrain_steps)}",
                        score=served.score,
                        trained_at=finished,
                        rows=served.rows,
                        metric="accuracy",
                    )
                    status = replace(status, last_retrain=record, model=model, active_job=None)
                    status = status.with_history(HistoryEntry.of(record, active, seconds=duration))
                    accuracy[step:] = accuracy_from(stream, served, start=step)
                prometheus.accuracy[: step + 1] = accuracy[: step + 1]
                subject = Subject(
                    "bench",
                    policy_name,
                    spec,
                    "default",
                    endpoint,
                    model_trained_at=status.model.trained,  # type: ignore[union-attr]
                )
                observed = loop.run_until_complete(observer.observe([subject], now=now))
                observations = {trigger: obs for (_, _, trigger), obs in observed.items()}
                results = evaluate_triggers(spec, observations=observations, status=status, created=created, now=now)
                gate = None
                if spec.decision.cost_benefit is not None and any(r.firing for r in results):
                    baseline, current = accuracy_now(spec, results, status.model_score)
                    gate = assess(
                        spec.decision.cost_benefit,
                        resources=resources,
                        prices=prices,
                        runs=status.runs(),
                        baseline=baseline,
                        current=current,
                    )
                decision = status.decide(
                    spec,
                    results=results,
                    now=now,
                    gate=gate,
                )
                for r in results:
                    if r.type == "drift":
                        outcome.drift_evaluations += 1
                        if r.firing:
                            outcome.drift_firing += 1
                            hours = None if stream.change_step is None else step + 1 - stream.change_step
                            if outcome.drift_first_firing is None and hours is not None and hours >= 0:
                                outcome.drift_first_firing = float(hours)
                outcome.reasons[decision.reason] = outcome.reasons.get(decision.reason, 0) + 1
                if decision.launches:
                    baseline, current = accuracy_now(spec, results, status.model_score)
                    active = ActiveJob(
                        name=f"bench-{len(retrain_steps) + 1}",
                        trigger=",".join(decision.triggers),
                        started_at=rfc3339(now),
                        action="Train",
                        accuracy_before=current,
                        baseline_before=baseline,
                    )
                    status = status.job_started(active)
                    retrain_steps.append(step + 1)
                    fitted = train(stream, end_step=step + 1, window_steps=train_window, seed=seed + step)
                    pending = (step + 1 + busy_steps - 1, fitted, active)
                status = status.evaluated(results=results, decision=decision, suspended=False, generation=1, now=now)
        finally:
            loop.close()
        outcome.cost = run_cost * len(retrain_steps)
    live = accuracy[warmup:]
    outcome.retrains = len(retrain_steps)
    outcome.retrain_steps = retrain_steps
    outcome.mean_accuracy = float(np.mean(live))
    outcome.value = float(np.sum(live) * 100 * VALUE_PER_POINT_PER_DAY / 24.0)
    if stream.change_step is not None:
        after = [s - stream.change_step for s in retrain_steps if s > stream.change_step]
        outcome.delay_hours = float(after[0]) if after else None
    return outcome


# Decile bounds of a standard normal: the serving code exports each feature standardised with the first
# model's training mean and standard deviation, into the same buckets for every feature.
Z_EDGES = (-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816)


def bucket_layout(stream: StreamData, *, warmup: int) -> tuple[list[list[str]], np.ndarray]:
    """``le`` strings per feature and the counts per interval, feature and bucket.

    Features are standardised with the warm-up rows' mean and standard deviation (as the first model's
    training data) and counted in :data:`Z_EDGES`, one layout for all, which the drift statistics
    compute in one batch.
    """
    steps, _, width = stream.x.shape
    reference = stream.x[:warmup].reshape(-1, width).astype(np.float64)
    mean, sd = reference.mean(axis=0), reference.std(axis=0)
    sd[sd == 0] = 1.0
    edges = np.array(Z_EDGES)
    counts = np.zeros((steps, width, len(edges) + 1), dtype=np.float64)
    z = (stream.x - mean) / sd
    index = np.searchsorted(edges, z, side="left")
    for b in range(len(edges) + 1):
        counts[:, :, b] = (index == b).sum(axis=1)
    les = [*(format_le(float(e)) for e in edges), "+Inf"]
    return [les] * width, counts


def run_stream(task: tuple[StreamSpec, int, dict[str, Any]]) -> list[Outcome]:
    """Every policy on one stream and seed (one process's work)."""
    spec, seed, cfg = task
    warmup, days, rows, train_window = cfg["warmup"], cfg["days"], cfg["rows"], cfg["train_window"]
    steps = warmup + days * 24
    rng = np.random.default_rng(seed)
    change_step = warmup + int(days * 24 * 0.4) + int(rng.integers(0, 24))
    stream = make_stream(spec, steps=steps, rows=rows, change_step=change_step, seed=seed)
    les, counts = bucket_layout(stream, warmup=warmup)
    first = train(stream, end_step=warmup, window_steps=train_window, seed=seed)
    shared: dict[tuple[int, int], list[_Point]] = {}
    return [
        simulate(
            stream,
            policy_name=name,
            body=body,
            first=first,
            warmup=warmup,
            train_window=train_window,
            seed=seed,
            les=les,
            bucket_counts=counts,
            shared=shared,
        )
        for name, body in POLICIES.items()
        if not cfg["policies"] or name in cfg["policies"]
    ]


# The report.


def _fmt_delay(hours: float | None) -> str:
    return "missed" if hours is None else f"{hours:g}h"


def report(outcomes: Sequence[Outcome], *, target_hours: float, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Print the tables; return the summary as JSON-ready data."""
    policies = list(dict.fromkeys(o.policy for o in outcomes))
    runs = {p: [o for o in outcomes if o.policy == p] for p in policies}
    summary: dict[str, dict[str, Any]] = {}
    for p, rs in runs.items():
        changed = [o for o in rs if o.changed]
        delays = [o.delay_hours for o in changed]
        caught = [d for d in delays if d is not None]
        summary[p] = {
            "retrains": sum(o.retrains for o in rs),
            "retrainsNoChange": sum(o.retrains for o in rs if not o.changed),
            "meanAccuracy": float(np.mean([o.mean_accuracy for o in rs])),
            "value": float(np.sum([o.value for o in rs])),
            "cost": float(np.sum([o.cost for o in rs])),
            "net": float(np.sum([o.value - o.cost for o in rs])),
            "changes": len(changed),
            "caught": len(caught),
            "withinTarget": sum(1 for d in caught if d <= target_hours),
            "medianDelay": float(np.median(caught)) if caught else None,
            "maxDelay": float(max(caught)) if caught else None,
        }
    weekly = summary.get("weekly")
    out(
        "| policy | retrains | vs weekly | mean accuracy | vs weekly (points) | value | cost | net value "
        f"| changes caught (<= {target_hours:g}h) | median / max delay | retrains, no-change streams |"
    )
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p, s in summary.items():
        ratio = f"{s['retrains'] / weekly['retrains']:.2f}" if weekly and weekly["retrains"] else "-"
        diff = f"{(s['meanAccuracy'] - weekly['meanAccuracy']) * 100:+.2f}" if weekly else "-"
        delays = f"{s['medianDelay']:g}h / {s['maxDelay']:g}h" if s["medianDelay"] is not None else "-"
        out(
            f"| {p} | {s['retrains']} | {ratio} | {s['meanAccuracy']:.4f} | {diff} | {s['value']:,.0f} | "
            f"{s['cost']:,.0f} | {s['net']:,.0f} | {s['caught']}/{s['changes']} ({s['withinTarget']}) | {delays} | "
            f"{s['retrainsNoChange']} |"
        )
    candidates = {p: s for p, s in summary.items() if p not in ("none", "weekly", "daily")}
    best = max(candidates, key=lambda p: candidates[p]["net"]) if candidates else None
    out("")
    if best is not None and weekly:
        b = summary[best]
        out(
            f"best policy by net value: {best}: {b['retrains']} retrains = "
            f"{b['retrains'] / max(1, weekly['retrains']):.2f} x weekly's {weekly['retrains']}; mean accuracy "
            f"{(b['meanAccuracy'] - weekly['meanAccuracy']) * 100:+.2f} points vs weekly; "
            f"{b['retrainsNoChange']} retrains on no-change streams; {b['withinTarget']}/{b['changes']} changes "
            f"caught within {target_hours:g}h"
        )
    out("")
    out("Detection delay of every true change (change start to the first retrain decided after it):")
    out("")
    changes = sorted({(o.stream, o.seed) for o in outcomes if o.changed})
    shown = [p for p in policies if p != "none"]
    out("| stream | seed | " + " | ".join(shown) + " |")
    out("| --- | ---: |" + " ---: |" * len(shown))
    for stream, seed in changes:
        cells = []
        for p in shown:
            o = next(o for o in runs[p] if o.stream == stream and o.seed == seed)
            cells.append(_fmt_delay(o.delay_hours))
        out(f"| {stream} | {seed} | " + " | ".join(cells) + " |")
    out("")
    out("Drift triggers: share of evaluations firing on each no-change stream (false alarms), and first firing")
    out("after each change (power):")
    out("")
    drift_policies = [p for p in policies if any(o.drift_evaluations for o in runs[p])]
    streams = list(dict.fromkeys(o.stream for o in outcomes))
    out("| stream | " + " | ".join(drift_policies) + " |")
    out("| --- |" + " ---: |" * len(drift_policies))
    drift: dict[str, dict[str, Any]] = {p: {} for p in drift_policies}
    for stream in streams:
        cells = []
        for p in drift_policies:
            rs = [o for o in runs[p] if o.stream == stream]
            if rs[0].changed:
                firsts = [o.drift_first_firing for o in rs]
                hit = sum(1 for f in firsts if f is not None and f <= target_hours)
                cells.append(f"flagged {hit}/{len(rs)} within {target_hours:g}h")
                drift[p][stream] = {"flaggedWithinTarget": hit, "changes": len(rs), "first": firsts}
            else:
                share = sum(o.drift_firing for o in rs) / max(1, sum(o.drift_evaluations for o in rs))
                alarmed = sum(1 for o in rs if o.drift_firing)
                cells.append(f"{share:.1%} ({alarmed}/{len(rs)} runs)")
                drift[p][stream] = {"firingShare": share, "runsWithAlarm": alarmed, "runs": len(rs)}
        out(f"| {stream} | " + " | ".join(cells) + " |")
    return {"policies": summary, "best": best, "drift": drift}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 14 days, fewer rows: a smoke run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per stream (default 3)")
    parser.add_argument("--days", type=int, default=21, help="simulated days after the warm-up (default 21)")
    parser.add_argument("--rows", type=int, default=300, help="labelled rows per 1h interval (default 300)")
    parser.add_argument("--train-window", default="1d", help="rows a retrain fits on, as a duration (default 1d)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--policy", action="append", default=[], help="only these policies (repeatable)")
    parser.add_argument("--stream", action="append", default=[], help="only these streams (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.days, args.rows = 1, 14, 200
    cfg = {
        "warmup": 8 * 24,  # a week of reference for the drift triggers' 7d offset, and a day to train on
        "days": args.days,
        "rows": args.rows,
        "train_window": max(1, int(parse_duration(args.train_window) // HOUR)),
        "policies": args.policy,
    }
    streams = [s for s in (*STREAMS, *EXTRA_STREAMS) if s.name in args.stream] if args.stream else list(STREAMS)
    tasks = [(s, seed, cfg) for s in streams for seed in range(1, args.seeds + 1)]
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for result in pool.map(run_stream, tasks):
                outcomes += result
    else:
        for task in tasks:
            outcomes += run_stream(task)
    elapsed = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() + children.ru_utime + children.ru_stime
    command = "python bench/decisions.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"{command.strip()}: {len(streams)} streams x {args.seeds} seeds, {args.days} days at a 1h interval, "
        f"{args.rows} rows per interval, retrains fit on the last {args.train_window}; {elapsed:.0f} s wall, "
        f"{cpu:.0f} s CPU"
    )
    print()
    target = 2 * HOUR / HOUR  # `for: 1h` plus one interval
    summary = report(outcomes, target_hours=target)
    if args.json:
        summary["outcomes"] = [o.__dict__ for o in outcomes]
        args.json.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
