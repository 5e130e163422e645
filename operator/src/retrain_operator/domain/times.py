"""Times as Kubernetes writes them (RFC 3339, UTC, whole seconds), and the wall clock.

One definition, because every status, ledger and event compares the text it wrote earlier with
the text it writes now: two formatters that differ by a fraction of a second or an offset would
make an unchanged status look changed. Limits: whole seconds only; a time without an offset is
read as UTC (custom trainers write those), and text that is not a time reads as None.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC, to the second, with a ``Z``: the form the API server writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: Any) -> datetime | None:
    """The time in ``value``, or None when it is absent or not a time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def utcnow() -> datetime:
    """The wall clock; code that decides takes ``now`` as an argument instead."""
    return datetime.now(UTC)
