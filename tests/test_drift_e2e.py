"""Drift against a real Prometheus: `evaluate -o json` equals SciPy on the same buckets, bad data is
inconclusive with its reason, and the real operator fires on a shifted history and not on the control."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy.spatial.distance import jensenshannon

from sandbox.prometheus import PrometheusServer
from tests.support.histograms import dataset, edges_for, simulate
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration
HOUR = 3600.0


def edges() -> dict[str, list[float]]:
    return {feature: edges_for(values) for feature, values in dataset().items()}


def drift_policy(model: str, **drift: Any) -> dict[str, Any]:
    spec = {
        "metric": "feature_value",
        "statistic": "jensenShannonDistance",
        "window": "30m",
        "reference": {"source": "Window", "offset": "1h", "window": "1h"},
        "threshold": 0.1,
        "minSamples": 100,
    } | drift
    return {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainPolicy",
        "metadata": {"name": "drifty", "namespace": "team-a"},
        "spec": {
            "model": {"name": "m", "registry": {"bucket": "models"}},
            "metrics": {"endpoint": "cli", "selector": {"model": model}},
            "triggers": [{"name": "input-drift", "drift": spec}],
            "training": {
                "builtin": {
                    "data": {"key": "d.csv"},
                    "target": "label",
                    "estimator": "sklearn.linear_model.LogisticRegression",
                }
            },
        },
    }


def proportions(cumulative: dict[str, float]) -> np.ndarray:
    """Per-bucket shares from cumulative counts in le order (the dict keeps the series' bucket order)."""
    counts = np.diff([0.0, *cumulative.values()])
    return np.asarray(counts / counts.sum())


def evaluate(tmp_path: Path, body: dict[str, Any], prom: PrometheusServer, at: datetime) -> dict[str, Any]:
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
            prom.url,
            "--at",
            at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_evaluate_reports_the_drift_scipy_computes(
    tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str
) -> None:
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    end = at.timestamp()
    series, history = simulate(
        labels={"model": prom_series_id},
        start=end - 2.5 * HOUR + 7,
        end=end - 1,
        seed=3,
        shift_at=end - 40 * 60,
        shift={"radius": 1.5},
        edges=edges(),
    )
    prometheus.push(series)
    out = evaluate(tmp_path, drift_policy(prom_series_id), prometheus, at)
    trigger = out["triggers"][0]
    expected = {}
    for feature in ("radius", "texture", "smoothness"):
        current = history.increase(feature, end - 30 * 60, end)
        reference = history.increase(feature, end - 2 * HOUR, end - HOUR)
        expected[feature] = float(jensenshannon(proportions(reference), proportions(current), base=2))
    assert trigger["state"] == "firing" and trigger["type"] == "drift"
    assert trigger["value"] == pytest.approx(max(expected.values()), abs=1e-9)
    assert trigger["threshold"] == 0.1
    assert out["decision"]["action"] == "Retrain"
    assert "radius" in trigger["message"]


@pytest.mark.parametrize(
    ("case", "problem"), [("missing", "NoData"), ("few", "InsufficientSamples"), ("mismatch", "BucketMismatch")]
)
def test_bad_histograms_are_inconclusive(
    tmp_path: Path, prometheus: PrometheusServer, prom_series_id: str, case: str, problem: str
) -> None:
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    end = at.timestamp()
    body = drift_policy(prom_series_id)
    if case == "few":
        prometheus.push(
            simulate(labels={"model": prom_series_id}, start=end - 2.5 * HOUR + 7, end=end - 1, seed=4, edges=edges())[
                0
            ]
        )
        body["spec"]["triggers"][0]["drift"]["minSamples"] = 1e9
    if case == "mismatch":
        changed = {f: [e * 1.01 for e in v] for f, v in edges().items()}  # the serving code changed its buckets
        prometheus.push(
            simulate(
                labels={"model": prom_series_id}, start=end - 2.5 * HOUR + 7, end=end - 45 * 60, seed=5, edges=edges()
            )[0]
        )
        prometheus.push(
            simulate(labels={"model": prom_series_id}, start=end - 40 * 60 + 7, end=end - 1, seed=6, edges=changed)[0]
        )
    out = evaluate(tmp_path, body, prometheus, at)
    trigger = out["triggers"][0]
    assert trigger["state"] == "inconclusive" and trigger["problem"] == problem, trigger
    assert out["decision"]["reason"] == "MetricsUnavailable"
    if case == "mismatch":
        assert "feature_value" in trigger["message"]


def test_operator_fires_on_shifted_history_after_for_and_not_on_the_control(stack: Stack) -> None:
    end = time.time()
    shifted, _ = simulate(
        labels={"namespace": stack.namespace, "model": f"{stack.model}-shifted"},
        start=end - 2.5 * HOUR,
        end=end - 1,
        seed=1,
        shift_at=end - 40 * 60,
        shift={"radius": 1.5},
        edges=edges(),
    )
    control, _ = simulate(
        labels={"namespace": stack.namespace, "model": f"{stack.model}-control"},
        start=end - 2.5 * HOUR,
        end=end - 1,
        seed=2,
        edges=edges(),
    )
    stack.prometheus.push(shifted + control)
    policies = []
    for name in ("shifted", "control"):
        body = stack.example_policy(name, f"{stack.model}-{name}")
        body["spec"]["evaluation"]["interval"] = "2s"
        body["spec"]["triggers"] = [
            {
                "name": "input-drift",
                "for": "6s",
                "drift": {
                    "metric": "feature_value",
                    "statistic": "psi",
                    "window": "30m",
                    "threshold": 0.2,
                    "reference": {"source": "Window", "offset": "1h", "window": "1h"},
                },
            }
        ]
        policies.append(body)
    assert stack.apply(*policies).returncode == 0
    pending = wait_for(
        "the drift trigger pending",
        lambda: (
            stack.status("shifted").get("triggers")
            and stack.status("shifted")["triggers"][0]["state"] in ("pending", "firing")
            and stack.status("shifted")["triggers"][0]
        ),
        timeout=30,
        log=stack.operator.log,
    )
    assert pending["state"] == "pending", "with for: 6s the first evaluation cannot fire"
    jobs = wait_for("one Job", stack.jobs, timeout=40, log=stack.operator.log)
    assert [j["metadata"]["ownerReferences"][0]["name"] for j in jobs] == ["shifted"]
    trigger = stack.status("shifted")["triggers"][0]
    assert trigger["state"] == "firing" and trigger["features"][0]["name"] == "radius"
    assert trigger["features"][0]["value"] > 0.2
    control = stack.status("control")["triggers"][0]
    assert control["state"] == "clear" and control["value"] < 0.2
    assert len(stack.jobs()) == 1


def test_drift_against_the_champions_training_data(stack: Stack) -> None:
    end = time.time()
    feature_edges = edges()
    stack.push_accuracy(f"{stack.model}-model", [0.80] * 80)
    shifted, _ = simulate(
        labels={"namespace": stack.namespace, "model": f"{stack.model}-model"},
        start=end - 40 * 60,
        end=end - 1,
        seed=8,
        shift_at=end - 40 * 60,
        shift={"radius": 1.5},
        edges=feature_edges,
        column_names=True,
    )
    stack.prometheus.push(shifted)
    body = stack.example_policy("champion-drift", f"{stack.model}-model")
    body["spec"]["evaluation"]["interval"] = "2s"
    body["spec"]["training"]["builtin"]["histograms"] = {
        "features": {"mean radius": feature_edges["radius"], "mean texture": feature_edges["texture"]}
    }
    body["spec"]["triggers"].append(
        {
            "name": "input-drift",
            "drift": {
                "metric": "feature_value",
                "statistic": "psi",
                "window": "30m",
                "threshold": 0.2,
                "reference": {"source": "Model"},
            },
        }
    )
    assert stack.apply(body).returncode == 0
    model = wait_for(
        "a model with its reference histograms",
        lambda: (stack.status("champion-drift").get("model") or {}).get("reference"),
        timeout=120,
        log=stack.operator.log,
    )
    assert set(model) == {"mean radius", "mean texture"}
    drift_state = wait_for(
        "the drift trigger judged against the model",
        lambda: next(
            (
                t
                for t in stack.status("champion-drift").get("triggers") or []
                if t["name"] == "input-drift" and t["state"] in ("firing", "clear")
            ),
            None,
        ),
        timeout=30,
        log=stack.operator.log,
    )
    assert drift_state["state"] == "firing", drift_state
    values = {f["name"]: f["value"] for f in drift_state["features"]}
    assert values["mean radius"] > 0.2 > values["mean texture"]
