"""What users meet at the API server: our CRDs' schemas, CEL rules and strict field validation.

Every test talks to the session's real kube-apiserver through kubectl with its defaults (strict field
validation, no ``--validate=false``), as a user would, each in a namespace of its own. The CEL rules are
a table: each broken object must be refused with the message written in ``crds/``, next to a neighbour
that keeps the rule and is accepted. The same table is run through the operator's Python validation,
which still judges objects admitted before a rule existed (``Valid=False``); where the two differ on
purpose, the table says so.

What CEL cannot express stays in Python only: cron field values, the minimum of a duration (our
durations allow ``d``, which CEL's ``duration()`` does not), whether the named MetricsEndpoint exists and
admits the namespace, and an image from an allowed registry (operator flags the schema cannot see).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack import render_manifests
from hack.render_manifests import render_chart
from retrain_operator.domain import api
from retrain_operator.domain.api import (
    InvalidSpec,
    parse_budget_spec,
    parse_endpoint_spec,
    parse_model_store_spec,
    parse_policy_spec,
)
from retrain_operator.domain.drift import STATISTIC_NAMES, get_statistic
from tests.policies import BASE, policy, set_path
from tests.support.cluster import Kubectl
from tests.test_chart import VARIANTS, WATCHED

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CLUSTER_SCOPED = {"MetricsEndpoint", "ModelStore"}
PARSERS = {
    "RetrainPolicy": parse_policy_spec,
    "MetricsEndpoint": parse_endpoint_spec,
    "RetrainBudget": parse_budget_spec,
    "ModelStore": lambda spec: parse_model_store_spec("example", spec),
}


def document(kind: str, spec: Mapping[str, Any], *, name: str, namespace: str) -> dict[str, Any]:
    """An object of ours; cluster-scoped ones get the namespace in their name, so tests never share one."""
    metadata = {"name": f"{namespace}-{name}"} if kind in CLUSTER_SCOPED else {"name": name, "namespace": namespace}
    return {"apiVersion": api.API_VERSION, "kind": kind, "metadata": metadata, "spec": copy.deepcopy(dict(spec))}


def as_input(*docs: Mapping[str, Any]) -> str:
    """Objects for kubectl, as JSON: its YAML reader takes the ``y`` PyYAML writes for "y" as a boolean."""
    return json.dumps(docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": list(docs)})


def stored(admin: Kubectl, doc: Mapping[str, Any]) -> Any:
    meta = doc["metadata"]
    return admin.get(doc["kind"].lower(), meta["name"], namespace=meta.get("namespace"))


@contextlib.contextmanager
def cleaned_up(admin: Kubectl, docs: list[dict[str, Any]]) -> Iterator[None]:
    """Delete the cluster-scoped ``docs`` at the end; namespaced ones go with their namespace."""
    try:
        yield
    finally:
        for doc in docs:
            if doc["kind"] in CLUSTER_SCOPED:
                admin("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found", "--wait=false")


# ----------------------------------------------------------------------------------------------
# The examples, as written


def localized(text: str, namespace: str) -> str:
    """An example's own YAML moved into ``namespace``; a cluster-scoped object gets a name of its own there."""
    parts = []
    for part in re.split(r"(?m)^---\n", text):
        doc = yaml.safe_load(part)
        if doc and doc["kind"] in CLUSTER_SCOPED:
            part = re.sub(r"(?m)^  name: (.*)$", rf"  name: {namespace}-\1", part, count=1)
        parts.append(re.sub(r"(?m)^  namespace: .*$", f"  namespace: {namespace}", part))
    return "---\n".join(parts)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_accepted_and_means_the_same_to_the_operator(
    admin: Kubectl, unique_namespace: str, path: Path
) -> None:
    text = localized(path.read_text(), unique_namespace)
    docs = [d for d in yaml.safe_load_all(text) if d]
    with cleaned_up(admin, docs):
        applied = admin("apply", "-f", "-", input=text)
        assert applied.returncode == 0, applied.stderr
        for doc in docs:
            body = stored(admin, doc)
            assert body is not None, f"{path.name}: {doc['metadata']['name']} was not stored"
            # kubectl read the YAML as the parser does, and the server's defaults are the parser's.
            parse = PARSERS[doc["kind"]]
            assert parse(body["spec"]) == parse(doc["spec"]), f"{path.name}: the stored object reads differently"


# ----------------------------------------------------------------------------------------------
# Strict field validation: an unknown field is refused, never dropped


def endpoint_spec() -> dict[str, Any]:
    return {"url": "http://prometheus.monitoring:9090", "auth": {"bearerTokenSecret": {"name": "token"}}}


def budget_spec() -> dict[str, Any]:
    return {"window": "24h", "limits": {"runs": 3}}


UNKNOWN_FIELDS: list[tuple[str, str, Any]] = [
    ("RetrainPolicy", "spec.triggers[0].accuracyDecy", {"metric": "model_accuracy", "maxDrop": 0.05}),
    ("RetrainPolicy", "spec.trainng", {"builtin": {"target": "label"}}),
    ("RetrainPolicy", "spec.triggers[0].accuracyDecay.maxdrop", 0.1),
    ("RetrainPolicy", "spec.training.builtin.estimater", "sklearn.svm.SVC"),
    ("RetrainPolicy", "spec.decision.coolDown", "2h"),
    ("RetrainPolicy", "spec.metrics.selectors", {"model": "churn"}),
    ("MetricsEndpoint", "spec.allowRawQuery", True),
    ("MetricsEndpoint", "spec.auth.bearerTokenSecret.namespace", "kube-system"),
    ("RetrainBudget", "spec.limits.run", 3),
]


def valid_spec(kind: str) -> dict[str, Any]:
    specs: dict[str, dict[str, Any]] = {
        "RetrainPolicy": policy()["spec"],
        "MetricsEndpoint": endpoint_spec(),
        "RetrainBudget": budget_spec(),
    }
    return specs[kind]


@pytest.mark.parametrize(("kind", "path", "value"), UNKNOWN_FIELDS, ids=[f"{k}:{p}" for k, p, _ in UNKNOWN_FIELDS])
def test_an_unknown_field_is_refused_by_name(
    admin: Kubectl, unique_namespace: str, kind: str, path: str, value: Any
) -> None:
    doc = set_path(document(kind, valid_spec(kind), name="typo", namespace=unique_namespace), path, value)
    with cleaned_up(admin, [doc]):
        result = admin("apply", "-f", "-", input=as_input(doc))
        assert result.returncode != 0, f"{path} was accepted"
        assert f'strict decoding error: unknown field "{path}"' in result.stderr, result.stderr
        assert stored(admin, doc) is None


# ----------------------------------------------------------------------------------------------
# CEL rules: the broken object is refused with our message, its neighbour is accepted

ACCURACY = {"metric": "model_accuracy", "maxDrop": 0.05}
DRIFT = {"metric": "feature_value", "reference": {}, "threshold": 0.2}
BUILTIN = {"data": {"key": "data/train.csv"}, "target": "label", "estimator": "sklearn.linear_model.LogisticRegression"}
OWN_IMAGE = {"image": "registry.example.com/team-a/trainer:1", "command": ["python", "train.py"]}


def trigger(**kinds: Any) -> dict[str, Any]:
    """Spec overrides of :func:`tests.policies.policy` with one trigger named ``t``."""
    return {"triggers": [{"name": "t", **kinds}]}


def builtin(**changes: Any) -> dict[str, Any]:
    return {"training": {"builtin": {**BUILTIN, **changes}}}


def own_image(**changes: Any) -> dict[str, Any]:
    return {"training": {**OWN_IMAGE, **changes}}


@dataclass(frozen=True)
class Rule:
    """One CEL rule: a spec that breaks it, a neighbour that keeps it, and what the server says.

    For RetrainPolicy, ``broken`` and ``kept`` are overrides of :func:`tests.policies.policy`; for the other
    kinds they are whole specs. ``message`` is what the server shows; ``written`` is the rule's static
    ``message`` in ``crds/`` when a ``messageExpression`` renders another. ``python`` says whether the
    operator's own validation refuses ``broken`` too.
    """

    id: str
    broken: dict[str, Any]
    kept: dict[str, Any]
    field: str
    message: str
    kind: str = "RetrainPolicy"
    python: bool = True
    written: str | None = None

    def spec(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return policy(**overrides)["spec"] if self.kind == "RetrainPolicy" else copy.deepcopy(overrides)


def too_long(field: str, value: str, most: str) -> tuple[str, str]:
    """A duration bound's message as the server renders it, and as written in ``crds/``."""
    return (
        f"{field} {value} is longer than {most}, the most it may be; give at most {most}, in at most four parts "
        "(for example 1h30m)",
        f"{field} must be at most {most}, in at most four parts (for example 1h30m)",
    )


def duration_rule(rule_id: str, broken: Any, kept: Any, path: str, value: str, most: str, **extra: Any) -> Rule:
    message, written = too_long(path.rsplit(".", 1)[-1], value, most)
    return Rule(rule_id, broken, kept, path, message, written=written, **extra)


COST = {"valuePerAccuracyPointPerDay": 1}
DURATION_RULES = [
    duration_rule(
        "for-too-long",
        trigger(accuracyDecay=ACCURACY, **{"for": "3651d"}),
        trigger(accuracyDecay=ACCURACY, **{"for": "1d"}),
        "spec.triggers[0].for",
        "3651d",
        "3650d",
    ),
    duration_rule(
        "interval-too-long",
        {"evaluation": {"interval": "25h"}},
        {"evaluation": {"interval": "24h"}},
        "spec.evaluation.interval",
        "25h",
        "24h",
    ),
    duration_rule(
        "window-too-long",
        trigger(accuracyDecay={**ACCURACY, "window": "3651d"}),
        trigger(accuracyDecay={**ACCURACY, "window": "1d"}),
        "spec.triggers[0].accuracyDecay.window",
        "3651d",
        "3650d",
    ),
    duration_rule(
        "offset-too-long",
        trigger(drift={**DRIFT, "reference": {"offset": "3651d"}}),
        trigger(drift={**DRIFT, "reference": {"offset": "30d"}}),
        "spec.triggers[0].drift.reference.offset",
        "3651d",
        "3650d",
    ),
    duration_rule(
        "cooldown-too-long",
        {"decision": {"cooldown": "366d"}},
        {"decision": {"cooldown": "365d"}},
        "spec.decision.cooldown",
        "366d",
        "365d",
    ),
    duration_rule(
        "limits-window-too-long",
        {"decision": {"limits": {"window": "367d", "runs": 1}}},
        {"decision": {"limits": {"window": "366d", "runs": 1}}},
        "spec.decision.limits.window",
        "367d",
        "366d",
    ),
    duration_rule(
        "horizon-too-long",
        {"decision": {"costBenefit": {**COST, "horizon": "3651d"}}},
        {"decision": {"costBenefit": {**COST, "horizon": "365d"}}},
        "spec.decision.costBenefit.horizon",
        "3651d",
        "3650d",
    ),
    duration_rule(
        "estimated-duration-too-long",
        {"decision": {"costBenefit": {**COST, "estimatedDuration": "31d"}}},
        {"decision": {"costBenefit": {**COST, "estimatedDuration": "30d"}}},
        "spec.decision.costBenefit.estimatedDuration",
        "31d",
        "30d",
    ),
    duration_rule(
        "data-window-too-long",
        builtin(data={"prefix": "p/", "window": {"column": "ts", "last": "3651d"}}),
        builtin(data={"prefix": "p/", "window": {"column": "ts", "last": "30d"}}),
        "spec.training.builtin.data.window.last",
        "3651d",
        "3650d",
    ),
    duration_rule(
        "deadline-too-long",
        own_image(deadline="31d"),
        own_image(deadline="30d"),
        "spec.training.deadline",
        "31d",
        "30d",
    ),
    duration_rule(
        "budget-window-too-long",
        {"window": "367d", "limits": {"runs": 3}},
        {"window": "366d", "limits": {"runs": 3}},
        "spec.window",
        "367d",
        "366d",
        kind="RetrainBudget",
    ),
    duration_rule(
        "endpoint-timeout-too-long",
        {"url": "http://p:9090", "timeout": "11m"},
        {"url": "http://p:9090", "timeout": "10m"},
        "spec.timeout",
        "11m",
        "10m",
        kind="MetricsEndpoint",
    ),
]

CLEAR_THRESHOLD = (
    "clearThreshold is on the firing side of threshold; for operator > or >= set it at or below "
    "threshold, for < or <= at or above"
)
RULES = [
    Rule(
        "two-trigger-types",
        trigger(schedule={"cron": "0 3 * * *"}, dataVolume={"metric": "m", "minRelative": 0.2}),
        trigger(schedule={"cron": "0 3 * * *"}),
        "spec.triggers[0]",
        "set exactly one trigger type in each trigger: accuracyDecay, query, schedule, drift or dataVolume",
    ),
    Rule(
        "no-trigger-type",
        {"triggers": [{"name": "t", "for": "5m"}]},
        trigger(accuracyDecay=ACCURACY),
        "spec.triggers[0]",
        "set exactly one trigger type in each trigger: accuracyDecay, query, schedule, drift or dataVolume",
    ),
    Rule(
        "clear-drop-above-max-drop",
        trigger(accuracyDecay={**ACCURACY, "clearDrop": 0.1}),
        trigger(accuracyDecay={**ACCURACY, "clearDrop": 0.05}),
        "spec.triggers[0].accuracyDecay.clearDrop",
        "clearDrop 0.1 exceeds maxDrop 0.05; set clearDrop at most maxDrop, or leave it out (it defaults to maxDrop)",
        written="clearDrop exceeds maxDrop; set clearDrop at most maxDrop, or leave it out (it defaults to maxDrop)",
    ),
    Rule(
        "fixed-baseline-missing",
        trigger(accuracyDecay={**ACCURACY, "baseline": "Fixed"}),
        trigger(accuracyDecay={**ACCURACY, "baseline": "Fixed", "fixedBaseline": 0.9}),
        "spec.triggers[0].accuracyDecay.fixedBaseline",
        "fixedBaseline is required when baseline is Fixed; give the accuracy (0..1) to compare with, or use "
        "baseline Model",
    ),
    Rule(
        "clear-threshold-above",
        trigger(query={"promql": "up", "operator": ">", "threshold": 1, "clearThreshold": 2}),
        trigger(query={"promql": "up", "operator": ">", "threshold": 1, "clearThreshold": 0.5}),
        "spec.triggers[0].query.clearThreshold",
        "clearThreshold 2 must be at or below threshold 1 for operator >: the trigger clears on the other side "
        "of the level it fires at",
        written=CLEAR_THRESHOLD,
    ),
    Rule(
        "clear-threshold-below",
        trigger(query={"promql": "up", "operator": "<=", "threshold": 0.8, "clearThreshold": 0.5}),
        trigger(query={"promql": "up", "operator": "<=", "threshold": 0.8, "clearThreshold": 0.8}),
        "spec.triggers[0].query.clearThreshold",
        "clearThreshold 0.5 must be at or above threshold 0.8 for operator <=: the trigger clears on the other "
        "side of the level it fires at",
        written=CLEAR_THRESHOLD,
    ),
    Rule(
        "blank-promql",
        trigger(query={"promql": "   ", "operator": ">", "threshold": 1}),
        trigger(query={"promql": "up", "operator": ">", "threshold": 1}),
        "spec.triggers[0].query.promql",
        "promql is blank; give a PromQL expression that returns one series or a scalar",
    ),
    Rule(
        "cron-four-fields",
        trigger(schedule={"cron": "0 3 * *"}),
        trigger(schedule={"cron": " 0 3 * * 1 "}),
        "spec.triggers[0].schedule.cron",
        'cron needs five fields (minute hour day-of-month month day-of-week), for example "0 3 * * *"',
    ),
    Rule(
        "drift-threshold-and-learned",
        trigger(drift={**DRIFT, "learnThreshold": {"k": 3}}),
        trigger(drift=DRIFT),
        "spec.triggers[0].drift",
        "set exactly one of threshold (a fixed level) or learnThreshold (learned from the reference period)",
    ),
    Rule(
        "drift-no-threshold",
        trigger(drift={"metric": "feature_value", "reference": {}}),
        trigger(drift={"metric": "feature_value", "reference": {}, "learnThreshold": {"k": 3}}),
        "spec.triggers[0].drift",
        "set exactly one of threshold (a fixed level) or learnThreshold (learned from the reference period)",
    ),
    Rule(
        "learned-threshold-with-p-value",
        trigger(
            drift={
                "metric": "feature_value",
                "reference": {},
                "statistic": "ks",
                "usePValue": True,
                "learnThreshold": {"k": 3},
            }
        ),
        trigger(
            drift={"metric": "feature_value", "reference": {}, "statistic": "ks", "usePValue": True, "threshold": 0.01}
        ),
        "spec.triggers[0].drift.learnThreshold",
        "learnThreshold cannot be combined with usePValue; give the significance level as threshold",
    ),
    Rule(
        "learned-threshold-needs-window",
        trigger(drift={"metric": "feature_value", "reference": {"source": "Model"}, "learnThreshold": {"k": 3}}),
        trigger(drift={"metric": "feature_value", "reference": {"source": "Window"}, "learnThreshold": {"k": 3}}),
        "spec.triggers[0].drift.learnThreshold",
        "learnThreshold needs reference.source Window; it learns from the reference period",
    ),
    Rule(
        "p-value-of-psi",
        trigger(drift={**DRIFT, "usePValue": True}),
        trigger(drift={**DRIFT, "usePValue": True, "statistic": "chiSquare"}),
        "spec.triggers[0].drift.usePValue",
        "psi has no p-value; use statistic chiSquare or ks with usePValue, or set usePValue false and put the "
        "threshold on the value",
        written="usePValue needs a statistic with a p-value (chiSquare or ks); change the statistic, or set "
        "usePValue false and put the threshold on the value",
    ),
    Rule(
        "share-without-min-share",
        trigger(drift={**DRIFT, "mode": "share"}),
        trigger(drift={**DRIFT, "mode": "share", "minShare": 0.3}),
        "spec.triggers[0].drift.minShare",
        "minShare is required when mode is share: the fraction of compared features that must drift, for example 0.3",
    ),
    # The operator ignores minShare with mode any; the server refuses it, as it is almost surely a forgotten mode.
    Rule(
        "min-share-without-share",
        trigger(drift={**DRIFT, "minShare": 0.3}),
        trigger(drift={**DRIFT, "minShare": 0.3, "mode": "share"}),
        "spec.triggers[0].drift.minShare",
        "minShare applies only with mode share; set mode share, or remove minShare",
        python=False,
    ),
    Rule(
        "fixed-reference-without-counts",
        trigger(drift={**DRIFT, "reference": {"source": "Fixed", "counts": {}}}),
        trigger(drift={**DRIFT, "reference": {"source": "Fixed", "counts": {"age": {"30": 5, "+Inf": 20}}}}),
        "spec.triggers[0].drift.reference.counts",
        "reference.source Fixed needs counts: per feature, the cumulative count of each le bound, for example "
        "age: {'10': 5, '+Inf': 20}",
    ),
    Rule(
        "data-volume-count-and-share",
        trigger(dataVolume={"metric": "labels_total", "minNewSamples": 1000, "minRelative": 0.2}),
        trigger(dataVolume={"metric": "labels_total", "minNewSamples": 1000}),
        "spec.triggers[0].dataVolume",
        "set exactly one of minNewSamples (a count) or minRelative (a share of the rows the current model was "
        "trained on)",
    ),
    Rule(
        "label-name",
        {"metrics": {"endpoint": "default", "selector": {"model-name": "churn"}}},
        {"metrics": {"endpoint": "default", "selector": {"model_name": "churn"}}},
        "spec.metrics.selector",
        "every selector key must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*); rename or remove the others",
    ),
    Rule(
        "inline-limits-empty",
        {"decision": {"limits": {"window": "168h"}}},
        {"decision": {"limits": {"window": "168h", "runs": 3}}},
        "spec.decision.limits",
        "set at least one of runs, cpuHours, gpuHours or cost",
    ),
    Rule(
        "no-trainer",
        {"training": {"image": OWN_IMAGE["image"]}},
        own_image(),
        "spec.training",
        "set builtin (the scikit-learn trainer) or command (a container of your own)",
    ),
    Rule(
        "builtin-with-command",
        {"training": {"builtin": BUILTIN, "command": ["python", "train.py"]}},
        {"training": {"builtin": BUILTIN, "image": OWN_IMAGE["image"]}},
        "spec.training.command",
        "command cannot be combined with builtin; the built-in trainer has its own command",
    ),
    Rule(
        "data-key-and-prefix",
        builtin(data={"key": "data/train.csv", "prefix": "data/"}),
        builtin(data={"prefix": "data/"}),
        "spec.training.builtin.data",
        "set exactly one of key (one object) or prefix (every object under it)",
    ),
    Rule(
        "window-without-column",
        builtin(data={"prefix": "data/", "window": {"last": "30d"}}),
        builtin(data={"prefix": "data/", "window": {"last": "30d", "column": "ts"}}),
        "spec.training.builtin.data.window.column",
        "column is required with last; name the time column that last counts back on",
    ),
    Rule(
        "time-split-without-column",
        builtin(split={"method": "time"}),
        builtin(split={"method": "time", "column": "ts"}),
        "spec.training.builtin.split.column",
        "column is required for a time split; name the column to order rows by",
    ),
    # Whether the path is under the admin's allowlist is the operator's (check_estimator): the CRD cannot see it.
    Rule(
        "estimator-not-an-import-path",
        builtin(estimator="os.system()"),
        builtin(estimator="xgboost.XGBClassifier"),
        "spec.training.builtin.estimator",
        "estimator must be the import path of an estimator class, for example sklearn.linear_model.LogisticRegression",
    ),
    Rule(
        "feature-edges-not-increasing",
        builtin(histograms={"features": {"age": [18, 18, 65]}}),
        builtin(histograms={"features": {"age": [18, 30, 65]}}),
        "spec.training.builtin.histograms.features[age]",
        "le bounds must be strictly increasing, for example [0.1, 0.5, 1, 5]",
    ),
    Rule(
        "prediction-edges-not-increasing",
        builtin(histograms={"predictions": [0.5, 0.1]}),
        builtin(histograms={"predictions": [0.1, 0.5]}),
        "spec.training.builtin.histograms.predictions",
        "le bounds must be strictly increasing, for example [0.1, 0.5, 1, 5]",
    ),
    Rule(
        "reserved-env",
        own_image(env=[{"name": "AWS_ENDPOINT_URL", "value": "http://169.254.169.254"}]),
        own_image(env=[{"name": "MY_ENDPOINT_URL", "value": "http://169.254.169.254"}]),
        "spec.training.env[0].name",
        "AWS_ENDPOINT_URL is reserved: set by the operator, or it changes what the trainer loads, trusts or talks to "
        "(RETRAIN_*, AWS_*, BOTO_*, PYTHON*, LD_*, proxies, CA bundles, PATH, HOME, TMPDIR); choose another name",
        written="the variable is reserved: set by the operator, or it changes what the trainer loads, trusts or talks "
        "to (RETRAIN_*, AWS_*, BOTO_*, PYTHON*, LD_*, proxies, CA bundles, PATH, HOME, TMPDIR); choose another name",
    ),
    Rule(
        "reserved-env-prefix-any-case",
        own_image(env=[{"name": "ld_preload", "value": "/tmp/x.so"}]),
        own_image(env=[{"name": "OLD_PRELOAD", "value": "/tmp/x.so"}]),
        "spec.training.env[0].name",
        "ld_preload is reserved: set by the operator, or it changes what the trainer loads, trusts or talks to "
        "(RETRAIN_*, AWS_*, BOTO_*, PYTHON*, LD_*, proxies, CA bundles, PATH, HOME, TMPDIR); choose another name",
        written="the variable is reserved: set by the operator, or it changes what the trainer loads, trusts or talks "
        "to (RETRAIN_*, AWS_*, BOTO_*, PYTHON*, LD_*, proxies, CA bundles, PATH, HOME, TMPDIR); choose another name",
    ),
    Rule(
        "selector-reserved-label",
        {"metrics": {"endpoint": "default", "selector": {"__name__": "up"}}},
        {"metrics": {"endpoint": "default", "selector": {"name": "up"}}},
        "spec.metrics.selector",
        "selector keys starting with __ are Prometheus' own (__name__ is the metric name) and le is the histogram "
        "bucket bound; name another label, at most 128 characters",
    ),
    Rule(
        "feature-label-le",
        trigger(drift={**DRIFT, "featureLabel": "le"}),
        trigger(drift={**DRIFT, "featureLabel": "lens"}),
        "spec.triggers[0].drift.featureLabel",
        "featureLabel must not start with __ (Prometheus' own labels) nor be le (the histogram bucket bound); name "
        "the label that holds the feature",
    ),
    *DURATION_RULES,
    # The operator would use the Secret and ignore the value; the server refuses the ambiguity.
    Rule(
        "env-value-and-secret",
        own_image(env=[{"name": "TOKEN", "value": "x", "secretKeyRef": {"name": "s", "key": "k"}}]),
        own_image(env=[{"name": "TOKEN", "secretKeyRef": {"name": "s", "key": "k"}}]),
        "spec.training.env[0]",
        "set value or secretKeyRef, not both",
        python=False,
    ),
    Rule(
        "resource-name",
        own_image(resources={"requests": {"hugepages-2Mi": "1Gi"}}),
        own_image(resources={"requests": {"memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}}),
        "spec.training.resources.requests",
        "only cpu, memory, ephemeral-storage, nvidia.com/gpu and amd.com/gpu may be named",
    ),
    # These two would fail only when the Job is created; the server says so when the policy is applied.
    Rule(
        "not-a-quantity",
        own_image(resources={"limits": {"memory": "lots"}}),
        own_image(resources={"limits": {"memory": "4Gi"}}),
        "spec.training.resources.limits",
        "every value must be a quantity, for example 500m, 2 or 4Gi",
        python=False,
    ),
    Rule(
        "request-above-limit",
        own_image(resources={"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}),
        own_image(resources={"requests": {"cpu": "1000m"}, "limits": {"cpu": 1}}),
        "spec.training.resources",
        "a request exceeds its limit; set every request at most the limit of the same name",
        python=False,
    ),
    Rule(
        "gpu-request-without-limit",
        own_image(resources={"requests": {"nvidia.com/gpu": 1}}),
        own_image(resources={"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": "1"}}),
        "spec.training.resources",
        "a GPU request needs a limit of the same number (GPUs are not shared); set the limit to the request, or "
        "give only the limit",
        python=False,
    ),
    Rule(
        "gpu-fraction",
        own_image(resources={"limits": {"amd.com/gpu": "500m"}}),
        own_image(resources={"limits": {"amd.com/gpu": 2}}),
        "spec.training.resources.limits",
        "GPUs (nvidia.com/gpu, amd.com/gpu) are whole devices; give a whole number, for example 1",
        python=False,
    ),
    Rule(
        "budget-without-limits",
        {"window": "24h", "limits": {}},
        budget_spec(),
        "spec.limits",
        "set at least one of runs, cpuHours, gpuHours or cost",
        kind="RetrainBudget",
    ),
    # MetricsEndpoint: the Prometheus client refuses these when it is built, at the first evaluation.
    Rule(
        "url-with-credentials",
        {"url": "http://admin:secret@prometheus:9090"},
        {"url": "http://prometheus:9090"},
        "spec.url",
        "url must not carry credentials (user:password@host); name a Secret in auth.basicAuthSecret "
        "or auth.bearerTokenSecret instead",
        kind="MetricsEndpoint",
        python=False,
    ),
    Rule(
        "url-with-query",
        {"url": "http://prometheus:9090/?timeout=5s"},
        {"url": "http://prometheus:9090/prom/"},
        "spec.url",
        "url must not have a query string or fragment; give the base URL of the Prometheus HTTP API, "
        "for example http://prometheus.monitoring:9090",
        kind="MetricsEndpoint",
        python=False,
    ),
    # ModelStore: the server and the operator's parser both refuse a URL carrying secrets or a query.
    Rule(
        "store-endpoint-with-credentials",
        {"endpoint": "http://admin:secret@seaweedfs.storage:8333"},
        {"endpoint": "http://seaweedfs.storage:8333"},
        "spec.endpoint",
        "endpoint must not carry credentials (user:password@host); name a Secret in credentialsSecret instead",
        kind="ModelStore",
    ),
    Rule(
        "store-endpoint-with-query",
        {"endpoint": "http://seaweedfs.storage:8333/?x=1"},
        {"endpoint": "http://seaweedfs.storage:8333/"},
        "spec.endpoint",
        "endpoint must not have a query string or fragment, for example http://seaweedfs.storage:8333",
        kind="ModelStore",
    ),
    Rule(
        "tenant-header-name",
        {"url": "http://p:9090", "tenantHeader": "X Scope OrgID"},
        {"url": "http://p:9090", "tenantHeader": "X-Scope-OrgID"},
        "spec.tenantHeader",
        "tenantHeader must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), for example X-Scope-OrgID",
        kind="MetricsEndpoint",
        python=False,
    ),
    Rule(
        "header-name",
        {"url": "http://p:9090", "headers": {"X-Team: a": "b"}},
        {"url": "http://p:9090", "headers": {"X-Team": "a"}},
        "spec.headers",
        "every key of headers must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
        kind="MetricsEndpoint",
        python=False,
    ),
    Rule(
        "header-value-line-break",
        {"url": "http://p:9090", "headers": {"X-Team": "a\r\nX-Admin: 1"}},
        {"url": "http://p:9090", "headers": {"X-Team": "a, X-Admin 1"}},
        "spec.headers",
        "header values must not contain line breaks or NUL characters",
        kind="MetricsEndpoint",
        python=False,
    ),
    Rule(
        "bearer-and-basic-auth",
        {"url": "http://p:9090", "auth": {"bearerTokenSecret": {"name": "t"}, "basicAuthSecret": {"name": "b"}}},
        {"url": "http://p:9090", "auth": {"basicAuthSecret": {"name": "b"}}},
        "spec.auth",
        "set bearerTokenSecret or basicAuthSecret, not both; each is sent as the Authorization header",
        kind="MetricsEndpoint",
        python=False,
    ),
]


# Added by the server when a schema error kept it from evaluating the CEL rules.
NOT_CHECKED = "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid"


def causes(stderr: str, *, kind: str, name: str) -> list[str]:
    """The causes of a refusal as kubectl prints them: one inline, or several as bullets."""
    prefix = f'The {kind} "{name}" is invalid: '
    text = stderr.strip()
    assert text.startswith(prefix), stderr
    rest = text.removeprefix(prefix)
    if rest.startswith("\n"):
        return [line.strip().removeprefix("* ") for line in rest.strip().splitlines()]
    return [rest]


def only_error(stderr: str, *, kind: str, name: str) -> str:
    """The one cause of a refusal: each row of a table must break one rule, no more."""
    found = causes(stderr, kind=kind, name=name)
    assert len(found) == 1, f"expected exactly one cause:\n{stderr}"
    return found[0]


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_a_cel_rule_refuses_with_its_message_and_admits_its_neighbour(
    admin: Kubectl, unique_namespace: str, rule: Rule
) -> None:
    broken = document(rule.kind, rule.spec(rule.broken), name="broken", namespace=unique_namespace)
    kept = document(rule.kind, rule.spec(rule.kept), name="kept", namespace=unique_namespace)
    with cleaned_up(admin, [broken, kept]):
        refused = admin("apply", "-f", "-", input=as_input(broken))
        assert refused.returncode != 0, f"{rule.id}: the broken object was accepted"
        cause = only_error(refused.stderr, kind=rule.kind, name=broken["metadata"]["name"])
        assert cause.startswith(f"{rule.field}: Invalid value: "), cause
        assert cause.endswith(rule.message), cause
        assert stored(admin, broken) is None
        accepted = admin("apply", "-f", "-", input=as_input(kept))
        assert accepted.returncode == 0, f"{rule.id}: the neighbour was refused: {accepted.stderr}"


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_the_operator_judges_the_table_as_the_server_does(rule: Rule) -> None:
    """Objects admitted before a rule existed reach the operator; it refuses them too, unless marked otherwise."""
    parse = PARSERS[rule.kind]
    parse(rule.spec(rule.kept))
    if rule.python:
        with pytest.raises(InvalidSpec):
            parse(rule.spec(rule.broken))
    else:
        parse(rule.spec(rule.broken))  # if the operator learns this rule, set python=True


def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of our CRD for ``kind``, from ``crds/``."""
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no CRD for {kind}")


def cel_rules(kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(schema: Mapping[str, Any]) -> None:
        found.extend(schema.get("x-kubernetes-validations", []))
        for sub in (schema.get("properties") or {}).values():
            walk(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), Mapping):
                walk(schema[key])

    walk(crd_schema(kind))
    return found


def test_every_cel_rule_has_a_row_in_the_table() -> None:
    written = {(kind, rule["message"]) for kind in PARSERS for rule in cel_rules(kind)}
    tested = {(row.kind, row.written or row.message) for row in RULES}
    assert tested - written == set(), "rows whose message no CEL rule has"
    assert written - tested == set(), "CEL rules without a row in RULES"


def test_lists_in_the_cel_rules_are_the_operators() -> None:
    rules = {r["rule"] for kind in PARSERS for r in cel_rules(kind)}
    reserved = next(r for r in rules if "upperAscii" in r)
    prefixed = {name for name in api.RESERVED_ENV if name.startswith(api.RESERVED_ENV_PREFIXES)}
    assert set(re.findall(r"'([A-Z_]+)'", reserved)) == (api.RESERVED_ENV - prefixed) | set(api.RESERVED_ENV_PREFIXES)
    p_value = next(r for r in rules if "usePValue" in r and " in [" in r)
    assert set(re.findall(r"'(\w+)'", p_value)) == {s for s in STATISTIC_NAMES if get_statistic(s).has_p_value}
    resources = next(r for r in rules if "'ephemeral-storage'" in r)
    python_resources = {"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "amd.com/gpu"}
    assert set(re.findall(r"'([\w./-]+)'", resources)) == python_resources
    for name in python_resources:  # the operator's own list, seen from its validation
        parse_policy_spec(policy(**own_image(resources={"requests": {name: "1"}}))["spec"])


# ----------------------------------------------------------------------------------------------
# The schema's own errors, as the server words them

SCHEMA_ERRORS: list[tuple[str, dict[str, Any], str, bool]] = [
    (
        "wrong-type",
        policy(evaluation={"interval": 30})["spec"],
        'spec.evaluation.interval: Invalid value: "integer": spec.evaluation.interval in body must be of type string: '
        '"integer"',
        True,
    ),
    (
        "duration-pattern",
        policy(evaluation={"interval": "soon"})["spec"],
        'spec.evaluation.interval: Invalid value: "soon": spec.evaluation.interval in body should match '
        "'^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d|w))+$'",
        True,
    ),
    (
        "enum",
        policy(**trigger(onMissingData="Zero", accuracyDecay=ACCURACY))["spec"],
        'spec.triggers[0].onMissingData: Unsupported value: "Zero": supported values: "Inconclusive", "Clear", "Fire"',
        True,
    ),
    ("required", {k: v for k, v in BASE["spec"].items() if k != "model"}, "spec.model: Required value", True),
    (
        "duplicate-trigger-name",
        policy(
            triggers=[
                {"name": "a", "schedule": {"cron": "0 3 * * *"}},
                {"name": "a", "schedule": {"cron": "0 4 * * *"}},
            ]
        )["spec"],
        'spec.triggers[1]: Duplicate value: {"name":"a"}',
        True,
    ),
    (
        "exclusive-minimum",
        policy(decision={"costBenefit": {"valuePerAccuracyPointPerDay": 10, "priorWeight": 0}})["spec"],
        "spec.decision.costBenefit.priorWeight: Invalid value: 0: spec.decision.costBenefit.priorWeight in "
        "body should be greater than 0",
        True,
    ),
    (
        "too-many-triggers",
        policy(triggers=[{"name": f"t{i}", "schedule": {"cron": "0 3 * * *"}} for i in range(17)])["spec"],
        "spec.triggers: Too many: 17: must have at most 16 items",
        False,
    ),
    (
        "pattern-the-job-needs",  # a Secret key Kubernetes would refuse in the training Job
        policy(**own_image(env=[{"name": "TOKEN", "secretKeyRef": {"name": "token", "key": "a/b"}}]))["spec"],
        'spec.training.env[0].secretKeyRef.key: Invalid value: "a/b": spec.training.env[0].secretKeyRef.key in body '
        "should match '^\\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$'",
        False,
    ),
]


@pytest.mark.parametrize(
    ("spec", "expected", "python"), [e[1:] for e in SCHEMA_ERRORS], ids=[e[0] for e in SCHEMA_ERRORS]
)
def test_schema_errors_read_as_the_server_words_them(
    admin: Kubectl, unique_namespace: str, spec: dict[str, Any], expected: str, python: bool
) -> None:
    doc = document("RetrainPolicy", spec, name="broken", namespace=unique_namespace)
    result = admin("apply", "-f", "-", input=as_input(doc))
    assert result.returncode != 0
    found = causes(result.stderr, kind="RetrainPolicy", name="broken")
    assert [cause for cause in found if not cause.startswith(NOT_CHECKED)] == [expected], result.stderr
    if python:  # the operator refuses the same object, naming the same field
        with pytest.raises(InvalidSpec) as caught:
            parse_policy_spec(spec)
        assert any(expected.startswith(problem.field.split("[")[0]) for problem in caught.value.problems)


# ----------------------------------------------------------------------------------------------
# kubectl explain shows the descriptions


def words(text: str) -> str:
    return " ".join(text.split())


def schema_at(kind: str, path: str) -> dict[str, Any]:
    node = crd_schema(kind)
    for part in path.split("."):
        node = node["properties"][part]
        node = node.get("items", node)
    return dict(node)


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("RetrainPolicy", "spec.triggers"),
        ("RetrainPolicy", "spec.training"),
        ("RetrainBudget", "spec"),
        ("MetricsEndpoint", "spec"),
    ],
)
def test_kubectl_explain_prints_every_fields_description(admin: Kubectl, kind: str, path: str) -> None:
    deadline = time.monotonic() + 30  # the server publishes a new CRD's OpenAPI shortly after it is established
    while (result := admin("explain", f"{kind.lower()}.{path}")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert result.returncode == 0, result.stderr
    shown = words(result.stdout)
    schema = schema_at(kind, path)
    assert words(schema["description"]) in shown
    for name, field in schema["properties"].items():
        assert re.search(rf"^  {re.escape(name)}\t<", result.stdout, re.MULTILINE), f"{name} is not listed"
        assert words(field["description"]) in shown, f"the description of {name} is not shown"


# ----------------------------------------------------------------------------------------------
# Server-side dry run of the chart and of manifests/install.yaml

# The part of prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1) the chart uses; strict
# validation refuses any field the chart might add beyond it.
SERVICE_MONITOR_CRD = yaml.safe_load("""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [selector, endpoints]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval:
                        type: string
                        pattern: &duration >-
                          ^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$
                      scrapeTimeout: {type: string, pattern: *duration}
""")


# The part of prometheus-operator's PrometheusRule the chart's alert rules use, as strict as above.
PROMETHEUS_RULE_CRD = yaml.safe_load("""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              properties:
                groups:
                  type: array
                  items:
                    type: object
                    required: [name, rules]
                    properties:
                      name: {type: string}
                      interval: {type: string}
                      rules:
                        type: array
                        items:
                          type: object
                          required: [expr]
                          properties:
                            alert: {type: string}
                            record: {type: string}
                            expr: {type: string}
                            for: {type: string}  # the pattern of a duration, as in the ServiceMonitor, set below
                            labels: {type: object, additionalProperties: {type: string}}
                            annotations: {type: object, additionalProperties: {type: string}}
""")
_RULE_FIELDS = PROMETHEUS_RULE_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
_RULE_FIELDS["properties"]["groups"]["items"]["properties"]["rules"]["items"]["properties"]["for"]["pattern"] = (
    SERVICE_MONITOR_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "endpoints"
    ]["items"]["properties"]["interval"]["pattern"]
)


@pytest.fixture(scope="module")
def service_monitor_crd(admin: Kubectl) -> Iterator[None]:
    """prometheus-operator's ServiceMonitor and PrometheusRule, as far as the chart uses them."""
    names = []
    for crd in (SERVICE_MONITOR_CRD, PROMETHEUS_RULE_CRD):
        applied = admin.apply(crd)
        assert applied.returncode == 0, applied.stderr
        names.append(crd["metadata"]["name"])
    for name in names:
        established = admin("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
        assert established.returncode == 0, established.stderr
    yield
    for name in names:
        admin("delete", "crd", name, "--wait=false")


@contextlib.contextmanager
def extra_namespaces(admin: Kubectl, count: int) -> Iterator[list[str]]:
    names = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    try:
        for name in names:
            created = admin("create", "namespace", name)
            assert created.returncode == 0, created.stderr
        yield names
    finally:
        for name in names:
            admin("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def renamed(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with every string equal to a key of ``names`` replaced: namespaces, moved to this test's own."""
    if isinstance(value, dict):
        return {k: renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


def restricted(admin: Kubectl, namespace: str) -> None:
    """Pod Security 'restricted', enforced and warned about, so a workload that breaks it shows in stderr."""
    labelled = admin(
        "label",
        "namespace",
        namespace,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    assert labelled.returncode == 0, labelled.stderr


def dry_run(admin: Kubectl, objects: list[dict[str, Any]]) -> None:
    result = admin("apply", "--dry-run=server", "-f", "-", input=as_input(*objects), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr, result.stderr
    done = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(done) == len(objects), result.stdout


@pytest.mark.usefixtures("service_monitor_crd")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_object_the_chart_renders_passes_a_server_side_dry_run(
    admin: Kubectl, unique_namespace: str, variant: str
) -> None:
    restricted(admin, unique_namespace)
    with extra_namespaces(admin, len(WATCHED)) as watched:
        values = renamed(VARIANTS[variant], dict(zip(WATCHED, watched, strict=True)))
        objects = render_chart(values, release=f"r-{unique_namespace}", namespace=unique_namespace)
        assert objects, "the chart rendered nothing"
        dry_run(admin, objects)


@pytest.mark.usefixtures("service_monitor_crd")
def test_every_document_of_the_install_manifest_passes_a_server_side_dry_run(
    admin: Kubectl, unique_namespace: str
) -> None:
    restricted(admin, unique_namespace)
    text = (ROOT / "manifests" / "install.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == render_manifests.NAMESPACE
    dry_run(admin, renamed(docs, {render_manifests.NAMESPACE: unique_namespace}))
