"""Bounds on what a tenant may ask of the shared Prometheus and of the cluster, in one place.

Two kinds. Fixed maxima hold for every cluster: the CRDs carry them as CEL rules and ``maxLength``/
``maxItems``, so the API server refuses most of them at admission, and the parsers check them again
for objects read from files or admitted before a rule existed. Query ceilings are the cluster
admin's: how far back a built-in query may reach and how many series a drift comparison may read
depend on the Prometheus behind the MetricsEndpoints, so they are operator flags (and chart values)
that the CRD cannot see; a policy over one is ``Valid=False`` naming the field, the ceiling and the
flag that sets it. The defaults allow every example and keep the worst policy a tenant can write to
a query a shared Prometheus answers in well under a second (``bench/query_cost.py``).

Limits: a raw ``query`` trigger's own PromQL is scanned for range selectors, subqueries and
``offset`` (a textual scan, not a parse); only endpoints with ``allowRawQueries`` run such queries.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0

# Fixed maxima of duration fields, in seconds (the CRDs' CEL rules hold the same numbers).
MAX_INTERVAL = DAY
MAX_COOLDOWN = 365 * DAY
MAX_BUDGET_WINDOW = 366 * DAY
MAX_DEADLINE = 30 * DAY
MAX_ESTIMATED_DURATION = 30 * DAY
MAX_HORIZON = 3650 * DAY
MAX_ENDPOINT_TIMEOUT = 600.0

# Fixed maxima of counts and strings a tenant writes.
MAX_NAME = 253
MAX_LABEL_VALUE = 1024
MAX_FEATURES = 256
MAX_BUCKETS = 128
MAX_MIN_SAMPLES = 1e12
MAX_ARGS = 64
MAX_ARG_LENGTH = 4096
MAX_IMAGE = 512
MAX_ENV_VALUE = 32768
MAX_PARAMS = 64
MAX_PARAMS_DEPTH = 4


@dataclass(frozen=True)
class Ceiling:
    """One admin ceiling: its value and who sets it (the operator flag and the chart value)."""

    seconds_or_count: float
    flag: str
    value: str

    @property
    def who(self) -> str:
        return f"set by the cluster admin with the operator flag {self.flag}, chart value {self.value}"


@dataclass(frozen=True)
class QueryLimits:
    """The admin's ceilings on the cost of the queries the operator builds for a policy.

    ``max_range``: the longest span of history one built-in query may read (``for`` plus the
    averaging window, a drift reference's offset plus its window, a dataVolume count since training).
    ``max_for``/``max_window``/``max_offset``: the largest ``for``, window and reference offset.
    ``max_drift_series``: the most bucket series one drift comparison may read for one policy.
    """

    max_range: float = 31 * DAY
    max_for: float = DAY
    max_window: float = DAY
    max_offset: float = 30 * DAY
    max_drift_series: int = 5000

    def ceiling(self, kind: str) -> Ceiling:
        """``kind`` is one of range, for, window, offset, driftSeries."""
        return {
            "range": Ceiling(self.max_range, "--max-query-range", "queryLimits.maxRange"),
            "for": Ceiling(self.max_for, "--max-for", "queryLimits.maxFor"),
            "window": Ceiling(self.max_window, "--max-window", "queryLimits.maxWindow"),
            "offset": Ceiling(self.max_offset, "--max-offset", "queryLimits.maxOffset"),
            "driftSeries": Ceiling(self.max_drift_series, "--max-drift-series", "queryLimits.maxDriftSeries"),
        }[kind]


DEFAULT_LIMITS = QueryLimits()
