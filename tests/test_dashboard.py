"""The Grafana dashboard of ``docs/monitoring/grafana-dashboard.json``, checked without Grafana.

Here its structure: every panel has PromQL that names only metrics the operator exports, uses only
the dashboard's own template variables, and sits on the grid without overlapping another.
``tests/test_dashboard_e2e.py`` runs every panel's queries against a real Prometheus that scraped the
operator during an end-to-end run, and requires data from each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.test_alert_rules import METRIC, exported_metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "monitoring" / "grafana-dashboard.json"
# Grafana's own variables a query may use, and what the end-to-end test puts in their place.
BUILTINS = {"__rate_interval": "30s"}
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


@dataclass(frozen=True)
class Target:
    panel: str
    ref: str
    expr: str


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The panels that show data (rows only group them)."""
    board = board or dashboard()
    return [p for p in board["panels"] if p["type"] != "row"]


def targets(board: Mapping[str, Any] | None = None) -> Iterator[Target]:
    for panel in panels(board):
        for target in panel["targets"]:
            yield Target(panel["title"], target["refId"], target["expr"])


def variables(board: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    board = board or dashboard()
    return {v["name"]: v for v in board["templating"]["list"]}


def label_values_query(variable: Mapping[str, Any]) -> tuple[str, str]:
    """A query variable's ``label_values(selector, label)``, as (selector, label)."""
    match = LABEL_VALUES.match(variable["query"]["query"])
    assert match, f"variable {variable['name']}: only label_values(...) queries are supported"
    return match.group(1), match.group(2)


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with every ``$name`` / ``${name}`` replaced as Grafana would; an unknown name is an error."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in values:
            return values[name]
        if name in BUILTINS:
            return BUILTINS[name]
        raise KeyError(f"{expr!r} uses ${name}, which is neither a variable of the dashboard nor known here")

    return VARIABLE.sub(fill, expr)


def test_the_dashboard_has_the_panels_an_on_call_engineer_needs() -> None:
    titles = {p["title"] for p in panels()}
    for wanted in (
        "Decisions by action and reason",
        "Triggers firing",
        "Evaluation lag",
        "Training duration",
        "Training Jobs by outcome, last hour",
        "Budget used, share of limit",
        "Queries by result",
        "Query errors",
    ):
        assert wanted in titles
    assert dashboard()["uid"] == "retrain-operator"
    assert all(p["targets"] and p["description"] for p in panels())


def test_every_query_names_only_exported_metrics_and_known_variables() -> None:
    exported = exported_metrics() | {"up"}
    names = {name: "x" for name in variables()}
    for target in targets():
        for metric in METRIC.findall(target.expr):
            assert metric in exported, f"{target.panel}: {metric} is not exported by the operator"
        assert "$" not in substitute(target.expr, names), target
    for variable in variables().values():
        if variable["type"] == "query":
            selector, _ = label_values_query(variable)
            assert set(METRIC.findall(selector)) <= exported, variable["name"]


def test_substitution_refuses_an_unknown_variable() -> None:
    with pytest.raises(KeyError, match=r"\$cluster"):
        substitute('up{cluster="$cluster"}', {"job": "x"})
    assert substitute('rate(x{job=~"$job"}[$__rate_interval])', {"job": "a"}) == 'rate(x{job=~"a"}[30s])'


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in panels(board):
        assert panel["datasource"]["uid"] == "${datasource}"
