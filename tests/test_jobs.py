"""The training Job: restricted Pod Security field by field, official schema, deterministic names, outcomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest

from retrain_operator.domain.api import parse_policy_spec
from retrain_operator.domain.jobs import PolicyRef, build_job, job_name, read_outcome, trimmed_jobs
from tests.policies import policy, store

REF = PolicyRef(namespace="team-a", name="churn", uid="0b6c5f0e-1111-2222-3333-444455556666")


def make_job(**spec: Any) -> dict[str, Any]:
    return build_job(
        parse_policy_spec(policy(**spec)["spec"]),
        store=store(),
        policy=REF,
        sequence=3,
        triggers=["accuracy-drop"],
        trainer_image="retrain-operator:test",
        service_account="retrain-trainer",
    )


def assert_restricted(job: dict[str, Any]) -> None:
    """The Pod Security Standards 'restricted' profile (v1.30), check by check."""
    pod = job["spec"]["template"]["spec"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"].get("runAsUser", 1) != 0
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= {
            "emptyDir",
            "configMap",
            "secret",
            "projected",
            "downwardAPI",
            "persistentVolumeClaim",
            "ephemeral",
            "csi",
        }, volume
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0
        assert sc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert sc["readOnlyRootFilesystem"] is True
        assert "hostPort" not in json.dumps(container.get("ports", []))
        assert not sc.get("procMount") and not sc.get("windowsOptions", {}).get("hostProcess")


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {
            "training": {
                "image": "example/custom:1",
                "command": ["python", "train.py"],
                "args": ["--fast"],
                "env": [{"name": "TOKEN", "secretKeyRef": {"name": "tok", "key": "value"}}],
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"nvidia.com/gpu": "1"}},
            }
        },
    ],
)
def test_job_is_restricted_and_valid(spec: dict[str, Any]) -> None:
    job = make_job(**spec)
    assert_restricted(job)
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_job_wiring() -> None:
    job = make_job()
    meta = job["metadata"]
    assert meta["name"] == job_name(REF, 3) and len(meta["name"]) <= 63
    assert meta["ownerReferences"][0] == {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainPolicy",
        "name": "churn",
        "uid": REF.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "retrain-trainer" and pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["command"] == ["retrain-operator", "train"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    config = json.loads(env["RETRAIN_TRAINER_CONFIG"]["value"])
    assert config["run"] == {
        "policy": "team-a/churn",
        "policyUid": REF.uid,
        "job": meta["name"],
        "trigger": "accuracy-drop",
    }
    assert config["builtin"]["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert job["spec"]["activeDeadlineSeconds"] == 3600 and job["spec"]["backoffLimit"] == 0


def test_names_are_deterministic_and_distinct() -> None:
    assert job_name(REF, 1) == job_name(REF, 1)
    assert job_name(REF, 1) != job_name(REF, 2)
    other = PolicyRef(namespace="team-a", name="churn", uid="another-uid")
    assert job_name(other, 1) != job_name(REF, 1)
    long = PolicyRef(namespace="n", name="x" * 253, uid="u")
    assert len(job_name(long, 0)) <= 63


Finished = tuple[dict[str, Any], list[dict[str, Any]]]


def _finished(kind: str, message: str | None, finished_at: str = "2026-11-27T10:00:00Z") -> Finished:
    job = {
        "metadata": {"name": "j"},
        "status": {"completionTime": finished_at, "conditions": [{"type": kind, "status": "True", "reason": "X"}]},
    }
    pods = [
        {"status": {"containerStatuses": [{"state": {"terminated": {"finishedAt": finished_at, "message": message}}}]}}
    ]
    return job, pods


def test_outcome_reads_the_termination_message() -> None:
    result = {"outcome": "Succeeded", "version": "v1", "score": 0.97, "metric": "accuracy"}
    outcome = read_outcome(*_finished("Complete", json.dumps(result)))
    assert outcome.finished and outcome.succeeded and outcome.result["score"] == 0.97
    failed = read_outcome(
        *_finished(
            "Failed",
            json.dumps({"outcome": "Failed", "reason": "MissingColumn", "message": "column 'label' not found"}),
        )
    )
    assert failed.finished and not failed.succeeded and failed.message == "column 'label' not found"
    garbage = read_outcome(*_finished("Failed", "Traceback (most recent call last):\n boom"))
    assert not garbage.succeeded and "Traceback" in garbage.message
    running = read_outcome({"status": {"active": 1}}, [])
    assert not running.finished


def test_trimming_keeps_the_newest_within_limits() -> None:
    def job(name: str, kind: str, created: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "creationTimestamp": created},
            "status": {"conditions": [{"type": kind, "status": "True"}]},
        }

    jobs = [
        job("s1", "Complete", "1"),
        job("s2", "Complete", "2"),
        job("s3", "Complete", "3"),
        job("f1", "Failed", "1"),
        job("f2", "Failed", "2"),
        {"metadata": {"name": "running"}, "status": {}},
    ]
    assert trimmed_jobs(jobs, successful=2, failed=1, keep=None) == ["s1", "f1"]
    assert trimmed_jobs(jobs, successful=0, failed=0, keep="s3") == ["s1", "s2", "f1", "f2"]


@pytest.mark.parametrize(
    ("resources", "requests"),
    [
        ({}, {"cpu": "500m", "memory": "512Mi"}),
        ({"limits": {"memory": "256Mi"}}, {"cpu": "500m"}),  # Kubernetes defaults the memory request to its limit
        ({"limits": {"cpu": "250m", "memory": "256Mi"}}, None),
        ({"requests": {"cpu": "2"}, "limits": {"cpu": "4"}}, {"cpu": "2"}),
    ],
)
def test_default_requests_never_exceed_the_policys_limits(
    resources: dict[str, Any], requests: dict[str, str] | None
) -> None:
    job = make_job(training={"image": "t:1", "command": ["train"], "resources": resources})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"].get("requests") == requests
    assert container["resources"].get("limits") == resources.get("limits")


NOW_JOB = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _pod(state: dict[str, Any], *, started: str = "2026-11-27T11:50:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": "p-1", "creationTimestamp": started},
        "status": {"startTime": started, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


MISSING_SECRET = {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "churn-s3" not found'}}


def test_a_pod_stuck_on_a_missing_secret_ends_the_job_with_that_cause() -> None:
    running = {"status": {"active": 1}}
    early = read_outcome(running, [_pod(MISSING_SECRET)], now=NOW_JOB, stuck_after=3600)
    assert not early.finished, "within the bounded wait the Job keeps running"
    stuck = read_outcome(running, [_pod(MISSING_SECRET)], now=NOW_JOB, stuck_after=300)
    assert (stuck.finished, stuck.succeeded, stuck.stuck, stuck.reason) == (
        True,
        False,
        True,
        "CreateContainerConfigError",
    )
    assert 'secret "churn-s3" not found' in stuck.message and "600s" in stuck.message
    creating = _pod({"waiting": {"reason": "ContainerCreating"}})
    assert not read_outcome(running, [creating], now=NOW_JOB, stuck_after=1).finished


def test_a_failed_job_carries_the_pods_own_cause() -> None:
    failed = {
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff"}]
        }
    }
    oom = _pod({"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-27T11:55:00Z"}})
    outcome = read_outcome(failed, [oom])
    assert (outcome.reason, outcome.exit_code) == ("OOMKilled", 137)
    assert "OOMKilled (exit code 137)" in outcome.message and "BackoffLimitExceeded" in outcome.message
    waiting = read_outcome(failed, [_pod(MISSING_SECRET)])
    assert waiting.reason == "CreateContainerConfigError" and "churn-s3" in waiting.message
    trainer = _pod(
        {
            "terminated": {
                "exitCode": 3,
                "reason": "Error",
                "finishedAt": "2026-11-27T11:55:00Z",
                "message": '{"outcome": "Failed", "reason": "DataNotFound", "message": "no data"}',
            }
        }
    )
    said = read_outcome(failed, [trainer])
    assert (said.reason, said.exit_code, said.message) == ("DataNotFound", 3, "no data")
    bare = read_outcome(failed, [])
    assert bare.reason == "BackoffLimitExceeded"
