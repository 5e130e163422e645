"""kopf handlers: the only place that knows about kopf's decorators.

They are thin: each passes what the watch delivered to the scheduler and returns nothing. Watching
is done with event handlers, which keep no progress on the objects, so the operator never patches a
policy's metadata or spec. kopf's own settings (progress annotations under ``retrain.dev``, our
finalizer name) are still set for any handler that may need them later.

The event handlers are coroutines on purpose: kopf runs a plain function in a thread pool, and the
scheduler's state (its dicts, its asyncio Event) belongs to the event loop's thread. Called from a
thread, a new policy could change a dict the loop was iterating and stop the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from retrain_operator.domain.api import GROUP, VERSION
from retrain_operator.domain.jobs import LABEL_POLICY
from retrain_operator.reconcile.scheduler import Scheduler

registry = kopf.OperatorRegistry()
logger = logging.getLogger(__name__)


@kopf.on.login(registry=registry, id="retrain-login")
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then the kubeconfig (our own registry has no default login)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup(registry=registry, id="retrain-configure")
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    scheduler: Scheduler = memo["scheduler"]
    task = asyncio.create_task(scheduler.run(), name="retrain-scheduler")
    task.add_done_callback(_scheduler_ended)
    memo["scheduler_task"] = task


def _scheduler_ended(task: asyncio.Task[None]) -> None:
    """The scheduler only ends when the operator stops; anything else is said at once, not at exit."""
    if not task.cancelled() and task.exception() is not None:
        logger.critical("the scheduler stopped; no policy is evaluated until restart", exc_info=task.exception())


@kopf.on.cleanup(registry=registry, id="retrain-cleanup")
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("scheduler_task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    closer = memo.get("close")
    if closer is not None:
        await closer()


@kopf.on.event(GROUP, VERSION, "retrainpolicies", registry=registry, id="retrain-policy")
async def policy_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    scheduler: Scheduler = memo["scheduler"]
    body = event["object"]
    meta = body.get("metadata") or {}
    if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        scheduler.remove_policy(meta["namespace"], meta["name"])
    else:
        scheduler.upsert_policy(body)


@kopf.on.event(GROUP, VERSION, "metricsendpoints", registry=registry, id="retrain-endpoint")
async def endpoint_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    scheduler: Scheduler = memo["scheduler"]
    body = event["object"]
    name = body["metadata"]["name"]
    if event.get("type") == "DELETED":
        scheduler.remove_endpoint(name)
    else:
        scheduler.upsert_endpoint(name, body.get("spec"))


@kopf.on.event(GROUP, VERSION, "modelstores", registry=registry, id="retrain-store")
async def store_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    scheduler: Scheduler = memo["scheduler"]
    body = event["object"]
    name = body["metadata"]["name"]
    if event.get("type") == "DELETED":
        scheduler.remove_store(name)
    else:
        scheduler.upsert_store(name, body.get("spec"))


@kopf.on.event(GROUP, VERSION, "retrainbudgets", registry=registry, id="retrain-budget")
async def budget_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    scheduler: Scheduler = memo["scheduler"]
    body = event["object"]
    meta = body.get("metadata") or {}
    if event.get("type") == "DELETED":
        scheduler.remove_budget(meta["namespace"], meta["name"])
    else:
        scheduler.upsert_budget(body)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_POLICY: kopf.PRESENT}, registry=registry, id="retrain-job")
async def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    scheduler: Scheduler = memo["scheduler"]
    meta: Any = event["object"].get("metadata") or {}
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "RetrainPolicy" and owner.get("apiVersion", "").startswith(f"{GROUP}/"):
            scheduler.wake((meta.get("namespace", ""), owner.get("name", "")))
