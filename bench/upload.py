"""Upload benchmark: the trainer's model upload path against plain boto3 defaults, on one real S3 server.

Starts SeaweedFS (``weed mini``, as the tests do) on the loopback interface, makes one artifact of
random bytes (incompressible, like a compressed model), and uploads it alternately with

* boto3's defaults: ``client.upload_fileobj`` with the default TransferConfig (8 MiB parts, 10
  threads), and
* the trainer's path: ``S3Store.put_new`` (its tuned TransferConfig, and If-None-Match on completion),

to a new key each time, deleting it afterwards. Alternating rounds share whatever the machine and the
server are doing, so the medians are comparable. Figures, not assertions:
``python bench/upload.py --size-mib 128 --rounds 5``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "operator" / "src")]

from retrain_operator.settings.training import StoreSpec  # noqa: E402
from retrain_operator.trainer.storage import TRANSFER_CONFIG, S3Store  # noqa: E402
from sandbox.s3 import S3Server, start_seaweedfs  # noqa: E402

BUCKET = "bench-upload"
MIB = 1024 * 1024


class _Requests:
    """Counts the HTTP requests a client sends."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, **_: object) -> None:
        self.count += 1


def _default_upload(server: S3Server, requests: _Requests) -> Callable[[str, bytes], None]:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(s3={"addressing_style": "path"}),
    )
    client.meta.events.register("before-send.s3", requests)

    def upload(key: str, body: bytes) -> None:
        client.upload_fileobj(io.BytesIO(body), BUCKET, key, Config=TransferConfig())

    return upload


def _trainer_upload(server: S3Server, requests: _Requests) -> Callable[[str, bytes], None]:
    env = {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
    store = S3Store.from_config(StoreSpec(name="bench", endpoint=server.endpoint, region=server.region), env)
    store._client.meta.events.register("before-send.s3", requests)

    def upload(key: str, body: bytes) -> None:
        store.put_new(BUCKET, key, body, content_type="application/octet-stream")

    return upload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128, help="artifact size in MiB (default 128)")
    parser.add_argument("--rounds", type=int, default=5, help="uploads per path, alternating (default 5)")
    args = parser.parse_args(argv)
    body = os.urandom(args.size_mib * MIB)
    with (
        tempfile.TemporaryDirectory(prefix="bench-upload-") as workdir,
        start_seaweedfs(Path(workdir), stop_timeout=2.0) as server,
    ):
        admin = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )
        admin.create_bucket(Bucket=BUCKET)
        requests = {"boto3 defaults": _Requests(), "trainer upload": _Requests()}
        paths = {
            "boto3 defaults": _default_upload(server, requests["boto3 defaults"]),
            "trainer upload": _trainer_upload(server, requests["trainer upload"]),
        }
        rates: dict[str, list[float]] = {name: [] for name in paths}
        sent: dict[str, int] = {}
        # One unmeasured full-size upload each warms connections and lets the server grow its volumes.
        for name, upload in paths.items():
            upload(f"warm-{name.replace(' ', '-')}", body)
        for round_ in range(args.rounds):
            order = list(paths.items()) if round_ % 2 == 0 else list(reversed(paths.items()))
            for name, upload in order:
                key = f"{name.replace(' ', '-')}/{round_}"
                before = requests[name].count
                started = time.perf_counter()
                upload(key, body)
                elapsed = time.perf_counter() - started
                sent[name] = requests[name].count - before
                rates[name].append(len(body) / elapsed / 1e6)
                admin.delete_object(Bucket=BUCKET, Key=key)
    defaults = TransferConfig()
    describe = {
        "boto3 defaults": f"{defaults.multipart_chunksize // MIB} MiB parts x {defaults.max_concurrency} threads",
        "trainer upload": f"{TRANSFER_CONFIG.multipart_chunksize // MIB} MiB parts x "
        f"{TRANSFER_CONFIG.max_concurrency} threads, If-None-Match",
    }
    print(f"artifact {args.size_mib} MiB of random bytes, SeaweedFS on 127.0.0.1, {args.rounds} rounds each")
    print(f"{'path':<16} {'median MB/s':>12} {'min':>8} {'max':>8} {'requests':>9}  transfer")
    medians = {}
    for name, values in rates.items():
        medians[name] = statistics.median(values)
        print(
            f"{name:<16} {medians[name]:>12.1f} {min(values):>8.1f} {max(values):>8.1f} {sent[name]:>9}  "
            f"{describe[name]}"
        )
    print(f"ratio trainer/defaults (median MB/s): {medians['trainer upload'] / medians['boto3 defaults']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
