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

from retrain_operator.domain.budget import Limits, Usage
from retrain_operator.domain.decision import Decision
from retrain_operator.domain.policy_status import PolicyStatus

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
# 5 s p99 target (DESIGN.md) for bench/cluster.py to read quantiles off the buckets. The coarse ones
# above let a quantile exceed a whole interval (60 s by default), which the lag alert compares with.
LAG_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0),
    *(60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
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

# What the dashboard and alert rules (docs/monitoring/) need beyond the families above: how long
# trainings take, each policy's phase, conditions, failure streak and interval, and budget limits.
# A failure streak and the last evaluation time are per policy because an alert must name the policy.
TRAINING_SECONDS = Histogram(
    "retrain_training_duration_seconds",
    "Real duration of finished training Jobs (start to completion), by outcome.",
    ["namespace", "outcome"],
    buckets=(30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0),
    registry=REGISTRY,
)
POLICY_PHASE = Gauge(
    "retrain_policy_phase",
    "1 for each policy's current phase (Watching, Training, Suspended, Degraded, Invalid); one series per policy.",
    ["namespace", "policy", "phase"],
    registry=REGISTRY,
)
CONDITION_VALUES = {"True": 1, "False": 0}  # anything else (Unknown) is -1: never mistaken for False
POLICY_CONDITION = Gauge(
    "retrain_policy_condition",
    "A policy's condition: 1 while True, 0 while False, -1 while Unknown, with its current reason.",
    ["namespace", "policy", "condition", "reason"],
    registry=REGISTRY,
)
POLICY_FAILURES = Gauge(
    "retrain_policy_training_failures_in_a_row",
    "Training Jobs of a policy that failed since its last successful one.",
    ["namespace", "policy"],
    registry=REGISTRY,
)
POLICY_INTERVAL = Gauge(
    "retrain_policy_interval_seconds",
    "A valid policy's evaluation interval (spec.evaluation.interval).",
    ["namespace", "policy"],
    registry=REGISTRY,
)
POLICY_EVALUATED = Gauge(
    "retrain_policy_last_evaluation_timestamp_seconds",
    "Unix time of a policy's last evaluation by this replica.",
    ["namespace", "policy"],
    registry=REGISTRY,
)
BUDGET_LIMIT = Gauge(
    "retrain_budget_limit",
    "Limit of a RetrainBudget per window, by measure (only the measures it limits).",
    ["namespace", "budget", "measure"],
    registry=REGISTRY,
)


class Telemetry:
    """Records what the operator did into its metrics; one per operator, handed to each part that records.

    It remembers which triggers, phase and condition reasons it exported for each policy, so a trigger
    removed from a policy, a phase or reason left, or a deleted policy, stops being reported instead of
    showing its last value forever.
    """

    def __init__(self) -> None:
        self._known_triggers: dict[tuple[str, str], set[str]] = {}
        self._known_states: dict[tuple[str, str], list[tuple[str, ...]]] = {}

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
        self._forget_state(namespace, policy)

    def budget(self, namespace: str, budget: str, used: Usage) -> None:
        """What a RetrainBudget has spent in its current window, by measure."""
        for measure, value in used.to_dict().items():
            BUDGET_USED.labels(namespace, budget, measure).set(value)

    def trained(self, namespace: str, outcome: str, seconds: float) -> None:
        """A training Job finished (``Succeeded``, ``Failed``) after running ``seconds``."""
        TRAINING_SECONDS.labels(namespace, outcome).observe(seconds)

    def budget_limits(self, namespace: str, budget: str, limits: Limits) -> None:
        """A RetrainBudget's limits per window; a measure it no longer limits stops being reported."""
        for measure, limit in _limits(limits).items():
            if limit is None:
                try:
                    BUDGET_LIMIT.remove(namespace, budget, measure)
                except KeyError:
                    pass
            else:
                BUDGET_LIMIT.labels(namespace, budget, measure).set(limit)

    def policy_state(self, namespace: str, policy: str, status: PolicyStatus, *, interval: float | None) -> None:
        """A policy's status as just built: its phase, conditions and failure streak, its interval (None while
        invalid), and that it was evaluated now. Series of a phase or reason it left are removed, after the new
        ones are set, so a scrape in between never sees the policy without a phase."""
        keys: list[tuple[str, ...]] = []
        if status.phase:
            POLICY_PHASE.labels(namespace, policy, status.phase).set(1)
            keys.append(("phase", status.phase))
        for condition in status.conditions:
            POLICY_CONDITION.labels(namespace, policy, condition.type, condition.reason).set(
                CONDITION_VALUES.get(condition.status, -1)
            )
            keys.append(("condition", condition.type, condition.reason))
        if interval is not None:
            POLICY_INTERVAL.labels(namespace, policy).set(interval)
            keys.append(("interval",))
        POLICY_FAILURES.labels(namespace, policy).set(status.failures_in_a_row)
        POLICY_EVALUATED.labels(namespace, policy).set_to_current_time()
        # A counter first scraped at 1 loses that first increment to rate() and increase(): the namespace's
        # outcome series start at 0, before its first Job, so the dashboard sees its first training too.
        for outcome in ("Started", "Succeeded", "Failed"):
            JOBS.labels(namespace, outcome)
        for outcome in ("Succeeded", "Failed"):
            TRAINING_SECONDS.labels(namespace, outcome)
        for gone in set(self._known_states.get((namespace, policy), ())) - set(keys):
            _forget_state_series(namespace, policy, gone)
        self._known_states[(namespace, policy)] = keys

    def _forget_state(self, namespace: str, policy: str) -> None:
        for key in self._known_states.pop((namespace, policy), ()):
            _forget_state_series(namespace, policy, key)
        for family in (POLICY_FAILURES, POLICY_EVALUATED):
            try:
                family.remove(namespace, policy)
            except KeyError:
                pass


def _forget_state_series(namespace: str, policy: str, key: tuple[str, ...]) -> None:
    family = {"phase": POLICY_PHASE, "condition": POLICY_CONDITION, "interval": POLICY_INTERVAL}[key[0]]
    try:
        family.remove(namespace, policy, *key[1:])
    except KeyError:
        pass


def _limits(limits: Limits) -> dict[str, float | None]:
    """The limits by the measure names ``Usage.to_dict`` uses, so used and limit series pair up."""
    return {"runs": limits.runs, "cpuHours": limits.cpu_hours, "gpuHours": limits.gpu_hours, "cost": limits.cost}


def _forget_trigger(namespace: str, policy: str, trigger: str) -> None:
    for gauge in (TRIGGER_VALUE, TRIGGER_FIRING):
        try:
            gauge.remove(namespace, policy, trigger)
        except KeyError:
            pass
