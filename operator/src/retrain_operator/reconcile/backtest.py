"""``retrain-operator backtest``: what a policy would have done over a period of Prometheus history.

The operator's own decision logic is replayed at the policy's interval, step by step, and nothing is
created: the same observer and trigger types read the metrics (answered from range queries made once,
:mod:`~retrain_operator.reconcile.history`), ``evaluate_triggers`` judges them against the previous
state (``for``, clear levels, missing data), ``Spending`` prices the retrain and asks the cost-benefit
gate, ``decide`` weighs cooldown, one training at a time, and dry run, and the limits and budgets
judge the charge in their windows (a ``RetrainBudget`` from a file, kept in memory). A retrain starts a
simulated training that occupies the policy for its expected duration (the gate's, or the median of
past runs, or 10 minutes) and is then charged its cost and recorded as the operator records a Job
that succeeded.

What the history cannot know is stated in every result (:data:`LIMITATIONS`): how a retrain would
have changed the metrics after it. The metrics are replayed as they were recorded, the champion keeps
the score it had (the accuracy baseline does not move), and a simulated run teaches the gate its
duration but no recovery. The starting state is the policy file's status, if it has one (the model's
score, when it was trained, past runs); without one, the model is taken as trained at the start.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from retrain_operator.adapters.kubernetes import FakeKubeClient
from retrain_operator.adapters.prometheus import Sample
from retrain_operator.domain.api import EndpointSpec, PolicySpec, parse_budget_spec, parse_policy_spec
from retrain_operator.domain.budget import cost_of, expected_duration
from retrain_operator.domain.decision import Decision, Launch, launched, within_budget
from retrain_operator.domain.evaluation import accuracy_now, evaluate_triggers
from retrain_operator.domain.jobs import PolicyRef, job_name
from retrain_operator.domain.limits import DEFAULT_LIMITS, QueryLimits
from retrain_operator.domain.policy_status import ActiveJob, HistoryEntry, PolicyStatus, RetrainRecord
from retrain_operator.domain.times import rfc3339
from retrain_operator.domain.triggers import TriggerResult, get_trigger_type
from retrain_operator.reconcile.budgets import Accountant
from retrain_operator.reconcile.history import HistorySource, RangeSource
from retrain_operator.reconcile.observe import Observer, QuerySource, Subject
from retrain_operator.reconcile.spending import DEFAULT_DURATION, Spending, resources_of
from retrain_operator.reconcile.telemetry import Telemetry
from retrain_operator.settings.durations import format_duration

MAX_PERIOD = 90 * 86400.0
MAX_STEPS = 200_000
LIMITATIONS = (
    "The history does not know how a retrain would have changed the metrics after it: they are replayed as "
    "recorded, the champion keeps its score (the accuracy baseline does not move) and a simulated run teaches "
    "the cost-benefit gate its duration but no recovery.",
)
REFUSALS = ("CoolingDown", "NotWorthRetraining", "OverBudget", "TrainingInProgress", "DryRun")


class BacktestError(ValueError):
    """A request the backtest cannot run; the message names the flag or field and the fix."""


@dataclass(frozen=True)
class Change:
    """A step where the decision changed (or a retrain started), with the trigger states behind it."""

    at: datetime
    action: str
    reason: str
    message: str
    triggers: tuple[Mapping[str, Any], ...]
    cost_benefit: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": rfc3339(self.at),
            "action": self.action,
            "reason": self.reason,
            "message": self.message,
            "triggers": [dict(t) for t in self.triggers],
            "costBenefit": dict(self.cost_benefit) if self.cost_benefit else None,
        }


@dataclass(frozen=True)
class Run:
    """One simulated retrain: when it ran, what fired it, and what it cost."""

    job: str
    started: datetime
    finished: datetime
    triggers: tuple[str, ...]
    cpu_hours: float
    gpu_hours: float
    cost: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "started": rfc3339(self.started),
            "finished": rfc3339(self.finished),
            "triggers": list(self.triggers),
            "cpuHours": round(self.cpu_hours, 6),
            "gpuHours": round(self.gpu_hours, 6),
            "cost": round(self.cost, 6),
        }


@dataclass
class TriggerTrace:
    """A trigger's value, threshold and state at every step, for the plot."""

    name: str
    type: str
    values: list[float | None] = field(default_factory=list)
    thresholds: list[float | None] = field(default_factory=list)
    states: list[str] = field(default_factory=list)


@dataclass
class BacktestResult:
    """What the replay found: the decision changes, the simulated retrains, the totals and the query cost."""

    policy: str
    start: datetime
    end: datetime
    interval: float
    dry_run: bool
    times: list[datetime] = field(default_factory=list)
    traces: list[TriggerTrace] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    refusal_episodes: Counter[str] = field(default_factory=Counter)
    would_retrain: int = 0
    range_queries: int = 0
    read_seconds: float = 0.0
    instant_queries_answered: int = 0
    wall_seconds: float = 0.0

    @property
    def evaluations(self) -> int:
        return len(self.times)

    def totals(self) -> dict[str, Any]:
        refusals = {
            reason: {"evaluations": self.reasons[reason], "episodes": self.refusal_episodes[reason]}
            for reason in REFUSALS
            if self.reasons[reason]
        }
        return {
            "evaluations": self.evaluations,
            "retrains": len(self.runs),
            "wouldRetrain": self.would_retrain,
            "refusals": refusals,
            "decisions": dict(sorted(self.reasons.items())),
            "cpuHours": round(sum(r.cpu_hours for r in self.runs), 6),
            "gpuHours": round(sum(r.gpu_hours for r in self.runs), 6),
            "cost": round(sum(r.cost for r in self.runs), 6),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "from": rfc3339(self.start),
            "to": rfc3339(self.end),
            "interval": format_duration(self.interval),
            "dryRun": self.dry_run,
            "changes": [c.to_dict() for c in self.changes],
            "retrains": [r.to_dict() for r in self.runs],
            "totals": self.totals(),
            "queries": {
                "rangeQueries": self.range_queries,
                "readSeconds": round(self.read_seconds, 3),
                "instantQueriesAnswered": self.instant_queries_answered,
            },
            "wallSeconds": round(self.wall_seconds, 3),
            "limitations": list(LIMITATIONS),
        }


def period(start: datetime, end: datetime, *, interval: float, now: datetime) -> tuple[datetime, int]:
    """The first step (``start`` rounded up to a whole interval since the epoch) and the number of steps."""
    if end <= start:
        raise BacktestError(f"--to {rfc3339(end)} is not after --from {rfc3339(start)}; give a later --to")
    span = (end - start).total_seconds()
    if span > MAX_PERIOD:
        raise BacktestError(
            f"--from/--to span {format_duration(span)}; at most {format_duration(MAX_PERIOD)}: shorten the period"
        )
    if end > now + timedelta(minutes=1):
        raise BacktestError(f"--to {rfc3339(end)} is in the future; the history ends now ({rfc3339(now)})")
    first = datetime.fromtimestamp(-(-start.timestamp() // interval) * interval, UTC)
    steps = int((end - first).total_seconds() // interval) + 1
    if steps > MAX_STEPS:
        raise BacktestError(
            f"--from/--to hold {steps} evaluations at the policy's interval {format_duration(interval)}; "
            f"at most {MAX_STEPS}: shorten the period"
        )
    return first, steps


class _Recorder:
    """A query source that records what one step asks and answers nothing."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, datetime]] = []

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        self.asked.append((promql, at))
        return []


def _trace(result: TriggerResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "state": result.state,
        "value": None if result.value is None else round(result.value, 6),
        "threshold": None if result.threshold is None else round(result.threshold, 6),
    }


class Replay:
    """One policy replayed over a period; :meth:`run` gives the :class:`BacktestResult`."""

    def __init__(
        self,
        body: Mapping[str, Any],
        *,
        source: RangeSource,
        start: datetime,
        end: datetime,
        budget: Mapping[str, Any] | None = None,
        namespace_label: str | None = None,
        limits: QueryLimits = DEFAULT_LIMITS,
        now: datetime | None = None,
    ) -> None:
        self.spec: PolicySpec = parse_policy_spec(body.get("spec"))
        meta = body.get("metadata") or {}
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta.get("name") or "policy")
        self.ref = PolicyRef(namespace=self.namespace, name=self.name, uid=str(meta.get("uid") or "backtest"))
        self.status = PolicyStatus.from_dict(body.get("status"))
        self.interval = self.spec.evaluation.interval
        self.first, self.steps = period(start, end, interval=self.interval, now=now or datetime.now(UTC))
        self.last = self.first + timedelta(seconds=(self.steps - 1) * self.interval)
        self.endpoint = EndpointSpec(url="backtest", allow_raw_queries=True, namespace_label=namespace_label)
        self.limits = limits
        self.history = HistorySource(source=source, interval=self.interval, start=self.first, end=self.last)
        kube = FakeKubeClient()
        if self.spec.decision.budget:
            if budget is None:
                named = self.spec.decision.budget
                raise BacktestError(f"spec.decision.budget names RetrainBudget {named!r}: pass it with --budget FILE")
            budget_name = str((budget.get("metadata") or {}).get("name") or "")
            if budget_name != self.spec.decision.budget:
                raise BacktestError(
                    f"--budget holds RetrainBudget {budget_name!r}, but the policy names {self.spec.decision.budget!r}"
                )
            parse_budget_spec(budget.get("spec"))  # InvalidSpec names the field
            kube.add_budget(self.namespace, budget_name, budget.get("spec") or {})
        self._now = self.first
        self.spending = Spending(accountant=Accountant(kube=kube, clock=lambda: self._now, telemetry=Telemetry()))
        self._finish: datetime | None = None

    def _subject(self) -> Subject:
        model = self.status.model
        trained = (model.trained if model is not None else None) or self.first
        return Subject(self.namespace, self.name, self.spec, "backtest", self.endpoint, model_trained_at=trained)

    async def _plan(self) -> None:
        """Record what one step asks (at the last step), and how long before the step each query is evaluated."""
        recorder = _Recorder()

        async def recording(_: str) -> QuerySource:
            return recorder

        subject = self._subject()
        await Observer(source_for=recording, limits=self.limits).observe([subject], now=self.last)
        matchers = dict(self.spec.metrics.selector)
        if self.endpoint.namespace_label:
            matchers[self.endpoint.namespace_label] = self.namespace
        for trigger in self.spec.triggers:
            # A window that is the model's age (dataVolume) is a new query text at every step: read its counter.
            counter = get_trigger_type(trigger.type).moving_counter(trigger.kind, matchers)
            if counter is not None:
                since = (subject.model_trained_at or self.first).timestamp()
                earliest = self.first.timestamp() - self.limits.max_range
                self.history.counter(counter, since=max(since, earliest))
        for text, at in recorder.asked:
            self.history.record(text, shift=(self.last - at).total_seconds())

    def _duration(self) -> float:
        runs = self.status.runs()
        if self.spec.decision.cost_benefit is not None:
            return expected_duration(self.spec.decision.cost_benefit, runs)[0]
        durations = [r.duration_seconds for r in runs if r.duration_seconds > 0]
        return float(statistics.median(durations)) if durations else DEFAULT_DURATION

    async def _finish_training(self, result: BacktestResult) -> None:
        """The simulated Job ends as one that succeeded: charged its real (expected) duration, the model kept."""
        active = self.status.active_job
        assert active is not None and active.started is not None and self._finish is not None
        model = self.status.model
        record = RetrainRecord(
            job=active.name,
            trigger=active.trigger,
            started_at=active.started_at,
            finished_at=rfc3339(self._finish),
            outcome="Succeeded",
            message="simulated retrain (backtest)",
            model_version=f"backtest-{self.status.retrains}",
            promoted=True,
        )
        outcome = {
            "version": record.model_version,
            "score": model.score if model is not None else None,
            "metric": model.metric if model is not None else None,
            "rows": model.rows if model is not None else None,
            "reference": dict(model.reference) if model is not None and model.reference else None,
            "trainedAt": rfc3339(self._finish),
        }
        status = self.status.training_finished(record, result=outcome)
        status, seconds = await self.spending.settle(
            self.ref,
            self.spec,
            status,
            job=active.name,
            job_body=None,
            started=active.started,
            finished=self._finish,
            now=self._finish,
        )
        self.status = status.with_history(HistoryEntry.of(record, active, seconds=seconds))
        cpu, gpu, money = cost_of(
            resources_of(self.spec), seconds=seconds, prices=await self.spending.prices(self.namespace, self.spec)
        )
        result.runs.append(
            Run(active.name, active.started, self._finish, tuple(active.trigger.split(",")), cpu, gpu, money)
        )
        self._finish = None

    async def _decide(self, results: Sequence[TriggerResult], now: datetime) -> Decision:
        """The engine's retrain path, with a simulated Job: gate, decide, limits and budgets, start."""
        spec, status = self.spec, self.status
        gate = await self.spending.gate(self.namespace, spec, results=results, status=status)
        decision = status.decide(
            spec,
            results=results,
            now=now,
            gate=gate,
        )
        if not decision.retrains:
            return decision
        job = job_name(self.ref, status.retrains)
        charge = await self.spending.estimate(self.ref, spec, status, job=job, now=now)
        status, verdict = await self.spending.admit(
            self.namespace, spec, status, charge=charge, reserve=decision.launches, now=now
        )
        decision = within_budget(decision, verdict)
        if decision.launches:
            decision = launched(decision, Launch(job, "Created"))
            baseline, current = accuracy_now(spec, results, status.model_score)
            if baseline is None or current is None:
                baseline = current = None
            status = status.job_started(
                ActiveJob(
                    name=job,
                    trigger=",".join(decision.triggers),
                    started_at=rfc3339(now),
                    accuracy_before=None if current is None else round(current, 6),
                    baseline_before=None if baseline is None else round(baseline, 6),
                )
            )
            self._finish = now + timedelta(seconds=self._duration())
        self.status = status
        return decision

    async def run(self) -> BacktestResult:
        began = time.perf_counter()
        result = BacktestResult(
            policy=f"{self.namespace}/{self.name}",
            start=self.first,
            end=self.last,
            interval=self.interval,
            dry_run=self.spec.decision.dry_run,
            traces=[],
        )
        await self._plan()
        await self.history.fetch()
        failed = self.history.failures()
        if failed:
            text, error = failed[0]
            raise BacktestError(
                f"reading the history failed ({error.reason}): {error}; query {text[:200]!r}. Check --prometheus-url "
                "and that the period's history is there; a slow server needs a longer --query-timeout"
            )
        history = self.history

        async def replayed(_: str) -> QuerySource:
            return history

        observer = Observer(source_for=replayed, limits=self.limits)
        previous: tuple[str, str] | None = None
        for i in range(self.steps):
            now = self.first + timedelta(seconds=i * self.interval)
            self._now = now
            if self._finish is not None and now >= self._finish:
                await self._finish_training(result)
            observed = await observer.observe([self._subject()], now=now)
            if history.misses:
                raise RuntimeError(f"the backtest has no history for {history.misses[0]}")
            observations = {trigger: obs for (_, _, trigger), obs in observed.items()}
            results = evaluate_triggers(
                self.spec, observations=observations, status=self.status, created=self.first, now=now
            )
            decision = await self._decide(results, now)
            self.status = self.status.charged(self.spec.decision.limits, now=now).evaluated(
                results=results, decision=decision, suspended=self.spec.suspend, generation=1, now=now
            )
            self._record(result, now, results, decision, previous)
            previous = (decision.action, decision.reason)
        if self._finish is not None:  # a retrain still running at the end is charged as it would have been
            await self._finish_training(result)
        result.range_queries = history.range_queries
        result.read_seconds = history.fetch_seconds
        result.instant_queries_answered = history.instant_queries
        result.wall_seconds = time.perf_counter() - began
        return result

    def _record(
        self,
        result: BacktestResult,
        now: datetime,
        results: Sequence[TriggerResult],
        decision: Decision,
        previous: tuple[str, str] | None,
    ) -> None:
        result.times.append(now)
        if not result.traces:
            result.traces = [TriggerTrace(r.name, r.type) for r in results]
        for trace, r in zip(result.traces, results, strict=True):
            trace.values.append(r.value)
            trace.thresholds.append(r.threshold)
            trace.states.append(r.state)
        result.reasons[decision.reason] += 1
        if decision.action == "WouldRetrain":
            result.would_retrain += 1
        changed = previous != (decision.action, decision.reason) or decision.launches
        if changed and decision.reason in REFUSALS:
            result.refusal_episodes[decision.reason] += 1
        if changed:
            numbers = decision.assessment.to_dict() if decision.assessment else None
            result.changes.append(
                Change(
                    now,
                    decision.action,
                    decision.reason,
                    decision.message,
                    tuple(_trace(r) for r in results),
                    numbers,
                )
            )


async def backtest(
    body: Mapping[str, Any],
    *,
    source: RangeSource,
    start: datetime,
    end: datetime,
    budget: Mapping[str, Any] | None = None,
    namespace_label: str | None = None,
    now: datetime | None = None,
) -> BacktestResult:
    """Replay ``body`` (a RetrainPolicy) from ``start`` to ``end``. Raises InvalidSpec or BacktestError."""
    replay = Replay(body, source=source, start=start, end=end, budget=budget, namespace_label=namespace_label, now=now)
    return await replay.run()
