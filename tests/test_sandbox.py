"""The README's first command: the sandbox story runs to completion and cleans up after itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.s3 import S3Server

pytestmark = pytest.mark.integration


def test_sandbox_story_completes(tmp_path: Path, prometheus_binaries: tuple[str, str], s3_server: S3Server) -> None:
    # The fixtures only assert that Prometheus and SeaweedFS are installed (failing under CI=true).
    result = subprocess.run([sys.executable, "-m", "retrain_operator.cli", "sandbox", "--workdir",
                             str(tmp_path / "sandbox"), "--timeout", "240"],
                            capture_output=True, text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    for step in ("trigger accuracy-drop: pending", "trigger accuracy-drop: firing", "training Job churn-retrain-",
                 "Succeeded: model", "/metadata.json", "status.model: version", "accuracy recovered",
                 "RetrainStarted", "RetrainSucceeded", "churn-gated decision: Wait (NotWorthRetraining)",
                 "The loop is complete"):
        assert step in out, f"{step!r} missing from the sandbox output:\n{out[-4000:]}"
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == "", f"processes left running: {leftover.stdout}"
