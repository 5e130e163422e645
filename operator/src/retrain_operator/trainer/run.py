"""One training run: read the data, fit, compare with the champion, write a complete version, then promote.

The order is chosen so a run fails as early and as cheaply as it can and never leaves the registry in
a state a reader could misuse:

1. configuration and estimator are checked before any I/O; the version folder must be free and the
   champion pointer readable before the data is read;
2. the objects' sizes give a memory estimate, refused (``DataTooLarge``) when it exceeds the Job's
   memory limit and warned about when it exceeds the request (:mod:`.memory`); the data is read (every
   row left out counted by cause), fitted and scored; the champion is scored on the same holdout rows; the quality
   gate (:mod:`.gate`) decides; reference histograms are computed;
3. the version is written: model, histograms, then ``metadata.json``, which marks it complete. Every
   object refuses to replace an existing one. If a later object cannot be written the earlier ones of
   this run are deleted again (best effort), so no orphan is left behind in the normal case;
4. only then, and only if the gate passed, the champion pointer is moved by a conditional write
   against the pointer read in step 1. If another run moved it meanwhile, the new champion is scored
   and the gate decides again (:data:`~.champion.MOVE_ATTEMPTS` times at most).

A crash anywhere before step 4 leaves the previous champion untouched; a crash after step 3 leaves the
new version complete, as a candidate. A run that trained well but did not pass the gate succeeds with
``promoted`` false; its version stays, complete and loadable, for a person to promote.

Time comes from injected clocks so a run can be replayed with a fixed ``now``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import resource
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import pandas as pd
import sklearn

from retrain_operator.registry import layout
from retrain_operator.settings.training import DataSpec, TrainerConfig
from retrain_operator.trainer.champion import (
    MOVE_ATTEMPTS,
    ChampionMoved,
    ChampionState,
    StoredVersion,
    move_champion,
    new_pointer,
    read_champion,
    read_version,
)
from retrain_operator.trainer.data import Dataset, Window, apply_window, combine_parts, read_table, select_columns
from retrain_operator.trainer.errors import DataError, RegistryError, StorageError
from retrain_operator.trainer.fit import DEFAULT_ALLOWLIST, FitResult, fit_and_score, make_estimator
from retrain_operator.trainer.gate import ChampionScore, Verdict, decide
from retrain_operator.trainer.histograms import build_histograms
from retrain_operator.trainer.memory import MemoryCheck, check_memory
from retrain_operator.trainer.modelio import dump_model, load_model
from retrain_operator.trainer.scoring import ScoringError, higher_is_better, score_model
from retrain_operator.trainer.storage import ObjectInfo, ObjectStore, StoreError, registry_error

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
    promoted: bool = False
    promotion_reason: str = ""
    champion_version: str | None = None
    champion_score: float | None = None
    champion_holdout_score: float | None = None
    # The histograms of the features with configured edges (the serving code's buckets), in Prometheus's
    # cumulative form: the operator keeps them as the champion's drift reference.
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    # Rows read, used and left out by cause ({"rowsRead", "rowsUsed", "droppedRows"}), for the status.
    data_report: dict[str, Any] = field(default_factory=dict)
    memory_estimate_mib: float | None = None
    # What the operator should show beside the result (the estimate above the Job's memory request).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Data:
    """The combined training table and what identifies the bytes it came from."""

    frame: pd.DataFrame
    source: str
    fingerprint: dict[str, Any]
    window: Window | None
    malformed: int = 0
    memory: MemoryCheck | None = None


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
    allowlist: tuple[str, ...] = DEFAULT_ALLOWLIST,
    resources: Mapping[str, Any] | None = None,
) -> TrainingResult:
    """Run one training as configured; raise a TrainerError subclass on any expected failure."""
    started = monotonic()
    builtin, registry = config.builtin, config.model.registry
    estimator = make_estimator(
        builtin.estimator, builtin.params, metric=builtin.metric, seed=builtin.seed, allowlist=allowlist
    )

    version = config.run.version or layout.new_version_id(clock(), token=config.run.job)
    bucket, prefix = registry.bucket, registry.prefix
    model_key = layout.model_key(prefix, version)
    histograms_key = layout.histograms_key(prefix, version)
    metadata_key = layout.metadata_key(prefix, version)
    _ensure_version_free(store, bucket=bucket, folder=layout.version_prefix(prefix, version), version=version)
    state = read_champion(store, registry)

    data = _load_data(store, builtin.data, bucket=builtin.data.bucket or bucket, resources=resources)
    split_column = builtin.split.column if builtin.split.method == "time" else None
    window_column = builtin.data.window.column if builtin.data.window else None
    dataset = select_columns(
        data.frame,
        target=builtin.target,
        features=builtin.features,
        metric=builtin.metric,
        source=data.source,
        exclude=builtin.exclude_features,
        reserved=tuple(c for c in (window_column, split_column) if c is not None),
        time_column=split_column,
    )
    report = _data_report(data, dataset)
    if report["droppedRows"]:
        logger.info("left out %s of %d rows read", report["droppedRows"], report["rowsRead"])
    logger.info("fitting %s on %d rows, %d features", builtin.estimator, len(dataset.target), dataset.features.shape[1])
    fitted = fit_and_score(
        dataset,
        estimator=estimator,
        metric=builtin.metric,
        test_size=builtin.test_size,
        seed=builtin.seed,
        split=builtin.split,
    )
    trained_at = clock()
    logger.info("holdout %s = %.4f", builtin.metric, fitted.score)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        histograms = build_histograms(
            model=fitted.model,
            features=fitted.train_features,
            numeric=dataset.numeric,
            configured=builtin.histograms.features,
            prediction_edges=builtin.histograms.predictions,
            classes=fitted.classes,
        )
        champion = _score_champion(store, config, state=state, fitted=fitted, allowlist=allowlist)
    verdict = decide(metric=builtin.metric, challenger=fitted.score, champion=champion, policy=config.promotion)
    logger.info("quality gate: %s", verdict.reason)

    model_bytes = dump_model(fitted.model)
    duration = round(monotonic() - started, 3)
    document = _metadata(
        config,
        version=version,
        model_uri=layout.s3_uri(bucket, model_key),
        histograms_uri=layout.s3_uri(bucket, histograms_key),
        model_bytes=model_bytes,
        data=data,
        fitted=fitted,
        features=tuple(dataset.features.columns),
        numeric=dataset.numeric,
        categorical=dataset.categorical,
        unlabelled=dataset.unlabelled,
        untimed=dataset.untimed,
        trained_at=trained_at,
        duration=duration,
        champion=champion,
        verdict=verdict,
        resources=resources,
        report=report,
        extra_warnings=[f"{w.category.__name__}: {w.message}" for w in caught],
    )
    _write_version(
        store,
        bucket=bucket,
        version=version,
        objects=[
            (model_key, model_bytes, "application/octet-stream"),
            (histograms_key, _encode(histograms), "application/json"),
            (metadata_key, _encode(document), "application/json"),
        ],
    )
    logger.info("wrote %s", layout.s3_uri(bucket, metadata_key))

    stored = StoredVersion(version=version, metadata=document, model_key=model_key, model_bytes=model_bytes)
    promoted, verdict, state, champion = _settle(
        store, config, stored=stored, state=state, verdict=verdict, champion=champion, fitted=fitted,
        allowlist=allowlist, promoted_at=rfc3339(clock()),
    )  # fmt: skip
    champion_version: str | None
    champion_score: float | None
    if promoted:
        champion_version, champion_score = version, fitted.score
    elif state.pointer is not None:
        champion_version, champion_score = state.pointer.version, state.pointer.score
    else:
        champion_version, champion_score = None, None
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
        promoted=promoted,
        promotion_reason=verdict.reason,
        champion_version=champion_version,
        champion_score=champion_score,
        champion_holdout_score=champion.score if champion else None,
        reference={
            name: {le: float(count) for le, count in histograms["features"][name]["le"]}
            for name in builtin.histograms.features
            if name in histograms["features"]
        },
        data_report=report,
        memory_estimate_mib=data.memory.estimate_mib if data.memory else None,
        warnings=(data.memory.message(),) if data.memory is not None and data.memory.over_request else (),
    )


def _data_report(data: _Data, dataset: Dataset) -> dict[str, Any]:
    """Rows read, rows used, and every row left out by its cause; the causes add up to the difference."""
    window = data.window
    dropped = {
        "malformedLine": data.malformed,
        "outsideWindow": window.dropped if window else 0,
        "missingTime": (window.untimed if window else 0) + dataset.untimed,
        "missingLabel": dataset.unlabelled,
        "missingFeatures": dataset.featureless,
    }
    return {
        "rowsRead": int(data.fingerprint["rows"]["read"]) + data.malformed,
        "rowsUsed": len(dataset.target),
        "droppedRows": {cause: count for cause, count in dropped.items() if count},
    }


def _settle(
    store: ObjectStore,
    config: TrainerConfig,
    *,
    stored: StoredVersion,
    state: ChampionState,
    verdict: Verdict,
    champion: ChampionScore | None,
    fitted: FitResult,
    allowlist: tuple[str, ...],
    promoted_at: str,
) -> tuple[bool, Verdict, ChampionState, ChampionScore | None]:
    """Move the pointer to the new version if the gate passed, deciding again whenever another run won."""
    registry, metric = config.model.registry, config.builtin.metric
    for _ in range(MOVE_ATTEMPTS):
        if not verdict.passed:
            return False, verdict, state, champion
        pointer = new_pointer(
            stored, registry=registry, state=state, action="Train", reason=verdict.reason,
            promoted_at=promoted_at, run=config.run,
        )  # fmt: skip
        try:
            move_champion(store, registry, state=state, pointer=pointer)
        except ChampionMoved:
            logger.info("the champion pointer moved while this run trained; deciding again")
        except StorageError as exc:
            raise StorageError(
                exc.reason,
                f"version {stored.version} was written completely and stays a candidate, but the champion pointer "
                f"was not moved: {exc.message}",
            ) from None
        else:
            return True, verdict, state, champion
        state = read_champion(store, registry)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            champion = _score_champion(store, config, state=state, fitted=fitted, allowlist=allowlist)
        verdict = decide(metric=metric, challenger=fitted.score, champion=champion, policy=config.promotion)
    gave_up = Verdict(False, f"the champion pointer kept moving ({MOVE_ATTEMPTS} tries): kept as candidate")
    return False, gave_up, state, champion


def _score_champion(
    store: ObjectStore, config: TrainerConfig, *, state: ChampionState, fitted: FitResult, allowlist: tuple[str, ...]
) -> ChampionScore | None:
    """The champion's score on this run's holdout rows, or the reason it cannot have one."""
    if state.pointer is None:
        return None
    version = state.pointer.version
    try:
        stored = read_version(store, config.model.registry, version)
        source = layout.s3_uri(config.model.registry.bucket, stored.model_key)
        model = load_model(stored.model_bytes, allowlist=allowlist, source=source)
    except RegistryError as exc:
        return ChampionScore(version, None, f"{exc.reason}: {exc.message}")
    target = stored.metadata.get("target")
    if target != config.builtin.target:
        return ChampionScore(version, None, f"it predicts {target!r}, this run {config.builtin.target!r}")
    features = stored.metadata.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        return ChampionScore(version, None, "its metadata lists no features")
    missing = [f for f in features if f not in fitted.holdout.columns]
    if missing:
        return ChampionScore(version, None, f"it needs column {missing[0]!r}, which this data lacks")
    try:
        score = score_model(model, metric=config.builtin.metric, x=fitted.holdout[features], y=fitted.holdout_target)
    except ScoringError as exc:
        return ChampionScore(version, None, str(exc))
    logger.info("champion %s scores %s %.4f on the same holdout", version, config.builtin.metric, score)
    return ChampionScore(version, score)


def _load_data(store: ObjectStore, data: DataSpec, *, bucket: str, resources: Mapping[str, Any] | None = None) -> _Data:
    """Read the training data from ``bucket`` (the data's own, else the registry's), once its size fits."""
    if data.key is not None:
        source = layout.s3_uri(bucket, data.key)
        infos = _size_of(store, bucket, data.key)
    else:
        prefix = data.prefix or ""
        source = layout.s3_uri(bucket, prefix)
        infos = _list_data(store, bucket, prefix)
        if data.window is not None and data.window.partitions is not None:
            infos = infos[-data.window.partitions :]
    memory = None
    if infos:
        memory = check_memory(data_bytes=sum(info.size for info in infos), fmt=data.format, resources=resources)
        logger.info("%d bytes of data; estimated peak memory %.0f MiB", memory.data_bytes, memory.estimate_mib)
        if memory.over_limit:
            raise DataError("DataTooLarge", f"{source}: {memory.message()}")
        if memory.over_request:
            logger.warning("%s", memory.message())
    if data.key is not None:
        logger.info("reading %s", source)
        objects = [_read_data(store, bucket, data.key)]
    else:
        logger.info("reading %d objects under %s", len(infos), source)
        objects = [_read_data(store, bucket, info.key) for info in infos]
    parts = []
    malformed = 0
    described: list[dict[str, Any]] = []
    for body, info in objects:
        uri = layout.s3_uri(info.bucket, info.key)
        frame, skipped = read_table(body, fmt=data.format, source=uri)
        malformed += skipped
        parts.append((uri, frame))
        described.append(
            {
                "key": info.key,
                "size": info.size,
                "etag": info.etag,
                "sha256": hashlib.sha256(body).hexdigest(),
                "lastModified": rfc3339(info.last_modified) if info.last_modified else None,
                "rows": len(frame),
                **({"malformedLines": skipped} if skipped else {}),
            }
        )
    frame = combine_parts(parts)
    rows_read = len(frame)
    window = None
    if data.window is not None and data.window.column is not None and data.window.last_seconds is not None:
        frame, window = apply_window(frame, column=data.window.column, seconds=data.window.last_seconds, source=source)
    single = described[0] if len(described) == 1 and data.key is not None else None
    combined = hashlib.sha256("".join(f"{d['key']} {d['sha256']}\n" for d in described).encode()).hexdigest()
    modified = [d["lastModified"] for d in described if d["lastModified"]]
    fingerprint = {
        "uri": source,
        "bucket": bucket,
        "key": data.key,
        "prefix": data.prefix,
        "format": data.format,
        "size": sum(int(d["size"]) for d in described),
        "etag": single["etag"] if single else None,
        "sha256": single["sha256"] if single else combined,
        "lastModified": max(modified) if modified else None,
        "objects": described,
        "rows": {"read": rows_read, "afterWindow": len(frame)},
        "window": None
        if data.window is None
        else {
            "column": data.window.column,
            "last": data.window.last,
            "partitions": data.window.partitions,
            "start": window.start.isoformat() if window else None,
            "end": window.end.isoformat() if window else None,
            "droppedRows": window.dropped if window else 0,
            "untimedRows": window.untimed if window else 0,
        },
    }
    return _Data(frame=frame, source=source, fingerprint=fingerprint, window=window, malformed=malformed, memory=memory)


def _size_of(store: ObjectStore, bucket: str, key: str) -> list[ObjectInfo]:
    """The one object ``key`` as a listing shows it (its size, before reading it); empty if it is not listed."""
    try:
        return [info for info in store.list(bucket, key) if info.key == key]
    except StoreError:
        return []  # reading it says what is wrong, in the words of a read


def _list_data(store: ObjectStore, bucket: str, prefix: str) -> list[ObjectInfo]:
    where = layout.s3_uri(bucket, prefix)
    try:
        listing = store.list(bucket, prefix)
    except StoreError as exc:
        if exc.kind == "NoSuchBucket":
            raise DataError(
                "DataNotFound", f"bucket {bucket!r} of training data {where} does not exist; fix builtin.data.bucket"
            ) from None
        raise registry_error(exc, f"listing {where}") from None
    # Directory markers and the _SUCCESS/.crc files of Spark and Hadoop writers are not data.
    infos = [
        info
        for info in listing
        if not info.key.endswith("/") and not info.key.rpartition("/")[2].startswith(("_", "."))
    ]
    if not infos:
        raise DataError(
            "DataNotFound", f"no training data under {where}; upload objects there or fix builtin.data.prefix"
        )
    return infos


def _ensure_version_free(store: ObjectStore, *, bucket: str, folder: str, version: str) -> None:
    try:
        existing = store.first_key(bucket, folder)
    except StoreError as exc:
        raise registry_error(exc, f"listing s3://{bucket}/{folder}") from None
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
        raise registry_error(exc, f"reading {where}") from None


def _write_version(store: ObjectStore, *, bucket: str, version: str, objects: list[tuple[str, bytes, str]]) -> None:
    """Create the version's objects in order; on failure remove those this run already wrote."""
    written: list[str] = []
    for key, body, content_type in objects:
        try:
            store.put_new(bucket, key, body, content_type=content_type)
        except StoreError as exc:
            if exc.kind != "AlreadyExists":
                for done in written:
                    _delete_quietly(store, bucket, done)
                raise registry_error(exc, f"writing s3://{bucket}/{key}") from None
            # Every run writes the model first, so losing any create means another run owns this version id;
            # what it wrote stays, and deleting ours could remove objects its metadata is about to name.
            raise StorageError(
                "VersionExists",
                f"version {version} appeared while training (s3://{bucket}/{key} exists); "
                "another run uses the same version id",
            ) from None
        written.append(key)


def _delete_quietly(store: ObjectStore, bucket: str, key: str) -> None:
    try:
        store.delete(bucket, key)
    except StoreError as exc:
        logger.warning("could not remove s3://%s/%s after a failed write: %s", bucket, key, exc)


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


def _metadata(
    config: TrainerConfig,
    *,
    version: str,
    model_uri: str,
    histograms_uri: str,
    model_bytes: bytes,
    data: _Data,
    fitted: FitResult,
    features: tuple[str, ...],
    numeric: tuple[str, ...],
    categorical: tuple[str, ...],
    unlabelled: int,
    untimed: int,
    trained_at: datetime,
    duration: float,
    champion: ChampionScore | None,
    verdict: Verdict,
    resources: Mapping[str, Any] | None,
    report: Mapping[str, Any],
    extra_warnings: list[str],
) -> dict[str, Any]:
    builtin, run, promotion = config.builtin, config.run, config.promotion
    estimator = fitted.model[-1]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    memory = data.memory
    own = [memory.message()] if memory is not None and memory.over_request else []
    warnings_seen = list(dict.fromkeys([*own, *fitted.warnings, *(w[:300] for w in extra_warnings)]))[:10]
    return {
        "schemaVersion": layout.METADATA_SCHEMA_VERSION,
        "model": config.model.name,
        "version": version,
        "modelFormat": "skops",
        "modelUri": model_uri,
        "modelSha256": hashlib.sha256(model_bytes).hexdigest(),
        "modelSize": len(model_bytes),
        "histogramsUri": histograms_uri,
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
        "excludedFeatures": list(builtin.exclude_features),
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
        "split": {
            "method": fitted.split,
            "column": builtin.split.column,
            "holdoutFrom": fitted.holdout_start.isoformat() if fitted.holdout_start is not None else None,
            "untimedRows": untimed,
        },
        "evaluation": {
            "metric": builtin.metric,
            "higherIsBetter": higher_is_better(builtin.metric),
            "average": fitted.average,
            "holdoutRows": fitted.test_rows,
            "challenger": fitted.score,
            "champion": None
            if champion is None
            else {"version": champion.version, "score": champion.score, "error": champion.error},
        },
        "promotion": {
            "policy": {
                "minScore": promotion.min_score,
                "mustBeatChampion": promotion.must_beat_champion,
                "minImprovement": promotion.min_improvement,
            },
            # The gate as decided when this version was written; champion.json and promotions/ say
            # whether it became champion (another run may have moved the pointer in between).
            "gate": {"passed": verdict.passed, "reason": verdict.reason},
        },
        "rows": {
            "read": report["rowsRead"],
            "train": fitted.train_rows,
            "test": fitted.test_rows,
            "unlabelled": unlabelled,
            "dropped": dict(report["droppedRows"]),
        },
        "data": data.fingerprint,
        "libraries": _libraries(),
        "trainedAt": rfc3339(trained_at),
        "durationSeconds": duration,
        "resources": {
            "requested": _jsonable(dict(resources)) if resources is not None else None,
            "memoryEstimateMiB": memory.estimate_mib if memory is not None else None,
            "used": {
                "cpuSeconds": round(usage.ru_utime + usage.ru_stime, 3),
                # ru_maxrss is in KiB on Linux.
                "maxRssMiB": round(usage.ru_maxrss / 1024, 1),
            },
        },
        "warnings": warnings_seen,
        "run": {
            "policy": run.policy,
            "policyUid": run.policy_uid,
            "job": run.job,
            "trigger": run.trigger,
        },
    }


def _libraries() -> dict[str, str | None]:
    def version_of(name: str) -> str | None:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "retrainOperator": version_of("retrain-operator"),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "skops": version_of("skops"),
        "pyarrow": version_of("pyarrow"),
        "scipy": version_of("scipy"),
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
