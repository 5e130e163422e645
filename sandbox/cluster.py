"""A local cluster: the real control plane, the local kubelet, and the operator installed from its chart.

The operator, kubectl and the tests reach it over HTTPS through kubeconfigs, as they would a cluster.
The kubelet runs on its own event loop in a thread, so it keeps answering while the caller blocks (on
a subprocess, a synchronous client, a poll).

The operator is installed the way a platform team installs it in namespaced mode (``watchNamespaces``):
the chart is rendered with Helm's own code and applied with kubectl, except its Deployment (the
operator runs here as a local process with the Deployment's arguments); the process authenticates
with a token of the chart's ServiceAccount, so what it may do is exactly what the chart's RBAC grants.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import yaml

from sandbox.controlplane import ControlPlane, ControlPlaneError, client_certificate, write_kubeconfig
from sandbox.kubelet import LocalKubelet, PodRun
from sandbox.processes import kubectl

OPERATOR_NAMESPACE = "retrain-system"
RELEASE = "retrain-operator"
# Objects of the chart that are not applied: the operator runs as a local process instead of a Pod.
NOT_APPLIED = frozenset({"Deployment"})


class LocalCluster:
    """``with LocalCluster(workdir=...) as cluster:`` gives ``cluster.kubeconfig`` (a cluster admin's).

    It starts its own control plane unless one is given. ``hold_jobs()`` makes the kubelet accept
    new Pods but not start their processes until ``release_jobs()``: the window in which tests kill
    the operator.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        control_plane: ControlPlane | None = None,
        bin_dir: Path | None = None,
        env_overrides: Mapping[str, str] | None = None,
        node_name: str = "local",
    ) -> None:
        self.workdir = workdir
        self.env_overrides = dict(env_overrides or {})
        self.node_name = node_name
        self._owns_control_plane = control_plane is None
        self.control_plane = control_plane or ControlPlane(workdir=workdir / "controlplane", bin_dir=bin_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-kubelet", daemon=True)
        self._stop: asyncio.Event | None = None
        self._running: Future[None] | None = None
        self._held = False
        self._release: asyncio.Event | None = None
        self._kubelet: LocalKubelet | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.admin_kubeconfig

    @property
    def url(self) -> str:
        return self.control_plane.url

    async def _gate(self, pod: dict[str, Any]) -> None:
        while self._held and self._release is not None:
            await self._release.wait()

    async def _main(self, ready: Future[None]) -> None:
        self._stop = asyncio.Event()
        self._release = asyncio.Event()
        pki = self.control_plane.pki
        assert pki is not None
        cert, key = client_certificate(
            pki, f"kubelet-{self.node_name}", user=f"system:node:{self.node_name}", groups=["system:nodes"]
        )
        try:
            async with LocalKubelet(
                server=self.control_plane.url,
                ca=pki.ca_cert,
                cert=cert,
                key=key,
                workdir=self.workdir / "pods",
                node_name=self.node_name,
                env_overrides=self.env_overrides,
                gate=self._gate,
            ) as kubelet:
                self._kubelet = kubelet
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def __enter__(self) -> LocalCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if self._owns_control_plane:
                self.control_plane.start()
            self._thread.start()
            ready: Future[None] = Future()
            self._running = asyncio.run_coroutine_threadsafe(self._main(ready), self._loop)
            try:
                ready.result(timeout=60)
            except Exception as error:
                raise ControlPlaneError(f"the local kubelet did not start: {error}") from error
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            if self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            if self._release is not None:
                self._held = False
                self._loop.call_soon_threadsafe(self._release.set)
            if self._running is not None:
                try:
                    self._running.result(timeout=60)
                except Exception:  # the loop is being torn down; its failure was already reported
                    pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        if not self._loop.is_running():
            self._loop.close()
        if self._owns_control_plane:
            self.control_plane.stop()

    def hold_jobs(self) -> None:
        self._held = True
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.clear)

    def release_jobs(self) -> None:
        self._held = False
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    @property
    def runs(self) -> list[PodRun]:
        """Every Pod the kubelet ran, in order of start."""
        return list(self._kubelet.runs) if self._kubelet is not None else []

    def runs_in(self, namespace: str) -> list[PodRun]:
        return [run for run in self.runs if run.namespace == namespace]


# ---------------------------------------------------------------------------------------------
# Installing the operator from its chart


def render(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chart's objects for ``values``, rendered by Helm's own code (``hack/render_manifests.py``)."""
    from hack.render_manifests import render_chart

    return render_chart(values, release=RELEASE, namespace=OPERATOR_NAMESPACE)


def _apply(admin_kubeconfig: Path, docs: Sequence[dict[str, Any]]) -> None:
    result = kubectl(admin_kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
    if result.returncode != 0:
        raise ControlPlaneError(f"kubectl apply of the chart's objects failed: {result.stderr.strip()}")


def install_operator(
    admin_kubeconfig: Path,
    *,
    values: Mapping[str, Any],
    kubeconfig_path: Path,
    server: str,
    ca: Path,
    duration: str = "24h",
) -> Path:
    """Apply the chart's own objects and return a kubeconfig of its ServiceAccount.

    Own objects: the cluster-scoped ones and those of the operator's namespace, but not the
    Deployment; what the chart gives each watched namespace comes with :func:`install_tenant`. The
    kubeconfig carries a bound token from the TokenRequest API, as a Pod of the Deployment would.
    """
    from hack.render_manifests import namespace_manifest

    objects = render(values)
    _apply(admin_kubeconfig, [yaml.safe_load(namespace_manifest(OPERATOR_NAMESPACE))])
    _apply(
        admin_kubeconfig,
        [
            o
            for o in objects
            if o["kind"] not in NOT_APPLIED and o["metadata"].get("namespace") in (None, OPERATOR_NAMESPACE)
        ],
    )
    account = next(
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "ServiceAccount"
        and o["metadata"].get("namespace") == OPERATOR_NAMESPACE
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "trainer"
    )
    token = kubectl(admin_kubeconfig, "create", "token", account, "-n", OPERATOR_NAMESPACE, f"--duration={duration}")
    if token.returncode != 0:
        raise ControlPlaneError(f"no token for the ServiceAccount {OPERATOR_NAMESPACE}/{account}: {token.stderr}")
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}"
    return write_kubeconfig(kubeconfig_path, server=server, ca=ca, user=user, token=token.stdout.strip())


def install_tenant(admin_kubeconfig: Path, *, values: Mapping[str, Any], namespace: str) -> str:
    """Apply what the chart gives a namespace it watches (Role, RoleBinding, the training ServiceAccount).

    Returns the name of the training ServiceAccount. ``values`` are rendered in namespaced mode with
    ``watchNamespaces: [namespace]``; only the objects in that namespace are applied.
    """
    objects = render({**values, "watchNamespaces": [namespace]})
    mine = [o for o in objects if o["metadata"].get("namespace") == namespace]
    accounts = [
        o
        for o in mine
        if o["kind"] == "ServiceAccount"
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "trainer"
    ]
    if not accounts:
        raise ControlPlaneError(f"the chart rendered no training ServiceAccount in {namespace} for these values")
    _apply(admin_kubeconfig, mine)
    return str(accounts[0]["metadata"]["name"])
