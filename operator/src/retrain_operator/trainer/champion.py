"""Read the champion, read a stored version, and move the champion pointer safely; the ``promote`` command.

Every move of the pointer is a conditional write against the state the writer read
(:meth:`~.storage.ObjectStore.put_if`): when another writer got there first the move fails with
:class:`ChampionMoved`, and the caller re-reads and decides again instead of overwriting a decision
it never saw. The pointer only ever names a version that :func:`read_version` found complete and,
for ``promote``, loadable with trusted types only.

The promotion history is written after the pointer (the pointer is the truth): first the record of
the pointer being replaced, if a crash left it unwritten, then the new one; then records beyond
:data:`~retrain_operator.registry.layout.PROMOTION_HISTORY_LIMIT` are deleted. History and pruning
failures are logged, never fatal: the promotion has already happened.

Limits: versions written before the skops format (``model.joblib``) are refused as champions
(UnsupportedModelFormat), since loading a pickle could run any code. When there is no pointer, old
joblib versions are not considered: the first skops model that passes the gate becomes champion.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from retrain_operator.registry import layout
from retrain_operator.registry.champion import Action, ChampionPointer, encode_pointer, parse_pointer
from retrain_operator.settings.training import RegistrySpec, RunSpec
from retrain_operator.trainer.errors import RegistryError
from retrain_operator.trainer.modelio import load_model
from retrain_operator.trainer.storage import ObjectStore, StoreError, registry_error

__all__ = [
    "MOVE_ATTEMPTS",
    "ChampionMoved",
    "ChampionState",
    "PromoteResult",
    "StoredVersion",
    "move_champion",
    "new_pointer",
    "promote",
    "read_champion",
    "read_version",
]

logger = logging.getLogger(__name__)

# A writer that loses the race this many times in a row gives up; more means a misbehaving writer.
MOVE_ATTEMPTS: Final = 3


class ChampionMoved(Exception):
    """Another writer moved the champion pointer after it was read."""


@dataclass(frozen=True)
class ChampionState:
    """The pointer as read (None when there is no champion yet) and the ETag to write against.

    ``invalid`` says why an existing pointer could not be read (only :func:`promote` goes on with one,
    to repair it); ``generation`` is then the newest generation in the promotion history.
    """

    pointer: ChampionPointer | None
    etag: str | None
    invalid: str | None = None
    generation: int = 0


@dataclass(frozen=True)
class StoredVersion:
    """A complete version: its metadata and its model file's bytes, checked against the metadata."""

    version: str
    metadata: dict[str, Any]
    model_key: str
    model_bytes: bytes


@dataclass(frozen=True)
class PromoteResult:
    """What the ``promote`` command reports."""

    pointer: ChampionPointer
    previous: ChampionPointer | None
    changed: bool


def read_champion(store: ObjectStore, registry: RegistrySpec, *, repair: bool = False) -> ChampionState:
    """The current champion pointer; InvalidChampion when it exists but cannot be read, unless ``repair``."""
    key = layout.champion_key(registry.prefix)
    where = layout.s3_uri(registry.bucket, key)
    try:
        body, info = store.read(registry.bucket, key)
    except StoreError as exc:
        if exc.kind == "NotFound":
            return ChampionState(pointer=None, etag=None)
        raise registry_error(exc, f"reading {where}") from None
    try:
        pointer = parse_pointer(body)
    except ValueError as exc:
        if repair:
            return ChampionState(pointer=None, etag=info.etag, invalid=str(exc), generation=_newest(store, registry))
        raise RegistryError(
            "InvalidChampion",
            f"{where} is not a valid champion pointer ({exc}); name the version to serve with "
            "'retrain-operator train promote --version V', which replaces it",
        ) from None
    return ChampionState(pointer=pointer, etag=info.etag, generation=pointer.generation)


def read_version(store: ObjectStore, registry: RegistrySpec, version: str) -> StoredVersion:
    """Read a version's metadata and model; refuse missing, incomplete or unloadable-format versions."""
    bucket, prefix = registry.bucket, registry.prefix
    folder = layout.s3_uri(bucket, layout.version_prefix(prefix, version))
    metadata_key = layout.metadata_key(prefix, version)
    try:
        body, _ = store.read(bucket, metadata_key)
    except StoreError as exc:
        if exc.kind != "NotFound":
            raise registry_error(exc, f"reading {layout.s3_uri(bucket, metadata_key)}") from None
        try:
            anything = store.first_key(bucket, layout.version_prefix(prefix, version))
        except StoreError as listing:
            raise registry_error(listing, f"listing {folder}") from None
        if anything is None:
            raise RegistryError(
                "VersionNotFound", f"version {version} does not exist (nothing under {folder})"
            ) from None
        raise RegistryError(
            "VersionIncomplete",
            f"version {version} is incomplete: {folder} has no {layout.METADATA_FILENAME}, so it was never completely "
            "written; it cannot be champion",
        ) from None
    try:
        metadata = json.loads(body)
        if not isinstance(metadata, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryError("VersionIncomplete", f"version {version}: metadata.json is unreadable ({exc})") from None
    fmt = metadata.get("modelFormat")
    if fmt not in layout.MODEL_FILENAMES:
        raise RegistryError("VersionIncomplete", f"version {version}: metadata.json names no known modelFormat")
    if fmt not in layout.LOADABLE_FORMATS:
        raise RegistryError(
            "UnsupportedModelFormat",
            f"version {version} holds a {fmt} model, which is never loaded because loading it could run any code; "
            "retrain to get a skops version",
        )
    model_key = layout.model_key(prefix, version, cast(layout.ModelFormat, fmt))
    try:
        model_bytes, _ = store.read(bucket, model_key)
    except StoreError as exc:
        if exc.kind == "NotFound":
            raise RegistryError(
                "VersionIncomplete", f"version {version}: its model {layout.s3_uri(bucket, model_key)} is missing"
            ) from None
        raise registry_error(exc, f"reading {layout.s3_uri(bucket, model_key)}") from None
    expected = metadata.get("modelSha256")
    if isinstance(expected, str) and hashlib.sha256(model_bytes).hexdigest() != expected:
        raise RegistryError(
            "VersionIncomplete",
            f"version {version}: {layout.s3_uri(bucket, model_key)} does not match the sha256 in its metadata",
        )
    return StoredVersion(version=version, metadata=metadata, model_key=model_key, model_bytes=model_bytes)


def new_pointer(
    stored: StoredVersion,
    *,
    registry: RegistrySpec,
    state: ChampionState,
    action: Action,
    reason: str,
    promoted_at: str,
    run: RunSpec,
) -> ChampionPointer:
    """The pointer that names ``stored`` after ``state``."""
    metadata = stored.metadata
    score = metadata.get("score")
    return ChampionPointer(
        version=stored.version,
        model_uri=layout.s3_uri(registry.bucket, stored.model_key),
        metric=str(metadata.get("metric") or ""),
        score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
        trained_at=metadata.get("trainedAt") if isinstance(metadata.get("trainedAt"), str) else None,
        promoted_at=promoted_at,
        action=action,
        reason=reason,
        previous=state.pointer.version if state.pointer else None,
        generation=state.generation + 1,
        run={"policy": run.policy, "policyUid": run.policy_uid, "job": run.job, "trigger": run.trigger},
    )


def move_champion(
    store: ObjectStore, registry: RegistrySpec, *, state: ChampionState, pointer: ChampionPointer
) -> None:
    """Replace the pointer ``state`` with ``pointer``; ChampionMoved if it changed since it was read."""
    bucket, prefix = registry.bucket, registry.prefix
    if state.pointer is not None:
        _record(store, registry, state.pointer)
    key = layout.champion_key(prefix)
    try:
        store.put_if(bucket, key, encode_pointer(pointer), content_type="application/json", etag=state.etag)
    except StoreError as exc:
        if exc.kind == "Conflict":
            raise ChampionMoved(exc.detail) from None
        raise registry_error(exc, f"writing {layout.s3_uri(bucket, key)}") from None
    logger.info("champion is now %s (generation %d)", pointer.version, pointer.generation)
    _record(store, registry, pointer)
    _prune(store, registry, newest=pointer.generation)


def promote(
    *,
    store: ObjectStore,
    registry: RegistrySpec,
    version: str,
    run: RunSpec,
    allowlist: tuple[str, ...],
    clock: Callable[[], datetime],
    stamp: Callable[[datetime], str],
) -> PromoteResult:
    """Make an existing complete version the champion (a rollback, or a candidate chosen by a person)."""
    stored = read_version(store, registry, version)
    # Loading proves the file is whole and holds only trusted types before production points at it.
    load_model(stored.model_bytes, allowlist=allowlist, source=layout.s3_uri(registry.bucket, stored.model_key))
    for _ in range(MOVE_ATTEMPTS):
        state = read_champion(store, registry, repair=True)
        if state.pointer is not None and state.pointer.version == version:
            return PromoteResult(pointer=state.pointer, previous=state.pointer, changed=False)
        was = state.pointer.version if state.pointer else "an unreadable pointer" if state.invalid else "no champion"
        pointer = new_pointer(
            stored,
            registry=registry,
            state=state,
            action="Promote",
            reason=f"promoted by command (was {was})" + (f"; job {run.job}" if run.job else ""),
            promoted_at=stamp(clock()),
            run=run,
        )
        try:
            move_champion(store, registry, state=state, pointer=pointer)
        except ChampionMoved:
            continue
        return PromoteResult(pointer=pointer, previous=state.pointer, changed=True)
    raise RegistryError(
        "ChampionConflict",
        f"the champion pointer changed {MOVE_ATTEMPTS} times while promoting {version}; another writer is busy, retry",
    )


def _record(store: ObjectStore, registry: RegistrySpec, pointer: ChampionPointer) -> None:
    key = layout.promotion_key(registry.prefix, pointer.generation)
    try:
        store.put_new(registry.bucket, key, encode_pointer(pointer), content_type="application/json")
    except StoreError as exc:
        if exc.kind != "AlreadyExists":
            logger.warning("could not record promotion %s: %s", layout.s3_uri(registry.bucket, key), exc.detail)


def _newest(store: ObjectStore, registry: RegistrySpec) -> int:
    """The newest generation in the promotion history, so a repaired pointer continues its count."""
    folder = layout.promotions_prefix(registry.prefix)
    try:
        listing = store.list(registry.bucket, folder)
    except StoreError as exc:
        raise registry_error(exc, f"listing {layout.s3_uri(registry.bucket, folder)}") from None
    generations = [layout.generation_of_promotion_key(registry.prefix, info.key) for info in listing]
    return max((g for g in generations if g is not None), default=0)


def _prune(store: ObjectStore, registry: RegistrySpec, *, newest: int) -> None:
    oldest_kept = newest - layout.PROMOTION_HISTORY_LIMIT + 1
    try:
        for info in store.list(registry.bucket, layout.promotions_prefix(registry.prefix)):
            generation = layout.generation_of_promotion_key(registry.prefix, info.key)
            if generation is not None and generation < oldest_kept:
                store.delete(registry.bucket, info.key)
    except StoreError as exc:
        logger.warning("could not prune the promotion history: %s", exc.detail)
