"""Observation: every metric trigger of every due policy, read from Prometheus in as few queries as possible.

Each trigger type plans its own queries (:mod:`~retrain_operator.domain.triggers`); this module only
runs them. Triggers of one type whose template is equal (the type's merge key, the endpoint, the
label names, and the tenant when the endpoint sends a tenant header) are read together: for
accuracyDecay one query for the current values and, with ``for``, two more for the recent history,
whatever the number of policies. A type without a merge key (raw ``query``, ``dataVolume``) costs
its own queries. A failed query makes the triggers that depended on it inconclusive with the
reason; it never turns into a value.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from retrain_operator.adapters.prometheus import PrometheusError, Sample
from retrain_operator.domain.api import EndpointSpec, PolicySpec
from retrain_operator.domain.evaluation import sanitise
from retrain_operator.domain.limits import DEFAULT_LIMITS, QueryLimits
from retrain_operator.domain.triggers import Observation, QueryPlan, Target, TriggerSpec, get_trigger_type
from retrain_operator.reconcile.telemetry import Telemetry

logger = logging.getLogger(__name__)
CHUNK = 200
ObservationKey = tuple[str, str, str]  # namespace, policy name, trigger name


class QuerySource(Protocol):
    """What the observer needs of Prometheus: one instant query, with the endpoint's tenant headers."""

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]: ...


@dataclass(frozen=True)
class Subject:
    """One policy as the observer sees it."""

    namespace: str
    name: str
    spec: PolicySpec
    endpoint_name: str
    endpoint: EndpointSpec
    model_trained_at: datetime | None = None


@dataclass
class QueryStats:
    """Counts for the operator's own metrics and for the benchmark: queries grow with templates, not policies."""

    queries: int = 0
    errors: int = 0
    seconds: float = 0.0
    samples: int = 0
    by_reason: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True)
class _Group:
    """Where a trigger's queries go: a template shared across policies (merged) or its own."""

    key: tuple[object, ...]
    merged: bool


@dataclass(frozen=True)
class _Member:
    namespace: str
    name: str
    trigger: str


def _matchers(subject: Subject) -> dict[str, str]:
    matchers = dict(subject.spec.metrics.selector)
    if subject.endpoint.namespace_label:
        matchers[subject.endpoint.namespace_label] = subject.namespace
    return matchers


def _headers(subject: Subject) -> dict[str, str]:
    return {subject.endpoint.tenant_header: subject.namespace} if subject.endpoint.tenant_header else {}


class Observer:
    """Plans and runs the queries of one evaluation cycle."""

    def __init__(
        self,
        *,
        source_for: Callable[[str], Awaitable[QuerySource]],
        telemetry: Telemetry | None = None,
        limits: QueryLimits = DEFAULT_LIMITS,
    ) -> None:
        self._source_for = source_for
        self._telemetry = telemetry
        self.limits = limits
        self.stats = QueryStats()

    def _target(self, subject: Subject) -> tuple[Target, tuple[str, ...]]:
        matchers = _matchers(subject)
        target = Target(
            matchers=matchers,
            interval=subject.spec.evaluation.interval,
            trained_at=subject.model_trained_at,
            limits=self.limits,
        )
        return target, tuple(sorted(matchers))

    def _group(self, subject: Subject, trigger: TriggerSpec, target: Target, labels: tuple[str, ...]) -> _Group | None:
        """The key under which ``trigger`` is read with others; None when it reads no metrics."""
        kind = get_trigger_type(trigger.type)
        if not kind.reads_metrics:
            return None
        shared = kind.merge_key(trigger.kind, trigger, target)
        if shared is None:
            return _Group((kind.name, subject.namespace, subject.name, trigger.name), merged=False)
        tenant = subject.namespace if subject.endpoint.tenant_header else None
        return _Group((kind.name, subject.endpoint_name, tenant, labels, shared), merged=True)

    def anchor(self, subject: Subject) -> str | None:
        """The template whose ticks the policy follows: the smallest of its merged templates.

        None when none of its triggers is read together with other policies' (a raw query, a
        schedule only): such a policy shares nothing, and any instant serves it as well as another.
        """
        target, labels = self._target(subject)
        keys = []
        for trigger in subject.spec.triggers:
            try:
                group = self._group(subject, trigger, target, labels)
            except Exception:  # a trigger that cannot be planned is reported by observe(), not here
                continue
            if group is not None and group.merged:
                keys.append(repr((subject.spec.evaluation.interval, group.key)))
        return min(keys) if keys else None

    async def _run(self, endpoint_name: str, query: str, *, at: datetime, headers: Mapping[str, str]) -> list[Sample]:
        try:
            source = await self._source_for(endpoint_name)
        except PrometheusError:
            raise
        except Exception as exc:  # a missing Secret or key: the endpoint cannot be used as configured
            self.stats.errors += 1
            raise PrometheusError(
                f"MetricsEndpoint {endpoint_name!r} is not usable: {exc}", reason="EndpointUnavailable"
            ) from None
        started = time.perf_counter()
        problem: str | None = None
        samples: list[Sample] = []
        try:
            samples = await source.query(query, at=at, headers=headers or None)
            return samples
        except PrometheusError as exc:
            problem = exc.reason
            self.stats.errors += 1
            self.stats.by_reason[exc.reason] += 1
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.stats.queries += 1
            self.stats.seconds += elapsed
            self.stats.samples += len(samples)
            if self._telemetry is not None:
                self._telemetry.query(endpoint_name, elapsed, problem, samples=len(samples))

    async def observe(self, subjects: Sequence[Subject], *, now: datetime) -> dict[ObservationKey, Observation]:
        out: dict[ObservationKey, Observation] = {}
        groups: dict[tuple[object, ...], list[tuple[_Member, Target]]] = defaultdict(list)
        templates: dict[tuple[object, ...], tuple[Subject, TriggerSpec, tuple[str, ...]]] = {}
        for subject in subjects:
            target, labels = self._target(subject)
            for trigger in subject.spec.triggers:
                group = self._group(subject, trigger, target, labels)
                if group is None:
                    continue
                groups[group.key].append((_Member(subject.namespace, subject.name, trigger.name), target))
                templates[group.key] = (subject, trigger, labels)
        tasks: list[Awaitable[None]] = []
        for key, members in groups.items():
            owner, trigger, labels = templates[key]
            before = len(tasks)
            for start in range(0, len(members), CHUNK):
                chunk = members[start : start + CHUNK]
                try:
                    plan = get_trigger_type(trigger.type).plan(
                        trigger.kind, trigger, [t for _, t in chunk], labels=labels, now=now
                    )
                except Exception as exc:  # a template that cannot be planned leaves its triggers inconclusive
                    logger.exception("planning the queries of a %s template failed", trigger.type)
                    for member, _ in chunk:
                        out[(member.namespace, member.name, member.trigger)] = Observation.missing(
                            "EvaluationError", f"planning its queries failed: {sanitise(exc)}"
                        )
                    continue
                if plan is not None:
                    tasks.append(self._read(owner, [m for m, _ in chunk], plan, out=out))
            if self._telemetry is not None and len(tasks) > before:
                self._telemetry.template_read(trigger.type, chunks=len(tasks) - before, policies=len(members))
        # One template's failure stays with its own triggers, never the whole cycle.
        for failure in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(failure, BaseException):
                logger.error("observing a query template failed", exc_info=failure)
        return out

    async def _read(
        self, subject: Subject, members: Sequence[_Member], plan: QueryPlan, *, out: dict[ObservationKey, Observation]
    ) -> None:
        """Run a template's queries together; if one fails, every member's trigger is inconclusive with its reason."""
        headers = _headers(subject)
        results = await asyncio.gather(
            *(self._run(subject.endpoint_name, q, at=at, headers=headers) for q, at in plan.queries),
            return_exceptions=True,
        )
        samples: list[list[Sample]] = []
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, PrometheusError):
                    raise result
                for m in members:
                    out[(m.namespace, m.name, m.trigger)] = Observation.missing(result.reason, plan.failure(result))
                return
            samples.append(result)
        try:
            observations = plan.read(samples)
        except Exception as exc:  # results that cannot be read: those triggers are inconclusive, with why
            logger.exception("reading the results of %s failed", plan.what or "a query")
            observations = [
                Observation.missing("EvaluationError", f"reading its query results failed: {sanitise(exc)}")
            ] * len(members)
        for m, observation in zip(members, observations, strict=True):
            out[(m.namespace, m.name, m.trigger)] = observation
