"""Observation: every metric trigger of every due policy, read from Prometheus in as few queries as possible.

Policies whose accuracyDecay triggers share a template (endpoint, metric, window, ``for``, label
names, and the tenant when the endpoint sends a tenant header) are read together: one query for the
current values and, with ``for``, two more for the recent history, whatever the number of policies.
Raw ``query`` triggers cannot be merged and cost their own queries. A failed query makes the
triggers that depended on it inconclusive with the reason; it never turns into a value.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from retrain_operator.adapters.prometheus import PrometheusError, Sample
from retrain_operator.domain import promql
from retrain_operator.domain.api import (
    AccuracyDecay,
    DataVolumeTrigger,
    DriftTrigger,
    EndpointSpec,
    PolicySpec,
    QueryTrigger,
)
from retrain_operator.domain.triggers import Observation
from retrain_operator.settings.durations import format_duration

logger = logging.getLogger(__name__)
CHUNK = 200
ObservationKey = tuple[str, str, str]  # namespace, policy name, trigger name


class QuerySource(Protocol):
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
    by_reason: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True)
class _Member:
    namespace: str
    name: str
    trigger: str
    key: tuple[str, ...]
    matchers: Mapping[str, str]


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
        on_query: Callable[[str, float, str | None], None] | None = None,
    ) -> None:
        self._source_for = source_for
        self._on_query = on_query
        self.stats = QueryStats()

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
        try:
            return await source.query(query, at=at, headers=headers or None)
        except PrometheusError as exc:
            problem = exc.reason
            self.stats.errors += 1
            self.stats.by_reason[exc.reason] += 1
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.stats.queries += 1
            self.stats.seconds += elapsed
            if self._on_query is not None:
                self._on_query(endpoint_name, elapsed, problem)

    async def observe(self, subjects: Sequence[Subject], *, now: datetime) -> dict[ObservationKey, Observation]:
        out: dict[ObservationKey, Observation] = {}
        groups: dict[tuple[object, ...], list[_Member]] = defaultdict(list)
        templates: dict[tuple[object, ...], tuple[Subject, AccuracyDecay, float, float, tuple[str, ...]]] = {}
        tasks: list[Awaitable[None]] = []
        drift_groups: dict[tuple[object, ...], list[_Member]] = defaultdict(list)
        drift_templates: dict[tuple[object, ...], tuple[Subject, DriftTrigger, tuple[str, ...]]] = {}
        for subject in subjects:
            for trigger in subject.spec.triggers:
                if isinstance(trigger.kind, AccuracyDecay):
                    matchers = _matchers(subject)
                    labels = tuple(sorted(matchers))
                    spec = trigger.kind
                    step = promql.subquery_step(trigger.for_seconds, subject.spec.evaluation.interval)
                    tenant = subject.namespace if subject.endpoint.tenant_header else None
                    template: tuple[object, ...] = (
                        subject.endpoint_name,
                        tenant,
                        spec.metric,
                        spec.window,
                        trigger.for_seconds,
                        step,
                        labels,
                    )
                    groups[template].append(
                        _Member(
                            subject.namespace,
                            subject.name,
                            trigger.name,
                            tuple(matchers[label] for label in labels),
                            matchers,
                        )
                    )
                    templates[template] = (subject, spec, trigger.for_seconds, step, labels)
                elif isinstance(trigger.kind, QueryTrigger):
                    tasks.append(
                        self._observe_raw(subject, trigger.name, trigger.kind, trigger.for_seconds, now=now, out=out)
                    )
                elif isinstance(trigger.kind, DriftTrigger):
                    matchers = _matchers(subject)
                    labels = tuple(sorted(matchers))
                    d = trigger.kind
                    tenant = subject.namespace if subject.endpoint.tenant_header else None
                    drift_key: tuple[object, ...] = (
                        subject.endpoint_name,
                        tenant,
                        d.metric,
                        d.feature_label,
                        d.window,
                        d.reference,
                        d.reference_offset,
                        d.reference_window,
                        d.learn_k is not None,
                        d.learn_windows,
                        labels,
                    )
                    drift_groups[drift_key].append(
                        _Member(
                            subject.namespace,
                            subject.name,
                            trigger.name,
                            tuple(matchers[label] for label in labels),
                            matchers,
                        )
                    )
                    drift_templates[drift_key] = (subject, d, labels)
                elif isinstance(trigger.kind, DataVolumeTrigger):
                    tasks.append(self._observe_volume(subject, trigger.name, trigger.kind, now=now, out=out))
        for key, members in groups.items():
            first, accuracy, for_seconds, step, labels = templates[key]
            for start in range(0, len(members), CHUNK):
                tasks.append(
                    self._observe_accuracy(
                        first,
                        accuracy,
                        members[start : start + CHUNK],
                        labels=labels,
                        for_seconds=for_seconds,
                        step=step,
                        now=now,
                        out=out,
                    )
                )
        for drift_key, drift_members in drift_groups.items():
            owner, drift_spec, drift_labels = drift_templates[drift_key]
            for start in range(0, len(drift_members), CHUNK):
                tasks.append(
                    self._observe_drift(
                        owner, drift_spec, drift_members[start : start + CHUNK], labels=drift_labels, now=now, out=out
                    )
                )
        # One template's failure stays with its own triggers (they are "not observed"), never the whole cycle.
        for failure in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(failure, BaseException):
                logger.error("observing a query template failed", exc_info=failure)
        return out

    async def _gather(
        self,
        subject: Subject,
        members: Sequence[_Member],
        plan: Sequence[tuple[str, datetime]],
        *,
        what: str,
        out: dict[ObservationKey, Observation],
    ) -> list[list[Sample]] | None:
        """Run a template's queries together; if one fails, every member's trigger is inconclusive with its reason."""
        headers = _headers(subject)
        results = await asyncio.gather(
            *(self._run(subject.endpoint_name, q, at=at, headers=headers) for q, at in plan), return_exceptions=True
        )
        samples: list[list[Sample]] = []
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, PrometheusError):
                    raise result
                for m in members:
                    out[(m.namespace, m.name, m.trigger)] = Observation.missing(
                        result.reason, f"query of {what} failed: {result}"
                    )
                return None
            samples.append(result)
        return samples

    async def _observe_drift(
        self,
        subject: Subject,
        spec: DriftTrigger,
        members: Sequence[_Member],
        *,
        labels: tuple[str, ...],
        now: datetime,
        out: dict[ObservationKey, Observation],
    ) -> None:
        """Current window, reference window and (to learn a threshold) its sub-windows, merged across policies."""
        values_by_label = {label: [m.matchers[label] for m in members] for label in labels}

        def query(window: float) -> str:
            return promql.histogram_increase(
                metric=spec.metric,
                values_by_label=values_by_label,
                group_by=labels,
                feature_label=spec.feature_label,
                window=window,
            )

        plan: list[tuple[str, datetime]] = [(query(spec.window), now)]
        if spec.reference == "Window":
            reference_end = now - timedelta(seconds=spec.reference_offset)
            plan.append((query(spec.reference_window), reference_end))
            if spec.learn_k is not None:
                step = spec.reference_window / spec.learn_windows
                plan += [(query(step), reference_end - timedelta(seconds=i * step)) for i in range(spec.learn_windows)]
        results = await self._gather(subject, members, plan, what=f"{spec.metric}_bucket", out=out)
        if results is None:
            return
        split = [_buckets(r, labels, spec.feature_label) for r in results]
        for m in members:
            current = split[0].get(m.key)
            if not current:
                shown = promql.selector(f"{spec.metric}_bucket", m.matchers)
                out[(m.namespace, m.name, m.trigger)] = Observation.missing(
                    "NoData", f"no series of {shown} in the last {format_duration(spec.window)}"
                )
                continue
            reference = split[1].get(m.key, {}) if spec.reference == "Window" else None
            if spec.reference == "Window" and not reference:
                out[(m.namespace, m.name, m.trigger)] = Observation.missing(
                    "NoReference",
                    f"no series of {spec.metric}_bucket in the reference window "
                    f"({format_duration(spec.reference_window)} ending "
                    f"{format_duration(spec.reference_offset)} ago)",
                )
                continue
            out[(m.namespace, m.name, m.trigger)] = Observation(
                current_buckets=current,
                reference_buckets=reference,
                reference_windows=tuple(w.get(m.key, {}) for w in split[2:]),
            )

    async def _observe_volume(
        self,
        subject: Subject,
        trigger: str,
        spec: DataVolumeTrigger,
        *,
        now: datetime,
        out: dict[ObservationKey, Observation],
    ) -> None:
        since = subject.model_trained_at or now
        window = max(1.0, (now - since).total_seconds())
        query = promql.counter_increase(metric=spec.metric, matchers=_matchers(subject), window=window)
        try:
            result = await self._run(subject.endpoint_name, query, at=now, headers=_headers(subject))
        except PrometheusError as exc:
            out[(subject.namespace, subject.name, trigger)] = Observation.missing(exc.reason, f"query failed: {exc}")
            return
        if not result:
            out[(subject.namespace, subject.name, trigger)] = Observation.missing(
                "NoData", f"no series of {promql.selector(spec.metric, _matchers(subject))}"
            )
            return
        out[(subject.namespace, subject.name, trigger)] = Observation(value=result[0].value)

    async def _observe_accuracy(
        self,
        subject: Subject,
        spec: AccuracyDecay,
        members: Sequence[_Member],
        *,
        labels: tuple[str, ...],
        for_seconds: float,
        step: float,
        now: datetime,
        out: dict[ObservationKey, Observation],
    ) -> None:
        values_by_label = {label: [m.matchers[label] for m in members] for label in labels}
        queries = promql.accuracy_queries(
            metric=spec.metric,
            values_by_label=values_by_label,
            group_by=labels,
            window=spec.window,
            for_seconds=for_seconds,
            step=step,
        )
        wanted = [(q, now) for q in (queries.current, queries.held_max, queries.held_count) if q is not None]
        results = await self._gather(subject, members, wanted, what=spec.metric, out=out)
        if results is None:
            return
        by_key = [_index(r, labels) for r in results]
        current = by_key[0]
        held = by_key[1] if len(by_key) > 1 else {}
        count = by_key[2] if len(by_key) > 2 else {}
        for m in members:
            sample = current.get(m.key)
            if sample is None:
                shown = promql.selector(spec.metric, m.matchers)
                out[(m.namespace, m.name, m.trigger)] = Observation.missing(
                    "NoData", f"no samples of {shown} in the last {format_duration(spec.window)}"
                )
                continue
            held_sample = held.get(m.key)
            count_sample = count.get(m.key)
            out[(m.namespace, m.name, m.trigger)] = Observation(
                value=sample.value,
                held=held_sample.value if held_sample else None,
                held_points=int(count_sample.value) if count_sample and not math.isnan(count_sample.value) else 0,
                expected_points=queries.expected_points,
            )

    async def _observe_raw(
        self,
        subject: Subject,
        trigger: str,
        spec: QueryTrigger,
        for_seconds: float,
        *,
        now: datetime,
        out: dict[ObservationKey, Observation],
    ) -> None:
        headers = _headers(subject)
        wanted = [spec.promql]
        expected = 0
        if for_seconds > 0:
            step = promql.subquery_step(for_seconds, subject.spec.evaluation.interval)
            wanted += list(
                promql.raw_held_query(spec.promql, operator=spec.operator, for_seconds=for_seconds, step=step)
            )
            expected = int(for_seconds // step)
        try:
            results = await asyncio.gather(
                *(self._run(subject.endpoint_name, q, at=now, headers=headers) for q in wanted)
            )
        except PrometheusError as exc:
            out[(subject.namespace, subject.name, trigger)] = Observation.missing(exc.reason, f"query failed: {exc}")
            return
        if not results[0]:
            out[(subject.namespace, subject.name, trigger)] = Observation.missing(
                "NoData", "the query returned no series"
            )
            return
        if any(len(r) > 1 for r in results):
            out[(subject.namespace, subject.name, trigger)] = Observation.missing(
                "Ambiguous", f"the query returned {len(results[0])} series; it must return one (aggregate it)"
            )
            return
        out[(subject.namespace, subject.name, trigger)] = Observation(
            value=results[0][0].value,
            held=results[1][0].value if len(results) > 1 and results[1] else None,
            held_points=int(results[2][0].value) if len(results) > 2 and results[2] else 0,
            expected_points=expected,
        )


def _buckets(
    samples: Sequence[Sample], labels: Sequence[str], feature_label: str
) -> dict[tuple[str, ...], dict[str, dict[str, float]]]:
    """Split merged histogram results per policy: policy key -> feature -> le -> cumulative count."""
    out: dict[tuple[str, ...], dict[str, dict[str, float]]] = {}
    for s in samples:
        key = tuple(s.labels.get(label, "") for label in labels)
        feature = s.labels.get(feature_label, "")
        out.setdefault(key, {}).setdefault(feature, {})[s.labels.get("le", "")] = s.value
    return out


def _index(samples: Sequence[Sample], labels: Sequence[str]) -> dict[tuple[str, ...], Sample]:
    return {tuple(s.labels.get(label, "") for label in labels): s for s in samples}
