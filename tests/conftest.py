"""Shared fixtures: the real Prometheus and S3 servers, and a guard that no test is skipped under CI."""

from __future__ import annotations

import os

import pytest

from tests.support.cluster import *  # noqa: F403  (fixtures)
from tests.support.prometheus import *  # noqa: F403  (fixtures)
from tests.support.s3 import *  # noqa: F403  (fixtures)
from tests.support.stack import cluster, operator_kubeconfig, stack  # noqa: F401  (fixtures)

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skipped test is a failure: a missing component must never pass silently."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if IN_CI and skipped:
        for report in skipped:
            print(f"\nskipped under CI=true (a failure): {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
