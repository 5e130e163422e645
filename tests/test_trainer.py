"""The built-in trainer end to end against a real S3 server (SeaweedFS), in process and as a subprocess.

Data sets are scikit-learn's bundled ones, written to a bucket of each test's own as CSV or Parquet.
Every failure case checks the three things the operator and the user rely on: the reason and message
in the termination message, the exit code, and that the registry was left exactly as it was.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from retrain_operator.registry import layout
from retrain_operator.trainer.config import parse_config
from retrain_operator.trainer.errors import StorageError
from retrain_operator.trainer.fit import DEFAULT_ALLOWLIST
from retrain_operator.trainer.main import main
from retrain_operator.trainer.modelio import load_model as load_skops
from retrain_operator.trainer.run import train
from retrain_operator.trainer.storage import ObjectInfo, S3Store, StoreError
from sandbox.s3 import S3Server
from tests.support.s3 import drop_buckets, new_bucket, s3_client

SRC = Path(__file__).resolve().parents[1] / "operator" / "src"
DATA_KEY = "data/train.csv"


@cache
def breast_cancer_csv() -> bytes:
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    return str(frame.to_csv(index=False)).encode()


@cache
def iris_frame() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.copy()
    frame["species"] = [str(bunch.target_names[i]) for i in frame.pop("target")]
    return frame


@cache
def diabetes_frame() -> pd.DataFrame:
    return load_diabetes(as_frame=True, scaled=False).frame


@cache
def churn_frame() -> pd.DataFrame:
    """Mixed numeric and text columns with gaps, and a few rows not yet labelled."""
    rng = np.random.default_rng(7)
    n = 400
    plan = rng.choice(["basic", "plus", "pro"], size=n)
    tenure = rng.integers(1, 60, size=n).astype(float)
    charges = rng.normal(50, 15, size=n).round(2)
    churned = ((plan == "basic") & (tenure < 20)) | (charges > 70)
    frame = pd.DataFrame(
        {"plan": plan, "tenure": tenure, "charges": charges, "churned": np.where(churned, "yes", "no")}
    )
    frame.loc[::37, "tenure"] = np.nan
    frame.loc[::41, "plan"] = None
    frame.loc[::50, "churned"] = None
    return frame


@dataclass
class Env:
    """One test's bucket, configuration and process environment."""

    server: S3Server
    client: Any
    bucket: str
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def termination_path(self) -> Path:
        return self.tmp_path / "termination-log"

    def put(self, key: str, body: bytes, bucket: str | None = None) -> None:
        self.client.put_object(Bucket=bucket or self.bucket, Key=key, Body=body)

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def keys(self) -> list[str]:
        response = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in response.get("Contents", []))

    def snapshot(self) -> dict[str, tuple[str, bytes]]:
        """Every object's ETag and bytes, to prove a failed run changed nothing."""
        result = {}
        for key in self.keys():
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            result[key] = (response["ETag"], response["Body"].read())
        return result

    def config(self, **builtin: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "data": {"key": DATA_KEY, "format": "csv"},
            "target": "label",
            "estimator": "sklearn.linear_model.LogisticRegression",
        }
        settings.update(builtin)
        return {
            "model": {
                "name": "churn",
                "registry": {"store": "test", "bucket": self.bucket, "prefix": "churn/"},
            },
            "store": {"name": "test", "endpoint": self.server.endpoint, "region": "us-east-1"},
            "builtin": settings,
            "run": {"policy": "team-a/churn", "policyUid": "uid-1", "job": "churn-retrain-1", "trigger": "drop"},
        }

    def environ(self, *, access_key: str | None = None, secret_key: str | None = None) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": access_key or self.server.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.server.secret_key,
            "TERMINATION_MESSAGE_PATH": str(self.termination_path),
        }

    def run(
        self,
        config: dict[str, Any] | str | None,
        *,
        argv: list[str] | None = None,
        environ: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Call ``main`` in process; return its exit code and the termination message it wrote."""
        for name, value in (environ or self.environ()).items():
            self.monkeypatch.setenv(name, value)
        if config is None:
            self.monkeypatch.delenv("RETRAIN_TRAINER_CONFIG", raising=False)
        else:
            text = config if isinstance(config, str) else json.dumps(config)
            self.monkeypatch.setenv("RETRAIN_TRAINER_CONFIG", text)
        code = main(argv or [])
        return code, read_message(self.termination_path)


def read_message(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    assert len(raw) < 4096
    assert b"\n" not in raw.strip()
    message: dict[str, Any] = json.loads(raw)
    return message


@pytest.fixture
def env(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    # Keep the developer's AWS setup out, and never let boto3 probe an instance metadata service.
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = s3_client(s3_server)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    yield Env(s3_server, client, new_bucket(client), tmp_path, monkeypatch)
    drop_buckets(client, existing)


def load_model(env: Env, uri: str) -> Any:
    bucket, key = layout.parse_s3_uri(uri)
    assert bucket == env.bucket
    return load_skops(env.get(key), allowlist=DEFAULT_ALLOWLIST, source=uri)


# --- success -------------------------------------------------------------------------------------


def test_breast_cancer_logistic_regression(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    before = datetime.now(UTC).replace(microsecond=0)

    code, message = env.run(env.config())

    assert code == 0, message
    assert capsys.readouterr().out.strip().splitlines()[-1] == env.termination_path.read_text()
    version = message["version"]
    assert set(message) == {
        "outcome", "version", "modelUri", "metadataUri", "metric", "score", "trainedAt", "rows", "durationSeconds",
        "promoted", "promotionReason", "champion", "challengerScore", "championScore", "data", "memoryEstimateMiB",
        "peakMemoryMiB",
    }  # fmt: skip
    assert message["data"] == {"rowsRead": 569, "rowsUsed": 569, "droppedRows": {}}
    assert message["memoryEstimateMiB"] > 200 and message["peakMemoryMiB"] > 50
    assert message["outcome"] == "Succeeded"
    assert layout.version_time(version) is not None
    assert before <= layout.version_time(version) <= datetime.now(UTC)  # type: ignore[operator]
    assert message["modelUri"] == f"s3://{env.bucket}/churn/versions/{version}/model.skops"
    assert message["metadataUri"] == f"s3://{env.bucket}/churn/versions/{version}/metadata.json"
    assert message["promoted"] is True
    assert message["promotionReason"].startswith("first model: no champion yet; accuracy 0.9")
    assert message["champion"] == {"version": version, "score": message["score"]}
    assert message["challengerScore"] == message["score"]
    assert message["championScore"] is None
    assert message["metric"] == "accuracy"
    assert message["score"] > 0.93
    assert message["rows"] == 569
    assert 0 < message["durationSeconds"] < 60
    trained_at = datetime.strptime(message["trainedAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= trained_at <= datetime.now(UTC)
    assert env.keys() == sorted(
        [
            DATA_KEY,
            "churn/champion.json",
            "churn/promotions/000000000001.json",
            f"churn/versions/{version}/histograms.json",
            f"churn/versions/{version}/metadata.json",
            f"churn/versions/{version}/model.skops",
        ]
    )

    raw = pd.read_csv(io.BytesIO(breast_cancer_csv()))
    model = load_model(env, message["modelUri"])
    predicted = model.predict(raw.drop(columns=["label"]).head(50))
    assert (predicted == raw["label"].head(50)).mean() > 0.9

    metadata = json.loads(env.get(f"churn/versions/{version}/metadata.json"))
    assert metadata["schemaVersion"] == layout.METADATA_SCHEMA_VERSION
    assert metadata["model"] == "churn"
    assert metadata["version"] == version
    assert metadata["modelUri"] == message["modelUri"]
    assert metadata["estimator"]["class"] == "sklearn.linear_model.LogisticRegression"
    assert metadata["estimator"]["params"] == {}
    assert metadata["estimator"]["effectiveParams"]["random_state"] == 0
    assert metadata["features"] == [c for c in raw.columns if c != "label"]
    assert metadata["target"] == "label"
    assert metadata["classes"] == [0, 1]
    assert metadata["metric"] == "accuracy"
    assert metadata["score"] == message["score"]
    assert metadata["holdout"] == {"testSize": 0.2, "seed": 0, "stratified": True, "f1Average": None}
    assert metadata["rows"] == {"read": 569, "train": 455, "test": 114, "unlabelled": 0, "dropped": {}}
    head = env.client.head_object(Bucket=env.bucket, Key=DATA_KEY)
    assert metadata["data"]["bucket"] == env.bucket
    assert metadata["data"]["key"] == DATA_KEY
    assert metadata["data"]["size"] == len(breast_cancer_csv())
    assert metadata["data"]["etag"] == head["ETag"].strip('"')
    assert len(metadata["data"]["sha256"]) == 64
    assert set(metadata["libraries"]) >= {"python", "sklearn", "numpy", "pandas"}
    assert metadata["trainedAt"] == message["trainedAt"]
    assert metadata["durationSeconds"] == message["durationSeconds"]
    assert metadata["run"] == {
        "policy": "team-a/churn",
        "policyUid": "uid-1",
        "job": "churn-retrain-1",
        "trigger": "drop",
    }


def test_iris_text_labels_with_random_forest_and_f1(env: Env) -> None:
    env.put("iris.csv", iris_frame().to_csv(index=False).encode())
    config = env.config(
        data={"key": "iris.csv"},
        target="species",
        estimator="sklearn.ensemble.RandomForestClassifier",
        params={"n_estimators": 25, "max_depth": 4},
        metric="f1",
        testSize=0.3,
        seed=3,
    )
    config["model"]["registry"]["prefix"] = ""
    config["run"]["version"] = "v1"

    code, message = env.run(config)

    assert code == 0, message
    assert message["version"] == "v1"
    assert message["modelUri"] == f"s3://{env.bucket}/versions/v1/model.skops"
    assert message["metric"] == "f1"
    assert message["score"] > 0.85
    metadata = json.loads(env.get("versions/v1/metadata.json"))
    assert metadata["classes"] == ["setosa", "versicolor", "virginica"]
    assert metadata["holdout"] == {"testSize": 0.3, "seed": 3, "stratified": True, "f1Average": "macro"}
    assert metadata["estimator"]["params"] == {"n_estimators": 25, "max_depth": 4}
    assert metadata["estimator"]["effectiveParams"]["random_state"] == 3
    model = load_model(env, message["modelUri"])
    assert set(model.predict(iris_frame().drop(columns=["species"]))) <= {"setosa", "versicolor", "virginica"}


def test_diabetes_regression_from_parquet_in_another_bucket(env: Env) -> None:
    data_bucket = new_bucket(env.client, "data")
    buffer = io.BytesIO()
    diabetes_frame().to_parquet(buffer)
    env.put("diabetes.parquet", buffer.getvalue(), bucket=data_bucket)
    config = env.config(
        data={"bucket": data_bucket, "key": "diabetes.parquet", "format": "parquet"},
        target="target",
        features=["age", "bmi", "bp", "s5"],
        estimator="sklearn.linear_model.Ridge",
        params={"alpha": 0.5},
        metric="r2",
    )

    code, message = env.run(config)

    assert code == 0, message
    assert message["metric"] == "r2"
    assert 0.2 < message["score"] < 1
    assert message["rows"] == 442
    metadata = json.loads(env.get(layout.metadata_key("churn/", message["version"])))
    assert metadata["features"] == ["age", "bmi", "bp", "s5"]
    assert metadata["classes"] == []
    assert metadata["holdout"]["stratified"] is False
    assert metadata["data"]["bucket"] == data_bucket
    model = load_model(env, message["modelUri"])
    assert model.predict(diabetes_frame().drop(columns=["target"]).head(3)).shape == (3,)


def test_text_columns_and_gaps_are_encoded_inside_the_saved_model(env: Env) -> None:
    env.put(DATA_KEY, churn_frame().to_csv(index=False).encode())
    config = env.config(target="churned", estimator="sklearn.ensemble.HistGradientBoostingClassifier", metric="f1")

    code, message = env.run(config)

    assert code == 0, message
    metadata = json.loads(env.get(layout.metadata_key("churn/", message["version"])))
    assert metadata["rows"]["unlabelled"] == 8
    assert message["rows"] == 392
    assert metadata["preprocessing"]["categorical"]["columns"] == ["plan"]
    assert metadata["preprocessing"]["numeric"]["columns"] == ["tenure", "charges"]
    assert metadata["holdout"]["f1Average"] == "binary"
    model = load_model(env, message["modelUri"])
    raw = pd.DataFrame({"plan": ["basic", "enterprise", None], "tenure": [3.0, np.nan, 50.0], "charges": [40, 90, 30]})
    assert list(model.predict(raw)) == ["yes", "yes", "no"]


def test_fit_warnings_are_recorded_not_fatal(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())

    code, message = env.run(env.config(params={"max_iter": 1}))

    assert code == 0, message
    metadata = json.loads(env.get(layout.metadata_key("churn/", message["version"])))
    assert any(w.startswith("ConvergenceWarning: ") for w in metadata["warnings"]), metadata["warnings"]


def test_long_messages_are_cut_to_the_termination_limit(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())

    code, message = env.run(env.config(target="\u00e9" * 3000))

    assert (code, message["reason"]) == (3, "MissingColumn")
    assert message["message"].endswith("...")


def test_config_file_wins_and_train_subcommand_is_accepted(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    config_file = env.tmp_path / "config.json"
    config = env.config()
    config["run"]["version"] = "from-file"
    config_file.write_text(json.dumps(config))

    code, message = env.run("not json", argv=["train", "--config", str(config_file)])

    assert code == 0, message
    assert message["version"] == "from-file"


def test_endpoint_from_environment_when_config_names_no_store(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    config = env.config()
    del config["store"]
    del config["model"]["registry"]["store"]

    code, message = env.run(config, environ={**env.environ(), "AWS_ENDPOINT_URL": env.server.endpoint})

    assert code == 0, message


def test_config_endpoint_wins_over_environment(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    redirect = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}

    code, message = env.run(env.config(), environ={**env.environ(), **redirect})

    assert code == 0, message


def test_a_store_without_endpoint_ignores_endpoint_variables() -> None:
    """A ModelStore on AWS S3 (no endpoint): no variable may send the trainer to another address."""
    from retrain_operator.settings.training import StoreSpec
    from retrain_operator.trainer.storage import S3Store

    redirect = {"AWS_ENDPOINT_URL_S3": "http://169.254.169.254", "AWS_ENDPOINT_URL": "http://169.254.169.254"}
    named = S3Store.from_config(StoreSpec(name="aws", region="eu-west-1"), redirect)
    assert named._client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    by_hand = S3Store.from_config(StoreSpec(), redirect)
    assert by_hand._client.meta.endpoint_url == "http://169.254.169.254"


def test_rows_left_out_are_counted_by_cause(env: Env) -> None:
    lines = breast_cancer_csv().decode().splitlines()
    header, rows = lines[0], lines[1:]
    columns = header.split(",")
    label = columns.index("label")
    no_label = [",".join("" if i == label else v for i, v in enumerate(r.split(","))) for r in rows[:40]]
    no_features = [",".join(v if i == label else "" for i, v in enumerate(r.split(","))) for r in rows[40:50]]
    malformed = [r + ",1,2" for r in rows[50:53]]
    body = "\n".join([header, *no_label, *no_features, *malformed, *rows[53:]]) + "\n"
    env.put(DATA_KEY, body.encode())

    code, message = env.run(env.config())

    assert code == 0, message
    dropped = {"missingLabel": 40, "missingFeatures": 10, "malformedLine": 3}
    assert message["data"] == {"rowsRead": 569, "rowsUsed": 569 - 53, "droppedRows": dropped}
    metadata = json.loads(
        env.client.get_object(Bucket=env.bucket, Key=message["metadataUri"].split("/", 3)[3])["Body"].read()
    )
    assert metadata["rows"]["dropped"] == dropped and metadata["rows"]["read"] == 569


def test_data_that_cannot_fit_the_memory_limit_is_refused_before_reading(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    resources = json.dumps({"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}})

    code, message = env.run(env.config(), environ={**env.environ(), "RETRAIN_RESOURCES": resources})

    assert (code, message["reason"]) == (3, "DataTooLarge"), message
    assert "more than the Job's limit of 128 MiB" in message["message"]
    assert "spec.training.resources.limits.memory" in message["message"]
    assert message["peakMemoryMiB"] > 0


def test_data_above_the_memory_request_trains_with_a_warning(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    resources = json.dumps({"requests": {"memory": "64Mi"}, "limits": {"memory": "2Gi"}})

    code, message = env.run(env.config(), environ={**env.environ(), "RETRAIN_RESOURCES": resources})

    assert code == 0, message
    assert "more than the Job's request of 64 MiB" in message["warnings"][0]


def test_a_registry_endpoint_in_the_document_is_refused(env: Env) -> None:
    config = env.config()
    config["model"]["registry"]["endpoint"] = "http://169.254.169.254/"
    code, message = env.run(config)
    assert (code, message["reason"]) == (2, "InvalidConfig")
    assert "model.registry.endpoint is no longer accepted" in message["message"] and "ModelStore" in message["message"]


def test_subprocess_success_and_failure(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    config = env.config(params={"max_iter": 500})
    config["run"]["version"] = "subprocess"
    process_env = {
        **{k: v for k, v in os.environ.items() if k != "RETRAIN_TRAINER_CONFIG"},
        **env.environ(),
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }

    done = subprocess.run(
        [sys.executable, "-m", "retrain_operator.trainer"],
        env={**process_env, "RETRAIN_TRAINER_CONFIG": json.dumps(config)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == env.termination_path.read_text()
    message = read_message(env.termination_path)
    assert message["outcome"] == "Succeeded"
    assert message["modelUri"] == f"s3://{env.bucket}/churn/versions/subprocess/model.skops"
    assert "fitting sklearn.linear_model.LogisticRegression" in done.stderr

    again = subprocess.run(
        [sys.executable, "-m", "retrain_operator.trainer"],
        env={**process_env, "RETRAIN_TRAINER_CONFIG": json.dumps(config)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 4
    assert read_message(env.termination_path)["reason"] == "VersionExists"


def test_trainer_imports_neither_kopf_nor_kubernetes() -> None:
    code = (
        "import sys, retrain_operator.trainer.main\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'kopf', 'kubernetes'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"


# --- failures ------------------------------------------------------------------------------------

Mutation = Callable[[Env, dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(env: Env, config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _data(body: bytes) -> Mutation:
    def mutate(env: Env, config: dict[str, Any]) -> None:
        env.put("bad.csv", body)
        config["builtin"]["data"]["key"] = "bad.csv"

    return mutate


def _parts(*bodies: bytes) -> Mutation:
    def mutate(env: Env, config: dict[str, Any]) -> None:
        for index, body in enumerate(bodies):
            env.put(f"parts/{index:02d}.csv", body)
        env.put("parts/_SUCCESS", b"")
        config["builtin"]["data"] = {"prefix": "parts/"}

    return mutate


def _churn(env: Env, config: dict[str, Any]) -> None:
    env.put("churn.csv", churn_frame().to_csv(index=False).encode())
    config["builtin"]["data"]["key"] = "churn.csv"
    config["builtin"]["target"] = "churned"


def _both(*mutations: Mutation) -> Mutation:
    def mutate(env: Env, config: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(env, config)

    return mutate


FAILURES: list[tuple[str, Mutation, int, str, list[str]]] = [
    # (id, change to a valid setup, exit code, reason, words the message must contain)
    ("missing-target", _set("builtin.target", "churned"), 3, "MissingColumn",
     ["'churned'", "builtin.target", "available columns: mean radius, mean texture"]),
    ("missing-feature", _set("builtin.features", ["mean radius", "colour"]), 3, "MissingColumn",
     ["'colour'", "builtin.features", "label"]),
    ("empty-object", _data(b""), 3, "EmptyData", ["bad.csv", "is empty"]),
    ("header-only", _data(b"a,b,label\n"), 3, "EmptyData", ["bad.csv", "no rows"]),
    ("unlabelled-only", _data(b"a,label\n1,\n2,\n"), 3, "EmptyData", ["empty target 'label'"]),
    # A line with more fields than the header is skipped and counted (malformedLine), not fatal: here the
    # one line left has a single class.
    ("ragged-csv", _data(b"a,label\n1,0\n2,1,9\n"), 3, "InvalidTarget", ["single class 0"]),
    ("not-utf8", _data(b"a,label\n\xff\xfe,1\n"), 3, "UnparsableData", ["not UTF-8"]),
    ("bad-parquet", _both(_data(b"a,label\n1,0\n"), _set("builtin.data.format", "parquet")), 3,
     "UnparsableData", ["not valid parquet"]),
    ("single-class", _data(b"a,label\n1,0\n2,0\n3,0\n"), 3, "InvalidTarget", ["single class 0"]),
    ("continuous-class", _data(b"a,label\n1,0.5\n2,0.25\n3,1.5\n"), 3, "InvalidTarget", ["metric r2"]),
    ("text-regression-target",
     _both(_data(b"a,label\n1,x\n2,y\n3,z\n"), _set("builtin.metric", "r2"),
           _set("builtin.estimator", "sklearn.linear_model.Ridge")),
     3, "InvalidTarget", ["must be numeric for metric r2", "'x'"]),
    ("too-few-rows",
     _both(_data(b"a,label\n1,0.5\n"), _set("builtin.metric", "r2"),
           _set("builtin.estimator", "sklearn.linear_model.Ridge")),
     3, "TooFewRows", ["1 labelled rows"]),
    ("missing-key", _set("builtin.data.key", "data/nope.csv"), 3, "DataNotFound",
     ["data/nope.csv", "not found", "builtin.data.key"]),
    ("missing-data-bucket", _set("builtin.data.bucket", "no-such-data-bucket"), 3, "DataNotFound",
     ["'no-such-data-bucket'", "builtin.data.bucket"]),
    ("not-sklearn", _set("builtin.estimator", "os.system"), 2, "EstimatorNotAllowed",
     ["'os.system'", "scikit-learn classifier or regressor"]),
    ("private-module", _set("builtin.estimator", "sklearn.utils._testing.TempMemmap"), 2, "EstimatorNotAllowed",
     ["public import path"]),
    ("no-such-module", _set("builtin.estimator", "sklearn.nope.Thing"), 2, "EstimatorNotAllowed",
     ["no module sklearn.nope"]),
    ("function", _set("builtin.estimator", "sklearn.model_selection.train_test_split"), 2, "EstimatorNotAllowed",
     ["not an estimator class"]),
    ("transformer", _set("builtin.estimator", "sklearn.preprocessing.StandardScaler"), 2, "EstimatorNotAllowed",
     ["neither a classifier nor a regressor"]),
    ("needs-arguments", _set("builtin.estimator", "sklearn.ensemble.VotingClassifier"), 2, "EstimatorNotAllowed",
     ["constructor arguments"]),
    ("unknown-param", _set("builtin.params", {"colour": "red"}), 2, "InvalidParams",
     ["Invalid parameter 'colour'", "LogisticRegression"]),
    ("bad-param-value", _set("builtin.params", {"C": -1}), 2, "InvalidParams",
     ["The 'C' parameter of LogisticRegression must be a float in the range (0.0, inf]"]),
    ("metric-mismatch", _set("builtin.metric", "r2"), 2, "InvalidConfig", ["metric r2", "classifier"]),
    ("regressor-for-accuracy", _set("builtin.estimator", "sklearn.linear_model.Ridge"), 2, "InvalidConfig",
     ["accuracy", "regressor"]),
    ("test-size", _set("builtin.testSize", 1.5), 2, "InvalidConfig", ["builtin.testSize", "1.5"]),
    ("unknown-field", _set("builtin.colour", "red"), 2, "InvalidConfig", ["builtin.colour", "allowed fields"]),
    ("bad-version", _set("run.version", "../escape"), 2, "InvalidConfig", ["run.version", "invalid version id"]),
    ("bad-prefix", _set("model.registry.prefix", "churn"), 2, "InvalidConfig", ["model.registry.prefix"]),
    ("fit-fails", _set("builtin.estimator", "sklearn.naive_bayes.MultinomialNB"), 5, "TrainingError",
     ["fit failed", "Negative values"]),
    ("registry-bucket-missing", _set("model.registry.bucket", "no-such-registry"), 4, "BucketNotFound",
     ["model.registry.bucket"]),
    ("schema-change", _parts(b"a,label\n1,0\n2,1\n", b"a,b,label\n3,4,0\n"), 3, "SchemaMismatch",
     ["partition s3://", "parts/01.csv does not have the columns of", "parts/00.csv", "extra 'b'"]),
    ("type-change", _parts(b"a,label\n1,0\n2,1\n", b"a,label\nx,0\n"), 3, "SchemaMismatch",
     ["column 'a' holds text values in partition", "parts/01.csv"]),
    ("bad-partition", _parts(b"a,label\n1,0\n", b"a,label\n\xff\xfe,1\n"), 3, "UnparsableData",
     ["parts/01.csv is not UTF-8"]),
    ("empty-prefix", _set("builtin.data", {"prefix": "nothing/"}), 3, "DataNotFound",
     ["no training data under s3://", "nothing/", "builtin.data.prefix"]),
    ("markers-only", _both(_parts(), _set("builtin.data", {"prefix": "parts/"})), 3, "DataNotFound",
     ["no training data under"]),
    ("window-column-missing", _set("builtin.data.window", {"column": "ts", "last": "7d"}), 3, "MissingColumn",
     ["'ts' (builtin.data.window.column)"]),
    ("window-column-not-time",
     _both(_data(b"ts,a,label\nmonday,1,0\ntuesday,2,1\n"),
           _set("builtin.data.window", {"column": "ts", "last": "7d"})),
     3, "InvalidColumn", ["column 'ts' (builtin.data.window.column)", "is not a time", "'monday'"]),
    ("split-column-not-time",
     _both(_churn, _set("builtin.split", {"method": "time", "column": "plan"})),
     3, "InvalidColumn", ["column 'plan' (builtin.split.column)", "is not a time"]),
    ("exclude-missing", _set("builtin.excludeFeatures", ["colour"]), 3, "MissingColumn",
     ["'colour' (builtin.excludeFeatures)"]),
    ("histogram-not-numeric", _both(_churn, _set("builtin.histograms", {"features": {"plan": [1, 2]}})), 3,
     "InvalidColumn",
     ["histograms.features names 'plan', which is not numeric"]),
    ("histogram-not-a-feature", _set("builtin.histograms", {"features": {"colour": [1, 2]}}), 3, "MissingColumn",
     ["histograms.features names 'colour', which is not a feature"]),
    ("log-loss-without-probabilities",
     _both(_set("builtin.estimator", "sklearn.svm.LinearSVC"), _set("builtin.metric", "log_loss")), 2,
     "InvalidConfig", ["log_loss needs class probabilities", "LinearSVC"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "exit_code", "reason", "words"),
    [pytest.param(m, c, r, w, id=i) for i, m, c, r, w in FAILURES],
)
def test_bad_input_fails_with_reason_and_writes_nothing(
    env: Env, mutate: Mutation, exit_code: int, reason: str, words: list[str]
) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    env.put("churn/versions/old/model.joblib", b"an earlier model")
    env.put("churn/versions/old/metadata.json", b"{}")
    env.put("churn/champion.json", b'{"version": "old", "modelUri": "s3://b/churn/versions/old/model.joblib", '
            b'"generation": 1}')  # fmt: skip
    config = env.config()
    mutate(env, config)
    before = env.snapshot()

    code, message = env.run(config)

    assert (code, message["outcome"], message["reason"]) == (exit_code, "Failed", reason), message
    assert set(message) == {"outcome", "reason", "message", "peakMemoryMiB"}
    for word in words:
        assert word in message["message"]
    assert env.snapshot() == before


@pytest.mark.parametrize(
    ("credentials", "words"),
    [
        ({"secret_key": "wrong"}, ["SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"]),
        ({"access_key": "nobody"}, ["InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"]),
    ],
    ids=["wrong-secret", "unknown-key"],
)
def test_wrong_credentials_are_access_denied(env: Env, credentials: dict[str, str], words: list[str]) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    before = env.snapshot()
    wrong = env.environ(**credentials)

    code, message = env.run(env.config(), environ=wrong)

    assert (code, message["reason"]) == (4, "AccessDenied"), message
    for word in words:
        assert word in message["message"]
    assert env.snapshot() == before


def test_read_only_credentials_train_but_cannot_write(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    before = env.snapshot()
    read_only = env.environ(access_key=env.server.read_only_access_key, secret_key=env.server.read_only_secret_key)

    code, message = env.run(env.config(), environ=read_only)

    assert (code, message["reason"]) == (4, "AccessDenied"), message
    assert "writing s3://" in message["message"]
    assert env.snapshot() == before


def test_resources_from_the_environment_must_be_a_json_object(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())

    code, message = env.run(env.config(), environ={**env.environ(), "RETRAIN_RESOURCES": "[1]"})

    assert (code, message["reason"]) == (2, "InvalidConfig")
    assert "$RETRAIN_RESOURCES must be a JSON object" in message["message"]
    assert env.keys() == [DATA_KEY]


def test_unreachable_storage_is_a_storage_error(env: Env) -> None:
    config = env.config()
    config["store"]["endpoint"] = "http://127.0.0.1:9"

    code, message = env.run(config)

    assert (code, message["reason"]) == (4, "StorageError"), message
    assert "127.0.0.1:9" in message["message"]


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (None, ["no configuration", "RETRAIN_TRAINER_CONFIG"]),
        ("{not json", ["$RETRAIN_TRAINER_CONFIG is not valid JSON"]),
        ("[]", ["config must be a JSON object"]),
        ('{"model": {"name": "churn", "registry": {"bucket": "models"}}}', ["missing required field config.builtin"]),
    ],
    ids=["absent", "not-json", "not-object", "no-builtin"],
)
def test_unusable_configuration(env: Env, config: str | None, words: list[str]) -> None:
    code, message = env.run(config)

    assert (code, message["reason"]) == (2, "InvalidConfig"), message
    for word in words:
        assert word in message["message"]
    assert env.keys() == []


def test_unknown_command_line_option_is_invalid_config(env: Env) -> None:
    code, message = env.run(env.config(), argv=["--colour", "red"])

    assert (code, message["reason"]) == (2, "InvalidConfig")
    assert "--colour" in message["message"]


def test_unreadable_config_file(env: Env) -> None:
    code, message = env.run(None, argv=["--config", str(env.tmp_path / "missing.json")])

    assert (code, message["reason"]) == (2, "InvalidConfig")
    assert "missing.json" in message["message"]


# --- versions are never overwritten --------------------------------------------------------------


def test_same_version_twice_is_version_exists_and_leaves_the_first(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    config = env.config()
    config["run"]["version"] = "v7"
    code, _ = env.run(config)
    assert code == 0
    before = env.snapshot()

    code, message = env.run(config)

    assert (code, message["reason"]) == (4, "VersionExists")
    assert "version v7 already exists" in message["message"]
    assert env.snapshot() == before


def test_any_object_in_the_version_folder_blocks_the_version(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    env.put("churn/versions/v8/partial.bin", b"left over")
    config = env.config()
    config["run"]["version"] = "v8"
    before = env.snapshot()

    code, message = env.run(config)

    assert (code, message["reason"]) == (4, "VersionExists")
    assert "churn/versions/v8/partial.bin" in message["message"]
    assert env.snapshot() == before


class BlindStore:
    """An S3 store that never sees existing versions, as if another run wrote one after the check."""

    def __init__(self, inner: S3Store, *, fail_metadata: bool = False) -> None:
        self.inner = inner
        self.fail_metadata = fail_metadata

    def read(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
        return self.inner.read(bucket, key)

    def first_key(self, bucket: str, prefix: str) -> str | None:
        return None

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        return self.inner.list(bucket, prefix)

    def put_new(self, bucket: str, key: str, body: bytes, *, content_type: str) -> None:
        if self.fail_metadata and key.endswith(layout.METADATA_FILENAME):
            raise StoreError("Unavailable", "simulated outage")
        self.inner.put_new(bucket, key, body, content_type=content_type)

    def put_if(self, bucket: str, key: str, body: bytes, *, content_type: str, etag: str | None) -> None:
        self.inner.put_if(bucket, key, body, content_type=content_type, etag=etag)

    def delete(self, bucket: str, key: str) -> None:
        self.inner.delete(bucket, key)


def _store(env: Env) -> S3Store:
    for name, value in env.environ().items():
        env.monkeypatch.setenv(name, value)
    config = parse_config(env.config())
    return S3Store.from_config(config.store)


def test_conditional_put_refuses_a_version_written_after_the_check(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    config = env.config()
    config["run"]["version"] = "raced"
    assert env.run(config)[0] == 0
    before = env.snapshot()

    with pytest.raises(StorageError) as caught:
        train(parse_config(config), store=BlindStore(_store(env)))

    assert caught.value.reason == "VersionExists"
    assert "appeared while training" in caught.value.message
    assert env.snapshot() == before


def test_failed_metadata_write_removes_the_model_it_wrote(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    config = env.config()
    config["run"]["version"] = "half"
    before = env.snapshot()

    with pytest.raises(StorageError) as caught:
        train(parse_config(config), store=BlindStore(_store(env), fail_metadata=True))

    assert caught.value.reason == "StorageError"
    assert "simulated outage" in caught.value.message
    assert env.snapshot() == before


def test_injected_clock_names_the_version_and_training_time(env: Env) -> None:
    env.put(DATA_KEY, breast_cancer_csv())
    moment = datetime(2026, 11, 27, 19, 40, tzinfo=UTC)
    ticks = iter([100.0, 101.25])

    result = train(parse_config(env.config()), store=_store(env), clock=lambda: moment, monotonic=lambda: next(ticks))

    assert result.version == layout.new_version_id(moment, "churn-retrain-1")
    assert result.version.startswith("20261127T194000Z-")
    assert result.trained_at == moment
    assert result.duration_seconds == 1.25
    assert result.metadata["trainedAt"] == "2026-11-27T19:40:00Z"
    assert moment - timedelta(seconds=1) < layout.version_time(result.version) <= moment  # type: ignore[operator]
