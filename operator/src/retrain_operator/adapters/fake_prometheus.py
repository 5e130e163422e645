"""An in-memory :class:`~retrain_operator.adapters.prometheus.MetricSource` for component tests.

Reconcile tests need to say "this query returns 0.81, that one times out" and then check which
queries were made, with which time and headers, without a Prometheus process. Queries are matched
by their exact PromQL text, so a test also pins the query the code builds. An unknown query raises
``KeyError`` (not a :class:`PrometheusError`) so that code which handles Prometheus failures cannot
swallow a test's mistake.

Limits: no PromQL is evaluated; a result that should change over time is given as a function of
the evaluation time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from retrain_operator.adapters.prometheus import Sample

__all__ = ["FakeMetricSource", "FakeResult", "RecordedQuery"]

# Samples as returned; a float is a scalar result; an exception is raised; a callable is asked with
# the evaluation time and returns samples or a float.
FakeResult = Sequence[Sample] | float | BaseException | Callable[[datetime], Sequence[Sample] | float]


@dataclass(frozen=True)
class RecordedQuery:
    """One call to :meth:`FakeMetricSource.query`."""

    promql: str
    at: datetime
    headers: Mapping[str, str] = field(default_factory=dict)


class FakeMetricSource:
    """Answers exact PromQL strings from ``results`` and records every call in ``calls``."""

    def __init__(self, results: Mapping[str, FakeResult] | None = None, *, online: bool = True) -> None:
        self.results: dict[str, FakeResult] = dict(results or {})
        self.calls: list[RecordedQuery] = []
        self.online = online

    def set(self, promql: str, result: FakeResult) -> None:
        self.results[promql] = result

    @property
    def queries(self) -> list[str]:
        """The PromQL of every call, in order."""
        return [call.promql for call in self.calls]

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at must be timezone-aware")
        self.calls.append(RecordedQuery(promql=promql, at=at, headers=dict(headers or {})))
        try:
            result = self.results[promql]
        except KeyError:
            known = sorted(self.results)[:20]
            raise KeyError(f"FakeMetricSource has no result for {promql!r}; known: {known}") from None
        if isinstance(result, BaseException):
            raise result
        if callable(result):
            result = result(at)
        if isinstance(result, int | float):
            return [Sample(labels={}, value=float(result), timestamp=at.timestamp())]
        return list(result)

    async def is_online(self) -> bool:
        return self.online
