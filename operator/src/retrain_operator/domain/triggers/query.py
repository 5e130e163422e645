"""query: fires when the tenant's own PromQL crosses a threshold.

The query is the tenant's text, so it can neither be merged with others nor scoped by the operator:
a MetricsEndpoint must allow raw queries (``raw_promql``), and each trigger costs its own queries
(one, or three with ``for``). The query must return one series; more is Ambiguous, not a choice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from retrain_operator.domain import promql
from retrain_operator.domain.triggers.base import (
    Facts,
    Observation,
    PreviousState,
    QueryPlan,
    Series,
    Span,
    Target,
    TriggerKind,
    TriggerResult,
    TriggerSpec,
    TriggerType,
    evaluate_threshold,
)
from retrain_operator.settings.reader import Reader

COMPARISONS = (">", ">=", "<", "<=")
MAX_PROMQL = 4096
# Prometheus' own duration grammar (it has years); enough to find what a raw expression reaches back.
_PROM_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_PROM_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
_PROM_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_RANGE = re.compile(r"\[\s*([0-9a-z]+)\s*(?::\s*([0-9a-z]*)\s*)?\]")
_OFFSET = re.compile(r"\boffset\s+-?\s*([0-9a-z]+)", re.IGNORECASE)


def _prom_seconds(text: str) -> float | None:
    if not _PROM_DURATION.match(text):
        return None
    return sum(int(n) * _PROM_UNITS[u] for n, u in _PROM_PART.findall(text))


def reaches(expression: str) -> tuple[float, float]:
    """The longest range (a range selector or subquery) and the longest ``offset`` written in ``expression``."""
    ranges = [_prom_seconds(m.group(1)) or 0.0 for m in _RANGE.finditer(expression)]
    offsets = [_prom_seconds(m.group(1)) or 0.0 for m in _OFFSET.finditer(expression)]
    return max(ranges, default=0.0), max(offsets, default=0.0)


@dataclass(frozen=True)
class QueryTrigger(TriggerKind):
    """``query``: the tenant's own PromQL against a threshold, with a clear level (endpoints that allow raw queries)."""

    type_name: ClassVar[str] = "query"

    promql: str
    operator: str
    threshold: float
    clear_threshold: float | None = None


def evaluate_query(
    trigger: TriggerSpec, *, observation: Observation, previous: PreviousState, now: datetime
) -> TriggerResult:
    spec = trigger.kind
    assert isinstance(spec, QueryTrigger)
    clear = spec.threshold if spec.clear_threshold is None else spec.clear_threshold
    return evaluate_threshold(
        trigger,
        observation=observation,
        operator=spec.operator,
        threshold=spec.threshold,
        clear_level=clear,
        previous=previous,
        now=now,
        what="query",
    )


def _read(results: Sequence[Sequence[Series]], *, expected: int) -> Observation:
    if not results[0]:
        return Observation.missing("NoData", "the query returned no series")
    if any(len(r) > 1 for r in results):
        return Observation.missing(
            "Ambiguous", f"the query returned {len(results[0])} series; it must return one (aggregate it)"
        )
    return Observation(
        value=results[0][0].value,
        held=results[1][0].value if len(results) > 1 and results[1] else None,
        held_points=int(results[2][0].value) if len(results) > 2 and results[2] else 0,
        expected_points=expected,
    )


class QueryType(TriggerType[QueryTrigger]):
    """The query trigger: runs the tenant's expression alone (never merged) and judges it like a threshold."""

    spec_type = QueryTrigger
    history = True
    raw_promql = True

    def parse(self, r: Reader, body: Mapping[str, Any], path: str) -> QueryTrigger | None:
        text = r.str_(body, "promql", path, required=True, max_length=MAX_PROMQL)
        operator = r.enum(body, "operator", path, allowed=COMPARISONS)
        threshold = r.num(body, "threshold", path, required=True)
        clear = r.num(body, "clearThreshold", path)
        if text is not None and not text.strip():
            r.fail(f"{path}.promql", "is empty")
        if operator and threshold is not None and clear is not None:
            wrong = clear > threshold if operator.startswith(">") else clear < threshold
            if wrong:
                side = "at or below" if operator.startswith(">") else "at or above"
                r.fail(
                    f"{path}.clearThreshold", f"{clear} must be {side} threshold {threshold} for operator {operator!r}"
                )
        if not text or not operator or threshold is None:
            return None
        return QueryTrigger(promql=text, operator=operator, threshold=threshold, clear_threshold=clear)

    def spans(self, spec: QueryTrigger, trigger: TriggerSpec) -> Sequence[Span]:
        longest, offset = reaches(spec.promql)
        spans = []
        if longest:
            spans.append(Span(f"{self.name}.promql", longest, "range", "the longest range selector or subquery"))
        if offset:
            spans.append(Span(f"{self.name}.promql", offset, "offset", "the longest offset"))
        if trigger.for_seconds > 0:
            reach = trigger.for_seconds + longest + offset
            spans.append(Span("", reach, "range", "for + the expression's own longest range and offset"))
        return spans

    def plan(
        self,
        spec: QueryTrigger,
        trigger: TriggerSpec,
        targets: Sequence[Target],
        *,
        labels: tuple[str, ...],
        now: datetime,
    ) -> QueryPlan:
        wanted = [spec.promql]
        expected = 0
        if trigger.for_seconds > 0:
            step = promql.subquery_step(trigger.for_seconds, targets[0].interval)
            wanted += list(
                promql.raw_held_query(spec.promql, operator=spec.operator, for_seconds=trigger.for_seconds, step=step)
            )
            expected = int(trigger.for_seconds // step)
        return QueryPlan(
            tuple((q, now) for q in wanted), lambda results: [_read(results, expected=expected) for _ in targets]
        )

    def evaluate(self, spec: QueryTrigger, trigger: TriggerSpec, facts: Facts) -> TriggerResult:
        return evaluate_query(trigger, observation=facts.observation, previous=facts.previous, now=facts.now)


TRIGGER = QueryType()
