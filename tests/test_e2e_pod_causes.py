"""A training Job that cannot start shows why: the pod's own cause in status and event, within a bounded wait.

Real API server, Job controller and operator process; the local kubelet reports a missing Secret as a
kubelet does (waiting, CreateContainerConfigError, ``secret "x" not found``).
"""

from __future__ import annotations

import pytest

from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def test_a_job_failing_for_a_missing_secret_shows_the_cause_in_status_and_event(stack: Stack) -> None:
    stack.operator.stop()
    stack.start_operator("--stuck-pod-timeout", "5", log="operator-stuck.log")
    policy = stack.example_policy("no-secret")
    policy["spec"]["model"]["registry"]["credentialsSecret"] = "no-such-secret"
    policy["metadata"]["annotations"] = {"retrain.dev/force-retrain": "1"}
    assert stack.apply(policy).returncode == 0

    def failed() -> dict[str, object] | None:
        last = stack.status("no-secret").get("lastRetrain") or {}
        return last if last.get("outcome") == "Failed" else None

    last = wait_for("the stuck Job recorded as failed", failed, timeout=120, log=stack.operator.log)
    assert last["reason"] == "CreateContainerConfigError", last
    assert 'secret "no-such-secret" not found' in str(last["message"]), last
    events = [e for e in stack.events() if e["reason"] == "RetrainFailed"]
    assert any('secret "no-such-secret" not found' in e["message"] for e in events), events
    assert any("CreateContainerConfigError" in e["message"] for e in events), events
    assert stack.status("no-secret")["phase"] != "Training"
    wait_for("the stuck Job deleted", lambda: not stack.jobs() or None, timeout=60, log=stack.operator.log)
