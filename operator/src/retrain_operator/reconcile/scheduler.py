"""One scheduler for all policies: find the due ones, observe them together, reconcile each.

kopf's per-object timers would cost a task and a status PATCH per policy per tick; here a single
loop wakes when the earliest policy is due (or when something happens to one: a spec change, its
Job's progress), gathers every due policy into one cycle so their queries can be merged, and
reconciles them with bounded concurrency. A policy's failure is logged and retried at its next
interval; it never stops the loop or touches other policies.

Policies are due on their query template's ticks (:mod:`~retrain_operator.domain.phase`), so the
policies that share a template are evaluated in one cycle and read with one batched query per chunk;
``scheduling="rolling"`` (one interval after each policy's own last evaluation) is kept for
comparison. Cycles never overlap: a cycle that overruns makes the next policies late (measured as
lag), and ticks missed meanwhile are dropped, not queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from retrain_operator.adapters.kubernetes import KubeClient
from retrain_operator.adapters.prometheus import PrometheusClient
from retrain_operator.domain.api import (
    EndpointSpec,
    InvalidSpec,
    ModelStoreSpec,
    PolicySpec,
    Problem,
    check_endpoint_use,
    check_estimator,
    check_image,
    check_query_cost,
    check_store_use,
    parse_endpoint_spec,
    parse_model_store_spec,
)
from retrain_operator.domain.budget_status import BudgetStatus
from retrain_operator.domain.phase import next_tick, phase_offset
from retrain_operator.domain.times import utcnow
from retrain_operator.domain.triggers import Observation
from retrain_operator.reconcile.engine import PolicyEntry, Reconciler
from retrain_operator.reconcile.leader import LeaderElector
from retrain_operator.reconcile.observe import Observer, QuerySource, Subject

logger = logging.getLogger(__name__)

Key = tuple[str, str]
Scheduling = Literal["aligned", "rolling"]
SCHEDULING: tuple[Scheduling, ...] = ("aligned", "rolling")


class Endpoints:
    """MetricsEndpoints by name, and one Prometheus client per endpoint built with its Secrets."""

    def __init__(self, *, kube: KubeClient | None, operator_namespace: str) -> None:
        self._kube = kube
        self._namespace = operator_namespace
        self.specs: dict[str, EndpointSpec] = {}
        self.problems: dict[str, str] = {}
        self._clients: dict[str, tuple[EndpointSpec, PrometheusClient]] = {}

    def upsert(self, name: str, raw_spec: Any) -> None:
        try:
            self.specs[name] = parse_endpoint_spec(raw_spec)
            self.problems.pop(name, None)
        except InvalidSpec as exc:
            self.specs.pop(name, None)
            self.problems[name] = str(exc)

    def remove(self, name: str) -> None:
        self.specs.pop(name, None)
        self.problems.pop(name, None)

    async def lookup(self, name: str) -> EndpointSpec | None:
        """The endpoint's spec; asks the API once when the watch has not delivered it yet."""
        if name not in self.specs and name not in self.problems and self._kube is not None:
            body = await self._kube.get_metrics_endpoint(name)
            if body is not None:
                self.upsert(name, body.get("spec"))
        return self.specs.get(name)

    async def source(self, name: str) -> QuerySource:
        spec = self.specs[name]
        cached = self._clients.get(name)
        if cached is not None and cached[0] == spec:
            return cached[1]
        if cached is not None:
            await cached[1].close()
        client = await self._build(spec)
        self._clients[name] = (spec, client)
        return client

    async def _secret(self, name: str, key: str) -> str:
        assert self._kube is not None, "endpoint credentials need the Kubernetes API"
        data = await self._kube.read_secret(self._namespace, name)
        if key not in data:
            raise KeyError(f"Secret {self._namespace}/{name} has no key {key!r}")
        return data[key]

    async def _build(self, spec: EndpointSpec) -> PrometheusClient:
        bearer = await self._secret(spec.bearer_token.name, spec.bearer_token.key) if spec.bearer_token else None
        basic = None
        if spec.basic_auth_username and spec.basic_auth_password:
            basic = (
                await self._secret(spec.basic_auth_username.name, spec.basic_auth_username.key),
                await self._secret(spec.basic_auth_password.name, spec.basic_auth_password.key),
            )
        ca = await self._secret(spec.ca.name, spec.ca.key) if spec.ca else None
        return PrometheusClient(
            url=spec.url,
            timeout=spec.timeout,
            headers=dict(spec.headers),
            bearer_token=bearer,
            basic_auth=basic,
            ca_pem=ca,
            insecure_skip_verify=spec.insecure_skip_verify,
            max_concurrency=spec.max_concurrency,
        )

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.close()
        self._clients.clear()


class Stores:
    """ModelStores by name, as the watch delivers them. The operator reads these objects, never the storage."""

    def __init__(self, *, kube: KubeClient | None, default: str | None = None) -> None:
        self._kube = kube
        self.default = default
        self.specs: dict[str, ModelStoreSpec] = {}
        self.problems: dict[str, str] = {}

    def upsert(self, name: str, raw_spec: Any) -> None:
        try:
            self.specs[name] = parse_model_store_spec(name, raw_spec)
            self.problems.pop(name, None)
        except InvalidSpec as exc:
            self.specs.pop(name, None)
            self.problems[name] = str(exc)

    def remove(self, name: str) -> None:
        self.specs.pop(name, None)
        self.problems.pop(name, None)

    def name_for(self, spec: PolicySpec) -> str | None:
        return spec.model.registry.store or self.default

    async def lookup(self, name: str) -> ModelStoreSpec | None:
        """The store's spec; asks the API once when the watch has not delivered it yet."""
        if name not in self.specs and name not in self.problems and self._kube is not None:
            body = await self._kube.get_model_store(name)
            if body is not None:
                self.upsert(name, body.get("spec"))
        return self.specs.get(name)

    async def check(self, spec: PolicySpec, *, namespace: str) -> tuple[ModelStoreSpec | None, list[Problem]]:
        """The policy's store and the problems of using it from ``namespace``."""
        name = self.name_for(spec)
        store = await self.lookup(name) if name is not None else None
        problem = self.problems.get(name) if name is not None else None
        return store, check_store_use(spec, namespace=namespace, store_name=name, store=store, store_problem=problem)


class Scheduler:
    """The one loop that evaluates every due policy and keeps RetrainBudgets' windows current (see the module)."""

    def __init__(
        self,
        *,
        reconciler: Reconciler,
        endpoints: Endpoints,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        max_parallel: int = 32,
        observer: Observer | None = None,
        elector: LeaderElector | None = None,
        allowed_images: Sequence[str] = (),
        stores: Stores | None = None,
        scheduling: Scheduling = "aligned",
        retry_after: float = 30.0,
    ) -> None:
        if scheduling not in SCHEDULING:
            raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING)}, not {scheduling!r}")
        self.scheduling = scheduling
        self.retry_after = retry_after
        self._monotonic = monotonic
        self.elector = elector
        self.stores = stores or Stores(kube=None)
        self.allowed_images = tuple(allowed_images)
        self._reconciler = reconciler
        self._endpoints = endpoints
        self._clock = clock
        self._max_parallel = max_parallel
        self.observer = observer or Observer(source_for=endpoints.source)
        self.entries: dict[Key, PolicyEntry] = {}
        self._due: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self.cycles = 0
        self.lag: list[float] = []
        self._budgets: dict[Key, dict[str, Any]] = {}
        self._budget_due: dict[Key, datetime] = {}

    # Inputs from the watches.
    def upsert_policy(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        entry = self.entries.get(key)
        if entry is None or entry.uid != meta.get("uid"):
            self.entries[key] = PolicyEntry(body=dict(body))
            self.wake(key)
            return
        changed = int(meta.get("generation") or 0) != entry.generation
        entry.accept_body(dict(body))
        if changed:
            self.wake(key)

    def remove_policy(self, namespace: str, name: str) -> None:
        self.entries.pop((namespace, name), None)
        self._due.pop((namespace, name), None)
        self._reconciler.telemetry.forget_policy(namespace, name)

    def upsert_endpoint(self, name: str, spec: Any) -> None:
        self._endpoints.upsert(name, spec)
        self._wake_users(name)

    def remove_endpoint(self, name: str) -> None:
        self._endpoints.remove(name)
        self._wake_users(name)

    def _wake_users(self, endpoint: str) -> None:
        for key, entry in self.entries.items():
            if (entry.body.get("spec") or {}).get("metrics", {}).get("endpoint") == endpoint:
                self.wake(key)

    def upsert_store(self, name: str, spec: Any) -> None:
        self.stores.upsert(name, spec)
        self._wake_store_users(name)

    def remove_store(self, name: str) -> None:
        self.stores.remove(name)
        self._wake_store_users(name)

    def _wake_store_users(self, store: str) -> None:
        for key, entry in self.entries.items():
            named = ((entry.body.get("spec") or {}).get("model") or {}).get("registry", {}).get("store")
            if (named or self.stores.default) == store:
                self.wake(key)

    def upsert_budget(self, body: Mapping[str, Any]) -> None:
        """A RetrainBudget changed: bring its status up to date now, and again when its window ends."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        self._budgets[key] = dict(body)
        self._budget_due[key] = self._clock()
        self._wake.set()

    def remove_budget(self, namespace: str, name: str) -> None:
        self._budgets.pop((namespace, name), None)
        self._budget_due.pop((namespace, name), None)

    async def _refresh_budgets(self) -> None:
        now = self._clock()
        for key, at in list(self._budget_due.items()):
            if at > now or key not in self._budgets:
                continue
            body = self._budgets[key]
            try:
                await self._reconciler.accountant.refresh(body)
            except Exception:
                logger.exception("refreshing RetrainBudget %s/%s failed", *key)
            window_end = BudgetStatus.from_dict(body.get("status")).window_end
            self._budget_due[key] = window_end if window_end and window_end > now else now + timedelta(seconds=60)

    def wake(self, key: Key) -> None:
        """Make a policy due now (a change happened to it or to its Job)."""
        if key in self.entries:
            self._due[key] = self._monotonic()
            self._wake.set()

    # The loop.
    async def run(self) -> None:
        elector_task = asyncio.create_task(self.elector.run()) if self.elector is not None else None
        try:
            await self._loop()
        finally:
            if elector_task is not None:
                elector_task.cancel()
                await asyncio.gather(elector_task, return_exceptions=True)

    async def _follow(self) -> None:
        """While another replica leads, wait; on taking over, every policy is due at once."""
        assert self.elector is not None
        while not self.elector.is_leader:
            self.elector.changed.clear()
            try:
                await asyncio.wait_for(self.elector.changed.wait(), timeout=self.elector.lease_seconds / 3)
            except TimeoutError:
                pass
        self._due.clear()
        for entry in self.entries.values():
            entry.scanned_jobs = False  # the previous leader may have launched Jobs not yet in status

    async def _loop(self) -> None:
        while True:
            if self.elector is not None and not self.elector.is_leader:
                await self._follow()
            await self._refresh_budgets()
            now_mono = self._monotonic()
            due = self.take_due()
            if due:
                try:
                    await self.run_cycle(due)
                except Exception:  # a cycle's fault must not stop every later evaluation
                    # Each policy's own reconciliation is guarded, so a fault here came before any of them ran.
                    logger.exception(
                        "an evaluation cycle of %d policies failed; they are due again in %gs",
                        len(due),
                        self.retry_after,
                    )
                    retry = self._monotonic() + self.retry_after
                    for key in due:
                        if key in self.entries:
                            self._due[key] = retry
                continue
            self._wake.clear()
            timeout = min(self._due.values()) - now_mono if self._due else 3600.0
            if self._budget_due:
                timeout = min(timeout, (min(self._budget_due.values()) - self._clock()).total_seconds())
            if self.elector is not None:
                timeout = min(timeout, self.elector.lease_seconds / 3)  # notice a lost lease in time
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, timeout))
            except TimeoutError:
                pass

    def take_due(self) -> list[Key]:
        """The policies due now (new ones included), with how late each is recorded as lag."""
        now_mono = self._monotonic()
        due = [k for k, at in self._due.items() if at <= now_mono]
        unscheduled = [k for k in self.entries if k not in self._due]
        for key in unscheduled:
            self._due[key] = now_mono
            due.append(key)
        for key in due:
            lag = max(0.0, now_mono - self._due[key])
            self.lag.append(lag)
            self._reconciler.telemetry.lagged(lag)
        self.lag = self.lag[-10000:]
        return due

    def due_at(self, key: Key) -> float | None:
        """When (on the monotonic clock) the policy is next due; None if not scheduled."""
        return self._due.get(key)

    def _schedule(self, key: Key, *, interval: float, anchor: str, now: datetime, now_mono: float) -> None:
        """The policy's next due time: its template's next tick, or one interval from now when rolling."""
        if self.scheduling == "rolling":
            self._due[key] = now_mono + interval
            return
        tick = next_tick(now, interval=interval, offset=phase_offset(anchor, interval))
        self._due[key] = now_mono + (tick - now).total_seconds()

    async def run_cycle(self, keys: list[Key]) -> None:
        """Evaluate the given policies together: one observation pass, then each reconciled."""
        now = self._clock()
        now_mono = self._monotonic()
        started = time.perf_counter()
        self.cycles += 1
        subjects: list[Subject] = []
        endpoint_problems: dict[Key, list[Problem]] = {}
        stores: dict[Key, ModelStoreSpec] = {}
        entries = []
        for key in keys:
            entry = self.entries.get(key)
            if entry is None:
                continue
            entries.append(entry)
            entry.parse()
            interval = entry.spec.evaluation.interval if entry.spec else 60.0
            own = f"{entry.namespace}/{entry.name}"  # shares no template: its own phase spreads such policies
            self._schedule(key, interval=interval, anchor=own, now=now, now_mono=now_mono)
            if entry.spec is None:
                continue
            name = entry.spec.metrics.endpoint
            endpoint = await self._endpoints.lookup(name)
            problems = check_endpoint_use(entry.spec, namespace=entry.namespace, endpoint_name=name, endpoint=endpoint)
            problems += check_image(entry.spec, allowed_prefixes=self.allowed_images)
            problems += check_estimator(entry.spec, allowlist=self._reconciler.estimator_allowlist)
            problems += check_query_cost(entry.spec, limits=self.observer.limits)
            if endpoint is None and name in self._endpoints.problems:
                problems = [
                    Problem(
                        "spec.metrics.endpoint",
                        f"MetricsEndpoint {name!r} is invalid: {self._endpoints.problems[name]}",
                    )
                ]
            store, store_problems = await self.stores.check(entry.spec, namespace=entry.namespace)
            problems += store_problems
            if store is not None:
                stores[key] = store
            if problems:
                endpoint_problems[key] = problems
            else:
                assert endpoint is not None
                model = entry.status.model
                trained = model.trained if model is not None else None
                subject = Subject(
                    entry.namespace,
                    entry.name,
                    entry.spec,
                    name,
                    endpoint,
                    model_trained_at=trained or entry.created,
                )
                subjects.append(subject)
                anchor = self.observer.anchor(subject)
                if anchor is not None:
                    self._schedule(key, interval=interval, anchor=anchor, now=now, now_mono=now_mono)
        try:
            observed = await self.observer.observe(subjects, now=now)
        except Exception:
            logger.exception("observation failed; every trigger of this cycle is inconclusive")
            observed = {}
        by_policy: dict[Key, dict[str, Observation]] = {}
        for (namespace, name, trigger), observation in observed.items():
            by_policy.setdefault((namespace, name), {})[trigger] = observation
        semaphore = asyncio.Semaphore(self._max_parallel)

        async def one(entry: PolicyEntry) -> None:
            mine = by_policy.get((entry.namespace, entry.name), {})
            async with semaphore:
                if self.elector is not None and not self.elector.is_leader:
                    return  # lost the lease mid-cycle: leave the rest to the new leader
                try:
                    await self._reconciler.reconcile(
                        entry,
                        observations=mine,
                        endpoint_problems=endpoint_problems.get((entry.namespace, entry.name), []),
                        store=stores.get((entry.namespace, entry.name)),
                        now=now,
                    )
                except Exception:
                    logger.exception(
                        "reconciling %s/%s failed; retrying at its next interval", entry.namespace, entry.name
                    )

        await asyncio.gather(*(one(e) for e in entries))
        self._reconciler.telemetry.cycle(policies=len(entries), seconds=time.perf_counter() - started)
