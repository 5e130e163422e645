"""What every trigger type shares: its spec's place in a policy, what it observed, what it concluded.

A trigger fires only on evidence. ``for`` is judged from the metric's own history (the observation
carries the least favourable value over the period and how many points it saw), so an operator
that restarts, or a policy created while accuracy is already low, needs no memory of its own.
Hysteresis uses the previous state from status: once firing, a trigger clears only past its clear
level. Missing data is never a value of 0: by default it makes the trigger inconclusive.

:class:`TriggerType` is the one interface a trigger type implements (parse, plan queries, read
them, evaluate); the reconciler only ever calls it through the registry in this package.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from retrain_operator.domain.limits import DEFAULT_LIMITS, QueryLimits
from retrain_operator.domain.numbers import number
from retrain_operator.settings.durations import format_duration
from retrain_operator.settings.reader import Reader

State = Literal["firing", "pending", "clear", "inconclusive"]
# The problem of a trigger whose metric has a value but nothing to compare it with (no trained model and no
# fixed baseline): inconclusive, yet the metrics are available, so it has its own reason.
NO_BASELINE = "NoBaseline"
Buckets = Mapping[str, Mapping[str, float]]  # feature -> le -> cumulative count

# Prometheus name grammars: what a trigger may name as its metric or feature label. Names starting
# with "__" are Prometheus' own (``__name__`` is the metric name: a matcher on it would name the metric
# twice); ``le`` is the bucket bound of a histogram, which drift reads itself.
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
MAX_METRIC_NAME = 256


def label_name_problem(label: str) -> str | None:
    """Why ``label`` cannot be a label a policy matches or groups on, or None."""
    if len(label) > 128:
        return f"is {len(label)} characters long; a label name has at most 128"
    if not LABEL_NAME.match(label):
        return "is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
    if label.startswith("__"):
        return "starts with '__', which Prometheus reserves for its own labels (__name__ is the metric name); rename it"
    if label == "le":
        return "is the bucket bound of histograms (le), which the operator reads itself; use another label"
    return None


class TriggerKind:
    """Base of every trigger type's spec; ``type_name`` is the key under the trigger in the CRD."""

    type_name: ClassVar[str]


@dataclass(frozen=True)
class TriggerSpec:
    """One entry of ``spec.triggers``: its name, its kind (one registered type), ``for`` and ``onMissingData``."""

    name: str
    kind: TriggerKind
    for_seconds: float = 0.0
    on_missing_data: str = "Inconclusive"

    @property
    def type(self) -> str:
        return self.kind.type_name


@dataclass(frozen=True)
class Observation:
    """What the metric source said for one trigger of one policy.

    ``value`` is the current value; ``held`` the least favourable value over ``for`` and
    ``held_points``/``expected_points`` its coverage. ``problem`` (CamelCase) and ``detail`` are set
    when the value could not be had: NoData, NotANumber, QueryFailed, Unreachable, Ambiguous.
    """

    value: float | None = None
    held: float | None = None
    held_points: int = 0
    expected_points: int = 0
    problem: str | None = None
    detail: str = ""
    current_buckets: Buckets | None = None
    reference_buckets: Buckets | None = None
    reference_windows: tuple[Buckets, ...] = ()

    @classmethod
    def missing(cls, problem: str, detail: str) -> Observation:
        return cls(problem=problem, detail=detail)


@dataclass(frozen=True)
class PreviousState:
    """What the trigger's status said last time: its state and since when, for ``for`` and hysteresis."""

    state: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class TriggerResult:
    """One evaluation of one trigger: state, value, threshold, since when, and the message in words."""

    name: str
    type: str
    state: State
    value: float | None
    threshold: float | None
    since: datetime | None
    message: str
    problem: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def firing(self) -> bool:
        return self.state == "firing"


class Series(Protocol):
    """One element of an instant-query result, as the metric adapter returns it."""

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def value(self) -> float: ...


@dataclass(frozen=True)
class Target:
    """What planning needs of the policy that owns a trigger."""

    matchers: Mapping[str, str]
    interval: float
    trained_at: datetime | None = None
    limits: QueryLimits = DEFAULT_LIMITS

    def key(self, labels: Sequence[str]) -> tuple[str, ...]:
        return tuple(self.matchers[label] for label in labels)


@dataclass(frozen=True)
class QueryPlan:
    """The queries that read one template's triggers, and how to turn their results into observations.

    ``read`` takes one result per query, in order, and returns one observation per target, in order.
    ``what`` names the data in the message when a query fails (``None``: "query failed").
    """

    queries: tuple[tuple[str, datetime], ...]
    read: Callable[[Sequence[Sequence[Series]]], list[Observation]]
    what: str | None = None

    def failure(self, error: Exception) -> str:
        return f"query of {self.what} failed: {error}" if self.what else f"query failed: {error}"


@dataclass(frozen=True)
class Facts:
    """What a trigger is judged against besides its observation: status and the clock."""

    observation: Observation
    previous: PreviousState
    now: datetime
    last_start: datetime
    model_score: float | None = None
    model_reference: Buckets | None = None
    training_rows: float | None = None


@dataclass(frozen=True)
class Span:
    """A stretch of history a trigger's queries read, for the admin's query ceilings.

    ``field`` is where it is set, under the trigger (``""``: the trigger as a whole, ``for`` and the
    type's own fields as ``<type>.<field>``); ``ceiling`` names the ceiling that bounds it (for,
    window, offset, range); ``what`` says in words how it adds up, for the message.
    """

    field: str
    seconds: float
    ceiling: str
    what: str = ""


S = TypeVar("S", bound=TriggerKind)


class TriggerType(Generic[S]):
    """One trigger type: its spec, how to parse it, the queries it plans and how it is judged.

    ``reads_metrics``: its results count towards MetricsAvailable. ``raw_promql``: it sends the
    tenant's own PromQL, which a MetricsEndpoint must allow. ``bypasses_gate``: when it fires, the
    cost-benefit gate does not hold the retrain back (a schedule is a promise to retrain on time).
    ``history``: its ``for`` is judged from the metric's history and its value at a past instant is
    what its queries return at that instant, so when a condition began can be read back from Prometheus.
    """

    spec_type: ClassVar[type[TriggerKind]]
    reads_metrics: ClassVar[bool] = True
    history: ClassVar[bool] = False
    raw_promql: ClassVar[bool] = False
    bypasses_gate: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.spec_type.type_name

    def parse(self, r: Reader, body: Mapping[str, Any], path: str) -> S | None:
        raise NotImplementedError

    def merge_key(self, spec: S, trigger: TriggerSpec, target: Target) -> Hashable | None:
        """Triggers of the same type with equal keys (and endpoint, tenant, label names) are read
        together; ``None`` reads the trigger alone."""
        return None

    def plan(
        self, spec: S, trigger: TriggerSpec, targets: Sequence[Target], *, labels: tuple[str, ...], now: datetime
    ) -> QueryPlan | None:
        """The queries for ``targets`` (one, unless merged); ``None`` when the type reads no metrics."""
        return None

    def moving_counter(self, spec: S, matchers: Mapping[str, str]) -> str | None:
        """The counter whose growth the type reads over a window that moves with every evaluation (since
        the model was trained), for a replay that reads history once; None when its queries keep their text."""
        return None

    def spans(self, spec: S, trigger: TriggerSpec) -> Sequence[Span]:
        """The stretches of history its queries read, beyond ``for`` (checked for every type)."""
        return ()

    def evaluate(self, spec: S, trigger: TriggerSpec, facts: Facts) -> TriggerResult:
        raise NotImplementedError

    def accuracy(self, spec: S, result: TriggerResult, model_score: float | None) -> tuple[float | None, float] | None:
        """Baseline and current accuracy, for the types that measure accuracy and only when they have a value."""
        return None


def breach(value: float, operator: str, level: float) -> bool:
    return {
        ">": value > level,
        ">=": value >= level,
        "<": value < level,
        "<=": value <= level,
    }[operator]


def fmt(value: float | None) -> str:
    """A number in a trigger's message (:func:`retrain_operator.domain.numbers.number`)."""
    return number(value)


def missing(
    trigger: TriggerSpec, *, problem: str, detail: str, threshold: float | None, previous: PreviousState, now: datetime
) -> TriggerResult:
    if trigger.on_missing_data == "Clear":
        return TriggerResult(
            trigger.name,
            trigger.type,
            "clear",
            None,
            threshold,
            None,
            f"{detail}; treated as clear (onMissingData: Clear)",
            problem,
        )
    if trigger.on_missing_data == "Fire":
        since = previous.since if previous.state == "firing" and previous.since else now
        return TriggerResult(
            trigger.name,
            trigger.type,
            "firing",
            None,
            threshold,
            since,
            f"{detail}; treated as firing (onMissingData: Fire)",
            problem,
        )
    return TriggerResult(trigger.name, trigger.type, "inconclusive", None, threshold, None, detail, problem)


def evaluate_threshold(
    trigger: TriggerSpec,
    *,
    observation: Observation,
    operator: str,
    threshold: float,
    clear_level: float,
    previous: PreviousState,
    now: datetime,
    what: str,
) -> TriggerResult:
    """The common state machine of threshold triggers.

    Fires when ``value operator threshold`` holds now and, with ``for``, held over the whole period
    with full coverage; once firing, stays firing while ``value operator clear_level`` holds.
    """
    if observation.problem is not None or observation.value is None:
        return missing(
            trigger,
            problem=observation.problem or "NoData",
            detail=observation.detail or f"no value for {what}",
            threshold=threshold,
            previous=previous,
            now=now,
        )
    value = observation.value
    if math.isnan(value):
        return missing(
            trigger, problem="NotANumber", detail=f"{what} is NaN", threshold=threshold, previous=previous, now=now
        )
    shown = f"{what} = {fmt(value)}"
    if previous.state == "firing" and breach(value, operator, clear_level):
        return TriggerResult(
            trigger.name,
            trigger.type,
            "firing",
            value,
            threshold,
            previous.since or now,
            f"{shown}, still {operator} clear level {fmt(clear_level)}",
        )
    if not breach(value, operator, threshold):
        return TriggerResult(
            trigger.name, trigger.type, "clear", value, threshold, None, f"{shown}, not {operator} {fmt(threshold)}"
        )
    if trigger.for_seconds <= 0:
        return TriggerResult(
            trigger.name, trigger.type, "firing", value, threshold, now, f"{shown} {operator} {fmt(threshold)}"
        )
    period = format_duration(trigger.for_seconds)
    covered = observation.held_points >= max(1, observation.expected_points - 1)
    held = observation.held
    if held is not None and not math.isnan(held) and covered and breach(held, operator, threshold):
        return TriggerResult(
            trigger.name,
            trigger.type,
            "firing",
            value,
            threshold,
            previous.since if previous.state == "firing" and previous.since else now,
            f"{shown} {operator} {fmt(threshold)} for at least {period}",
        )
    since = previous.since if previous.state == "pending" and previous.since else now
    reason = "history shorter than" if not covered else "not yet for"
    return TriggerResult(
        trigger.name,
        trigger.type,
        "pending",
        value,
        threshold,
        since,
        f"{shown} {operator} {fmt(threshold)}, {reason} {period}",
    )


def since_based(
    trigger: TriggerSpec,
    *,
    breach: bool,
    value: float | None,
    threshold: float | None,
    previous: PreviousState,
    now: datetime,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> TriggerResult:
    """``for`` counted from when the condition was first seen (kept in status), for triggers without history."""
    details = dict(details or {})
    if not breach:
        return TriggerResult(trigger.name, trigger.type, "clear", value, threshold, None, message, None, details)
    held_since = previous.since if previous.state in ("pending", "firing") and previous.since else now
    if previous.state == "firing" or (now - held_since).total_seconds() >= trigger.for_seconds:
        since = previous.since if previous.state == "firing" and previous.since else now
        return TriggerResult(trigger.name, trigger.type, "firing", value, threshold, since, message, None, details)
    remaining = trigger.for_seconds - (now - held_since).total_seconds()
    return TriggerResult(
        trigger.name,
        trigger.type,
        "pending",
        value,
        threshold,
        held_since,
        f"{message}; fires in {format_duration(remaining)} if it holds",
        None,
        details,
    )
