"""Policy bodies shared by the tests: a valid one, and helpers to vary it."""

from __future__ import annotations

import copy
from typing import Any

BASE: dict[str, Any] = {
    "apiVersion": "retrain.dev/v1alpha1",
    "kind": "RetrainPolicy",
    "metadata": {"name": "churn", "namespace": "team-a", "uid": "uid-1", "generation": 1,
                 "creationTimestamp": "2026-11-01T00:00:00Z"},
    "spec": {
        "model": {"name": "churn", "registry": {"bucket": "models", "prefix": "churn/",
                                                "credentialsSecret": "s3-creds"}},
        "metrics": {"endpoint": "default", "selector": {"model": "churn"}},
        "evaluation": {"interval": "30s"},
        "triggers": [{"name": "accuracy-drop", "for": "5m",
                      "accuracyDecay": {"metric": "model_accuracy", "window": "5m", "fixedBaseline": 0.9,
                                        "maxDrop": 0.05}}],
        "decision": {"cooldown": "1h"},
        "training": {"builtin": {"data": {"key": "data/train.csv"}, "target": "label",
                                 "estimator": "sklearn.linear_model.LogisticRegression"}},
    },
}


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
