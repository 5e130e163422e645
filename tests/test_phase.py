"""Evaluation in phase: policies that share a query template are due on the same ticks (fixed clock).

The scheduler runs here on a fake wall clock and a fake monotonic clock that move together one second
at a time, with fake ports: what is checked is when each policy is evaluated and how many queries
that costs, not the I/O.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import random
import re
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from retrain_operator.adapters.kubernetes import FakeKubeClient
from retrain_operator.adapters.prometheus import Sample
from retrain_operator.domain.phase import TOLERANCE, next_tick, phase_offset
from retrain_operator.reconcile.engine import Reconciler
from retrain_operator.reconcile.observe import Observer, QuerySource
from retrain_operator.reconcile.scheduler import Endpoints, Key, Scheduler, Scheduling
from retrain_operator.reconcile.telemetry import Telemetry
from tests.policies import STORE_SPEC, policy

START = datetime(2026, 11, 27, 12, 0, 7, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def seconds_into_interval(moment: datetime, interval: float) -> float:
    return (moment - EPOCH).total_seconds() % interval


# ---- the pure maths -------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [1.0, 30.0, 60.0, 3600.0, 86400.0])
def test_a_templates_offset_is_stable_and_inside_its_interval(interval: float) -> None:
    offsets = {phase_offset(f"template-{i}", interval) for i in range(200)}
    assert all(0 <= o < interval for o in offsets)
    assert phase_offset("template-7", interval) == phase_offset("template-7", interval)
    # Templates spread over the interval rather than landing together: 200 anchors, 10 equal slices.
    slices = {int(o / interval * 10) for o in offsets}
    assert slices == set(range(10))


@pytest.mark.parametrize("interval", [0.0, -60.0, float("inf"), float("nan")])
def test_an_interval_that_is_not_a_positive_number_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval must be a positive number"):
        phase_offset("t", interval)
    with pytest.raises(ValueError, match="interval must be a positive number"):
        next_tick(START, interval=interval, offset=0.0)


# interval 60 s, offset 10 s: ticks at hh:mm:10.
@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("12:00:00", "12:00:10"),  # before this interval's tick: that tick
        ("12:00:10", "12:01:10"),  # on the tick (the evaluation it is): the next one
        ("12:00:08", "12:01:10"),  # 2 s early, within the tolerance (3 s): this tick is served now
        ("12:00:06", "12:00:10"),  # 4 s early: outside the tolerance, the tick still comes
        ("12:00:40", "12:01:10"),  # late by 30 s: the grid's next tick, not now + 60 s
        ("12:01:09", "12:02:10"),  # late by 59 s, within the tolerance of the next tick: that one is served
    ],
)
def test_the_next_tick_keeps_the_grid(now: str, expected: str) -> None:
    day = "2026-11-27T"
    got = next_tick(datetime.fromisoformat(f"{day}{now}+00:00"), interval=60.0, offset=10.0)
    assert got == datetime.fromisoformat(f"{day}{expected}+00:00")


def test_the_next_tick_is_never_more_than_an_interval_and_its_tolerance_away() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        interval = rng.choice([5.0, 30.0, 60.0, 600.0, 3600.0])
        offset = rng.uniform(0, interval)
        now = START + timedelta(seconds=rng.uniform(0, 86400))
        tick = next_tick(now, interval=interval, offset=offset)
        wait = (tick - now).total_seconds()
        assert TOLERANCE * interval - 1e-6 < wait <= interval * (1 + TOLERANCE) + 1e-6, (interval, offset, now)
        assert abs(seconds_into_interval(tick, interval) - offset) < 1e-3 or (
            abs(seconds_into_interval(tick, interval) - offset) > interval - 1e-3
        )


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        next_tick(datetime(2026, 11, 27, 12, 0), interval=60.0, offset=0.0)


# ---- the scheduler on a fixed clock -------------------------------------------------------------


class Accuracy:
    """Answers the accuracy template's three queries like Prometheus would, from a step function of time.

    Every model reads 0.97 until ``drop_at`` and ``low`` from then on; ``max_over_time`` over ``for``
    (the held query) is the highest value in ``[at - for, at]``; the point count is always full.
    """

    def __init__(self, *, drop_at: datetime | None = None, low: float = 0.80) -> None:
        self.drop_at = drop_at
        self.low = low
        self.queries: list[tuple[datetime, str]] = []

    def value(self, at: datetime) -> float:
        return self.low if self.drop_at is not None and at >= self.drop_at else 0.97

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        self.queries.append((at, promql))
        models = re.search(r'model=~?"([^"]*)"', promql)
        wanted = models.group(1).split("|") if models else []
        if promql.startswith("count_over_time"):
            value = 1000.0
        elif promql.startswith("max_over_time"):
            held = re.search(r"\[(\d+)s:", promql) or re.search(r"\[(\d+)m:", promql)
            assert held is not None, promql
            span = float(held.group(1)) * (60 if "m:" in held.group(0) else 1)
            value = max(self.value(at - timedelta(seconds=span)), self.value(at))
        else:
            value = self.value(at)
        return [Sample(labels={"model": m}, value=value, timestamp=at.timestamp()) for m in wanted]


class Clocked:
    """A scheduler on a wall clock and a monotonic clock that move together, stepped by hand."""

    def __init__(self, source: Accuracy, *, scheduling: Scheduling = "aligned") -> None:
        self.now = START
        self.source = source
        kube = FakeKubeClient()
        telemetry = Telemetry()

        async def source_for(_: str) -> QuerySource:
            return source

        self.scheduler = Scheduler(
            reconciler=Reconciler(
                kube=kube, trainer_image="img", service_account="sa", telemetry=telemetry, clock=lambda: self.now
            ),
            endpoints=Endpoints(kube=kube, operator_namespace="retrain-system"),
            clock=lambda: self.now,
            monotonic=lambda: (self.now - START).total_seconds(),
            observer=Observer(source_for=source_for, telemetry=telemetry),
            scheduling=scheduling,
        )
        self.scheduler.upsert_endpoint("default", {"url": "http://prom:9090"})
        self.scheduler.upsert_store("default", STORE_SPEC)
        self.evaluated: dict[Key, list[datetime]] = defaultdict(list)
        self.cycles: list[tuple[datetime, int]] = []

    def add(self, name: str, *, window: str = "5m", interval: str = "60s", for_: str = "0s") -> None:
        body = policy()
        body["metadata"].update(name=name, uid=f"uid-{name}", creationTimestamp=self.now.isoformat())
        body["spec"]["metrics"]["selector"] = {"model": name}
        body["spec"]["evaluation"]["interval"] = interval
        trigger = copy.deepcopy(body["spec"]["triggers"][0])
        trigger["for"] = for_
        trigger["accuracyDecay"]["window"] = window
        body["spec"]["triggers"] = [trigger]
        self.scheduler.upsert_policy(body)

    async def step(self, seconds: int = 1) -> None:
        """Advance one second at a time, running a cycle whenever policies are due (as the loop does)."""
        for _ in range(seconds):
            self.now += timedelta(seconds=1)
            due = self.scheduler.take_due()
            if due:
                self.cycles.append((self.now, len(due)))
                for key in due:
                    self.evaluated[key].append(self.now)
                await self.scheduler.run_cycle(due)

    def status(self, name: str) -> dict[str, Any]:
        return self.scheduler.entries[("team-a", name)].stored_status

    def queries_between(self, start: datetime, end: datetime) -> int:
        return sum(1 for at, _ in self.source.queries if start <= at < end)


async def spread(clocked: Clocked, *, templates: dict[str, int], over: int, seed: int) -> dict[str, str]:
    """Create policies of several templates (by accuracy window) at random seconds over ``over`` seconds."""
    rng = random.Random(seed)
    names = [(f"{window}-{i}", window) for window, count in templates.items() for i in range(count)]
    at = sorted(rng.sample(range(over), len(names)))
    rng.shuffle(names)
    created: dict[str, str] = {}
    elapsed = 0
    for second, (name, window) in zip(at, names, strict=True):
        await clocked.step(second - elapsed)
        elapsed = second
        clocked.add(name, window=window)
        created[name] = window
    return created


async def test_policies_created_at_arbitrary_times_end_up_in_their_templates_phase() -> None:
    clocked = Clocked(Accuracy())
    created = await spread(clocked, templates={"5m": 25, "10m": 25}, over=150, seed=3)
    settled = clocked.now + timedelta(seconds=60)
    await clocked.step(60 + 3 * 60)

    for window in ("5m", "10m"):
        members = [n for n, w in created.items() if w == window]
        ticks = {t for n in members for t in clocked.evaluated[("team-a", n)] if t >= settled}
        # Every policy of the template is evaluated on the same three ticks, one interval apart.
        assert len(ticks) == 3, (window, sorted(ticks))
        for name in members:
            mine = [t for t in clocked.evaluated[("team-a", name)] if t >= settled]
            assert set(mine) == ticks, name
        assert len({round(seconds_into_interval(t, 60.0)) for t in ticks}) == 1
    offsets = {
        w: {
            round(seconds_into_interval(t, 60.0))
            for n, ww in created.items()
            if ww == w
            for t in clocked.evaluated[("team-a", n)]
            if t >= settled
        }
        for w in ("5m", "10m")
    }
    assert offsets["5m"] != offsets["10m"], "two templates land on different seconds of the interval"
    # Steady state: each tick reads its template once (one query: no `for`), whatever the policy count.
    assert clocked.queries_between(settled, clocked.now) == 2 * 3


async def test_rolling_scheduling_reads_a_template_once_per_creation_instant() -> None:
    """The same creations without phase: queries follow the policies' creation instants, not templates."""
    clocked = Clocked(Accuracy(), scheduling="rolling")
    await spread(clocked, templates={"5m": 25, "10m": 25}, over=150, seed=3)
    settled = clocked.now + timedelta(seconds=60)
    await clocked.step(60 + 3 * 60)
    assert clocked.queries_between(settled, clocked.now) >= 3 * 40  # about one query per policy per interval


async def test_a_policy_never_waits_more_than_one_interval_for_its_first_evaluation_nor_its_second() -> None:
    clocked = Clocked(Accuracy())
    created: dict[str, datetime] = {}
    rng = random.Random(11)
    for i in range(40):
        await clocked.step(rng.randint(0, 40))
        name = f"p{i}"
        clocked.add(name, window=rng.choice(["5m", "7m", "10m"]), interval=rng.choice(["30s", "60s", "300s"]))
        created[name] = clocked.now
    await clocked.step(700)
    for name, at in created.items():
        interval = clocked.scheduler.entries[("team-a", name)].spec.evaluation.interval  # type: ignore[union-attr]
        times = clocked.evaluated[("team-a", name)]
        assert times[0] - at <= timedelta(seconds=1), name  # at once (the next second of the fake loop)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert gaps, name
        assert gaps[0] <= interval * (1 + TOLERANCE) + 1, (name, gaps[0])  # joins its phase within an interval
        assert all(abs(g - interval) <= 1 for g in gaps[1:]), (name, gaps)  # then one interval apart


async def test_a_changed_policy_is_evaluated_at_once_and_returns_to_its_phase() -> None:
    clocked = Clocked(Accuracy())
    clocked.add("churn")
    await clocked.step(200)
    before = [t for t in clocked.evaluated[("team-a", "churn")] if t > START + timedelta(seconds=60)]
    body = copy.deepcopy(clocked.scheduler.entries[("team-a", "churn")].body)
    body["metadata"]["generation"] = 2
    body["spec"]["decision"]["cooldown"] = "2h"
    await clocked.step(17)
    clocked.scheduler.upsert_policy(body)
    changed = clocked.now
    await clocked.step(200)
    after = [t for t in clocked.evaluated[("team-a", "churn")] if t > changed]
    assert after[0] - changed <= timedelta(seconds=1)
    phase = {round(seconds_into_interval(t, 60.0)) for t in before}
    assert {round(seconds_into_interval(t, 60.0)) for t in after[1:]} == phase


@pytest.mark.parametrize("created_second", [3, 29, 58])
async def test_for_is_judged_across_the_phase_change(created_second: int) -> None:
    """Accuracy drops below the threshold at a known instant; the trigger fires at the first evaluation
    at least ``for`` later, whether or not the policy has joined its phase by then, and never before."""
    drop_at = START + timedelta(seconds=created_second + 20)
    clocked = Clocked(Accuracy(drop_at=drop_at))
    await clocked.step(created_second)
    clocked.add("churn", for_="2m")
    states: list[tuple[datetime, str]] = []
    for _ in range(400):
        await clocked.step()
        times = clocked.evaluated[("team-a", "churn")]
        if times and times[-1] == clocked.now:
            states.append((clocked.now, clocked.status("churn")["triggers"][0]["state"]))
    firing = [t for t, state in states if state == "firing"]
    assert firing, states
    due = drop_at + timedelta(minutes=2)
    assert firing[0] >= due
    assert all(state != "firing" for t, state in states if t < due)
    assert next(t for t, _ in states if t >= due) == firing[0], "fired at the first evaluation that could"
    assert firing[0] - due <= timedelta(seconds=60 * (1 + TOLERANCE))
    pending = [t for t, state in states if state == "pending"]
    assert pending and pending[0] >= drop_at


# ---- the loop keeps going --------------------------------------------------------------------


def test_every_watch_handler_runs_on_the_event_loop() -> None:
    """kopf runs a plain function in a thread pool; the scheduler's dicts and Event belong to the loop's thread.

    A handler called from a thread changed ``entries`` while the loop iterated it (10,000 policies created
    over six minutes stopped the scheduler after about 5,300), so every handler that feeds it is a coroutine.
    """
    from retrain_operator.handlers import operator as handlers

    feeding = [handlers.policy_event, handlers.endpoint_event, handlers.store_event, handlers.budget_event]
    feeding.append(handlers.job_event)
    assert all(asyncio.iscoroutinefunction(handler) for handler in feeding)


async def test_a_failing_cycle_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """A fault outside the per-policy guards (here: looking up the endpoint) fails one cycle, never the loop."""
    source = Accuracy()
    kube = FakeKubeClient()

    async def source_for(_: str) -> QuerySource:
        return source

    scheduler = Scheduler(
        reconciler=Reconciler(kube=kube, trainer_image="img", service_account="sa", telemetry=Telemetry()),
        endpoints=Endpoints(kube=kube, operator_namespace="retrain-system"),
        observer=Observer(source_for=source_for),
        retry_after=0.05,
    )
    scheduler.upsert_endpoint("default", {"url": "http://prom:9090"})
    scheduler.upsert_store("default", STORE_SPEC)
    lookup = scheduler._endpoints.lookup
    calls = 0

    async def flaky(name: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the API server went away")
        return await lookup(name)

    scheduler._endpoints.lookup = flaky  # type: ignore[method-assign]
    body = policy()
    scheduler.upsert_policy(body)
    task = asyncio.create_task(scheduler.run())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not scheduler.entries[("team-a", "churn")].stored_status.get("triggers"):
            assert not task.done(), task
            assert asyncio.get_running_loop().time() < deadline, "the policy was never evaluated after the fault"
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls >= 2
    assert "an evaluation cycle of 1 policies failed" in caplog.text
    assert "the API server went away" in caplog.text
