"""The alert rules of ``docs/monitoring/alerts.yaml``, checked and unit-tested by promtool.

Every alert has cases here that fire and cases that stay quiet, run by ``promtool test rules`` on
series shaped as the operator exports them (with the ``job`` and ``instance`` labels a scrape adds).
The promtool test file is written from the table below; its expected annotations are the rule's own
templates with each ``{{ ... }}`` replaced by what the case says it renders to, so promtool checks
that every template renders, and a template the case does not know fails the test. Every metric a
rule or a case names must be one the operator exports, so the rules cannot drift from the code.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrain_operator.reconcile import telemetry
from tests.support.prometheus import require_prometheus

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docs" / "monitoring" / "alerts.yaml"
SCRAPE = 'job="retrain-operator-metrics", instance="10.0.0.7:8080"'
OTHER_REPLICA = 'job="retrain-operator-metrics", instance="10.0.0.8:8080"'
POLICY = 'namespace="team-a", policy="churn"'
SEVERITIES = {"critical", "warning", "info"}


# The leader's record that it evaluated the policy every minute: the per-policy rules read its series.
EVALUATED = {f"retrain_policy_last_evaluation_timestamp_seconds{{{SCRAPE}, {POLICY}}}": "0+60x70"}


@dataclass(frozen=True)
class Case:
    """One promtool test: input series, and at ``eval_time`` the alerts expected (empty: none)."""

    name: str
    alert: str
    series: Mapping[str, str]
    eval_time: str
    fires: list[Mapping[str, str]] = field(default_factory=list)
    renders: Mapping[str, str] = field(default_factory=dict)  # "{{ X }}" -> what it renders to, per case


CASES = [
    Case(
        "operator down: its only replica is scraped as down",
        "RetrainOperatorDown",
        {f"up{{{SCRAPE}}}": "0x10"},
        "6m",
        fires=[{}],
    ),
    Case("operator down: never scraped at all", "RetrainOperatorDown", {'up{job="other"}': "1x10"}, "6m", fires=[{}]),
    Case(
        "operator down: one of two replicas is up",
        "RetrainOperatorDown",
        {
            f"up{{{SCRAPE}}}": "0x10",
            f"up{{{OTHER_REPLICA}}}": "1x10",
        },
        "6m",
    ),
    Case(
        "not reconciling: one policy's last evaluation stays behind three intervals",
        "RetrainOperatorNotReconciling",
        {
            f"retrain_policy_last_evaluation_timestamp_seconds{{{SCRAPE}, {POLICY}}}": "0x15",
            f"retrain_policy_interval_seconds{{{SCRAPE}, {POLICY}}}": "60x15",
            f'retrain_policy_last_evaluation_timestamp_seconds{{{SCRAPE}, namespace="team-a", policy="fresh"}}': (
                "0+60x15"
            ),
            f'retrain_policy_interval_seconds{{{SCRAPE}, namespace="team-a", policy="fresh"}}': "60x15",
        },
        "11m",
        fires=[{"namespace": "team-a", "policy": "churn"}],
        renders={"$value | humanizeDuration": "11m 0s"},
    ),
    Case(
        "not reconciling: a former leader's stale timestamp next to the leader's fresh one",
        "RetrainOperatorNotReconciling",
        {
            f"retrain_policy_last_evaluation_timestamp_seconds{{{SCRAPE}, {POLICY}}}": "0x15",
            f"retrain_policy_last_evaluation_timestamp_seconds{{{OTHER_REPLICA}, {POLICY}}}": "0+60x15",
            f"retrain_policy_interval_seconds{{{SCRAPE}, {POLICY}}}": "60x15",
        },
        "11m",
    ),
    Case(
        "lag: p99 two minutes against a 30s interval",
        "RetrainEvaluationLagHigh",
        {
            **{
                f'retrain_evaluation_lag_seconds_bucket{{{SCRAPE}, le="{le}"}}': "0x40"
                for le in ("1.0", "30.0", "60.0")
            },
            **{f'retrain_evaluation_lag_seconds_bucket{{{SCRAPE}, le="{le}"}}': "0+10x40" for le in ("120.0", "+Inf")},
            f"retrain_policy_interval_seconds{{{SCRAPE}, {POLICY}}}": "30x40",
            f'retrain_policy_interval_seconds{{{SCRAPE}, namespace="team-a", policy="slow"}}': "3600x40",
        },
        "30m",
        fires=[{}],
        renders={"$value | humanizeDuration": "1m 59s"},
    ),
    Case(
        "lag: under a second",
        "RetrainEvaluationLagHigh",
        {
            **{f'retrain_evaluation_lag_seconds_bucket{{{SCRAPE}, le="{le}"}}': "0+10x40" for le in ("1.0", "+Inf")},
            f"retrain_policy_interval_seconds{{{SCRAPE}, {POLICY}}}": "30x40",
        },
        "30m",
    ),
    Case(
        "invalid: a policy Invalid for 20 minutes",
        "RetrainPolicyInvalid",
        {f'retrain_policy_phase{{{SCRAPE}, {POLICY}, phase="Invalid"}}': "1x20", **EVALUATED},
        "17m",
        fires=[{"namespace": "team-a", "policy": "churn"}],
    ),
    Case(
        "invalid: a former leader still exports Invalid; the leader, which evaluates it now, says Watching",
        "RetrainPolicyInvalid",
        {
            f'retrain_policy_phase{{{SCRAPE}, {POLICY}, phase="Watching"}}': "1x20",
            f'retrain_policy_phase{{{OTHER_REPLICA}, {POLICY}, phase="Invalid"}}': "1x20",
            f"retrain_policy_last_evaluation_timestamp_seconds{{{OTHER_REPLICA}, {POLICY}}}": "0x20",
            **EVALUATED,
        },
        "17m",
    ),
    Case(
        "invalid: a policy that watches",
        "RetrainPolicyInvalid",
        {f'retrain_policy_phase{{{SCRAPE}, {POLICY}, phase="Watching"}}': "1x20", **EVALUATED},
        "17m",
    ),
    Case(
        "metrics unavailable: 35 minutes, though the reason changed from NoData to Unreachable on the way",
        "RetrainPolicyMetricsUnavailable",
        {
            **EVALUATED,
            f'retrain_policy_condition{{{SCRAPE}, {POLICY}, condition="MetricsAvailable", reason="NoData"}}': (
                "0x15 _x25"
            ),
            f'retrain_policy_condition{{{SCRAPE}, {POLICY}, condition="MetricsAvailable", reason="Unreachable"}}': (
                "_x15 0x25"
            ),
        },
        "35m",
        fires=[{"namespace": "team-a", "policy": "churn"}],
    ),
    Case(
        "metrics unavailable: only 20 minutes",
        "RetrainPolicyMetricsUnavailable",
        {
            **EVALUATED,
            f'retrain_policy_condition{{{SCRAPE}, {POLICY}, condition="MetricsAvailable", reason="NoData"}}': (
                "1x15 0x20"
            ),
        },
        "35m",
    ),
    Case(
        "metrics unavailable: Unknown (an invalid policy is not evaluated) is not False",
        "RetrainPolicyMetricsUnavailable",
        {
            **EVALUATED,
            f'retrain_policy_condition{{{SCRAPE}, {POLICY}, condition="MetricsAvailable", reason="NotEvaluated"}}': (
                "-1x40"
            ),
        },
        "35m",
    ),
    Case(
        "metrics unavailable: metrics there, another condition False",
        "RetrainPolicyMetricsUnavailable",
        {
            **EVALUATED,
            f'retrain_policy_condition{{{SCRAPE}, {POLICY}, condition="MetricsAvailable", reason="Ok"}}': "1x40",
            f'retrain_policy_condition{{{SCRAPE}, {POLICY}, condition="Training", reason="JobFailed"}}': "0x40",
        },
        "35m",
    ),
    Case(
        "training: three failures in a row",
        "RetrainTrainingFailing",
        {f"retrain_policy_training_failures_in_a_row{{{SCRAPE}, {POLICY}}}": "0 1 2 3 3", **EVALUATED},
        "4m",
        fires=[{"namespace": "team-a", "policy": "churn"}],
        renders={"$value": "3"},
    ),
    Case(
        "training: a former leader saw three failures; the leader has seen the success since",
        "RetrainTrainingFailing",
        {
            f"retrain_policy_training_failures_in_a_row{{{SCRAPE}, {POLICY}}}": "0 0 0 0 0",
            f"retrain_policy_training_failures_in_a_row{{{OTHER_REPLICA}, {POLICY}}}": "3 3 3 3 3",
            f"retrain_policy_last_evaluation_timestamp_seconds{{{OTHER_REPLICA}, {POLICY}}}": "0 0 0 0 0",
            **EVALUATED,
        },
        "4m",
    ),
    Case(
        "training: two failures, then a success",
        "RetrainTrainingFailing",
        {f"retrain_policy_training_failures_in_a_row{{{SCRAPE}, {POLICY}}}": "1 2 0 0 0", **EVALUATED},
        "4m",
    ),
    Case(
        "budget: every run of the window used",
        "RetrainBudgetExhausted",
        {
            f'retrain_budget_used{{{SCRAPE}, namespace="team-a", budget="team", measure="runs"}}': "5x15",
            f'retrain_budget_limit{{{SCRAPE}, namespace="team-a", budget="team", measure="runs"}}': "5x15",
            f'retrain_budget_used{{{SCRAPE}, namespace="team-a", budget="team", measure="cost"}}': "3x15",
        },
        "12m",
        fires=[{"namespace": "team-a", "budget": "team", "measure": "runs"}],
    ),
    Case(
        "budget: room left, and a measure without a limit",
        "RetrainBudgetExhausted",
        {
            f'retrain_budget_used{{{SCRAPE}, namespace="team-a", budget="team", measure="runs"}}': "4x15",
            f'retrain_budget_limit{{{SCRAPE}, namespace="team-a", budget="team", measure="runs"}}': "5x15",
            f'retrain_budget_used{{{SCRAPE}, namespace="team-a", budget="team", measure="cost"}}': "300x15",
        },
        "12m",
    ),
    Case(
        "blocked by budget: OverBudget decisions for 35 minutes",
        "RetrainBlockedByBudget",
        {
            f'retrain_decisions_total{{{SCRAPE}, namespace="team-a", action="Wait", reason="OverBudget"}}': "0+2x70",
        },
        "65m",
        fires=[{"namespace": "team-a"}],
    ),
    Case(
        "blocked by budget: the last OverBudget decision was an hour ago",
        "RetrainBlockedByBudget",
        {
            f'retrain_decisions_total{{{SCRAPE}, namespace="team-a", action="Wait", reason="OverBudget"}}': (
                "0+1x10 10x60"
            ),
            f'retrain_decisions_total{{{SCRAPE}, namespace="team-a", action="Retrain", reason="TriggerFiring"}}': (
                "0+1x70"
            ),
        },
        "65m",
    ),
]


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def expected_annotations(
    rule: Mapping[str, Any], labels: Mapping[str, str], renders: Mapping[str, str]
) -> dict[str, str]:
    """The rule's annotations as promtool must render them for an alert with ``labels``."""

    def fill(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression.startswith("$labels."):
            return labels[expression.removeprefix("$labels.")]
        assert expression in renders, f"{rule['alert']}: the case does not say what {{{{ {expression} }}}} renders to"
        return renders[expression]

    return {key: TEMPLATE.sub(fill, text) for key, text in rule["annotations"].items()}


def promtool_tests() -> dict[str, Any]:
    by_name = {rule["alert"]: rule for rule in rules()}
    tests = []
    for case in CASES:
        rule = by_name[case.alert]
        alerts = []
        for labels in case.fires:
            full = {**labels, **rule["labels"]}
            alerts.append({"exp_labels": full, "exp_annotations": expected_annotations(rule, full, case.renders)})
        tests.append(
            {
                "name": case.name,
                "interval": "1m",
                "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
                "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": alerts}],
            }
        )
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_prometheus()[1]


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(promtool_tests(), sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_promtool(promtool: str, tmp_path: Path) -> None:
    """The harness can fail: a firing case turned into a quiet one is caught by promtool."""
    tests = promtool_tests()
    tests["tests"] = [t for t in tests["tests"] if t["alert_rule_test"][0]["exp_alerts"]][:1]
    tests["tests"][0]["alert_rule_test"][0]["exp_alerts"] = []
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    for rule in rules():
        cases = [c for c in CASES if c.alert == rule["alert"]]
        assert any(c.fires for c in cases), f"{rule['alert']} has no case where it fires"
        assert any(not c.fires for c in cases), f"{rule['alert']} has no case where it stays quiet"
    assert {c.alert for c in CASES} <= {r["alert"] for r in rules()}


def test_every_alert_says_how_bad_what_and_what_to_check() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert "kubectl" in rule["annotations"]["description"], f"{rule['alert']}: say what to check"
        if "by (namespace, policy)" in rule["expr"] or "budget" in rule["expr"].lower():
            # About a policy, or what keeps policies waiting: the plugin explains the decision in words.
            assert "kubectl retrain why" in rule["annotations"]["description"], rule["alert"]
        assert re.fullmatch(r"Retrain[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]


def exported_metrics() -> set[str]:
    """Every series name the operator's registry can expose."""
    names = set()
    for family in telemetry.REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(family.name)
    return names


METRIC = re.compile(r"\b(retrain_[a-z_]+)")


def test_rules_and_cases_name_only_metrics_the_operator_exports() -> None:
    exported = exported_metrics()
    for rule in rules():
        for name in METRIC.findall(rule["expr"]):
            assert name in exported, f"{rule['alert']} reads {name}, which the operator does not export"
    for case in CASES:
        for series in case.series:
            name = series.split("{")[0]
            assert name == "up" or name in exported, f"{case.name}: {name} is not exported"
