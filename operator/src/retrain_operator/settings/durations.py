"""Durations as written in the API and in the trainer's configuration (``90s``, ``1h30m``, ``1.5h``, ``2w``).

Kubernetes has no duration type in CRD schemas, so the pattern lives in every duration field of the
CRDs and this parser is the single reading of it, for the operator and the trainer alike. ``d`` means
24 hours and ``w`` seven days; months and years are not accepted (they vary).

No duration is longer than :data:`MAX_SECONDS` (ten years) or its text longer than :data:`MAX_LENGTH`:
a bigger one is refused here, with the bound, before any arithmetic on dates could overflow. Each
field has its own, tighter maximum besides (the callers' ``maximum``), and the CRDs hold the same
bounds as CEL rules, so the API server refuses most of them at admission.
"""

from __future__ import annotations

import re

PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_FULL = re.compile(PATTERN)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_LENGTH = 64
MAX_PARTS = 4
MAX_SECONDS = 3650 * 86400.0


class DurationError(ValueError):
    """A duration string that does not match the API's pattern."""


def parse_duration(text: str) -> float:
    """Return the duration in seconds, or raise DurationError with the accepted form."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH or not _FULL.match(text):
        shown = repr(text) if not isinstance(text, str) or len(text) <= MAX_LENGTH else repr(text[:MAX_LENGTH] + "...")
        raise DurationError(
            f"{shown} is not a duration (invalid duration syntax); use a number and a unit (ms, s, m, h, d, w), "
            f"at most {MAX_LENGTH} characters, for example 90s or 1h30m"
        )
    parts = _PART.findall(text)
    if len(parts) > MAX_PARTS:
        raise DurationError(f"{text!r} has {len(parts)} parts; write it in at most {MAX_PARTS}, for example 1h30m")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not seconds <= MAX_SECONDS:
        raise DurationError(f"{text!r} is longer than {format_duration(MAX_SECONDS)}, the longest any duration may be")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds in the largest exact units, e.g. 5400 -> ``1h30m``; for messages and PromQL."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    rest = round(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            count, rest = divmod(rest, size)
            out.append(f"{count}{unit}")
    return "".join(out)
