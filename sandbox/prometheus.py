"""A real Prometheus server on 127.0.0.1, with history loaded at fixed timestamps.

Tests and the local sandbox need a Prometheus that answers PromQL exactly as production does,
including NaN, staleness and lookback, so the operator is never tested against a hand-written
imitation of the query engine. This module starts the ``prometheus`` binary of the host (the
Debian package in CI) on a free loopback port with its own config and data directory, and loads
history in two ways:

* :meth:`PrometheusServer.push` sends samples through the remote-write receiver while the server
  runs. The TSDB accepts out-of-order samples within ``out_of_order_time_window`` (30 days here) of
  the newest sample it holds, so a test may push its own history after other tests pushed newer
  data.
* :func:`backfill` (the ``history=`` argument of :func:`start_prometheus`) writes TSDB blocks with
  ``promtool tsdb create-blocks-from openmetrics`` before the server starts, for data of any age.

Facts verified against Prometheus 2.42 (Debian 2.42.0+ds) that the rest of the code relies on:

* Pushed samples are queryable as soon as the remote-write request returned 2xx: the append is
  committed before the response, so no wait or poll is needed. This holds for in-order and
  out-of-order samples, from 25 days old up to "now" (the last seconds included).
* The out-of-order window is measured from the newest sample in the TSDB, pushed or backfilled:
  on a fresh server a first push may be years old, but once anything recent is stored, a push
  older than 30 days before it fails ("too old sample", HTTP 500).
* A push is atomic: when any sample is rejected the whole request fails and nothing of it is
  stored. The same value again at an existing timestamp is accepted, so a push may be repeated.
  A different value at the newest timestamp of a series fails (HTTP 400, "duplicate sample"), but
  at an older timestamp it is silently accepted and wins; tests keep apart by label values instead.
* Head compaction (within a minute or so once the head spans more than 3 h) keeps every sample
  queryable, and out-of-order pushes keep working after it.
* Backfilled blocks are queryable from the moment ``/-/ready`` answers, for data years old, ten
  seconds old or in the future, and later pushes that overlap the blocks are queryable alongside
  them. Retention is measured from the newest block, not from the wall clock, so the server runs
  with a retention of 100 years and nothing loaded is deleted.
* NaN is stored and returned as ``"NaN"`` by both paths (it is not the staleness marker, which is
  one specific NaN bit pattern that this module never sends); ``+Inf`` and ``-Inf`` too.
* A scrape target given at start is first scraped 5 to 6 s later even with a 1 s interval (target
  updates from service discovery are batched every 5 s); use pushed samples where a test needs
  data at once, or :meth:`PrometheusServer.wait_for` with a deadline.

Limits: one process per :func:`start_prometheus`, no TLS or auth in front of it (tests that need
those put a small proxy or fake server in front), float samples only (no native histograms or
exemplars), and the out-of-order window caps how far back :meth:`PrometheusServer.push` can go
relative to the newest sample already stored; use ``history=`` for older data.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.processes import free_ports

__all__ = [
    "OUT_OF_ORDER_WINDOW",
    "PrometheusNotInstalled",
    "PrometheusServer",
    "PrometheusStartError",
    "PushError",
    "Series",
    "backfill",
    "encode_remote_write",
    "find_binaries",
    "start_prometheus",
]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Samples older than this relative to the newest stored sample are rejected by push(); history
# older than that goes through backfill() before start.
OUT_OF_ORDER_WINDOW = "30d"
# Retention counts from the newest block, so backfilled years-old history would otherwise be
# deleted at the first compaction once newer data arrives.
_DEFAULT_RETENTION = "100y"


class PrometheusNotInstalled(RuntimeError):
    """The ``prometheus`` or ``promtool`` binary is not on PATH."""


class PrometheusStartError(RuntimeError):
    """The server exited or did not become ready in time; the message ends with its log tail."""


class PushError(RuntimeError):
    """The remote-write receiver rejected a push; nothing of that push was stored."""


@dataclass(frozen=True)
class Series:
    """One time series: metric name, labels (without ``__name__``) and (seconds, value) samples."""

    metric: str
    labels: Mapping[str, str]
    samples: Sequence[tuple[float, float]]

    def __post_init__(self) -> None:
        if not _METRIC_NAME.match(self.metric):
            raise ValueError(f"invalid metric name {self.metric!r}")
        for name in self.labels:
            if not _LABEL_NAME.match(name) or name == "__name__":
                raise ValueError(f"invalid label name {name!r}")

    def sorted_samples(self) -> list[tuple[int, float]]:
        """Samples in time order with millisecond timestamps, as both storage paths want them."""
        return sorted((round(ts * 1000), float(value)) for ts, value in self.samples)


def find_binaries() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool``; raises :class:`PrometheusNotInstalled`."""
    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if prometheus is None or promtool is None:
        raise PrometheusNotInstalled(
            "prometheus and promtool must be on PATH (Debian/Ubuntu: apt-get install prometheus)"
        )
    return prometheus, promtool


# --- remote write: a snappy-framed protobuf WriteRequest, encoded by hand --------------------------
#
# The message is tiny (WriteRequest{repeated TimeSeries{repeated Label, repeated Sample}}), so a few
# lines of encoding avoid depending on protobuf and snappy packages in every environment that runs
# the tests.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _encode_sample(timestamp_ms: int, value: float) -> bytes:
    # Sample{double value = 1; int64 timestamp = 2;}; int64 varints use two's complement.
    return (
        _varint(1 << 3 | 1)
        + struct.pack("<d", value)
        + _varint(2 << 3 | 0)
        + _varint(timestamp_ms & 0xFFFFFFFFFFFFFFFF)
    )


def _encode_series(series: Series) -> bytes:
    labels = sorted({**series.labels, "__name__": series.metric}.items())
    out = bytearray()
    for name, label_value in labels:
        label = _length_delimited(1, name.encode()) + _length_delimited(2, label_value.encode())
        out += _length_delimited(1, label)
    for timestamp_ms, value in series.sorted_samples():
        out += _length_delimited(2, _encode_sample(timestamp_ms, value))
    return bytes(out)


def _snappy_literal_block(data: bytes) -> bytes:
    """Snappy block format made only of literals: valid for every decoder, just not smaller."""
    out = bytearray(_varint(len(data)))
    chunk = 65536
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        length = len(piece) - 1
        if length < 60:
            out.append(length << 2)
        elif length < 1 << 8:
            out += bytes([60 << 2, length])
        else:
            out += bytes([61 << 2]) + length.to_bytes(2, "little")
        out += piece
    return bytes(out)


def encode_remote_write(series: Iterable[Series]) -> bytes:
    """The body of a remote-write 1.0 request (snappy-compressed protobuf ``WriteRequest``)."""
    request = b"".join(_length_delimited(1, _encode_series(s)) for s in series)
    return _snappy_literal_block(request)


# --- backfill: OpenMetrics text through promtool -------------------------------------------------


def _om_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _om_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _openmetrics(series: Sequence[Series]) -> str:
    # A metric family's samples must be contiguous, so series are grouped by metric name; no TYPE
    # line, so the family is "unknown" and any metric name (no _total rule) is accepted.
    lines: list[str] = []
    for metric in sorted({s.metric for s in series}):
        for s in (s for s in series if s.metric == metric):
            labels = ",".join(f'{k}="{_om_label_value(v)}"' for k, v in sorted(s.labels.items()))
            name = f"{metric}{{{labels}}}" if labels else metric
            for timestamp_ms, value in s.sorted_samples():
                lines.append(f"{name} {_om_float(value)} {timestamp_ms / 1000!r}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(series: Sequence[Series], *, data_dir: Path, promtool: str | None = None) -> None:
    """Write ``series`` as TSDB blocks into ``data_dir``; the server must not be running on it.

    Samples may be of any age. Blocks are picked up when Prometheus starts.
    """
    if not series:
        return
    if promtool is None:
        promtool = find_binaries()[1]
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".om", dir=data_dir.parent, delete=False) as f:
        f.write(_openmetrics(series))
        source = Path(f.name)
    try:
        result = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source), str(data_dir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    finally:
        source.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {(result.stderr or result.stdout).strip()[-2000:]}")


# --- the server ----------------------------------------------------------------------------------


def _config(*, scrape_targets: Sequence[str], scrape_interval: str, scrape_job: str = "targets") -> str:
    # JSON is valid YAML, so no YAML library is needed here.
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "storage": {"tsdb": {"out_of_order_time_window": OUT_OF_ORDER_WINDOW}},
    }
    if scrape_targets:
        config["scrape_configs"] = [
            {
                "job_name": scrape_job,
                "scrape_interval": scrape_interval,
                "static_configs": [{"targets": list(scrape_targets)}],
            }
        ]
    return json.dumps(config, indent=2)


@dataclass
class PrometheusServer:
    """A running Prometheus process; use :func:`start_prometheus` to get one."""

    url: str
    port: int
    workdir: Path
    data_dir: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def push(self, series: Sequence[Series], *, timeout: float = 30.0) -> None:
        """Store ``series`` through remote write; queryable as soon as this returns."""
        if not series:
            return
        request = urllib.request.Request(
            f"{self.url}/api/v1/write",
            data=encode_remote_write(series),
            method="POST",
            headers={
                "Content-Encoding": "snappy",
                "Content-Type": "application/x-protobuf",
                "X-Prometheus-Remote-Write-Version": "0.1.0",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace").strip()
            raise PushError(f"remote write rejected with HTTP {e.code}: {detail[:1000]}") from None

    def query(self, promql: str, *, at: float | None = None, timeout: float = 30.0) -> Any:
        """The ``data`` of an instant query, for checks in tests and the sandbox (not the operator)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = repr(at)
        request = urllib.request.Request(
            f"{self.url}/api/v1/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)["data"]
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace").strip()
            raise RuntimeError(f"query failed with HTTP {e.code}: {detail[:1000]}") from None

    def wait_for(self, promql: str, *, timeout: float = 15.0) -> Any:
        """Poll an instant query until its result is not empty (for scraped data); returns ``data``."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.query(promql)
            if data["result"]:
                return data
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no result for {promql!r} within {timeout}s")
            time.sleep(0.1)  # poll interval, bounded by the deadline

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, timeout: float = 10.0) -> None:
        """Terminate by PID, then kill if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _launch(
    *,
    binary: str,
    workdir: Path,
    data_dir: Path,
    config_path: Path,
    extra_args: Sequence[str],
    ready_timeout: float,
) -> PrometheusServer:
    [port] = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "prometheus.log"
    args = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-remote-write-receiver",
    ]
    if not any(a.startswith("--storage.tsdb.retention") for a in extra_args):
        args.append(f"--storage.tsdb.retention.time={_DEFAULT_RETENTION}")
    args.extend(extra_args)
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    server = PrometheusServer(
        url=url,
        port=port,
        workdir=workdir,
        data_dir=data_dir,
        config_path=config_path,
        log_path=log_path,
        process=process,
    )
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrometheusStartError(f"prometheus exited with code {process.returncode}:\n{server.log_tail()}")
        if _is_ready(url):
            return server
        time.sleep(0.05)  # poll interval of the readiness loop, bounded by the deadline above
    server.stop()
    raise PrometheusStartError(f"prometheus not ready after {ready_timeout}s:\n{server.log_tail()}")


@contextlib.contextmanager
def start_prometheus(
    workdir: Path,
    *,
    scrape_targets: Sequence[str] = (),
    scrape_interval: str = "1s",
    scrape_job: str = "targets",
    extra_args: Sequence[str] = (),
    history: Sequence[Series] = (),
    ready_timeout: float = 30.0,
) -> Iterator[PrometheusServer]:
    """Run Prometheus in ``workdir`` (config, data and log live there) until the block exits.

    ``history`` is backfilled into the data directory before start. ``scrape_targets`` are scraped
    under the job name ``scrape_job`` (the ``job`` label of their series). ``extra_args`` go to the
    command line last, for example ``--query.lookback-delta=1m``.
    """
    binary, promtool = find_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    config_path = workdir / "prometheus.yml"
    config_path.write_text(
        _config(scrape_targets=scrape_targets, scrape_interval=scrape_interval, scrape_job=scrape_job)
    )
    backfill(history, data_dir=data_dir, promtool=promtool)
    server: PrometheusServer | None = None
    # The free port is found before the process binds it, so another process may take it in
    # between; a start that fails for that reason is retried on a new port.
    for attempt in range(3):
        try:
            server = _launch(
                binary=binary,
                workdir=workdir,
                data_dir=data_dir,
                config_path=config_path,
                extra_args=extra_args,
                ready_timeout=ready_timeout,
            )
            break
        except PrometheusStartError as e:
            if "address already in use" not in str(e) or attempt == 2:
                raise
    assert server is not None
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    """Run a sandbox Prometheus in the foreground: ``python -m sandbox.prometheus DIR``."""
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else ".sandbox/prometheus").resolve()
    with start_prometheus(workdir, scrape_targets=sys.argv[2:]) as prom:
        print(f"prometheus ready at {prom.url} (pid {prom.process.pid}, data in {prom.data_dir})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            prom.process.wait()


if __name__ == "__main__":
    main()
