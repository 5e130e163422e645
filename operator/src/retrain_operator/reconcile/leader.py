"""Leader election over a coordination.k8s.io Lease, so several replicas never reconcile at once.

Every replica watches (its memory stays warm for a fast takeover), but only the holder of the Lease
runs evaluation cycles. The holder renews the Lease every third of its duration; a replica takes
the Lease over only when its last renewal is older than its duration. Every write carries the
resourceVersion it read, so two replicas racing for an expired Lease cannot both win. A replica
that fails to renew in time starts no further reconciliation before another can take over (one
already running finishes; its writes are idempotent), as long as clocks agree within the lease
duration (the assumption client-go's leader election makes too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from retrain_operator.adapters.kubernetes import AlreadyExists, ApiError, Conflict, KubeClient

logger = logging.getLogger(__name__)


def _micro(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeaderElector:
    """Holds, renews or takes over a coordination Lease, so only one replica reconciles at a time."""

    def __init__(
        self,
        *,
        kube: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: float = 15.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._renewed: datetime | None = None
        self.changed = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        """Leader only while the last successful renewal is fresh, even if the API cannot be reached."""
        return self._renewed is not None and (self._clock() - self._renewed).total_seconds() < self.lease_seconds

    def _spec(self, now: datetime, *, acquired: datetime, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_seconds),
            "acquireTime": _micro(acquired),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    async def step(self) -> bool:
        """Acquire or renew once; return whether this replica leads."""
        was = self.is_leader
        now = self._clock()
        try:
            lease = await self._kube.get_lease(self.namespace, self.name)
            if lease is None:
                await self._kube.create_lease(
                    self.namespace,
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(now, acquired=now, transitions=0),
                    },
                )
                self._renewed = now
            else:
                spec = lease.get("spec") or {}
                holder = spec.get("holderIdentity")
                renewed = _parse(spec.get("renewTime"))
                duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
                expired = renewed is None or now - renewed > timedelta(seconds=duration)
                if holder == self.identity or expired or not holder:
                    mine = holder == self.identity
                    acquired = (_parse(spec.get("acquireTime")) or now) if mine else now
                    transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
                    body = {**lease, "spec": self._spec(now, acquired=acquired, transitions=transitions)}
                    await self._kube.replace_lease(self.namespace, self.name, body)
                    self._renewed = now
                    if not mine:
                        logger.info("took over Lease %s/%s from %s", self.namespace, self.name, holder)
        except (AlreadyExists, Conflict):
            pass  # another replica wrote first; it leads for now
        except (ApiError, OSError, ValueError, TypeError) as exc:  # unreachable API, or a Lease we cannot read
            logger.warning("Lease %s/%s not renewed: %s", self.namespace, self.name, exc)
        if self.is_leader != was:
            logger.info("%s leadership of %s/%s", "gained" if self.is_leader else "lost", self.namespace, self.name)
            self.changed.set()
        return self.is_leader

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.lease_seconds / 3)
