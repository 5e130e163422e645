"""The API types of ``retrain.dev/v1alpha1`` and their parsing from raw objects.

``crds/`` holds the schema the API server enforces; this module is the operator's reading of it.
A test walks both and fails when a field exists on one side only. Parsing applies the same
defaults as the schema, so a policy read from a file (``retrain-operator evaluate``) behaves like
one read from the API server. What a schema cannot express (an unknown trigger type, a trigger with
two types, a clear level on the wrong side) is checked here, and every problem names its field and
the fix. Each trigger type parses its own body (:mod:`~retrain_operator.domain.triggers`).

``spec.model``, ``spec.training.builtin`` and ``spec.promotion`` are the built-in trainer's settings:
their types and parser live in :mod:`retrain_operator.settings.training`, shared with the trainer,
which reads them back from the Job. Only what a tenant may ask for is checked here on top: an
estimator path that the trainer could import, and parameters that can be judged without importing
scikit-learn (JSON values, finite numbers, no number written as a string).

Every duration, count and string a tenant writes has a bound (:mod:`~retrain_operator.domain.limits`);
the admin's rules that the CRD cannot see (allowed images, the estimator allowlist, the query
ceilings) are the ``check_*`` functions, run by the operator with its flags.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from retrain_operator.domain import limits as bounds
from retrain_operator.domain.budget import CostBenefitSpec, Limits, Prices
from retrain_operator.domain.limits import DEFAULT_LIMITS, QueryLimits
from retrain_operator.domain.triggers import TRIGGER_TYPES, TriggerSpec, get_trigger_type
from retrain_operator.domain.triggers.base import LABEL_NAME as _LABEL_NAME
from retrain_operator.domain.triggers.base import label_name_problem
from retrain_operator.settings.durations import format_duration
from retrain_operator.settings.estimators import ALLOWLIST_ENV, DEFAULT_ALLOWLIST, is_allowed, is_dotted_path
from retrain_operator.settings.reader import InvalidSpec as InvalidSpec
from retrain_operator.settings.reader import Problem as Problem
from retrain_operator.settings.reader import Reader, is_finite_number, show
from retrain_operator.settings.training import (
    OBJECT_NAME,
    OBJECT_NAME_HINT,
    BuiltinTrainer,
    ModelSpec,
    PromotionSpec,
    StoreSpec,
    parse_builtin,
    parse_model,
    parse_promotion,
    parse_store,
)

GROUP = "retrain.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
POLICY_PLURAL = "retrainpolicies"
ENDPOINT_PLURAL = "metricsendpoints"
BUDGET_PLURAL = "retrainbudgets"
STORE_PLURAL = "modelstores"
MIN_WINDOW = 10.0

MISSING_DATA_POLICIES = ("Inconclusive", "Clear", "Fire")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Kubernetes object names (DNS-1123 subdomain) and Secret keys, as the API server checks them.
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_NAME_HINT = "a Secret name: lower-case letters, digits, '-' and '.', at most 253 characters, no '/'"
SECRET_KEY = re.compile(r"^(?!\.{1,2}$)[-._a-zA-Z0-9]+$")
_SECRET_KEY_HINT = "a Secret key: letters, digits, '-', '_' and '.', not '.' or '..'"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Variables the operator sets itself, or that change what the trainer loads, trusts or talks to: a
# policy could otherwise redirect the trainer (its config, its storage, its Python path, its loader).
# Compared without case: Python and boto read several of them in either case.
RESERVED_ENV = frozenset(
    {
        "RETRAIN_TRAINER_CONFIG",
        "RETRAIN_RESOURCES",
        ALLOWLIST_ENV,
        "TERMINATION_MESSAGE_PATH",
        "HOME",
        "TMPDIR",
        "PATH",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_CA_BUNDLE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_PROFILE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
    }
)
RESERVED_ENV_PREFIXES = ("RETRAIN_", "AWS_", "BOTO_", "BOTOCORE_", "PYTHON", "LD_", "DYLD_", "GCONV_", "MALLOC_")


def reserved_env(name: str) -> str | None:
    """Why a policy may not set the environment variable ``name``, or None when it may."""
    upper = name.upper()
    if upper in RESERVED_ENV:
        return f"{name} is set by the operator or changes what the trainer loads or trusts; choose another name"
    for prefix in RESERVED_ENV_PREFIXES:
        if upper.startswith(prefix):
            return (
                f"{name} starts with {prefix}, which is reserved (the operator's and the trainer's settings, AWS "
                "and boto, the Python interpreter, the dynamic loader); choose another name"
            )
    return None


@dataclass(frozen=True)
class MetricsSpec:
    """``spec.metrics``: the MetricsEndpoint to read and the label matchers that pick this model's series."""

    endpoint: str
    selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationSpec:
    """``spec.evaluation``: how often the policy is evaluated, in seconds."""

    interval: float = 60.0


@dataclass(frozen=True)
class InlineLimits:
    """A policy's own spending limits over a window, on top of any shared RetrainBudget."""

    window: float
    limits: Limits


@dataclass(frozen=True)
class DecisionSpec:
    """``spec.decision``: cooldown, dry run, the shared budget, inline limits, prices and the cost-benefit gate."""

    cooldown: float = 3600.0
    dry_run: bool = False
    budget: str | None = None
    limits: InlineLimits | None = None
    prices: Prices | None = None
    cost_benefit: CostBenefitSpec | None = None


@dataclass(frozen=True)
class BudgetSpec:
    """A RetrainBudget's spec: a window, limits over it and a price list."""

    window: float
    limits: Limits
    prices: Prices = field(default_factory=Prices)
    currency: str = "USD"


@dataclass(frozen=True)
class EnvVar:
    """One environment variable of the training container: a literal value or a key of a Secret in the namespace."""

    name: str
    value: str | None = None
    secret_name: str | None = None
    secret_key: str | None = None


@dataclass(frozen=True)
class TrainingSpec:
    """``spec.training``: the built-in trainer or an image of the tenant's own, its resources, deadline and retries."""

    builtin: BuiltinTrainer | None = None
    image: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    deadline: float = 3600.0
    backoff_limit: int = 0


@dataclass(frozen=True)
class HistoryLimits:
    """``spec.historyLimits``: how many finished training Jobs of each outcome are kept."""

    successful: int = 3
    failed: int = 1


@dataclass(frozen=True)
class PolicySpec:
    """A RetrainPolicy's whole spec, parsed and checked; what every decision about the policy reads."""

    model: ModelSpec
    metrics: MetricsSpec
    triggers: tuple[TriggerSpec, ...]
    training: TrainingSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    decision: DecisionSpec = DecisionSpec()
    history_limits: HistoryLimits = HistoryLimits()
    suspend: bool = False
    promotion: PromotionSpec = field(default_factory=PromotionSpec)


@dataclass(frozen=True)
class SecretKey:
    """A key of a Secret in the operator's namespace (a MetricsEndpoint's token, password or CA bundle)."""

    name: str
    key: str


@dataclass(frozen=True)
class EndpointSpec:
    """A MetricsEndpoint's spec: how to reach Prometheus and who may use it."""

    url: str
    timeout: float = 10.0
    max_concurrency: int = 4
    allow_raw_queries: bool = False
    namespace_label: str | None = None
    tenant_header: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    allowed_namespaces: tuple[str, ...] = ()
    bearer_token: SecretKey | None = None
    basic_auth_username: SecretKey | None = None
    basic_auth_password: SecretKey | None = None
    ca: SecretKey | None = None
    insecure_skip_verify: bool = False

    def admits(self, namespace: str) -> bool:
        return not self.allowed_namespaces or "*" in self.allowed_namespaces or namespace in self.allowed_namespaces


@dataclass(frozen=True)
class StoreCredentials:
    """The Secret a ModelStore's Jobs read their S3 keys from, looked up in the policy's own namespace.

    A Pod can only take environment from Secrets of its own namespace, and the operator may read no
    tenant Secret: so the admin provisions a Secret of this name in each admitted namespace (or a
    policy names its own with ``spec.model.registry.credentialsSecret``), and only the Job reads it.
    """

    name: str
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class BucketRule:
    """A bucket (a name, or a pattern with ``*``) and the key prefixes under it that policies may use.

    A prefix may hold ``{namespace}``, replaced by the policy's namespace, so one store can give each
    team its own folder; no prefixes means the whole bucket.
    """

    bucket: str
    prefixes: tuple[str, ...] = ()

    def admits(self, bucket: str, key: str, *, namespace: str) -> bool:
        if not fnmatch.fnmatchcase(bucket, self.bucket):
            return False
        return not self.prefixes or any(key.startswith(p.replace("{namespace}", namespace)) for p in self.prefixes)

    def describe(self, namespace: str) -> str:
        shown = [p.replace("{namespace}", namespace) for p in self.prefixes] or [""]
        return ", ".join(f"s3://{self.bucket}/{p}" for p in shown)


@dataclass(frozen=True)
class ModelStoreSpec:
    """A ModelStore's spec: the S3 service, the Secret Jobs take their keys from, and who may store what where."""

    connection: StoreSpec
    credentials: StoreCredentials | None = None
    allowed_namespaces: tuple[str, ...] = ()
    buckets: tuple[BucketRule, ...] = ()

    def admits(self, namespace: str) -> bool:
        return not self.allowed_namespaces or "*" in self.allowed_namespaces or namespace in self.allowed_namespaces

    def allows(self, bucket: str, key: str, *, namespace: str) -> bool:
        """Whether objects under ``key`` (a prefix or a whole key) of ``bucket`` are the namespace's to use."""
        if any(part in {".", ".."} for part in key.split("/")) or key.startswith("/") or "//" in key:
            return False  # some S3 gateways resolve these as paths, out of the allowed prefix
        return not self.buckets or any(rule.admits(bucket, key, namespace=namespace) for rule in self.buckets)

    def allowed(self, namespace: str) -> str:
        return "; ".join(rule.describe(namespace) for rule in self.buckets) or "any bucket"


def parse_policy_spec(raw: Any) -> PolicySpec:
    """Parse and validate a RetrainPolicy's spec; raise InvalidSpec listing every problem."""
    r = Reader()
    spec = r.obj(raw, "spec", required=True)

    model = parse_model(r, spec.get("model"), "spec.model")

    metrics_raw = r.obj(spec.get("metrics"), "spec.metrics", required=True)
    selector = r.str_map(metrics_raw, "selector", "spec.metrics", max_items=32, max_length=bounds.MAX_LABEL_VALUE)
    for label in selector:
        problem = label_name_problem(label)
        if problem is not None:
            r.fail(f"spec.metrics.selector.{label[:64]}", problem)
    metrics = MetricsSpec(
        endpoint=r.str_(metrics_raw, "endpoint", "spec.metrics", required=True, max_length=bounds.MAX_NAME) or "",
        selector=selector,
    )

    evaluation_raw = r.obj(spec.get("evaluation"), "spec.evaluation")
    evaluation = EvaluationSpec(
        interval=r.duration(
            evaluation_raw, "interval", "spec.evaluation", default="60s", minimum=1.0, maximum=bounds.MAX_INTERVAL
        )
    )

    triggers_raw = spec.get("triggers")
    triggers: list[TriggerSpec] = []
    if not isinstance(triggers_raw, list) or not triggers_raw:
        r.fail("spec.triggers", "needs at least one trigger (accuracyDecay, query or schedule)")
    elif len(triggers_raw) > 16:
        r.fail("spec.triggers", f"holds {len(triggers_raw)} triggers; at most 16 are allowed")
    else:
        seen: set[str] = set()
        for index, item in enumerate(triggers_raw):
            trigger = _parse_trigger(r, item, f"spec.triggers[{index}]")
            if trigger is None:
                continue
            if trigger.name in seen:
                r.fail(f"spec.triggers[{index}].name", f"{trigger.name!r} is used twice; names must be unique")
            seen.add(trigger.name)
            triggers.append(trigger)

    decision_raw = r.obj(spec.get("decision"), "spec.decision")
    inline: InlineLimits | None = None
    if decision_raw.get("limits") is not None:
        limits_raw = r.obj(decision_raw.get("limits"), "spec.decision.limits")
        inline = InlineLimits(
            window=r.duration(
                limits_raw,
                "window",
                "spec.decision.limits",
                default="24h",
                minimum=MIN_WINDOW,
                maximum=bounds.MAX_BUDGET_WINDOW,
            ),
            limits=_parse_limits(r, limits_raw, "spec.decision.limits"),
        )
    decision = DecisionSpec(
        cooldown=r.duration(decision_raw, "cooldown", "spec.decision", default="1h", maximum=bounds.MAX_COOLDOWN),
        dry_run=r.bool_(decision_raw, "dryRun", "spec.decision"),
        budget=r.str_(decision_raw, "budget", "spec.decision", pattern=SECRET_NAME, hint="a RetrainBudget name"),
        limits=inline,
        prices=_parse_prices(r, decision_raw.get("prices"), "spec.decision.prices")
        if decision_raw.get("prices") is not None
        else None,
        cost_benefit=_parse_cost_benefit(r, decision_raw.get("costBenefit"), "spec.decision.costBenefit")
        if decision_raw.get("costBenefit") is not None
        else None,
    )

    training = _parse_training(r, r.obj(spec.get("training"), "spec.training", required=True))

    limits_raw = r.obj(spec.get("historyLimits"), "spec.historyLimits")
    history = HistoryLimits(
        successful=r.int_(limits_raw, "successful", "spec.historyLimits", default=3, maximum=100),
        failed=r.int_(limits_raw, "failed", "spec.historyLimits", default=1, maximum=100),
    )
    suspend = r.bool_(spec, "suspend", "spec")
    promotion = parse_promotion(r, spec.get("promotion"), "spec.promotion")
    if r.problems:
        raise InvalidSpec(r.problems)
    return PolicySpec(
        model=model,
        metrics=metrics,
        triggers=tuple(triggers),
        training=training,
        evaluation=evaluation,
        decision=decision,
        history_limits=history,
        suspend=suspend,
        promotion=promotion,
    )


def _parse_limits(r: Reader, raw: Mapping[str, Any], path: str) -> Limits:
    runs = raw.get("runs")
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 0):
        r.fail(f"{path}.runs", "must be a whole number of runs, 0 or more")
        runs = None
    limits = Limits(
        runs=runs,
        cpu_hours=r.num(raw, "cpuHours", path, minimum=0.0),
        gpu_hours=r.num(raw, "gpuHours", path, minimum=0.0),
        cost=r.num(raw, "cost", path, minimum=0.0),
    )
    if limits == Limits():
        r.fail(path, "set at least one of runs, cpuHours, gpuHours or cost")
    return limits


def _parse_prices(r: Reader, raw: Any, path: str) -> Prices:
    body = r.obj(raw, path)
    return Prices(
        cpu_hour=r.num(body, "cpuHour", path, default=0.0, minimum=0.0) or 0.0,
        memory_gib_hour=r.num(body, "memoryGiBHour", path, default=0.0, minimum=0.0) or 0.0,
        gpu_hour=r.num(body, "gpuHour", path, default=0.0, minimum=0.0) or 0.0,
        per_retrain=r.num(body, "perRetrain", path, default=0.0, minimum=0.0) or 0.0,
    )


def _parse_cost_benefit(r: Reader, raw: Any, path: str) -> CostBenefitSpec | None:
    body = r.obj(raw, path)
    value = r.num(body, "valuePerAccuracyPointPerDay", path, required=True, minimum=0.0)
    prior = r.num(body, "recoveryPrior", path, default=0.8, minimum=0.0, maximum=1.0)
    weight = r.num(body, "priorWeight", path, default=2.0, minimum=0.0)
    if weight is not None and weight <= 0:
        r.fail(f"{path}.priorWeight", "must be greater than 0 (the prior counts as this many past runs)")
    if value is None or prior is None or weight is None:
        return None
    return CostBenefitSpec(
        value_per_point_per_day=value,
        horizon_days=r.duration(body, "horizon", path, default="7d", minimum=1.0, maximum=bounds.MAX_HORIZON) / 86400.0,
        min_net_benefit=r.num(body, "minNetBenefit", path, default=0.0) or 0.0,
        estimated_duration=r.duration(
            body, "estimatedDuration", path, default="10m", minimum=1.0, maximum=bounds.MAX_ESTIMATED_DURATION
        ),
        recovery_prior=prior,
        prior_weight=weight,
        human_cost=r.num(body, "humanCostPerRetrain", path, default=0.0, minimum=0.0) or 0.0,
    )


def parse_budget_spec(raw: Any) -> BudgetSpec:
    """Parse a RetrainBudget's spec; raise InvalidSpec listing every problem."""
    r = Reader()
    spec = r.obj(raw, "spec", required=True)
    budget = BudgetSpec(
        window=r.duration(spec, "window", "spec", default="24h", minimum=MIN_WINDOW, maximum=bounds.MAX_BUDGET_WINDOW),
        limits=_parse_limits(r, r.obj(spec.get("limits"), "spec.limits", required=True), "spec.limits"),
        prices=_parse_prices(r, spec.get("prices"), "spec.prices"),
        currency=r.str_(spec, "currency", "spec", default="USD") or "USD",
    )
    if r.problems:
        raise InvalidSpec(r.problems)
    return budget


def _parse_trigger(r: Reader, raw: Any, path: str) -> TriggerSpec | None:
    item = r.obj(raw, path, required=True)
    name = r.str_(item, "name", path, required=True, pattern=_NAME, max_length=63)
    for_seconds = r.duration(item, "for", path, default="0s")
    on_missing = r.enum(item, "onMissingData", path, allowed=MISSING_DATA_POLICIES, default="Inconclusive")
    known = {"name", "for", "onMissingData", *TRIGGER_TYPES}
    unknown = sorted(set(item) - known)
    if unknown:
        r.fail(f"{path}.{unknown[0]}", f"unknown trigger type; use one of {', '.join(TRIGGER_TYPES)}")
        return None
    present = [t for t in TRIGGER_TYPES if t in item]
    if len(present) != 1:
        r.fail(path, f"set exactly one of {', '.join(TRIGGER_TYPES)} (found {len(present)})")
        return None
    kind_name = present[0]
    kind_path = f"{path}.{kind_name}"
    body = r.obj(item[kind_name], kind_path, required=True)
    kind = get_trigger_type(kind_name).parse(r, body, kind_path)
    if kind is None or name is None or on_missing is None:
        return None
    return TriggerSpec(name=name, kind=kind, for_seconds=for_seconds, on_missing_data=on_missing)


def _parse_training(r: Reader, raw: Mapping[str, Any]) -> TrainingSpec:
    path = "spec.training"
    builtin = None
    if raw.get("builtin") is not None:
        builtin = parse_builtin(r, raw["builtin"], f"{path}.builtin")
        if builtin.estimator and (len(builtin.estimator) > 256 or not is_dotted_path(builtin.estimator)):
            r.fail(
                f"{path}.builtin.estimator",
                f"{show(builtin.estimator)} is not an import path; name an estimator class such as "
                "sklearn.linear_model.LogisticRegression",
            )
        _check_params(r, builtin.params, f"{path}.builtin.params")
    image = r.str_(raw, "image", path, max_length=bounds.MAX_IMAGE)
    command = r.str_list(raw, "command", path, max_items=bounds.MAX_ARGS, max_length=bounds.MAX_ARG_LENGTH)
    if builtin is None and not command:
        r.fail(path, "set builtin (the scikit-learn trainer) or command (a container of your own)")
    if builtin is not None and command:
        r.fail(f"{path}.command", "cannot be combined with builtin; the built-in trainer has its own command")
    env: list[EnvVar] = []
    env_raw = raw.get("env") or []
    if not isinstance(env_raw, list):
        r.fail(f"{path}.env", "must be a list")
        env_raw = []
    elif len(env_raw) > 128:
        r.fail(f"{path}.env", f"holds {len(env_raw)} variables; at most 128 are allowed")
        env_raw = []
    for index, item_raw in enumerate(env_raw):
        where = f"{path}.env[{index}]"
        item = r.obj(item_raw, where)
        name = r.str_(item, "name", where, required=True, pattern=_ENV_NAME, max_length=256)
        reason = reserved_env(name) if name else None
        if reason is not None:
            r.fail(f"{where}.name", reason)
            continue
        ref = item.get("secretKeyRef")
        if ref is not None:
            ref_obj = r.obj(ref, f"{where}.secretKeyRef")
            secret = r.str_(
                ref_obj,
                "name",
                f"{where}.secretKeyRef",
                required=True,
                pattern=SECRET_NAME,
                hint=_SECRET_NAME_HINT,
                max_length=bounds.MAX_NAME,
            )
            key = r.str_(
                ref_obj,
                "key",
                f"{where}.secretKeyRef",
                required=True,
                pattern=SECRET_KEY,
                hint=_SECRET_KEY_HINT,
                max_length=bounds.MAX_NAME,
            )
            env.append(EnvVar(name=name or "", secret_name=secret, secret_key=key))
        else:
            value = r.str_(item, "value", where, default="", max_length=bounds.MAX_ENV_VALUE)
            env.append(EnvVar(name=name or "", value=value))
    resources = r.obj(raw.get("resources"), f"{path}.resources")
    requests = {k: str(v) for k, v in r.obj(resources.get("requests"), f"{path}.resources.requests").items()}
    limits = {k: str(v) for k, v in r.obj(resources.get("limits"), f"{path}.resources.limits").items()}
    for kind, mapping in (("requests", requests), ("limits", limits)):
        for key in mapping:
            if key not in ("cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "amd.com/gpu"):
                r.fail(
                    f"{path}.resources.{kind}.{key}",
                    "is not allowed; use cpu, memory, ephemeral-storage, nvidia.com/gpu or amd.com/gpu",
                )
    return TrainingSpec(
        builtin=builtin,
        image=image,
        command=command,
        args=r.str_list(raw, "args", path, max_items=bounds.MAX_ARGS, max_length=bounds.MAX_ARG_LENGTH),
        env=tuple(env),
        requests=requests,
        limits=limits,
        deadline=r.duration(raw, "deadline", path, default="1h", minimum=1.0, maximum=bounds.MAX_DEADLINE),
        backoff_limit=r.int_(raw, "backoffLimit", path, default=0, maximum=10),
    )


_NUMBER_TEXT = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(inf|infinity|nan)\s*$", re.I)
_PARAM_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


def _check_params(r: Reader, params: Mapping[str, Any], path: str) -> None:
    """What can be judged of estimator parameters without importing scikit-learn: a bounded JSON document
    of names the estimator could have, finite numbers, and no number (or inf, nan) written as a string,
    which scikit-learn never converts. Whether the estimator has the parameter and accepts the value is
    scikit-learn's to say, in the Job."""
    if len(params) > bounds.MAX_PARAMS:
        r.fail(path, f"holds {len(params)} parameters; at most {bounds.MAX_PARAMS} are allowed")
        return
    for name, value in params.items():
        where = f"{path}.{str(name)[:64]}"
        if not isinstance(name, str) or not _PARAM_NAME.match(name) or len(name) > 64:
            r.fail(where, "is not a parameter name (letters, digits and '_', starting with a letter)")
            continue
        problem = _param_value_problem(value, depth=1)
        if problem is not None:
            r.fail(where, problem)


def _param_value_problem(value: Any, *, depth: int) -> str | None:
    if depth > bounds.MAX_PARAMS_DEPTH:
        return f"is nested deeper than {bounds.MAX_PARAMS_DEPTH} levels"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return None if is_finite_number(value) else f"must be a finite number, got {show(value)}"
    if isinstance(value, str):
        if len(value) > 1024:
            return f"is {len(value)} characters long; at most 1024 are allowed"
        if _NUMBER_TEXT.match(value):
            return (
                f"is the string {show(value)}; scikit-learn takes numbers as numbers, not strings "
                "(write it without quotes, and only finite values: inf and nan are not accepted)"
            )
        return None
    if isinstance(value, list):
        if len(value) > 256:
            return f"holds {len(value)} items; at most 256 are allowed"
        for item in value:
            problem = _param_value_problem(item, depth=depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, Mapping):
        if len(value) > 256:
            return f"holds {len(value)} entries; at most 256 are allowed"
        for item in value.values():
            problem = _param_value_problem(item, depth=depth + 1)
            if problem is not None:
                return problem
        return None
    return f"must be a JSON value, got {show(value)}"


def parse_endpoint_spec(raw: Any) -> EndpointSpec:
    """Parse a MetricsEndpoint's spec; raise InvalidSpec listing every problem."""
    r = Reader()
    spec = r.obj(raw, "spec", required=True)
    url = r.str_(spec, "url", "spec", required=True, pattern=re.compile(r"^https?://\S+$")) or ""
    auth = r.obj(spec.get("auth"), "spec.auth")

    def secret_key(raw_ref: Any, path: str, key_field: str, default_key: str) -> SecretKey | None:
        if raw_ref is None:
            return None
        ref = r.obj(raw_ref, path)
        name = r.str_(ref, "name", path, required=True)
        key = r.str_(ref, key_field, path, default=default_key)
        return SecretKey(name=name, key=key) if name and key else None

    basic = auth.get("basicAuthSecret")
    tls = r.obj(auth.get("tls"), "spec.auth.tls")
    label = r.str_(spec, "namespaceLabel", "spec", pattern=_LABEL_NAME)
    endpoint = EndpointSpec(
        url=url.rstrip("/"),
        timeout=r.duration(spec, "timeout", "spec", default="10s", minimum=0.001, maximum=bounds.MAX_ENDPOINT_TIMEOUT),
        max_concurrency=r.int_(spec, "maxConcurrency", "spec", default=4, minimum=1),
        allow_raw_queries=r.bool_(spec, "allowRawQueries", "spec"),
        namespace_label=label,
        tenant_header=r.str_(spec, "tenantHeader", "spec"),
        headers=r.str_map(spec, "headers", "spec"),
        allowed_namespaces=r.str_list(spec, "allowedNamespaces", "spec"),
        bearer_token=secret_key(auth.get("bearerTokenSecret"), "spec.auth.bearerTokenSecret", "key", "token"),
        basic_auth_username=secret_key(basic, "spec.auth.basicAuthSecret", "usernameKey", "username"),
        basic_auth_password=secret_key(basic, "spec.auth.basicAuthSecret", "passwordKey", "password"),
        ca=secret_key(tls.get("caSecret"), "spec.auth.tls.caSecret", "key", "ca.crt"),
        insecure_skip_verify=r.bool_(tls, "insecureSkipVerify", "spec.auth.tls"),
    )
    if r.problems:
        raise InvalidSpec(r.problems)
    return endpoint


_STORE_SPEC_FIELDS = ("endpoint", "region", "addressingStyle")
_PREFIX_PATTERN = re.compile(r"^([A-Za-z0-9!_.*()-]+/|\{namespace\}/)*$")
_BUCKET_PATTERN = re.compile(r"^[a-z0-9.*-]{1,63}$")


def parse_model_store_spec(name: str, raw: Any) -> ModelStoreSpec:
    """Parse a ModelStore's spec; raise InvalidSpec listing every problem."""
    r = Reader()
    spec = r.obj(raw, "spec", required=True)
    connection = parse_store(
        r, {k: v for k, v in spec.items() if k in _STORE_SPEC_FIELDS}, "spec", fields=_STORE_SPEC_FIELDS
    )
    credentials = None
    if spec.get("credentialsSecret") is not None:
        ref = r.obj(spec.get("credentialsSecret"), "spec.credentialsSecret")
        secret = r.str_(
            ref, "name", "spec.credentialsSecret", required=True, pattern=OBJECT_NAME, hint=OBJECT_NAME_HINT
        )
        key_id = r.str_(ref, "accessKeyIdKey", "spec.credentialsSecret", default="AWS_ACCESS_KEY_ID")
        key = r.str_(ref, "secretAccessKeyKey", "spec.credentialsSecret", default="AWS_SECRET_ACCESS_KEY")
        if secret and key_id and key:
            credentials = StoreCredentials(name=secret, access_key_id_key=key_id, secret_access_key_key=key)
    rules: list[BucketRule] = []
    buckets = spec.get("buckets") or []
    if not isinstance(buckets, list):
        r.fail("spec.buckets", "must be a list of {bucket, prefixes}")
        buckets = []
    for index, item in enumerate(buckets):
        path = f"spec.buckets[{index}]"
        body = r.obj(item, path, required=True)
        bucket = r.str_(body, "bucket", path, required=True, pattern=_BUCKET_PATTERN, hint="a bucket name, '*' allowed")
        prefixes = r.str_list(body, "prefixes", path)
        for p_index, prefix in enumerate(prefixes):
            if not prefix or not _PREFIX_PATTERN.match(prefix) or any(s in {".", ".."} for s in prefix.split("/")):
                r.fail(
                    f"{path}.prefixes[{p_index}]",
                    f"{prefix!r} must be segments ending in '/' (letters, digits, !_.*()- or {{namespace}}), "
                    "for example 'teams/{namespace}/'",
                )
        if bucket:
            rules.append(BucketRule(bucket=bucket, prefixes=prefixes))
    store = ModelStoreSpec(
        connection=replace(connection, name=name),
        credentials=credentials,
        allowed_namespaces=r.str_list(spec, "allowedNamespaces", "spec"),
        buckets=tuple(rules),
    )
    if r.problems:
        raise InvalidSpec(r.problems)
    return store


def check_store_use(
    spec: PolicySpec,
    *,
    namespace: str,
    store_name: str | None,
    store: ModelStoreSpec | None,
    store_problem: str | None = None,
) -> list[Problem]:
    """Problems of a policy that depend on its ModelStore (which the admin, not the tenant, owns).

    ``store_name`` is the policy's ``spec.model.registry.store``, or the operator's default store.
    """
    field_ = "spec.model.registry.store"
    if store_name is None:
        return [
            Problem(
                field_,
                "is required: name the ModelStore that holds this model (kubectl get modelstores), or ask the "
                "cluster admin to set the operator's default store (--default-model-store)",
            )
        ]
    if store_problem is not None:
        return [Problem(field_, f"ModelStore {store_name!r} is invalid: {store_problem}")]
    if store is None:
        return [
            Problem(
                field_,
                f"ModelStore {store_name!r} does not exist; name one of the cluster's ModelStores "
                "(kubectl get modelstores)",
            )
        ]
    if not store.admits(namespace):
        return [
            Problem(
                field_,
                f"ModelStore {store_name!r} does not admit namespace {namespace!r}; ask the cluster admin to add it "
                "to spec.allowedNamespaces",
            )
        ]
    problems = []
    registry = spec.model.registry
    if registry.region is not None and registry.region != store.connection.region:
        problems.append(
            Problem(
                "spec.model.registry.region",
                f"is {registry.region!r} but ModelStore {store_name!r} is in {store.connection.region!r}; the "
                "store's region is used, so remove region (or set it to the store's)",
            )
        )
    allowed = store.allowed(namespace)
    if not store.allows(registry.bucket, registry.prefix, namespace=namespace):
        problems.append(
            Problem(
                "spec.model.registry.prefix",
                f"s3://{registry.bucket}/{registry.prefix} is outside what ModelStore {store_name!r} allows "
                f"namespace {namespace!r} ({allowed}); choose a bucket and prefix under one of those",
            )
        )
    builtin = spec.training.builtin
    if builtin is not None:
        data = builtin.data
        bucket = data.bucket or registry.bucket
        key, where = (data.key, "key") if data.key is not None else (data.prefix or "", "prefix")
        if not store.allows(bucket, key, namespace=namespace):
            problems.append(
                Problem(
                    f"spec.training.builtin.data.{where}",
                    f"s3://{bucket}/{key} is outside what ModelStore {store_name!r} allows namespace "
                    f"{namespace!r} ({allowed}); move the data under one of those",
                )
            )
    return problems


def check_image(spec: PolicySpec, *, allowed_prefixes: Sequence[str]) -> list[Problem]:
    """A policy's own training image must come from a registry the admin allows (no list: any image)."""
    image = spec.training.image
    if image is None or not allowed_prefixes or any(image.startswith(p) for p in allowed_prefixes):
        return []
    return [
        Problem(
            "spec.training.image",
            f"{image!r} is not from an allowed registry; use an image starting with one of "
            f"{', '.join(allowed_prefixes)} or leave image empty for the built-in trainer",
        )
    ]


def check_estimator(spec: PolicySpec, *, allowlist: Sequence[str] = DEFAULT_ALLOWLIST) -> list[Problem]:
    """The built-in trainer's estimator must lie under a prefix of the admin's allowlist, the very list the
    operator hands the trainer in the Job (one source of truth), so a Job is never started to fail on it."""
    builtin = spec.training.builtin
    if builtin is None or not builtin.estimator or is_allowed(builtin.estimator, tuple(allowlist)):
        return []
    return [
        Problem(
            "spec.training.builtin.estimator",
            f"{show(builtin.estimator)} is not under an allowed prefix ({', '.join(allowlist)}); name a "
            "scikit-learn estimator such as sklearn.linear_model.LogisticRegression, or ask the cluster admin "
            "to allow the package (operator flag --estimator-allowlist, chart value training.estimatorAllowlist)",
        )
    ]


def check_query_cost(spec: PolicySpec, *, limits: QueryLimits = DEFAULT_LIMITS) -> list[Problem]:
    """Fields over the admin's query ceilings: each problem names the field, the ceiling and who sets it."""
    problems: list[Problem] = []

    def over(field: str, seconds: float, kind: str, what: str = "") -> None:
        ceiling = limits.ceiling(kind)
        if seconds <= ceiling.seconds_or_count:
            return
        subject = f"{what} is {format_duration(seconds)}" if what else f"{format_duration(seconds)} is"
        noun = {"range": "the history one query reads", "for": "for", "window": "windows", "offset": "offsets"}[kind]
        problems.append(
            Problem(
                field,
                f"{subject} longer than the ceiling of {format_duration(ceiling.seconds_or_count)} for {noun} "
                f"({ceiling.who}); shorten it",
            )
        )

    for index, trigger in enumerate(spec.triggers):
        path = f"spec.triggers[{index}]"
        over(f"{path}.for", trigger.for_seconds, "for")
        for span in get_trigger_type(trigger.type).spans(trigger.kind, trigger):
            over(f"{path}.{span.field}" if span.field else path, span.seconds, span.ceiling, span.what)
    return problems


def check_endpoint_use(
    spec: PolicySpec, *, namespace: str, endpoint_name: str, endpoint: EndpointSpec | None
) -> list[Problem]:
    """Problems of a policy that depend on its MetricsEndpoint (which the admin, not the tenant, owns)."""
    if endpoint is None:
        return [
            Problem(
                "spec.metrics.endpoint",
                f"MetricsEndpoint {endpoint_name!r} does not exist; name one of the cluster's "
                "MetricsEndpoints (kubectl get metricsendpoints)",
            )
        ]
    problems = []
    if not endpoint.admits(namespace):
        problems.append(
            Problem(
                "spec.metrics.endpoint",
                f"MetricsEndpoint {endpoint_name!r} does not admit namespace {namespace!r}; "
                "ask the cluster admin to add it to spec.allowedNamespaces",
            )
        )
    if not endpoint.allow_raw_queries:
        for index, trigger in enumerate(spec.triggers):
            if get_trigger_type(trigger.type).raw_promql:
                problems.append(
                    Problem(
                        f"spec.triggers[{index}].{trigger.type}",
                        f"MetricsEndpoint {endpoint_name!r} does not allow raw PromQL; use an accuracyDecay "
                        "trigger or an endpoint with allowRawQueries",
                    )
                )
    return problems
