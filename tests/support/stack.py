"""The end-to-end stack: the real operator process, the local cluster, Prometheus and S3, for integration tests."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from sandbox.cluster import LocalCluster
from sandbox.processes import OperatorProcess, kubectl, venv_bin
from sandbox.prometheus import PrometheusServer, Series
from sandbox.s3 import S3Server
from tests.support.s3 import new_bucket, s3_client

__all__ = ["NAMESPACE", "Stack", "stack", "training_csv", "wait_for"]
ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "team-a"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float, log: Callable[[], str] = str) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` and the operator's log."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log()[-6000:]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- operator log ---\n{tail}")
        time.sleep(0.2)


def training_csv() -> str:
    data = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    buffer = io.StringIO()
    data.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


@dataclass
class Stack:
    cluster: LocalCluster
    operator: OperatorProcess
    prometheus: PrometheusServer
    s3: S3Server
    bucket: str
    model: str
    tmp: Path

    def kubectl(self, *args: str, input: str | None = None) -> Any:
        result = kubectl(self.cluster.kubeconfig, *args, input=input)
        return result

    def apply(self, *docs: dict[str, Any]) -> Any:
        return self.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all(docs))

    def get(self, kind: str, name: str | None = None, namespace: str = NAMESPACE) -> Any:
        args = ["get", kind, *([name] if name else []), "-n", namespace, "-o", "json"]
        result = self.kubectl(*args)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def jobs(self) -> list[dict[str, Any]]:
        return list((self.get("jobs") or {}).get("items") or [])

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get("retrainpolicies", name) or {}).get("status") or {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == kind), {})

    def events(self) -> list[dict[str, Any]]:
        return list((self.get("events") or {}).get("items") or [])

    def push_accuracy(self, model: str, values: list[float], *, step: float = 15.0) -> None:
        end = time.time() - 1
        samples = [(end - step * (len(values) - 1 - i), v) for i, v in enumerate(values)]
        self.prometheus.push([Series("model_accuracy", {"namespace": NAMESPACE, "model": model}, samples)])

    def example_policy(self, name: str = "churn", model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "churn-policy.yaml").read_text())
        body["metadata"]["name"] = name
        body["spec"]["model"]["registry"].update(endpoint=self.s3.endpoint, bucket=self.bucket)
        body["spec"]["metrics"]["selector"] = {"model": model or self.model}
        return body

    def start_operator(self, *extra: str, log: str = "operator.log") -> OperatorProcess:
        self.operator = OperatorProcess(
            kubeconfig=self.cluster.kubeconfig, log_path=self.tmp / log,
            args=["--operator-namespace", "retrain-system", "--trainer-image", "retrain-operator:test",
                  "--training-service-account", "default", *extra]).start()
        return self.operator


@pytest.fixture
def stack(tmp_path: Path, prometheus: PrometheusServer, s3_server: S3Server, prom_series_id: str) -> Iterator[Stack]:
    s3 = s3_client(s3_server)
    bucket = new_bucket(s3, "e2e")
    s3.put_object(Bucket=bucket, Key="data/churn.csv", Body=training_csv().encode())
    env = {"PATH": f"{venv_bin()}:/usr/bin:/bin"}
    with LocalCluster(workdir=tmp_path / "cluster", crd_paths=[], env_overrides=env) as cluster:
        stack = Stack(cluster, None, prometheus, s3_server, bucket, prom_series_id, tmp_path)  # type: ignore[arg-type]
        applied = stack.kubectl("apply", "--validate=false", "-f", str(ROOT / "crds"))
        assert applied.returncode == 0, applied.stderr
        endpoint = yaml.safe_load((ROOT / "examples" / "metricsendpoint.yaml").read_text())
        endpoint["spec"]["url"] = prometheus.url
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "churn-s3", "namespace": NAMESPACE},
                  "stringData": {"AWS_ACCESS_KEY_ID": s3_server.access_key,
                                 "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}}
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        applied = stack.apply(namespace, secret, endpoint)
        assert applied.returncode == 0, applied.stderr
        stack.start_operator()
        try:
            yield stack
        finally:
            stack.operator.stop()


