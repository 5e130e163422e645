"""Bad input to the control plane's build and start: a clear error naming the component and its log, never a hang.

The happy path is every integration test (the session's control plane); these tests break one part on
purpose: no Go toolchain, a release that does not exist, a component that exits or never answers.
A component that misbehaves is a small script standing in for that one binary; the others are the
real ones.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from sandbox.controlplane import COMPONENTS, ControlPlane, ControlPlaneError, build

pytestmark = pytest.mark.integration


def test_a_missing_go_toolchain_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAIN_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin" if not shutil.which("go", path="/usr/bin:/bin") else "/nonexistent")
    with pytest.raises(ControlPlaneError, match="the Go toolchain is not on PATH"):
        build()


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("latest", "expected a Kubernetes release such as"),
        ("1.35", "give a patch release, e.g. K8S=1.35.0"),
        ("1.99.0", "k8s.io/kubernetes v1.99.0 is not available; see "),
    ],
)
def test_a_release_that_cannot_be_built_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, message: str
) -> None:
    monkeypatch.setenv("RETRAIN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ControlPlaneError, match=message):
        build(version=version, timeout=120)


def stand_in(tmp_path: Path, broken: str, script: str) -> Path:
    """A bin directory of the real binaries but with ``broken`` replaced by a shell script."""
    real = build()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for component in COMPONENTS:
        (bin_dir / component).symlink_to(real / component)
    (bin_dir / broken).unlink()
    (bin_dir / broken).write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / broken).chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("broken", ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"])
def test_a_component_that_exits_is_named_with_its_log(tmp_path: Path, broken: str) -> None:
    bin_dir = stand_in(tmp_path, broken, 'echo "flag provided but not defined: -sandbox" >&2; exit 2')
    plane = ControlPlane(workdir=tmp_path / "cp", bin_dir=bin_dir, start_timeout=30)
    with pytest.raises(ControlPlaneError) as raised:
        plane.__enter__()
    message = str(raised.value)
    log = tmp_path / "cp" / "logs" / f"{broken}.log"
    assert f"{broken} exited with code 2 before it was ready; see {log}" in message
    assert "flag provided but not defined" in message, "the log's tail is in the error"
    assert not any(c.running for c in plane.components), "what did start is stopped again"


def test_a_component_that_never_answers_times_out_with_its_log(tmp_path: Path) -> None:
    bin_dir = stand_in(tmp_path, "kube-apiserver", 'echo "waiting for nothing"; exec sleep 600')
    plane = ControlPlane(workdir=tmp_path / "cp", bin_dir=bin_dir, start_timeout=3)
    started = time.monotonic()
    with pytest.raises(ControlPlaneError) as raised:
        plane.__enter__()
    assert time.monotonic() - started < 30, "a deadline, never a hang"
    log = tmp_path / "cp" / "logs" / "kube-apiserver.log"
    assert "kube-apiserver was not ready at https://127.0.0.1:" in str(raised.value)
    assert "within 3s" in str(raised.value) and f"see {log}" in str(raised.value)
    assert not any(c.running for c in plane.components)


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    bin_dir = stand_in(tmp_path, "kube-scheduler", "exit 0")
    (bin_dir / "kube-scheduler").unlink()
    with pytest.raises(ControlPlaneError, match=f"kube-scheduler is missing from {bin_dir}; run `make controlplane`"):
        ControlPlane(workdir=tmp_path / "cp", bin_dir=bin_dir, start_timeout=30).__enter__()


def test_the_default_cache_is_outside_the_repository() -> None:
    repository = Path(__file__).resolve().parents[1]
    assert repository not in build().parents
    assert os.access(build() / "kube-apiserver", os.X_OK)
