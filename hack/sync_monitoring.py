"""Copy the Grafana dashboard and the alert rules of ``docs/monitoring/`` into the chart, byte for byte.

``docs/monitoring/`` is the one source of truth, for people who load the files by hand; the chart
carries a copy under ``files/`` because Helm's ``.Files.Get`` reads only files inside the chart, and
its ConfigMap and PrometheusRule templates read that copy. ``--check`` changes nothing and exits 1
with every difference, so CI fails when someone edits one copy and not the other.

Usage: ``python hack/sync_monitoring.py [--check]``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "monitoring"
TARGET = ROOT / "charts" / "retrain-operator" / "files"
FILES = ("grafana-dashboard.json", "alerts.yaml")


def differences() -> list[str]:
    """Every way the chart's copies differ from ``docs/monitoring/``, one line each; empty when in sync."""
    problems = []
    for name in FILES:
        source, copy = SOURCE / name, TARGET / name
        if not copy.exists():
            problems.append(f"{copy.relative_to(ROOT)} is missing")
        elif copy.read_bytes() != source.read_bytes():
            problems.append(f"{copy.relative_to(ROOT)} differs from {source.relative_to(ROOT)}")
    return problems


def sync() -> list[str]:
    """Make the chart's copies identical; return the names of the files written."""
    TARGET.mkdir(parents=True, exist_ok=True)
    changed = []
    for name in FILES:
        data = (SOURCE / name).read_bytes()
        copy = TARGET / name
        if not copy.exists() or copy.read_bytes() != data:
            copy.write_bytes(data)
            changed.append(name)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a copy differs")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python hack/sync_monitoring.py", file=sys.stderr)
        return 1 if problems else 0
    for name in sync():
        print(f"updated {TARGET.relative_to(ROOT)}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
