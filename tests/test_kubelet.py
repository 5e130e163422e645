"""The local kubelet on the real control plane: the real Job controller and scheduler, this node's processes.

Each test runs a :class:`LocalKubelet` on an event loop of its own (a thread), so the test can block on
kubectl while the kubelet works, and keeps to a namespace of its own. Every wait polls with a deadline.
The tests that end a Job by failure let both of its Pods fail at once (``parallelism: 2``): the real Job
controller waits 10 s before it replaces a failed Pod, which would make a sequential retry slow to test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sandbox.controlplane import ControlPlane, client_certificate
from sandbox.kubelet import (
    Condition,
    ContainerState,
    LocalKubelet,
    condition_list,
    expand,
    live_processes,
    pod_phase,
    quantity,
)
from tests.support.cluster import Kubectl

pytestmark = pytest.mark.integration

NODE = "kubelet-test"
# The kubelets of these tests register tainted Nodes, and these tests' Pods tolerate the taint: the
# session's own node ("local", which runs the end-to-end tests' Jobs) and these never take each other's Pods.
TAINT = {"key": "retrain.dev/kubelet-test", "effect": "NoSchedule"}
TOLERATION = {"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
T = TypeVar("T")
StartKubelet = Callable[..., contextlib.AbstractContextManager[LocalKubelet]]


# ---------------------------------------------------------------------------------------------
# Running a kubelet


@contextlib.contextmanager
def running(kubelet: LocalKubelet) -> Iterator[LocalKubelet]:
    """The kubelet on an event loop in a thread of its own, until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"kubelet-{kubelet.node_name}", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(kubelet.__aenter__(), loop).result(timeout=30)
        try:
            yield kubelet
        finally:
            asyncio.run_coroutine_threadsafe(kubelet.__aexit__(None, None, None), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def node_credentials(plane: ControlPlane, node: str) -> tuple[Path, Path]:
    """A kubelet's client certificate: ``system:node:<node>`` in ``system:nodes``."""
    assert plane.pki is not None
    return client_certificate(plane.pki, f"test-kubelet-{node}", user=f"system:node:{node}", groups=["system:nodes"])


@pytest.fixture(scope="session")
def local_credentials(control_plane: ControlPlane) -> tuple[Path, Path]:
    return node_credentials(control_plane, NODE)


@pytest.fixture
def start_kubelet(control_plane: ControlPlane, local_credentials: tuple[Path, Path], tmp_path: Path) -> StartKubelet:
    """``with start_kubelet(**attributes) as kubelet:``; attributes such as ``lease_renew_interval`` shorten waits."""

    def start(
        *, node_name: str = NODE, gate: Callable[[dict[str, Any]], Any] | None = None, **attributes: float
    ) -> contextlib.AbstractContextManager[LocalKubelet]:
        assert control_plane.pki is not None
        cert, key = local_credentials if node_name == NODE else node_credentials(control_plane, node_name)
        kubelet = LocalKubelet(
            server=control_plane.url,
            ca=control_plane.pki.ca_cert,
            cert=cert,
            key=key,
            workdir=tmp_path / "pods",
            node_name=node_name,
            env_overrides={"S3_ENDPOINT": "http://127.0.0.1:1"},
            gate=gate,
        )
        kubelet.register_with_taints = (TAINT,)
        for name, value in attributes.items():
            assert hasattr(kubelet, name), name
            setattr(kubelet, name, value)
        return running(kubelet)

    return start


@pytest.fixture
def kubelet(start_kubelet: StartKubelet) -> Iterator[LocalKubelet]:
    # Retrying a missing Secret, and restarting a crashed container, after 0.3 s instead of 10 s keeps the
    # tests short; nothing else differs from a real kubelet's defaults.
    with start_kubelet(config_retry_interval=0.3, restart_backoff=0.3) as started:
        yield started


# ---------------------------------------------------------------------------------------------
# Objects and waits


def job(
    name: str,
    namespace: str,
    script: str,
    *,
    args: list[str] | None = None,
    env: list[dict[str, Any]] | None = None,
    container: Mapping[str, Any] | None = None,
    pod: Mapping[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Job whose one container runs ``sh -c script``."""
    main: dict[str, Any] = {"name": "main", "image": "ignored:1", "command": ["sh", "-c", script, name]}
    main["args"] = args or []
    main.update({"env": env or [], **(container or {})})
    template = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "containers": [main],
        "nodeSelector": {"kubernetes.io/hostname": NODE},
        "tolerations": [TOLERATION],
        **(pod or {}),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": {"spec": template}, **spec},
    }


def wait_for(check: Callable[[], T | None], *, what: str, within: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within:.0f}s")
        time.sleep(0.1)


def finished_job(admin: Kubectl, namespace: str, name: str, *, within: float = 30.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = admin.get("job", name, namespace=namespace)
        conditions = (body or {}).get("status", {}).get("conditions") or []
        done = any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)
        return body if done else None

    return wait_for(check, what=f"Job {namespace}/{name} finishing", within=within)


def pods_of(admin: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    result = admin("get", "pods", "-n", namespace, "-l", f"job-name={name}", "-o", "json")
    assert result.returncode == 0, result.stderr
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return sorted(items, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))


def conditions_of(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body.get("status", {}).get("conditions") or []}


def container_state(pod: Mapping[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    state: dict[str, Any] = statuses[0].get("state") or {}
    return state


def group_alive(pgid: int) -> bool:
    return bool(live_processes(pgid))


def started_pid(kubelet: LocalKubelet, namespace: str, name: str) -> int:
    def check() -> int | None:
        runs = kubelet.runs_of(name, namespace)
        return runs[0].pid if runs and runs[0].pid else None

    return wait_for(check, what=f"the container of {name} starting")


def running_pod(admin: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pods = pods_of(admin, namespace, name)
        return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None

    return wait_for(check, what=f"a Pod of {name} reported Running")


def create_secret(admin: Kubectl, namespace: str, name: str, **data: str) -> None:
    literals = [f"--from-literal={k}={v}" for k, v in data.items()]
    created = admin("create", "secret", "generic", name, "-n", namespace, *literals)
    assert created.returncode == 0, created.stderr


# ---------------------------------------------------------------------------------------------
# Jobs run to their end by the real Job controller


SUCCEEDING = """
echo "training $*"
printf '{"score": 0.93, "home": "%s", "tmp": "%s", "cwd": "%s", "s3": "%s"}' \
    "$HOME" "$TMPDIR" "$(pwd)" "$S3_ENDPOINT" > "$TERMINATION_MESSAGE_PATH"
"""


def test_a_job_completes_with_the_message_its_container_wrote(
    admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet
) -> None:
    ns = unique_namespace
    args = ["--model", "$(MODEL)", "$$(MODEL)"]
    admin.apply(job("train", ns, SUCCEEDING, args=args, env=[{"name": "MODEL", "value": "churn"}]))

    done = finished_job(admin, ns, "train")
    conditions = conditions_of(done)
    assert conditions["Complete"]["status"] == "True" and conditions["SuccessCriteriaMet"]["status"] == "True"
    assert "Failed" not in conditions and done["status"]["succeeded"] == 1

    [pod] = pods_of(admin, ns, "train")
    assert pod["spec"]["nodeName"] == NODE and pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["hostIP"] == pod["status"]["podIP"] == "127.0.0.1"
    terminated = container_state(pod)["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert terminated["startedAt"] <= terminated["finishedAt"]
    message = json.loads(terminated["message"])
    assert message["score"] == 0.93 and message["s3"] == "http://127.0.0.1:1"
    assert message["home"] == message["tmp"] == message["cwd"]
    assert Path(message["home"]).is_relative_to(kubelet.workdir)
    pod_conditions = conditions_of(pod)
    assert (pod_conditions["Ready"]["status"], pod_conditions["Ready"]["reason"]) == ("False", "PodCompleted")
    assert pod_conditions["PodScheduled"]["status"] == "True"  # the scheduler's, kept by the kubelet's patches

    [run] = kubelet.runs_of("train", ns)
    assert (run.exit_code, run.reason, run.pod) == (0, "Completed", pod["metadata"]["name"])
    assert "training --model churn $(MODEL)" in run.log()


def test_a_failing_job_exhausts_its_backoff_limit(admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet) -> None:
    ns = unique_namespace
    body = job(
        "flaky",
        ns,
        'echo "the data is gone"; exit 3',
        backoffLimit=1,
        parallelism=2,
        completions=2,
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    admin.apply(body)

    done = finished_job(admin, ns, "flaky")
    failed = conditions_of(done)["Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "BackoffLimitExceeded")
    assert done["status"]["failed"] == 2
    pods = pods_of(admin, ns, "flaky")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        terminated = container_state(pod)["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
        assert terminated["message"] == "the data is gone\n"  # the log's tail: the container wrote no message
    assert [r.exit_code for r in kubelet.runs_of("flaky", ns)] == [3, 3]


def test_a_command_that_cannot_start_fails_the_pod(
    admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet
) -> None:
    ns = unique_namespace
    admin.apply(job("missing", ns, "", container={"command": ["retrain-no-such-command"]}))

    finished_job(admin, ns, "missing")
    [pod] = pods_of(admin, ns, "missing")
    assert pod["status"]["phase"] == "Failed"
    terminated = container_state(pod)["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert 'exec: "retrain-no-such-command"' in terminated["message"]


def test_on_failure_restarts_the_container_in_place(
    admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet
) -> None:
    ns = unique_namespace
    # Fails twice, then succeeds: the first restart is immediate, the second waits out a back-off.
    script = 'n=$(cat "$HOME/tries" 2>/dev/null || echo 0); echo $((n + 1)) > "$HOME/tries"; [ "$n" -ge 2 ]'
    admin.apply(job("retry", ns, script, backoffLimit=3, pod={"restartPolicy": "OnFailure"}))

    done = finished_job(admin, ns, "retry")
    assert conditions_of(done)["Complete"]["status"] == "True"
    [pod] = pods_of(admin, ns, "retry")  # the same Pod: restarted, not replaced
    [status] = pod["status"]["containerStatuses"]
    assert status["restartCount"] == 2
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0
    runs = kubelet.runs_of("retry", ns)
    assert [(r.exit_code, r.restart_count) for r in runs] == [(1, 0), (1, 1), (0, 2)]
    assert runs[0].workdir == runs[2].workdir  # the scratch directory outlives a restart, as a Pod's volumes do


# ---------------------------------------------------------------------------------------------
# The container's environment


def test_env_comes_from_secrets_config_maps_and_the_pod(
    admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet
) -> None:
    ns = unique_namespace
    create_secret(admin, ns, "s3", AWS_SECRET_ACCESS_KEY="hunter2")
    created = admin(
        "create", "configmap", "settings", "-n", ns, "--from-literal=region=eu-1", "--from-literal=tier=gold"
    )
    assert created.returncode == 0, created.stderr
    env: list[dict[str, Any]] = [
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "region"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "URL", "value": "s3://$(REGION)/$(SECRET)/$(UNDEFINED)"},
        {"name": "ABSENT", "valueFrom": {"secretKeyRef": {"name": "nowhere", "key": "k", "optional": True}}},
    ]
    script = 'printf "%s|" "$SECRET" "$REGION" "$POD" "$NODE" "$CPUS" "$URL" "$CFG_tier" "${ABSENT-unset}" "$1" \
        > "$TERMINATION_MESSAGE_PATH"'
    container = {"envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]}
    admin.apply(job("configured", ns, script, args=["$(REGION)"], env=env, container=container))

    finished_job(admin, ns, "configured")
    [pod] = pods_of(admin, ns, "configured")
    message = container_state(pod)["terminated"]["message"]
    name = pod["metadata"]["name"]
    assert message == f"hunter2|eu-1|{name}|{NODE}|32|s3://eu-1/hunter2/$(UNDEFINED)|gold|unset|eu-1|"


def test_a_missing_secret_holds_the_container_until_it_exists(
    admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet
) -> None:
    ns = unique_namespace
    env = [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "late", "key": "k"}}}]
    admin.apply(job("unconfigured", ns, 'printf "%s" "$KEY" > "$TERMINATION_MESSAGE_PATH"', env=env))

    def waiting() -> dict[str, Any] | None:
        # ContainerCreating comes first, as on a real node; then the kubelet finds the Secret missing.
        pods = pods_of(admin, ns, "unconfigured")
        reason = (container_state(pods[0]).get("waiting") or {}).get("reason") if pods else None
        return pods[0] if reason == "CreateContainerConfigError" else None

    pod = wait_for(waiting, what="the container waiting for its Secret")
    assert container_state(pod)["waiting"] == {
        "reason": "CreateContainerConfigError",
        "message": 'secret "late" not found',
    }
    assert pod["status"]["phase"] == "Pending"
    assert kubelet.runs_of("unconfigured", ns)[0].argv == []  # nothing was started

    create_secret(admin, ns, "late", k="finally")
    done = finished_job(admin, ns, "unconfigured")
    assert conditions_of(done)["Complete"]["status"] == "True"
    [pod] = pods_of(admin, ns, "unconfigured")
    assert container_state(pod)["terminated"]["message"] == "finally"


def test_the_node_authorizer_lets_the_kubelet_read_only_what_its_pods_use(
    admin: Kubectl,
    unique_namespace: str,
    kubelet: LocalKubelet,
    control_plane: ControlPlane,
    local_credentials: tuple[Path, Path],
) -> None:
    ns = unique_namespace
    create_secret(admin, ns, "mine", k="v")
    create_secret(admin, ns, "other", k="v")
    env = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "mine", "key": "k"}}}]
    admin.apply(job("reader", ns, "sleep 60", env=env))
    running_pod(admin, ns, "reader")

    assert control_plane.pki is not None
    context = ssl.create_default_context(cafile=str(control_plane.pki.ca_cert))
    context.load_cert_chain(str(local_credentials[0]), str(local_credentials[1]))

    def status_of(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{control_plane.url}{path}", context=context, timeout=10) as response:
                return response.status, ""
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()).get("message", "")

    assert status_of(f"/api/v1/namespaces/{ns}/secrets/mine")[0] == 200
    code, message = status_of(f"/api/v1/namespaces/{ns}/secrets/other")
    assert code == 403 and f"no relationship found between node '{NODE}' and this object" in message
    assert status_of(f"/api/v1/namespaces/{ns}/secrets")[0] == 403
    assert status_of("/api/v1/pods")[0] == 403  # only with its own spec.nodeName selector


# ---------------------------------------------------------------------------------------------
# Ending containers: deadlines, deletion, shutdown


def test_a_pod_deadline_kills_its_container(admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet) -> None:
    ns = unique_namespace
    admin.apply(job("slowpod", ns, "sleep 60", pod={"activeDeadlineSeconds": 1}))
    pid = started_pid(kubelet, ns, "slowpod")

    done = finished_job(admin, ns, "slowpod")
    assert conditions_of(done)["Failed"]["reason"] == "BackoffLimitExceeded"
    [pod] = pods_of(admin, ns, "slowpod")
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    assert pod["status"]["message"] == "Pod was active on the node longer than the specified deadline"
    assert container_state(pod)["terminated"]["exitCode"] == 143  # SIGTERM was enough
    assert not group_alive(pid)
    [run] = kubelet.runs_of("slowpod", ns)
    assert (run.reason, run.exit_code) == ("DeadlineExceeded", 143)


def test_a_job_deadline_deletes_its_pod_and_kills_the_process(
    admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet
) -> None:
    ns = unique_namespace
    started = time.monotonic()
    admin.apply(job("slowjob", ns, "sleep 60", activeDeadlineSeconds=2))
    pid = started_pid(kubelet, ns, "slowjob")

    done = finished_job(admin, ns, "slowjob")
    failed = conditions_of(done)["Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "DeadlineExceeded")
    assert time.monotonic() - started < 15
    assert not group_alive(pid)
    assert kubelet.runs_of("slowjob", ns)[0].exit_code in (143, 137)
    # The controller deleted the Pod; the kubelet confirmed it; the controller's finalizer then let it go.
    wait_for(lambda: not pods_of(admin, ns, "slowjob"), what="the deleted Pod disappearing")


@pytest.mark.parametrize("cascade", ["foreground", "background"])
def test_deleting_a_running_job_kills_its_process(
    admin: Kubectl, unique_namespace: str, kubelet: LocalKubelet, cascade: str
) -> None:
    ns = unique_namespace
    admin.apply(job("doomed", ns, "sleep 60"))
    pid = started_pid(kubelet, ns, "doomed")
    running_pod(admin, ns, "doomed")

    deleted = admin("delete", "job", "doomed", "-n", ns, f"--cascade={cascade}", "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    wait_for(lambda: not group_alive(pid), what="the process group dying")
    wait_for(lambda: not pods_of(admin, ns, "doomed"), what="the Pod disappearing")
    wait_for(lambda: admin.get("job", "doomed", namespace=ns) is None, what="the Job disappearing")
    [run] = kubelet.runs_of("doomed", ns)
    assert run.exit_code == 143


def test_stopping_the_kubelet_is_a_node_shutdown(
    admin: Kubectl, unique_namespace: str, start_kubelet: StartKubelet
) -> None:
    ns = unique_namespace
    with start_kubelet() as kubelet:
        admin.apply(job("cut", ns, "sleep 60"))
        pid = started_pid(kubelet, ns, "cut")
        running_pod(admin, ns, "cut")
    assert not group_alive(pid)  # the block's end waits for the container to be gone
    [pod] = pods_of(admin, ns, "cut")
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "Terminated")
    assert conditions_of(pod)["DisruptionTarget"]["reason"] == "TerminationByKubelet"


def test_a_restarted_kubelet_runs_nothing_twice(
    admin: Kubectl, unique_namespace: str, start_kubelet: StartKubelet
) -> None:
    ns = unique_namespace
    with start_kubelet() as first:
        admin.apply(job("once", ns, "true"))
        finished_job(admin, ns, "once")
        assert len(first.runs_of("once", ns)) == 1

    # A Pod that a kubelet reported Running, whose process no kubelet holds any more (its runtime lost it).
    lost = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "lost", "namespace": ns},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "ignored:1", "command": ["true"]}],
        },
    }
    admin.apply(lost)
    running_status = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "main",
                    "image": "ignored:1",
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        }
    }
    patched = admin(
        "patch", "pod", "lost", "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(running_status)
    )
    assert patched.returncode == 0, patched.stderr

    with start_kubelet() as second:
        assert second.runs_of("once", ns) == []  # listed at start: the Succeeded Pod is left alone

        def reported() -> dict[str, Any] | None:
            pod = admin.get("pod", "lost", namespace=ns)
            return pod if pod and pod["status"].get("phase") == "Failed" else None

        pod = wait_for(reported, what="the lost container reported")
        terminated = container_state(pod)["terminated"]
        assert (terminated["reason"], terminated["exitCode"]) == ("ContainerStatusUnknown", 137)
        assert [r for r in second.runs if r.pod == "lost"] == []


def test_a_gate_holds_a_pod_until_released(admin: Kubectl, unique_namespace: str, start_kubelet: StartKubelet) -> None:
    ns = unique_namespace
    held: list[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def gate(pod: dict[str, Any]) -> None:
        release = asyncio.Event()  # of the kubelet's loop: the test's thread sets it through that loop
        held.append((pod["metadata"]["name"], asyncio.get_running_loop(), release))
        await release.wait()

    with start_kubelet(gate=gate) as kubelet:
        admin.apply(job("held", ns, "true"))
        wait_for(lambda: held, what="the gate holding the Pod")
        [pod] = pods_of(admin, ns, "held")
        assert pod["status"]["phase"] == "Pending"
        assert container_state(pod)["waiting"]["reason"] == "ContainerCreating"
        [run] = kubelet.runs_of("held", ns)
        assert not run.finished and run.argv == []
        [(name, loop, release)] = held
        assert name == pod["metadata"]["name"]
        loop.call_soon_threadsafe(release.set)
        finished_job(admin, ns, "held")
        assert kubelet.runs_of("held", ns)[0].exit_code == 0


# ---------------------------------------------------------------------------------------------
# The node


def test_the_node_is_ready_schedulable_and_renews_its_lease(
    admin: Kubectl, unique_namespace: str, start_kubelet: StartKubelet, record_property: Callable[[str, Any], None]
) -> None:
    # A node of its own, so that registering it, and the not-ready taint going away, happen in this test.
    node = f"node-{uuid.uuid4().hex[:8]}"
    ns = unique_namespace
    try:
        started = time.monotonic()
        with start_kubelet(node_name=node, lease_renew_interval=0.3) as kubelet:
            body = admin.get("node", node)
            ready = conditions_of(body)["Ready"]
            assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
            assert {c: conditions_of(body)[c]["status"] for c in ("MemoryPressure", "DiskPressure", "PIDPressure")} == {
                "MemoryPressure": "False",
                "DiskPressure": "False",
                "PIDPressure": "False",
            }
            info = body["status"]["nodeInfo"]
            assert (info["kubeletVersion"], info["operatingSystem"]) == ("v1.37.2", "linux")
            assert body["status"]["allocatable"]["cpu"] == "32" and body["status"]["allocatable"]["pods"] == "110"
            assert {"type": "InternalIP", "address": "127.0.0.1"} in body["status"]["addresses"]

            def untainted() -> bool:
                taints = (admin.get("node", node) or {}).get("spec", {}).get("taints") or []
                return not any(t["key"] == "node.kubernetes.io/not-ready" for t in taints)

            wait_for(untainted, what="the not-ready taint going away")
            untainted_after = time.monotonic() - started

            created = time.monotonic()
            admin.apply(job("placed", ns, "true", pod={"nodeSelector": {"kubernetes.io/hostname": node}}))

            def bound() -> bool:
                pods = pods_of(admin, ns, "placed")
                return bool(pods and pods[0]["spec"].get("nodeName") == node)

            wait_for(bound, what="the Pod scheduled onto the new node")
            scheduled_after = time.monotonic() - created
            finished_job(admin, ns, "placed")
            assert kubelet.runs_of("placed", ns)[0].exit_code == 0

            lease = admin.get("lease", node, namespace="kube-node-lease")
            assert lease["spec"]["holderIdentity"] == node and lease["spec"]["leaseDurationSeconds"] == 40
            assert lease["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
            renewed = lease["spec"]["renewTime"]
            wait_for(
                lambda: admin.get("lease", node, namespace="kube-node-lease")["spec"]["renewTime"] > renewed,
                what="the Lease being renewed",
            )
        record_property("not_ready_taint_gone_after_s", round(untainted_after, 2))
        record_property("pod_scheduled_after_s", round(scheduled_after, 2))
        print(
            f"node {node}: not-ready taint gone {untainted_after:.2f}s after the kubelet started; "
            f"a new Pod was bound {scheduled_after:.2f}s after its Job was created"
        )
    finally:
        admin("delete", "node", node, "--wait=false")


# ---------------------------------------------------------------------------------------------
# Pure parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "x"),
        ("$(A)-$(B)", "x-$(A)"),  # a value is not expanded again
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$x"),
        ("$(C)", "$(C)"),  # unknown names stay
        ("$-$A", "$-$A"),
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("trailing $", "trailing $"),
    ],
)
def test_expansion_follows_kubernetes(text: str, expected: str) -> None:
    assert expand(text, {"A": "x", "B": "$(A)"}) == expected


def _container(state: dict[str, Any], last: dict[str, Any] | None = None) -> ContainerState:
    return ContainerState(name="main", image="i", state=state, last_state=last or {})


@pytest.mark.parametrize(
    ("policy", "state", "last", "final", "phase"),
    [
        ("Never", {"waiting": {}}, None, False, "Pending"),
        ("Never", {"running": {}}, None, False, "Running"),
        ("Never", {"terminated": {"exitCode": 0}}, None, False, "Succeeded"),
        ("Never", {"terminated": {"exitCode": 1}}, None, False, "Failed"),
        ("OnFailure", {"terminated": {"exitCode": 1}}, None, False, "Running"),  # about to restart
        ("OnFailure", {"waiting": {}}, {"terminated": {"exitCode": 1}}, False, "Running"),  # backing off
        ("OnFailure", {"terminated": {"exitCode": 143}}, None, True, "Failed"),  # killed at deletion
        ("Always", {"terminated": {"exitCode": 0}}, None, False, "Running"),
    ],
)
def test_pod_phase(policy: str, state: dict[str, Any], last: dict[str, Any] | None, final: bool, phase: str) -> None:
    assert pod_phase(policy, _container(state, last), final=final) == phase


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    before = [
        {"type": "Ready", "status": "False", "lastTransitionTime": "T0"},
        {"type": "Initialized", "status": "True", "lastTransitionTime": "T0"},
    ]
    after = condition_list(before, [Condition("Ready", True), Condition("Initialized", True)], now="T1", extra={})
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in after] == [
        ("Ready", "True", "T1"),
        ("Initialized", "True", "T0"),
    ]
    assert after[0]["reason"] is None and after[0]["message"] is None  # null: a merge patch clears old ones


@pytest.mark.parametrize(
    ("text", "value"), [("32", 32), ("500m", 0.5), ("2Gi", 2 * 1024**3), ("1k", 1000), ("1e3", 1000)]
)
def test_quantities(text: str, value: float) -> None:
    assert quantity(text) == pytest.approx(value)
