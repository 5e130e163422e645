"""One training run: check the version is free, read the data, fit, and write model then metadata.

The order is chosen so a run fails as early and as cheaply as it can and never leaves a version that
looks complete but is not: the configuration and estimator are checked before any I/O, the version
folder before the data is read, and the metadata, which marks a version complete, is written last.
Both writes refuse to replace an object. If the metadata cannot be written, the model written by this
run is deleted again (best effort), so no orphan is left behind in the normal case.

Time comes from injected clocks so a run can be replayed with a fixed ``now``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn

from retrain_operator.registry import layout
from retrain_operator.trainer.config import TrainerConfig
from retrain_operator.trainer.data import parse_table, select_columns
from retrain_operator.trainer.errors import DataError, StorageError
from retrain_operator.trainer.fit import FitResult, fit_and_score, make_estimator
from retrain_operator.trainer.storage import ObjectInfo, ObjectStore, StoreError

__all__ = ["TrainingResult", "rfc3339", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """What a successful run reports: the termination message fields and the metadata it wrote."""

    version: str
    model_uri: str
    metadata_uri: str
    metric: str
    score: float
    trained_at: datetime
    rows: int
    duration_seconds: float
    metadata: dict[str, Any]


def rfc3339(moment: datetime) -> str:
    """``2026-11-27T19:40:00Z``: UTC, whole seconds, as Kubernetes writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def train(
    config: TrainerConfig,
    *,
    store: ObjectStore,
    clock: Callable[[], datetime] = _utcnow,
    monotonic: Callable[[], float] = time.monotonic,
) -> TrainingResult:
    """Run one training as configured; raise a TrainerError subclass on any expected failure."""
    started = monotonic()
    builtin, registry = config.builtin, config.model.registry
    estimator = make_estimator(builtin.estimator, builtin.params, metric=builtin.metric, seed=builtin.seed)

    version = config.run.version or layout.new_version_id(clock(), token=config.run.job)
    bucket, prefix = registry.bucket, registry.prefix
    model_key = layout.model_key(prefix, version)
    metadata_key = layout.metadata_key(prefix, version)
    _ensure_version_free(store, bucket=bucket, folder=layout.version_prefix(prefix, version), version=version)

    source = layout.s3_uri(builtin.data.bucket, builtin.data.key)
    logger.info("reading %s", source)
    body, info = _read_data(store, builtin.data.bucket, builtin.data.key)
    frame = parse_table(body, fmt=builtin.data.format, source=source)
    dataset = select_columns(
        frame, target=builtin.target, features=builtin.features, metric=builtin.metric, source=source
    )
    logger.info("fitting %s on %d rows, %d features", builtin.estimator, len(dataset.target), dataset.features.shape[1])
    fitted = fit_and_score(
        dataset, estimator=estimator, metric=builtin.metric, test_size=builtin.test_size, seed=builtin.seed
    )
    trained_at = clock()
    logger.info("holdout %s = %.4f", builtin.metric, fitted.score)

    buffer = io.BytesIO()
    joblib.dump(fitted.model, buffer, compress=3)
    duration = round(monotonic() - started, 3)
    document = _metadata(
        config,
        version=version,
        model_uri=layout.s3_uri(bucket, model_key),
        info=info,
        digest=hashlib.sha256(body).hexdigest(),
        fitted=fitted,
        features=tuple(dataset.features.columns),
        numeric=dataset.numeric,
        categorical=dataset.categorical,
        unlabelled=dataset.unlabelled,
        trained_at=trained_at,
        duration=duration,
    )
    encoded = json.dumps(document, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")
    _write(
        store,
        bucket=bucket,
        key=model_key,
        body=buffer.getvalue(),
        content_type="application/octet-stream",
        version=version,
    )
    try:
        _write(store, bucket=bucket, key=metadata_key, body=encoded, content_type="application/json", version=version)
    except StorageError:
        _delete_quietly(store, bucket, model_key)
        raise
    logger.info("wrote %s", layout.s3_uri(bucket, metadata_key))
    return TrainingResult(
        version=version,
        model_uri=layout.s3_uri(bucket, model_key),
        metadata_uri=layout.s3_uri(bucket, metadata_key),
        metric=builtin.metric,
        score=fitted.score,
        trained_at=trained_at,
        rows=fitted.train_rows + fitted.test_rows,
        duration_seconds=duration,
        metadata=document,
    )


def _ensure_version_free(store: ObjectStore, *, bucket: str, folder: str, version: str) -> None:
    try:
        existing = store.first_key(bucket, folder)
    except StoreError as exc:
        raise _registry_error(exc, f"listing s3://{bucket}/{folder}") from None
    if existing is not None:
        raise StorageError(
            "VersionExists",
            f"version {version} already exists (s3://{bucket}/{existing}); versions are never overwritten, "
            "leave run.version empty or choose a new one",
        )


def _read_data(store: ObjectStore, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
    where = layout.s3_uri(bucket, key)
    try:
        return store.read(bucket, key)
    except StoreError as exc:
        if exc.kind == "NotFound":
            raise DataError(
                "DataNotFound", f"training data {where} not found; upload it or fix builtin.data.key"
            ) from None
        if exc.kind == "NoSuchBucket":
            raise DataError(
                "DataNotFound",
                f"bucket {bucket!r} of training data {where} does not exist; fix builtin.data.bucket",
            ) from None
        raise _registry_error(exc, f"reading {where}") from None


def _write(store: ObjectStore, *, bucket: str, key: str, body: bytes, content_type: str, version: str) -> None:
    try:
        store.put_new(bucket, key, body, content_type=content_type)
    except StoreError as exc:
        if exc.kind == "AlreadyExists":
            raise StorageError(
                "VersionExists",
                f"version {version} appeared while training (s3://{bucket}/{key} exists); "
                "another run uses the same version id",
            ) from None
        raise _registry_error(exc, f"writing s3://{bucket}/{key}") from None


def _registry_error(exc: StoreError, action: str) -> StorageError:
    if exc.kind == "AccessDenied":
        return StorageError(
            "AccessDenied",
            f"access denied {action} ({exc.detail}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "from the policy's credentialsSecret and that they may read the data and write the registry",
        )
    if exc.kind == "NoSuchBucket":
        return StorageError(
            "BucketNotFound", f"bucket missing while {action} ({exc.detail}); create it or fix model.registry.bucket"
        )
    if exc.kind == "Unavailable":
        return StorageError("StorageError", f"storage unavailable while {action}: {exc.detail}")
    return StorageError("StorageError", f"storage error while {action}: {exc.detail}")


def _delete_quietly(store: ObjectStore, bucket: str, key: str) -> None:
    try:
        store.delete(bucket, key)
    except StoreError as exc:
        logger.warning("could not remove s3://%s/%s after a failed metadata write: %s", bucket, key, exc)


def _metadata(
    config: TrainerConfig,
    *,
    version: str,
    model_uri: str,
    info: ObjectInfo,
    digest: str,
    fitted: FitResult,
    features: tuple[str, ...],
    numeric: tuple[str, ...],
    categorical: tuple[str, ...],
    unlabelled: int,
    trained_at: datetime,
    duration: float,
) -> dict[str, Any]:
    builtin, run = config.builtin, config.run
    estimator = fitted.model[-1]
    return {
        "schemaVersion": layout.METADATA_SCHEMA_VERSION,
        "model": config.model.name,
        "version": version,
        "modelFormat": "joblib",
        "modelUri": model_uri,
        "estimator": {
            "class": builtin.estimator,
            "params": _jsonable(dict(builtin.params)),
            "effectiveParams": _jsonable(estimator.get_params(deep=False)),
        },
        "preprocessing": {
            "numeric": {"columns": list(numeric), "steps": ["imputeMedian", "standardScale"]},
            "categorical": {"columns": list(categorical), "steps": ["imputeMostFrequent", "oneHot"]},
        },
        "features": list(features),
        "target": builtin.target,
        "classes": _jsonable(list(fitted.classes)),
        "metric": builtin.metric,
        "score": fitted.score,
        "holdout": {
            "testSize": builtin.test_size,
            "seed": builtin.seed,
            "stratified": fitted.stratified,
            "f1Average": fitted.f1_average,
        },
        "rows": {"train": fitted.train_rows, "test": fitted.test_rows, "unlabelled": unlabelled},
        "data": {
            "uri": layout.s3_uri(info.bucket, info.key),
            "bucket": info.bucket,
            "key": info.key,
            "format": builtin.data.format,
            "size": info.size,
            "etag": info.etag,
            "sha256": digest,
            "lastModified": rfc3339(info.last_modified) if info.last_modified else None,
        },
        "libraries": _libraries(),
        "trainedAt": rfc3339(trained_at),
        "durationSeconds": duration,
        "warnings": list(fitted.warnings),
        "run": {
            "policy": run.policy,
            "policyUid": run.policy_uid,
            "job": run.job,
            "trigger": run.trigger,
        },
    }


def _libraries() -> dict[str, str | None]:
    try:
        own: str | None = importlib_metadata.version("retrain-operator")
    except importlib_metadata.PackageNotFoundError:
        own = None
    return {
        "python": platform.python_version(),
        "retrainOperator": own,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "joblib": joblib.__version__,
    }


def _jsonable(value: object) -> Any:
    """A JSON-safe copy: estimator parameters may hold numpy scalars, NaN, classes or other objects."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return repr(value)
