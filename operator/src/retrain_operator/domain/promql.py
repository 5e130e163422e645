"""PromQL built from metric names and label matchers, never from string pasting of tenant input.

Every label value goes through :func:`quote` (a PromQL string literal) and, inside regex matchers,
through :func:`regex_literal` first, so quotes, backslashes, newlines and braces in a value can
only ever match themselves. Metric and label names are checked against Prometheus's grammar by the
API parser before they get here.

Many policies share a query *template* (same metric, window, ``for`` and label names); their
queries are merged into one with ``label=~"v1|v2"`` matchers and ``by (labels)`` aggregation, and
the result split back per policy by exact label values. A merged matcher selects a cross product of
the values, which is harmless: series that belong to no policy are simply not picked up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from retrain_operator.settings.durations import format_duration

_REGEX_SPECIAL = re.compile(r"([\\.^$|?*+()\[\]{}])")


def quote(value: str) -> str:
    """A PromQL double-quoted string literal that evaluates to exactly ``value``."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    escaped = escaped.replace("\t", "\\t")
    return f'"{escaped}"'


def regex_literal(value: str) -> str:
    """An RE2 pattern matching exactly ``value`` (Prometheus anchors regex matchers itself)."""
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def selector(metric: str, matchers: Mapping[str, str]) -> str:
    """``metric{a="x",b="y"}`` with every value quoted; labels in sorted order for stable queries."""
    inner = ",".join(f"{label}={quote(value)}" for label, value in sorted(matchers.items()))
    return f"{metric}{{{inner}}}"


def multi_selector(metric: str, values_by_label: Mapping[str, Iterable[str]]) -> str:
    """``metric{a=~"x|y"}``: one matcher per label, matching any of the given values exactly."""
    parts = []
    for label, values in sorted(values_by_label.items()):
        unique = sorted(set(values))
        if len(unique) == 1:
            parts.append(f"{label}={quote(unique[0])}")
        else:
            parts.append(f"{label}=~{quote('|'.join(regex_literal(v) for v in unique))}")
    return f"{metric}{{{','.join(parts)}}}"


MAX_POINTS = 1440


def subquery_step(for_seconds: float, interval: float) -> float:
    """Resolution of a ``for`` check: at least ten points over the period, no coarser than the interval, and
    never more than :data:`MAX_POINTS` points (a long ``for`` with a short interval would otherwise make
    Prometheus evaluate the inner expression once per interval over the whole period)."""
    return max(1.0, min(interval, for_seconds / 10.0), for_seconds / MAX_POINTS)


@dataclass(frozen=True)
class AccuracyQueries:
    """The queries of one accuracyDecay template: the current value and, with ``for``, its recent history."""

    current: str
    held_max: str | None
    held_count: str | None
    expected_points: int


def accuracy_queries(
    *,
    metric: str,
    values_by_label: Mapping[str, Iterable[str]],
    group_by: Sequence[str],
    window: float,
    for_seconds: float,
    step: float,
) -> AccuracyQueries:
    """Queries for accuracy averaged over ``window``, grouped by ``group_by``.

    ``held_max`` is the highest windowed average over the last ``for_seconds``: when even that is
    below the threshold, accuracy has been below it for the whole period. ``held_count`` counts the
    points of that period, so a metric younger than ``for`` is never taken as having held.
    """
    inner = f"avg_over_time({multi_selector(metric, values_by_label)}[{format_duration(window)}])"
    by = ", ".join(sorted(group_by))
    current = f"avg by ({by}) ({inner})"
    if for_seconds <= 0:
        return AccuracyQueries(current=current, held_max=None, held_count=None, expected_points=0)
    rng = f"[{format_duration(for_seconds)}:{format_duration(step)}]"
    return AccuracyQueries(
        current=current,
        held_max=f"max_over_time(({current}){rng})",
        held_count=f"count_over_time(({current}){rng})",
        expected_points=int(for_seconds // step),
    )


def raw_held_query(promql: str, *, operator: str, for_seconds: float, step: float) -> tuple[str, str]:
    """For a raw ``query`` trigger: the value least favourable to firing over ``for``, and the point count."""
    reducer = "min_over_time" if operator.startswith(">") else "max_over_time"
    rng = f"[{format_duration(for_seconds)}:{format_duration(step)}]"
    return f"{reducer}(({promql}){rng})", f"count_over_time(({promql}){rng})"


def histogram_increase(
    *,
    metric: str,
    values_by_label: Mapping[str, Iterable[str]],
    group_by: Sequence[str],
    feature_label: str,
    window: float,
) -> str:
    """Per-bucket increase of a classic histogram over ``window``, by policy labels, feature and ``le``.

    ``increase`` handles counter resets; summing by ``le`` merges the replicas of one model.
    """
    labels = sorted({*group_by, feature_label, "le"})
    series = multi_selector(f"{metric}_bucket", values_by_label)
    return f"sum by ({', '.join(labels)}) (increase({series}[{format_duration(window)}]))"


def counter_increase(*, metric: str, matchers: Mapping[str, str], window: float) -> str:
    """New events of a counter over ``window`` (resets handled), summed over the policy's series."""
    return f"sum(increase({selector(metric, matchers)}[{format_duration(window)}]))"
