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
    assert trigger | {"value": None, "message": None, "since": None, "sinceAtOrBefore": None} == {
        "name": "acc",
        "type": "accuracyDecay",
        "value": None,
        "threshold": pytest.approx(0.90),
        "state": "firing",
        "since": None,
        "sinceAtOrBefore": None,
        "message": None,
        "problem": None,
    }
    # `for` is judged from history, and so is since when: the first instant (at the 30 s step `for` is
    # judged with) whose 5m average holds a low sample, within one step of the oldest sample.
    first = samples[0][0]
    since = datetime.fromisoformat(trigger["since"]).timestamp()
    assert first <= since < first + 30, (first, since)
    assert trigger["sinceAtOrBefore"] is False
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
    # Since when: the first instant whose 1m average holds a low sample, not the evaluation time.
    first_low = history(at, values)[72][0]
    since = datetime.fromisoformat(out["triggers"][0]["since"]).timestamp()
    assert first_low <= since < first_low + 30, (first_low, since, at.timestamp())


def test_healthy_model_is_clear_and_text_output_explains(
    tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str
) -> None:
    at = at_minute()
    prometheus.push([Series("model_accuracy", {"model": prom_series_id}, history(at, [0.94] * 40))])
    result = run_evaluate(tmp_path, accuracy_policy(prom_series_id), prometheus, at)
    assert result.returncode == 0, result.stderr
    assert "clear" in result.stdout and "decision: None (NoTriggerFiring)" in result.stdout
    # 0.95 - 0.05 is 0.8999999999999999 in floating point; words show it rounded.
    assert " threshold=0.9" in result.stdout and "0.8999" not in result.stdout, result.stdout
    assert " value=0.94 " in result.stdout, result.stdout


def volume_policy(model: str, *, created: bool) -> dict[str, Any]:
    body = policy(
        metrics={"endpoint": "cli", "selector": {"model": model}},
        triggers=[{"name": "volume", "dataVolume": {"metric": "labelled_samples_total", "minNewSamples": 100}}],
    )
    if not created:
        del body["metadata"]["creationTimestamp"]
    return body


def test_data_volume_of_a_model_never_trained_counts_and_names_its_window(
    tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str
) -> None:
    at = at_minute()
    # A counter growing by 10 every 15 s over 20 minutes: 800 new samples.
    samples = history(at, [10.0 * i for i in range(81)])
    prometheus.push([Series("labelled_samples_total", {"model": prom_series_id}, samples)])

    # No training time, no creation time: counted over the longest range a query may read, and said so.
    out = json.loads(
        run_evaluate(tmp_path, volume_policy(prom_series_id, created=False), prometheus, at, "-o", "json").stdout
    )
    trigger = out["triggers"][0]
    assert trigger["problem"] is None and trigger["state"] == "firing", trigger
    assert trigger["value"] == pytest.approx(800, rel=0.05)
    assert "in the last 31d (no training time known" in trigger["message"], trigger["message"]

    # --model-trained-at: counted since then, and the window named with it.
    trained = at - timedelta(minutes=5)
    out = json.loads(
        run_evaluate(
            tmp_path,
            volume_policy(prom_series_id, created=False),
            prometheus,
            at,
            "--model-trained-at",
            trained.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "-o",
            "json",
        ).stdout
    )
    trigger = out["triggers"][0]
    assert trigger["value"] == pytest.approx(200, rel=0.15), trigger
    assert trigger["state"] == "firing"
    assert f"in the last 5m (since {trained.strftime('%Y-%m-%dT%H:%M:%SZ')})" in trigger["message"], trigger["message"]

    # A window with no samples names it too, instead of a bare "no series".
    out = json.loads(
        run_evaluate(
            tmp_path, volume_policy("absent-" + prom_series_id, created=False), prometheus, at, "-o", "json"
        ).stdout
    )
    assert out["triggers"][0]["problem"] == "NoData"
    assert "in the last 31d" in out["triggers"][0]["message"]


def test_model_trained_at_after_the_evaluation_is_refused(tmp_path: Path, prometheus: PrometheusServer) -> None:
    at = at_minute()
    later = (at + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = run_evaluate(tmp_path, volume_policy("x", created=True), prometheus, at, "--model-trained-at", later)
    assert result.returncode == 2
    assert "--model-trained-at" in result.stderr and "before --at" in result.stderr
    result = run_evaluate(tmp_path, volume_policy("x", created=True), prometheus, at, "--model-trained-at", "yesterday")
    assert result.returncode == 2 and "--model-trained-at 'yesterday' is not an RFC 3339 time" in result.stderr


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
