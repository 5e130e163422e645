"""The trainer's configuration: the JSON the operator puts in the Job, parsed and checked up front.

The operator copies ``spec.model`` and ``spec.training.builtin`` of a RetrainPolicy into this JSON,
``spec.promotion`` into ``promotion``, the serving code's histogram buckets into ``histograms``, and
adds a ``run`` section about the Job. Everything is checked before any storage or training work starts,
so a mistake costs a second, not a training run, and the message names the field and the fix.

Shape (every field but ``model.name``, ``model.registry.bucket``, ``builtin.target``,
``builtin.estimator`` and one of ``builtin.data.key``/``prefix`` is optional)::

    {"model": {"name": "churn", "registry": {"bucket": "models", "prefix": "churn/", "endpoint": ..., "region": ...}},
     "builtin": {
       "data": {"bucket": ..., "key": "train.csv" | "prefix": "events/", "format": "csv" | "parquet",
                "window": {"column": "ts", "last": "7d", "partitions": 3}},
       "target": "label", "features": [...], "excludeFeatures": [...],
       "estimator": "sklearn.linear_model.LogisticRegression", "params": {...},
       "split": {"method": "random" | "time", "column": "ts"}, "testSize": 0.2, "seed": 0,
       "metric": "accuracy"},
     "promotion": {"minScore": null, "mustBeatChampion": true, "minImprovement": 0},
     "histograms": {"features": {"age": [18, 30, 50]}, "predictions": [0.25, 0.5, 0.75]},
     "run": {"policy": ..., "policyUid": ..., "job": ..., "trigger": ..., "version": ...}}

``data.window.last`` is a duration (``s``, ``m``, ``h``, ``d`` or ``w``, e.g. ``36h`` or ``7d``)
counted back from the newest value of ``window.column``, so replaying a run on the same data picks the
same rows; ``window.partitions`` keeps the last N objects under ``data.prefix`` in key order. Both may
be combined. ``promotion.minScore`` is a floor for metrics where higher is better and a ceiling for
``log_loss``, ``rmse`` and ``mae``. Histogram edges are the finite upper bounds (``le``) of the
serving code's buckets, strictly increasing; ``+Inf`` is implied.

Unknown fields are errors, never ignored: the trainer ships in the operator's image, so a field it does
not know means a typo or a mismatch between the two that must not pass silently. Defaults match the
CRD's. Whether the estimator exists and accepts its params is checked by
:mod:`retrain_operator.trainer.fit`, which needs scikit-learn.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from retrain_operator.registry import layout
from retrain_operator.settings.durations import parse_duration
from retrain_operator.trainer.errors import ConfigError

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "REGRESSION_METRICS",
    "BuiltinConfig",
    "DataConfig",
    "DataFormat",
    "HistogramConfig",
    "Metric",
    "ModelConfig",
    "PromotionConfig",
    "RegistryConfig",
    "RegistryOnlyConfig",
    "RunConfig",
    "SplitConfig",
    "TrainerConfig",
    "WindowConfig",
    "load_config",
    "load_registry_config",
    "parse_config",
    "parse_registry_config",
]

DataFormat = Literal["csv", "parquet"]
Metric = Literal["accuracy", "f1", "precision", "recall", "roc_auc", "log_loss", "r2", "rmse", "mae"]
SplitMethod = Literal["random", "time"]

DATA_FORMATS: Final[tuple[DataFormat, ...]] = ("csv", "parquet")
METRICS: Final[tuple[Metric, ...]] = (
    "accuracy", "f1", "precision", "recall", "roc_auc", "log_loss", "r2", "rmse", "mae",
)  # fmt: skip
REGRESSION_METRICS: Final[frozenset[Metric]] = frozenset({"r2", "rmse", "mae"})
LOWER_IS_BETTER: Final[frozenset[Metric]] = frozenset({"log_loss", "rmse", "mae"})
SPLIT_METHODS: Final[tuple[SplitMethod, ...]] = ("random", "time")

_MODEL_NAME = re.compile(r"^[a-z0-9](?:[-a-z0-9_.]*[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENDPOINT = re.compile(r"^https?://\S+$")
_MAX_SEED: Final = 2**32 - 1
_MAX_PARTITIONS: Final = 100_000
_MAX_EDGES: Final = 1000


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
class WindowConfig:
    """Which recent part of the data to train on: rows within ``last_seconds`` of the newest ``column``
    value, and/or the last ``partitions`` objects under the data prefix."""

    column: str | None = None
    last: str | None = None
    last_seconds: float | None = None
    partitions: int | None = None


@dataclass(frozen=True)
class DataConfig:
    """One object (``key``) or every object under ``prefix``, concatenated in key order."""

    bucket: str
    key: str | None
    format: DataFormat = "csv"
    prefix: str | None = None
    window: WindowConfig | None = None


@dataclass(frozen=True)
class SplitConfig:
    """``random`` (stratified for classification, seeded) or ``time`` (the newest rows by ``column``)."""

    method: SplitMethod = "random"
    column: str | None = None


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
    exclude_features: tuple[str, ...] = ()
    split: SplitConfig = SplitConfig()


@dataclass(frozen=True)
class PromotionConfig:
    """The quality gate a new model must pass to become champion."""

    min_score: float | None = None
    must_beat_champion: bool = True
    min_improvement: float = 0.0


@dataclass(frozen=True)
class HistogramConfig:
    """Bucket upper bounds (``le``) per numeric feature and for the predictions, as serving exports them."""

    features: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    predictions: tuple[float, ...] | None = None


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
    promotion: PromotionConfig = PromotionConfig()
    histograms: HistogramConfig = HistogramConfig()


@dataclass(frozen=True)
class RegistryOnlyConfig:
    """What the ``promote`` command needs: the model, its registry and who asked."""

    model: ModelConfig
    run: RunConfig = RunConfig()


def load_config(text: str, *, source: str) -> TrainerConfig:
    """Parse configuration JSON read from ``source`` (a file name or an environment variable)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("InvalidConfig", f"{source} is not valid JSON: {exc}") from None
    return parse_config(raw)


def load_registry_config(text: str, *, source: str) -> RegistryOnlyConfig:
    """Parse the same configuration JSON for the ``promote`` command, which reads only the registry part."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("InvalidConfig", f"{source} is not valid JSON: {exc}") from None
    return parse_registry_config(raw)


def parse_registry_config(raw: object) -> RegistryOnlyConfig:
    """Check ``model`` and ``run`` of a configuration document; the training sections are not needed."""
    root = _Obj(raw, "config", required={"model"}, optional=_ROOT_OPTIONAL | {"builtin"})
    model, _ = _model(root)
    return RegistryOnlyConfig(model=model, run=_run(root))


_ROOT_OPTIONAL: Final = frozenset({"run", "promotion", "histograms"})


def parse_config(raw: object) -> TrainerConfig:
    """Check a decoded JSON document and build the configuration; raise ConfigError naming the field."""
    root = _Obj(raw, "config", required={"model", "builtin"}, optional=_ROOT_OPTIONAL)
    model, registry_bucket = _model(root)
    builtin = _Obj(
        root.get("builtin"),
        "builtin",
        required={"data", "target", "estimator"},
        optional={"features", "excludeFeatures", "params", "split", "testSize", "seed", "metric"},
    )
    target = builtin.string("target")
    features = builtin.string_list("features")
    excluded = builtin.string_list("excludeFeatures")
    if target in features:
        raise ConfigError("InvalidConfig", f"builtin.features lists the target column {target!r}; remove it")
    if features and excluded:
        raise ConfigError(
            "InvalidConfig",
            "builtin.features and builtin.excludeFeatures are both set; list the features to use or those to "
            "leave out, not both",
        )
    split = _split(builtin)
    return TrainerConfig(
        model=model,
        builtin=BuiltinConfig(
            data=_data(builtin, registry_bucket),
            target=target,
            estimator=builtin.string("estimator"),
            features=features,
            params=builtin.mapping("params"),
            test_size=builtin.fraction("testSize", default=0.2),
            seed=builtin.integer("seed", default=0, low=0, high=_MAX_SEED),
            metric=cast(Metric, builtin.choice("metric", METRICS, default="accuracy")),
            exclude_features=excluded,
            split=split,
        ),
        run=_run(root),
        promotion=_promotion(root),
        histograms=_histograms(root),
    )


def _model(root: _Obj) -> tuple[ModelConfig, str]:
    model = _Obj(root.get("model"), "model", required={"name", "registry"})
    # credentialsSecret is accepted so the operator can copy spec.model.registry as it is; the Secret's
    # keys reach the trainer as AWS_* environment variables, never through this file.
    registry = _Obj(
        model.get("registry"),
        "model.registry",
        required={"bucket"},
        optional={"endpoint", "region", "prefix", "credentialsSecret"},
    )
    bucket = registry.string("bucket", pattern=_BUCKET, hint="a valid S3 bucket name")
    config = ModelConfig(
        name=model.string("name", pattern=_MODEL_NAME, hint="lower-case letters, digits, '-', '_', '.'"),
        registry=RegistryConfig(
            bucket=bucket,
            prefix=registry.checked("prefix", layout.check_prefix, default=""),
            region=registry.string("region", default="us-east-1"),
            endpoint=registry.optional_string("endpoint", pattern=_ENDPOINT, hint="an http:// or https:// URL"),
        ),
    )
    return config, bucket


def _run(root: _Obj) -> RunConfig:
    run = _Obj(root.get("run", {}), "run", optional={"policy", "policyUid", "job", "trigger", "version"})
    version = run.optional_string("version")
    return RunConfig(
        policy=run.optional_string("policy"),
        policy_uid=run.optional_string("policyUid"),
        job=run.optional_string("job"),
        trigger=run.optional_string("trigger"),
        version=None if version is None else _check("run.version", version, layout.check_version_id),
    )


def _data(builtin: _Obj, registry_bucket: str) -> DataConfig:
    data = _Obj(builtin.get("data"), "builtin.data", optional={"bucket", "key", "prefix", "format", "window"})
    key, prefix = data.optional_string("key"), data.optional_string("prefix")
    if (key is None) == (prefix is None):
        raise ConfigError(
            "InvalidConfig",
            "builtin.data needs exactly one of key (one object) or prefix (every object under it, in key order)",
        )
    window = None
    if data.get("window") is not _MISSING:
        raw = _Obj(data.get("window"), "builtin.data.window", optional={"column", "last", "partitions"})
        column, last = raw.optional_string("column"), raw.optional_string("last")
        partitions = raw.optional_integer("partitions", low=1, high=_MAX_PARTITIONS)
        if (column is None) != (last is None):
            raise ConfigError(
                "InvalidConfig", "builtin.data.window needs column and last together, for example column ts, last 7d"
            )
        if column is None and partitions is None:
            raise ConfigError("InvalidConfig", "builtin.data.window needs column and last, or partitions, or both")
        if partitions is not None and prefix is None:
            raise ConfigError("InvalidConfig", "builtin.data.window.partitions needs builtin.data.prefix, not key")
        seconds = None if last is None else _checked_number("builtin.data.window.last", last, _positive_duration)
        window = WindowConfig(column=column, last=last, last_seconds=seconds, partitions=partitions)
    return DataConfig(
        bucket=data.string("bucket", default=registry_bucket, pattern=_BUCKET, hint="a valid S3 bucket name"),
        key=key,
        prefix=prefix,
        format=cast(DataFormat, data.choice("format", DATA_FORMATS, default="csv")),
        window=window,
    )


def _split(builtin: _Obj) -> SplitConfig:
    if builtin.get("split") is _MISSING:
        return SplitConfig()
    split = _Obj(builtin.get("split"), "builtin.split", optional={"method", "column"})
    method = cast(SplitMethod, split.choice("method", SPLIT_METHODS, default="random"))
    column = split.optional_string("column")
    if method == "time" and column is None:
        raise ConfigError("InvalidConfig", "builtin.split.method time needs builtin.split.column, the time column")
    if method == "random" and column is not None:
        raise ConfigError("InvalidConfig", "builtin.split.column is only used with method time; remove it")
    return SplitConfig(method=method, column=column)


def _promotion(root: _Obj) -> PromotionConfig:
    promotion = _Obj(
        root.get("promotion", {}), "promotion", optional={"minScore", "mustBeatChampion", "minImprovement"}
    )
    improvement = promotion.number("minImprovement", default=0.0)
    if improvement is None or improvement < 0:
        raise promotion.fail("minImprovement", "a number of 0 or more", promotion.get("minImprovement"))
    return PromotionConfig(
        min_score=promotion.number("minScore", default=None),
        must_beat_champion=promotion.boolean("mustBeatChampion", default=True),
        min_improvement=improvement,
    )


def _histograms(root: _Obj) -> HistogramConfig:
    histograms = _Obj(root.get("histograms", {}), "histograms", optional={"features", "predictions"})
    raw_features = histograms.get("features", {})
    if not isinstance(raw_features, dict):
        raise histograms.fail("features", "a JSON object of feature name to bucket edges", raw_features)
    features = {
        str(name): _edges(f"histograms.features.{name}", edges) for name, edges in sorted(raw_features.items())
    }
    predictions = histograms.get("predictions")
    return HistogramConfig(
        features=features,
        predictions=None if predictions is _MISSING else _edges("histograms.predictions", predictions),
    )


def _edges(path: str, raw: object) -> tuple[float, ...]:
    if (
        not isinstance(raw, list)
        or not 1 <= len(raw) <= _MAX_EDGES
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in raw)
    ):
        raise ConfigError(
            "InvalidConfig",
            f"{path} must be a list of 1 to {_MAX_EDGES} finite numbers (bucket upper bounds; +Inf is implied), "
            f"got {_show(raw)}",
        )
    edges = tuple(float(v) for v in raw)
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ConfigError("InvalidConfig", f"{path} must be strictly increasing, got {_show(raw)}")
    return edges


def _checked_number(path: str, value: str, parser: Callable[[str], float]) -> float:
    try:
        return parser(value)
    except ValueError as exc:
        raise ConfigError("InvalidConfig", f"{path}: {exc}") from None


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds < 1:
        raise ValueError(f"{text!r} is shorter than the minimum of 1s")
    return seconds


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

    def fail(self, name: str, expected: str, value: object) -> ConfigError:
        return ConfigError("InvalidConfig", f"{self.path}.{name} must be {expected}, got {_show(value)}")

    def number(self, name: str, *, default: float | None) -> float | None:
        value = self.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(name, "a finite number", value)
        return float(value)

    def boolean(self, name: str, *, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, "true or false", value)
        return value

    def optional_integer(self, name: str, *, low: int, high: int) -> int | None:
        if self.get(name) is _MISSING:
            return None
        return self.integer(name, default=low, low=low, high=high)

    def string(
        self, name: str, *, default: str | None = None, pattern: re.Pattern[str] | None = None, hint: str = ""
    ) -> str:
        value = self.get(name, default if default is not None else _MISSING)
        if value is _MISSING:
            raise ConfigError("InvalidConfig", f"missing required field {self.path}.{name}")
        if not isinstance(value, str) or not value:
            raise self.fail(name, "a non-empty string", value)
        if pattern is not None and not pattern.match(value):
            raise self.fail(name, hint or f"a string matching {pattern.pattern}", value)
        return value

    def optional_string(self, name: str, *, pattern: re.Pattern[str] | None = None, hint: str = "") -> str | None:
        if self.get(name) is _MISSING or self.get(name) == "":
            return None
        return self.string(name, pattern=pattern, hint=hint)

    def checked(self, name: str, checker: Callable[[str], str], *, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise self.fail(name, "a string", value)
        return _check(f"{self.path}.{name}", value, checker)

    def choice(self, name: str, allowed: tuple[str, ...], *, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(name, "one of " + ", ".join(allowed), value)
        return value

    def string_list(self, name: str) -> tuple[str, ...]:
        value = self.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self.fail(name, "a list of non-empty strings", value)
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            raise ConfigError("InvalidConfig", f"{self.path}.{name} lists {duplicates[0]!r} twice")
        return tuple(value)

    def mapping(self, name: str) -> dict[str, object]:
        value = self.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "a JSON object of estimator parameters", value)
        return dict(value)

    def fraction(self, name: str, *, default: float) -> float:
        value = self.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 < value < 1
        ):
            raise self.fail(name, "a number between 0 and 1, both excluded", value)
        return float(value)

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self.get(name, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(name, f"an integer from {low} to {high}", value)
        return value


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | list | dict) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
