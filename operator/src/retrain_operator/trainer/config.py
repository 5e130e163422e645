"""The trainer's configuration: the JSON the operator puts in the Job, parsed and checked up front.

The operator copies ``spec.model`` and ``spec.training.builtin`` of a RetrainPolicy into this JSON and
adds a ``run`` section about the Job. Everything is checked before any storage or training work starts,
so a mistake costs a second, not a training run, and the message names the field and the fix.

Unknown fields are errors, never ignored: the trainer ships in the operator's image, so a field it does
not know means a typo or a mismatch between the two that must not pass silently. Defaults match the
CRD's. Whether the estimator exists and accepts its params is checked by
:mod:`retrain_operator.trainer.fit`, which needs scikit-learn.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from retrain_operator.registry import layout
from retrain_operator.trainer.errors import ConfigError

__all__ = [
    "BuiltinConfig",
    "DataConfig",
    "DataFormat",
    "Metric",
    "ModelConfig",
    "RegistryConfig",
    "RunConfig",
    "TrainerConfig",
    "load_config",
    "parse_config",
]

DataFormat = Literal["csv", "parquet"]
Metric = Literal["accuracy", "f1", "r2"]

DATA_FORMATS: Final[tuple[DataFormat, ...]] = ("csv", "parquet")
METRICS: Final[tuple[Metric, ...]] = ("accuracy", "f1", "r2")

_MODEL_NAME = re.compile(r"^[a-z0-9](?:[-a-z0-9_.]*[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENDPOINT = re.compile(r"^https?://\S+$")
_MAX_SEED: Final = 2**32 - 1


@dataclass(frozen=True)
class RegistryConfig:
    """Where versions are stored. Credentials never appear here: they come from the environment."""

    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    endpoint: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str
    registry: RegistryConfig


@dataclass(frozen=True)
class DataConfig:
    bucket: str
    key: str
    format: DataFormat = "csv"


@dataclass(frozen=True)
class BuiltinConfig:
    data: DataConfig
    target: str
    estimator: str
    features: tuple[str, ...] = ()
    params: Mapping[str, object] = field(default_factory=dict)
    test_size: float = 0.2
    seed: int = 0
    metric: Metric = "accuracy"


@dataclass(frozen=True)
class RunConfig:
    """Which policy and Job asked for this run; recorded in metadata, and ``version`` if fixed."""

    policy: str | None = None
    policy_uid: str | None = None
    job: str | None = None
    trigger: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class TrainerConfig:
    model: ModelConfig
    builtin: BuiltinConfig
    run: RunConfig = RunConfig()


def load_config(text: str, *, source: str) -> TrainerConfig:
    """Parse configuration JSON read from ``source`` (a file name or an environment variable)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("InvalidConfig", f"{source} is not valid JSON: {exc}") from None
    return parse_config(raw)


def parse_config(raw: object) -> TrainerConfig:
    """Check a decoded JSON document and build the configuration; raise ConfigError naming the field."""
    root = _Obj(raw, "config", required={"model", "builtin"}, optional={"run"})
    model = _Obj(root.get("model"), "model", required={"name", "registry"})
    # credentialsSecret is accepted so the operator can copy spec.model.registry as it is; the Secret's
    # keys reach the trainer as AWS_* environment variables, never through this file.
    registry = _Obj(
        model.get("registry"),
        "model.registry",
        required={"bucket"},
        optional={"endpoint", "region", "prefix", "credentialsSecret"},
    )
    builtin = _Obj(
        root.get("builtin"),
        "builtin",
        required={"data", "target", "estimator"},
        optional={"features", "params", "testSize", "seed", "metric"},
    )
    data = _Obj(builtin.get("data"), "builtin.data", required={"key"}, optional={"bucket", "format"})
    run = _Obj(root.get("run", {}), "run", optional={"policy", "policyUid", "job", "trigger", "version"})

    registry_bucket = registry.string("bucket", pattern=_BUCKET, hint="a valid S3 bucket name")
    registry_config = RegistryConfig(
        bucket=registry_bucket,
        prefix=registry.checked("prefix", layout.check_prefix, default=""),
        region=registry.string("region", default="us-east-1"),
        endpoint=registry.optional_string("endpoint", pattern=_ENDPOINT, hint="an http:// or https:// URL"),
    )
    target = builtin.string("target")
    features = builtin.string_list("features")
    if target in features:
        raise ConfigError("InvalidConfig", f"builtin.features lists the target column {target!r}; remove it")
    version = run.optional_string("version")
    return TrainerConfig(
        model=ModelConfig(
            name=model.string("name", pattern=_MODEL_NAME, hint="lower-case letters, digits, '-', '_', '.'"),
            registry=registry_config,
        ),
        builtin=BuiltinConfig(
            data=DataConfig(
                bucket=data.string("bucket", default=registry_bucket, pattern=_BUCKET, hint="a valid S3 bucket name"),
                key=data.string("key"),
                format=cast(DataFormat, data.choice("format", DATA_FORMATS, default="csv")),
            ),
            target=target,
            estimator=builtin.string("estimator"),
            features=features,
            params=builtin.mapping("params"),
            test_size=builtin.fraction("testSize", default=0.2),
            seed=builtin.integer("seed", default=0, low=0, high=_MAX_SEED),
            metric=cast(Metric, builtin.choice("metric", METRICS, default="accuracy")),
        ),
        run=RunConfig(
            policy=run.optional_string("policy"),
            policy_uid=run.optional_string("policyUid"),
            job=run.optional_string("job"),
            trigger=run.optional_string("trigger"),
            version=None if version is None else _check("run.version", version, layout.check_version_id),
        ),
    )


def _check(path: str, value: str, checker: Callable[[str], str]) -> str:
    try:
        return checker(value)
    except ValueError as exc:
        raise ConfigError("InvalidConfig", f"{path}: {exc}") from None


_MISSING: Final = object()


class _Obj:
    """A JSON object being read, which knows its path for messages and refuses unknown fields."""

    def __init__(
        self, raw: object, path: str, *, required: Collection[str] = (), optional: Collection[str] = ()
    ) -> None:
        if not isinstance(raw, dict):
            raise ConfigError("InvalidConfig", f"{path} must be a JSON object, got {_kind(raw)}")
        self.raw: dict[str, object] = raw
        self.path = path
        unknown = sorted(set(raw) - set(required) - set(optional))
        if unknown:
            allowed = ", ".join(sorted({*required, *optional}))
            raise ConfigError("InvalidConfig", f"unknown field {path}.{unknown[0]}; allowed fields: {allowed}")
        missing = sorted(set(required) - set(raw))
        if missing:
            raise ConfigError("InvalidConfig", f"missing required field {path}.{missing[0]}")

    def get(self, name: str, default: object = _MISSING) -> object:
        value = self.raw.get(name, _MISSING)
        if value is _MISSING or value is None:
            return default
        return value

    def _fail(self, name: str, expected: str, value: object) -> ConfigError:
        return ConfigError("InvalidConfig", f"{self.path}.{name} must be {expected}, got {_show(value)}")

    def string(
        self, name: str, *, default: str | None = None, pattern: re.Pattern[str] | None = None, hint: str = ""
    ) -> str:
        value = self.get(name, default if default is not None else _MISSING)
        if value is _MISSING:
            raise ConfigError("InvalidConfig", f"missing required field {self.path}.{name}")
        if not isinstance(value, str) or not value:
            raise self._fail(name, "a non-empty string", value)
        if pattern is not None and not pattern.match(value):
            raise self._fail(name, hint or f"a string matching {pattern.pattern}", value)
        return value

    def optional_string(self, name: str, *, pattern: re.Pattern[str] | None = None, hint: str = "") -> str | None:
        if self.get(name) is _MISSING or self.get(name) == "":
            return None
        return self.string(name, pattern=pattern, hint=hint)

    def checked(self, name: str, checker: Callable[[str], str], *, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise self._fail(name, "a string", value)
        return _check(f"{self.path}.{name}", value, checker)

    def choice(self, name: str, allowed: tuple[str, ...], *, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or value not in allowed:
            raise self._fail(name, "one of " + ", ".join(allowed), value)
        return value

    def string_list(self, name: str) -> tuple[str, ...]:
        value = self.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self._fail(name, "a list of non-empty strings", value)
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            raise ConfigError("InvalidConfig", f"{self.path}.{name} lists {duplicates[0]!r} twice")
        return tuple(value)

    def mapping(self, name: str) -> dict[str, object]:
        value = self.get(name, {})
        if not isinstance(value, dict):
            raise self._fail(name, "a JSON object of estimator parameters", value)
        return dict(value)

    def fraction(self, name: str, *, default: float) -> float:
        value = self.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 < value < 1
        ):
            raise self._fail(name, "a number between 0 and 1, both excluded", value)
        return float(value)

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self.get(name, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._fail(name, f"an integer from {low} to {high}", value)
        return value


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | list | dict) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
