"""``retrain-operator evaluate``: the operator's evaluation of one policy, run once without a cluster.

It uses the same observer, trigger evaluation and decision as the operator, against a Prometheus
URL given on the command line (the person running it chooses the URL, so raw queries are allowed).
The policy's status, if the file has one, supplies the model's score and the last retrain, exactly
as the operator would read them.

Two things the operator keeps in status are read here instead. When the model was trained
(``dataVolume`` counts from then): ``--model-trained-at``, else ``status.model.trainedAt``, else the
policy's ``creationTimestamp`` (as the operator counts before a first model), else nothing, which the
trigger's message says. And since when a pending or firing trigger's condition has held, for the
types whose ``for`` is judged from history: the trigger is judged again at earlier instants, at the
step ``for`` is judged with, back to the first instant of the unbroken run (at most
:data:`LOOKBACK_POINTS` steps; a run longer than that is reported as beginning at or before its start).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from retrain_operator.adapters.prometheus import PrometheusClient
from retrain_operator.domain import promql
from retrain_operator.domain.api import EndpointSpec, PolicySpec, parse_policy_spec
from retrain_operator.domain.decision import decide
from retrain_operator.domain.evaluation import evaluate_triggers
from retrain_operator.domain.policy_status import PolicyStatus
from retrain_operator.domain.times import parse_rfc3339
from retrain_operator.domain.triggers import TriggerSpec, get_trigger_type
from retrain_operator.reconcile.observe import Observer, QuerySource, Subject

LOOKBACK_POINTS = 120
# Instants judged at once while reading back (each costs the trigger's current-value query).
LOOKBACK_BATCH = 12


async def evaluate_policy(
    body: Mapping[str, Any],
    *,
    prometheus_url: str,
    at: datetime,
    namespace_label: str | None = None,
    query_timeout: float = 10.0,
    model_trained_at: datetime | None = None,
) -> dict[str, Any]:
    """One evaluation; the result is what ``evaluate -o json`` prints. Raises InvalidSpec for a bad policy.

    ``model_trained_at`` overrides the training time the status gives (see the module's docstring).
    """
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

    created_at = parse_rfc3339(meta.get("creationTimestamp"))
    trained = model_trained_at or (status.model.trained if status.model is not None else None) or created_at
    subject = Subject(namespace, name, spec, "cli", endpoint, model_trained_at=trained)
    created = created_at or at
    observer = Observer(source_for=source)
    try:
        observed = await observer.observe([subject], now=at)
        observations = {trigger: obs for (_, _, trigger), obs in observed.items()}
        results = evaluate_triggers(spec, observations=observations, status=status, created=created, now=at)
        queries = observer.stats.queries  # what the operator would send; the look back is the command's own
        began: dict[str, tuple[datetime, bool]] = {}
        for trigger, result in zip(spec.triggers, results, strict=True):
            fresh = result.since == at and result.problem is None  # not carried over from status, nor onMissingData
            if result.state in ("pending", "firing") and fresh and get_trigger_type(trigger.type).history:
                began[trigger.name] = await _began(observer, subject, trigger, status=status, created=created, at=at)
    finally:
        await client.close()
    decision = decide(
        spec, results=results, active_job=status.active_name, last_retrain_start=status.last_retrain_started, now=at
    )
    return {
        "policy": f"{namespace}/{name}",
        "at": at.isoformat(),
        "queries": queries,
        "historyQueries": observer.stats.queries - queries,
        "triggers": [
            {
                "name": r.name,
                "type": r.type,
                "value": r.value,
                "threshold": r.threshold,
                "state": r.state,
                "since": (began[r.name][0] if r.name in began else r.since).isoformat() if r.since else None,
                "sinceAtOrBefore": began[r.name][1] if r.name in began else False,
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


async def _began(
    observer: Observer, subject: Subject, trigger: TriggerSpec, *, status: PolicyStatus, created: datetime, at: datetime
) -> tuple[datetime, bool]:
    """The first instant of the unbroken run of instants, ending at ``at``, at which ``trigger``'s condition holds.

    Each instant is judged as the operator would judge it with no ``for`` and no previous state; the
    second value says the run reaches back past :data:`LOOKBACK_POINTS` steps.
    """
    instant = replace(trigger, for_seconds=0.0)
    one: PolicySpec = replace(subject.spec, triggers=(instant,))
    alone = replace(subject, spec=one)
    fresh = replace(status, triggers=None)  # no hysteresis: when the threshold itself was first crossed
    interval = subject.spec.evaluation.interval
    step = promql.subquery_step(trigger.for_seconds, interval) if trigger.for_seconds > 0 else interval

    async def holds(when: datetime) -> bool:
        observed = await observer.observe([alone], now=when)
        observations = {name: obs for (_, _, name), obs in observed.items()}
        (result,) = evaluate_triggers(one, observations=observations, status=fresh, created=created, now=when)
        return result.state == "firing"

    began = at
    for first in range(1, LOOKBACK_POINTS + 1, LOOKBACK_BATCH):
        instants = [
            at - timedelta(seconds=k * step) for k in range(first, min(first + LOOKBACK_BATCH, LOOKBACK_POINTS + 1))
        ]
        for when, held in zip(instants, await asyncio.gather(*(holds(w) for w in instants)), strict=True):
            if not held:
                return began, False
            began = when
    return began, True
