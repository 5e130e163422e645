"""End to end: the real operator process as the chart's ServiceAccount, the real control plane, the local kubelet,
Prometheus and S3.

kubectl applies the example policy; Prometheus already holds a history of low accuracy; the operator
must launch exactly one Job within one interval plus 2 s, the kubelet runs the real trainer, the
model lands in S3 and the policy's status, conditions and events tell the story.
"""

from __future__ import annotations

import time

import pytest

from tests.support.s3 import s3_client
from tests.support.stack import Stack, wait_for
from tests.test_jobs import assert_restricted

pytestmark = pytest.mark.integration


def test_low_accuracy_retrains_once_and_reports_the_new_model(stack: Stack) -> None:
    stack.push_accuracy(stack.model, [0.80] * 80)  # 20 minutes below 0.95 - 0.05
    policy = stack.example_policy()
    applied = stack.apply(policy)
    assert applied.returncode == 0, applied.stderr
    applied_at = time.monotonic()
    jobs = wait_for("the training Job", stack.jobs, timeout=60, log=stack.operator.log)
    latency = time.monotonic() - applied_at
    assert latency <= 30 + 2, f"Job created {latency:.1f}s after apply; the interval is 30s"
    assert len(jobs) == 1
    job = jobs[0]
    assert_restricted(job)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "RetrainPolicy"

    status = wait_for(
        "the retrain outcome", lambda: stack.status("churn").get("lastRetrain"), timeout=180, log=stack.operator.log
    )
    assert status["outcome"] == "Succeeded", (status, stack.operator.log()[-3000:])
    status = stack.status("churn")
    model = status["model"]
    assert status["lastRetrain"]["job"] == job["metadata"]["name"]
    assert status["lastRetrain"]["trigger"] == "accuracy-drop"
    assert status["lastRetrain"]["modelVersion"] == model["version"]
    assert 0.9 < model["score"] <= 1.0 and model["metric"] == "accuracy"
    bucket, key = model["uri"].removeprefix("s3://").split("/", 1)
    assert bucket == stack.bucket and key.startswith(f"churn/versions/{model['version']}/model.")
    head = s3_client(stack.s3).head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] > 0

    # The baseline follows the new model; accuracy is still low, but the cooldown holds the next retrain.
    wait_for(
        "a decision after the retrain",
        lambda: stack.status("churn")["lastDecision"]["reason"] == "CoolingDown",
        timeout=40,
        log=stack.operator.log,
    )
    status = stack.status("churn")
    assert status["triggers"][0]["threshold"] == pytest.approx(model["score"] - 0.05, abs=1e-6)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Training"]["reason"] == "JobSucceeded" and conditions["Training"]["status"] == "False"
    assert conditions["RetrainNeeded"]["status"] == "True" and conditions["Valid"]["status"] == "True"
    assert conditions["MetricsAvailable"]["status"] == "True"
    assert status["observedGeneration"] == 1 and status["phase"] == "Watching"
    assert len(stack.jobs()) == 1
    reasons = [e["reason"] for e in stack.events() if e["involvedObject"]["name"] == "churn"]
    assert {"RetrainStarted", "RetrainSucceeded", "CoolingDown"} <= set(reasons), reasons
    table = stack.kubectl("get", "retrainpolicies", "-n", stack.namespace).stdout
    assert "MODEL" in table and "PHASE" in table and "CoolingDown" in table and "Watching" in table
    # The path, not only the outcome: nothing failed and was retried, and the chart's RBAC refused nothing.
    log = stack.operator.log()
    for sign in ("Traceback", "Forbidden", " 403", "ERROR"):
        assert sign not in log, f"{sign!r} in the operator log:\n{log[-4000:]}"


def test_empty_nan_and_unreachable_metrics_launch_nothing(stack: Stack) -> None:
    stack.push_accuracy(f"{stack.model}-nan", [float("nan")] * 40)
    stack.push_accuracy(f"{stack.model}-low", [0.5] * 40)
    dead = {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "MetricsEndpoint",
        "metadata": {"name": f"{stack.namespace}-dead"},
        "spec": {"url": "http://127.0.0.1:9", "timeout": "2s"},
    }
    unreachable = stack.example_policy("unreachable", f"{stack.model}-low")
    unreachable["spec"]["metrics"]["endpoint"] = f"{stack.namespace}-dead"
    applied = stack.apply(
        dead,
        stack.example_policy("empty", f"{stack.model}-none"),
        stack.example_policy("nan", f"{stack.model}-nan"),
        unreachable,
    )
    assert applied.returncode == 0, applied.stderr
    for name, reason in (("empty", "NoData"), ("nan", "NotANumber"), ("unreachable", "Unreachable")):
        condition = wait_for(
            f"MetricsAvailable=False on {name}",
            lambda n=name: (
                stack.condition(n, "MetricsAvailable").get("status") == "False"
                and stack.condition(n, "MetricsAvailable")
            ),
            timeout=30,
            log=stack.operator.log,
        )
        assert condition["reason"] == reason, condition
        status = stack.status(name)
        assert status["phase"] == "Degraded" and status["lastDecision"]["reason"] == "MetricsUnavailable"
        assert "value" not in status["triggers"][0], "no value, never 0"
    assert stack.jobs() == []
    warnings = {e["involvedObject"]["name"] for e in stack.events() if e["type"] == "Warning"}
    assert {"empty", "nan", "unreachable"} <= warnings


def test_operator_killed_while_the_job_runs_catches_up_after_restart(stack: Stack) -> None:
    stack.cluster.hold_jobs()
    stack.push_accuracy(stack.model, [0.80] * 80)
    assert stack.apply(stack.example_policy()).returncode == 0
    wait_for("the training Job", stack.jobs, timeout=60, log=stack.operator.log)
    wait_for("activeJob in status", lambda: stack.status("churn").get("activeJob"), timeout=30, log=stack.operator.log)
    stack.operator.kill()
    stack.cluster.release_jobs()
    finished = wait_for(
        "the Job to finish while the operator is down",
        lambda: [
            j
            for j in stack.jobs()
            if any(
                c["type"] == "Complete" and c["status"] == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            )
        ],
        timeout=180,
    )
    assert len(finished) == 1
    assert "lastRetrain" not in stack.status("churn")
    stack.start_operator()
    last = wait_for(
        "status to catch up", lambda: stack.status("churn").get("lastRetrain"), timeout=60, log=stack.operator.log
    )
    assert last["outcome"] == "Succeeded" and last["job"] == finished[0]["metadata"]["name"]
    assert "activeJob" not in stack.status("churn")
    assert len(stack.jobs()) == 1
    assert len(stack.runs()) == 1


def test_invalid_policies_are_rejected_or_marked_and_others_carry_on(stack: Stack) -> None:
    bad_enum = stack.example_policy("bad-enum")
    bad_enum["spec"]["triggers"][0]["onMissingData"] = "Zero"
    rejected = stack.apply(bad_enum)
    assert rejected.returncode != 0
    assert "onMissingData" in rejected.stderr and "Zero" in rejected.stderr, rejected.stderr
    bad_duration = stack.example_policy("bad-duration")
    bad_duration["spec"]["evaluation"]["interval"] = "often"
    rejected = stack.apply(bad_duration)
    assert rejected.returncode != 0 and "spec.evaluation.interval" in rejected.stderr, rejected.stderr

    stack.cluster.hold_jobs()
    stack.push_accuracy(stack.model, [0.80] * 80)
    no_endpoint = stack.example_policy("no-endpoint")
    no_endpoint["spec"]["metrics"]["endpoint"] = "missing"
    bad_cron = stack.example_policy("bad-cron")
    bad_cron["spec"]["triggers"].append({"name": "nightly", "schedule": {"cron": "every night"}})
    rejected = stack.apply(bad_cron)  # the CRD's CEL rule: five fields
    assert rejected.returncode != 0 and "cron needs five fields" in rejected.stderr, rejected.stderr
    bad_cron["spec"]["triggers"][1]["schedule"]["cron"] = "61 25 * * *"  # five fields, no such minute or hour
    assert stack.apply(no_endpoint, bad_cron, stack.example_policy("good")).returncode == 0
    for name, field in (("no-endpoint", "spec.metrics.endpoint"), ("bad-cron", "spec.triggers[1].schedule.cron")):
        valid = wait_for(
            f"Valid=False on {name}",
            lambda n=name: stack.condition(n, "Valid").get("status") == "False" and stack.condition(n, "Valid"),
            timeout=30,
            log=stack.operator.log,
        )
        assert valid["message"].startswith(field), valid
        assert stack.status(name)["phase"] == "Invalid"
    jobs = wait_for("the good policy's Job", stack.jobs, timeout=30, log=stack.operator.log)
    assert [j["metadata"]["ownerReferences"][0]["name"] for j in jobs] == ["good"]
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in stack.events()}
    assert {("no-endpoint", "InvalidSpec"), ("bad-cron", "InvalidSpec")} <= reasons


def test_two_replicas_with_leader_election_launch_one_job_and_hand_over(stack: Stack) -> None:
    stack.operator.stop()
    replicas = [
        stack.start_operator("--leader-election", "--lease-seconds", "3", log=f"replica-{i}.log") for i in range(2)
    ]
    stack.cluster.hold_jobs()
    stack.push_accuracy(stack.model, [0.80] * 80)
    assert stack.apply(stack.example_policy()).returncode == 0
    wait_for("the training Job", stack.jobs, timeout=60, log=lambda: replicas[0].log() + replicas[1].log())
    holder = stack.get("leases", "retrain-operator", namespace="retrain-system")["spec"]["holderIdentity"]
    leader = next(r for r in replicas if r.process is not None and f"-{r.process.pid}-" in holder)
    follower = next(r for r in replicas if r is not leader)
    leader.kill()
    stack.cluster.release_jobs()
    last = wait_for(
        "the follower to take over and record the outcome",
        lambda: stack.status("churn").get("lastRetrain"),
        timeout=90,
        log=follower.log,
    )
    assert last["outcome"] == "Succeeded"
    assert len(stack.jobs()) == 1
    assert "started Job" not in follower.log() and "took over Lease retrain-system/retrain-operator" in follower.log()
    new_holder = stack.get("leases", "retrain-operator", namespace="retrain-system")["spec"]["holderIdentity"]
    assert new_holder != holder and follower.process is not None and f"-{follower.process.pid}-" in new_holder
    follower.stop()
    # The Lease is the chart's one name in the operator namespace, shared by the session: leave none behind.
    assert stack.kubectl("delete", "lease", "retrain-operator", "-n", "retrain-system").returncode == 0


def test_candidate_then_rollback_with_the_real_trainer(stack: Stack) -> None:
    stack.push_accuracy(stack.model, [0.80] * 80)
    assert stack.apply(stack.example_policy()).returncode == 0
    first = wait_for("the first model", lambda: stack.status("churn").get("model"), timeout=120, log=stack.operator.log)
    # Retrain again at once on the same data: the challenger cannot beat the champion, so it stays a candidate.
    annotate = stack.kubectl(
        "annotate", "retrainpolicy", "churn", "-n", stack.namespace, "retrain.dev/force-retrain=again"
    )
    assert annotate.returncode == 0, annotate.stderr
    second = wait_for(
        "the second run",
        lambda: (
            (stack.status("churn").get("lastRetrain") or {}).get("modelVersion") not in (None, first["version"])
            and stack.status("churn")["lastRetrain"]
        ),
        timeout=120,
        log=stack.operator.log,
    )
    assert second["promoted"] is False and "candidate" in second["promotionReason"], second
    assert stack.status("churn")["model"]["version"] == first["version"]
    # Roll the champion "back" to the candidate: the promote Job moves the pointer and status follows.
    candidate = second["modelVersion"]
    annotate = stack.kubectl(
        "annotate", "retrainpolicy", "churn", "-n", stack.namespace, f"retrain.dev/rollback-to={candidate}"
    )
    assert annotate.returncode == 0, annotate.stderr
    rollback = stack.rollback_outcome("churn")
    assert rollback["outcome"] == "Succeeded", rollback
    assert stack.status("churn")["model"]["version"] == candidate
    pointer = s3_client(stack.s3).get_object(Bucket=stack.bucket, Key="churn/champion.json")["Body"].read()
    assert f'"{candidate}"' in pointer.decode()
    assert len(stack.jobs()) == 3
