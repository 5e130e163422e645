"""The operator's own Prometheus metrics: what it evaluated, queried, decided and launched.

Labels are bounded (namespace, reason, endpoint, outcome): never a value a tenant can grow without
limit, such as a trigger's message.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVALUATIONS = Counter("retrain_evaluations_total", "Policy evaluations.", ["namespace"], registry=REGISTRY)
DECISIONS = Counter("retrain_decisions_total", "Decisions taken, by action and reason.",
                    ["namespace", "action", "reason"], registry=REGISTRY)
QUERIES = Counter("retrain_prometheus_queries_total", "Prometheus queries, by endpoint and result.",
                  ["endpoint", "result"], registry=REGISTRY)
QUERY_SECONDS = Histogram("retrain_prometheus_query_seconds", "Latency of Prometheus queries.", ["endpoint"],
                          registry=REGISTRY)
# From 10 ms (a cycle that starts on time) to 30 s (half an interval late): fine enough around the
# 5 s p99 target (DESIGN.md) for bench/cluster.py to read quantiles off the buckets.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
EVALUATION_LAG = Histogram("retrain_evaluation_lag_seconds",
                           "Seconds from when a policy was due to when its evaluation started.",
                           buckets=LAG_BUCKETS, registry=REGISTRY)
JOBS = Counter("retrain_jobs_total", "Training Jobs started and finished, by outcome.", ["namespace", "outcome"],
               registry=REGISTRY)


def on_query(endpoint: str, seconds: float, problem: str | None) -> None:
    QUERIES.labels(endpoint, problem or "Success").inc()
    QUERY_SECONDS.labels(endpoint).observe(seconds)
TRIGGER_VALUE = Gauge("retrain_trigger_value", "Last observed value of each trigger (absent when inconclusive).",
                      ["namespace", "policy", "trigger"], registry=REGISTRY)
TRIGGER_FIRING = Gauge("retrain_trigger_firing", "1 while a trigger fires, else 0.", ["namespace", "policy", "trigger"],
                       registry=REGISTRY)
BUDGET_USED = Gauge("retrain_budget_used", "Spent in the current window of a RetrainBudget, by measure.",
                    ["namespace", "budget", "measure"], registry=REGISTRY)
_known_triggers: dict[tuple[str, str], set[str]] = {}


def record_triggers(namespace: str, policy: str, values: dict[str, tuple[float | None, bool]]) -> None:
    """Export each trigger's value and firing state; a trigger that disappeared is removed."""
    known = _known_triggers.setdefault((namespace, policy), set())
    for gone in known - set(values):
        forget_trigger(namespace, policy, gone)
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


def forget_trigger(namespace: str, policy: str, trigger: str) -> None:
    for gauge in (TRIGGER_VALUE, TRIGGER_FIRING):
        try:
            gauge.remove(namespace, policy, trigger)
        except KeyError:
            pass


def forget_policy(namespace: str, policy: str) -> None:
    for trigger in _known_triggers.pop((namespace, policy), set()):
        forget_trigger(namespace, policy, trigger)


def record_budget(namespace: str, budget: str, used: dict[str, float]) -> None:
    for measure, value in used.items():
        BUDGET_USED.labels(namespace, budget, measure).set(value)
