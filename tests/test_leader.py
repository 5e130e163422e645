"""Leader election over a Lease with a fixed clock: one leader, renewal, takeover after expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from retrain_operator.adapters.kubernetes import FakeKubeClient
from retrain_operator.reconcile.leader import LeaderElector

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def test_one_leader_renews_and_another_takes_over_only_after_expiry() -> None:
    kube, clock = FakeKubeClient(), Clock()
    a = LeaderElector(kube=kube, namespace="ops", name="lease", identity="a", lease_seconds=15, clock=clock)
    b = LeaderElector(kube=kube, namespace="ops", name="lease", identity="b", lease_seconds=15, clock=clock)
    assert await a.step() and not await b.step()
    clock.now += timedelta(seconds=10)
    assert await a.step() and not await b.step(), "a renewal keeps the lease"
    clock.now += timedelta(seconds=14)
    assert not await b.step(), "not expired yet: 14 s since the renewal"
    assert a.is_leader
    clock.now += timedelta(seconds=2)
    assert not a.is_leader, "a leader that could not renew steps down once its lease is over"
    assert await b.step()
    lease = kube.leases[("ops", "lease")]["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1
    assert not await a.step()


async def test_racing_for_an_expired_lease_only_one_wins() -> None:
    kube, clock = FakeKubeClient(), Clock()
    old = LeaderElector(kube=kube, namespace="ops", name="lease", identity="old", clock=clock)
    await old.step()
    clock.now += timedelta(minutes=1)
    a = LeaderElector(kube=kube, namespace="ops", name="lease", identity="a", clock=clock)
    b = LeaderElector(kube=kube, namespace="ops", name="lease", identity="b", clock=clock)
    stale = await kube.get_lease("ops", "lease")
    assert await a.step()
    original = kube.get_lease

    async def read_stale(namespace: str, name: str) -> dict | None:  # type: ignore[type-arg]
        return stale  # b read the lease before a's write

    kube.get_lease = read_stale  # type: ignore[method-assign]
    assert not await b.step()
    kube.get_lease = original  # type: ignore[method-assign]
    assert kube.leases[("ops", "lease")]["spec"]["holderIdentity"] == "a"
