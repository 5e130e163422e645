"""The champion/challenger gate, rollback and crash safety end to end against a real S3 server (SeaweedFS).

Each test trains on scikit-learn's bundled data sets written to a bucket of its own and checks what the
operator and serving code rely on: the termination message, the champion pointer, the promotion
history, and that every version the registry names is complete and loadable with trusted types only.
"""

from __future__ import annotations

import io
import json
import os
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from boto3.s3.transfer import TransferConfig
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.preprocessing import FunctionTransformer

from retrain_operator.registry import layout
from retrain_operator.registry.champion import encode_pointer, parse_pointer
from retrain_operator.trainer.champion import ChampionMoved, move_champion, new_pointer, read_champion, read_version
from retrain_operator.trainer.config import parse_config
from retrain_operator.trainer.errors import StorageError
from retrain_operator.trainer.fit import DEFAULT_ALLOWLIST
from retrain_operator.trainer.main import main
from retrain_operator.trainer.modelio import dump_model, load_model
from retrain_operator.trainer.run import train
from retrain_operator.trainer.storage import ObjectInfo, S3Store, StoreError
from sandbox.s3 import S3Server
from tests.support.s3 import drop_buckets, new_bucket, s3_client

FEATURES = list(load_breast_cancer().feature_names)


@cache
def cancer_frame() -> pd.DataFrame:
    """Breast cancer data with a daily time column, oldest first."""
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    days = pd.date_range("2026-01-01", periods=len(frame), freq="D", tz="UTC")
    frame.insert(0, "ts", days.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return frame


def csv(frame: pd.DataFrame) -> bytes:
    return str(frame.to_csv(index=False)).encode()


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def mislabelled() -> pd.DataFrame:
    """A labelling bug inverted the labels of every row but the newest 20% (which the time split holds out)."""
    frame = cancer_frame().copy()
    old = len(frame) - len(frame) // 5
    frame.loc[: old - 1, "label"] = 1 - frame.loc[: old - 1, "label"]
    return frame


@cache
def diabetes_frame() -> pd.DataFrame:
    return load_diabetes(as_frame=True, scaled=False).frame


class Crash(BaseException):
    """Stands for the process dying: no except clause of the trainer catches it."""


@dataclass
class Registry:
    """One test's bucket, with helpers to train, promote and look at the registry."""

    server: S3Server
    client: Any
    bucket: str
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def keys(self, prefix: str = "") -> list[str]:
        response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in response.get("Contents", []))

    def snapshot(self) -> dict[str, bytes]:
        return {key: self.get(key) for key in self.keys()}

    def champion(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.get("m/champion.json"))
        return document

    def metadata(self, version: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.get(layout.metadata_key("m/", version)))
        return document

    def model(self, version: str) -> Any:
        key = layout.model_key("m/", version)
        return load_model(self.get(key), allowlist=DEFAULT_ALLOWLIST, source=key)

    def config(
        self, *, data: dict[str, Any] | None = None, version: str | None = None, **builtin: Any
    ) -> dict[str, Any]:
        promotion = builtin.pop("promotion", {})
        settings: dict[str, Any] = {
            "data": data or {"key": "train.csv"},
            "target": "label",
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"max_iter": 2000},
            **builtin,
        }
        if not {"features", "excludeFeatures", "split"} & set(builtin) and settings["target"] == "label":
            settings["excludeFeatures"] = ["ts"]
        return {
            "model": {
                "name": "m",
                "registry": {"store": "test", "bucket": self.bucket, "prefix": "m/"},
            },
            "store": {"name": "test", "endpoint": self.server.endpoint},
            "builtin": settings,
            "promotion": promotion,
            "run": {"policy": "ns/m", "job": f"job-{version or 'x'}", "trigger": "test", "version": version},
        }

    def environ(self, **extra: str) -> None:
        for name, value in {
            "AWS_ACCESS_KEY_ID": self.server.access_key,
            "AWS_SECRET_ACCESS_KEY": self.server.secret_key,
            "TERMINATION_MESSAGE_PATH": str(self.tmp_path / "termination-log"),
            **extra,
        }.items():
            self.monkeypatch.setenv(name, value)

    def main(self, config: dict[str, Any], argv: list[str] | None = None) -> tuple[int, dict[str, Any]]:
        self.environ()
        self.monkeypatch.setenv("RETRAIN_TRAINER_CONFIG", json.dumps(config))
        code = main(argv or [])
        raw = (self.tmp_path / "termination-log").read_bytes()
        assert len(raw) < 4096 and b"\n" not in raw.strip()
        message: dict[str, Any] = json.loads(raw)
        return code, message

    def promote(self, version: str) -> tuple[int, dict[str, Any]]:
        return self.main(self.config(), ["promote", "--version", version])

    def store(self) -> S3Store:
        self.environ()
        return S3Store.from_config(parse_config(self.config()).store)


@pytest.fixture
def registry(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    for name in list(os.environ):
        if name.startswith(("AWS_", "RETRAIN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = s3_client(s3_server)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    yield Registry(s3_server, client, new_bucket(client), tmp_path, monkeypatch)
    drop_buckets(client, existing)


class Wrapped:
    """An S3 store that runs ``before_pointer`` just before each write of the champion pointer."""

    def __init__(self, inner: S3Store, before_pointer: Callable[[], None]) -> None:
        self.inner = inner
        self.before_pointer = before_pointer

    def read(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
        return self.inner.read(bucket, key)

    def first_key(self, bucket: str, prefix: str) -> str | None:
        return self.inner.first_key(bucket, prefix)

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        return self.inner.list(bucket, prefix)

    def put_new(self, bucket: str, key: str, body: bytes, *, content_type: str) -> None:
        self.inner.put_new(bucket, key, body, content_type=content_type)

    def put_if(self, bucket: str, key: str, body: bytes, *, content_type: str, etag: str | None) -> None:
        if key.endswith(layout.CHAMPION_FILENAME):
            self.before_pointer()
        self.inner.put_if(bucket, key, body, content_type=content_type, etag=etag)

    def delete(self, bucket: str, key: str) -> None:
        self.inner.delete(bucket, key)


# --- champion and challenger ---------------------------------------------------------------------


def test_first_model_is_promoted_and_a_worse_one_is_kept_as_candidate(registry: Registry) -> None:
    # A registry from before the skops format: its joblib version is never loaded and is not a champion.
    registry.put("m/versions/old/model.joblib", b"a pickle")
    registry.put("m/versions/old/metadata.json", b'{"modelFormat": "joblib", "score": 0.99}')
    registry.put("train.csv", csv(cancer_frame()))
    split = {"method": "time", "column": "ts"}

    code, first = registry.main(registry.config(version="v1", split=split, promotion={"minScore": 0.9}))

    assert code == 0, first
    assert first["promoted"] is True
    assert first["promotionReason"].startswith("first model: no champion yet; accuracy 0.9")
    assert first["champion"] == {"version": "v1", "score": first["score"]}
    assert (first["challengerScore"], first["championScore"]) == (first["score"], None)
    pointer = registry.champion()
    assert (pointer["version"], pointer["generation"], pointer["previous"]) == ("v1", 1, None)
    assert pointer["action"] == "Train"
    assert pointer["modelUri"] == f"s3://{registry.bucket}/m/versions/v1/model.skops"
    assert registry.keys("m/promotions/") == ["m/promotions/000000000001.json"]
    champion_before = registry.get("m/champion.json")

    registry.put("train.csv", csv(mislabelled()))
    code, second = registry.main(registry.config(version="v2", split=split, promotion={"minScore": 0.5}))

    assert code == 0, second
    assert second["outcome"] == "Succeeded" and second["promoted"] is False
    assert second["score"] < 0.5 < 0.9 < second["championScore"]
    assert second["promotionReason"].startswith("accuracy 0.")
    assert "is below minScore 0.5: kept as candidate" in second["promotionReason"]
    assert second["champion"] == {"version": "v1", "score": first["score"]}
    assert registry.get("m/champion.json") == champion_before
    assert registry.keys("m/promotions/") == ["m/promotions/000000000001.json"]
    # The candidate is complete and loadable, and says why it was not promoted.
    metadata = registry.metadata("v2")
    assert metadata["promotion"]["gate"] == {"passed": False, "reason": second["promotionReason"]}
    assert metadata["evaluation"]["champion"] == {"version": "v1", "score": second["championScore"], "error": None}
    holdout = cancer_frame().tail(len(cancer_frame()) // 5 + 1)
    assert (registry.model("v2").predict(holdout[FEATURES]) != holdout["label"]).mean() > 0.9
    assert (registry.model("v1").predict(holdout[FEATURES]) == holdout["label"]).mean() > 0.9

    # Without minScore the champion comparison refuses it all the same.
    code, third = registry.main(registry.config(version="v3", split=split))
    assert (code, third["promoted"]) == (0, False)
    assert third["promotionReason"].startswith("does not beat champion v1: accuracy 0.")
    assert third["promotionReason"].endswith("needs more than 0: kept as candidate")
    assert registry.get("m/champion.json") == champion_before


def test_metadata_records_what_the_operator_and_drift_need(registry: Registry) -> None:
    registry.put("train.csv", csv(cancer_frame()))
    registry.environ(RETRAIN_RESOURCES='{"requests": {"cpu": "500m", "memory": "1Gi"}}')
    config = registry.config(
        version="v1",
        split={"method": "time", "column": "ts"},
        excludeFeatures=["mean area"],
        histograms={"features": {"mean radius": [10, 15, 20]}, "predictions": [0.25, 0.5, 0.75]},
    )

    code, message = registry.main(config)

    assert code == 0, message
    metadata = registry.metadata("v1")
    assert metadata["schemaVersion"] == 2 and metadata["modelFormat"] == "skops"
    assert "ts" not in metadata["features"] and "mean area" not in metadata["features"]
    assert metadata["excludedFeatures"] == ["mean area"]
    assert metadata["split"]["method"] == "time" and metadata["split"]["holdoutFrom"].startswith("2027-04-")
    assert metadata["evaluation"]["higherIsBetter"] is True and metadata["evaluation"]["champion"] is None
    assert metadata["promotion"]["policy"] == {"minScore": None, "mustBeatChampion": True, "minImprovement": 0.0}
    assert metadata["resources"]["requested"] == {"requests": {"cpu": "500m", "memory": "1Gi"}}
    assert metadata["resources"]["used"]["cpuSeconds"] > 0 and metadata["resources"]["used"]["maxRssMiB"] > 0
    assert metadata["libraries"]["skops"] and metadata["libraries"]["sklearn"]
    assert metadata["run"] == {"policy": "ns/m", "policyUid": None, "job": "job-v1", "trigger": "test"}
    data = metadata["data"]
    assert data["rows"] == {"read": 569, "afterWindow": 569}
    assert [o["key"] for o in data["objects"]] == ["train.csv"] and data["objects"][0]["rows"] == 569
    assert data["etag"] == data["objects"][0]["etag"] and data["size"] == len(csv(cancer_frame()))
    model_bytes = registry.get("m/versions/v1/model.skops")
    assert metadata["modelSize"] == len(model_bytes)

    histograms = json.loads(registry.get("m/versions/v1/histograms.json"))
    assert histograms["rows"] == message["rows"] - metadata["rows"]["test"]
    radius = histograms["features"]["mean radius"]
    assert radius["edges"] == [10.0, 15.0, 20.0] and radius["edgesFrom"] == "config"
    assert [label for label, _ in radius["le"]] == ["10.0", "15.0", "20.0", "+Inf"]
    assert radius["le"][-1][1] == radius["count"] == sum(radius["counts"]) == histograms["rows"]
    assert np.cumsum(radius["counts"]).tolist() == [count for _, count in radius["le"]]
    assert histograms["features"]["mean texture"]["edgesFrom"] == "trainingDeciles"
    assert "mean area" not in histograms["features"]
    predictions = histograms["predictions"]
    assert predictions["kind"] == "probability" and predictions["positiveClass"] == 1
    assert predictions["edges"] == [0.25, 0.5, 0.75] and len(predictions["counts"]) == 4


def test_lower_is_better_metric_and_parquet(registry: Registry) -> None:
    registry.put("diabetes.parquet", parquet(diabetes_frame()))

    def run(version: str, **builtin: Any) -> dict[str, Any]:
        config = registry.config(
            version=version, data={"key": "diabetes.parquet", "format": "parquet"}, target="target",
            estimator="sklearn.linear_model.Ridge", metric="rmse", params=builtin.pop("params", {}), **builtin,
        )  # fmt: skip
        code, message = registry.main(config)
        assert code == 0, message
        return message

    weak = run("bmi-only", features=["bmi"])
    strong = run("all", promotion={"minImprovement": 2})
    underfit = run("underfit", params={"alpha": 1e5})

    assert weak["promoted"] and strong["promoted"] and not underfit["promoted"]
    assert strong["score"] < weak["score"] - 2 < underfit["score"]
    assert strong["promotionReason"].startswith("beats champion bmi-only: rmse ")
    assert strong["championScore"] == pytest.approx(weak["score"])
    assert underfit["promotionReason"].startswith("does not beat champion all: rmse ")
    assert "better by -" in underfit["promotionReason"]
    assert underfit["championScore"] == pytest.approx(strong["score"])
    assert registry.champion()["version"] == "all"


# --- rollback --------------------------------------------------------------------------------------


def test_rollback_with_promote_and_a_bounded_history(registry: Registry) -> None:
    registry.monkeypatch.setattr(layout, "PROMOTION_HISTORY_LIMIT", 2)
    registry.put("train.csv", csv(cancer_frame()))
    assert registry.main(registry.config(version="v1", features=["mean radius", "mean texture"]))[1]["promoted"]
    code, second = registry.main(registry.config(version="v2"))
    assert (code, second["promoted"]) == (0, True), second
    assert second["promotionReason"].startswith("beats champion v1: accuracy ")

    code, message = registry.promote("v1")

    assert code == 0, message
    assert message.pop("peakMemoryMiB") > 0
    assert message == {
        "outcome": "Succeeded", "action": "Promote", "version": "v1",
        "modelUri": f"s3://{registry.bucket}/m/versions/v1/model.skops", "metric": "accuracy",
        "score": registry.metadata("v1")["score"], "trainedAt": registry.metadata("v1")["trainedAt"],
        "promoted": True, "changed": True, "previousChampion": {"version": "v2", "score": second["score"]},
    }  # fmt: skip
    pointer = registry.champion()
    assert (pointer["version"], pointer["previous"], pointer["generation"], pointer["action"]) == (
        "v1", "v2", 3, "Promote"
    )  # fmt: skip
    assert pointer["reason"] == "promoted by command (was v2); job job-x"
    # Three moves, two records kept: the oldest was pruned.
    assert registry.keys("m/promotions/") == ["m/promotions/000000000002.json", "m/promotions/000000000003.json"]
    assert parse_pointer(registry.get("m/promotions/000000000003.json")).version == "v1"
    assert registry.model("v1").predict(cancer_frame()[FEATURES].head(5)).shape == (5,)

    before = registry.snapshot()
    code, again = registry.promote("v1")
    assert (code, again["changed"], again["previousChampion"]["version"]) == (0, False, "v1")
    assert registry.snapshot() == before


def _evil_version(registry: Registry, version: str) -> None:
    model = dump_model(FunctionTransformer(func=os.system, kw_args={"command": "touch /tmp/pwned"}))
    registry.put(f"m/versions/{version}/model.skops", model)
    registry.put(
        f"m/versions/{version}/metadata.json",
        json.dumps({"modelFormat": "skops", "metric": "accuracy", "score": 1.0, "target": "label",
                    "features": FEATURES}).encode(),
    )  # fmt: skip


def _joblib_version(registry: Registry, version: str) -> None:
    registry.put(f"m/versions/{version}/model.joblib", b"a pickle")
    registry.put(f"m/versions/{version}/metadata.json", b'{"modelFormat": "joblib"}')


def _tampered_version(registry: Registry, version: str) -> None:
    registry.put(f"m/versions/{version}/model.skops", dump_model({"not": "the model"}))
    registry.put(f"m/versions/{version}/metadata.json", b'{"modelFormat": "skops", "modelSha256": "00"}')


@pytest.mark.parametrize(
    ("prepare", "version", "reason", "words"),
    [
        (lambda r, v: None, "nope", "VersionNotFound", ["version nope does not exist", "m/versions/nope/"]),
        (lambda r, v: r.put(f"m/versions/{v}/model.skops", b"half"), "half", "VersionIncomplete",
         ["version half is incomplete", "no metadata.json"]),
        (_joblib_version, "old", "UnsupportedModelFormat", ["joblib model, which is never loaded"]),
        (_evil_version, "evil", "UntrustedModel", ["not trusted and was not loaded: posix.system"]),
        (_tampered_version, "tampered", "VersionIncomplete", ["does not match the sha256"]),
    ],
    ids=["missing", "incomplete", "joblib", "untrusted", "tampered"],
)  # fmt: skip
def test_promote_refuses_versions_that_cannot_serve(
    registry: Registry, prepare: Callable[[Registry, str], None], version: str, reason: str, words: list[str]
) -> None:
    registry.put("train.csv", csv(cancer_frame()))
    assert registry.main(registry.config(version="good"))[0] == 0
    prepare(registry, version)
    before = registry.snapshot()

    code, message = registry.promote(version)

    assert (code, message["outcome"], message["reason"]) == (6, "Failed", reason), message
    for word in words:
        assert word in message["message"]
    assert registry.snapshot() == before
    assert not Path("/tmp/pwned").exists()


def test_a_corrupt_pointer_stops_training_and_promote_repairs_it(registry: Registry) -> None:
    registry.put("train.csv", csv(cancer_frame()))
    assert registry.main(registry.config(version="v1"))[0] == 0
    registry.put("m/champion.json", b"{not json")
    before = registry.snapshot()

    code, message = registry.main(registry.config(version="v2"))

    assert (code, message["reason"]) == (6, "InvalidChampion")
    assert "m/champion.json is not a valid champion pointer" in message["message"]
    assert "promote --version V" in message["message"]
    assert registry.snapshot() == before

    code, message = registry.promote("v1")

    assert (code, message["previousChampion"]) == (0, None), message
    pointer = registry.champion()
    assert (pointer["version"], pointer["generation"]) == ("v1", 2)
    assert pointer["reason"].startswith("promoted by command (was an unreadable pointer)")


def test_promote_needs_a_valid_version_argument(registry: Registry) -> None:
    code, message = registry.main(registry.config(), ["promote"])
    assert (code, message["reason"]) == (2, "InvalidConfig")
    assert "--version" in message["message"]
    code, message = registry.main(registry.config(), ["promote", "--version", "../x"])
    assert (code, message["reason"]) == (2, "InvalidConfig")


def test_promote_as_a_subprocess(registry: Registry) -> None:
    import subprocess

    registry.put("train.csv", csv(cancer_frame()))
    assert registry.main(registry.config(version="v1"))[0] == 0
    registry.put("train.csv", csv(cancer_frame().head(300)))
    assert registry.main(registry.config(version="v2", promotion={"mustBeatChampion": False}))[1]["promoted"]
    src = Path(__file__).resolve().parents[1] / "operator" / "src"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")},
        "RETRAIN_TRAINER_CONFIG": json.dumps(registry.config()),
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }

    done = subprocess.run(
        [sys.executable, "-m", "retrain_operator.trainer", "promote", "--version", "v1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    message = json.loads(done.stdout.strip().splitlines()[-1])
    assert (message["action"], message["version"], message["previousChampion"]["version"]) == ("Promote", "v1", "v2")
    assert registry.champion()["version"] == "v1"


# --- crashes and races ---------------------------------------------------------------------------


def test_a_crash_before_the_pointer_moves_leaves_the_old_champion_serving(registry: Registry) -> None:
    registry.put("train.csv", csv(cancer_frame()))
    assert registry.main(registry.config(version="v1", features=["mean radius", "mean texture"]))[0] == 0
    champion = registry.get("m/champion.json")

    def crash() -> None:
        raise Crash("killed between writing the version and moving the pointer")

    with pytest.raises(Crash):
        train(parse_config(registry.config(version="v2")), store=Wrapped(registry.store(), crash))

    assert registry.get("m/champion.json") == champion
    assert registry.model("v1").predict(cancer_frame()[FEATURES].head(3)).shape == (3,)
    assert registry.keys("m/versions/v2/") == [
        "m/versions/v2/histograms.json", "m/versions/v2/metadata.json", "m/versions/v2/model.skops",
    ]  # fmt: skip
    assert registry.metadata("v2")["promotion"]["gate"]["passed"] is True
    assert registry.model("v2").predict(cancer_frame()[FEATURES].head(3)).shape == (3,)

    # The complete candidate can be promoted by a person (or by the next run's comparison).
    code, message = registry.promote("v2")
    assert (code, message["previousChampion"]["version"]) == (0, "v1")


def test_a_failed_pointer_write_is_a_storage_error_and_keeps_the_candidate(registry: Registry) -> None:
    registry.put("train.csv", csv(cancer_frame()))

    def outage() -> None:
        raise StoreError("Unavailable", "simulated outage")

    with pytest.raises(StorageError) as caught:
        train(parse_config(registry.config(version="v1")), store=Wrapped(registry.store(), outage))

    assert caught.value.reason == "StorageError"
    assert "version v1 was written completely and stays a candidate" in caught.value.message
    assert "simulated outage" in caught.value.message
    assert "m/champion.json" not in registry.keys()
    assert "m/versions/v1/metadata.json" in registry.keys()


def test_racing_trainers_cannot_both_move_the_pointer_from_the_same_state(registry: Registry) -> None:
    registry.put("train.csv", csv(cancer_frame()))
    assert registry.main(registry.config(version="v1", features=["mean radius"]))[0] == 0
    store = registry.store()
    state = read_champion(store, parse_config(registry.config()).model.registry)
    other_ran = threading.Event()

    def other_trainer_finishes_first() -> None:
        if not other_ran.is_set():
            other_ran.set()
            result = train(parse_config(registry.config(version="fast")), store=store)
            assert result.promoted

    # This run beats v1 by far more than 0.05, but not "fast", which moves the pointer while it trains.
    result = train(
        parse_config(registry.config(version="slow", promotion={"minImprovement": 0.05})),
        store=Wrapped(store, other_trainer_finishes_first),
    )

    assert not result.promoted
    assert result.promotion_reason.startswith("does not beat champion fast: accuracy ")
    assert result.champion_version == "fast"
    assert result.metadata["promotion"]["gate"]["reason"].startswith("beats champion v1")
    pointer = registry.champion()
    assert (pointer["version"], pointer["previous"], pointer["generation"]) == ("fast", "v1", 2)
    assert registry.keys("m/promotions/") == ["m/promotions/000000000001.json", "m/promotions/000000000002.json"]

    # The same race at the lowest level: the second writer from the state both read is refused.
    config = parse_config(registry.config())
    stored = read_version(store, config.model.registry, "slow")
    first = new_pointer(stored, registry=config.model.registry, state=state, action="Promote", reason="a",
                        promoted_at="now", run=config.run)  # fmt: skip
    with pytest.raises(ChampionMoved):
        move_champion(store, config.model.registry, state=state, pointer=first)
    assert registry.champion()["version"] == "fast"


def test_an_untrusted_champion_is_never_loaded_and_blocks_automatic_promotion(registry: Registry) -> None:
    registry.put("train.csv", csv(cancer_frame()))
    _evil_version(registry, "evil")
    evil = new_pointer(
        read_version(registry.store(), parse_config(registry.config()).model.registry, "evil"),
        registry=parse_config(registry.config()).model.registry,
        state=read_champion(registry.store(), parse_config(registry.config()).model.registry),
        action="Promote", reason="planted", promoted_at="2026-11-27T00:00:00Z", run=parse_config(registry.config()).run,
    )  # fmt: skip
    registry.put("m/champion.json", encode_pointer(evil))
    before = registry.get("m/champion.json")

    code, message = registry.main(registry.config(version="v1"))

    assert (code, message["promoted"], message["championScore"]) == (0, False, None), message
    assert message["promotionReason"].startswith("champion evil could not be scored on this holdout (UntrustedModel:")
    assert "posix.system" in message["promotionReason"]
    assert registry.get("m/champion.json") == before
    assert not Path("/tmp/pwned").exists()


# --- data from partitions ------------------------------------------------------------------------


def test_partitions_in_key_order_with_the_last_n_and_a_time_window(registry: Registry) -> None:
    frame = cancer_frame()
    parts = [frame.iloc[:200], frame.iloc[200:400], frame.iloc[400:]]
    for index, part in enumerate(parts):
        registry.put(f"events/day={index:02d}/part-0.parquet", parquet(part))
    registry.put("events/_SUCCESS", b"")
    data = {"prefix": "events/", "format": "parquet", "window": {"partitions": 2, "column": "ts", "last": "200d"}}

    code, message = registry.main(registry.config(version="v1", data=data))

    assert code == 0, message
    fingerprint = registry.metadata("v1")["data"]
    assert [o["key"] for o in fingerprint["objects"]] == [
        "events/day=01/part-0.parquet", "events/day=02/part-0.parquet",
    ]  # fmt: skip
    assert fingerprint["rows"] == {"read": 369, "afterWindow": 201}
    assert fingerprint["window"]["end"] == "2027-07-23T00:00:00+00:00" and fingerprint["window"]["droppedRows"] == 168
    assert fingerprint["etag"] is None and len(fingerprint["sha256"]) == 64
    assert message["rows"] == 201


def test_an_estimator_outside_sklearn_needs_the_administrators_allowlist(registry: Registry) -> None:
    package = registry.tmp_path / "lib" / "houselib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        textwrap.dedent("""
            from sklearn.linear_model import LogisticRegression

            class HouseClassifier(LogisticRegression):
                pass
        """)
    )
    registry.monkeypatch.syspath_prepend(str(registry.tmp_path / "lib"))
    registry.put("train.csv", csv(cancer_frame()))
    config = registry.config(version="v1", estimator="houselib.models.HouseClassifier")

    code, message = registry.main(config)
    assert (code, message["reason"]) == (2, "EstimatorNotAllowed")
    assert "allowed prefixes: sklearn (an administrator may add more in RETRAIN_ESTIMATOR_ALLOWLIST)" in str(
        message["message"]
    )

    registry.environ(RETRAIN_ESTIMATOR_ALLOWLIST="houselib")
    assert registry.main(config)[1]["promoted"] is True
    # The next run loads that champion, whose classes are trusted through the same allowlist.
    code, message = registry.main(registry.config(version="v2", estimator="houselib.models.HouseClassifier"))
    assert code == 0 and message["championScore"] is not None


def test_large_objects_go_up_in_parts_and_are_never_replaced(registry: Registry) -> None:
    registry.environ()
    mib = 1024 * 1024
    small_parts = TransferConfig(multipart_threshold=5 * mib, multipart_chunksize=5 * mib, max_concurrency=2)
    store = S3Store(s3_client(registry.server), transfer=small_parts)
    body = os.urandom(11 * mib)

    store.put_new(registry.bucket, "big.bin", body, content_type="application/octet-stream")

    head = registry.client.head_object(Bucket=registry.bucket, Key="big.bin")
    assert head["ContentLength"] == len(body) and head["ETag"].endswith('-3"')
    with pytest.raises(StoreError) as caught:
        store.put_new(registry.bucket, "big.bin", b"x" * (6 * mib), content_type="application/octet-stream")
    assert caught.value.kind == "AlreadyExists"
    assert registry.get("big.bin") == body


def test_times_are_recorded_in_utc(registry: Registry) -> None:
    registry.put("train.csv", csv(cancer_frame()))
    moment = datetime(2026, 11, 27, 19, 40, tzinfo=UTC)

    result = train(parse_config(registry.config()), store=registry.store(), clock=lambda: moment)

    assert registry.champion()["promotedAt"] == "2026-11-27T19:40:00Z"
    assert result.version.startswith("20261127T194000Z-")


def test_a_joblib_champion_is_not_loaded_and_the_new_model_waits_as_candidate(registry: Registry) -> None:
    registry.put("train.csv", csv(cancer_frame()))
    _joblib_version(registry, "old")
    registry.put("m/champion.json", b'{"version": "old", "modelUri": "s3://b/m/versions/old/model.joblib", '
                 b'"generation": 4}')  # fmt: skip

    code, message = registry.main(registry.config(version="v1"))

    assert (code, message["promoted"], message["champion"]) == (0, False, {"version": "old", "score": None})
    assert "champion old could not be scored on this holdout (UnsupportedModelFormat:" in message["promotionReason"]
    code, message = registry.promote("v1")
    assert (code, registry.champion()["generation"], registry.champion()["previous"]) == (0, 5, "old")
    assert registry.keys("m/promotions/") == ["m/promotions/000000000004.json", "m/promotions/000000000005.json"]
