"""Parsing and validation of the API types, and their agreement with the CRD schemas."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrain_operator.domain import api, budget, triggers
from retrain_operator.domain.api import InvalidSpec, parse_endpoint_spec, parse_policy_spec
from retrain_operator.settings import training
from retrain_operator.settings.durations import PATTERN, DurationError, format_duration, parse_duration
from tests.policies import BASE, policy

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("500ms", 0.5),
        ("2d", 172800),
        ("0s", 0),
        ("2w", 1209600),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "1y", "-5m", "m5", "1h 30m"])
def test_durations_reject_with_the_accepted_form(text: str) -> None:
    with pytest.raises(DurationError, match="for example 90s or 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(5400, "1h30m"), (30, "30s"), (0.25, "250ms"), (86400, "1d")])
def test_durations_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_valid_policy_gets_schema_defaults() -> None:
    spec = parse_policy_spec(BASE["spec"])
    trigger = spec.triggers[0]
    assert trigger.on_missing_data == "Inconclusive"
    assert isinstance(trigger.kind, triggers.AccuracyDecay)
    assert trigger.kind.baseline == "Model" and trigger.kind.relative is False
    assert spec.evaluation.interval == 30 and spec.decision.cooldown == 3600 and not spec.decision.dry_run
    assert spec.training.deadline == 3600 and spec.training.backoff_limit == 0
    assert spec.history_limits == api.HistoryLimits(successful=3, failed=1)
    assert spec.training.builtin is not None and spec.training.builtin.test_size == 0.2


def _problems(body: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidSpec) as info:
        parse_policy_spec(body["spec"])
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        ({"evaluation": {"interval": "soon"}}, "spec.evaluation.interval", "for example 90s"),
        ({"evaluation": {"interval": "100ms"}}, "spec.evaluation.interval", "minimum of 1s"),
        (
            {"triggers": [{"name": "x", "seasonality": {}}]},
            "spec.triggers[0].seasonality",
            "accuracyDecay, query, schedule, drift, dataVolume",
        ),
        ({"triggers": [{"name": "x"}]}, "spec.triggers[0]", "exactly one of"),
        (
            {"triggers": [{"name": "x", "schedule": {"cron": "0 3 * *"}, "query": {}}]},
            "spec.triggers[0]",
            "exactly one of",
        ),
        (
            {"triggers": [{"name": "x", "schedule": {"cron": "61 3 * * *"}}]},
            "spec.triggers[0].schedule.cron",
            "five-field cron",
        ),
        (
            {
                "triggers": [
                    {"name": "a", "schedule": {"cron": "0 3 * * *"}},
                    {"name": "a", "schedule": {"cron": "0 4 * * *"}},
                ]
            },
            "spec.triggers[1].name",
            "unique",
        ),
        (
            {
                "triggers": [
                    {"name": "q", "query": {"promql": "up", "operator": ">", "threshold": 1, "clearThreshold": 2}}
                ]
            },
            "spec.triggers[0].query.clearThreshold",
            "at or below",
        ),
        (
            {"triggers": [{"name": "d", "accuracyDecay": {"metric": "acc", "maxDrop": 0.05, "clearDrop": 0.1}}]},
            "spec.triggers[0].accuracyDecay.clearDrop",
            "at most maxDrop",
        ),
        (
            {"triggers": [{"name": "d", "accuracyDecay": {"metric": "acc", "maxDrop": 0.05, "baseline": "Fixed"}}]},
            "spec.triggers[0].accuracyDecay.fixedBaseline",
            "required when baseline is Fixed",
        ),
        (
            {"triggers": [{"name": "d", "onMissingData": "Zero", "accuracyDecay": {"metric": "acc", "maxDrop": 0.05}}]},
            "spec.triggers[0].onMissingData",
            "Inconclusive, Clear, Fire",
        ),
        (
            {"metrics": {"endpoint": "default", "selector": {"bad-label": "x"}}},
            "spec.metrics.selector.bad-label",
            "label name",
        ),
        (
            {"training": {"builtin": {"data": {"key": "k"}, "target": "y", "estimator": "os.system()"}}},
            "spec.training.builtin.estimator",
            "not an import path",
        ),
        ({"training": {}}, "spec.training", "set builtin"),
        (
            {"training": {"command": ["x"], "env": [{"name": "RETRAIN_TRAINER_CONFIG", "value": "{}"}]}},
            "spec.training.env[0].name",
            "set by the operator",
        ),
        (
            {"training": {"command": ["x"], "resources": {"requests": {"hugepages-2Mi": "1Gi"}}}},
            "spec.training.resources.requests.hugepages-2Mi",
            "is not allowed",
        ),
        (
            {"model": {"name": "churn", "registry": {"bucket": "b", "prefix": "no-slash"}}},
            "spec.model.registry.prefix",
            "must end with '/'",
        ),
    ],
)
def test_invalid_policies_name_the_field_and_the_fix(change: dict[str, Any], field: str, fix: str) -> None:
    problems = _problems(policy(**change))
    assert any(p.startswith(f"{field}: ") and fix in p for p in problems), problems


def test_every_problem_is_reported_not_only_the_first() -> None:
    problems = _problems(policy(evaluation={"interval": "x"}, decision={"cooldown": "y"}))
    assert {p.split(":")[0] for p in problems} == {"spec.evaluation.interval", "spec.decision.cooldown"}


def test_endpoint_rules_for_a_policy() -> None:
    spec = parse_policy_spec(
        policy(triggers=[{"name": "q", "query": {"promql": "up", "operator": ">", "threshold": 1}}])["spec"]
    )
    closed = api.EndpointSpec(url="http://p", allowed_namespaces=("team-b",))
    problems = [str(p) for p in api.check_endpoint_use(spec, namespace="team-a", endpoint_name="p", endpoint=closed)]
    assert any("does not admit namespace 'team-a'" in p for p in problems)
    assert any(p.startswith("spec.triggers[0].query") and "allowRawQueries" in p for p in problems)
    missing = api.check_endpoint_use(spec, namespace="team-a", endpoint_name="nope", endpoint=None)
    assert "does not exist" in str(missing[0])
    open_ = api.EndpointSpec(url="http://p", allow_raw_queries=True, allowed_namespaces=("*",))
    assert api.check_endpoint_use(spec, namespace="team-a", endpoint_name="p", endpoint=open_) == []


def test_budget_spec() -> None:
    spec = api.parse_budget_spec({"window": "168h", "limits": {"runs": 3, "cost": 100}, "prices": {"cpuHour": 0.04}})
    assert spec.window == 168 * 3600 and spec.limits == budget.Limits(runs=3, cost=100.0)
    assert spec.prices.cpu_hour == 0.04 and spec.currency == "USD"
    with pytest.raises(InvalidSpec, match=r"spec\.limits: set at least one"):
        api.parse_budget_spec({"limits": {}})
    with pytest.raises(InvalidSpec, match=r"spec\.window: '5s' is shorter than the minimum of 10s"):
        api.parse_budget_spec({"window": "5s", "limits": {"runs": 1}})


def test_endpoint_spec_defaults_and_auth() -> None:
    spec = parse_endpoint_spec(
        {
            "url": "https://prom:9090/",
            "auth": {"bearerTokenSecret": {"name": "tok"}, "tls": {"caSecret": {"name": "ca"}}},
        }
    )
    assert spec.url == "https://prom:9090" and spec.timeout == 10 and spec.max_concurrency == 4
    assert spec.bearer_token == api.SecretKey("tok", "token") and spec.ca == api.SecretKey("ca", "ca.crt")
    with pytest.raises(InvalidSpec, match=r"spec\.url"):
        parse_endpoint_spec({"url": "file:///etc/passwd"})


# The CRD and the Python types must describe the same fields: walk both.
def _crd_schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / name).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _properties(schema: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    out = {}
    for key, sub in (schema.get("properties") or {}).items():
        out[f"{path}{key}"] = sub
        out.update(_properties(sub, f"{path}{key}."))
        if sub.get("type") == "array":
            out.update(_properties(sub.get("items") or {}, f"{path}{key}[]."))
    return out


# Where the Python type groups or renames fields, this table says so.
FIELD_MAP = {
    "TriggerSpec.kind": None,
    "TriggerSpec.for_seconds": "for",
    "AccuracyDecay.max_drop": "maxDrop",
    "DriftTrigger.reference": "reference.source",
    "DriftTrigger.reference_offset": "reference.offset",
    "DriftTrigger.reference_window": "reference.window",
    "DriftTrigger.reference_counts": "reference.counts",
    "DriftTrigger.learn_k": "learnThreshold.k",
    "DriftTrigger.learn_windows": "learnThreshold.windows",
    "DriftTrigger.learn_floor": "learnThreshold.floor",
    "TrainingSpec.requests": "resources.requests",
    "TrainingSpec.limits": "resources.limits",
    "EnvVar.secret_name": "secretKeyRef.name",
    "EnvVar.secret_key": "secretKeyRef.key",
    "PolicySpec.history_limits": "historyLimits",
    "InlineLimits.limits": None,
    "CostBenefitSpec.value_per_point_per_day": "valuePerAccuracyPointPerDay",
    "CostBenefitSpec.horizon_days": "horizon",
    "CostBenefitSpec.human_cost": "humanCostPerRetrain",
    "Prices.memory_gib_hour": "memoryGiBHour",
    "HistogramSpec.features": "features",
    "PolicySpec.promotion": "promotion",
}


def _python_fields(cls: type, prefix: str) -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        mapped = FIELD_MAP.get(f"{cls.__name__}.{f.name}", _camel(f.name))
        if mapped is None:
            continue
        out.add(prefix + mapped)
    return out


@pytest.mark.parametrize(
    ("cls", "schema_path"),
    [
        (api.PolicySpec, "spec."),
        (training.ModelSpec, "spec.model."),
        (training.RegistrySpec, "spec.model.registry."),
        (api.MetricsSpec, "spec.metrics."),
        (api.EvaluationSpec, "spec.evaluation."),
        (triggers.TriggerSpec, "spec.triggers[]."),
        *((t.spec_type, f"spec.triggers[].{name}.") for name, t in triggers.TRIGGERS.items()),
        (api.DecisionSpec, "spec.decision."),
        (api.TrainingSpec, "spec.training."),
        (training.BuiltinTrainer, "spec.training.builtin."),
        (training.DataSpec, "spec.training.builtin.data."),
        (api.EnvVar, "spec.training.env[]."),
        (api.HistoryLimits, "spec.historyLimits."),
        (api.InlineLimits, "spec.decision.limits."),
        (budget.Limits, "spec.decision.limits."),
        (training.WindowSpec, "spec.training.builtin.data.window."),
        (training.SplitSpec, "spec.training.builtin.split."),
        (training.HistogramSpec, "spec.training.builtin.histograms."),
        (training.PromotionSpec, "spec.promotion."),
        (budget.Prices, "spec.decision.prices."),
        (budget.CostBenefitSpec, "spec.decision.costBenefit."),
    ],
)
def test_python_types_and_crd_agree(cls: type, schema_path: str) -> None:
    props = _properties(_crd_schema("retrainpolicies.yaml"))
    python = _python_fields(cls, schema_path)
    missing_in_crd = {p for p in python if p not in props}
    assert not missing_in_crd, f"fields of {cls.__name__} missing from the CRD: {missing_in_crd}"
    direct = {
        p
        for p in props
        if p.startswith(schema_path) and "." not in p[len(schema_path) :] and "[]" not in p[len(schema_path) :]
    }
    mapped_parents = {p.split(".")[0] for p in (p[len(schema_path) :] for p in python)}
    extra = {p for p in direct if p[len(schema_path) :] not in mapped_parents}
    if cls in (api.InlineLimits, budget.Limits):  # one CRD object, two Python types
        extra -= {f"{schema_path}{f}" for f in ("window", "runs", "cpuHours", "gpuHours", "cost")}
    if cls is triggers.TriggerSpec:
        extra -= {f"{schema_path}{t}" for t in triggers.TRIGGER_TYPES}
    if cls is training.RegistrySpec:  # kept in the CRD only to be refused with the way to a ModelStore
        extra -= {f"{schema_path}endpoint"}
    assert not extra, f"CRD fields under {schema_path} unknown to {cls.__name__}: {extra}"


def test_every_crd_property_has_a_description() -> None:
    for name in ("retrainpolicies.yaml", "metricsendpoints.yaml", "retrainbudgets.yaml"):
        for path, sub in _properties(_crd_schema(name)).items():
            if path == "metadata":
                continue
            assert sub.get("description"), f"{name}: {path} has no description"


def test_crd_duration_pattern_is_the_parser_pattern() -> None:
    text = (ROOT / "crds" / "retrainpolicies.yaml").read_text()
    patterns = set(re.findall(r"pattern: '(\^\(\[0-9\][^']*)'", text))
    assert patterns == {PATTERN}


def test_examples_parse(tmp_path: Path) -> None:
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    policies = [d for d in docs if d["kind"] == "RetrainPolicy"]
    assert policies, "examples/ should hold at least one RetrainPolicy"
    for doc in policies:
        parse_policy_spec(copy.deepcopy(doc["spec"]))
    for doc in (d for d in docs if d["kind"] == "MetricsEndpoint"):
        parse_endpoint_spec(doc["spec"])
    for doc in (d for d in docs if d["kind"] == "RetrainBudget"):
        api.parse_budget_spec(doc["spec"])


def test_the_crd_offers_exactly_the_registered_trigger_types() -> None:
    item = _crd_schema("retrainpolicies.yaml")["properties"]["spec"]["properties"]["triggers"]["items"]
    offered = set(item["properties"]) - {"name", "for", "onMissingData"}
    assert offered == set(triggers.TRIGGER_TYPES)


def test_only_the_trigger_types_know_their_kinds() -> None:
    """Dispatch goes through the registry: nothing outside ``domain/triggers/`` tests a trigger's kind."""
    source = ROOT / "operator" / "src" / "retrain_operator"
    tests = [f"isinstance(trigger.kind, {t.spec_type.__name__}" for t in triggers.TRIGGERS.values()]
    tests += ['.type == "schedule"', '.type == "query"']
    offenders = [
        f"{path.relative_to(source)}: {test}"
        for path in source.rglob("*.py")
        if path.parent.name != "triggers"
        for test in tests
        if test in path.read_text()
    ]
    assert not offenders, offenders
