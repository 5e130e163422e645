"""PromQL building: escaping that no label value can break out of, and merged templates."""

from __future__ import annotations

import pytest

from retrain_operator.domain import promql


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("churn", '"churn"'),
        ('a"b', r'"a\"b"'),
        ("a\\b", r'"a\\b"'),
        ("line\nbreak", r'"line\nbreak"'),
        ('x"} or vector(1) #', r'"x\"} or vector(1) #"'),
    ],
)
def test_quote(value: str, literal: str) -> None:
    assert promql.quote(value) == literal


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("a.b", r"a\.b"),
        ("a|b", r"a\|b"),
        ("(x)", r"\(x\)"),
        ("a{1}", r"a\{1\}"),
        ("x\\y", r"x\\y"),
    ],
)
def test_regex_literal(value: str, pattern: str) -> None:
    assert promql.regex_literal(value) == pattern


def test_multi_selector_merges_values_and_keeps_single_values_exact() -> None:
    sel = promql.multi_selector("acc", {"model": ["b", "a", "a"], "namespace": ["team-a"]})
    assert sel == 'acc{model=~"a|b",namespace="team-a"}'


def test_hostile_values_stay_inside_their_string() -> None:
    sel = promql.multi_selector("acc", {"model": ['x"}|up{', "y"]})
    # The only unescaped quotes are the two that delimit the matcher's string.
    body = sel[len("acc{model=~") : -1]
    unescaped = [i for i, ch in enumerate(body) if ch == '"' and body[i - 1] != "\\"]
    assert unescaped == [0, len(body) - 1]


def test_accuracy_queries_with_for() -> None:
    q = promql.accuracy_queries(
        metric="acc", values_by_label={"model": ["a", "b"]}, group_by=["model"], window=300, for_seconds=600, step=60
    )
    assert q.current == 'avg by (model) (avg_over_time(acc{model=~"a|b"}[5m]))'
    assert q.held_max == f"max_over_time(({q.current})[10m:1m])"
    assert q.held_count == f"count_over_time(({q.current})[10m:1m])"
    assert q.expected_points == 10


def test_without_for_only_the_current_value_is_queried() -> None:
    q = promql.accuracy_queries(metric="acc", values_by_label={}, group_by=[], window=60, for_seconds=0, step=1)
    assert q.held_max is None and q.held_count is None and q.current == "avg by () (avg_over_time(acc{}[1m]))"


@pytest.mark.parametrize(("for_seconds", "interval", "step"), [(300, 60, 30), (3600, 60, 60), (5, 60, 1)])
def test_subquery_step(for_seconds: float, interval: float, step: float) -> None:
    assert promql.subquery_step(for_seconds, interval) == step
