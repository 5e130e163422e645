"""Policy bodies shared by the tests: a valid one, and helpers to vary it."""

from __future__ import annotations

import copy
from typing import Any

from retrain_operator.domain.api import ModelStoreSpec, parse_model_store_spec

BASE: dict[str, Any] = {
    "apiVersion": "retrain.dev/v1alpha1",
    "kind": "RetrainPolicy",
    "metadata": {
        "name": "churn",
        "namespace": "team-a",
        "uid": "uid-1",
        "generation": 1,
        "creationTimestamp": "2026-11-01T00:00:00Z",
    },
    "spec": {
        "model": {
            "name": "churn",
            "registry": {"store": "default", "bucket": "models", "prefix": "churn/", "credentialsSecret": "s3-creds"},
        },
        "metrics": {"endpoint": "default", "selector": {"model": "churn"}},
        "evaluation": {"interval": "30s"},
        "triggers": [
            {
                "name": "accuracy-drop",
                "for": "5m",
                "accuracyDecay": {"metric": "model_accuracy", "window": "5m", "fixedBaseline": 0.9, "maxDrop": 0.05},
            }
        ],
        "decision": {"cooldown": "1h"},
        "training": {
            "builtin": {
                "data": {"key": "data/train.csv"},
                "target": "label",
                "estimator": "sklearn.linear_model.LogisticRegression",
            }
        },
    },
}


# The cluster admin's ModelStore the test policies name ("default"): every field set.
STORE_SPEC: dict[str, Any] = {
    "endpoint": "https://s3.example.com",
    "region": "eu-west-1",
    "addressingStyle": "path",
    "credentialsSecret": {"name": "model-store-s3"},
}


def store(name: str = "default", **overrides: Any) -> ModelStoreSpec:
    """The test ModelStore, parsed as the operator reads it."""
    return parse_model_store_spec(name, {**copy.deepcopy(STORE_SPEC), **overrides})


def policy(**spec_overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["spec"].update(copy.deepcopy(spec_overrides))
    return body


def set_path(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``value`` at the dotted ``path`` (``triggers[0]`` indexes a list)."""
    out = copy.deepcopy(body)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        name, _, index = part.partition("[")
        node = node.setdefault(name, {})
        if index:
            node = node[int(index.rstrip("]"))]
    node[parts[-1]] = value
    return out


# The built-in trainer's settings with every field set, in two policies since some fields exclude others
# (key or prefix, features or excludeFeatures): the round trip through the Job covers each field.
EVERY_TRAINER_SETTING: list[dict[str, Any]] = [
    policy(
        model={
            "name": "churn.v2",
            "registry": {
                "bucket": "models",
                "prefix": "teams/churn/",
                "store": "eu-store",
                "region": "eu-west-1",
                "credentialsSecret": "s3-creds",
            },
        },
        training={
            "builtin": {
                "data": {
                    "bucket": "events",
                    "prefix": "daily/",
                    "format": "parquet",
                    "window": {"column": "ts", "last": "1w2d", "partitions": 30},
                },
                "target": "churned",
                "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                "excludeFeatures": ["customer_id"],
                "params": {"max_iter": 300, "learning_rate": 0.05, "class_weight": {"0": 1, "1": 2.5}},
                "split": {"method": "time", "column": "ts"},
                "testSize": 0.25,
                "seed": 7,
                "metric": "roc_auc",
                "histograms": {
                    "features": {"tenure": [1, 6, 12.5, 24], "age": [18, 30, 65]},
                    "predictions": [0.1, 0.5, 0.9],
                },
            }
        },
        promotion={"minScore": 0.8, "mustBeatChampion": False, "minImprovement": 0.01},
    ),
    policy(
        training={
            "builtin": {
                "data": {"key": "data/train.csv"},
                "target": "label",
                "estimator": "sklearn.linear_model.Ridge",
                "features": ["tenure", "plan"],
                "metric": "rmse",
                "histograms": {"features": {"tenure": [1, 6]}},
            }
        }
    ),
]
