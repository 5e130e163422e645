"""The README's first command: the sandbox story runs to completion and cleans up after itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.cluster import LocalCluster
from sandbox.s3 import S3Server
from tests.support.cluster import Kubectl

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


STEPS = (
    "trigger accuracy-drop: pending",
    "trigger accuracy-drop: firing",
    "decision: Retrain (TriggerFiring): started Job churn-retrain-",
    "training Job churn-retrain-",
    "Succeeded: model",
    "/metadata.json",
    "status.model: version",
    "accuracy recovered",
    "RetrainStarted",
    "RetrainSucceeded",
    "churn-gated decision: Wait (NotWorthRetraining)",
    "The loop is complete",
)


def run_sandbox(tmp_path: Path, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "--workdir", str(tmp_path / "sandbox"), "--timeout", "240", *extra],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    for step in STEPS:
        assert step in out, f"{step!r} missing from the sandbox output:\n{out[-4000:]}"
    # Told in the order it happened: the decision, its Job, then whatever the Job's run made of the policy.
    retrain, job = out.index("decision: Retrain (TriggerFiring)"), out.index("training Job churn-retrain-")
    assert retrain < job, out[-4000:]
    if "decision: Wait (TrainingInProgress)" in out:
        assert job < out.index("decision: Wait (TrainingInProgress)"), out[-4000:]
    # Events name their object, so the two policies' events are told apart.
    assert "retrainpolicy/churn-gated" in out and "retrainpolicy/churn " in out, out[-4000:]
    # Numbers rounded in words: no float printed with all its digits.
    unrounded = re.findall(r"\d\.\d{7,}", out)
    assert not unrounded, unrounded
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == "", f"processes left running: {leftover.stdout}"
    return out


def test_sandbox_story_completes(tmp_path: Path, prometheus_binaries: tuple[str, str], s3_server: S3Server) -> None:
    # The fixtures only assert that Prometheus and SeaweedFS are installed (failing under CI=true).
    out = run_sandbox(tmp_path)
    assert "local kubelet" in out


def test_sandbox_story_on_a_cluster_of_your_own(
    tmp_path: Path, cluster: LocalCluster, admin: Kubectl, prometheus_binaries: tuple[str, str]
) -> None:
    # "Your own cluster" here is the session's control plane, reached only through its kubeconfig.
    out = run_sandbox(tmp_path, "--kubeconfig", str(cluster.kubeconfig))
    assert f"your cluster at {cluster.url}" in out and "local kubelet" not in out
    assert admin.get("metricsendpoint", "sandbox") is None, "the story removes what it made on your cluster"
