"""A local "cluster": the API emulator and the kubelet, served from a background thread.

The operator, kubectl and the tests all reach it over HTTP through a kubeconfig, like a cluster.
Running it on its own event loop in a thread keeps it answering while the caller blocks (on a
subprocess, on a synchronous client, on a sleep-free poll), which a fixture sharing the test's loop
could not promise.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sandbox.apiserver import ApiServer, serve_api, write_kubeconfig
from sandbox.kubelet import LocalKubelet, PodRun


class LocalCluster:
    """``with LocalCluster(workdir=..., crd_paths=...) as cluster:`` gives ``cluster.url`` and ``cluster.kubeconfig``.

    ``hold_jobs()`` makes the kubelet create each new Job's pod but not start its process until
    ``release_jobs()``: the window in which tests kill the operator.
    """

    def __init__(self, *, workdir: Path, crd_paths: Sequence[Path], env_overrides: Mapping[str, str] | None = None,
                 namespace: str = "default") -> None:
        self.workdir = workdir
        self.crd_paths = list(crd_paths)
        self.env_overrides = dict(env_overrides or {})
        self.namespace = namespace
        self.kubeconfig = workdir / "kubeconfig"
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-cluster", daemon=True)
        self._stop: asyncio.Event | None = None
        self._running: Future[None] | None = None
        self._held = False
        self._release: asyncio.Event | None = None
        self._kubelet: LocalKubelet | None = None
        self._server: ApiServer | None = None

    async def _gate(self, job: dict[str, Any]) -> None:
        if self._held and self._release is not None:
            await self._release.wait()

    async def _main(self, ready: Future[str]) -> None:
        self._stop = asyncio.Event()
        self._release = asyncio.Event()
        try:
            async with serve_api(crd_paths=self.crd_paths) as api:
                self._server = api.server
                async with LocalKubelet(api_url=api.url, workdir=self.workdir / "pods",
                                        env_overrides=self.env_overrides, gate=self._gate) as kubelet:
                    self._kubelet = kubelet
                    ready.set_result(api.url)
                    await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def __enter__(self) -> LocalCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        ready: Future[str] = Future()
        self._running = asyncio.run_coroutine_threadsafe(self._main(ready), self._loop)
        self.url = ready.result(timeout=60)
        write_kubeconfig(self.kubeconfig, self.url, namespace=self.namespace)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        if self._running is not None:
            try:
                self._running.result(timeout=60)
            except Exception:  # the loop is being torn down; its failure was already reported
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def hold_jobs(self) -> None:
        self._held = True

    def release_jobs(self) -> None:
        self._held = False
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    @property
    def runs(self) -> list[PodRun]:
        return list(self._kubelet.runs) if self._kubelet is not None else []

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """What the API server stores, read on its own loop (e.g. ``objects("batch/v1/jobs", "team-a")``)."""
        assert self._server is not None
        server = self._server

        async def read() -> list[dict[str, Any]]:
            return server.list_objects(resource, namespace)

        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(timeout=30)
