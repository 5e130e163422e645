"""The operator's own Prometheus metrics: what it evaluated, queried, decided and launched.

The metric families live in ``REGISTRY``, which ``run --metrics-port`` serves; what records into
them is one ``Telemetry`` object, made by the command and handed to each part that records, so no
part reaches for a global or is fed through callbacks. Labels are bounded
(namespace, reason, endpoint, outcome): never a value a tenant can grow without limit, such as a
trigger's message. Limits: the families are per process, so two operators in one process (tests)
share them; keep their policy names apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from retrain_operator.domain.budget import Usage
from retrain_operator.domain.decision import Decision

REGISTRY = CollectorRegistry(auto_describe=True)

EVALUATIONS = Counter("retrain_evaluations_total", "Policy evaluations.", ["namespace"], registry=REGISTRY)
DECISIONS = Counter(
    "retrain_decisions_total",
    "Decisions taken, by action and reason.",
    ["namespace", "action", "reason"],
    registry=REGISTRY,
)
QUERIES = Counter(
    "retrain_prometheus_queries_total",
    "Prometheus queries, by endpoint and result.",
    ["endpoint", "result"],
    registry=REGISTRY,
)
QUERY_SECONDS = Histogram(
    "retrain_prometheus_query_seconds", "Latency of Prometheus queries.", ["endpoint"], registry=REGISTRY
)
SAMPLES = Counter(
    "retrain_prometheus_samples_total",
    "Samples (series values) returned by Prometheus queries, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
# Per query template read in a cycle (a scheduler tick): how many policies it served and how many
# chunked queries it took. Queries per minute should follow templates x chunks, not policies.
TEMPLATE_POLICIES = Histogram(
    "retrain_template_policies",
    "Policies served by one query template in one evaluation cycle, by trigger type.",
    ["type"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
    registry=REGISTRY,
)
TEMPLATE_CHUNKS = Histogram(
    "retrain_template_chunks",
    "Chunks (batched query plans) one query template took in one evaluation cycle, by trigger type.",
    ["type"],
    buckets=(1, 2, 3, 5, 10, 20, 50),
    registry=REGISTRY,
)
CYCLES = Counter(
    "retrain_cycles_total", "Evaluation cycles (scheduler ticks that evaluated policies).", registry=REGISTRY
)
CYCLE_POLICIES = Histogram(
    "retrain_cycle_policies",
    "Policies evaluated together in one cycle.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000),
    registry=REGISTRY,
)
CYCLE_SECONDS = Histogram(
    "retrain_cycle_seconds",
    "Duration of one evaluation cycle, observation and reconciliation; a cycle longer than the interval shows "
    "as lag of the next, never as overlapping cycles.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)
# From 10 ms (a cycle that starts on time) to 30 s (half an interval late): fine enough around the
# 5 s p99 target (DESIGN.md) for bench/cluster.py to read quantiles off the buckets.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
EVALUATION_LAG = Histogram(
    "retrain_evaluation_lag_seconds",
    "Seconds from when a policy was due to when its evaluation started.",
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
JOBS = Counter(
    "retrain_jobs_total", "Training Jobs started and finished, by outcome.", ["namespace", "outcome"], registry=REGISTRY
)

TRIGGER_VALUE = Gauge(
    "retrain_trigger_value",
    "Last observed value of each trigger (absent when inconclusive).",
    ["namespace", "policy", "trigger"],
    registry=REGISTRY,
)
TRIGGER_FIRING = Gauge(
    "retrain_trigger_firing", "1 while a trigger fires, else 0.", ["namespace", "policy", "trigger"], registry=REGISTRY
)
BUDGET_USED = Gauge(
    "retrain_budget_used",
    "Spent in the current window of a RetrainBudget, by measure.",
    ["namespace", "budget", "measure"],
    registry=REGISTRY,
)


class Telemetry:
    """Records what the operator did into its metrics; one per operator, handed to each part that records.

    It remembers which triggers it exported for each policy, so a trigger removed from a policy, or
    a deleted policy, stops being reported instead of showing its last value forever.
    """

    def __init__(self) -> None:
        self._known_triggers: dict[tuple[str, str], set[str]] = {}

    def decided(self, namespace: str, decision: Decision) -> None:
        """One evaluation of a policy in ``namespace`` ended with ``decision``."""
        EVALUATIONS.labels(namespace).inc()
        DECISIONS.labels(namespace, decision.action, decision.reason).inc()

    def job(self, namespace: str, outcome: str) -> None:
        """A training Job started (``Started``) or finished (``Succeeded``, ``Failed``)."""
        JOBS.labels(namespace, outcome).inc()

    def lagged(self, seconds: float) -> None:
        """A policy's evaluation started ``seconds`` after it was due."""
        EVALUATION_LAG.observe(seconds)

    def query(self, endpoint: str, seconds: float, problem: str | None, *, samples: int = 0) -> None:
        """One Prometheus query to ``endpoint``: how long it took, what it returned and, when it failed, why."""
        QUERIES.labels(endpoint, problem or "Success").inc()
        QUERY_SECONDS.labels(endpoint).observe(seconds)
        SAMPLES.labels(endpoint).inc(samples)

    def template_read(self, trigger_type: str, *, chunks: int, policies: int) -> None:
        """One query template read in a cycle: the policies it served and the chunks it took."""
        TEMPLATE_POLICIES.labels(trigger_type).observe(policies)
        TEMPLATE_CHUNKS.labels(trigger_type).observe(chunks)

    def cycle(self, *, policies: int, seconds: float) -> None:
        """One evaluation cycle (a tick) evaluated ``policies`` together in ``seconds``."""
        CYCLES.inc()
        CYCLE_POLICIES.observe(policies)
        CYCLE_SECONDS.observe(seconds)

    def triggers(self, namespace: str, policy: str, values: Mapping[str, tuple[float | None, bool]]) -> None:
        """Export each trigger's value and firing state; a trigger that disappeared is removed."""
        known = self._known_triggers.setdefault((namespace, policy), set())
        for gone in known - set(values):
            _forget_trigger(namespace, policy, gone)
        for trigger, (value, firing) in values.items():
            if value is None:
                try:
                    TRIGGER_VALUE.remove(namespace, policy, trigger)
                except KeyError:
                    pass
            else:
                TRIGGER_VALUE.labels(namespace, policy, trigger).set(value)
            TRIGGER_FIRING.labels(namespace, policy, trigger).set(1 if firing else 0)
        known.clear()
        known.update(values)

    def forget_policy(self, namespace: str, policy: str) -> None:
        for trigger in self._known_triggers.pop((namespace, policy), set()):
            _forget_trigger(namespace, policy, trigger)

    def budget(self, namespace: str, budget: str, used: Usage) -> None:
        """What a RetrainBudget has spent in its current window, by measure."""
        for measure, value in used.to_dict().items():
            BUDGET_USED.labels(namespace, budget, measure).set(value)


def _forget_trigger(namespace: str, policy: str, trigger: str) -> None:
    for gauge in (TRIGGER_VALUE, TRIGGER_FIRING):
        try:
            gauge.remove(namespace, policy, trigger)
        except KeyError:
            pass
