"""Reading typed fields out of raw API objects, every problem kept with its field path.

Shared by the policy parser in :mod:`~retrain_operator.domain.api` and by each trigger type's own
parser in :mod:`~retrain_operator.domain.triggers`, so both name fields and fixes the same way.
Limits: it checks one field at a time; rules across fields belong to the parser that knows them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from retrain_operator.domain.durations import DurationError, parse_duration

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


@dataclass(frozen=True)
class Problem:
    """One reason a policy is invalid: the field's path and what to do about it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidSpec(ValueError):
    """Raised by the parsers with every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class Reader:
    """Reads typed fields out of raw dicts, collecting problems with their paths instead of raising."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def obj(self, raw: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
        if raw is None:
            if required:
                self.fail(path, "is required")
            return {}
        if not isinstance(raw, Mapping):
            self.fail(path, f"must be an object, not {type(raw).__name__}")
            return {}
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
    ) -> str | None:
        value = raw.get(key, default)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return None
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", f"must be a string, not {type(value).__name__}")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(f"{path}.{key}", f"{value!r} does not match {pattern.pattern}")
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
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{path}.{key}", f"must be a number, not {type(value).__name__}")
            return None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(f"{path}.{key}", f"{value} is outside [{minimum}, {maximum}]")
            return None
        return float(value)

    def int_(self, raw: Mapping[str, Any], key: str, path: str, *, default: int, minimum: int = 0) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"must be an integer, not {type(value).__name__}")
            return default
        if value < minimum:
            self.fail(f"{path}.{key}", f"must be at least {minimum}")
            return default
        return value

    def bool_(self, raw: Mapping[str, Any], key: str, path: str, *, default: bool = False) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", "must be true or false")
            return default
        return value

    def duration(self, raw: Mapping[str, Any], key: str, path: str, *, default: str, minimum: float = 0.0) -> float:
        text = raw.get(key, default)
        try:
            seconds = parse_duration(text)
        except DurationError as exc:
            self.fail(f"{path}.{key}", str(exc))
            return parse_duration(default)
        if seconds < minimum:
            self.fail(f"{path}.{key}", f"{text!r} is shorter than the minimum of {minimum:g}s")
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
            self.fail(f"{path}.{key}", f"{value!r} is not allowed; use one of {', '.join(allowed)}")
            return None
        return str(value)

    def str_list(self, raw: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(f"{path}.{key}", "must be a list of strings")
            return ()
        return tuple(value)

    def str_map(self, raw: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        value = raw.get(key) or {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.fail(f"{path}.{key}", "must be a map of strings to strings")
            return {}
        return dict(value)
