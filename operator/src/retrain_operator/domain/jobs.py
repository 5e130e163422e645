"""The training Job: built from the policy's restricted template, and read back when it ends.

The Job is the only thing a tenant's policy makes the cluster run, so it is built here field by
field from a small template rather than accepted as a pod spec: no service account of the tenant's
choosing, no host access, no privilege, no volumes but a scratch ``emptyDir``; it passes the
``restricted`` Pod Security profile with a read-only root filesystem.

Its name is derived from the policy's uid and its retrain sequence number, so a crash between
creating the Job and recording it can never lead to a second Job for the same decision: the retry
computes the same name and adopts the Job it finds.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from retrain_operator.domain.api import API_VERSION, ModelStoreSpec, PolicySpec, StoreCredentials, TrainingSpec
from retrain_operator.settings.estimators import ALLOWLIST_ENV, DEFAULT_ALLOWLIST
from retrain_operator.settings.training import PromoteConfig, RunSpec, TrainerConfig

MANAGED_BY = "retrain-operator"
LABEL_POLICY = "retrain.dev/policy"
LABEL_POLICY_UID = "retrain.dev/policy-uid"
LABEL_MODEL = "retrain.dev/model"
ANNOTATION_TRIGGER = "retrain.dev/trigger"
ANNOTATION_SEQUENCE = "retrain.dev/sequence"
ANNOTATION_ACTION = "retrain.dev/action"
ANNOTATION_VERSION = "retrain.dev/version"
TERMINATION_LOG = "/dev/termination-log"
SCRATCH = "/tmp"
NON_ROOT_UID = 65532
MAX_MESSAGE = 4096
DEFAULT_REQUESTS = {"cpu": "500m", "memory": "512Mi"}


def pod_requests(training: TrainingSpec) -> dict[str, str]:
    """The training container's requests: the policy's own, else the defaults for what it sets no limit on.

    Kubernetes defaults a missing request to its limit; a default request above a small limit would be refused.
    """
    if training.requests:
        return dict(training.requests)
    return {name: value for name, value in DEFAULT_REQUESTS.items() if name not in training.limits}


@dataclass(frozen=True)
class PolicyRef:
    """Identity of the policy a Job belongs to."""

    namespace: str
    name: str
    uid: str


def job_name(policy: PolicyRef, sequence: int) -> str:
    """Deterministic: the same policy and sequence number always give the same name (at most 63 chars)."""
    digest = hashlib.sha256(f"{policy.uid}/{sequence}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]", "-", policy.name.lower())[:40].strip("-") or "policy"
    return f"{stem}-retrain-{digest}"


def trainer_config(
    spec: PolicySpec, *, store: ModelStoreSpec, policy: PolicyRef, job: str, triggers: Sequence[str]
) -> TrainerConfig:
    """What the built-in trainer reads from RETRAIN_TRAINER_CONFIG: the policy's settings, as parsed, and how
    to reach its ModelStore, as the admin wrote it."""
    builtin = spec.training.builtin
    assert builtin is not None
    return TrainerConfig(
        model=spec.model,
        builtin=builtin,
        promotion=spec.promotion,
        store=store.connection,
        run=_run_spec(policy, job=job, trigger=",".join(triggers)),
    )


def store_credentials(spec: PolicySpec, store: ModelStoreSpec) -> StoreCredentials | None:
    """The Secret (in the policy's namespace) the Job's S3 keys come from: the policy's own name, else the store's."""
    own = spec.model.registry.credentials_secret
    if own is None:
        return store.credentials
    return replace(store.credentials, name=own) if store.credentials else StoreCredentials(name=own)


def _run_spec(policy: PolicyRef, *, job: str, trigger: str) -> RunSpec:
    return RunSpec(policy=f"{policy.namespace}/{policy.name}", policy_uid=policy.uid, job=job, trigger=trigger)


def build_job(
    spec: PolicySpec,
    *,
    policy: PolicyRef,
    sequence: int,
    triggers: Sequence[str],
    trainer_image: str,
    service_account: str,
    store: ModelStoreSpec,
    promote: str | None = None,
    estimator_allowlist: Sequence[str] = DEFAULT_ALLOWLIST,
) -> dict[str, Any]:
    """The Job manifest for one retrain, or (``promote``) for moving the champion pointer to that version.

    ``store`` is the policy's ModelStore: its endpoint and region reach the Job as ``AWS_ENDPOINT_URL`` and
    ``AWS_DEFAULT_REGION`` (for images of a tenant's own) and in the trainer's configuration.
    The built-in trainer gets the admin's estimator allowlist from the operator (the list the policy was
    checked against), so the two can never disagree and a tenant cannot widen it (the name is reserved).
    """
    name = job_name(policy, sequence)
    training = spec.training
    env: list[dict[str, Any]] = [
        {"name": "TERMINATION_MESSAGE_PATH", "value": TERMINATION_LOG},
        {"name": "HOME", "value": SCRATCH},
        {"name": "TMPDIR", "value": SCRATCH},
    ]
    credentials = store_credentials(spec, store)
    if credentials is not None:
        for variable, key in (
            ("AWS_ACCESS_KEY_ID", credentials.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key_key),
        ):
            env.append({"name": variable, "valueFrom": {"secretKeyRef": {"name": credentials.name, "key": key}}})
    connection = store.connection
    if connection.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": connection.endpoint})
    env.append({"name": "AWS_DEFAULT_REGION", "value": connection.region})
    if promote is not None or training.builtin is not None:
        env.append({"name": ALLOWLIST_ENV, "value": ",".join(estimator_allowlist)})
    if promote is not None:
        # A rollback runs the trainer's promote command on the registry alone, whatever trains the policy.
        promote_config = PromoteConfig(
            model=spec.model, store=connection, run=_run_spec(policy, job=name, trigger="rollback")
        )
        env.append({"name": "RETRAIN_TRAINER_CONFIG", "value": json.dumps(promote_config.to_dict(), sort_keys=True)})
        command = ["retrain-operator", "train", "promote", "--version", promote]
        args: list[str] = []
    elif training.builtin is not None:
        config = trainer_config(spec, store=store, policy=policy, job=name, triggers=triggers)
        env.append({"name": "RETRAIN_TRAINER_CONFIG", "value": json.dumps(config.to_dict(), sort_keys=True)})
        requested = {"requests": pod_requests(training), "limits": dict(training.limits)}
        env.append({"name": "RETRAIN_RESOURCES", "value": json.dumps(requested, sort_keys=True)})
        command = ["retrain-operator", "train"]
        args = []
    else:
        command = list(training.command)
        args = list(training.args)
    for var in training.env:
        if var.secret_name is not None:
            env.append(
                {"name": var.name, "valueFrom": {"secretKeyRef": {"name": var.secret_name, "key": var.secret_key}}}
            )
        else:
            env.append({"name": var.name, "value": var.value or ""})
    resources: dict[str, Any] = {}
    if pod_requests(training):
        resources["requests"] = pod_requests(training)
    if training.limits:
        resources["limits"] = dict(training.limits)
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "retrain-job",
        LABEL_POLICY: policy.name[:63].rstrip("-."),
        LABEL_POLICY_UID: policy.uid,
        LABEL_MODEL: spec.model.name,
    }
    annotations = {
        ANNOTATION_TRIGGER: ",".join(triggers),
        ANNOTATION_SEQUENCE: str(sequence),
        ANNOTATION_ACTION: "Promote" if promote is not None else "Train",
    }
    if promote is not None:
        annotations[ANNOTATION_VERSION] = promote
    container = {
        "name": "trainer",
        "image": trainer_image if promote is not None else training.image or trainer_image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "env": env,
        "resources": resources,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": policy.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "RetrainPolicy",
                    "name": policy.name,
                    "uid": policy.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": training.backoff_limit,
            "activeDeadlineSeconds": max(1, int(training.deadline)),
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": service_account,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "hostNetwork": False,
                    "hostPID": False,
                    "hostIPC": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": NON_ROOT_UID,
                        "runAsGroup": NON_ROOT_UID,
                        "fsGroup": NON_ROOT_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }


# Waiting reasons a container does not leave by itself: each needs a person (a Secret to create, an image
# to fix). ContainerCreating and PodInitializing are progress, not causes.
STUCK_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)
_PROGRESS = frozenset({"ContainerCreating", "PodInitializing"})


@dataclass(frozen=True)
class PodCause:
    """What a training pod itself says went wrong: a waiting reason, or how its container terminated.

    ``since`` is when the pod started waiting (its ``startTime``, else its creation), for the bounded wait.
    """

    pod: str
    reason: str
    message: str
    exit_code: int | None = None
    waiting: bool = False
    since: datetime | None = None

    def describe(self) -> str:
        if self.waiting:
            return f"pod {self.pod} is waiting: {self.reason}: {self.message}".rstrip(": ")
        code = f"exit code {self.exit_code}" if self.exit_code is not None else "no exit code"
        return f"pod {self.pod} {self.reason} ({code})" + (f": {self.message}" if self.message else "")


def pod_cause(pods: Sequence[Mapping[str, Any]]) -> PodCause | None:
    """The newest pod's own account of a failure, or None when it says nothing is wrong (yet).

    In order: a container waiting for a reason other than progress; a container that terminated with
    a non-zero exit code (its reason, termination message and code); the pod's own failure (evicted,
    deadline); a pod the scheduler cannot place.
    """
    if not pods:
        return None
    pod = max(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = str(meta.get("name") or "")
    since = _parse_time(status.get("startTime")) or _parse_time(meta.get("creationTimestamp"))
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting")
        if waiting and waiting.get("reason") and waiting["reason"] not in _PROGRESS:
            return PodCause(name, str(waiting["reason"]), _flat(waiting.get("message")), waiting=True, since=since)
        term = state.get("terminated")
        if term and term.get("exitCode") not in (0, None):
            return PodCause(name, str(term.get("reason") or "Error"), _flat(term.get("message")), term.get("exitCode"))
    if status.get("phase") == "Failed" and status.get("reason"):
        return PodCause(name, str(status["reason"]), _flat(status.get("message")))
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = str(condition.get("reason") or "Unschedulable")
            return PodCause(name, reason, _flat(condition.get("message")), waiting=True, since=since)
    return None


def _flat(text: Any) -> str:
    return " ".join(str(text or "").split())[:MAX_CAUSE]


MAX_CAUSE = 400


@dataclass(frozen=True)
class JobOutcome:
    """What a Job and its pods say about a retrain: finished or not, the trainer's result, and the cause of a failure.

    ``reason`` is the failure's CamelCase cause in the most specific words there are: the trainer's
    (``DataNotFound``), else the pod's (``CreateContainerConfigError``, ``OOMKilled``), else the Job's
    (``BackoffLimitExceeded``). ``stuck`` says the Job is still running but its pod has waited in an
    error state past the bounded wait: the operator records it as failed and ends it.
    """

    finished: bool
    succeeded: bool
    finished_at: datetime | None
    result: Mapping[str, Any]
    message: str
    reason: str | None = None
    exit_code: int | None = None
    stuck: bool = False


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def read_outcome(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    now: datetime | None = None,
    stuck_after: float | None = None,
) -> JobOutcome:
    """Read a Job's state, the result its trainer left in the termination message, and the pod's cause.

    The newest terminated pod's message wins. A message that is not JSON (a custom image, or logs
    used as fallback) is kept, shortened, as the outcome's message. A Job still running whose newest
    pod has waited in one of :data:`STUCK_REASONS` for ``stuck_after`` seconds (from ``now``) is
    reported finished and failed with ``stuck`` set: a missing Secret would otherwise keep the policy
    Training until the Job's deadline, with nothing but the deadline as the reason.
    """
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    finished_condition = conditions.get("Complete") or conditions.get("Failed")
    cause = pod_cause(pods)
    if finished_condition is None:
        if (
            cause is not None
            and cause.waiting
            and cause.reason in STUCK_REASONS
            and now is not None
            and stuck_after is not None
            and cause.since is not None
            and (now - cause.since).total_seconds() >= stuck_after
        ):
            waited = int((now - cause.since).total_seconds())
            message = f"{cause.describe()}; ended the Job after {waited}s of waiting (the operator's stuck-pod timeout)"
            return JobOutcome(True, False, now, {}, message, reason=cause.reason, stuck=True)
        return JobOutcome(False, False, None, {}, "running")
    succeeded = "Complete" in conditions
    finished_at = _parse_time(status.get("completionTime")) or _parse_time(finished_condition.get("lastTransitionTime"))
    result: dict[str, Any] = {}
    message = ""
    exit_code: int | None = None
    terminated = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                terminated.append((term.get("finishedAt") or "", term))
    if terminated:
        terminated.sort(key=lambda item: item[0])
        last = terminated[-1][1]
        exit_code = last.get("exitCode") if isinstance(last.get("exitCode"), int) else None
        raw = str(last.get("message") or "")[:MAX_MESSAGE]
        try:
            parsed = json.loads(raw.strip().splitlines()[-1]) if raw.strip() else {}
        except (json.JSONDecodeError, IndexError):
            parsed = {}
        if isinstance(parsed, dict):
            result = parsed
        message = str(result.get("message") or "") if result else " ".join(raw.split())[:300]
    job_reason = str(finished_condition.get("reason") or ("Complete" if succeeded else "Failed"))
    reason: str | None = None
    if not succeeded or result.get("outcome") == "Failed":
        reason = str(result.get("reason") or "") or (cause.reason if cause else "") or job_reason
        if not result.get("reason") and cause is not None:
            # The pod's own words (a missing Secret, an image that cannot be pulled, an OOM kill) say more
            # than the Job's BackoffLimitExceeded; both are kept.
            message = f"{cause.describe()}; Job {job_reason}"
            if exit_code is None:
                exit_code = cause.exit_code
    if not message:
        if succeeded:
            message = "training Job completed"
        else:
            message = f"training Job failed: {job_reason}"
            if finished_condition.get("message"):
                message += f" ({finished_condition['message']})"
    return JobOutcome(
        True,
        succeeded and result.get("outcome", "Succeeded") == "Succeeded",
        finished_at,
        result,
        message,
        reason=reason,
        exit_code=exit_code,
    )


def trimmed_jobs(jobs: Sequence[Mapping[str, Any]], *, successful: int, failed: int, keep: str | None) -> list[str]:
    """Names of finished Jobs beyond the history limits, oldest first; the ``keep`` Job is never trimmed."""
    done: dict[str, list[tuple[str, str]]] = {"Complete": [], "Failed": []}
    for job in jobs:
        name = job["metadata"]["name"]
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("type") in done and cond.get("status") == "True":
                created = job["metadata"].get("creationTimestamp") or ""
                done[cond["type"]].append((created, name))
    out: list[str] = []
    for kind, limit in (("Complete", successful), ("Failed", failed)):
        ordered = sorted(done[kind])
        out += [name for _, name in ordered[: max(0, len(ordered) - limit)] if name != keep]
    return out
