"""A kubelet for the sandbox's real control plane: it registers a Node and runs the Pods bound to it as local processes.

Why it exists: the sandbox and the end-to-end tests run a real kube-apiserver, kube-controller-manager and
kube-scheduler (:mod:`sandbox.controlplane`), so the Job controller creates the Pods, the scheduler binds
them and the Job's conditions are the real controller's. A node is still missing, and a real kubelet needs
a container runtime and root. This one does, through the API only, what a kubelet does, with a kubelet's
identity and rights (a client certificate for ``system:node:<name>`` in ``system:nodes``, so the Node
authorizer lets it read only the Secrets and ConfigMaps of Pods bound to it), and runs each container as a
process on this machine:

- it registers its Node (capacity, the Ready and pressure conditions, addresses, ``nodeInfo``), renews the
  node's Lease in ``kube-node-lease`` every 10 s, and re-posts the Node's status when it differs from what
  the kubelet reports or every 5 minutes, as the kubelet's defaults do; the node lifecycle controller then
  lifts the ``node.kubernetes.io/not-ready`` taint and the scheduler places Pods on the node;
- it lists and watches the Pods bound to it (``spec.nodeName``) in all namespaces. For each one it has not
  run and that is not terminal it awaits an optional ``gate(pod)`` (tests hold Pods with it), resolves the
  first container's environment (``envFrom``, ``env`` with ``value``, ``secretKeyRef``, ``configMapKeyRef``,
  ``fieldRef``, ``resourceFieldRef``, ``$(VAR)`` expansion) and runs its ``command + args`` in a scratch
  directory (the working directory, HOME and TMPDIR), with the PATH of this process, ``env_overrides``, and
  ``TERMINATION_MESSAGE_PATH`` naming a local file that stands for ``terminationMessagePath``;
- it reports the Pod's status as the kubelet does: phase, conditions, host and pod IPs, container state.
  A missing Secret or ConfigMap leaves the container waiting (``CreateContainerConfigError``), retried every
  10 s as the kubelet's pod worker does; the terminated state carries the exit code, ``Completed``/``Error``
  and the termination message (4096 bytes; the log's tail under ``FallbackToLogsOnError``).
  ``restartPolicy: OnFailure``/``Always`` restart the container in place with the kubelet's back-off;
  the Pod's ``activeDeadlineSeconds`` kills it (``DeadlineExceeded``);
- a Pod being deleted has its process group sent SIGTERM, then SIGKILL after its grace period (capped by
  ``max_grace_period``); its final status is reported and the deletion confirmed with a grace period of 0;
- leaving the ``async with`` block is a node shutting down: running containers are killed and their Pods
  reported ``Failed`` with reason ``Terminated`` and a ``DisruptionTarget`` condition, as graceful node
  shutdown does, so the Job controller replaces them and nothing outlives the block.

Pods are tracked by uid and never run twice. A terminal Pod is left alone. A Pod whose container status
(or a log file in ``workdir``) shows it was started, but whose process this kubelet does not hold (its
previous instance stopped or crashed), is what a kubelet sees when its runtime lost a container: it is
reported terminated with ``ContainerStatusUnknown`` and exit code 137, then its restart policy decides.

Limits: the image is ignored, so the command must exist on this machine and a container without a command
cannot start (``StartError``); only the first container runs (no init containers, sidecars or ephemeral
containers); volumes, probes, lifecycle hooks, resources and security contexts are not enforced, so a
started container is Ready at once; no service-link environment (``KUBERNETES_SERVICE_HOST``); no kubelet
API (``kubectl logs/exec`` fail; the logs are ``PodRun.log_path``); no Events, eviction, static Pods or image
garbage collection. The node's capacity is a declaration, not this machine's; processes run as this user.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import decimal
import json
import logging
import math
import os
import platform
import re
import signal
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Gate = Callable[[JsonDict], Awaitable[None]]

KUBELET_VERSION: Final = "v1.37.2"
NODE_IP: Final = "127.0.0.1"
NODE_LEASE_NAMESPACE: Final = "kube-node-lease"
KUBELET_PORT: Final = 10250  # advertised as a kubelet's; nothing listens (no kubelet API)
CAPACITY: Final[Mapping[str, str]] = {
    "cpu": "32",
    "memory": "128Gi",
    "pods": "110",
    "ephemeral-storage": "100Gi",
    "hugepages-1Gi": "0",
    "hugepages-2Mi": "0",
}
MESSAGE_LIMIT: Final = 4096  # bytes of a termination message, as the kubelet keeps
LOG_TAIL_LIMIT: Final = 2048  # bytes and lines of log that FallbackToLogsOnError keeps
LOG_TAIL_LINES: Final = 80
JOB_NAME_LABELS: Final = ("batch.kubernetes.io/job-name", "job-name")
TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})
DEADLINE_MESSAGE: Final = "Pod was active on the node longer than the specified deadline"
SHUTDOWN_MESSAGE: Final = "Pod was terminated in response to imminent node shutdown."
NEVER_RAN_MESSAGE: Final = "The container could not be located when the pod was terminated"
LOST_MESSAGE: Final = "The container could not be located when the kubelet started. The container used to be Running"
STRATEGIC_MERGE: Final = "application/strategic-merge-patch+json"


class ApiFailure(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body

    @property
    def message(self) -> str:
        """The Status message the API server wrote, as a kubelet would quote it."""
        if isinstance(self.body, dict) and self.body.get("message"):
            return str(self.body["message"])
        return str(self.body)


class ContainerConfigError(Exception):
    """The container cannot be created yet: its environment refers to something it may not or cannot read."""


@dataclasses.dataclass
class PodRun:
    """One start of a Pod's container by this kubelet (a restart in place is a new run), for assertions."""

    namespace: str
    job: str
    pod: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    log_path: Path
    started_at: str
    finished_at: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    # The container's reason (Completed, Error, StartError, CreateContainerConfigError while waiting), or the
    # Pod's when the kubelet ended it (DeadlineExceeded, Terminated at shutdown).
    reason: str | None = None
    message: str = ""
    uid: str = ""
    restart_count: int = 0

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# ---------------------------------------------------------------------------------------------
# Pure helpers: expansion, times, conditions, container status


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand $(VAR) as Kubernetes does: `$$` escapes, unknown variables stay as they are."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return _rfc3339(_utcnow())


def _micro_now() -> str:
    # Lease times are MicroTime: six fractional digits.
    return _utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _go_duration(seconds: float) -> str:
    """A duration as Go prints one ("10s", "2m40s", "500ms"), for messages quoted from the kubelet."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{rest:g}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _exit_code(returncode: int) -> int:
    # A process killed by signal N exits with 128+N in a container.
    return 128 - returncode if returncode < 0 else returncode


@dataclasses.dataclass(frozen=True)
class Condition:
    """A condition as the kubelet decides it; the API form adds times (:func:`condition_list`)."""

    type: str
    ok: bool
    reason: str | None = None
    message: str | None = None


def condition_list(
    previous: Sequence[JsonDict], wanted: Sequence[Condition], *, now: str, extra: Mapping[str, Any]
) -> list[JsonDict]:
    """The API form of ``wanted``, keeping each lastTransitionTime whose status did not change."""
    before = {c.get("type"): c for c in previous}
    out: list[JsonDict] = []
    for condition in wanted:
        status = "True" if condition.ok else "False"
        old = before.get(condition.type) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        # Sent as null when absent: a strategic merge patch merges conditions by type, so it would keep them.
        item: JsonDict = {
            "type": condition.type,
            "status": status,
            **extra,
            "lastTransitionTime": since or now,
            "reason": condition.reason,
            "message": condition.message,
        }
        out.append(item)
    return out


@dataclasses.dataclass
class ContainerState:
    """The state of the one container this kubelet runs for a Pod, as it reports it."""

    name: str
    image: str
    state: JsonDict  # {"waiting": {...}} | {"running": {...}} | {"terminated": {...}}
    last_state: JsonDict = dataclasses.field(default_factory=dict)
    restart_count: int = 0
    container_id: str = ""

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> JsonDict | None:
        found = self.state.get("terminated")
        return dict(found) if isinstance(found, dict) else None

    def to_api(self) -> JsonDict:
        status: JsonDict = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.running,
            "started": self.running,
            "restartCount": self.restart_count,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def _terminated(
    *, exit_code: int, reason: str, message: str = "", started_at: str | None = None, finished_at: str | None = None
) -> JsonDict:
    state: JsonDict = {"exitCode": exit_code, "reason": reason}
    if message:
        state["message"] = message
    if started_at:
        state["startedAt"] = started_at
    if finished_at:
        state["finishedAt"] = finished_at
    return {"terminated": state}


def pod_phase(restart_policy: str, container: ContainerState, *, final: bool) -> str:
    """The phase the kubelet computes for a one-container Pod (``getPhase``); ``final`` once nothing restarts."""
    ended = container.terminated
    if final:
        return "Succeeded" if ended is not None and ended.get("exitCode") == 0 else "Failed"
    if container.running:
        return "Running"
    if ended is not None:
        if restart_policy == "Always" or (restart_policy == "OnFailure" and ended.get("exitCode") != 0):
            return "Running"
        return "Succeeded" if ended.get("exitCode") == 0 else "Failed"
    return "Running" if "terminated" in container.last_state else "Pending"


def pod_conditions(phase: str, container: ContainerState) -> list[Condition]:
    """The kubelet's Pod conditions for one container and no init containers or readiness gates."""
    if phase in TERMINAL_PHASES:
        reason = "PodCompleted" if phase == "Succeeded" else "PodFailed"
        return [
            Condition("PodReadyToStartContainers", False),
            Condition("Initialized", True, "PodCompleted" if phase == "Succeeded" else None),
            Condition("Ready", False, reason),
            Condition("ContainersReady", False, reason),
        ]
    unready = None if container.running else f"containers with unready status: [{container.name}]"
    return [
        Condition("PodReadyToStartContainers", True),
        Condition("Initialized", True),
        Condition("Ready", container.running, unready and "ContainersNotReady", unready),
        Condition("ContainersReady", container.running, unready and "ContainersNotReady", unready),
    ]


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIXES: Final[Mapping[str, decimal.Decimal]] = {
    "": decimal.Decimal(1),
    "m": decimal.Decimal("0.001"),
    **{s: decimal.Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    **{s: decimal.Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


def quantity(text: str) -> decimal.Decimal:
    """A resource quantity ("500m", "2Gi", "1e3") as a number."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    return decimal.Decimal(match.group(1)) * _SUFFIXES[match.group(2) or ""]


# ---------------------------------------------------------------------------------------------
# One Pod on this node


class _PodWorker:
    """What the kubelet holds for one Pod it runs: its latest object, its process and its reported status."""

    def __init__(self, pod: JsonDict, pod_dir: Path) -> None:
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.dir = pod_dir
        self.terminating = asyncio.Event()
        self.removed = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self.run: PodRun | None = None
        self.task: asyncio.Task[None] | None = None
        status = pod.get("status") or {}
        self.start_time: str = status.get("startTime") or _now()
        self.conditions: list[JsonDict] = list(status.get("conditions") or [])
        self.posted: JsonDict | None = None
        self.restarts_here = 0  # restarts by this kubelet: the back-off grows with them
        spec = self.container_spec
        self.container = ContainerState(
            name=spec.get("name", ""), image=spec.get("image", ""), state={"waiting": {"reason": "ContainerCreating"}}
        )
        self.update(pod)

    def update(self, pod: JsonDict) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.terminating.set()

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def spec(self) -> JsonDict:
        return dict(self.pod.get("spec") or {})

    @property
    def container_spec(self) -> JsonDict:
        containers = self.spec.get("containers") or [{}]
        return dict(containers[0])

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("restartPolicy", "Always"))

    @property
    def job(self) -> str:
        labels = self.pod["metadata"].get("labels") or {}
        return next((str(labels[k]) for k in JOB_NAME_LABELS if k in labels), "")

    def grace(self, cap: float) -> float:
        meta, spec = self.pod["metadata"], self.spec
        seconds = meta.get("deletionGracePeriodSeconds")
        if seconds is None:
            seconds = spec.get("terminationGracePeriodSeconds", 30)
        return min(float(seconds), cap)


class LocalKubelet:
    """Runs the Pods bound to ``node_name`` as local processes until the block exits.

    Use as ``async with LocalKubelet(server=..., ca=..., cert=..., key=..., workdir=...) as kubelet:``;
    ``kubelet.runs`` lists what it ran. Exiting kills every process it started. The intervals below are a
    real kubelet's defaults; tests may shorten them on the instance before entering the block.
    """

    node_status_update_frequency: float = 10.0  # how often the Node's status is compared with the API's
    node_status_report_frequency: float = 300.0  # an unchanged status is still posted this often
    lease_duration_seconds: int = 40
    lease_renew_interval: float = 10.0  # a quarter of the lease's duration, as the kubelet renews
    config_retry_interval: float = 10.0  # the pod worker's back-off after an error (CreateContainerConfigError)
    restart_backoff: float = 10.0  # CrashLoopBackOff: doubled per restart, capped
    restart_backoff_max: float = 300.0
    # Taints the Node is created with (a kubelet's --register-with-taints), e.g. to keep a test's node to itself.
    register_with_taints: tuple[JsonDict, ...] = ()

    def __init__(
        self,
        *,
        server: str,
        ca: Path,
        cert: Path,
        key: Path,
        workdir: Path,
        node_name: str = "local",
        env_overrides: Mapping[str, str] | None = None,
        gate: Gate | None = None,
        max_grace_period: float = 2.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.ca, self.cert, self.key = Path(ca), Path(cert), Path(key)
        self.workdir = Path(workdir)
        self.node_name = node_name
        self.env_overrides = dict(env_overrides or {})
        self.gate = gate
        self.max_grace_period = max_grace_period
        self._session: aiohttp.ClientSession | None = None
        self._node_uid = ""
        self._node_posted: JsonDict | None = None
        self._node_posted_at = 0.0
        self._node_conditions: list[JsonDict] = []
        self._lease: JsonDict | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._workers: dict[str, _PodWorker] = {}  # by Pod uid
        self._finished: set[str] = set()  # Pod uids that are terminal or were run to the end here
        self._confirmed: set[str] = set()  # Pod uids whose deletion this kubelet confirmed
        self._chores: set[asyncio.Task[None]] = set()
        self._runs: list[PodRun] = []
        self._ready = asyncio.Event()

    @property
    def runs(self) -> list[PodRun]:
        """Every container start so far, in order of start."""
        return list(self._runs)

    def runs_of(self, job: str, namespace: str | None = None) -> list[PodRun]:
        """The runs of the Pods labelled ``job-name=<job>``."""
        return [r for r in self._runs if r.job == job and (namespace is None or r.namespace == namespace)]

    async def __aenter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        # Watch events are single JSON lines; a Pod can outgrow aiohttp's default line limit.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=30),
            read_bufsize=1 << 20,
        )
        try:
            await self._register_node()
            await self._renew_lease()
            self._loops = [
                asyncio.create_task(self._lease_loop(), name=f"kubelet-{self.node_name}-lease"),
                asyncio.create_task(self._node_status_loop(), name=f"kubelet-{self.node_name}-status"),
            ]
            self._watcher = asyncio.create_task(self._watch_pods(), name=f"kubelet-{self.node_name}-pods")
            ready = asyncio.create_task(self._ready.wait())
            await asyncio.wait({ready, self._watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                await asyncio.gather(ready, return_exceptions=True)
                self._watcher.result()  # the first listing failed: say why
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        # New Pods first, then the Pods (they report through the session), then the node's own loops.
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        workers = [w.task for w in self._workers.values() if w.task is not None]
        for task in [*workers, *self._chores]:
            task.cancel()
        await asyncio.gather(*workers, *self._chores, return_exceptions=True)
        for worker in list(self._workers.values()):  # the safety net: nothing outlives the block
            if worker.process is not None:
                await self._terminate(worker.process, grace=0)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------------------------------
    # API access

    async def _api(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> JsonDict:
        assert self._session is not None, "the kubelet is not running"
        data = None if body is None else json.dumps(body).encode()
        async with self._session.request(
            method, self.server + path, data=data, headers={"Content-Type": content_type}
        ) as response:
            text = await response.text()
            try:
                answer = json.loads(text) if text.strip() else {}
            except json.JSONDecodeError:
                answer = text
            if response.status >= 400:
                raise ApiFailure(response.status, answer)
            return answer if isinstance(answer, dict) else {}

    # ------------------------------------------------------------------------------------------
    # The Node and its Lease

    def _node_labels(self) -> dict[str, str]:
        os_name = platform.system().lower()
        arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
        return {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": os_name,
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": os_name,
            "beta.kubernetes.io/arch": arch,
        }

    def _node_status(self, *, now: str) -> JsonDict:
        labels = self._node_labels()
        wanted = [
            Condition("MemoryPressure", False, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            Condition("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            Condition("PIDPressure", False, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            Condition("Ready", True, "KubeletReady", "kubelet is posting ready status"),
        ]
        return {
            "capacity": dict(CAPACITY),
            "allocatable": dict(CAPACITY),
            "conditions": condition_list(self._node_conditions, wanted, now=now, extra={"lastHeartbeatTime": now}),
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "nodeInfo": {
                "machineID": _read_first(Path("/etc/machine-id")),
                "systemUUID": _read_first(Path("/sys/class/dmi/id/product_uuid")),
                "bootID": _read_first(Path("/proc/sys/kernel/random/boot_id")),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": f"local-process://python-{platform.python_version()}",
                "kubeletVersion": KUBELET_VERSION,
                "operatingSystem": labels["kubernetes.io/os"],
                "architecture": labels["kubernetes.io/arch"],
            },
        }

    async def _register_node(self) -> None:
        """Create the Node, or take over the one a previous instance registered, and post its status."""
        body: JsonDict = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": self._node_labels(),
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            },
            "spec": {"taints": list(self.register_with_taints)} if self.register_with_taints else {},
            "status": self._node_status(now=_now()),
        }
        try:
            node = await self._api("POST", "/api/v1/nodes", body)
        except ApiFailure as error:
            if error.status != 409:
                raise
            node = await self._api(
                "PATCH",
                f"/api/v1/nodes/{self.node_name}",
                {"metadata": {"labels": body["metadata"]["labels"], "annotations": body["metadata"]["annotations"]}},
                content_type=STRATEGIC_MERGE,
            )
        self._node_uid = node["metadata"]["uid"]
        self._node_conditions = list((node.get("status") or {}).get("conditions") or [])
        await self._post_node_status()

    async def _post_node_status(self) -> None:
        status = self._node_status(now=_now())
        node = await self._api(
            "PATCH", f"/api/v1/nodes/{self.node_name}/status", {"status": status}, content_type=STRATEGIC_MERGE
        )
        self._node_conditions = list((node.get("status") or {}).get("conditions") or [])
        self._node_posted = _node_summary(status)
        self._node_posted_at = asyncio.get_running_loop().time()

    async def _node_status_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.node_status_update_frequency)
            try:
                node = await self._api("GET", f"/api/v1/nodes/{self.node_name}")
            except ApiFailure as error:
                if error.status == 404:  # someone deleted our Node: register it again rather than run unseen
                    await _logged(self._register_node(), "registering the node again")
                else:
                    logger.warning("the kubelet could not read its Node: %s", error)
                continue
            except (aiohttp.ClientError, TimeoutError) as error:
                logger.warning("the kubelet could not read its Node: %s", error)
                continue
            self._node_conditions = list((node.get("status") or {}).get("conditions") or [])
            current = _node_summary(node.get("status") or {})
            due = loop.time() - self._node_posted_at >= self.node_status_report_frequency
            if due or current != _node_summary(self._node_status(now=_now())):
                await _logged(self._post_node_status(), "posting the node's status")

    def _lease_body(self, lease: JsonDict | None) -> JsonDict:
        body = lease or {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node_name, "namespace": NODE_LEASE_NAMESPACE},
        }
        body = {**body, "metadata": dict(body["metadata"])}
        if self._node_uid:  # the Lease goes away with its Node
            body["metadata"]["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": self._node_uid}
            ]
        body["spec"] = {
            **(body.get("spec") or {}),
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "renewTime": _micro_now(),
        }
        return body

    async def _renew_lease(self, *, retry: bool = True) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"
        if self._lease is None:
            try:
                self._lease = await self._api("GET", f"{path}/{self.node_name}")
            except ApiFailure as error:
                if error.status != 404:
                    raise
                self._lease = await self._api("POST", path, self._lease_body(None))
                return
        try:
            self._lease = await self._api("PUT", f"{path}/{self.node_name}", self._lease_body(self._lease))
        except ApiFailure as error:
            self._lease = None  # a conflict or a deleted Lease: read (or create) it afresh next time
            if error.status not in (404, 409) or not retry:
                raise
            await self._renew_lease(retry=False)

    async def _lease_loop(self) -> None:
        delay = self.lease_renew_interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self._renew_lease()
                delay = self.lease_renew_interval
            except (ApiFailure, aiohttp.ClientError, TimeoutError) as error:
                # As the kubelet's lease controller: retry sooner, backing off up to the renew interval.
                delay = min(max(delay / 8, 0.2) * 2, self.lease_renew_interval)
                logger.warning("the kubelet could not renew its Lease (retrying in %.1fs): %s", delay, error)

    # ------------------------------------------------------------------------------------------
    # Watching the Pods bound to this node

    async def _watch_pods(self) -> None:
        while True:
            try:
                await self._list_and_watch()  # returns when the watch's version expired (410): list again
            except (aiohttp.ClientError, ApiFailure, TimeoutError, ValueError) as error:
                if not self._ready.is_set():
                    raise  # the API is not there at all: fail the start
                logger.warning("the kubelet lost its watch of Pods (%s); listing again", error)
                await asyncio.sleep(0.5)

    async def _list_and_watch(self) -> None:
        """List the node's Pods, then watch from that version until it expires; each ends ``_on_pod``."""
        assert self._session is not None
        selector = urllib.parse.quote(f"spec.nodeName={self.node_name}")
        listed = await self._api("GET", f"/api/v1/pods?fieldSelector={selector}")
        present = set()
        for pod in listed.get("items") or []:
            present.add(pod["metadata"]["uid"])
            self._on_pod(pod)
        for uid, worker in list(self._workers.items()):
            if uid not in present:  # deleted while the watch was down
                worker.removed.set()
        self._ready.set()
        version = listed["metadata"]["resourceVersion"]
        while True:
            url = (
                f"{self.server}/api/v1/pods?fieldSelector={selector}&watch=true&allowWatchBookmarks=true"
                f"&resourceVersion={version}&timeoutSeconds=300"
            )
            timeout = aiohttp.ClientTimeout(total=None, sock_read=330)
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise ApiFailure(response.status, await response.text())
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return
                        raise ApiFailure(int(obj.get("code", 500)), obj)
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind in ("ADDED", "MODIFIED"):
                        self._on_pod(obj)
                    elif kind == "DELETED":
                        gone = self._workers.get(obj["metadata"]["uid"])
                        if gone is not None:
                            gone.removed.set()

    def _on_pod(self, pod: JsonDict) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        worker = self._workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if uid in self._finished or phase in TERMINAL_PHASES:
            self._finished.add(uid)
            self._confirm_if_deleted(pod)
            return
        pod_dir = self.workdir / f"{meta['namespace']}_{meta['name']}_{uid}"
        worker = _PodWorker(pod, pod_dir)
        self._workers[uid] = worker
        worker.task = asyncio.create_task(
            self._sync_pod(worker), name=f"kubelet-pod-{meta['namespace']}/{meta['name']}"
        )

    def _confirm_if_deleted(self, pod: JsonDict) -> None:
        """A terminal Pod deleted with a grace period waits for the kubelet to confirm, as this one does."""
        meta = pod["metadata"]
        if not meta.get("deletionTimestamp") or not meta.get("deletionGracePeriodSeconds"):
            return
        if meta["uid"] in self._confirmed:
            return
        self._confirmed.add(meta["uid"])
        task = asyncio.create_task(_logged(self._delete_pod(pod), "confirming a Pod's deletion"))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _delete_pod(self, pod: JsonDict) -> None:
        meta = pod["metadata"]
        options = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        with contextlib.suppress(ApiFailure):  # gone already, or a new Pod of the same name: not ours to delete
            await self._api("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", options)

    # ------------------------------------------------------------------------------------------
    # The life of one Pod

    async def _sync_pod(self, w: _PodWorker) -> None:
        """From admission to a terminal status; a deletion, the Pod's deadline or a shutdown cut it short."""
        live = asyncio.create_task(self._live(w), name=f"kubelet-live-{w.namespace}/{w.name}")
        deleted = asyncio.create_task(w.terminating.wait())
        removed = asyncio.create_task(w.removed.wait())
        deadline = asyncio.create_task(self._deadline(w))
        waiters = {deleted, removed, deadline}
        try:
            try:
                await asyncio.wait({live, *waiters}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                await _cancel(live)
                await self._shut_down(w)
                raise
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
            if live.done():
                live.result()
            else:
                await _cancel(live)
                await self._cut_short(w, removed=w.removed.is_set(), deleted=w.terminating.is_set())
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the kubelet failed to run Pod %s/%s", w.namespace, w.name)
        finally:
            if w.process is not None:  # never leave a process behind, whatever went wrong
                await self._terminate(w.process, grace=0)
                self._finish_run(w)
            self._workers.pop(w.uid, None)
            self._finished.add(w.uid)
        self._confirm_if_deleted(w.pod)

    async def _deadline(self, w: _PodWorker) -> None:
        seconds = w.spec.get("activeDeadlineSeconds")
        if seconds is None:
            await asyncio.Event().wait()  # no deadline: wait until cancelled
            return
        started = datetime.datetime.fromisoformat(w.start_time)
        remaining = started.timestamp() + float(seconds) - _utcnow().timestamp()
        await asyncio.sleep(max(0.0, remaining))

    async def _live(self, w: _PodWorker) -> None:
        """Start the container, restart it as its policy says, and report until the Pod is terminal."""
        c = w.container
        first = self._resume(w)
        if first is not None:
            await self._report(w)
            if self.gate is not None:
                await self.gate(w.pod)
        while True:
            ended = c.terminated
            if ended is not None:
                code = ended.get("exitCode")
                if w.restart_policy == "Never" or (w.restart_policy == "OnFailure" and code == 0):
                    await self._report(w, final=True)
                    return
                delay = self._restart_delay(w)
                if delay > 0:
                    c.last_state = {"terminated": ended}
                    c.state = {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": (
                                f"back-off {_go_duration(delay)} restarting failed container={c.name} "
                                f"pod={w.name}_{w.namespace}({w.uid})"
                            ),
                        }
                    }
                    await self._report(w)
                    await asyncio.sleep(delay)
                w.restarts_here += 1
                c.restart_count += 1
                c.last_state = {"terminated": ended}
                c.state = {"waiting": {"reason": "ContainerCreating"}}
            run = first if first is not None else self._new_run(w)
            first = None
            container_env = await self._environment_until_ready(w, run)
            await self._execute(w, run, container_env)

    def _resume(self, w: _PodWorker) -> PodRun | None:
        """Take up what the API (or this workdir) knows of the container; a new run when it never started."""
        c = w.container
        prior = next(
            (s for s in (w.pod.get("status") or {}).get("containerStatuses") or [] if s.get("name") == c.name), None
        )
        if prior is not None:
            c.restart_count = int(prior.get("restartCount") or 0)
            c.last_state = dict(prior.get("lastState") or {})
            c.container_id = str(prior.get("containerID") or "")
            state = prior.get("state") or {}
            if "terminated" in state:
                c.state = {"terminated": dict(state["terminated"])}
                return None
            if "running" in state:
                c.state = _terminated(exit_code=137, reason="ContainerStatusUnknown", message=LOST_MESSAGE)
                return None
        if (w.dir / "logs").is_dir() and any((w.dir / "logs").iterdir()):
            c.state = _terminated(exit_code=137, reason="ContainerStatusUnknown", message=LOST_MESSAGE)
            return None
        return self._new_run(w)

    def _restart_delay(self, w: _PodWorker) -> float:
        # The kubelet restarts a container at once the first time, then backs off 10 s, 20 s, ... 5 min.
        if w.restarts_here == 0:
            return 0.0
        return float(min(self.restart_backoff * 2 ** (w.restarts_here - 1), self.restart_backoff_max))

    def _new_run(self, w: _PodWorker) -> PodRun:
        attempt = w.container.restart_count
        run = PodRun(
            namespace=w.namespace,
            job=w.job,
            pod=w.name,
            argv=[],
            env={},
            workdir=w.dir / "scratch",
            log_path=w.dir / "logs" / f"{attempt}.log",
            started_at=_now(),
            uid=w.uid,
            restart_count=attempt,
        )
        self._runs.append(run)
        w.run = run
        return run

    async def _environment_until_ready(self, w: _PodWorker, run: PodRun) -> dict[str, str]:
        while True:
            try:
                return await self._container_env(w)
            except ContainerConfigError as error:
                run.reason, run.message = "CreateContainerConfigError", str(error)
                w.container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
                await self._report(w)
                await asyncio.sleep(self.config_retry_interval)

    async def _execute(self, w: _PodWorker, run: PodRun, container_env: dict[str, str]) -> None:
        """Run one container start to its exit; the container's state ends terminated."""
        c, spec = w.container, w.container_spec
        # $(VAR) in command and args sees the container's environment only, as in Kubernetes.
        run.argv = [expand(part, container_env) for part in [*(spec.get("command") or []), *(spec.get("args") or [])]]
        env = run.env = self._process_env(w, run, container_env)
        run.reason, run.message = None, ""
        run.workdir.mkdir(parents=True, exist_ok=True)
        run.log_path.parent.mkdir(parents=True, exist_ok=True)
        message_file = self._message_file(run)
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.unlink(missing_ok=True)
        run.started_at = _now()
        try:
            if not run.argv:
                raise _StartError("the local kubelet cannot run an image's entrypoint: the container needs a command")
            with run.log_path.open("ab") as log:
                try:
                    process = await asyncio.create_subprocess_exec(
                        *run.argv,
                        env=env,
                        cwd=run.workdir,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                    )
                except OSError as error:
                    raise _StartError(
                        f'failed to start container process: exec: "{run.argv[0]}": {error.strerror}'
                    ) from None
        except _StartError as error:
            run.exit_code, run.reason, run.message, run.finished_at = 128, "StartError", str(error), _now()
            c.state = _terminated(
                exit_code=128,
                reason="StartError",
                message=str(error),
                started_at=run.started_at,
                finished_at=run.finished_at,
            )
            return
        w.process, run.pid = process, process.pid
        c.container_id = f"local-process://{process.pid}"
        c.state = {"running": {"startedAt": run.started_at}}
        await self._report(w)
        await process.wait()
        await _empty_group(process.pid)
        self._finish_run(w)

    def _process_env(self, w: _PodWorker, run: PodRun, container_env: Mapping[str, str]) -> dict[str, str]:
        # This machine's PATH stands for the image's; the scratch directory for the container's filesystem.
        base = {"PATH": os.environ.get("PATH", ""), "HOSTNAME": str(w.spec.get("hostname") or w.name)}
        local = {"HOME": str(run.workdir), "TMPDIR": str(run.workdir)}
        message_path = {"TERMINATION_MESSAGE_PATH": str(self._message_file(run))}
        return {**base, **container_env, **local, **self.env_overrides, **message_path}

    def _message_file(self, run: PodRun) -> Path:
        return run.log_path.parent.parent / "termination" / f"{run.restart_count}"

    def _finish_run(self, w: _PodWorker) -> None:
        """Record the exit of the current process: the run's outcome and the container's terminated state."""
        process, run = w.process, w.run
        if process is None or process.returncode is None or run is None:
            return
        w.process = None
        _signal_group(process.pid, signal.SIGKILL)  # the container's end takes what it left running with it
        run.exit_code = _exit_code(process.returncode)
        run.finished_at = _now()
        run.reason = "Completed" if run.exit_code == 0 else "Error"
        run.message = self._termination_message(run, w.container_spec)
        w.container.state = _terminated(
            exit_code=run.exit_code,
            reason=run.reason,
            message=run.message,
            started_at=run.started_at,
            finished_at=run.finished_at,
        )

    def _termination_message(self, run: PodRun, spec: JsonDict) -> str:
        message = ""
        message_file = self._message_file(run)
        if message_file.exists():
            with message_file.open("rb") as handle:
                message = handle.read(MESSAGE_LIMIT).decode(errors="replace")
        if not message and run.exit_code and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            data = run.log_path.read_bytes() if run.log_path.exists() else b""
            lines = data.splitlines(keepends=True)[-LOG_TAIL_LINES:]
            message = b"".join(lines)[-LOG_TAIL_LIMIT:].decode(errors="replace")
        return message

    async def _terminate(self, process: asyncio.subprocess.Process, *, grace: float) -> None:
        """SIGTERM to the container's process group, SIGKILL once the grace period is over."""
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        await _empty_group(process.pid)

    async def _cut_short(self, w: _PodWorker, *, removed: bool, deleted: bool) -> None:
        """Kill the container because the Pod was deleted or outlived its deadline, and say so."""
        if w.process is not None:
            await self._terminate(w.process, grace=w.grace(self.max_grace_period))
            self._finish_run(w)
        if removed:
            return  # the Pod is gone from the API: there is nobody to tell
        if w.container.terminated is None:
            w.container.state = _terminated(exit_code=137, reason="ContainerStatusUnknown", message=NEVER_RAN_MESSAGE)
        if deleted:
            await self._report(w, final=True)
            await self._delete_pod(w.pod)
            self._confirmed.add(w.uid)
            return
        if w.run is not None:
            w.run.reason, w.run.finished_at = "DeadlineExceeded", w.run.finished_at or _now()
        await self._report(w, final=True, reason="DeadlineExceeded", message=DEADLINE_MESSAGE)

    async def _shut_down(self, w: _PodWorker) -> None:
        """The kubelet is stopping: kill the container and report the Pod as graceful node shutdown does."""
        if w.process is not None:
            await self._terminate(w.process, grace=w.grace(self.max_grace_period))
            self._finish_run(w)
        if w.run is not None and w.run.finished:
            w.run.reason = "Terminated"
        if w.container.terminated is None:
            w.container.state = _terminated(exit_code=137, reason="ContainerStatusUnknown", message=NEVER_RAN_MESSAGE)
        disruption = Condition("DisruptionTarget", True, "TerminationByKubelet", SHUTDOWN_MESSAGE)
        with contextlib.suppress(Exception):  # the API may be going away as well; the processes are dead
            async with asyncio.timeout(2):
                await self._report(w, final=True, reason="Terminated", message=SHUTDOWN_MESSAGE, extra=[disruption])

    async def _report(
        self,
        w: _PodWorker,
        *,
        final: bool = False,
        reason: str | None = None,
        message: str | None = None,
        extra: Sequence[Condition] = (),
    ) -> None:
        """Post the Pod's status (a strategic merge patch, as the kubelet's status manager sends) if it changed."""
        c = w.container
        phase = pod_phase(w.restart_policy, c, final=final)
        now = _now()
        generation = w.pod["metadata"].get("generation")
        stamp: JsonDict = {"lastProbeTime": None}
        if generation:
            stamp["observedGeneration"] = generation
        conditions = condition_list(w.conditions, [*pod_conditions(phase, c), *extra], now=now, extra=stamp)
        status: JsonDict = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP,
            "podIPs": [{"ip": NODE_IP}],
            "startTime": w.start_time,
            "containerStatuses": [c.to_api()],
            "reason": reason,
            "message": message,
        }
        if generation:
            status["observedGeneration"] = generation
        if status == w.posted:
            return
        patch = {"metadata": {"uid": w.uid}, "status": status}
        try:
            updated = await self._api(
                "PATCH", f"/api/v1/namespaces/{w.namespace}/pods/{w.name}/status", patch, content_type=STRATEGIC_MERGE
            )
        except ApiFailure as error:
            if error.status == 404:
                return  # deleted meanwhile: there is no status to report
            raise
        w.posted = status
        w.conditions = list((updated.get("status") or {}).get("conditions") or conditions)

    # ------------------------------------------------------------------------------------------
    # The container's environment

    async def _container_env(self, w: _PodWorker) -> dict[str, str]:
        """The container's environment, resolved as the kubelet's ``makeEnvironmentVariables`` does."""
        spec, namespace = w.container_spec, w.namespace
        cache: dict[tuple[str, str], dict[str, str] | None] = {}

        async def data(kind: str, name: str, optional: bool) -> dict[str, str] | None:
            if (kind, name) not in cache:
                cache[kind, name] = await self._config_data(namespace, kind, name, optional=optional)
            return cache[kind, name]

        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for field, kind in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if field in source:
                    ref = source[field]
                    found = await data(kind, ref.get("name", ""), bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in (found or {}).items()})
        for var in spec.get("env") or []:
            name, value = var["name"], var.get("value") or ""
            if value or "valueFrom" not in var:
                env[name] = expand(value, env)
                continue
            source = var["valueFrom"]
            resolved: str | None
            if "secretKeyRef" in source or "configMapKeyRef" in source:
                field, kind, what = (
                    ("secretKeyRef", "secrets", "Secret")
                    if "secretKeyRef" in source
                    else ("configMapKeyRef", "configmaps", "ConfigMap")
                )
                ref = source[field]
                optional = bool(ref.get("optional"))
                found = await data(kind, ref.get("name", ""), optional)
                if found is None:
                    continue
                if ref["key"] not in found:
                    if optional:
                        continue
                    raise ContainerConfigError(
                        f"couldn't find key {ref['key']} in {what} {namespace}/{ref.get('name')}"
                    )
                resolved = found[ref["key"]]
            elif "fieldRef" in source:
                resolved = _field_value(w.pod, str(source["fieldRef"].get("fieldPath", "")))
            elif "resourceFieldRef" in source:
                resolved = _resource_value(spec, source["resourceFieldRef"])
            else:
                raise ContainerConfigError(f"the local kubelet cannot resolve env {name}: {sorted(source)}")
            env[name] = resolved
        return env

    async def _config_data(self, namespace: str, kind: str, name: str, *, optional: bool) -> dict[str, str] | None:
        """A Secret's or ConfigMap's data as text; None when it is optional and missing."""
        singular = kind.removesuffix("s")
        for attempt in range(10):
            try:
                obj = await self._api("GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}")
                break
            except ApiFailure as error:
                if error.status == 404:
                    if optional:
                        return None
                    raise ContainerConfigError(f'{singular} "{name}" not found') from None
                # The Node authorizer learns of a Pod's binding from its own watch, which may lag ours: retry
                # for a second, as the kubelet's Secret manager waits for its first sync, before giving up.
                if error.status == 403 and attempt < 9:
                    await asyncio.sleep(0.1)
                    continue
                raise ContainerConfigError(error.message) from None
            except (aiohttp.ClientError, TimeoutError) as error:
                raise ContainerConfigError(f"couldn't get {singular} {namespace}/{name}: {error}") from None
        items = dict(obj.get("data") or {})
        if kind == "secrets":
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in items.items()}
        return {k: str(v) for k, v in items.items()}


class _StartError(Exception):
    """The container's process could not be started (the runtime's StartError)."""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # Each container leads its own session, so its process group is its pid: only our own processes.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def live_processes(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that still run: zombies are dead, whoever has yet to reap them.

    Reads ``/proc``; where there is none, any member the kernel still knows counts.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


async def _empty_group(pgid: int, *, within: float = 2.0) -> None:
    """SIGKILL what the container left in its process group, and wait (a while) until none of it runs.

    A container ends with everything in it. Orphans of its main process are re-parented to someone else
    and die a moment after the signal; until then the container is not reported terminated.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        _signal_group(pgid, signal.SIGKILL)
        if not live_processes(pgid):
            return
        if loop.time() > deadline:
            logger.warning("processes %s of group %d outlived their container", live_processes(pgid), pgid)
            return
        await asyncio.sleep(0.01)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _logged(work: Awaitable[None], what: str) -> None:
    try:
        await work
    except (ApiFailure, aiohttp.ClientError, TimeoutError) as error:
        logger.warning("the kubelet failed %s: %s", what, error)


def _read_first(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _node_summary(status: Mapping[str, Any]) -> JsonDict:
    """What the kubelet owns of a Node's status, without times, to tell whether the API's copy differs."""
    conditions = {c.get("type"): (c.get("status"), c.get("reason")) for c in status.get("conditions") or []}
    return {
        "conditions": {t: conditions.get(t) for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")},
        "capacity": status.get("capacity"),
        "allocatable": status.get("allocatable"),
        "addresses": status.get("addresses"),
        "daemonEndpoints": status.get("daemonEndpoints"),
        "kubeletVersion": (status.get("nodeInfo") or {}).get("kubeletVersion"),
    }


def _field_value(pod: JsonDict, path: str) -> str:
    """A downward-API ``fieldRef`` for env; the status fields are this node's, as the kubelet fills them."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    values = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": NODE_IP,
        "status.hostIPs": NODE_IP,
        "status.podIP": NODE_IP,
        "status.podIPs": NODE_IP,
    }
    if path not in values:
        raise ContainerConfigError(f'unsupported fieldPath: "{path}"')
    return str(values[path] or "")


def _resource_value(container: JsonDict, ref: JsonDict) -> str:
    """A ``resourceFieldRef`` for env: the container's request or limit, a limit defaulting to the node's capacity."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)
    if value is None:
        value = CAPACITY.get(name, "0") if kind == "limits" else "0"
    divisor = quantity(str(ref.get("divisor") or "1"))
    if divisor == 0:
        divisor = decimal.Decimal(1)
    return str(math.ceil(quantity(str(value)) / divisor))
