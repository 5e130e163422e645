"""Where a model's versions, its champion and its promotion history live in object storage.

The trainer writes the registry and the operator (and serving code) reads it, usually from different
images and releases, so the key layout is defined once, here, as pure functions of a prefix and a
version id. Nothing in this module talks to storage (no boto3): it only names keys and checks names.

Layout under ``s3://<bucket>/<prefix>``::

    <prefix>versions/<version>/model.skops        the fitted scikit-learn Pipeline (skops), written 1st
    <prefix>versions/<version>/histograms.json    reference histograms of features and predictions, 2nd
    <prefix>versions/<version>/metadata.json      what was trained, on what, how well; written last
    <prefix>champion.json                         the pointer to the version in production
    <prefix>promotions/<generation>.json          one record per move of the pointer, newest 100 kept

Versions. ``metadata.json`` is the commit marker: a version folder without it is incomplete (a crash
part-way through) and readers must ignore it. Every object of a version is created with
``If-None-Match: *`` and never overwritten. A complete version that the champion pointer does not
name is a *candidate*: loadable, kept, and promotable later by ``retrain-operator train promote``.
Older versions written before the skops format hold ``model.joblib`` instead; a pickle can run any
code when loaded, so those are listed but never loaded or promoted (see :data:`LOADABLE_FORMATS`).

The champion pointer. ``champion.json`` is a small JSON document (:mod:`.champion`) naming the
version in production: ``version``, ``modelUri``, ``metric``, ``score``, ``trainedAt``,
``promotedAt``, ``action`` (``Train`` or ``Promote``), ``reason``, ``previous`` (the version it
replaced, or null) and ``generation`` (1 for the first champion, +1 on every move). It is only moved
after the version it names is complete, and only by a conditional write: ``If-Match`` with the ETag
the writer read, or ``If-None-Match: *`` when there was no champion. Of two writers that read the
same pointer, exactly one succeeds; the other re-reads and decides again. A crash at any point leaves
either the old pointer or the new one, each naming a complete version. No pointer means no champion
yet: the first model that passes the quality gate's minimum score becomes champion.

The promotion history. After each move the writer copies the new pointer document to
``promotions/<generation>.json`` (12 digits, zero-padded, so keys sort by generation) and deletes
records older than the newest :data:`PROMOTION_HISTORY_LIMIT`. The pointer is the truth; a record
missing after a crash between the two writes is written by the next writer, which first copies the
pointer it is about to replace.

Version ids are ``YYYYMMDDTHHMMSSZ-<8 hex>``: the UTC time the id was made, then a short hash of a
caller token (a Job name) or random hex. They sort by time as plain strings, so a listing of
``versions/`` is already in training order. Ids chosen elsewhere (by the operator) only have to be a
safe single path segment; see :func:`check_version_id`.

:data:`METADATA_SCHEMA_VERSION` is stored in every metadata file so readers can tell which fields to
expect (1: joblib versions without histograms; 2: skops, histograms, champion comparison).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Final, Literal

__all__ = [
    "CHAMPION_FILENAME",
    "HISTOGRAMS_FILENAME",
    "LOADABLE_FORMATS",
    "METADATA_FILENAME",
    "METADATA_SCHEMA_VERSION",
    "MODEL_FILENAMES",
    "PROMOTIONS_DIR",
    "PROMOTION_HISTORY_LIMIT",
    "VERSIONS_DIR",
    "ModelFormat",
    "champion_key",
    "check_prefix",
    "check_version_id",
    "generation_of_promotion_key",
    "histograms_key",
    "metadata_key",
    "model_format_of_key",
    "model_key",
    "new_version_id",
    "parse_s3_uri",
    "promotion_key",
    "promotions_prefix",
    "s3_uri",
    "version_of_key",
    "version_prefix",
    "version_time",
    "versions_prefix",
]

ModelFormat = Literal["skops", "joblib"]

VERSIONS_DIR: Final = "versions/"
PROMOTIONS_DIR: Final = "promotions/"
METADATA_FILENAME: Final = "metadata.json"
HISTOGRAMS_FILENAME: Final = "histograms.json"
CHAMPION_FILENAME: Final = "champion.json"
MODEL_FILENAMES: Final[dict[ModelFormat, str]] = {"skops": "model.skops", "joblib": "model.joblib"}
# Formats whose loading cannot run code from the file; joblib (pickle) can, so it is never loaded.
LOADABLE_FORMATS: Final[frozenset[ModelFormat]] = frozenset({"skops"})
METADATA_SCHEMA_VERSION: Final = 2
PROMOTION_HISTORY_LIMIT: Final = 100
_GENERATION_DIGITS: Final = 12

_TIME_FORMAT: Final = "%Y%m%dT%H%M%SZ"
_GENERATED_ID = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{8}$")
# One path segment, safe in S3 keys, URLs and Kubernetes label values (63 characters at most).
_VERSION_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^(?:[A-Za-z0-9!_.*()-]+/)*$")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is empty or a chain of ``segment/``; raise ValueError otherwise.

    The rule matches the CRD's pattern for ``spec.model.registry.prefix``; segments ``.`` and ``..``
    are refused as well, since some S3 gateways resolve them as paths.
    """
    if not _PREFIX.match(prefix) or any(part in {".", ".."} for part in prefix.split("/")[:-1]):
        raise ValueError(
            f"invalid registry prefix {prefix!r}: leave it empty, or use segments of letters, digits and "
            "!_.*()- (not . or ..), and it must end with '/', for example 'models/churn/'"
        )
    return prefix


def check_version_id(version: str) -> str:
    """Return ``version`` if it is a safe version id; raise ValueError otherwise.

    A version id is one path segment of 1 to 63 letters, digits, ``.``, ``_`` or ``-``, starting and
    ending with a letter or digit, so it can never escape its folder and fits a Kubernetes label.
    """
    if not _VERSION_ID.match(version):
        raise ValueError(
            f"invalid version id {version!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return version


def new_version_id(now: datetime, token: str | None = None) -> str:
    """Make a sortable, unique version id from an aware ``now`` and an optional ``token``.

    With a token (for example the Job name) the suffix is its hash, so the same Job at the same second
    yields the same id and a retried write collides instead of duplicating; without one it is random.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    stamp = now.astimezone(UTC).strftime(_TIME_FORMAT)
    if token is None:
        suffix = secrets.token_hex(4)
    else:
        suffix = hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]
    return f"{stamp}-{suffix}"


def version_time(version: str) -> datetime | None:
    """The UTC time encoded in a version id made by :func:`new_version_id`, or None for other ids."""
    match = _GENERATED_ID.match(version)
    if match is None:
        return None
    return datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=UTC)


def versions_prefix(prefix: str) -> str:
    """The folder that holds every version of the model: ``<prefix>versions/``."""
    return f"{check_prefix(prefix)}{VERSIONS_DIR}"


def version_prefix(prefix: str, version: str) -> str:
    """The folder of one version: ``<prefix>versions/<version>/``."""
    return f"{versions_prefix(prefix)}{check_version_id(version)}/"


def model_key(prefix: str, version: str, fmt: ModelFormat = "skops") -> str:
    """The key of a version's serialized model in format ``fmt``."""
    try:
        filename = MODEL_FILENAMES[fmt]
    except KeyError:
        raise ValueError(f"unknown model format {fmt!r}: use one of {sorted(MODEL_FILENAMES)}") from None
    return f"{version_prefix(prefix, version)}{filename}"


def metadata_key(prefix: str, version: str) -> str:
    """The key of a version's metadata, whose presence marks the version complete."""
    return f"{version_prefix(prefix, version)}{METADATA_FILENAME}"


def histograms_key(prefix: str, version: str) -> str:
    """The key of a version's reference histograms."""
    return f"{version_prefix(prefix, version)}{HISTOGRAMS_FILENAME}"


def model_format_of_key(key: str) -> ModelFormat | None:
    """The model format a key's file name stands for, or None if it is not a model file."""
    filename = key.rpartition("/")[2]
    for fmt, name in MODEL_FILENAMES.items():
        if filename == name:
            return fmt
    return None


def champion_key(prefix: str) -> str:
    """The key of the champion pointer: ``<prefix>champion.json``."""
    return f"{check_prefix(prefix)}{CHAMPION_FILENAME}"


def promotions_prefix(prefix: str) -> str:
    """The folder of the promotion history: ``<prefix>promotions/``."""
    return f"{check_prefix(prefix)}{PROMOTIONS_DIR}"


def promotion_key(prefix: str, generation: int) -> str:
    """The key of the history record of pointer ``generation`` (1 or more), zero-padded to sort."""
    if generation < 1 or generation >= 10**_GENERATION_DIGITS:
        raise ValueError(f"invalid champion generation {generation}: expected 1 to {10**_GENERATION_DIGITS - 1}")
    return f"{promotions_prefix(prefix)}{generation:0{_GENERATION_DIGITS}d}.json"


def generation_of_promotion_key(prefix: str, key: str) -> int | None:
    """The generation a promotion record's key names, or None for any other key."""
    base = promotions_prefix(prefix)
    name = key[len(base) :] if key.startswith(base) else ""
    stem, dot, ext = name.partition(".")
    if not dot or ext != "json" or len(stem) != _GENERATION_DIGITS or not stem.isdigit() or int(stem) < 1:
        return None
    return int(stem)


def version_of_key(prefix: str, key: str) -> str | None:
    """The version id a key belongs to, or None if the key is not inside a version folder."""
    base = versions_prefix(prefix)
    if not key.startswith(base):
        return None
    version, sep, _ = key[len(base) :].partition("/")
    if not sep or not _VERSION_ID.match(version):
        return None
    return version


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``, the form written to metadata and the termination message."""
    if not bucket or "/" in bucket:
        raise ValueError(f"invalid bucket name {bucket!r}")
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; raise ValueError for anything else."""
    scheme, sep, rest = uri.partition("://")
    bucket, slash, key = rest.partition("/")
    if scheme != "s3" or not sep or not bucket or not slash or not key:
        raise ValueError(f"invalid S3 URI {uri!r}: expected s3://bucket/key")
    return bucket, key
