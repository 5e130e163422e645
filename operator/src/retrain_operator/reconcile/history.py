"""A query source backed by history: the instant queries of every step of a backtest, answered from range queries.

The trigger types plan instant queries (``plan`` gives the PromQL and the time of each), and the
observer runs them; a backtest runs the same observer at every step of a period. Asking Prometheus
once per step and query would cost 43,200 queries per template for 30 days at 60 s, so the backtest
first records which queries one step asks (their text and how far before the step each is
evaluated), reads each text once over the whole period with ``query_range`` (split into pieces of
at most 11,000 points per series, Prometheus' limit), and this source then answers the observer's
instant query for step ``t`` from those matrices. The trigger code that plans and reads the queries
is the operator's own, unchanged.

Three shapes of query are answered:

* a query evaluated at ``t - shift`` (the current window at ``t``, a drift reference ``offset``
  before it, its sub-windows): read on a grid of the evaluation interval, shifted by ``shift``;
* a subquery ``max_over_time((E)[for:step])`` (and ``min_``/``count_``), which accuracyDecay and
  query use to judge ``for`` from history: ``E`` is read once on a grid of ``step`` aligned to whole
  multiples of ``step`` since the epoch, as Prometheus aligns a subquery's points, and the reduction
  is taken here over the points in ``[t - for, t]`` (both ends included, as Prometheus 2.x does; a
  3.x server leaves out the point at ``t - for``, one point that ``for``'s coverage rule tolerates).
  When the interval is a multiple of ``step``, the same matrix also answers ``E`` at ``t``;
* ``sum(increase(counter[age]))``, dataVolume's count since the model was trained, whose window
  grows at every step (a new text each time): the counter's series are read once, and the count is
  their reset-adjusted growth between the grid points ``t - age`` and ``t``. Unlike ``increase()``
  it sees the counter only at the grid points: it does not extrapolate to the window's edges, and
  at a reset it misses what was counted between the last grid point before the reset and the reset
  (so a dataVolume trigger can fire up to one interval later than the operator would).

Limits: a query asked at a time the recording did not foresee is a bug, counted in ``misses``
(the backtest stops on it rather than judge on missing data). A failed range query is kept with
its matrix (``failures``) and raised again to every step that needs it; the backtest stops on it,
since a period the tool could not read is no evidence of missing data in the history.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from retrain_operator.adapters.prometheus import MAX_POINTS_PER_SERIES, PrometheusError, RangeSeries, Sample
from retrain_operator.settings.durations import DurationError, parse_duration

SUBQUERY = re.compile(
    r"^(max|min|count)_over_time\(\((?P<inner>.+)\)\[(?P<range>[0-9a-z]+):(?P<step>[0-9a-z]+)\]\)$", re.S
)
COUNTER_INCREASE = re.compile(r"^sum\(increase\((?P<selector>.+)\[(?P<window>[0-9a-z]+)\]\)\)$", re.S)
EPSILON = 1e-6


class RangeSource(Protocol):
    """What the history needs of Prometheus: one range query."""

    async def query_range(
        self, promql: str, *, start: datetime, end: datetime, step: float, headers: Mapping[str, str] | None = None
    ) -> list[RangeSeries]: ...


def _ts(at: datetime) -> float:
    return at.timestamp()


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass
class Need:
    """A text to read on the grid ``first + i * step`` up to ``last``."""

    text: str
    step: float
    first: float
    last: float

    def phase(self) -> float:
        return math.fmod(self.first, self.step) % self.step

    def covers(self, other: Need) -> bool:
        """This grid holds every point of ``other``'s (a finer or equal step, the same alignment)."""
        ratio = other.step / self.step
        offset = (other.first - self.first) / self.step
        return other.text == self.text and abs(ratio - round(ratio)) < EPSILON and abs(offset - round(offset)) < EPSILON


@dataclass
class Matrix:
    """One text read over a grid: per series its labels, values, and where a point exists."""

    need: Need
    count: int
    labels: list[dict[str, str]] = field(default_factory=list)
    values: list[npt.NDArray[np.float64]] = field(default_factory=list)
    present: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    error: PrometheusError | None = None

    def index(self, at: float) -> int | None:
        position = (at - self.need.first) / self.need.step
        i = round(position)
        if abs(position - i) > EPSILON or not 0 <= i < self.count:
            return None
        return i

    def add(self, series: RangeSeries) -> None:
        key = dict(series.labels)
        try:
            k = self.labels.index(key)
        except ValueError:
            k = len(self.labels)
            self.labels.append(key)
            self.values.append(np.full(self.count, math.nan))
            self.present.append(np.zeros(self.count, dtype=bool))
        for ts, value in series.points:
            i = round((ts - self.need.first) / self.need.step)
            if 0 <= i < self.count:
                self.values[k][i] = value
                self.present[k][i] = True


@dataclass
class Derived:
    """How a text that is never read itself is computed: a subquery's reduction or a count since training."""

    kind: str  # max, min, count, growth
    base: str
    seconds: float  # the subquery's range, or 0 for growth (its window is in the text asked)
    step: float


class HistorySource:
    """Answers instant queries at the steps of a backtest from range queries made once (see the module docstring)."""

    def __init__(self, *, source: RangeSource, interval: float, start: datetime, end: datetime) -> None:
        self._source = source
        self.interval = interval
        self.start = _ts(start)
        self.end = _ts(end)
        self._needs: list[Need] = []
        self._derived: dict[str, Derived] = {}
        self._growth: dict[str, tuple[str, float]] = {}  # selector -> (text read, earliest needed)
        self._matrices: dict[str, list[Matrix]] = {}
        self.range_queries = 0
        self.fetch_seconds = 0.0
        self.instant_queries = 0
        self.misses: list[str] = []

    # Planning what to read.
    def counter(self, selector: str, *, since: float) -> None:
        """A dataVolume counter, asked as ``sum(increase(selector[age]))`` with a window that changes per step."""
        earliest = min(since, self.start)
        known = self._growth.get(selector)
        self._growth[selector] = (selector, min(earliest, known[1]) if known else earliest)

    def record(self, text: str, *, shift: float) -> None:
        """A text the observer asks at ``t - shift`` for every step ``t``."""
        match = SUBQUERY.match(text)
        growth = COUNTER_INCREASE.match(text)
        if growth and growth.group("selector") in self._growth:
            return
        if match:
            try:
                span, step = parse_duration(match.group("range")), parse_duration(match.group("step"))
            except DurationError:
                match = None
        if not match:
            self._add(Need(text, self.interval, self.start - shift, self.end - shift))
            return
        inner = match.group("inner")
        self._derived[text] = Derived(match.group(1), inner, span, step)
        first = math.ceil((self.start - shift - span) / step - EPSILON) * step
        last = math.floor((self.end - shift) / step + EPSILON) * step
        self._add(Need(inner, step, first, last))

    def _add(self, need: Need) -> None:
        for other in self._needs:
            if other.text == need.text and other.step == need.step and abs(other.phase() - need.phase()) < EPSILON:
                other.first, other.last = min(other.first, need.first), max(other.last, need.last)
                return
        self._needs.append(need)

    def plan(self) -> list[Need]:
        """The reads, merged: a grid that another grid of the same text holds is served by that one."""
        for selector, (_, since) in self._growth.items():
            first = self.start - math.ceil((self.start - since) / self.interval - EPSILON) * self.interval
            self._add(Need(selector, self.interval, first, self.end))
        needs = sorted(self._needs, key=lambda n: n.step)
        kept: list[Need] = []
        for need in needs:
            host = next((k for k in kept if k.covers(need)), None)
            if host is None:
                kept.append(need)
                continue
            # The finer grid is extended over the coarser one's span, on its own alignment.
            if need.first < host.first:
                host.first -= math.ceil((host.first - need.first) / host.step - EPSILON) * host.step
            if need.last > host.last:
                host.last += math.ceil((need.last - host.last) / host.step - EPSILON) * host.step
        self._needs = kept
        return kept

    def pieces(self) -> int:
        return sum(math.ceil(self._count(n) / MAX_POINTS_PER_SERIES) for n in self._needs)

    @staticmethod
    def _count(need: Need) -> int:
        return round((need.last - need.first) / need.step) + 1

    # Reading.
    async def fetch(self, *, headers: Mapping[str, str] | None = None) -> None:
        """Every planned read, in pieces of at most 11,000 points per series, concurrently (the client bounds it)."""
        jobs = []
        for need in self.plan():
            matrix = Matrix(need, self._count(need))
            self._matrices.setdefault(need.text, []).append(matrix)
            for begin in range(0, matrix.count, MAX_POINTS_PER_SERIES):
                points = min(MAX_POINTS_PER_SERIES, matrix.count - begin)
                jobs.append(self._read(matrix, begin=begin, points=points, headers=headers))
        started = time.perf_counter()
        await asyncio.gather(*jobs)
        self.fetch_seconds = time.perf_counter() - started

    async def _read(self, matrix: Matrix, *, begin: int, points: int, headers: Mapping[str, str] | None) -> None:
        need = matrix.need
        start = need.first + begin * need.step
        end = start + (points - 1) * need.step
        try:
            result = await self._source.query_range(
                need.text, start=_when(start), end=_when(end), step=need.step, headers=headers
            )
        except PrometheusError as exc:
            matrix.error = exc
            return
        finally:
            self.range_queries += 1
        for series in result:
            matrix.add(series)

    def failures(self) -> list[tuple[str, PrometheusError]]:
        """The reads that failed, with their error: the backtest stops on them rather than judge without history."""
        return [(m.need.text, m.error) for ms in self._matrices.values() for m in ms if m.error is not None]

    # Answering.
    def _matrix(self, text: str, at: float) -> tuple[Matrix, int] | None:
        for matrix in self._matrices.get(text, ()):
            i = matrix.index(at)
            if i is not None:
                if matrix.error is not None:
                    raise matrix.error
                return matrix, i
        return None

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        """The instant query ``promql`` at ``at``, from the matrices read by :meth:`fetch`."""
        self.instant_queries += 1
        t = _ts(at)
        found = self._matrix(promql, t)
        if found is not None:
            matrix, i = found
            return [
                Sample(labels=labels, value=float(values[i]), timestamp=t)
                for labels, values, present in zip(matrix.labels, matrix.values, matrix.present, strict=True)
                if present[i]
            ]
        derived = self._derived.get(promql)
        if derived is not None:
            return self._reduce(derived, t)
        growth = COUNTER_INCREASE.match(promql)
        if growth and growth.group("selector") in self._growth:
            return self._grow(growth.group("selector"), parse_duration(growth.group("window")), t)
        self.misses.append(f"{promql} at {_when(t).isoformat()}")
        raise LookupError(f"the backtest did not read {promql!r} for {_when(t).isoformat()}")

    def _reduce(self, derived: Derived, t: float) -> list[Sample]:
        """A subquery over ``[t - range, t]`` at its own step, from the inner expression's matrix."""
        lo_time = math.ceil((t - derived.seconds) / derived.step - EPSILON) * derived.step
        hi_time = math.floor(t / derived.step + EPSILON) * derived.step
        first = self._matrix(derived.base, lo_time)
        last = self._matrix(derived.base, hi_time)
        if first is None or last is None or first[0] is not last[0]:
            self.misses.append(f"{derived.kind} of {derived.base} at {_when(t).isoformat()}")
            raise LookupError(f"the backtest did not read {derived.base!r} around {_when(t).isoformat()}")
        matrix, lo, hi = first[0], first[1], last[1]
        out = []
        for labels, values, present in zip(matrix.labels, matrix.values, matrix.present, strict=True):
            mask = present[lo : hi + 1]
            if not mask.any():
                continue
            window = values[lo : hi + 1][mask]
            if derived.kind == "count":
                value = float(len(window))
            else:
                finite = window[~np.isnan(window)]
                # Prometheus' max/min_over_time skip NaN unless every point is NaN.
                value = math.nan if not len(finite) else float(finite.max() if derived.kind == "max" else finite.min())
            shown = {k: v for k, v in labels.items() if k != "__name__"}
            out.append(Sample(labels=shown, value=value, timestamp=t))
        return out

    def _grow(self, selector: str, window: float, t: float) -> list[Sample]:
        """Reset-adjusted growth of the counter's series (summed) from ``t - window`` to ``t``."""
        begin = t - round(window / self.interval) * self.interval
        first = self._matrix(selector, max(begin, self._matrices[selector][0].need.first))
        last = self._matrix(selector, t)
        if first is None or last is None:
            self.misses.append(f"count of {selector} at {_when(t).isoformat()}")
            raise LookupError(f"the backtest did not read {selector!r} for {_when(t).isoformat()}")
        matrix, lo, hi = first[0], first[1], last[1]
        total, seen = 0.0, False
        for values, present in zip(matrix.values, matrix.present, strict=True):
            window_values = values[lo : hi + 1][present[lo : hi + 1]]
            if not len(window_values):
                continue
            seen = True
            steps = np.diff(window_values)
            # A drop is a counter reset: what it counted since the reset is its value now.
            total += float(np.where(steps >= 0, steps, window_values[1:]).sum())
        return [Sample(labels={}, value=total, timestamp=t)] if seen else []


def shifts(queries: Sequence[tuple[str, datetime]], *, now: datetime) -> list[tuple[str, float]]:
    """The texts one step asks and how long before the step each is evaluated."""
    return [(text, (now - at).total_seconds()) for text, at in queries]
