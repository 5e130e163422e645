"""Reading typed fields out of decoded YAML or JSON, collecting every problem with its field's path.

The operator reads policies with it and the trainer its configuration, so a field means the same on
both sides and a mistake is worded the same way. Every problem names the field and says what to do;
nothing is raised until the caller has read everything, so a user sees every problem at once.

A problem's message is written to follow its field: the operator shows ``field: message`` (as the
API server does), the trainer ``field message``. Strict readers also refuse fields an object does not
declare: the trainer's configuration is written by the operator, so an unknown field there is a
mismatch between the two, never a user's extension. The operator reads leniently: the API server has
already pruned or refused unknown fields.

Limits: values are checked one by one; rules between fields belong to the parsers that use this.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from retrain_operator.settings.durations import DurationError, format_duration, parse_duration


@dataclass(frozen=True)
class Problem:
    """One reason a policy or configuration is invalid: the field's path and what to do about it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidSpec(ValueError):
    """Raised by the parsers with every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def show(value: object) -> str:
    """A value as the user wrote it, short enough for a message."""
    text = json.dumps(value) if isinstance(value, str | int | float | bool | list | dict) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_finite_number(value: object) -> bool:
    """A JSON number that is neither NaN nor infinite (YAML's ``.inf`` is a float, and true is not a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Reader:
    """Reads typed fields out of raw dicts, collecting problems with their paths instead of raising."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def obj(
        self, raw: Any, path: str, *, required: bool = False, fields: Collection[str] | None = None
    ) -> Mapping[str, Any]:
        """An object, or ``{}`` when absent or wrong; ``fields`` are the ones a strict reader allows."""
        if raw is None:
            if required:
                self.fail(path, "is required")
            return {}
        if not isinstance(raw, Mapping):
            self.fail(path, f"must be a JSON object, got {show(raw)}")
            return {}
        if self.strict and fields is not None:
            for name in sorted(set(raw) - set(fields)):
                self.fail(path, f"has unknown field {path}.{name}; allowed fields: {', '.join(sorted(fields))}")
        return raw

    def str_(
        self,
        raw: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: str | None = None,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        hint: str | None = None,
        max_length: int | None = None,
    ) -> str | None:
        """A string; ``hint`` describes what ``pattern`` accepts, in words, for the message."""
        value = raw.get(key, default)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return None
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", f"must be a string, got {show(value)}")
            return None
        if max_length is not None and len(value) > max_length:
            self.fail(f"{path}.{key}", f"is {len(value)} characters long; at most {max_length} are allowed")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(
                f"{path}.{key}",
                f"must be {hint}, got {show(value)}" if hint else f"{value!r} does not match {pattern.pattern}",
            )
            return None
        return value

    def num(
        self,
        raw: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: float | None = None,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float | None:
        value = raw.get(key, default)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return None
        if (
            not is_finite_number(value)
            or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)
        ):
            kind = "a finite number" if minimum is None and maximum is None else "a number"
            self.fail(f"{path}.{key}", f"must be {_range(kind, minimum, maximum)}, got {show(value)}")
            return None
        return float(value)

    def int_(
        self, raw: Mapping[str, Any], key: str, path: str, *, default: int, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = raw.get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type; 3.0 is the integer 3
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            self.fail(f"{path}.{key}", f"must be {_range('an integer', minimum, maximum)}, got {show(value)}")
            return default
        return value

    def bool_(self, raw: Mapping[str, Any], key: str, path: str, *, default: bool = False) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", "must be true or false")
            return default
        return value

    def duration(
        self,
        raw: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: str,
        minimum: float = 0.0,
        maximum: float | None = None,
    ) -> float:
        """Seconds of a duration field (see :mod:`.durations`), from ``minimum`` to ``maximum``."""
        text = raw.get(key, default)
        try:
            seconds = parse_duration(text)
        except DurationError as exc:
            self.fail(f"{path}.{key}", str(exc))
            return parse_duration(default)
        if seconds < minimum:
            self.fail(f"{path}.{key}", f"{text!r} is shorter than the minimum of {minimum:g}s")
            return parse_duration(default)
        if maximum is not None and seconds > maximum:
            self.fail(f"{path}.{key}", f"{text!r} is longer than the maximum of {format_duration(maximum)}")
            return parse_duration(default)
        return seconds

    def enum(
        self, raw: Mapping[str, Any], key: str, path: str, *, allowed: Sequence[str], default: str | None = None
    ) -> str | None:
        value = raw.get(key, default)
        if value is None:
            self.fail(f"{path}.{key}", f"is required; one of {', '.join(allowed)}")
            return None
        if value not in allowed:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(allowed)}, got {show(value)}")
            return None
        return str(value)

    def str_list(
        self,
        raw: Mapping[str, Any],
        key: str,
        path: str,
        *,
        max_items: int | None = None,
        max_length: int | None = None,
    ) -> tuple[str, ...]:
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(f"{path}.{key}", f"must be a list of strings, got {show(value)}")
            return ()
        if max_items is not None and len(value) > max_items:
            self.fail(f"{path}.{key}", f"has {len(value)} items; at most {max_items} are allowed")
            return ()
        if max_length is not None:
            for index, item in enumerate(value):
                if len(item) > max_length:
                    self.fail(
                        f"{path}.{key}[{index}]", f"is {len(item)} characters long; at most {max_length} are allowed"
                    )
                    return ()
        return tuple(value)

    def str_map(
        self,
        raw: Mapping[str, Any],
        key: str,
        path: str,
        *,
        max_items: int | None = None,
        max_length: int | None = None,
    ) -> dict[str, str]:
        value = raw.get(key) or {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.fail(f"{path}.{key}", "must be a map of strings to strings")
            return {}
        if max_items is not None and len(value) > max_items:
            self.fail(f"{path}.{key}", f"has {len(value)} entries; at most {max_items} are allowed")
            return {}
        if max_length is not None:
            for name, item in value.items():
                if len(item) > max_length:
                    self.fail(
                        f"{path}.{key}.{name}", f"is {len(item)} characters long; at most {max_length} are allowed"
                    )
                    return {}
        return dict(value)


def _range(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {_plain(minimum)} to {_plain(maximum)}"
    if minimum is not None:
        return f"{kind} of {_plain(minimum)} or more"
    if maximum is not None:
        return f"{kind} of {_plain(maximum)} or less"
    return kind


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(float(number))
