"""Phase: the instants a policy is due, shared by every policy that reads the same query template.

Prometheus load should grow with query templates, not with policies. Policies created at different
times and each re-evaluated one interval after its last evaluation are due at instants spread over
the interval, and a scheduler tick then merges only the few that happen to be due together. Here a
policy's evaluations fall on its template's ticks instead: the instants ``offset + k * interval``
since the Unix epoch, where the offset comes from a hash of the template (its anchor) so that
templates land at different moments of the interval rather than all at once. Every policy of a
template is due on the same tick, and one batched query per template and chunk serves them all.

A policy is still evaluated at once when it is created or changed (its first evaluation comes early,
never late); it joins the phase from its next evaluation, which is at most one interval later. The
ticks are computed from the wall clock, so they survive a restart and agree across replicas.

Limits: a policy with several templates follows one of them (its anchor, the smallest key), so a
second template shared with policies anchored elsewhere may be read on more than one tick.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["TOLERANCE", "next_tick", "phase_offset"]

# A tick closer than this share of the interval to ``now`` is taken as this one, already served: the
# wall clock and the loop's monotonic timer drift apart by milliseconds, and waking a hair before the
# tick must not make a second evaluation a moment later.
TOLERANCE: Final = 0.05


def phase_offset(anchor: str, interval: float) -> float:
    """Seconds into each interval at which the template ``anchor`` is due, in ``[0, interval)``."""
    if not interval > 0 or not math.isfinite(interval):
        raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
    digest = hashlib.sha256(anchor.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * interval


def next_tick(now: datetime, *, interval: float, offset: float) -> datetime:
    """The first tick ``offset + k * interval`` (seconds since the epoch) after ``now``.

    A tick within ``TOLERANCE`` of an interval after ``now`` is skipped for the one after: ``now`` is
    taken as that tick's own evaluation, started a little early. A late evaluation (``now`` well past
    its tick) keeps the phase: the next tick is the next one on the grid, never ``now + interval``,
    and ticks missed while a cycle overran are dropped, not queued.
    """
    if not interval > 0 or not math.isfinite(interval):
        raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    elapsed = (now - epoch).total_seconds() + TOLERANCE * interval
    ticks = math.floor((elapsed - offset) / interval) + 1
    return epoch + timedelta(seconds=offset + ticks * interval)
