"""Long Prometheus histories for backtests: backfilled with promtool in few blocks, then served.

``sandbox.prometheus.backfill`` cuts blocks of two hours, which is slow for weeks of history; here
promtool writes blocks of up to 1,000 hours, so a month of samples is backfilled in seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sandbox.prometheus import PrometheusServer, Series, _openmetrics, find_binaries, start_prometheus


def backfill_blocks(series: Sequence[Series], data_dir: Path) -> None:
    """``series`` as TSDB blocks of up to 1,000 hours in ``data_dir`` (the server must not be running)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / "history.om"
    source.write_text(_openmetrics(series))
    command = [find_binaries()[1], "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=1000h"]
    try:
        subprocess.run([*command, str(source), str(data_dir)], check=True, capture_output=True, timeout=900)
    finally:
        source.unlink()


@contextlib.contextmanager
def prometheus_with_history(workdir: Path, series: Sequence[Series]) -> Iterator[PrometheusServer]:
    """A Prometheus on 127.0.0.1 serving ``series``, backfilled before it starts."""
    backfill_blocks(series, workdir / "data")
    with start_prometheus(workdir) as server:
        yield server


def own_metric(server: PrometheusServer, name: str, **labels: str) -> float:
    """The sum of Prometheus' own metric ``name`` over the series with ``labels``, read from its /metrics page
    (the test servers do not scrape themselves, and reading the page is no query)."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def http_requests(server: PrometheusServer, handler: str) -> float:
    """How many requests Prometheus answered on ``handler`` (e.g. ``/api/v1/query_range``)."""
    return own_metric(server, "prometheus_http_requests_total", handler=handler)
