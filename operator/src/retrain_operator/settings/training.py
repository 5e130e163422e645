"""The built-in trainer's settings, modelled once: the operator reads them from a policy, the trainer from its Job.

The operator parses ``spec.model``, ``spec.training.builtin`` and ``spec.promotion`` of a RetrainPolicy
with the functions here and writes the same typed values into the training Job's
``RETRAIN_TRAINER_CONFIG`` with :meth:`TrainerConfig.to_dict`; the trainer reads that document back
with :func:`parse_trainer_config`. The document's sections have the CRD's shape and field names, so
one parser serves both, and a test proves that every example policy comes back from the Job's
environment exactly as the operator read it::

    {"model": <spec.model>, "builtin": <spec.training.builtin>, "promotion": <spec.promotion>,
     "store": {"name": "default", "endpoint": ..., "region": ..., "addressingStyle": ...},
     "run": {"policy": "team-a/churn", "policyUid": ..., "job": ..., "trigger": ..., "version": ...}}

``store`` is how to reach the policy's ModelStore, copied by the operator from the cluster admin's
object: a policy names a store (``spec.model.registry.store``), never a URL, so the endpoint a Job
connects to is always one an admin wrote. ``run`` says who asked, for the model's metadata;
``version`` fixes the version id (for replays and tests; the operator leaves it out). A rollback Job
gets only ``model``, ``store`` and ``run`` (:class:`PromoteConfig`).

Both sides apply every check here, so a policy the trainer would refuse is refused when the operator
reads it, not by a failing Job after each cooldown. The trainer reads strictly (an unknown field is a
mismatch between operator and trainer, never silently ignored); the operator leniently, as the API
server has already refused unknown fields. ``promotion.minScore`` is a floor for metrics where
higher is better and a ceiling for ``log_loss``, ``rmse`` and ``mae``. Histogram edges are the finite
upper bounds (``le``) of the serving code's buckets, strictly increasing; ``+Inf`` is implied.

Limits: whether the estimator exists and accepts its params needs scikit-learn and is checked by the
trainer (:mod:`retrain_operator.trainer.fit`); which estimators a tenant may name is the operator's
rule (:mod:`retrain_operator.domain.api`), since the trainer's own allowlist may be wider.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from retrain_operator.registry import layout
from retrain_operator.settings.durations import parse_duration
from retrain_operator.settings.reader import InvalidSpec, Reader, is_finite_number, show

AddressingStyle = Literal["auto", "path", "virtual"]
DataFormat = Literal["csv", "parquet"]
Metric = Literal["accuracy", "f1", "precision", "recall", "roc_auc", "log_loss", "r2", "rmse", "mae"]
SplitMethod = Literal["random", "time"]

ADDRESSING_STYLES: Final[tuple[AddressingStyle, ...]] = ("auto", "path", "virtual")
DATA_FORMATS: Final[tuple[DataFormat, ...]] = ("csv", "parquet")
METRICS: Final[tuple[Metric, ...]] = (
    "accuracy", "f1", "precision", "recall", "roc_auc", "log_loss", "r2", "rmse", "mae",
)  # fmt: skip
REGRESSION_METRICS: Final[frozenset[Metric]] = frozenset({"r2", "rmse", "mae"})
LOWER_IS_BETTER: Final[frozenset[Metric]] = frozenset({"log_loss", "rmse", "mae"})
SPLIT_METHODS: Final[tuple[SplitMethod, ...]] = ("random", "time")

# The CRD's patterns, so a policy read from a file (retrain-operator evaluate) and the trainer's
# document are held to what the API server enforces.
_MODEL_NAME = re.compile(r"^[a-z0-9](?:[-a-z0-9_.]*[a-z0-9])?$")
_MODEL_NAME_HINT = "lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_HINT = "a valid S3 bucket name (3-63 lower-case letters, digits, '.' and '-')"
_ENDPOINT = re.compile(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")
_ENDPOINT_HINT = "an http:// or https:// URL without credentials, query or fragment"
# A Kubernetes object name (RFC 1123 subdomain): a ModelStore's or a Secret's.
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
OBJECT_NAME_HINT = "a Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253)"
_REGION = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_REGION_HINT = "an S3 region name such as us-east-1 (lower-case letters, digits and '-')"
_MAX_SEED: Final = 2**32 - 1  # what numpy's random state takes
_MAX_PARTITIONS: Final = 100_000
_MAX_EDGES: Final = 1000

_MODEL_FIELDS: Final = ("name", "registry")
_REGISTRY_FIELDS: Final = ("bucket", "prefix", "store", "credentialsSecret", "endpoint", "region")
_STORE_FIELDS: Final = ("name", "endpoint", "region", "addressingStyle")
_BUILTIN_FIELDS: Final = (
    "data", "target", "estimator", "features", "excludeFeatures", "params", "split", "testSize", "seed", "metric",
    "histograms",
)  # fmt: skip
_DATA_FIELDS: Final = ("key", "prefix", "bucket", "format", "window")
_WINDOW_FIELDS: Final = ("column", "last", "partitions")
_SPLIT_FIELDS: Final = ("method", "column")
_HISTOGRAM_FIELDS: Final = ("features", "predictions")
_PROMOTION_FIELDS: Final = ("minScore", "mustBeatChampion", "minImprovement")
_RUN_FIELDS: Final = ("policy", "policyUid", "job", "trigger", "version")
_DOCUMENT_FIELDS: Final = ("model", "builtin", "promotion", "store", "run")
DEFAULT_REGION: Final = "us-east-1"


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that are set: an absent field and a null one read the same, so absent is shorter."""
    return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class RegistrySpec:
    """Where a model's versions live: a bucket and prefix in the ModelStore named ``store``.

    ``credentials_secret`` overrides the store's Secret name (a Secret of the policy's own namespace);
    its keys reach the Job as ``AWS_*`` variables, never here. ``region`` is the old per-policy region,
    kept so a policy that still carries it can be checked against its store's.
    """

    bucket: str
    prefix: str = ""
    store: str | None = None
    credentials_secret: str | None = None
    region: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present(
            {
                "bucket": self.bucket,
                "prefix": self.prefix,
                "store": self.store,
                "credentialsSecret": self.credentials_secret,
                "region": self.region,
            }
        )


@dataclass(frozen=True)
class StoreSpec:
    """How the trainer reaches S3: the connection part of the policy's ModelStore, written by the operator.

    ``endpoint`` None means AWS S3 itself for ``region`` (or the Job's ``AWS_ENDPOINT_URL``). Addressing
    ``auto`` is path-style with a custom endpoint (every S3-compatible server accepts it) and boto3's own
    choice on AWS.
    """

    name: str | None = None
    endpoint: str | None = None
    region: str = DEFAULT_REGION
    addressing_style: AddressingStyle = "auto"

    def to_dict(self) -> dict[str, Any]:
        return _present(
            {
                "name": self.name,
                "endpoint": self.endpoint,
                "region": self.region,
                "addressingStyle": self.addressing_style,
            }
        )


@dataclass(frozen=True)
class ModelSpec:
    """The model a policy retrains and the registry that holds its versions."""

    name: str
    registry: RegistrySpec

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "registry": self.registry.to_dict()}


@dataclass(frozen=True)
class WindowSpec:
    """The most recent part of the data: rows within ``last`` of the newest ``column`` value, and/or the
    last ``partitions`` objects under the data prefix. Counting from the newest value, not from now, makes
    a replay on the same data pick the same rows."""

    column: str | None = None
    last: str | None = None
    partitions: int | None = None

    @property
    def last_seconds(self) -> float | None:
        return None if self.last is None else parse_duration(self.last)

    def to_dict(self) -> dict[str, Any]:
        return _present({"column": self.column, "last": self.last, "partitions": self.partitions})


@dataclass(frozen=True)
class DataSpec:
    """One object (``key``) or every object under ``prefix``, in key order; ``bucket`` defaults to the registry's."""

    key: str | None = None
    prefix: str | None = None
    bucket: str | None = None
    format: DataFormat = "csv"
    window: WindowSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present(
            {
                "key": self.key,
                "prefix": self.prefix,
                "bucket": self.bucket,
                "format": self.format,
                "window": self.window.to_dict() if self.window is not None else None,
            }
        )


@dataclass(frozen=True)
class SplitSpec:
    """``random`` (stratified for classification, seeded) or ``time`` (the newest rows by ``column``)."""

    method: SplitMethod = "random"
    column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present({"method": self.method, "column": self.column})


@dataclass(frozen=True)
class HistogramSpec:
    """Bucket edges (the serving code's ``le`` bounds) of the reference histograms the trainer stores.

    Features without edges, and predictions when ``predictions`` is None, get edges from the training data.
    """

    features: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    predictions: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present(
            {
                "features": {name: list(edges) for name, edges in self.features.items()},
                "predictions": list(self.predictions) if self.predictions is not None else None,
            }
        )


@dataclass(frozen=True)
class PromotionSpec:
    """When a newly trained model replaces the champion: the quality gate."""

    min_score: float | None = None
    must_beat_champion: bool = True
    min_improvement: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return _present(
            {
                "minScore": self.min_score,
                "mustBeatChampion": self.must_beat_champion,
                "minImprovement": self.min_improvement,
            }
        )


@dataclass(frozen=True)
class BuiltinTrainer:
    """What the built-in trainer fits: the data, the target and features, the estimator, how it is scored."""

    data: DataSpec
    target: str
    estimator: str
    features: tuple[str, ...] = ()
    exclude_features: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    split: SplitSpec = field(default_factory=SplitSpec)
    test_size: float = 0.2
    seed: int = 0
    metric: Metric = "accuracy"
    histograms: HistogramSpec = field(default_factory=HistogramSpec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data.to_dict(),
            "target": self.target,
            "estimator": self.estimator,
            "features": list(self.features),
            "excludeFeatures": list(self.exclude_features),
            "params": dict(self.params),
            "split": self.split.to_dict(),
            "testSize": self.test_size,
            "seed": self.seed,
            "metric": self.metric,
            "histograms": self.histograms.to_dict(),
        }


@dataclass(frozen=True)
class RunSpec:
    """Which policy, Job and trigger asked for a run, for the metadata; ``version`` fixes the version id."""

    policy: str | None = None
    policy_uid: str | None = None
    job: str | None = None
    trigger: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present(
            {
                "policy": self.policy,
                "policyUid": self.policy_uid,
                "job": self.job,
                "trigger": self.trigger,
                "version": self.version,
            }
        )


@dataclass(frozen=True)
class TrainerConfig:
    """The document a training Job's trainer reads from ``RETRAIN_TRAINER_CONFIG``."""

    model: ModelSpec
    builtin: BuiltinTrainer
    promotion: PromotionSpec = field(default_factory=PromotionSpec)
    store: StoreSpec = field(default_factory=StoreSpec)
    run: RunSpec = field(default_factory=RunSpec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "builtin": self.builtin.to_dict(),
            "promotion": self.promotion.to_dict(),
            "store": self.store.to_dict(),
            "run": self.run.to_dict(),
        }


@dataclass(frozen=True)
class PromoteConfig:
    """What a rollback Job's ``promote`` command reads: the model, its registry, the store and who asked."""

    model: ModelSpec
    store: StoreSpec = field(default_factory=StoreSpec)
    run: RunSpec = field(default_factory=RunSpec)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "store": self.store.to_dict(), "run": self.run.to_dict()}


def parse_trainer_config(raw: Any) -> TrainerConfig:
    """Read a decoded :meth:`TrainerConfig.to_dict` document strictly; raise InvalidSpec naming every problem."""
    r = Reader(strict=True)
    root = _document(r, raw, required=("model", "builtin"))
    config = TrainerConfig(
        model=parse_model(r, root.get("model"), "model"),
        builtin=parse_builtin(r, root.get("builtin"), "builtin"),
        promotion=parse_promotion(r, root.get("promotion"), "promotion"),
        store=parse_store(r, root.get("store"), "store"),
        run=_parse_run(r, root.get("run"), "run"),
    )
    if r.problems:
        raise InvalidSpec(r.problems)
    return config


def parse_promote_config(raw: Any) -> PromoteConfig:
    """Read ``model`` and ``run`` of the same document; the training sections are not needed to promote."""
    r = Reader(strict=True)
    root = _document(r, raw, required=("model",))
    config = PromoteConfig(
        model=parse_model(r, root.get("model"), "model"),
        store=parse_store(r, root.get("store"), "store"),
        run=_parse_run(r, root.get("run"), "run"),
    )
    if r.problems:
        raise InvalidSpec(r.problems)
    return config


def _document(r: Reader, raw: Any, *, required: tuple[str, ...]) -> Mapping[str, Any]:
    root = r.obj(raw, "config", required=True, fields=_DOCUMENT_FIELDS)
    if isinstance(raw, Mapping):
        for name in required:
            if root.get(name) is None:
                r.fail("config", f"is missing required field config.{name}")
    if r.problems:  # reading the sections would only add noise to a document of the wrong shape
        raise InvalidSpec(r.problems)
    return root


def parse_model(r: Reader, raw: Any, path: str) -> ModelSpec:
    """``spec.model``: the model's name and its registry (a bucket and prefix in a ModelStore)."""
    body = r.obj(raw, path, required=True, fields=_MODEL_FIELDS)
    where = f"{path}.registry"
    registry = r.obj(body.get("registry"), where, required=True, fields=_REGISTRY_FIELDS)
    prefix = r.str_(registry, "prefix", where, default="") or ""
    try:
        layout.check_prefix(prefix)
    except ValueError as exc:
        r.fail(f"{where}.prefix", str(exc))
    endpoint = _optional(r, registry, "endpoint", where)
    if endpoint is not None:
        r.fail(f"{where}.endpoint", endpoint_migration(where))
    return ModelSpec(
        name=r.str_(body, "name", path, required=True, pattern=_MODEL_NAME, hint=_MODEL_NAME_HINT) or "",
        registry=RegistrySpec(
            bucket=r.str_(registry, "bucket", where, required=True, pattern=_BUCKET, hint=_BUCKET_HINT) or "",
            prefix=prefix,
            store=_optional(r, registry, "store", where, pattern=OBJECT_NAME, hint=OBJECT_NAME_HINT),
            credentials_secret=_optional(
                r, registry, "credentialsSecret", where, pattern=OBJECT_NAME, hint=OBJECT_NAME_HINT
            ),
            region=_optional(r, registry, "region", where),
        ),
    )


def endpoint_migration(where: str) -> str:
    """What a policy that still names its own storage URL is told: the ModelStore that replaces it."""
    return (
        "is no longer accepted: a training Job must only connect to storage a cluster admin set up. Ask the "
        "admin for a ModelStore with this endpoint that admits your namespace and bucket (kubectl get "
        f"modelstores; docs/install.md, 'Model stores'), set {where}.store to its name and remove "
        f"{where}.endpoint"
    )


def parse_store(r: Reader, raw: Any, path: str, *, fields: tuple[str, ...] = _STORE_FIELDS) -> StoreSpec:
    """How to reach a store: the trainer document's ``store`` section, or a ModelStore's spec (``fields``)."""
    body = r.obj(raw, path, fields=fields)
    return StoreSpec(
        name=_optional(r, body, "name", path, pattern=OBJECT_NAME, hint=OBJECT_NAME_HINT) if "name" in fields else None,
        endpoint=_optional(r, body, "endpoint", path, pattern=_ENDPOINT, hint=_ENDPOINT_HINT),
        region=r.str_(body, "region", path, default=DEFAULT_REGION, pattern=_REGION, hint=_REGION_HINT)
        or DEFAULT_REGION,
        addressing_style=cast(
            AddressingStyle,
            r.enum(body, "addressingStyle", path, allowed=ADDRESSING_STYLES, default="auto") or "auto",
        ),
    )


def parse_builtin(r: Reader, raw: Any, path: str) -> BuiltinTrainer:
    """``spec.training.builtin``: what the built-in trainer fits and how it scores it."""
    body = r.obj(raw, path, required=True, fields=_BUILTIN_FIELDS)
    target = _required(r, body, "target", path)
    features = _names(r, body, "features", path)
    excluded = _names(r, body, "excludeFeatures", path)
    if target and target in features:
        r.fail(f"{path}.features", f"lists the target column {target!r}; remove it")
    if features and excluded:
        r.fail(path, "sets both features and excludeFeatures; list the features to use or those to leave out, not both")
    test_size = r.num(body, "testSize", path, default=0.2)
    if test_size is not None and not 0 < test_size < 1:
        r.fail(f"{path}.testSize", f"must be a number between 0 and 1, both excluded, got {show(test_size)}")
    return BuiltinTrainer(
        data=_parse_data(r, body.get("data"), f"{path}.data"),
        target=target,
        estimator=_required(r, body, "estimator", path),
        features=features,
        exclude_features=excluded,
        params=dict(r.obj(body.get("params"), f"{path}.params")),
        split=_parse_split(r, body.get("split"), f"{path}.split"),
        test_size=0.2 if test_size is None else test_size,
        seed=r.int_(body, "seed", path, default=0, maximum=_MAX_SEED),
        metric=cast(Metric, r.enum(body, "metric", path, allowed=METRICS, default="accuracy") or "accuracy"),
        histograms=_parse_histograms(r, body.get("histograms"), f"{path}.histograms"),
    )


def parse_promotion(r: Reader, raw: Any, path: str) -> PromotionSpec:
    """``spec.promotion``: the quality gate."""
    body = r.obj(raw, path, fields=_PROMOTION_FIELDS)
    return PromotionSpec(
        min_score=r.num(body, "minScore", path),
        must_beat_champion=r.bool_(body, "mustBeatChampion", path, default=True),
        min_improvement=r.num(body, "minImprovement", path, default=0.0, minimum=0.0) or 0.0,
    )


def _parse_data(r: Reader, raw: Any, path: str) -> DataSpec:
    body = r.obj(raw, path, required=True, fields=_DATA_FIELDS)
    key, prefix = _optional(r, body, "key", path), _optional(r, body, "prefix", path)
    if (key is None) == (prefix is None):
        r.fail(path, "set exactly one of key (one object) or prefix (every object under it, in key order)")
    window = None
    if body.get("window") is not None:
        window = _parse_window(r, body["window"], f"{path}.window", data_path=path, by_prefix=prefix is not None)
    return DataSpec(
        key=key,
        prefix=prefix,
        bucket=_optional(r, body, "bucket", path, pattern=_BUCKET, hint=_BUCKET_HINT),
        format=cast(DataFormat, r.enum(body, "format", path, allowed=DATA_FORMATS, default="csv") or "csv"),
        window=window,
    )


def _parse_window(r: Reader, raw: Any, path: str, *, data_path: str, by_prefix: bool) -> WindowSpec:
    body = r.obj(raw, path, fields=_WINDOW_FIELDS)
    column, last = _optional(r, body, "column", path), _optional(r, body, "last", path)
    if last is not None:
        r.duration(body, "last", path, default="1s", minimum=1.0)
    partitions = None
    if body.get("partitions") is not None:
        partitions = r.int_(body, "partitions", path, default=1, minimum=1, maximum=_MAX_PARTITIONS)
    if (column is None) != (last is None):
        r.fail(path, "needs column and last together, for example column ts, last 7d")
    elif column is None and partitions is None:
        r.fail(path, "needs column and last, or partitions, or both")
    if partitions is not None and not by_prefix:
        r.fail(f"{path}.partitions", f"needs {data_path}.prefix, not key")
    return WindowSpec(column=column, last=last, partitions=partitions)


def _parse_split(r: Reader, raw: Any, path: str) -> SplitSpec:
    body = r.obj(raw, path, fields=_SPLIT_FIELDS)
    method = cast(SplitMethod, r.enum(body, "method", path, allowed=SPLIT_METHODS, default="random") or "random")
    column = _optional(r, body, "column", path)
    if method == "time" and column is None:
        r.fail(f"{path}.method", f"time needs {path}.column, the column to order rows by")
    if method == "random" and column is not None:
        r.fail(f"{path}.column", "is only used with method time; remove it")
    return SplitSpec(method=method, column=column)


def _parse_histograms(r: Reader, raw: Any, path: str) -> HistogramSpec:
    body = r.obj(raw, path, fields=_HISTOGRAM_FIELDS)
    features = r.obj(body.get("features"), f"{path}.features")
    predictions = body.get("predictions")
    return HistogramSpec(
        features={
            str(name): _edges(r, edges, f"{path}.features.{name}")
            for name, edges in sorted(features.items(), key=lambda item: str(item[0]))
        },
        predictions=None if predictions is None else _edges(r, predictions, f"{path}.predictions"),
    )


def _parse_run(r: Reader, raw: Any, path: str) -> RunSpec:
    body = r.obj(raw, path, fields=_RUN_FIELDS)
    version = _optional(r, body, "version", path)
    if version is not None:
        try:
            layout.check_version_id(version)
        except ValueError as exc:
            r.fail(f"{path}.version", str(exc))
    return RunSpec(
        policy=_optional(r, body, "policy", path),
        policy_uid=_optional(r, body, "policyUid", path),
        job=_optional(r, body, "job", path),
        trigger=_optional(r, body, "trigger", path),
        version=version,
    )


def _edges(r: Reader, raw: Any, path: str) -> tuple[float, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= _MAX_EDGES or not all(is_finite_number(v) for v in raw):
        r.fail(
            path,
            f"must be a list of 1 to {_MAX_EDGES} finite numbers (bucket upper bounds; +Inf is implied), "
            f"got {show(raw)}",
        )
        return ()
    edges = tuple(float(v) for v in raw)
    if any(b <= a for a, b in itertools.pairwise(edges)):
        r.fail(path, f"must be strictly increasing, got {show(raw)}")
    return edges


def _optional(
    r: Reader,
    raw: Mapping[str, Any],
    key: str,
    path: str,
    *,
    pattern: re.Pattern[str] | None = None,
    hint: str | None = None,
) -> str | None:
    """A string that may be left out; empty means left out, as the trainer has always read it."""
    return None if raw.get(key) == "" else r.str_(raw, key, path, pattern=pattern, hint=hint)


def _required(r: Reader, raw: Mapping[str, Any], key: str, path: str) -> str:
    value = r.str_(raw, key, path, required=True)
    if value == "":
        r.fail(f"{path}.{key}", "must not be empty")
    return value or ""


def _names(r: Reader, raw: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    """Column names: none empty, none twice (a typo that would otherwise pass as one column)."""
    names = r.str_list(raw, key, path)
    if not all(names):
        r.fail(f"{path}.{key}", "must not hold an empty name")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        r.fail(f"{path}.{key}", f"lists {twice[0]!r} twice")
    return names
