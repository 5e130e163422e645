"""Budgets end to end: the real operator process, the real control plane, the local kubelet and Prometheus.

Two policies share a RetrainBudget with room for one more run and both fire: exactly one Job, the
other reports OverBudget and retrains once the window rolls over. And a Job created just before a
crash (no charge recorded) is charged exactly once, however many times the operator restarts.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from retrain_operator.domain.budget import window_bounds
from retrain_operator.domain.jobs import LABEL_POLICY_UID, PolicyRef, job_name
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration
WINDOW = 30


def budget(stack: Stack, runs: int) -> dict[str, Any]:
    return {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainBudget",
        "metadata": {"name": "team", "namespace": stack.namespace},
        "spec": {"window": f"{WINDOW}s", "limits": {"runs": runs}, "prices": {"cpuHour": 0.05}},
    }


def shared(stack: Stack, name: str) -> dict[str, Any]:
    body = stack.example_policy(name, f"{stack.model}-{name}")
    body["spec"]["evaluation"]["interval"] = "2s"
    body["spec"]["decision"]["budget"] = "team"
    return body


def ledger(stack: Stack) -> list[dict[str, Any]]:
    return list(((stack.get("retrainbudgets", "team") or {}).get("status") or {}).get("ledger") or [])


def test_two_policies_share_the_last_run_then_the_window_rolls(stack: Stack) -> None:
    # Start right after a window boundary so the race and the refusal both happen inside one window.
    start, end = window_bounds(WINDOW, datetime.now(UTC))
    if (end - start).total_seconds() - (time.time() - start.timestamp()) < 20:
        time.sleep(max(0.0, end.timestamp() - time.time()) + 0.5)
    for name in ("left", "right"):
        stack.push_accuracy(f"{stack.model}-{name}", [0.80] * 80)
    stack.cluster.hold_jobs()
    assert stack.apply(budget(stack, 1), shared(stack, "left"), shared(stack, "right")).returncode == 0
    jobs = wait_for("one Job", stack.jobs, timeout=30, log=stack.operator.log)
    decided = wait_for(
        "both decisions",
        lambda: (
            all(
                stack.status(n).get("lastDecision", {}).get("reason")
                in ("TrainingInProgress", "TriggerFiring", "OverBudget")
                for n in ("left", "right")
            )
            and [stack.status(n)["lastDecision"]["reason"] for n in ("left", "right")]
        ),
        timeout=30,
        log=stack.operator.log,
    )
    assert len(stack.jobs()) == 1 and "OverBudget" in decided, decided
    loser = ("left", "right")[decided.index("OverBudget")]
    winner = jobs[0]["metadata"]["ownerReferences"][0]["name"]
    assert winner != loser
    assert "RetrainBudget team: runs 1+1 > 1" in stack.status(loser)["lastDecision"]["message"]
    assert [c["key"] for c in ledger(stack)] == [f"{stack.namespace}/{jobs[0]['metadata']['name']}"]
    assert any(e["reason"] == "OverBudget" and e["involvedObject"]["name"] == loser for e in stack.events())
    stack.cluster.release_jobs()

    both = wait_for(
        "the loser's Job after the window rolls",
        lambda: len(stack.jobs()) == 2 and stack.jobs(),
        timeout=WINDOW + 20,
        log=stack.operator.log,
    )
    second = next(j for j in both if j["metadata"]["ownerReferences"][0]["name"] == loser)
    created = datetime.fromisoformat(second["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert created >= end, "the second Job must belong to a later window"
    settled = wait_for(
        "the first charge settled",
        lambda: [c for c in ledger(stack) if c["state"] == "Settled"],
        timeout=60,
        log=stack.operator.log,
    )
    assert len(settled) >= 1
    # The path, not only the outcome: no budget write failed and was retried a cycle later.
    assert "Traceback" not in stack.operator.log(), stack.operator.log()[-4000:]


def test_job_created_before_a_crash_is_charged_once_across_restarts(stack: Stack) -> None:
    stack.operator.stop()
    stack.cluster.hold_jobs()
    stack.push_accuracy(stack.model, [0.80] * 80)
    body = shared(stack, "churn")
    body["spec"]["metrics"]["selector"] = {"model": stack.model}
    assert stack.apply(budget(stack, 5), body).returncode == 0
    uid = stack.get("retrainpolicies", "churn")["metadata"]["uid"]
    name = job_name(PolicyRef(stack.namespace, "churn", uid), 0)
    # What a crash between creating the Job and recording anything leaves behind.
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": stack.namespace,
            "labels": {LABEL_POLICY_UID: uid, "retrain.dev/policy": "churn"},
            "ownerReferences": [
                {
                    "apiVersion": "retrain.dev/v1alpha1",
                    "kind": "RetrainPolicy",
                    "name": "churn",
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": stack.training_account,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "x",
                            "command": ["python", "-c", "pass"],
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                        }
                    ],
                }
            }
        },
    }
    assert stack.apply(job).returncode == 0
    for _ in range(2):
        stack.start_operator()
        wait_for(
            "the Job adopted",
            lambda: stack.status("churn").get("activeJob", {}).get("name") == name,
            timeout=30,
            log=stack.operator.log,
        )
        wait_for("the charge", lambda: ledger(stack), timeout=30, log=stack.operator.log)
        assert "Traceback" not in stack.operator.log(), stack.operator.log()[-4000:]
        stack.operator.kill()
        assert [c["key"] for c in ledger(stack)] == [f"{stack.namespace}/{name}"]
    assert len(stack.jobs()) == 1
    stack.start_operator()
