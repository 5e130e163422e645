"""``retrain-operator evaluate`` against a real Prometheus with history pushed at known times."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.prometheus import PrometheusServer, Series
from tests.policies import policy

pytestmark = pytest.mark.integration


def at_minute() -> datetime:
    return (datetime.now(UTC) - timedelta(minutes=1)).replace(second=0, microsecond=0)


def history(at: datetime, values: list[float]) -> list[tuple[float, float]]:
    """Samples every 15 s ending 7 s before ``at`` (never on a window boundary), oldest first."""
    end = at.timestamp() - 7
    return [(end - 15 * (len(values) - 1 - i), v) for i, v in enumerate(values)]


def run_evaluate(
    tmp_path: Path, body: dict[str, Any], prom: PrometheusServer, at: datetime, *extra: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(body))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "retrain_operator.cli",
            "evaluate",
            "-f",
            str(path),
            "--prometheus-url",
            prom.url,
            "--at",
            at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def accuracy_policy(model: str, **trigger: Any) -> dict[str, Any]:
    spec = {"metric": "model_accuracy", "window": "5m", "fixedBaseline": 0.95, "maxDrop": 0.05}
    return policy(
        metrics={"endpoint": "cli", "selector": {"model": model}},
        triggers=[{"name": "acc", "for": trigger.pop("for_", "5m"), "accuracyDecay": spec | trigger}],
    )


def test_firing_value_equals_prometheus_average(
    tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str
) -> None:
    at = at_minute()
    values = [0.80 + 0.001 * (i % 7) for i in range(80)]  # 20 minutes of low accuracy
    samples = history(at, values)
    prometheus.push([Series("model_accuracy", {"model": prom_series_id}, samples)])
    result = run_evaluate(tmp_path, accuracy_policy(prom_series_id), prometheus, at, "-o", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    in_window = [v for t, v in samples if at.timestamp() - 300 <= t <= at.timestamp()]
    trigger = out["triggers"][0]
    assert trigger["value"] == pytest.approx(sum(in_window) / len(in_window), abs=1e-12)
    assert trigger | {"value": None, "message": None, "since": None} == {
        "name": "acc",
        "type": "accuracyDecay",
        "value": None,
        "threshold": pytest.approx(0.90),
        "state": "firing",
        "since": None,
        "message": None,
        "problem": None,
    }
    assert out["decision"]["action"] == "Retrain" and out["decision"]["reason"] == "TriggerFiring"


def test_recent_drop_is_pending_until_for_has_passed(
    tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str
) -> None:
    at = at_minute()
    values = [0.96] * 72 + [0.70] * 8  # low only for the last two minutes
    prometheus.push([Series("model_accuracy", {"model": prom_series_id}, history(at, values))])
    out = json.loads(
        run_evaluate(tmp_path, accuracy_policy(prom_series_id, window="1m"), prometheus, at, "-o", "json").stdout
    )
    assert out["triggers"][0]["state"] == "pending"
    assert out["decision"]["reason"] == "TriggerPending"


def test_healthy_model_is_clear_and_text_output_explains(
    tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str
) -> None:
    at = at_minute()
    prometheus.push([Series("model_accuracy", {"model": prom_series_id}, history(at, [0.94] * 40))])
    result = run_evaluate(tmp_path, accuracy_policy(prom_series_id), prometheus, at)
    assert result.returncode == 0, result.stderr
    assert "clear" in result.stdout and "decision: None (NoTriggerFiring)" in result.stdout


@pytest.mark.parametrize(("case", "problem"), [("empty", "NoData"), ("nan", "NotANumber")])
def test_missing_data_is_inconclusive(
    tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str, case: str, problem: str
) -> None:
    at = at_minute()
    if case == "nan":
        prometheus.push([Series("model_accuracy", {"model": prom_series_id}, history(at, [float("nan")] * 40))])
    out = json.loads(
        run_evaluate(tmp_path, accuracy_policy(prom_series_id, for_="0s"), prometheus, at, "-o", "json").stdout
    )
    assert out["triggers"][0]["state"] == "inconclusive" and out["triggers"][0]["value"] is None
    assert out["triggers"][0]["problem"] == problem
    assert out["decision"] == {
        "action": "Wait",
        "reason": "MetricsUnavailable",
        "message": out["decision"]["message"],
        "triggers": [],
    }


def test_unreachable_prometheus_is_inconclusive(tmp_path: Path, prometheus: PrometheusServer) -> None:
    body = accuracy_policy("x")
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(body))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrain_operator.cli",
            "evaluate",
            "-f",
            str(path),
            "--prometheus-url",
            "http://127.0.0.1:9",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = json.loads(result.stdout)
    assert out["triggers"][0]["problem"] == "Unreachable" and out["decision"]["reason"] == "MetricsUnavailable"


def test_raw_query_trigger(tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str) -> None:
    at = at_minute()
    prometheus.push([Series("errors_total_ratio", {"model": prom_series_id}, history(at, [0.3] * 40))])
    body = policy(
        metrics={"endpoint": "cli", "selector": {"model": prom_series_id}},
        triggers=[
            {
                "name": "errors",
                "for": "2m",
                "query": {
                    "promql": f'max(errors_total_ratio{{model="{prom_series_id}"}})',
                    "operator": ">",
                    "threshold": 0.2,
                },
            }
        ],
    )
    out = json.loads(run_evaluate(tmp_path, body, prometheus, at, "-o", "json").stdout)
    assert out["triggers"][0]["state"] == "firing" and out["triggers"][0]["value"] == pytest.approx(0.3)


def test_invalid_policy_names_the_field(tmp_path: Path, prometheus: PrometheusServer) -> None:
    body = accuracy_policy("x")
    body["spec"]["triggers"][0]["for"] = "a while"
    result = run_evaluate(tmp_path, body, prometheus, at_minute())
    assert result.returncode == 2
    assert "spec.triggers[0].for: 'a while' is not a duration" in result.stderr
