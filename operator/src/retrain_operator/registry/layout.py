"""Where a model's versions live in object storage, shared by the trainer and the operator.

The trainer writes a version and the operator reads it, usually from different images and releases, so
the key layout is defined once, here, as pure functions of a prefix and a version id. Nothing in this
module talks to storage (no boto3): it only names keys and checks the names it is given.

Layout under ``s3://<bucket>/<prefix>``::

    <prefix>versions/<version>/model.joblib     the fitted scikit-learn Pipeline, written first
    <prefix>versions/<version>/metadata.json    what was trained, on what, how well; written last

``metadata.json`` is the commit marker: a version folder without it is incomplete (a crash between the
two writes) and readers must ignore it. A version folder is written once and never overwritten.

Version ids are ``YYYYMMDDTHHMMSSZ-<8 hex>``: the UTC time the id was made, then a short hash of a
caller token (a Job name) or random hex. They sort by time as plain strings, so a listing of
``versions/`` is already in training order. Ids chosen elsewhere (by the operator) only have to be a
safe single path segment; see :func:`check_version_id`.

Limits and extension points: only the ``joblib`` model format exists today; :data:`MODEL_FILENAMES`
maps a format to its file so another format is one more entry. Files that concern the model as a whole
rather than one version (a champion pointer, a promotion history) belong next to ``versions/``, at
``<prefix><name>``, never inside a version folder. :data:`METADATA_SCHEMA_VERSION` is stored in every
metadata file so readers can tell which fields to expect.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Final, Literal

__all__ = [
    "METADATA_FILENAME",
    "METADATA_SCHEMA_VERSION",
    "MODEL_FILENAMES",
    "VERSIONS_DIR",
    "ModelFormat",
    "check_prefix",
    "check_version_id",
    "metadata_key",
    "model_key",
    "new_version_id",
    "parse_s3_uri",
    "s3_uri",
    "version_of_key",
    "version_prefix",
    "version_time",
    "versions_prefix",
]

ModelFormat = Literal["joblib"]

VERSIONS_DIR: Final = "versions/"
METADATA_FILENAME: Final = "metadata.json"
MODEL_FILENAMES: Final[dict[ModelFormat, str]] = {"joblib": "model.joblib"}
METADATA_SCHEMA_VERSION: Final = 1

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
            f"invalid registry prefix {prefix!r}: use empty or segments of letters, digits and !_.*()- "
            "each ending in '/', for example 'models/churn/'"
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


def model_key(prefix: str, version: str, fmt: ModelFormat = "joblib") -> str:
    """The key of a version's serialized model in format ``fmt``."""
    try:
        filename = MODEL_FILENAMES[fmt]
    except KeyError:
        raise ValueError(f"unknown model format {fmt!r}: use one of {sorted(MODEL_FILENAMES)}") from None
    return f"{version_prefix(prefix, version)}{filename}"


def metadata_key(prefix: str, version: str) -> str:
    """The key of a version's metadata, whose presence marks the version complete."""
    return f"{version_prefix(prefix, version)}{METADATA_FILENAME}"


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
