"""pytest fixtures around :mod:`sandbox.controlplane`: one real control plane per session.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler start once (about ten seconds) and
serve every test; tests keep apart by namespace (:func:`unique_namespace`). The CRDs of ``crds/`` are
applied with plain ``kubectl apply``, as a user would. A control plane that cannot be built or started
fails the tests that need it, with the component and its log named; it is never skipped.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.controlplane import ControlPlane, ControlPlaneError, build
from sandbox.processes import kubectl

__all__ = ["Kubectl", "admin", "control_plane", "unique_namespace"]
ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


class Kubectl:
    """kubectl bound to one kubeconfig; every call returns the CompletedProcess for the caller to judge."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, input=input, timeout=timeout)

    def apply(self, *docs: dict[str, Any], extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        # JSON documents, not YAML: PyYAML writes strings such as "y" bare, and kubectl would read them as
        # booleans. Not a List either: kubectl validates a List on the client, not with the server's strict check.
        return self("apply", *extra, "-f", "-", input="\n---\n".join(json.dumps(doc) for doc in docs))

    def get(self, kind: str, name: str | None = None, *, namespace: str | None = None) -> Any:
        scope = ["-n", namespace] if namespace else []
        result = self("get", kind, *([name] if name else []), *scope, "-o", "json")
        return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The session's control plane, with the project's CRDs applied and established."""
    try:
        bin_dir = build()
        plane = ControlPlane(workdir=tmp_path_factory.mktemp("controlplane"), bin_dir=bin_dir)
        plane.start()
    except ControlPlaneError as error:
        pytest.fail(f"the control plane is not available: {error}", pytrace=False)
    try:
        admin_kubectl = Kubectl(plane.admin_kubeconfig)
        applied = admin_kubectl("apply", "-f", str(CRDS))
        assert applied.returncode == 0, applied.stderr
        established = admin_kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))
        assert established.returncode == 0, established.stderr
        _wait_for_default_service_account(admin_kubectl)
        yield plane
    finally:
        plane.stop()


def _wait_for_default_service_account(run: Kubectl, timeout: float = 60.0) -> None:
    # The controllers are up once the service-account controller has filled the default namespace.
    deadline = time.monotonic() + timeout
    while run("get", "serviceaccount", "default", "-n", "default").returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError("the service-account controller made no default ServiceAccount in 60s")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Kubectl:
    """kubectl as a cluster admin (system:masters)."""
    return Kubectl(control_plane.admin_kubeconfig)


@pytest.fixture
def unique_namespace(admin: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test's own, deleted (without waiting) when the test ends."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    created = admin("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    try:
        yield name
    finally:
        admin("delete", "namespace", name, "--wait=false")
