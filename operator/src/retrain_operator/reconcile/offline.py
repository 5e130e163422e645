"""``retrain-operator evaluate``: the operator's evaluation of one policy, run once without a cluster.

It uses the same observer, trigger evaluation and decision as the operator, against a Prometheus
URL given on the command line (the person running it chooses the URL, so raw queries are allowed).
The policy's status, if the file has one, supplies the model's score and the last retrain, exactly
as the operator would read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from retrain_operator.adapters.prometheus import PrometheusClient
from retrain_operator.domain.api import EndpointSpec, parse_policy_spec
from retrain_operator.domain.decision import decide
from retrain_operator.domain.evaluation import evaluate_triggers
from retrain_operator.domain.policy_status import PolicyStatus
from retrain_operator.domain.times import parse_rfc3339
from retrain_operator.reconcile.observe import Observer, QuerySource, Subject


async def evaluate_policy(
    body: Mapping[str, Any],
    *,
    prometheus_url: str,
    at: datetime,
    namespace_label: str | None = None,
    query_timeout: float = 10.0,
) -> dict[str, Any]:
    """One evaluation; the result is what ``evaluate -o json`` prints. Raises InvalidSpec for a bad policy."""
    spec = parse_policy_spec(body.get("spec"))
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "policy")
    status = PolicyStatus.from_dict(body.get("status"))
    endpoint = EndpointSpec(
        url=prometheus_url.rstrip("/"), timeout=query_timeout, allow_raw_queries=True, namespace_label=namespace_label
    )
    client = PrometheusClient(
        url=endpoint.url,
        timeout=query_timeout,
        headers={},
        bearer_token=None,
        basic_auth=None,
        ca_pem=None,
        insecure_skip_verify=False,
        max_concurrency=4,
    )

    async def source(_: str) -> QuerySource:
        return client

    try:
        observer = Observer(source_for=source)
        observed = await observer.observe([Subject(namespace, name, spec, "cli", endpoint)], now=at)
    finally:
        await client.close()
    observations = {trigger: obs for (_, _, trigger), obs in observed.items()}
    created = parse_rfc3339(meta.get("creationTimestamp")) or at
    results = evaluate_triggers(spec, observations=observations, status=status, created=created, now=at)
    decision = decide(
        spec, results=results, active_job=status.active_name, last_retrain_start=status.last_retrain_started, now=at
    )
    return {
        "policy": f"{namespace}/{name}",
        "at": at.isoformat(),
        "queries": observer.stats.queries,
        "triggers": [
            {
                "name": r.name,
                "type": r.type,
                "value": r.value,
                "threshold": r.threshold,
                "state": r.state,
                "since": r.since.isoformat() if r.since else None,
                "message": r.message,
                "problem": r.problem,
            }
            for r in results
        ],
        "decision": {
            "action": decision.action,
            "reason": decision.reason,
            "message": decision.message,
            "triggers": list(decision.triggers),
        },
    }
