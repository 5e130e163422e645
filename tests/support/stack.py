"""The end-to-end stack: the real operator process on the real control plane, Prometheus and S3.

One control plane and one local kubelet serve the session (``cluster``); the operator is installed
from its chart once (``operator_kubeconfig``: a token of the chart's ServiceAccount, so every call the
operator makes is judged by the chart's RBAC). Each test gets a namespace of its own, a
MetricsEndpoint and a ModelStore (the session's S3, the test's bucket) admitting only it, what the
chart gives a watched namespace (Role, RoleBinding, training ServiceAccount), and an operator process
watching it with the chart's arguments.
"""

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

from sandbox.cluster import OPERATOR_NAMESPACE, LocalCluster, install_operator, install_tenant
from sandbox.controlplane import ControlPlane
from sandbox.processes import OperatorProcess, kubectl, venv_bin
from sandbox.prometheus import PrometheusServer, Series
from sandbox.s3 import S3Server
from tests.support.s3 import new_bucket, s3_client

__all__ = [
    "CHART_VALUES",
    "Stack",
    "cluster",
    "model_store",
    "operator_kubeconfig",
    "stack",
    "training_csv",
    "wait_for",
]
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# The chart as the tests install it: in namespaced mode (each test's namespace gets the chart's Role and
# RoleBinding), with leader election (its Lease rules) for the replica test.
CHART_VALUES: dict[str, Any] = {"leaderElection": {"enabled": True}, "watchNamespaces": ["tenants-come-later"]}


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
    namespace: str
    operator_kubeconfig: Path
    training_account: str
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
        # JSON documents, not YAML: PyYAML writes strings such as "y" bare, and kubectl would read them as
        # booleans. Not a List either: kubectl validates a List on the client, not with the server's strict check.
        return self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(doc) for doc in docs))

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> Any:
        args = ["get", kind, *([name] if name else []), "-n", namespace or self.namespace, "-o", "json"]
        result = self.kubectl(*args)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def jobs(self) -> list[dict[str, Any]]:
        return list((self.get("jobs") or {}).get("items") or [])

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get("retrainpolicies", name) or {}).get("status") or {})

    def rollback_outcome(self, name: str, *, timeout: float = 120) -> dict[str, Any]:
        """``status.lastRollback`` once the rollback's promote Job has ended (Succeeded or Failed)."""
        return wait_for(
            "the rollback",
            lambda: (
                (self.status(name).get("lastRollback") or {}).get("outcome") in ("Succeeded", "Failed")
                and self.status(name)["lastRollback"]
            ),
            timeout=timeout,
            log=self.operator.log,
        )

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == kind), {})

    def events(self) -> list[dict[str, Any]]:
        return list((self.get("events") or {}).get("items") or [])

    def push_accuracy(self, model: str, values: list[float], *, step: float = 15.0) -> None:
        end = time.time() - 1
        samples = [(end - step * (len(values) - 1 - i), v) for i, v in enumerate(values)]
        self.prometheus.push([Series("model_accuracy", {"namespace": self.namespace, "model": model}, samples)])

    def example_policy(self, name: str = "churn", model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "churn-policy.yaml").read_text())
        body["metadata"]["name"] = name
        body["metadata"]["namespace"] = self.namespace
        body["spec"]["metrics"]["endpoint"] = self.namespace
        body["spec"]["model"]["registry"].update(store=self.namespace, bucket=self.bucket)
        body["spec"]["metrics"]["selector"] = {"model": model or self.model}
        return body

    def start_operator(self, *extra: str, log: str = "operator.log") -> OperatorProcess:
        self.operator = OperatorProcess(
            kubeconfig=self.operator_kubeconfig,
            log_path=self.tmp / log,
            args=[
                "--namespace",
                self.namespace,
                "--operator-namespace",
                OPERATOR_NAMESPACE,
                "--trainer-image",
                "retrain-operator:test",
                "--training-service-account",
                self.training_account,
                *extra,
            ],
        ).start()
        return self.operator

    def runs(self) -> list[Any]:
        """What the kubelet ran for this test's namespace."""
        return self.cluster.runs_in(self.namespace)


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The session's control plane with the local kubelet, which runs Pods with this environment's PATH."""
    env = {"PATH": f"{venv_bin()}:/usr/bin:/bin"}
    with LocalCluster(
        workdir=tmp_path_factory.mktemp("cluster"), control_plane=control_plane, env_overrides=env
    ) as running:
        yield running


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart installed (all but its Deployment) and a kubeconfig of its ServiceAccount."""
    pki = cluster.control_plane.pki
    assert pki is not None
    return install_operator(
        cluster.kubeconfig,
        values=CHART_VALUES,
        server=cluster.url,
        ca=pki.ca_cert,
        kubeconfig_path=tmp_path_factory.mktemp("operator") / "kubeconfig",
    )


@pytest.fixture
def stack(
    tmp_path: Path,
    cluster: LocalCluster,
    operator_kubeconfig: Path,
    unique_namespace: str,
    prometheus: PrometheusServer,
    s3_server: S3Server,
    prom_series_id: str,
) -> Iterator[Stack]:
    s3 = s3_client(s3_server)
    bucket = new_bucket(s3, "e2e")
    s3.put_object(Bucket=bucket, Key="data/churn.csv", Body=training_csv().encode())
    namespace = unique_namespace
    # Tenants' namespaces enforce the restricted Pod Security profile (docs/install.md): the real
    # admission plugin then refuses any training Pod that does not meet it.
    labelled = kubectl(
        cluster.kubeconfig, "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    assert labelled.returncode == 0, labelled.stderr
    account = install_tenant(cluster.kubeconfig, values=CHART_VALUES, namespace=namespace)
    stack = Stack(
        cluster,
        namespace,
        operator_kubeconfig,
        account,
        None,  # type: ignore[arg-type]
        prometheus,
        s3_server,
        bucket,
        prom_series_id,
        tmp_path,
    )
    endpoint = yaml.safe_load((ROOT / "examples" / "metricsendpoint.yaml").read_text())
    endpoint["metadata"]["name"] = namespace
    endpoint["spec"].update(url=prometheus.url, allowedNamespaces=[namespace])
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "churn-s3", "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key},
    }
    store = model_store(namespace, s3=s3_server, bucket=bucket)
    applied = stack.apply(secret, endpoint, store)
    assert applied.returncode == 0, applied.stderr
    stack.start_operator()
    try:
        yield stack
    finally:
        stack.operator.stop()
        cluster.release_jobs()
        kubectl(cluster.kubeconfig, "delete", "metricsendpoint", namespace, "--wait=false")
        kubectl(cluster.kubeconfig, "delete", "modelstore", namespace, "--wait=false")


def model_store(namespace: str, *, s3: S3Server, bucket: str) -> dict[str, Any]:
    """A ModelStore like examples/modelstore.yaml for one test: the session's S3, only its namespace and bucket."""
    store: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "modelstore.yaml").read_text())
    store["metadata"]["name"] = namespace
    store["spec"].update(
        endpoint=s3.endpoint,
        region=s3.region,
        credentialsSecret={"name": "churn-s3"},
        allowedNamespaces=[namespace],
        buckets=[{"bucket": bucket}],
    )
    return store
