"""Tenant safety: nothing a tenant writes in a RetrainPolicy escalates beyond its own namespace.

Each escalation attempt is tried and must be refused with a reason a person can act on:

- fields a pod spec would have (service account, host namespaces, hostPath, privilege, added
  capabilities, extra volumes, a Prometheus URL) do not exist in the CRD: the real API server refuses
  them under ``fieldValidation=Strict`` (what ``kubectl apply`` sends by default) and prunes them
  otherwise, so the operator never even sees them;
- the Job built from any valid policy has none of them (checked over many generated policies), and
  the API server admits it in a namespace that enforces the ``restricted`` Pod Security profile;
- environment variables the operator sets and resource names outside the allowed set are refused;
- a MetricsEndpoint the tenant's namespace may not use, or raw PromQL where the endpoint forbids it,
  is refused before any query is made; built-in queries always carry the policy's own namespace;
- label values with quotes, backslashes, newlines or braces cannot change a query: run against a
  real Prometheus, a hostile value matches only the series with exactly that value, never another
  tenant's;
- no URL a tenant controls is ever called with the operator's credentials.
"""

from __future__ import annotations

import json
import random
import socket
import string
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from retrain_operator.adapters.kubernetes import FakeKubeClient
from retrain_operator.adapters.prometheus import PrometheusClient, Sample
from retrain_operator.domain import promql
from retrain_operator.domain.api import (
    RESERVED_ENV,
    EndpointSpec,
    InvalidSpec,
    check_endpoint_use,
    parse_endpoint_spec,
    parse_policy_spec,
    reserved_env,
)
from retrain_operator.domain.jobs import NON_ROOT_UID, PolicyRef, build_job
from retrain_operator.reconcile.engine import Reconciler
from retrain_operator.reconcile.observe import Observer, QuerySource, Subject
from retrain_operator.reconcile.scheduler import Endpoints, Scheduler
from sandbox.prometheus import PrometheusServer, Series
from tests.policies import STORE_SPEC, policy, set_path, store
from tests.support.cluster import Kubectl

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OPERATOR_NS = "retrain-system"
TRAINER_SA = "retrain-trainer"
ALLOWED_RESOURCES = ("cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "amd.com/gpu")
HOSTILE = [
    'x"} or vector(1) #',
    'churn"}[5m]) or on() vector(1) or avg_over_time(x{a="',
    "a\\b",
    '\\"',
    "line\nbreak",
    "carriage\rreturn",
    "tab\there",
    "{}",
    "}{",
    ".*",
    "a|b",
    "(x)+",
    "'single'",
    "ünïcödé",
]


def problems_of(spec: Mapping[str, Any]) -> list[str]:
    with pytest.raises(InvalidSpec) as caught:
        parse_policy_spec(spec)
    return [str(p) for p in caught.value.problems]


# ----------------------------------------------------------------------------------------------
# The API refuses fields a pod spec would have


def api_policy(namespace: str = "team-a") -> dict[str, Any]:
    body = policy(
        training={
            "image": "registry.example.com/team-a/trainer:1",
            "command": ["python", "train.py"],
            "env": [{"name": "TOKEN", "secretKeyRef": {"name": "token", "key": "value"}}],
        }
    )
    body["metadata"] = {"name": "churn", "namespace": namespace}
    return body


ESCALATIONS: list[tuple[str, Any]] = [
    ("spec.training.serviceAccountName", "cluster-admin"),
    ("spec.training.serviceAccount", "cluster-admin"),
    ("spec.training.automountServiceAccountToken", True),
    ("spec.training.hostNetwork", True),
    ("spec.training.hostPID", True),
    ("spec.training.hostIPC", True),
    ("spec.training.volumes", [{"name": "root", "hostPath": {"path": "/"}}]),
    ("spec.training.volumeMounts", [{"name": "root", "mountPath": "/host"}]),
    ("spec.training.securityContext", {"privileged": True}),
    ("spec.training.securityContext", {"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}}),
    ("spec.training.podTemplate", {"spec": {"hostNetwork": True, "containers": []}}),
    ("spec.training.nodeName", "control-plane-1"),
    ("spec.training.env[0].secretKeyRef.namespace", "kube-system"),
    ("spec.training.env[0].valueFrom", {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}),
    ("spec.metrics.url", "http://attacker.example:9090"),
    ("spec.metrics.bearerTokenSecret", {"name": "prometheus-token"}),
    ("spec.metrics.headers", {"X-Scope-OrgID": "team-b"}),
]


@pytest.mark.parametrize(("path", "value"), ESCALATIONS, ids=[f"{p}={json.dumps(v)[:30]}" for p, v in ESCALATIONS])
def test_strict_validation_refuses_fields_the_crd_does_not_have(
    admin: Kubectl, unique_namespace: str, path: str, value: Any
) -> None:
    result = admin.apply(set_path(api_policy(unique_namespace), path, value))
    assert result.returncode != 0, f"{path} was accepted"
    assert f'strict decoding error: unknown field "{path}"' in result.stderr, result.stderr
    assert admin.get("retrainpolicies", namespace=unique_namespace)["items"] == []


def test_without_strict_validation_those_fields_are_dropped_before_the_operator_sees_them(
    admin: Kubectl, unique_namespace: str
) -> None:
    body = api_policy(unique_namespace)
    for path, value in ESCALATIONS:
        body = set_path(body, path, value)
    created = admin("create", "--validate=false", "-o", "json", "-f", "-", input=json.dumps(body))
    assert created.returncode == 0, created.stderr
    stored = json.loads(created.stdout)
    assert stored["spec"]["training"] == api_policy()["spec"]["training"] | {"deadline": "1h", "backoffLimit": 0}
    assert set(stored["spec"]["metrics"]) == {"endpoint", "selector"}


def test_a_policy_that_names_no_escalation_is_accepted(admin: Kubectl, unique_namespace: str) -> None:
    result = admin.apply(api_policy(unique_namespace))
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------------------------
# The Job built from any valid policy

POD_KEYS = {
    "restartPolicy",
    "serviceAccountName",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "securityContext",
    "containers",
    "volumes",
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": NON_ROOT_UID,
    "runAsGroup": NON_ROOT_UID,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
NASTY = [
    "--privileged",
    "$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)",
    "; rm -rf /",
    "\n",
    "{}",
    "hostPath: /",
    "-v /:/host",
    "x" * 300,
    "",
    "ünï",
]


# Secret keys Kubernetes accepts, odd as they are; the hostile ones of NASTY are refused by the CRD.
ODD_SECRET_KEYS = ["k", ".hidden", "a..b", "-_.", "token.json", "x" * 253]


def random_policy(rng: random.Random, index: int, *, admissible: bool = False) -> tuple[PolicyRef, dict[str, Any]]:
    """A valid policy with every tenant-controlled training field varied, many of them hostile.

    ``admissible`` keeps to what the API server admits for a Job (Secret keys, whole GPUs, requests at most
    their limits), so that a sample of them passes the CRD; hostile values stay where they are legal.
    """

    def word(n: int = 8) -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))

    env: list[dict[str, Any]] = []
    for i in range(rng.randrange(6)):
        name = rng.choice(
            [
                "HOME",
                "TMPDIR",
                "PATH",
                "LD_PRELOAD",
                "KUBERNETES_SERVICE_HOST",
                f"VAR_{i}",
                "AWS_ACCESS_KEY_ID",
                f"_{word(3).upper()}",
            ]
        )
        if name in {e["name"] for e in env} or reserved_env(name):
            continue
        if rng.random() < 0.4:
            key = rng.choice(ODD_SECRET_KEYS)  # the hostile keys of NASTY are refused by the CRD and the operator
            env.append({"name": name, "secretKeyRef": {"name": word(), "key": key}})
        else:
            env.append({"name": name, "value": rng.choice(NASTY)})
    resources: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        chosen = rng.sample(ALLOWED_RESOURCES, rng.randrange(len(ALLOWED_RESOURCES) + 1))
        if chosen:
            resources[kind] = {name: rng.choice(["1", "500m", "64Gi", "100"]) for name in chosen}
    if admissible and resources:
        # Whole GPUs, each limit equal to its request (so never below it); limits without requests have a test
        # of their own (test_limits_without_requests_yield_a_job_the_api_server_admits).
        requests = {
            name: rng.choice(["1", "2"]) if name.endswith("/gpu") else value
            for name, value in (resources.get("requests") or resources["limits"]).items()
        }
        resources = {
            "requests": requests,
            "limits": {n: v for n, v in requests.items() if n.endswith("/gpu") or rng.random() < 0.5},
        }
    training: dict[str, Any] = {
        "env": env,
        "resources": resources,
        "deadline": rng.choice(["1s", "10m", "48h"]),
        "backoffLimit": rng.randrange(11),
    }
    if rng.random() < 0.5:
        training["builtin"] = {
            "data": {"key": rng.choice(NASTY) or "k"},
            "target": "y",
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"hostNetwork": True, "serviceAccountName": "admin"},
        }
        if rng.random() < 0.3:
            training["image"] = rng.choice(["privileged:latest", "docker.io/library/busybox", "x; rm -rf /"])
    else:
        training |= {
            "image": rng.choice(["registry.example.com/t:1", "busybox@sha256:" + "0" * 64]),
            "command": [rng.choice(NASTY) or "sh" for _ in range(rng.randrange(1, 4))],
            "args": [rng.choice(NASTY) for _ in range(rng.randrange(4))],
        }
    registry = {
        "bucket": "models",
        "prefix": rng.choice(["", "a/", "a/b/"]),
        "store": "default",  # a URL of the tenant's own is refused (test_a_tenant_storage_url_is_refused)
    }
    if rng.random() < 0.5:
        registry["credentialsSecret"] = word()
    body = policy(training=training, model={"name": word(), "registry": registry})
    name = rng.choice([word(), word(63), "a" * 253, "x-" * 40 + "y"])
    namespace = rng.choice(["team-a", "team-b", "kube-system", word(20)])
    return PolicyRef(namespace=namespace, name=name, uid=f"uid-{index}"), body


def assert_job_confined(job: Mapping[str, Any], ref: PolicyRef) -> None:
    meta = job["metadata"]
    assert meta["namespace"] == ref.namespace, "a Job always lands in its policy's namespace"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "RetrainPolicy",
        ref.name,
        ref.uid,
        True,
    )
    pod = job["spec"]["template"]["spec"]
    assert set(pod) == POD_KEYS, "no node selection, tolerations, host aliases, runtime class, sysctls, ..."
    assert pod["serviceAccountName"] == TRAINER_SA and pod["automountServiceAccountToken"] is False
    assert pod["hostNetwork"] is False and pod["hostPID"] is False and pod["hostIPC"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
    (container,) = pod["containers"]
    assert container["securityContext"] == CONTAINER_SECURITY
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]
    assert "ports" not in container and "volumeDevices" not in container
    for var in container["env"]:
        assert set(var) in ({"name", "value"}, {"name", "valueFrom"})
        if "valueFrom" in var:
            assert set(var["valueFrom"]) == {"secretKeyRef"} and set(var["valueFrom"]["secretKeyRef"]) == {
                "name",
                "key",
            }, "only keys of Secrets in the Job's own namespace"
    names = [var["name"] for var in container["env"]]
    for reserved in RESERVED_ENV:
        assert names.count(reserved) <= 1
    assert names.count("TERMINATION_MESSAGE_PATH") == 1
    for kind in ("requests", "limits"):
        assert set(container["resources"].get(kind, {})) <= set(ALLOWED_RESOURCES)


def generated_jobs(count: int) -> Iterator[tuple[PolicyRef, dict[str, Any]]]:
    rng = random.Random(20261127)
    for index in range(count):
        ref, body = random_policy(rng, index)
        spec = parse_policy_spec(body["spec"])  # every generated policy is valid
        yield (
            ref,
            build_job(
                spec,
                store=store(),
                policy=ref,
                sequence=index,
                triggers=["t"],
                trainer_image="retrain-operator:0.1.0",
                service_account=TRAINER_SA,
            ),
        )


def test_no_valid_policy_yields_a_job_that_escapes_its_confinement() -> None:
    for ref, job in generated_jobs(400):
        assert_job_confined(job, ref)


def restricted_namespace(admin: Kubectl, namespace: str) -> None:
    """Enforce the ``restricted`` profile and warn about it: Pod Security judges a Job's pod template in warnings."""
    labelled = admin(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    assert labelled.returncode == 0, labelled.stderr


def dry_run_created(admin: Kubectl, docs: list[dict[str, Any]]) -> tuple[set[str], str]:
    """Names the API server would create (server-side dry run), and what it said about the others.

    The objects go as JSON: kubectl's YAML reader takes the ``y`` PyYAML writes for "y" as a boolean.
    """
    items = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    result = admin("create", "--dry-run=server", "-f", "-", input=items, timeout=120)
    created = {
        line.split()[0].split("/", 1)[1]
        for line in result.stdout.splitlines()
        if line.endswith(" created (server dry run)")
    }
    return created, result.stderr


def test_every_policy_the_api_server_admits_yields_a_job_it_admits(admin: Kubectl, unique_namespace: str) -> None:
    """Server-side dry runs of generated policies, then of the Jobs built from them, under the ``restricted`` Pod
    Security profile: a policy the CRD admits must never yield a Job the API server refuses."""
    restricted_namespace(admin, unique_namespace)
    rng = random.Random(20261127)
    policies: dict[str, dict[str, Any]] = {}
    jobs: dict[str, dict[str, Any]] = {}
    for index in range(60):
        ref, body = random_policy(rng, index, admissible=True)
        body["metadata"] = {"name": f"p{index}", "namespace": unique_namespace}
        policies[f"p{index}"] = body
        job = build_job(
            parse_policy_spec(body["spec"]),
            store=store(),
            policy=ref,
            sequence=index,
            triggers=["t"],
            trainer_image="retrain-operator:0.1.0",
            service_account=TRAINER_SA,
        )
        job["metadata"]["namespace"] = unique_namespace
        jobs[f"p{index}"] = job
    admitted, refusals = dry_run_created(admin, list(policies.values()))
    assert admitted == set(policies), refusals
    created, stderr = dry_run_created(admin, [jobs[name] for name in sorted(admitted)])
    assert created == {jobs[name]["metadata"]["name"] for name in admitted}, stderr
    assert "PodSecurity" not in stderr, stderr


def test_limits_without_requests_yield_a_job_the_api_server_admits(admin: Kubectl, unique_namespace: str) -> None:
    body = policy(training={"image": "t:1", "command": ["train"], "resources": {"limits": {"memory": "256Mi"}}})
    body["metadata"] = {"name": "small", "namespace": unique_namespace}
    assert admin.apply(body).returncode == 0
    job = build_job(
        parse_policy_spec(body["spec"]),
        store=store(),
        policy=PolicyRef(unique_namespace, "small", "u"),
        sequence=0,
        triggers=["t"],
        trainer_image="i",
        service_account=TRAINER_SA,
    )
    created, stderr = dry_run_created(admin, [job])
    assert created == {job["metadata"]["name"]}, stderr


def test_builtin_trainer_params_never_reach_the_pod_spec() -> None:
    """``params`` is free-form (the estimator's own), so it may hold anything; it only ever reaches the trainer."""
    body = policy(
        training={
            "builtin": {
                "data": {"key": "k"},
                "target": "y",
                "estimator": "sklearn.linear_model.LogisticRegression",
                "params": {"hostNetwork": True, "privileged": True, "volumes": [{"hostPath": {"path": "/"}}]},
            }
        }
    )
    ref = PolicyRef("team-a", "churn", "u")
    job = build_job(
        parse_policy_spec(body["spec"]),
        store=store(),
        policy=ref,
        sequence=0,
        triggers=["t"],
        trainer_image="i",
        service_account=TRAINER_SA,
    )
    assert_job_confined(job, ref)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["RETRAIN_TRAINER_CONFIG"] or "{}")["builtin"]["params"]["hostNetwork"] is True


@pytest.mark.parametrize("name", sorted(RESERVED_ENV))
@pytest.mark.parametrize("source", [{"value": "/etc/passwd"}, {"secretKeyRef": {"name": "mine", "key": "k"}}])
def test_environment_variables_the_operator_sets_are_refused(name: str, source: dict[str, Any]) -> None:
    spec = policy(training={"image": "t:1", "command": ["train"], "env": [{"name": name, **source}]})["spec"]
    assert problems_of(spec) == [f"spec.training.env[0].name: {reserved_env(name)}"]
    assert "is set by the operator or changes what the trainer loads" in str(reserved_env(name))


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "ld_library_path",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "AWS_ENDPOINT_URL_S3",
        "BOTO_CONFIG",
        "RETRAIN_ESTIMATOR_ALLOWLIST",
        "RETRAIN_ANYTHING",
        "https_proxy",
        "SSL_CERT_FILE",
    ],
)
def test_reserved_environment_by_prefix_and_by_list(name: str) -> None:
    spec = policy(training={"image": "t:1", "command": ["train"], "env": [{"name": name, "value": "x"}]})["spec"]
    (problem,) = problems_of(spec)
    assert problem.startswith("spec.training.env[0].name: ") and "choose another name" in problem


@pytest.mark.parametrize("name", ["MY_PYTHON", "OLD_PRELOAD", "AWSOME", "HOMEDIR", "PATHS", "TOKEN"])
def test_names_that_only_resemble_reserved_ones_are_allowed(name: str) -> None:
    parse_policy_spec(
        policy(training={"image": "t:1", "command": ["train"], "env": [{"name": name, "value": "x"}]})["spec"]
    )


@pytest.mark.parametrize("name", ["A=B", "1ST", "$(HOME)", "x y", ""])
def test_environment_variable_names_must_be_plain(name: str) -> None:
    spec = policy(training={"image": "t:1", "command": ["train"], "env": [{"name": name, "value": "v"}]})["spec"]
    (problem,) = problems_of(spec)
    assert problem.startswith("spec.training.env[0].name: ") and "does not match" in problem


@pytest.mark.parametrize("kind", ["requests", "limits"])
@pytest.mark.parametrize(
    "resource", ["hugepages-2Mi", "example.com/fpga", "pods", "requests.cpu", "nvidia.com/mig-1g.5gb", "storage"]
)
def test_resource_names_outside_the_allowed_set_are_refused(kind: str, resource: str) -> None:
    spec = policy(training={"image": "t:1", "command": ["train"], "resources": {kind: {resource: "1"}}})["spec"]
    assert problems_of(spec) == [
        f"spec.training.resources.{kind}.{resource}: is not allowed; use cpu, memory, ephemeral-storage, "
        "nvidia.com/gpu or amd.com/gpu"
    ]


# ----------------------------------------------------------------------------------------------
# MetricsEndpoint controls

RAW = {"name": "raw", "query": {"promql": 'sum(rate(x{namespace="team-b"}[5m]))', "operator": ">", "threshold": 1}}


@pytest.mark.parametrize(
    ("endpoint", "namespace", "triggers", "expected"),
    [
        (
            {"url": "http://p:9090", "allowedNamespaces": ["team-b"]},
            "team-a",
            None,
            [
                "spec.metrics.endpoint: MetricsEndpoint 'default' does not admit namespace 'team-a'; ask the cluster "
                "admin to add it to spec.allowedNamespaces"
            ],
        ),
        (
            {"url": "http://p:9090", "allowRawQueries": False},
            "team-a",
            [RAW],
            [
                "spec.triggers[0].query: MetricsEndpoint 'default' does not allow raw PromQL; use an accuracyDecay "
                "trigger or an endpoint with allowRawQueries"
            ],
        ),
        (
            {"url": "http://p:9090"},
            "team-a",
            [RAW],
            [
                "spec.triggers[0].query: MetricsEndpoint 'default' does not allow raw PromQL; use an accuracyDecay "
                "trigger or an endpoint with allowRawQueries"
            ],
        ),
        ({"url": "http://p:9090", "allowedNamespaces": ["team-a"]}, "team-a", None, []),
        ({"url": "http://p:9090", "allowedNamespaces": ["*"], "allowRawQueries": True}, "team-a", [RAW], []),
        ({"url": "http://p:9090"}, "team-a", None, []),
    ],
)
def test_endpoint_use_is_checked(
    endpoint: dict[str, Any], namespace: str, triggers: list[dict[str, Any]] | None, expected: list[str]
) -> None:
    body = policy(triggers=triggers) if triggers else policy()
    problems = check_endpoint_use(
        parse_policy_spec(body["spec"]),
        namespace=namespace,
        endpoint_name="default",
        endpoint=parse_endpoint_spec(endpoint),
    )
    assert [str(p) for p in problems] == expected


def test_a_missing_endpoint_is_named() -> None:
    problems = check_endpoint_use(
        parse_policy_spec(policy()["spec"]), namespace="team-a", endpoint_name="nope", endpoint=None
    )
    assert [p.field for p in problems] == ["spec.metrics.endpoint"] and "'nope' does not exist" in str(problems[0])


class RecordingSource:
    """Answers every query with nothing and remembers what was asked, with which headers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        self.calls.append((promql, dict(headers or {})))
        return []


@pytest.mark.parametrize(
    ("endpoint", "triggers"),
    [
        ({"url": "http://p:9090", "allowedNamespaces": ["team-b"]}, None),
        ({"url": "http://p:9090"}, [RAW]),
    ],
)
async def test_a_refused_policy_makes_no_query_and_no_job(
    endpoint: dict[str, Any], triggers: list[dict[str, Any]] | None
) -> None:
    kube = FakeKubeClient()
    source = RecordingSource()

    async def source_for(_: str) -> QuerySource:
        return source

    scheduler = Scheduler(
        reconciler=Reconciler(kube=kube, trainer_image="i", service_account=TRAINER_SA),
        endpoints=Endpoints(kube=kube, operator_namespace=OPERATOR_NS),
        clock=lambda: NOW,
        observer=Observer(source_for=source_for),
    )
    scheduler.upsert_endpoint("default", endpoint)
    scheduler.upsert_store("default", STORE_SPEC)
    scheduler.upsert_policy(policy(triggers=triggers) if triggers else policy())
    await scheduler.run_cycle(list(scheduler.entries))
    status = scheduler.entries[("team-a", "churn")].stored_status
    assert source.calls == [] and kube.created_jobs == []
    assert status["phase"] == "Invalid"
    valid = {c["type"]: c for c in status["conditions"]}["Valid"]
    assert valid["status"] == "False" and "MetricsEndpoint 'default'" in valid["message"]
    assert [e["reason"] for e in kube.events] == ["InvalidSpec"]


def subject(namespace: str, name: str, selector: Mapping[str, str], endpoint: EndpointSpec) -> Subject:
    body = policy()
    body["spec"]["metrics"]["selector"] = dict(selector)
    body["spec"]["triggers"][0]["for"] = "0s"
    return Subject(namespace, name, parse_policy_spec(body["spec"]), "default", endpoint)


async def test_built_in_queries_always_carry_the_policys_own_namespace() -> None:
    endpoint = parse_endpoint_spec({"url": "http://p:9090", "namespaceLabel": "namespace"})
    source = RecordingSource()

    async def source_for(_: str) -> QuerySource:
        return source

    subjects = [
        subject("team-a", "sneaky", {"model": "churn", "namespace": "team-b"}, endpoint),
        subject("team-a", "plain", {"model": "fraud"}, endpoint),
    ]
    await Observer(source_for=source_for).observe(subjects, now=NOW)
    assert source.calls
    for query, _ in source.calls:
        assert 'namespace="team-a"' in query and "team-b" not in query, query


async def test_tenant_header_carries_the_policys_namespace_and_tenants_never_share_a_query() -> None:
    endpoint = parse_endpoint_spec({"url": "http://p:9090", "tenantHeader": "X-Scope-OrgID"})
    source = RecordingSource()

    async def source_for(_: str) -> QuerySource:
        return source

    subjects = [
        subject("team-a", "a", {"model": "churn"}, endpoint),
        subject("team-b", "b", {"model": "churn"}, endpoint),
    ]
    await Observer(source_for=source_for).observe(subjects, now=NOW)
    assert sorted(headers["X-Scope-OrgID"] for _, headers in source.calls) == ["team-a", "team-b"]


# ----------------------------------------------------------------------------------------------
# Hostile label values against a real Prometheus


@pytest.mark.integration
async def test_hostile_label_values_match_only_themselves(prometheus: PrometheusServer, prom_series_id: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    stamps = [(now - timedelta(seconds=90)).timestamp(), (now - timedelta(seconds=30)).timestamp()]
    values = [*HOSTILE, "churn", "a", "b", "x", "line", "break"]
    truth: dict[tuple[str, str], float] = {}
    series = []
    for index, value in enumerate(values):
        for tenant, base in (("team-a", 0.1), ("team-b", 0.6)):
            truth[(tenant, value)] = round(base + index / 1000, 6)
            series.append(
                Series(
                    "tenant_accuracy",
                    {"test": prom_series_id, "namespace": tenant, "model": value},
                    [(t, truth[(tenant, value)]) for t in stamps],
                )
            )
    prometheus.push(series)

    endpoint = parse_endpoint_spec({"url": prometheus.url, "namespaceLabel": "namespace"})
    client = PrometheusClient(url=prometheus.url)

    async def source_for(_: str) -> QuerySource:
        return client

    def spec_for(value: str) -> Any:
        body = policy()
        body["spec"]["metrics"]["selector"] = {"model": value, "test": prom_series_id}
        body["spec"]["triggers"][0] = {
            "name": "acc",
            "accuracyDecay": {"metric": "tenant_accuracy", "window": "5m", "fixedBaseline": 0.9, "maxDrop": 0.05},
        }
        return parse_policy_spec(body["spec"])

    try:
        # One at a time (exact matchers), then all tenants' policies together (one merged regex query).
        for value in HOSTILE:
            observed = await Observer(source_for=source_for).observe(
                [Subject("team-a", "p", spec_for(value), "default", endpoint)], now=now
            )
            assert observed[("team-a", "p", "acc")].value == pytest.approx(truth[("team-a", value)]), repr(value)
        subjects = [
            Subject(tenant, f"p{i}", spec_for(value), "default", endpoint)
            for i, value in enumerate(HOSTILE)
            for tenant in ("team-a", "team-b")
        ]
        observer = Observer(source_for=source_for)
        observed = await observer.observe(subjects, now=now)
        assert observer.stats.queries == 1, "one merged query for every tenant's policy"
        for i, value in enumerate(HOSTILE):
            for tenant in ("team-a", "team-b"):
                got = observed[(tenant, f"p{i}", "acc")].value
                assert got == pytest.approx(truth[(tenant, value)]), (tenant, value, got)
    finally:
        await client.close()

    # The selector as built matches exactly one series: the one with that very value, in that namespace.
    for value in HOSTILE:
        query = promql.selector("tenant_accuracy", {"model": value, "namespace": "team-a", "test": prom_series_id})
        result = prometheus.query(query, at=now.timestamp())["result"]
        assert [(r["metric"]["namespace"], r["metric"]["model"]) for r in result] == [("team-a", value)], query
        regex = promql.multi_selector(
            "tenant_accuracy", {"model": [value, "zzz-none"], "namespace": ["team-a"], "test": [prom_series_id]}
        )
        result = prometheus.query(regex, at=now.timestamp())["result"]
        assert [(r["metric"]["namespace"], r["metric"]["model"]) for r in result] == [("team-a", value)], regex


# ----------------------------------------------------------------------------------------------
# No tenant-controlled URL is called with the operator's credentials


class FiringAccuracy:
    """Accuracy far below the baseline for every model asked about, held long enough to fire."""

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        value = 100.0 if promql.startswith("count_over_time") else 0.5
        return [Sample(labels={"model": "churn"}, value=value, timestamp=at.timestamp())]


async def test_the_operator_never_calls_the_registry_endpoint_of_a_policy() -> None:
    """The store's endpoint goes to the Job, which runs as the tenant; the operator never connects to it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        kube = FakeKubeClient()
        source = FiringAccuracy()

        async def source_for(_: str) -> QuerySource:
            return source

        clock = [NOW]
        scheduler = Scheduler(
            reconciler=Reconciler(kube=kube, trainer_image="i", service_account=TRAINER_SA),
            endpoints=Endpoints(kube=kube, operator_namespace=OPERATOR_NS),
            clock=lambda: clock[0],
            observer=Observer(source_for=source_for),
        )
        scheduler.upsert_endpoint("default", {"url": "http://prometheus.monitoring:9090"})
        scheduler.upsert_store("default", {**STORE_SPEC, "endpoint": url})
        scheduler.upsert_policy(policy())
        await scheduler.run_cycle(list(scheduler.entries))
        (name,) = kube.created_jobs
        job = kube.jobs[("team-a", name)]
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["AWS_ENDPOINT_URL"]["value"] == url  # handed to the Job, which runs as the tenant
        assert json.loads(env["RETRAIN_TRAINER_CONFIG"]["value"])["store"]["endpoint"] == url
        # The Job ends; the operator reads the outcome from the pod's termination message, not the registry.
        job["status"] = {
            "completionTime": "2026-11-27T12:01:00Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        }
        kube.pods[("team-a", "pod")] = {
            "metadata": {"name": "pod", "labels": {"job-name": name}},
            "status": {
                "containerStatuses": [
                    {
                        "state": {
                            "terminated": {
                                "finishedAt": "2026-11-27T12:01:00Z",
                                "message": json.dumps(
                                    {
                                        "outcome": "Succeeded",
                                        "version": "v1",
                                        "modelUri": f"{url}/models/v1",
                                        "score": 0.99,
                                    }
                                ),
                            }
                        }
                    }
                ]
            },
        }
        clock[0] = NOW + timedelta(minutes=2)
        await scheduler.run_cycle(list(scheduler.entries))
        assert scheduler.entries[("team-a", "churn")].stored_status["lastRetrain"]["outcome"] == "Succeeded"
        # A connection, even one that closed at once, would wait in the listen queue.
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:1", "https://s3.example.com"]
)
async def test_a_tenant_storage_url_is_refused(url: str) -> None:
    """A policy carrying its own storage URL is Valid=False naming the field and the ModelStore to use; no Job."""
    kube = FakeKubeClient()
    scheduler = Scheduler(
        reconciler=Reconciler(kube=kube, trainer_image="i", service_account=TRAINER_SA),
        endpoints=Endpoints(kube=kube, operator_namespace=OPERATOR_NS),
        clock=lambda: NOW,
        observer=Observer(source_for=_firing_source),
    )
    scheduler.upsert_endpoint("default", {"url": "http://prometheus.monitoring:9090"})
    scheduler.upsert_store("default", STORE_SPEC)
    body = policy()
    body["spec"]["model"]["registry"]["endpoint"] = url
    scheduler.upsert_policy(body)
    await scheduler.run_cycle(list(scheduler.entries))
    status = scheduler.entries[("team-a", "churn")].stored_status
    valid = next(c for c in status["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False"
    assert "spec.model.registry.endpoint: is no longer accepted" in valid["message"]
    assert "set spec.model.registry.store to its name" in valid["message"]
    assert kube.created_jobs == []


@pytest.mark.parametrize(
    ("registry", "store", "field"),
    [
        ({"store": "missing"}, {}, "spec.model.registry.store: ModelStore 'missing' does not exist"),
        ({}, {"allowedNamespaces": ["team-b"]}, "does not admit namespace 'team-a'"),
        ({}, {"buckets": [{"bucket": "other"}]}, "spec.model.registry.prefix: s3://models/churn/ is outside"),
        ({}, {"buckets": [{"bucket": "models", "prefixes": ["{namespace}/"]}]}, "spec.model.registry.prefix"),
        ({"prefix": "team-a/"}, {"buckets": [{"bucket": "models", "prefixes": ["team-a/churn/"]}]}, "prefix"),
        ({"region": "us-west-2"}, {}, "spec.model.registry.region: is 'us-west-2'"),
    ],
)
async def test_a_policy_must_stay_inside_its_model_store(
    registry: dict[str, Any], store: dict[str, Any], field: str
) -> None:
    kube = FakeKubeClient()
    scheduler = Scheduler(
        reconciler=Reconciler(kube=kube, trainer_image="i", service_account=TRAINER_SA),
        endpoints=Endpoints(kube=kube, operator_namespace=OPERATOR_NS),
        clock=lambda: NOW,
        observer=Observer(source_for=_firing_source),
    )
    scheduler.upsert_endpoint("default", {"url": "http://prometheus.monitoring:9090"})
    scheduler.upsert_store("default", {**STORE_SPEC, **store})
    body = policy()
    body["spec"]["model"]["registry"].update(registry)
    scheduler.upsert_policy(body)
    await scheduler.run_cycle(list(scheduler.entries))
    status = scheduler.entries[("team-a", "churn")].stored_status
    valid = next(c for c in status["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False" and field in valid["message"], valid["message"]
    assert kube.created_jobs == []


async def test_a_namespace_prefix_rule_admits_the_teams_own_folder_and_data() -> None:
    kube = FakeKubeClient()
    scheduler = Scheduler(
        reconciler=Reconciler(kube=kube, trainer_image="i", service_account=TRAINER_SA),
        endpoints=Endpoints(kube=kube, operator_namespace=OPERATOR_NS),
        clock=lambda: NOW,
        observer=Observer(source_for=_firing_source),
    )
    scheduler.upsert_endpoint("default", {"url": "http://prometheus.monitoring:9090"})
    scheduler.upsert_store("default", {**STORE_SPEC, "buckets": [{"bucket": "mod*", "prefixes": ["{namespace}/"]}]})
    body = policy()
    body["spec"]["model"]["registry"]["prefix"] = "team-a/churn/"
    body["spec"]["training"]["builtin"]["data"]["key"] = "team-a/data/train.csv"
    scheduler.upsert_policy(body)
    await scheduler.run_cycle(list(scheduler.entries))
    assert len(kube.created_jobs) == 1, scheduler.entries[("team-a", "churn")].stored_status
    body["metadata"]["generation"] = 2
    body["spec"]["training"]["builtin"]["data"]["key"] = "team-a/../team-b/data.csv"
    scheduler.upsert_policy(body)
    await scheduler.run_cycle(list(scheduler.entries))
    valid = next(c for c in scheduler.entries[("team-a", "churn")].stored_status["conditions"] if c["type"] == "Valid")
    assert "spec.training.builtin.data.key" in valid["message"]


async def _firing_source(_: str) -> QuerySource:
    return FiringAccuracy()


async def test_endpoint_credentials_come_only_from_the_operators_namespace() -> None:
    kube = FakeKubeClient()
    kube.secrets[(OPERATOR_NS, "prometheus")] = {"token": "operator-token"}
    kube.secrets[("team-a", "prometheus")] = {"token": "tenant-token"}
    reads: list[tuple[str, str]] = []
    real_read = kube.read_secret

    async def recording_read(namespace: str, name: str) -> dict[str, str]:
        reads.append((namespace, name))
        return await real_read(namespace, name)

    kube.read_secret = recording_read  # type: ignore[method-assign]
    endpoints = Endpoints(kube=kube, operator_namespace=OPERATOR_NS)
    endpoints.upsert(
        "default", {"url": "http://prometheus.monitoring:9090", "auth": {"bearerTokenSecret": {"name": "prometheus"}}}
    )
    client = await endpoints.source("default")
    try:
        assert reads == [(OPERATOR_NS, "prometheus")]
    finally:
        await endpoints.close()
    assert isinstance(client, PrometheusClient)
