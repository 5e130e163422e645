"""The standing adversarial suite: hostile or broken manifests and faults, each with the outcome it must have.

Every case is one object a tenant could write (a RetrainPolicy or a RetrainBudget) and the outcome it
must get: refused by the real API server at admission with a message that names the rule, or admitted
and then ``Valid=False`` naming the field (what the CRD cannot see: the admin's ceilings and
allowlists, durations whose parts each pass but whose sum does not), or admitted and running with a
reason in status that says why nothing happens (an escaped injection that matches only itself, a
trigger that cannot be computed next to one that still is, a rollback to a path). Faults are among
the cases: a Prometheus that is down, the operator killed right after the manifests arrive and again
in the middle of judging them.

In every case no Job is created, and a well-behaved policy in the same namespace keeps being evaluated
(it reaches its own decision while the hostile ones are in place). The run writes the table of cases
(case, outcome, message) with totals to ``adversarial.md`` in the test's tmp dir and prints its path.

Cases already in ``test_tenant_safety.py`` (fields a pod spec would have, escalation through unknown
fields, hostile label values against Prometheus, endpoint credentials) are not repeated here. The fast
test below judges every ``Valid=False`` case with the operator's own parser and checks, without a cluster.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from retrain_operator.domain.api import (
    InvalidSpec,
    check_estimator,
    check_query_cost,
    parse_budget_spec,
    parse_policy_spec,
)
from sandbox.prometheus import Series
from tests.policies import policy
from tests.support.stack import Stack, wait_for

KB10 = "x" * 10240
Body = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One hostile or broken manifest: how to break a good policy, and the outcome it must get.

    ``outcome``: ``admission`` (refused by the API server; ``expect`` is in its message), ``invalid``
    (``Valid=False``; ``field`` starts the condition's message and ``expect`` is in it), or ``reason``
    (admitted and evaluated; ``status`` says where the reason shows, ``expect`` is in it).
    """

    id: str
    category: str
    change: Callable[[Body], None]
    outcome: str
    expect: str
    field: str = ""
    kind: str = "RetrainPolicy"
    status: Callable[[dict[str, Any]], str] | None = None
    cluster_only: bool = False  # its outcome depends on objects in the cluster (another namespace's endpoint)


def at(body: Body, path: str, value: Any) -> None:
    """Set ``spec.a.b[0].c`` in ``body`` (creating objects on the way)."""
    node: Any = body
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part, following in zip(parts, [*parts[1:], None], strict=True):
        key: Any = int(part) if part.isdigit() else part
        if following is None:
            node[key] = value
        else:
            if isinstance(key, str) and key not in node:
                node[key] = {}
            node = node[key]


def set_(path: str, value: Any) -> Callable[[Body], None]:
    return lambda body: at(body, path, copy.deepcopy(value))


def add_trigger(trigger: dict[str, Any]) -> Callable[[Body], None]:
    return lambda body: body["spec"]["triggers"].append(copy.deepcopy(trigger))


def env(*items: dict[str, Any]) -> Callable[[Body], None]:
    return set_("spec.training.env", list(items))


def drift(**changes: Any) -> dict[str, Any]:
    return {"metric": "feature_value", "reference": {}, "threshold": 0.2, **changes}


def trigger_message(name: str) -> Callable[[dict[str, Any]], str]:
    def read(status: dict[str, Any]) -> str:
        for t in status.get("triggers") or []:
            if t["name"] == name and t["state"] == "inconclusive":
                return f"{t['name']}: {t['message']}"
        return ""

    return read


def metrics_message(status: dict[str, Any]) -> str:
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "MetricsAvailable"), {})
    return f"{cond.get('reason')}: {cond.get('message')}" if cond.get("status") == "False" else ""


def rollback_message(status: dict[str, Any]) -> str:
    last = status.get("lastRollback") or {}
    return f"{last['outcome']}: {last['message']}" if last.get("outcome") == "Failed" else ""


SCHEDULE = {"name": "nightly", "schedule": {"cron": "0 3 * * *"}}
ACC = "spec.triggers[0].accuracyDecay"
ENVVAR = "is reserved"

CASES: list[Case] = [
    # Bounds on durations, refused at admission by the CRDs' CEL rules.
    Case("for: 99999d", "bounds", set_("spec.triggers[0].for", "99999d"), "admission", "longer than 3650d"),
    Case(
        "for: 999999999999999999999d",
        "bounds",
        set_("spec.triggers[0].for", "9" * 21 + "d"),
        "admission",
        "longer than 3650d",
    ),
    Case("interval: 48h", "bounds", set_("spec.evaluation.interval", "48h"), "admission", "longer than 24h"),
    Case("cooldown: 400d", "bounds", set_("spec.decision.cooldown", "400d"), "admission", "longer than 365d"),
    Case(
        "limits.window: 99999999999d",
        "bounds",
        set_("spec.decision.limits", {"window": "99999999999d", "runs": 1}),
        "admission",
        "longer than 366d",
    ),
    Case("accuracyDecay.window: 99999d", "bounds", set_(f"{ACC}.window", "99999d"), "admission", "longer than 3650d"),
    Case(
        "drift reference.offset: 99999d",
        "bounds",
        add_trigger({"name": "d", "drift": drift(reference={"offset": "99999d"})}),
        "admission",
        "longer than 3650d",
    ),
    Case("deadline: 60d", "bounds", set_("spec.training.deadline", "60d"), "admission", "longer than 30d"),
    Case(
        "duration in five parts",
        "bounds",
        set_("spec.triggers[0].for", "1m1m1m1m1m"),
        "admission",
        "at most four parts",
    ),
    Case("duration of 65 characters", "bounds", set_("spec.triggers[0].for", "1" * 64 + "s"), "admission", "Too long"),
    Case(
        "budget window: 99999999999d",
        "bounds",
        set_("spec.window", "99999999999d"),
        "admission",
        "longer than 366d",
        kind="RetrainBudget",
    ),
    # Bounds on counts and strings.
    Case(
        "17 triggers",
        "bounds",
        set_("spec.triggers", [{"name": f"t{i}", "schedule": {"cron": "0 3 * * *"}} for i in range(17)]),
        "admission",
        "Too many",
    ),
    Case(
        "33 selector labels",
        "bounds",
        set_("spec.metrics.selector", {f"l{i}": "v" for i in range(33)}),
        "admission",
        "Too many",
    ),
    Case(
        "129 env variables",
        "bounds",
        env(*({"name": f"V{i}", "value": "v"} for i in range(129))),
        "admission",
        "Too many",
    ),
    Case(
        "65 params",
        "bounds",
        set_("spec.training.builtin.params", {f"p{i}": 1 for i in range(65)}),
        "admission",
        "Too many",
    ),
    Case(
        "257 drift features",
        "bounds",
        add_trigger({"name": "d", "drift": drift(features=[f"f{i}" for i in range(257)])}),
        "admission",
        "Too many",
    ),
    Case(
        "historyLimits.successful: 1000",
        "bounds",
        set_("spec.historyLimits.successful", 1000),
        "admission",
        "less than or equal to 100",
    ),
    Case("backoffLimit: 11", "bounds", set_("spec.training.backoffLimit", 11), "admission", "less than or equal to 10"),
    Case(
        "learnThreshold.windows: 1000",
        "bounds",
        add_trigger({"name": "d", "drift": {"metric": "f", "reference": {}, "learnThreshold": {"windows": 1000}}}),
        "admission",
        "less than or equal to 48",
    ),
    Case(
        "minSamples: 1e13",
        "bounds",
        add_trigger({"name": "d", "drift": drift(minSamples=1e13)}),
        "admission",
        "less than or equal to 1000000000000",
    ),
    Case("trigger name of 64 characters", "bounds", set_("spec.triggers[0].name", "a" * 64), "admission", "Too long"),
    # The admin's query ceilings, which the CRD cannot see: Valid=False naming the field, the ceiling and the flag.
    Case(
        "for: 2d (ceiling 1d)",
        "ceiling",
        set_("spec.triggers[0].for", "2d"),
        "invalid",
        "--max-for",
        field="spec.triggers[0].for",
    ),
    Case(
        "for: 3000d3000d (sum over 3650d)",
        "ceiling",
        set_("spec.triggers[0].for", "3000d3000d"),
        "invalid",
        "longer than 3650d",
        field="spec.triggers[0].for",
    ),
    Case(
        "accuracyDecay.window: 2d (ceiling 1d)",
        "ceiling",
        set_(f"{ACC}.window", "2d"),
        "invalid",
        "--max-window",
        field=f"{ACC}.window",
    ),
    Case(
        "drift reference.offset: 60d (ceiling 30d)",
        "ceiling",
        add_trigger({"name": "d", "drift": drift(reference={"offset": "60d"})}),
        "invalid",
        "--max-offset",
        field="spec.triggers[1].drift.reference.offset",
    ),
    Case(
        "drift reference.window: 3d (ceiling 1d)",
        "ceiling",
        add_trigger({"name": "d", "drift": drift(reference={"window": "3d"})}),
        "invalid",
        "--max-window",
        field="spec.triggers[1].drift.reference.window",
    ),
    Case(
        "budget window 366d366d (sum over 366d)",
        "ceiling",
        set_("spec.window", "366d366d"),
        "invalid",
        "longer than the maximum of 366d",
        field="spec.window",
        kind="RetrainBudget",
    ),
    # Types.
    Case("maxDrop as a string", "types", set_(f"{ACC}.maxDrop", "0.05"), "admission", "must be of type number"),
    Case(
        "onMissingData: Zero", "types", set_("spec.triggers[0].onMissingData", "Zero"), "admission", "Unsupported value"
    ),
    Case(
        "statistic: median",
        "types",
        add_trigger({"name": "d", "drift": drift(statistic="median")}),
        "admission",
        "Unsupported value",
    ),
    Case(
        "triggers as an object",
        "types",
        set_("spec.triggers", {"name": "t"}),
        "admission",
        "cannot be handled as a RetrainPolicy",
    ),
    Case("env value as a number", "types", env({"name": "A", "value": 1}), "admission", "must be of type string"),
    Case(
        "minShare: 0",
        "types",
        add_trigger({"name": "d", "drift": drift(mode="share", minShare=0)}),
        "admission",
        "should be greater than 0",
    ),
    Case(
        "params C: 'inf'",
        "types",
        set_("spec.training.builtin.params", {"C": "inf"}),
        "invalid",
        "numbers as numbers",
        field="spec.training.builtin.params.C",
    ),
    Case(
        "params tol: 'nan'",
        "types",
        set_("spec.training.builtin.params", {"tol": "nan"}),
        "invalid",
        "numbers as numbers",
        field="spec.training.builtin.params.tol",
    ),
    Case(
        "params C: '1e400' (overflows)",
        "types",
        set_("spec.training.builtin.params", {"C": "1e400"}),
        "invalid",
        "numbers as numbers",
        field="spec.training.builtin.params.C",
    ),
    Case(
        "params nested 6 deep",
        "types",
        set_("spec.training.builtin.params", {"class_weight": {"a": {"b": {"c": {"d": {"e": 1}}}}}}),
        "invalid",
        "nested deeper",
        field="spec.training.builtin.params.class_weight",
    ),
    Case(
        "cron 0 0 30 2 * (never fires)",
        "types",
        add_trigger({"name": "feb", "schedule": {"cron": "0 0 30 2 *"}}),
        "invalid",
        "never fires",
        field="spec.triggers[1].schedule.cron",
    ),
    # Injection strings in every label position.
    Case(
        "selector key __name__",
        "injection",
        set_("spec.metrics.selector", {"__name__": "up"}),
        "admission",
        "selector keys starting with __",
    ),
    Case(
        "selector key le",
        "injection",
        set_("spec.metrics.selector", {"le": "0.5"}),
        "admission",
        "selector keys starting with __",
    ),
    Case(
        'selector key x"}',
        "injection",
        set_("spec.metrics.selector", {'x"}': "v"}),
        "admission",
        "Prometheus label name",
    ),
    Case("metric name with braces", "injection", set_(f"{ACC}.metric", 'up{a="b"}'), "admission", "should match"),
    Case(
        "drift featureLabel __name__",
        "injection",
        add_trigger({"name": "d", "drift": drift(featureLabel="__name__")}),
        "admission",
        "must not start with __",
    ),
    Case(
        "drift featureLabel le",
        "injection",
        add_trigger({"name": "d", "drift": drift(featureLabel="le")}),
        "admission",
        "must not start with __",
    ),
    Case(
        'drift featureLabel a"b',
        "injection",
        add_trigger({"name": "d", "drift": drift(featureLabel='a"b')}),
        "admission",
        "should match",
    ),
    Case("trigger name a;b", "injection", set_("spec.triggers[0].name", "a;b"), "admission", "should match"),
    Case(
        'selector value x"} or vector(1) #',
        "injection",
        set_("spec.metrics.selector.model", 'x"} or vector(1) #'),
        "reason",
        "NoData",
        status=metrics_message,
    ),
    Case(
        "selector value .*",
        "injection",
        set_("spec.metrics.selector.model", ".*"),
        "reason",
        "NoData",
        status=metrics_message,
    ),
    Case(
        "drift reference le=1e400",
        "injection",
        add_trigger(
            {"name": "d", "drift": drift(reference={"source": "Fixed", "counts": {"f": {"1e400": 1, "+Inf": 2}}})}
        ),
        "invalid",
        "too large for a finite bound",
        field="spec.triggers[1].drift.reference.counts.f",
    ),
    # Escapes through every Job field.
    Case("env LD_PRELOAD", "job escape", env({"name": "LD_PRELOAD", "value": "/tmp/x.so"}), "admission", ENVVAR),
    Case("env PYTHONPATH", "job escape", env({"name": "PYTHONPATH", "value": "/tmp"}), "admission", ENVVAR),
    Case(
        "env AWS_ENDPOINT_URL_S3",
        "job escape",
        env({"name": "AWS_ENDPOINT_URL_S3", "value": "http://x"}),
        "admission",
        ENVVAR,
    ),
    Case(
        "env RETRAIN_ESTIMATOR_ALLOWLIST",
        "job escape",
        env({"name": "RETRAIN_ESTIMATOR_ALLOWLIST", "value": "os"}),
        "admission",
        ENVVAR,
    ),
    Case(
        "env https_proxy (lower case)",
        "job escape",
        env({"name": "https_proxy", "value": "http://x"}),
        "admission",
        ENVVAR,
    ),
    Case("env BOTO_CONFIG", "job escape", env({"name": "BOTO_CONFIG", "value": "/tmp/b"}), "admission", ENVVAR),
    Case(
        "Secret name other/secret",
        "job escape",
        env({"name": "TOKEN", "secretKeyRef": {"name": "other/secret", "key": "k"}}),
        "admission",
        "should match",
    ),
    Case(
        "Secret key ../x",
        "job escape",
        env({"name": "TOKEN", "secretKeyRef": {"name": "s", "key": "../x"}}),
        "admission",
        "should match",
    ),
    Case(
        "estimator os.system",
        "job escape",
        set_("spec.training.builtin.estimator", "os.system"),
        "invalid",
        "--estimator-allowlist",
        field="spec.training.builtin.estimator",
    ),
    Case(
        "estimator sklearn._private.X",
        "job escape",
        set_("spec.training.builtin.estimator", "sklearn._x.X"),
        "admission",
        "import path of an estimator class",
    ),
    Case(
        "rollback-to ../../etc/passwd",
        "job escape",
        lambda b: b["metadata"].setdefault("annotations", {}).update({"retrain.dev/rollback-to": "../../etc/passwd"}),
        "reason",
        "invalid version id",
        status=rollback_message,
    ),
    Case(
        "rollback-to of 10 kB",
        "job escape",
        lambda b: b["metadata"].setdefault("annotations", {}).update({"retrain.dev/rollback-to": KB10}),
        "reason",
        "invalid version id",
        status=rollback_message,
    ),
    # Cross-namespace references.
    Case(
        "budget other-ns/budget",
        "cross-namespace",
        set_("spec.decision.budget", "other-ns/budget"),
        "admission",
        "should match",
    ),
    Case(
        "endpoint of another namespace",
        "cross-namespace",
        set_("spec.metrics.endpoint", "{other}"),
        "invalid",
        "does not admit namespace",
        field="spec.metrics.endpoint",
        cluster_only=True,
    ),
    # Unicode and 10 kB strings.
    Case("model name modèle", "unicode", set_("spec.model.name", "modèle"), "admission", "should match"),
    Case("trigger name ünï", "unicode", set_("spec.triggers[0].name", "ünï"), "admission", "should match"),
    Case(
        "selector value ünïcödé",
        "unicode",
        set_("spec.metrics.selector.model", "ünïcödé"),
        "reason",
        "NoData",
        status=metrics_message,
    ),
    Case("10 kB selector value", "10 kB", set_("spec.metrics.selector.model", KB10), "admission", "Too long"),
    Case(
        "10 kB promql",
        "10 kB",
        set_("spec.triggers[0]", {"name": "q", "query": {"promql": KB10, "operator": ">", "threshold": 1}}),
        "admission",
        "Too long",
    ),
    Case("10 kB cron", "10 kB", add_trigger({"name": "c", "schedule": {"cron": KB10}}), "admission", "Too long"),
    Case("10 kB endpoint name", "10 kB", set_("spec.metrics.endpoint", KB10), "admission", "Too long"),
    Case("10 kB image", "10 kB", set_("spec.training.image", KB10), "admission", "Too long"),
    Case("10 kB arg", "10 kB", set_("spec.training", {"command": ["x"], "args": [KB10]}), "admission", "Too long"),
    Case("40 kB env value", "10 kB", env({"name": "BIG", "value": KB10 * 4}), "admission", "Too long"),
    Case(
        "10 kB featureLabel",
        "10 kB",
        add_trigger({"name": "d", "drift": drift(featureLabel=KB10)}),
        "admission",
        "Too long",
    ),
    # Triggers that cannot be computed: the trigger says why, the policy's other triggers are still evaluated.
    Case(
        "wasserstein on a binary flag (le=0.5)",
        "no silent stall",
        lambda b: b["spec"]["triggers"].__setitem__(
            0,
            {
                "name": "flag",
                "drift": drift(
                    metric="{flag}",
                    statistic="wasserstein",
                    reference={"source": "Fixed", "counts": {"flag": {"0.5": 50, "+Inf": 100}}},
                ),
            },
        ),
        "reason",
        "wasserstein cannot be computed",
        status=trigger_message("flag"),
    ),
    Case(
        'le="1e400" in Prometheus',
        "no silent stall",
        lambda b: b["spec"]["triggers"].__setitem__(
            0,
            {
                "name": "huge",
                "drift": drift(
                    metric="{huge}", reference={"source": "Fixed", "counts": {"flag": {"0.5": 50, "+Inf": 100}}}
                ),
            },
        ),
        "reason",
        "too large for a finite bound",
        status=trigger_message("huge"),
    ),
    # Faults.
    Case(
        "Prometheus down",
        "fault",
        set_("spec.metrics.endpoint", "{dead}"),
        "reason",
        "Unreachable",
        status=metrics_message,
    ),
]


def budget_body() -> Body:
    return {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainBudget",
        "metadata": {"name": "b"},
        "spec": {"window": "24h", "limits": {"runs": 3}},
    }


def fast_body(case: Case) -> Body:
    body = policy() if case.kind == "RetrainPolicy" else budget_body()
    if case.kind == "RetrainPolicy":
        body["spec"]["triggers"][0]["name"] = "acc"
        body["spec"]["training"] = {
            "builtin": {"data": {"key": "k"}, "target": "y", "estimator": "sklearn.linear_model.LogisticRegression"}
        }
    case.change(body)
    return body


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.outcome == "invalid" and not c.cluster_only], ids=lambda c: c.id
)
def test_the_operator_names_the_field_of_every_invalid_case(case: Case) -> None:
    body = fast_body(case)
    if case.kind == "RetrainBudget":
        with pytest.raises(InvalidSpec) as caught:
            parse_budget_spec(body["spec"])
        problems = [str(p) for p in caught.value.problems]
    else:
        try:
            spec = parse_policy_spec(body["spec"])
        except InvalidSpec as exc:
            problems = [str(p) for p in exc.problems]
        else:
            problems = [str(p) for p in (*check_query_cost(spec), *check_estimator(spec))]
    assert problems, f"{case.id} was accepted"
    assert any(p.startswith(case.field) and case.expect in p for p in problems), problems


# ----------------------------------------------------------------------------------------------
# Against the real API server and operator


@dataclass
class Row:
    case: str
    category: str
    outcome: str
    message: str


@dataclass
class Run:
    stack: Stack
    rows: list[Row] = field(default_factory=list)


def one_line(text: str, limit: int = 180) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def server_message(stderr: str, expect: str) -> str:
    """The part of the API server's answer that carries the rule, without kubectl's preamble."""
    text = " ".join(stderr.split())
    index = text.find(expect)
    start = max(0, text.rfind("spec.", 0, index) if index >= 0 else 0)
    return one_line(text[start:])


def push_histograms(stack: Stack, metric: str, model: str, edges: list[str]) -> None:
    now = time.time()
    series = [
        Series(
            f"{metric}_bucket",
            {"namespace": stack.namespace, "model": model, "feature": "flag", "le": le},
            [(now - 600 + 30 * i, float(i * 100 * (k + 1))) for i in range(20)],
        )
        for k, le in enumerate(edges)
    ]
    stack.prometheus.push(series)


def prepared(stack: Stack, case: Case, index: int) -> Body:
    name = f"c{index:02d}"
    model = f"{stack.model}-{name}"
    if case.kind == "RetrainBudget":
        body = budget_body()
        body["metadata"] = {"name": name, "namespace": stack.namespace}
    else:
        body = stack.example_policy(name, model)
        body["spec"]["evaluation"]["interval"] = "5s"
        body["spec"]["decision"]["dryRun"] = True
    case.change(body)
    if case.kind == "RetrainPolicy":
        spec = body["spec"]
        if spec["metrics"]["endpoint"] == "{other}":
            spec["metrics"]["endpoint"] = f"{stack.namespace}-other"
        if spec["metrics"]["endpoint"] == "{dead}":
            spec["metrics"]["endpoint"] = f"{stack.namespace}-dead"
        first = spec["triggers"][0] if isinstance(spec["triggers"], list) else {}
        if "drift" in first and first["drift"]["metric"].startswith("{"):
            metric = first["drift"]["metric"].strip("{}") + "_" + name
            first["drift"]["metric"] = metric
            edges = ["0.5", "+Inf"] if "flag" in metric else ["0.5", "1e400", "+Inf"]
            push_histograms(stack, metric, model, edges)
            spec["triggers"].append(copy.deepcopy(SCHEDULE))
    return body


def admin_objects(stack: Stack) -> list[Body]:
    def endpoint(suffix: str, url: str, namespaces: list[str]) -> Body:
        return {
            "apiVersion": "retrain.dev/v1alpha1",
            "kind": "MetricsEndpoint",
            "metadata": {"name": f"{stack.namespace}-{suffix}"},
            "spec": {"url": url, "timeout": "2s", "namespaceLabel": "namespace", "allowedNamespaces": namespaces},
        }

    return [
        endpoint("other", stack.prometheus.url, ["team-elsewhere"]),
        endpoint("dead", "http://127.0.0.1:9", [stack.namespace]),
    ]


REFUSED = ("rejected at admission", "Valid=False", "accepted with reason")


def write_table(rows: list[Row], path: Path, *, cases: int) -> str:
    """The table of outcomes; a case without a refusing row (or without any row) counts as let through."""
    lines = ["| # | case | category | outcome | message |", "| --- | --- | --- | --- | --- |"]
    for i, row in enumerate(rows, 1):
        message = row.message.replace("|", "\\|")
        lines.append(f"| {i} | {row.case.replace('|', '/')} | {row.category} | {row.outcome} | {message} |")
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.outcome] = totals.get(row.outcome, 0) + 1
    lines += [
        "",
        "Totals: " + ", ".join(f"{k}: {v}" for k, v in sorted(totals.items())) + f"; cases: {len(rows)}",
        "Let through (admitted without refusal or a reason in status, or a Job created): "
        f"{cases - sum(1 for row in rows if row.outcome in REFUSED)}",
    ]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


@pytest.mark.integration
def test_hostile_manifests_are_refused_or_marked_and_nothing_runs(stack: Stack, tmp_path: Path) -> None:
    assert len(CASES) >= 60
    rows: list[Row] = []
    applied = stack.apply(*admin_objects(stack))
    assert applied.returncode == 0, applied.stderr
    admitted: list[tuple[str, Case]] = []
    wrong: list[str] = []
    try:
        for index, case in enumerate(CASES):
            body = prepared(stack, case, index)
            result = stack.kubectl("create", "-f", "-", input=json.dumps(body))
            if case.outcome == "admission":
                if result.returncode == 0 or case.expect not in " ".join(result.stderr.split()):
                    wrong.append(f"{case.id}: {result.returncode} {result.stderr}")
                    continue
                rows.append(
                    Row(case.id, case.category, "rejected at admission", server_message(result.stderr, case.expect))
                )
            elif result.returncode != 0:
                wrong.append(f"{case.id} was refused: {result.stderr}")
            else:
                admitted.append((body["metadata"]["name"], case))
            if index == len(CASES) // 2:
                # Fault: the operator is killed while manifests arrive and restarts with half of them unjudged.
                stack.operator.kill()
                stack.start_operator(log="operator-after-first-kill.log")
        assert not wrong, "\n".join(wrong)

        good = stack.example_policy("good", f"{stack.model}-good")
        good["spec"]["decision"]["dryRun"] = True
        good["spec"]["evaluation"]["interval"] = "5s"
        stack.push_accuracy(f"{stack.model}-good", [0.80] * 80)
        assert stack.apply(good).returncode == 0

        def judged(name: str, case: Case) -> str:
            if case.kind == "RetrainBudget":
                body = stack.get("retrainbudgets", name) or {}
                cond = next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == "Valid"), {})
                return str(cond.get("message") or "") if cond.get("status") == "False" else ""
            status = stack.status(name)
            if case.outcome == "invalid":
                cond = next((c for c in status.get("conditions") or [] if c["type"] == "Valid"), {})
                return str(cond.get("message") or "") if cond.get("status") == "False" else ""
            assert case.status is not None
            return case.status(status)

        # Fault: killed again in the middle of judging them; what was judged stays, the rest is judged after.
        wait_for("a first verdict", lambda: any(judged(n, c) for n, c in admitted), timeout=60, log=stack.operator.log)
        stack.operator.kill()
        stack.start_operator(log="operator-after-second-kill.log")

        for name, case in admitted:
            message = wait_for(
                f"the outcome of {case.id}", lambda n=name, c=case: judged(n, c), timeout=90, log=stack.operator.log
            )
            if case.outcome == "invalid":
                assert case.field in message and case.expect in message, (case.id, message)
                shown = next(p for p in message.split("; ") if p.startswith(case.field))
                rows.append(Row(case.id, case.category, "Valid=False", one_line(shown)))
            else:
                assert case.expect in message, (case.id, message)
                rows.append(Row(case.id, case.category, "accepted with reason", one_line(message)))
        # A trigger that cannot be computed never silences the policy's other triggers.
        for name, case in admitted:
            if case.category == "no silent stall":
                states = {t["name"]: t["state"] for t in stack.status(name)["triggers"]}
                assert states["nightly"] in ("clear", "firing"), (case.id, states)

        decision = wait_for(
            "the good policy's own decision",
            lambda: (
                (stack.status("good").get("lastDecision") or {}).get("reason") == "DryRun"
                and stack.status("good")["lastDecision"]
            ),
            timeout=90,
            log=stack.operator.log,
        )
        assert "would retrain" in decision["message"]
        assert stack.jobs() == [], "no case may create a Job"
        log = stack.operator.log()
        assert "retrying at its next interval" not in log and "observation failed" not in log, log[-4000:]
    finally:
        for doc in admin_objects(stack):
            stack.kubectl("delete", "metricsendpoint", doc["metadata"]["name"], "--wait=false")
    table = write_table(rows, tmp_path / "adversarial.md", cases=len(CASES))
    print(f"\nadversarial table: {tmp_path / 'adversarial.md'}\n{table}")
    assert len(rows) == len(CASES)
