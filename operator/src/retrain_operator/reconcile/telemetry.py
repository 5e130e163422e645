"""The operator's own Prometheus metrics: what it evaluated, queried, decided and launched.

Labels are bounded (namespace, reason, endpoint, outcome): never a value a tenant can grow without
limit, such as a trigger's message.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVALUATIONS = Counter("retrain_evaluations_total", "Policy evaluations.", ["namespace"], registry=REGISTRY)
DECISIONS = Counter("retrain_decisions_total", "Decisions taken, by action and reason.",
                    ["namespace", "action", "reason"], registry=REGISTRY)
QUERIES = Counter("retrain_prometheus_queries_total", "Prometheus queries, by endpoint and result.",
                  ["endpoint", "result"], registry=REGISTRY)
QUERY_SECONDS = Histogram("retrain_prometheus_query_seconds", "Latency of Prometheus queries.", ["endpoint"],
                          registry=REGISTRY)
JOBS = Counter("retrain_jobs_total", "Training Jobs started and finished, by outcome.", ["namespace", "outcome"],
               registry=REGISTRY)


def on_query(endpoint: str, seconds: float, problem: str | None) -> None:
    QUERIES.labels(endpoint, problem or "Success").inc()
    QUERY_SECONDS.labels(endpoint).observe(seconds)
