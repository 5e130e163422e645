"""Will the data fit? An estimate of a run's peak memory from the size of its objects, before reading them.

The trainer holds every data object in memory at once, parses it into a DataFrame, then copies columns
while it encodes and fits; its peak is a multiple of the bytes it reads. Read before training, the
objects' sizes (from the listing, no download) give an estimate that is checked against the Job's
memory (``RETRAIN_RESOURCES``, written by the operator from the policy's resources):

- above the **limit**: refused with ``DataTooLarge`` before any byte is read. The kernel would kill the
  container at the limit anyway (``OOMKilled``, after minutes of download and parsing, with no word on
  why); a refusal names the sizes and the fix.
- above the **request** (and within the limit, or with no limit): a warning in the metadata, the result
  and the policy's status. The request is what the scheduler reserved, not a cap; the pod may still get
  the memory, or be evicted first under node pressure.

The CSV multiple comes from one measurement: a 205 MB CSV of numbers peaked at 1.16 GiB, about 5 times
its size over the interpreter's own ~200 MiB. The Parquet multiple is a cautious guess (compressed,
columnar data expands more when parsed), not yet measured. Both are estimates: an estimator that copies
more (one-hot encoding of many categories, a deep forest) needs more than this says, which is why going
over the request only warns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from retrain_operator.settings.training import DataFormat

__all__ = ["BASE_MIB", "FACTORS", "MemoryCheck", "check_memory", "parse_quantity"]

_MiB: Final = 1024 * 1024
BASE_MIB: Final = 200.0
FACTORS: Final[Mapping[DataFormat, float]] = {"csv": 5.0, "parquet": 8.0}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")
_UNITS: Final[dict[str | None, Decimal | int]] = {
    None: 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(text: Any) -> int | None:
    """A Kubernetes memory quantity (``512Mi``, ``1G``, ``1e9`` is not one) in bytes; None if unreadable."""
    match = _QUANTITY.match(str(text).strip()) if text is not None else None
    if match is None:
        return None
    try:
        return int(Decimal(match.group(1)) * Decimal(str(_UNITS[match.group(2)])))
    except (InvalidOperation, KeyError):
        return None


@dataclass(frozen=True)
class MemoryCheck:
    """The estimate for a run and how it compares with the Job's memory request and limit (MiB)."""

    estimate_mib: float
    data_bytes: int
    request_mib: float | None
    limit_mib: float | None

    @property
    def over_limit(self) -> bool:
        return self.limit_mib is not None and self.estimate_mib > self.limit_mib

    @property
    def over_request(self) -> bool:
        return self.request_mib is not None and self.estimate_mib > self.request_mib

    def message(self) -> str:
        size = f"{self.data_bytes / _MiB:.1f} MiB of data"
        if self.over_limit:
            return (
                f"{size} needs about {self.estimate_mib:.0f} MiB of memory, more than the Job's limit of "
                f"{self.limit_mib:.0f} MiB; raise spec.training.resources.limits.memory (and requests.memory), "
                "or train on less data with spec.training.builtin.data.window"
            )
        return (
            f"{size} needs about {self.estimate_mib:.0f} MiB of memory, more than the Job's request of "
            f"{self.request_mib:.0f} MiB; the pod may be evicted or killed under memory pressure: raise "
            "spec.training.resources.requests.memory"
        )


def check_memory(*, data_bytes: int, fmt: DataFormat, resources: Mapping[str, Any] | None) -> MemoryCheck:
    """The estimate for ``data_bytes`` of ``fmt`` against the Job's ``{"requests": ..., "limits": ...}``."""
    estimate = BASE_MIB + FACTORS[fmt] * data_bytes / _MiB
    resources = resources or {}

    def memory(section: str) -> float | None:
        values = resources.get(section)
        value = parse_quantity(values.get("memory")) if isinstance(values, Mapping) else None
        return None if value is None else value / _MiB

    return MemoryCheck(
        estimate_mib=round(estimate, 1),
        data_bytes=data_bytes,
        request_mib=memory("requests"),
        limit_mib=memory("limits"),
    )
