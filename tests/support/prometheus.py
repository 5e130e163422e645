"""pytest fixtures around :mod:`sandbox.prometheus`.

One Prometheus serves the whole session because it starts in well under a second but holds state
that tests would otherwise have to clean up; tests keep apart by putting a label value of their own
(the ``prom_series_id`` fixture) on every series they push and every query they run. Data pushed
through remote write is queryable at once, so no test needs to wait.

A missing binary skips these tests on a developer machine, but fails them under ``CI=true``: in CI
a silently skipped integration suite would look green while testing nothing.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.prometheus import (
    PrometheusNotInstalled,
    PrometheusServer,
    find_binaries,
    start_prometheus,
)

__all__ = ["prom_series_id", "prometheus", "prometheus_binaries", "require_prometheus"]


def require_prometheus() -> tuple[str, str]:
    """The binaries, or skip (fail under CI=true) with the reason."""
    try:
        return find_binaries()
    except PrometheusNotInstalled as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {e}", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def prometheus_binaries() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool`` (skip or fail when missing, see module docstring)."""
    return require_prometheus()


@pytest.fixture(scope="session")
def prometheus(
    prometheus_binaries: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """A Prometheus on 127.0.0.1 shared by the session; push with ``prometheus.push(...)``."""
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    with start_prometheus(workdir) as server:
        yield server


@pytest.fixture
def prom_series_id(request: pytest.FixtureRequest) -> str:
    """A label value unique to this test, so tests sharing one server never see each other's data."""
    name = re.sub(r"[^a-zA-Z0-9_]+", "_", request.node.name)[:60]
    return f"{name}_{uuid.uuid4().hex[:8]}"
