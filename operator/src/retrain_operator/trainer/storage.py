"""The trainer's only door to S3-compatible storage: read the data, check a version folder, write new objects.

The run logic talks to :class:`ObjectStore`, a four-method interface, so it can be exercised against any
S3 server or a fake; :class:`S3Store` is the boto3 implementation. Errors come out as
:class:`StoreError` with a small set of kinds (``NotFound``, ``NoSuchBucket``, ``AccessDenied``,
``AlreadyExists``, ``Unavailable``, ``Other``); the caller knows whether it was reading data or writing
the registry and picks the reason the user sees.

Writes use ``If-None-Match: *`` so an existing object is never replaced, even by a concurrent writer
that passed the same emptiness check; servers that ignore the header still get the check.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` from the
policy's Secret, or a web identity). The registry's ``endpoint`` wins over ``AWS_ENDPOINT_URL``; with a
custom endpoint, path-style addressing is used, which every S3-compatible server accepts.

Limits: whole objects are read into memory (the data must fit in the Job's memory limit) and written
in one PUT (5 GiB at most per object).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import boto3
import botocore.exceptions
from botocore.config import Config

from retrain_operator.trainer.config import RegistryConfig

# boto3 ships no type hints; the client is dynamic.
S3Client = Any

__all__ = ["ErrorKind", "ObjectInfo", "ObjectStore", "S3Store", "StoreError"]

ErrorKind = Literal["NotFound", "NoSuchBucket", "AccessDenied", "AlreadyExists", "Unavailable", "Other"]

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class StoreError(Exception):
    """A storage call failed; ``kind`` says how, ``detail`` is the server's own words."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: ErrorKind = kind
        self.detail = detail


@dataclass(frozen=True)
class ObjectInfo:
    """What identifies the bytes that were read, for the data fingerprint."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime | None


class ObjectStore(Protocol):
    """The storage operations the trainer needs."""

    def read(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
        """Read a whole object."""
        ...

    def first_key(self, bucket: str, prefix: str) -> str | None:
        """Any one key under ``prefix``, or None if there is none."""
        ...

    def put_new(self, bucket: str, key: str, body: bytes, *, content_type: str) -> None:
        """Create an object; StoreError ``AlreadyExists`` if the key is taken."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object this run created."""
        ...


class S3Store:
    """:class:`ObjectStore` over boto3."""

    def __init__(self, client: S3Client) -> None:
        self._client = client

    @classmethod
    def from_config(cls, registry: RegistryConfig, env: Mapping[str, str] | None = None) -> S3Store:
        env = os.environ if env is None else env
        endpoint = registry.endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        config = Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path"} if endpoint else None,
        )
        # Keys from ``env`` are passed explicitly so the mapping given here is the one used; without them
        # boto3 falls back to its own chain (web identity, instance roles, config files).
        keys = {}
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            keys = {
                "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
                "aws_session_token": env.get("AWS_SESSION_TOKEN") or None,
            }
        session = boto3.session.Session()
        client = session.client("s3", region_name=registry.region, endpoint_url=endpoint, config=config, **keys)
        return cls(client)

    def read(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
        with _translated():
            response = self._client.get_object(Bucket=bucket, Key=key)
            body = response["Body"].read()
        info = ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(body),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=response.get("LastModified"),
        )
        return body, info

    def first_key(self, bucket: str, prefix: str) -> str | None:
        with _translated():
            response = self._client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        contents = response.get("Contents") or []
        return str(contents[0]["Key"]) if contents else None

    def put_new(self, bucket: str, key: str, body: bytes, *, content_type: str) -> None:
        with _translated():
            self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")

    def delete(self, bucket: str, key: str) -> None:
        with _translated():
            self._client.delete_object(Bucket=bucket, Key=key)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        raise StoreError(_kind(code, status), f"{code}: {error.get('Message') or 'no message'}") from exc
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
        raise StoreError("AccessDenied", f"no usable credentials: {exc}") from exc
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError) as exc:
        raise StoreError("Unavailable", str(exc)) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise StoreError("Other", str(exc)) from exc


def _kind(code: str, status: str) -> ErrorKind:
    if code in _NO_BUCKET:
        return "NoSuchBucket"
    if code in _NOT_FOUND:
        return "NotFound"
    if code in _DENIED or status == "403":
        return "AccessDenied"
    if code in _CONFLICT or status == "412":
        return "AlreadyExists"
    if status.startswith("5") or code in {"SlowDown", "ServiceUnavailable", "InternalError"}:
        return "Unavailable"
    return "Other"
