"""Ctrl-C or SIGTERM on the sandbox stops everything it started, within seconds, every time.

The sandbox runs as ``python -m sandbox`` in a process group of its own, as a terminal's foreground
job does; the signal goes to that whole group, as a terminal sends Ctrl-C. Every process descending
from the sandbox (the control plane and the operator run in sessions of their own, so the terminal's
signal never reaches them) must be gone within :data:`BOUND` seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from sandbox.s3 import S3Server

ROOT = Path(__file__).resolve().parents[1]
BOUND = 20.0


def _stat(pid: int) -> tuple[int, str] | None:
    """Parent PID and state of ``pid``, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> dict[int, str]:
    """Every living process below ``root``, with its command name."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children[stat[0]].append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


class Sandbox:
    """``python -m sandbox`` in a process group of its own, its output collected line by line."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "sandbox", "--workdir", str(workdir), "--timeout", "240", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, marker: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            assert self.process.poll() is None, f"the sandbox exited before {marker!r}:\n{self.output[-4000:]}"
            assert time.monotonic() < deadline, f"no {marker!r} within {timeout}s:\n{self.output[-4000:]}"
            time.sleep(0.2)

    def kill(self) -> None:
        """The test's own cleanup, by PID, for a failed test: what is left of the group, then the rest."""
        left = descendants(self.process.pid)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)


CLEANUP = """
import sys, time
from pathlib import Path
from sandbox.processes import Interrupted, stopped_by_signals

done = Path(sys.argv[1])
try:
    with stopped_by_signals():
        try:
            print("ready", flush=True)
            time.sleep(60)
        finally:
            time.sleep(1.0)  # a cleanup that takes a while; more signals arrive meanwhile
            done.write_text("cleaned up")
except Interrupted as stop:
    sys.exit(128 + stop.signum)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_block_and_more_signals_never_cut_its_cleanup_short(
    tmp_path: Path, sig: signal.Signals
) -> None:
    done = tmp_path / "done"
    child = subprocess.Popen(
        [sys.executable, "-c", CLEANUP, str(done)], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for _ in range(4):
            os.killpg(child.pid, sig)
            time.sleep(0.1)
        assert child.wait(timeout=10) == 128 + sig
        assert done.read_text() == "cleaned up"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("sig", "marker", "repeat", "code"),
    [
        # The reported case: make sandbox ARGS=--keep, the story told, then one Ctrl-C.
        (signal.SIGINT, "Still running", 1, 0),
        # Ctrl-C in the middle of the story, pressed again while the first one is being handled.
        (signal.SIGINT, "operator started", 2, 128 + signal.SIGINT),
        # SIGTERM in the middle of the story, sent three times as an impatient supervisor would.
        (signal.SIGTERM, "operator started", 3, 128 + signal.SIGTERM),
    ],
    ids=["ctrl-c-after-the-story", "ctrl-c-twice-during-the-story", "sigterm-during-the-story"],
)
def test_a_signal_to_the_group_stops_everything_the_sandbox_started(
    tmp_path: Path,
    prometheus_binaries: tuple[str, str],
    s3_server: S3Server,
    sig: signal.Signals,
    marker: str,
    repeat: int,
    code: int,
) -> None:
    sandbox = Sandbox(tmp_path / "sandbox", "--keep")
    try:
        sandbox.wait_for(marker, timeout=300)
        started = descendants(sandbox.process.pid)
        names = set(started.values())
        # What must be stopped is all there: the control plane and the operator in sessions of their own.
        for name in ("etcd", "kube-apiserver", "prometheus", "weed"):
            assert name in names, (name, started)
        sessions = {pid for pid in started if os.getsid(pid) != os.getsid(sandbox.process.pid)}
        assert len(sessions) >= 5, started  # etcd, kube-apiserver, controller manager, scheduler, the operator

        sent = time.monotonic()
        for _ in range(repeat):
            os.killpg(sandbox.process.pid, sig)
            time.sleep(0.3)
        deadline = sent + BOUND
        while time.monotonic() < deadline:
            left = {pid: name for pid, name in started.items() if alive(pid)}
            if sandbox.process.poll() is not None and not left:
                break
            time.sleep(0.1)
        took = time.monotonic() - sent
        left = {pid: name for pid, name in started.items() if alive(pid)}
        assert sandbox.process.poll() is not None, f"the sandbox still runs {took:.1f}s after {sig.name}"
        assert not left, f"still running {took:.1f}s after {sig.name}: {left}\n{sandbox.output[-3000:]}"
        print(f"{sig.name} x{repeat}: {len(started)} processes stopped in {took:.1f}s")
        assert sandbox.process.returncode == code, sandbox.output[-3000:]
    finally:
        sandbox.kill()
