"""A RetrainPolicy's status as a typed, frozen value: read once, changed step by step, written once.

Reconciliation reads the stored status with ``PolicyStatus.from_dict``, and each step (following
the Job, launching one, charging the ledger, recording the decision) returns a new value through
the named transitions below; ``to_dict`` gives the wire form, which ``domain.status`` diffs against
what the API server holds to decide the one write. So removing a field is a property of the type:
a record set to None or a field the type does not know is simply absent from ``to_dict``, and the
diff names it with null.

Reading: ``from_dict`` reads what this operator writes. A field the types do not know is dropped;
the CRD's structural schema prunes such fields anyway, so only a status written against a newer
CRD holds one. A record without the field that identifies it (activeJob's name, lastRetrain's job,
model's version, lastRollback's version) reads as absent. Writing: ``to_dict`` never emits None
(the server prunes nulls, and a null it pruned would differ from the built status forever), and
every text is cut to the length the status has always had.

Times stay the RFC 3339 text the server holds, with parsed properties where they are compared:
some come from outside (a Job's creationTimestamp, a custom trainer's ``trainedAt``), and
re-formatting them would rewrite a status that did not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from retrain_operator.domain.api import InlineLimits, PolicySpec
from retrain_operator.domain.budget import Assessment, Ledger, RunRecord
from retrain_operator.domain.budget_status import SpendingStatus
from retrain_operator.domain.decision import Decision, decide
from retrain_operator.domain.jobs import JobOutcome
from retrain_operator.domain.numbers import number
from retrain_operator.domain.status import (
    Condition,
    ConditionRecord,
    compact,
    conditions_from,
    merge_conditions,
    records,
    without_nulls,
)
from retrain_operator.domain.times import parse_rfc3339, rfc3339
from retrain_operator.domain.triggers import NO_BASELINE, PreviousState, TriggerResult, get_trigger_type

HISTORY_LIMIT = 20
RECORD_MESSAGE = 512
RECORD_REASON = 64
DECISION_MESSAGE = 1024
VALUE_DIGITS = 6


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _number(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mapping(raw: Any) -> Mapping[str, Any]:
    return raw if isinstance(raw, Mapping) else {}


@dataclass(frozen=True)
class ActiveJob:
    """The Job running for this policy now: a training, or (``action`` Promote) a rollback to ``version``.

    ``accuracy_before``/``baseline_before`` are the accuracy and its baseline when a training
    started, kept so its history entry can say how much of the drop it recovered.
    """

    name: str
    trigger: str = ""
    started_at: str | None = None
    action: str | None = None
    version: str | None = None
    accuracy_before: float | None = None
    baseline_before: float | None = None

    @property
    def started(self) -> datetime | None:
        return parse_rfc3339(self.started_at)

    @property
    def is_rollback(self) -> bool:
        return self.action == "Promote"

    @classmethod
    def from_dict(cls, raw: Any) -> ActiveJob | None:
        raw = _mapping(raw)
        if not _text(raw, "name"):
            return None
        return cls(
            name=str(raw["name"]),
            trigger=_text(raw, "trigger") or "",
            started_at=_text(raw, "startedAt"),
            action=_text(raw, "action"),
            version=_text(raw, "version"),
            accuracy_before=_number(raw, "accuracyBefore"),
            baseline_before=_number(raw, "baselineBefore"),
        )

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "name": self.name,
                "trigger": self.trigger,
                "action": self.action,
                "version": self.version,
                "startedAt": self.started_at,
                "accuracyBefore": self.accuracy_before,
                "baselineBefore": self.baseline_before,
            }
        )


@dataclass(frozen=True)
class ModelRecord:
    """The champion now serving, as its trainer reported it."""

    version: str
    uri: str | None = None
    metric: str | None = None
    score: float | None = None
    trained_at: str | None = None
    rows: int | None = None
    reference: Mapping[str, Any] | None = None

    @property
    def trained(self) -> datetime | None:
        return parse_rfc3339(self.trained_at)

    @classmethod
    def from_result(cls, result: Mapping[str, Any], *, finished: str) -> ModelRecord:
        """The champion from a trainer's result; a trainer that gives no training time trained it when it finished."""
        reference = result.get("reference")
        return cls(
            version=str(result["version"]),
            uri=str(result.get("modelUri", "")),
            metric=str(result.get("metric", "")),
            score=_number(result, "score"),
            trained_at=str(result.get("trainedAt") or finished),
            rows=result["rows"] if isinstance(result.get("rows"), int) else None,
            reference=without_nulls(reference) if isinstance(reference, Mapping) else None,
        )

    @classmethod
    def from_dict(cls, raw: Any) -> ModelRecord | None:
        raw = _mapping(raw)
        if not _text(raw, "version"):
            return None
        rows = raw.get("rows")
        reference = raw.get("reference")
        return cls(
            version=str(raw["version"]),
            uri=_text(raw, "uri"),
            metric=_text(raw, "metric"),
            score=_number(raw, "score"),
            trained_at=_text(raw, "trainedAt"),
            rows=rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
            reference=without_nulls(reference) if isinstance(reference, Mapping) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "version": self.version,
                "uri": self.uri,
                "metric": self.metric,
                "score": self.score,
                "trainedAt": self.trained_at,
                "rows": self.rows,
                "reference": dict(self.reference) if self.reference is not None else None,
            }
        )


@dataclass(frozen=True)
class DataReport:
    """What the trainer made of its data: rows read, rows it trained and scored on, and rows dropped by cause."""

    rows_read: int
    rows_used: int
    dropped: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> DataReport | None:
        raw = _mapping(raw)
        read, used = raw.get("rowsRead"), raw.get("rowsUsed")
        if not _count(read) or not _count(used):
            return None
        dropped = {str(k): int(v) for k, v in _mapping(raw.get("droppedRows")).items() if _count(v) and v}
        return cls(rows_read=int(read), rows_used=int(used), dropped=dict(sorted(dropped.items())[:MAX_DROP_CAUSES]))

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {"rowsRead": self.rows_read, "rowsUsed": self.rows_used, "droppedRows": dict(self.dropped) or None}
        )


MAX_DROP_CAUSES = 16


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class RetrainRecord:
    """How the last training Job ended (``outcome`` Succeeded or Failed), and the model it produced.

    A failure carries its cause: ``reason`` (the trainer's, the pod's or the Job's, most specific first)
    and the container's ``exit_code``. ``data`` and the memory figures are the trainer's report, when
    the built-in trainer got that far.
    """

    job: str
    trigger: str
    started_at: str | None
    finished_at: str
    outcome: str
    message: str
    model_version: str | None = None
    score: float | None = None
    promoted: bool | None = None
    promotion_reason: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    data: DataReport | None = None
    peak_memory_mib: float | None = None
    memory_estimate_mib: float | None = None

    @property
    def started(self) -> datetime | None:
        return parse_rfc3339(self.started_at)

    @classmethod
    def lost(cls, active: ActiveJob, *, now: datetime) -> RetrainRecord:
        return cls(
            job=active.name,
            trigger=active.trigger,
            started_at=active.started_at,
            finished_at=rfc3339(now),
            outcome="Failed",
            message="the Job disappeared before it finished (deleted?)",
        )

    @classmethod
    def finished(cls, active: ActiveJob, outcome: JobOutcome, *, now: datetime) -> RetrainRecord:
        """The record of a training Job that ended, in the trainer's words where it gave some."""
        result = outcome.result
        peak, estimate = _number(result, "peakMemoryMiB"), _number(result, "memoryEstimateMiB")
        record = cls(
            job=active.name,
            trigger=active.trigger,
            started_at=active.started_at,
            finished_at=rfc3339(outcome.finished_at or now),
            outcome="Succeeded" if outcome.succeeded else "Failed",
            message=outcome.message[:RECORD_MESSAGE] or ("model trained" if outcome.succeeded else "failed"),
            reason=outcome.reason[:RECORD_REASON] if outcome.reason and not outcome.succeeded else None,
            exit_code=outcome.exit_code if not outcome.succeeded else None,
            data=DataReport.from_dict(result.get("data")),
            peak_memory_mib=None if peak is None else round(peak, 1),
            memory_estimate_mib=None if estimate is None else round(estimate, 1),
        )
        if not (outcome.succeeded and result.get("version")):
            return record
        # A trainer without a promotion gate (a custom image) promotes what it reports.
        promoted = bool(result.get("promoted", True))
        message = record.message
        if message == "training Job completed":
            verb = "trained and promoted" if promoted else "trained, kept as a candidate"
            score = _number(result, "score")
            message = f"model {result['version']} {verb}, {result.get('metric', 'score')} {number(score)}"
            warnings = result.get("warnings")
            if isinstance(warnings, list) and warnings:
                message = f"{message}; warning: {warnings[0]}"[:RECORD_MESSAGE]
        reason = result.get("promotionReason")
        return replace(
            record,
            model_version=str(result["version"]),
            score=_number(result, "score"),
            promoted=promoted,
            message=message,
            promotion_reason=str(reason)[:RECORD_MESSAGE] if reason else None,
        )

    @classmethod
    def from_dict(cls, raw: Any) -> RetrainRecord | None:
        raw = _mapping(raw)
        if not _text(raw, "job"):
            return None
        promoted = raw.get("promoted")
        return cls(
            job=str(raw["job"]),
            trigger=_text(raw, "trigger") or "",
            started_at=_text(raw, "startedAt"),
            finished_at=_text(raw, "finishedAt") or "",
            outcome=_text(raw, "outcome") or "",
            message=_text(raw, "message") or "",
            model_version=_text(raw, "modelVersion"),
            score=_number(raw, "score"),
            promoted=promoted if isinstance(promoted, bool) else None,
            promotion_reason=_text(raw, "promotionReason"),
            reason=_text(raw, "reason"),
            exit_code=raw["exitCode"] if _count(raw.get("exitCode")) else None,
            data=DataReport.from_dict(raw.get("data")),
            peak_memory_mib=_number(raw, "peakMemoryMiB"),
            memory_estimate_mib=_number(raw, "memoryEstimateMiB"),
        )

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "job": self.job,
                "trigger": self.trigger,
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
                "outcome": self.outcome,
                "reason": self.reason,
                "exitCode": self.exit_code,
                "message": self.message,
                "modelVersion": self.model_version,
                "score": self.score,
                "promoted": self.promoted,
                "promotionReason": self.promotion_reason,
                "data": self.data.to_dict() if self.data else None,
                "peakMemoryMiB": self.peak_memory_mib,
                "memoryEstimateMiB": self.memory_estimate_mib,
            }
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One finished training, as the cost-benefit gate learns from it: duration and accuracy recovered."""

    job: str
    duration_seconds: float
    outcome: str
    accuracy_before: float | None = None
    baseline_before: float | None = None
    score_after: float | None = None

    @classmethod
    def of(cls, record: RetrainRecord, active: ActiveJob, *, seconds: float) -> HistoryEntry:
        return cls(
            job=record.job,
            duration_seconds=round(seconds, 1),
            outcome=record.outcome,
            accuracy_before=active.accuracy_before,
            baseline_before=active.baseline_before,
            score_after=record.score,
        )

    def run(self) -> RunRecord:
        return RunRecord(
            duration_seconds=self.duration_seconds,
            accuracy_before=self.accuracy_before,
            baseline_before=self.baseline_before,
            score_after=self.score_after,
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HistoryEntry:
        return cls(
            job=_text(raw, "job") or "",
            duration_seconds=_number(raw, "durationSeconds") or 0.0,
            outcome=_text(raw, "outcome") or "",
            accuracy_before=_number(raw, "accuracyBefore"),
            baseline_before=_number(raw, "baselineBefore"),
            score_after=_number(raw, "scoreAfter"),
        )

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "job": self.job,
                "durationSeconds": self.duration_seconds,
                "outcome": self.outcome,
                "accuracyBefore": self.accuracy_before,
                "baselineBefore": self.baseline_before,
                "scoreAfter": self.score_after,
            }
        )


def rollback_result(outcome: JobOutcome) -> tuple[bool, str]:
    """Whether a finished promote Job moved the champion, and what to say about it."""
    if outcome.succeeded and outcome.result.get("version"):
        return True, f"champion is now {outcome.result['version']}"
    return False, outcome.message or "the promote Job failed"


@dataclass(frozen=True)
class RollbackRecord:
    """The last rollback: the version asked for, its promote Job, and how it went (Running, Succeeded, Failed)."""

    version: str
    job: str
    outcome: str
    message: str
    finished_at: str | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> RollbackRecord | None:
        raw = _mapping(raw)
        if _text(raw, "version") is None:
            return None
        return cls(
            version=str(raw["version"]),
            job=_text(raw, "job") or "",
            outcome=_text(raw, "outcome") or "",
            message=_text(raw, "message") or "",
            finished_at=_text(raw, "finishedAt"),
        )

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "version": self.version,
                "job": self.job,
                "outcome": self.outcome,
                "message": self.message,
                "finishedAt": self.finished_at,
            }
        )


@dataclass(frozen=True)
class CostBenefitRecord:
    """The cost-benefit numbers behind the last decision, rounded as they are shown."""

    expected_cost: float
    expected_benefit: float
    net: float
    expected_duration_seconds: float
    recovery_share: float
    accuracy_drop: float | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> CostBenefitRecord | None:
        raw = _mapping(raw)
        numbers = [
            _number(raw, key)
            for key in ("expectedCost", "expectedBenefit", "net", "expectedDurationSeconds", "recoveryShare")
        ]
        if any(n is None for n in numbers):
            return None
        cost, benefit, net, duration, share = (float(n or 0.0) for n in numbers)
        return cls(cost, benefit, net, duration, share, _number(raw, "accuracyDrop"))

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "expectedCost": self.expected_cost,
                "expectedBenefit": self.expected_benefit,
                "net": self.net,
                "expectedDurationSeconds": self.expected_duration_seconds,
                "recoveryShare": self.recovery_share,
                "accuracyDrop": self.accuracy_drop,
            }
        )


@dataclass(frozen=True)
class DecisionRecord:
    """The last decision as recorded: its ``time`` is when it was first taken, kept while it stands."""

    time: str
    action: str
    reason: str
    message: str
    cost_benefit: CostBenefitRecord | None = None

    @classmethod
    def taken(cls, previous: DecisionRecord | None, decision: Decision, *, now: datetime) -> DecisionRecord:
        """Every launch is a decision of its own, so a Retrain always carries the time it was taken."""
        same = (
            previous is not None
            and decision.action != "Retrain"
            and previous.action == decision.action
            and previous.reason == decision.reason
        )
        time = previous.time if same and previous is not None and previous.time else rfc3339(now)
        numbers = CostBenefitRecord.from_dict(decision.assessment.to_dict()) if decision.assessment else None
        return cls(
            time=time,
            action=decision.action,
            reason=decision.reason,
            message=decision.message[:DECISION_MESSAGE],
            cost_benefit=numbers,
        )

    @classmethod
    def from_dict(cls, raw: Any) -> DecisionRecord | None:
        raw = _mapping(raw)
        if not raw:
            return None
        return cls(
            time=_text(raw, "time") or "",
            action=_text(raw, "action") or "",
            reason=_text(raw, "reason") or "",
            message=_text(raw, "message") or "",
            cost_benefit=CostBenefitRecord.from_dict(raw.get("costBenefit")),
        )

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "time": self.time or None,
                "action": self.action,
                "reason": self.reason,
                "message": self.message,
                "costBenefit": self.cost_benefit.to_dict() if self.cost_benefit else None,
            }
        )


@dataclass(frozen=True)
class FeatureValue:
    """One of the most drifted features of a drift trigger, with its statistic."""

    name: str
    value: float


@dataclass(frozen=True)
class TriggerRecord:
    """A trigger's state as shown in status: value, threshold, since when, and why in words."""

    name: str
    type: str
    state: str
    message: str
    value: float | None = None
    threshold: float | None = None
    since: str | None = None
    features: tuple[FeatureValue, ...] = ()
    learned_threshold: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, result: TriggerResult) -> TriggerRecord:
        """Values rounded, so a value that moved in its last digits is not a change worth a write."""
        features = result.details.get("features") or ()
        learned = result.details.get("learnedThreshold")
        return cls(
            name=result.name,
            type=result.type,
            state=result.state,
            message=result.message[:RECORD_MESSAGE],
            value=None if result.value is None else round(result.value, VALUE_DIGITS),
            threshold=None if result.threshold is None else round(result.threshold, VALUE_DIGITS),
            since=rfc3339(result.since) if result.since is not None else None,
            features=tuple(FeatureValue(str(f["name"]), float(f["value"])) for f in features),
            learned_threshold=without_nulls(dict(learned)) if learned else None,
        )

    def previous(self) -> PreviousState:
        """What the next evaluation of this trigger needs to remember: its state and since when."""
        return PreviousState(self.state or None, parse_rfc3339(self.since))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TriggerRecord:
        features = tuple(
            FeatureValue(str(f.get("name", "")), float(f.get("value") or 0.0)) for f in records(raw.get("features"))
        )
        learned = raw.get("learnedThreshold")
        return cls(
            name=_text(raw, "name") or "",
            type=_text(raw, "type") or "",
            state=_text(raw, "state") or "",
            message=_text(raw, "message") or "",
            value=_number(raw, "value"),
            threshold=_number(raw, "threshold"),
            since=_text(raw, "since"),
            features=features,
            learned_threshold=without_nulls(learned) if isinstance(learned, Mapping) and learned else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "name": self.name,
                "type": self.type,
                "state": self.state,
                "value": self.value,
                "threshold": self.threshold,
                "message": self.message,
                "since": self.since,
                "features": [{"name": f.name, "value": f.value} for f in self.features] or None,
                "learnedThreshold": dict(self.learned_threshold) if self.learned_threshold else None,
            }
        )


def conditions_for(
    *,
    valid_problems: Sequence[str],
    results: Sequence[TriggerResult],
    decision: Decision | None,
    active_job: str | None,
    last_outcome: str | None,
) -> list[Condition]:
    """The five standard conditions; Ready summarises the others."""
    if valid_problems:
        text = "; ".join(valid_problems)
        valid = Condition("Valid", "False", "InvalidSpec", text)
    else:
        valid = Condition("Valid", "True", "SpecValid", "the spec is valid")
    metric_results = [r for r in results if get_trigger_type(r.type).reads_metrics]
    missing = [r for r in metric_results if r.problem is not None and r.problem != NO_BASELINE]
    unanchored = [r for r in metric_results if r.problem == NO_BASELINE]
    if valid_problems:
        metrics = Condition("MetricsAvailable", "Unknown", "NotEvaluated", "the spec is invalid")
    elif not metric_results:
        metrics = Condition("MetricsAvailable", "True", "NoMetricTriggers", "no trigger reads metrics")
    elif missing:
        first = missing[0]
        metrics = Condition(
            "MetricsAvailable", "False", first.problem or "NoData", "; ".join(f"{r.name}: {r.message}" for r in missing)
        )
    else:
        metrics = Condition("MetricsAvailable", "True", "QueriesSucceeded", "every trigger has a value")
    firing = [r for r in results if r.firing]
    if firing:
        needed = Condition(
            "RetrainNeeded", "True", "TriggerFiring", "; ".join(f"{r.name}: {r.message}" for r in firing)
        )
    elif valid_problems:
        needed = Condition("RetrainNeeded", "Unknown", "NotEvaluated", "the spec is invalid")
    else:
        needed = Condition("RetrainNeeded", "False", "NoTriggerFiring", "no trigger is firing")
    if active_job:
        training = Condition("Training", "True", "JobRunning", f"Job {active_job} is running")
    elif last_outcome == "Succeeded":
        training = Condition("Training", "False", "JobSucceeded", "the last training Job succeeded")
    elif last_outcome == "Failed":
        training = Condition("Training", "False", "JobFailed", "the last training Job failed")
    else:
        training = Condition("Training", "False", "NoJob", "no training Job has run")
    if valid_problems:
        ready = Condition("Ready", "False", "InvalidSpec", valid.message)
    elif metrics.status == "False":
        ready = Condition("Ready", "False", "MetricsUnavailable", metrics.message)
    elif unanchored and not firing:
        text = "; ".join(f"{r.name}: {r.message}" for r in unanchored)
        ready = Condition("Ready", "False", NO_BASELINE, text)
    else:
        reason = decision.reason if decision else "Evaluated"
        ready = Condition("Ready", "True", reason, decision.message if decision else "evaluated")
    return [ready, valid, metrics, needed, training]


def phase_for(*, valid: bool, suspended: bool, active_job: str | None, metrics_ok: bool) -> str:
    if not valid:
        return "Invalid"
    if active_job:
        return "Training"
    if suspended:
        return "Suspended"
    if not metrics_ok:
        return "Degraded"
    return "Watching"


@dataclass(frozen=True)
class PolicyStatus:
    """Everything the operator records about one policy; every change is a method that returns a new value.

    ``triggers`` is None until a first evaluation (an invalid spec records an empty tuple);
    ``retrains`` counts the Jobs created, so the next Job's name is known before it exists.
    """

    observed_generation: int | None = None
    phase: str | None = None
    conditions: tuple[ConditionRecord, ...] = ()
    triggers: tuple[TriggerRecord, ...] | None = None
    last_decision: DecisionRecord | None = None
    active_job: ActiveJob | None = None
    last_retrain: RetrainRecord | None = None
    model: ModelRecord | None = None
    retrains: int = 0
    spending: SpendingStatus | None = None
    history: tuple[HistoryEntry, ...] = ()
    last_rollback: RollbackRecord | None = None
    last_rollback_request: str | None = None
    last_override: str | None = None

    # Reading.
    @property
    def active_name(self) -> str | None:
        return self.active_job.name if self.active_job is not None else None

    @property
    def last_retrain_started(self) -> datetime | None:
        return self.last_retrain.started if self.last_retrain is not None else None

    @property
    def model_score(self) -> float | None:
        return self.model.score if self.model is not None else None

    @property
    def ledger(self) -> Ledger:
        """The policy's own ledger (its inline limits); empty without limits."""
        return self.spending.ledger if self.spending is not None else Ledger()

    @property
    def failures_in_a_row(self) -> int:
        """Trainings that failed since the last one that succeeded, as far back as the history goes.

        A Job that disappeared is recorded in ``last_retrain`` only, so it counts once more on top.
        """
        streak = 0
        for entry in reversed(self.history):
            if entry.outcome != "Failed":
                break
            streak += 1
        last = self.last_retrain
        if last is not None and last.outcome == "Failed" and (not self.history or self.history[-1].job != last.job):
            streak += 1
        return streak

    def runs(self) -> list[RunRecord]:
        """The successful past trainings, as the cost-benefit gate and the estimate learn from them."""
        return [entry.run() for entry in self.history if entry.outcome == "Succeeded"]

    def previous_states(self) -> dict[str, PreviousState]:
        return {t.name: t.previous() for t in self.triggers or () if t.name}

    def decide(
        self,
        spec: PolicySpec,
        *,
        results: Sequence[TriggerResult],
        now: datetime,
        gate: Assessment | None = None,
        forced: str | None = None,
    ) -> Decision:
        """The decision on these trigger results, with the Job running and the last retrain start taken from here."""
        return decide(
            spec,
            results=results,
            active_job=self.active_name,
            last_retrain_start=self.last_retrain_started,
            now=now,
            gate=gate,
            forced=forced,
        )

    # Jobs.
    def job_started(self, active: ActiveJob) -> PolicyStatus:
        """A Job now runs for this policy (created, or adopted after a crash); the next one gets the next name."""
        return replace(self, active_job=active, retrains=self.retrains + 1)

    def job_lost(self, *, now: datetime) -> PolicyStatus:
        """The active Job is gone before it finished: a failed retrain."""
        if self.active_job is None:
            return self
        return replace(self, last_retrain=RetrainRecord.lost(self.active_job, now=now), active_job=None)

    def training_finished(self, record: RetrainRecord, *, result: Mapping[str, Any]) -> PolicyStatus:
        """The active training Job ended as ``record`` says; the model it promoted (from the trainer's
        ``result``) becomes the champion."""
        model = ModelRecord.from_result(result, finished=record.finished_at) if record.promoted else self.model
        return replace(self, last_retrain=record, model=model, active_job=None)

    def with_history(self, entry: HistoryEntry) -> PolicyStatus:
        return replace(self, history=(*self.history, entry)[-HISTORY_LIMIT:])

    # Rollbacks.
    def rollback_requested(self, version: str) -> PolicyStatus:
        """The rollback-to value is acted on (started or failed), so the same value never starts twice."""
        return replace(self, last_rollback_request=version)

    def rollback_started(self, *, version: str, job: str, now: datetime) -> PolicyStatus:
        status = self.job_started(
            ActiveJob(name=job, trigger="rollback", action="Promote", version=version, started_at=rfc3339(now))
        )
        return replace(
            status,
            last_rollback=RollbackRecord(
                version=version, job=job, outcome="Running", message=f"moving the champion to {version}"
            ),
        )

    def rollback_not_started(self, *, version: str, job: str, message: str, now: datetime) -> PolicyStatus:
        return replace(
            self,
            last_rollback=RollbackRecord(
                version=version, job=job, outcome="Failed", message=message[:RECORD_MESSAGE], finished_at=rfc3339(now)
            ),
        )

    def rollback_finished(self, outcome: JobOutcome, *, now: datetime) -> PolicyStatus:
        """The active promote Job ended: the champion it named serves now, or the record says why not."""
        if self.active_job is None:
            return self
        finished = rfc3339(outcome.finished_at or now)
        moved, message = rollback_result(outcome)
        record = RollbackRecord(
            version=self.active_job.version or "",
            job=self.active_job.name,
            outcome="Succeeded" if outcome.succeeded else "Failed",
            message=message[:RECORD_MESSAGE],
            finished_at=finished,
        )
        model = ModelRecord.from_result(outcome.result, finished=finished) if moved else self.model
        return replace(self, model=model, last_rollback=record, active_job=None)

    # Overrides and spending.
    def override_honoured(self, value: str) -> PolicyStatus:
        return replace(self, last_override=value)

    def charged(
        self, limits: InlineLimits | None, *, now: datetime, change: Callable[[Ledger], Ledger] = lambda ledger: ledger
    ) -> PolicyStatus:
        """The one way the policy's own ledger changes: apply ``change`` and roll the window to ``now``.

        Without inline limits the policy keeps no ledger, and ``spending`` goes away.
        """
        if limits is None:
            return replace(self, spending=None)
        return replace(
            self,
            spending=SpendingStatus.of(window=limits.window, limits=limits.limits, ledger=change(self.ledger), now=now),
        )

    # The evaluation's record.
    def evaluated(
        self, *, results: Sequence[TriggerResult], decision: Decision, suspended: bool, generation: int, now: datetime
    ) -> PolicyStatus:
        """What one evaluation of a valid spec shows: its decision, the triggers, the phase and the conditions."""
        metrics_ok = not any(r.problem for r in results if get_trigger_type(r.type).reads_metrics)
        last_outcome = self.last_retrain.outcome if self.last_retrain is not None else None
        conditions = conditions_for(
            valid_problems=[],
            results=results,
            decision=decision,
            active_job=self.active_name,
            last_outcome=last_outcome,
        )
        return replace(
            self,
            last_decision=DecisionRecord.taken(self.last_decision, decision, now=now),
            triggers=tuple(TriggerRecord.of(r) for r in results),
            phase=phase_for(valid=True, suspended=suspended, active_job=self.active_name, metrics_ok=metrics_ok),
            conditions=merge_conditions(self.conditions, conditions, generation=generation, now=now),
            observed_generation=generation,
        )

    def invalid(self, *, problems: Sequence[str], decision: Decision, generation: int, now: datetime) -> PolicyStatus:
        """What an invalid spec shows: why, and no trigger; what was running or trained is kept."""
        last_outcome = self.last_retrain.outcome if self.last_retrain is not None else None
        conditions = conditions_for(
            valid_problems=problems,
            results=[],
            decision=decision,
            active_job=self.active_name,
            last_outcome=last_outcome,
        )
        return replace(
            self,
            last_decision=DecisionRecord.taken(self.last_decision, decision, now=now),
            phase="Invalid",
            triggers=(),
            observed_generation=generation,
            conditions=merge_conditions(self.conditions, conditions, generation=generation, now=now),
        )

    def evaluation_failed(self, *, decision: Decision, generation: int, now: datetime) -> PolicyStatus:
        """An evaluation that raised: Ready=False with the decision's reason and message (why, sanitised);
        the other conditions, the triggers and what was running or trained are kept as they were."""
        ready = Condition("Ready", "False", decision.reason, decision.message)
        others = [Condition(c.type, c.status, c.reason, c.message) for c in self.conditions if c.type != "Ready"]
        return replace(
            self,
            last_decision=DecisionRecord.taken(self.last_decision, decision, now=now),
            phase="Degraded" if self.phase != "Training" else self.phase,
            conditions=merge_conditions(self.conditions, [ready, *others], generation=generation, now=now),
        )

    # The wire form.
    @classmethod
    def from_dict(cls, raw: Any) -> PolicyStatus:
        raw = _mapping(raw)
        generation, retrains = raw.get("observedGeneration"), raw.get("retrains")
        triggers = raw.get("triggers")
        spending = raw.get("spending")
        return cls(
            observed_generation=generation if isinstance(generation, int) else None,
            phase=_text(raw, "phase"),
            conditions=conditions_from(raw.get("conditions")),
            triggers=tuple(TriggerRecord.from_dict(t) for t in records(triggers))
            if isinstance(triggers, list)
            else None,
            last_decision=DecisionRecord.from_dict(raw.get("lastDecision")),
            active_job=ActiveJob.from_dict(raw.get("activeJob")),
            last_retrain=RetrainRecord.from_dict(raw.get("lastRetrain")),
            model=ModelRecord.from_dict(raw.get("model")),
            retrains=retrains if isinstance(retrains, int) and retrains > 0 else 0,
            spending=SpendingStatus.from_dict(spending) if isinstance(spending, Mapping) else None,
            history=tuple(HistoryEntry.from_dict(h) for h in records(raw.get("history"))),
            last_rollback=RollbackRecord.from_dict(raw.get("lastRollback")),
            last_rollback_request=_text(raw, "lastRollbackRequest"),
            last_override=_text(raw, "lastOverride"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The status as the API server holds it: no nulls, and no empty list the operator never writes."""
        return compact(
            {
                "observedGeneration": self.observed_generation,
                "phase": self.phase,
                "conditions": [c.to_dict() for c in self.conditions] or None,
                "triggers": [t.to_dict() for t in self.triggers] if self.triggers is not None else None,
                "lastDecision": self.last_decision.to_dict() if self.last_decision else None,
                "activeJob": self.active_job.to_dict() if self.active_job else None,
                "lastRetrain": self.last_retrain.to_dict() if self.last_retrain else None,
                "model": self.model.to_dict() if self.model else None,
                "retrains": self.retrains or None,
                "spending": self.spending.to_dict() if self.spending else None,
                "history": [h.to_dict() for h in self.history] or None,
                "lastRollback": self.last_rollback.to_dict() if self.last_rollback else None,
                "lastRollbackRequest": self.last_rollback_request,
                "lastOverride": self.last_override,
            }
        )
