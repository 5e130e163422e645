"""Copy the CRDs of ``crds/`` into the chart's ``crds/`` directory, byte for byte.

``crds/`` is the one source of truth; the chart carries a generated copy because Helm installs
CRDs only from a chart's own ``crds/`` directory. ``--check`` changes nothing and exits 1 with
every difference, so CI fails when someone edits one copy and not the other. A file of the chart's
``crds/`` without a source in ``crds/`` is an error, and ``sync`` removes it.

Usage: ``python hack/sync_crds.py [--check]``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "crds"
TARGET = ROOT / "charts" / "retrain-operator" / "crds"


def expected_files() -> dict[str, bytes]:
    """What the chart's ``crds/`` must hold: a copy of every source CRD, and nothing else."""
    return {path.name: path.read_bytes() for path in sorted(SOURCE.glob("*.yaml"))}


def differences() -> list[str]:
    """Every way the chart's copy differs from ``crds/``, one line each; empty when in sync."""
    wanted = expected_files()
    present = {path.name: path.read_bytes() for path in sorted(TARGET.glob("*.yaml"))}
    problems = []
    for name, data in wanted.items():
        if name not in present:
            problems.append(f"{TARGET.relative_to(ROOT)}/{name} is missing")
        elif present[name] != data:
            problems.append(f"{TARGET.relative_to(ROOT)}/{name} differs from crds/{name}")
    for name in sorted(set(present) - set(wanted)):
        problems.append(f"{TARGET.relative_to(ROOT)}/{name} has no source in crds/")
    return problems


def sync() -> list[str]:
    """Make the chart's copy identical; return the names of the files written or removed."""
    TARGET.mkdir(parents=True, exist_ok=True)
    changed = []
    wanted = expected_files()
    for name, data in wanted.items():
        path = TARGET / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            changed.append(name)
    for path in sorted(TARGET.glob("*.yaml")):
        if path.name not in wanted:
            path.unlink()
            changed.append(path.name)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the copy differs")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python hack/sync_crds.py", file=sys.stderr)
        return 1 if problems else 0
    for name in sync():
        print(f"updated {TARGET.relative_to(ROOT)}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
