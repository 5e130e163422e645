"""The trainer's only door to S3-compatible storage: read and list data, write versions, move the pointer.

The run logic talks to :class:`ObjectStore`, a six-method interface, so it can be exercised against any
S3 server or a wrapper that injects failures; :class:`S3Store` is the boto3 implementation. Errors come
out as :class:`StoreError` with a small set of kinds (``NotFound``, ``NoSuchBucket``, ``AccessDenied``,
``AlreadyExists``, ``Conflict``, ``Unavailable``, ``Other``); the caller knows whether it was reading
data or writing the registry and picks the reason the user sees.

New objects are written with ``If-None-Match: *`` so an existing object is never replaced, even by a
concurrent writer that passed the same emptiness check. The champion pointer is replaced only with
``If-Match: <ETag read>`` (or ``If-None-Match: *`` when there was none), so of two writers that read the
same pointer only one can move it; the other gets ``Conflict``. SeaweedFS (4.x) and AWS S3 honour both
headers on PutObject and ``If-None-Match`` on CompleteMultipartUpload, answering 412; a server that
ignores them loses that protection (the version-folder check before training still holds).

Objects of :data:`TRANSFER_CONFIG`'s threshold or more (large models) go up as a multipart upload
through boto3's transfer manager, with fewer, larger parts and fewer threads than boto3's default;
``bench/upload.py`` measures the two side by side. The transfer manager cannot pass ``If-None-Match``,
so this store adds it to every CompleteMultipartUpload its client sends; the client is the store's own.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` from the
Secret the ModelStore names, or a web identity). The endpoint is the ModelStore's, from the
configuration's ``store`` section: when it names a store, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``
from the environment are ignored, so no variable can send the trainer elsewhere. Only a configuration
without a store (a run by hand) falls back to them. Addressing ``auto`` is path-style with a custom
endpoint, which every S3-compatible server accepts.

Limits: whole objects are read into memory (the data must fit in the Job's memory limit); a multipart
upload keeps up to 64 MiB of part copies in flight besides the model's own bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from retrain_operator.settings.training import StoreSpec
from retrain_operator.trainer.errors import StorageError

# boto3 ships no type hints; the client is dynamic.
S3Client = Any

__all__ = ["TRANSFER_CONFIG", "ErrorKind", "ObjectInfo", "ObjectStore", "S3Store", "StoreError", "registry_error"]

ErrorKind = Literal["NotFound", "NoSuchBucket", "AccessDenied", "AlreadyExists", "Conflict", "Unavailable", "Other"]

_MiB = 1024 * 1024
# Below 32 MiB (most models) one conditional PUT, so nothing is ever half-uploaded; above, 16 MiB parts
# on 4 threads with at most 4 parts read ahead: half the requests of boto3's default (8 MiB x 10
# threads, 10 parts read ahead) and at most 64 MiB of copies in flight, for a Job's small CPU and
# memory limits. On a loopback SeaweedFS the server bounds throughput; see bench/upload.py.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=32 * _MiB,
    multipart_chunksize=16 * _MiB,
    max_concurrency=4,
    use_threads=True,
)
# boto3's constructor does not take it; the transfer manager reads the attribute.
TRANSFER_CONFIG.max_in_memory_upload_chunks = 4

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

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix``, in key order."""
        ...

    def put_new(self, bucket: str, key: str, body: bytes, *, content_type: str) -> None:
        """Create an object; StoreError ``AlreadyExists`` if the key is taken."""
        ...

    def put_if(self, bucket: str, key: str, body: bytes, *, content_type: str, etag: str | None) -> None:
        """Replace an object only if its ETag is still ``etag`` (create only if absent when None);
        StoreError ``Conflict`` otherwise."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object this run created."""
        ...


class S3Store:
    """:class:`ObjectStore` over boto3."""

    def __init__(self, client: S3Client, *, transfer: TransferConfig = TRANSFER_CONFIG) -> None:
        self._client = client
        self._transfer = transfer
        client.meta.events.register(
            "before-parameter-build.s3.CompleteMultipartUpload", _create_only, unique_id="retrain-create-only"
        )

    @classmethod
    def from_config(cls, store: StoreSpec, env: Mapping[str, str] | None = None) -> S3Store:
        env = os.environ if env is None else env
        endpoint = store.endpoint
        if endpoint is None and store.name is None:
            endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        style = store.addressing_style
        if style == "auto":
            style = "path" if endpoint else "auto"
        config = Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": style},
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
        client = session.client("s3", region_name=store.region, endpoint_url=endpoint, config=config, **keys)
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

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        with _translated():
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents") or []:
                    found.append(
                        ObjectInfo(
                            bucket=bucket,
                            key=str(item["Key"]),
                            size=int(item.get("Size", 0)),
                            etag=str(item.get("ETag", "")).strip('"'),
                            last_modified=item.get("LastModified"),
                        )
                    )
        return sorted(found, key=lambda info: info.key)

    def put_new(self, bucket: str, key: str, body: bytes, *, content_type: str) -> None:
        if len(body) < self._transfer.multipart_threshold:
            with _translated():
                self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
            return
        with _translated():
            self._client.upload_fileobj(
                io.BytesIO(body), bucket, key, ExtraArgs={"ContentType": content_type}, Config=self._transfer
            )

    def put_if(self, bucket: str, key: str, body: bytes, *, content_type: str, etag: str | None) -> None:
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": f'"{etag}"'}
        try:
            with _translated():
                self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, **condition)
        except StoreError as exc:
            # 412 (or 404 for If-Match on a key someone deleted) means another writer moved it first.
            if exc.kind in {"AlreadyExists", "NotFound"}:
                raise StoreError("Conflict", exc.detail) from exc
            raise

    def delete(self, bucket: str, key: str) -> None:
        with _translated():
            self._client.delete_object(Bucket=bucket, Key=key)


def _create_only(params: dict[str, Any], **_: Any) -> None:
    params.setdefault("IfNoneMatch", "*")


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except boto3.exceptions.S3UploadFailedError as exc:
        # The transfer manager wraps the ClientError of a failed part or completion in text only.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, botocore.exceptions.ClientError):
            with _translated():
                raise cause from None
        text = str(exc)
        raise StoreError("AlreadyExists" if "PreconditionFailed" in text else "Other", text) from exc
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


def registry_error(exc: StoreError, action: str) -> StorageError:
    """The StorageError a user sees when ``action`` (``writing s3://...``) failed with ``exc``."""
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
