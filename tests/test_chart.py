"""The install artefacts: Helm chart, plain manifests, image recipe.

The chart is rendered and linted by Helm's own code (the Helm v4 library in ``helm-python-sdk``,
no helm binary), for the default values and the variants people run: namespaced, several replicas
with leader election, ServiceMonitor. Every rendered object passes a server-side dry run against the
real API server in ``tests/test_api_server.py``, which imports ``VARIANTS``. Here the Deployment is
checked against the ``restricted`` Pod Security profile field by field, and the RBAC against the API
calls the operator's code actually makes, so a new call without its rule, or a rule nothing needs,
fails here. The Dockerfile cannot be built without a container engine; it is linted structurally
instead.
"""

from __future__ import annotations

import ast
import fnmatch
import inspect
import json
import re
import shlex
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from hack import render_manifests, sync_crds, sync_monitoring
from hack.render_manifests import render_chart
from retrain_operator import cli
from retrain_operator.adapters import kubernetes as kube_adapter
from retrain_operator.domain import api
from retrain_operator.domain.jobs import PolicyRef, build_job
from retrain_operator.handlers import operator as handlers
from tests.policies import policy, store

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "retrain-operator"
RELEASE_NS = render_manifests.NAMESPACE
WATCHED = ["team-a", "team-b"]
DIGEST = "sha256:" + "0123456789abcdef" * 4

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": WATCHED},
    "leader-election": {"replicas": 2, "leaderElection": {"enabled": True}},
    "leader-election-namespaced": {
        "replicas": 3,
        "leaderElection": {"enabled": True, "leaseName": "retrain-leader", "leaseSeconds": 30},
        "watchNamespaces": WATCHED,
    },
    "service-monitor": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "MLOps"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        },
        "metricsEndpoint": {
            "create": True,
            "spec": {"url": "http://prometheus.monitoring:9090", "allowedNamespaces": WATCHED},
        },
        "rbac": {"metricsEndpointSecrets": ["prometheus-token"]},
        "image": {"repository": "registry.example.com/platform/retrain-operator", "digest": DIGEST},
        "training": {"serviceAccount": {"namespaces": WATCHED}},
    },
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render_chart(values) for name, values in VARIANTS.items()}


def leader_election(values: Mapping[str, Any]) -> tuple[str, int] | None:
    """(Lease name, lease seconds) of a variant with leader election, from its values over the chart's defaults."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["leaderElection"]
    merged = {**defaults, **values.get("leaderElection", {})}
    return (merged["leaseName"], merged["leaseSeconds"]) if merged["enabled"] else None


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


# ----------------------------------------------------------------------------------------------
# Lint, schemas, restricted profile


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_helm_lint_is_clean(variant: str) -> None:
    report = helm.lint(str(CHART), VARIANTS[variant], strict=True, kube_version="v1.30.0")
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert findings == [] and report["errors"] == []


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_two_rendered_objects_share_a_name(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    objects = rendered[variant]
    assert objects, "the chart rendered nothing"
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "two objects with one name"


def assert_restricted_pod(pod: Mapping[str, Any]) -> None:
    """The Pod Security Standards 'restricted' profile (v1.30), check by check, plus a read-only root."""
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert pod.get(host) in (None, False) or (host == "hostUsers" and pod[host] is False), host
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc.get("runAsUser", 1) != 0
    assert psc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    assert not psc.get("sysctls") and not psc.get("windowsOptions", {}).get("hostProcess")
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= allowed_volumes, volume
    for container in pod["containers"] + pod.get("initContainers", []) + pod.get("ephemeralContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0
        assert sc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert sc.get("procMount", "Default") == "Default"
        assert not sc.get("windowsOptions", {}).get("hostProcess")
        assert sc["readOnlyRootFilesystem"] is True
        assert all("hostPort" not in port for port in container.get("ports", []))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_deployment_meets_the_restricted_profile(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    deployment = one(rendered[variant], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert_restricted_pod(pod)
    (container,) = pod["containers"]
    # The root filesystem is read-only; /tmp (HOME and TMPDIR in the image) is the only writable path.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]["sizeLimit"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["enableServiceLinks"] is False


def parse_run_args(deployment: Mapping[str, Any]) -> Any:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "run"
    return cli._parser().parse_args(container["args"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_operator_command_line_is_one_the_cli_accepts(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    objects = rendered[variant]
    values = VARIANTS[variant]
    deployment = one(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = parse_run_args(deployment)
    assert args.operator_namespace == RELEASE_NS
    assert args.namespace == values.get("watchNamespaces", [])
    election = leader_election(values)
    assert args.leader_election is (election is not None)
    if election is not None:
        assert (args.lease_name, args.lease_seconds) == (election[0], float(election[1]))
    else:
        assert not any(arg.startswith("--lease") for arg in container["args"])
    assert args.training_service_account == "retrain-trainer"
    assert args.liveness == "http://0.0.0.0:8081/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": args.metrics_port, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAMESPACE": "metadata.namespace"}
    assert deployment["spec"]["replicas"] == values.get("replicas", 1)
    # Only the Lease holder reconciles, so a new pod may start next to the old one; without leader
    # election two pods must never run at once.
    if election is not None:
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
    else:
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_images_follow_tag_or_digest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    default = one(rendered["default"], "Deployment")
    assert default["spec"]["template"]["spec"]["containers"][0]["image"] == "retrain-operator:0.1.0"
    assert parse_run_args(default).trainer_image == "retrain-operator:0.1.0"
    pinned = one(rendered["service-monitor"], "Deployment")
    image = f"registry.example.com/platform/retrain-operator@{DIGEST}"
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert parse_run_args(pinned).trainer_image == image
    own = render_chart({"trainer": {"image": {"repository": "registry.example.com/trainer", "tag": "2.0"}}})
    assert parse_run_args(one(own, "Deployment")).trainer_image == "registry.example.com/trainer:2.0"


def test_metrics_service_and_service_monitor_point_at_the_metrics_port(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["service-monitor"]
    deployment, service, monitor = (one(objects, k) for k in ("Deployment", "Service", "ServiceMonitor"))
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert of_kind(rendered["default"], "ServiceMonitor") == []


def test_default_metrics_endpoint_from_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    endpoint = one(rendered["service-monitor"], "MetricsEndpoint")
    assert "namespace" not in endpoint["metadata"]  # cluster-scoped
    assert endpoint["metadata"]["name"] == "default"
    assert endpoint["spec"]["url"] == "http://prometheus.monitoring:9090"
    assert endpoint["spec"]["allowedNamespaces"] == WATCHED and endpoint["spec"]["namespaceLabel"] == "namespace"
    assert api.parse_endpoint_spec(endpoint["spec"]).admits("team-a")
    assert of_kind(rendered["default"], "MetricsEndpoint") == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "replicas > 1 needs leaderElection.enabled=true"),
        (
            {"leaderElection": {"enabled": True, "leaseSeconds": 2}},
            "leaderElection.leaseSeconds must be a whole number",
        ),
        (
            {"leaderElection": {"enabled": True, "leaseSeconds": 7.5}},
            "leaderElection.leaseSeconds must be a whole number",
        ),
        (
            {"leaderElection": {"enabled": True, "leaseName": "Retrain_Lease"}},
            'leaderElection.leaseName "Retrain_Lease" is not a valid object name',
        ),
        ({"replicas": 0}, "replicas must be at least 1"),
        ({"health": {"port": 8080}}, "metrics.port and health.port must differ"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ],
)
def test_values_that_cannot_work_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render_chart(values)


# ----------------------------------------------------------------------------------------------
# Leader election and the training service account


def test_leader_election_objects_exist_only_when_enabled(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, values in VARIANTS.items():
        objects = rendered[variant]
        election = leader_election(values)
        roles = [r for r in of_kind(objects, "Role") if any("leases" in rule["resources"] for rule in r["rules"])]
        if election is None:
            assert roles == [] and "leases" not in yaml.safe_dump_all(objects), variant
            continue
        (role,) = roles
        assert role["metadata"]["namespace"] == RELEASE_NS, "the Lease lives in the operator's own namespace"
        assert role["metadata"]["name"] == "retrain-operator-leader-election"
        assert role["rules"] == [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [election[0]],
                "verbs": ["get", "update"],
            },
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ]


PEERING = re.compile(r"peering|kopf\.dev|POD_ID", re.IGNORECASE)


def test_nothing_mentions_kopf_peering() -> None:
    for variant in VARIANTS:
        assert not PEERING.search(render_manifests.render_chart_text(VARIANTS[variant])), variant
    files = (
        [p for p in CHART.rglob("*") if p.is_file()]
        + sorted((ROOT / "hack").glob("*.py"))
        + [ROOT / "manifests" / "install.yaml", ROOT / "docs" / "install.md"]
    )
    for path in files:
        found = PEERING.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.relative_to(ROOT)} mentions {found.group(0) if found else ''}"
    # kopf itself runs standalone: the operator never joins or creates a peering.
    (call,) = [
        node
        for node in ast.walk(ast.parse(inspect.getsource(cli._run)))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "kopf.operator"
    ]
    assert {k.arg: ast.unparse(k.value) for k in call.keywords}["standalone"] == "True"


@pytest.mark.parametrize("variant", ["namespaced", "service-monitor"])
def test_training_service_account_has_no_token_and_no_role(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    objects = rendered[variant]
    trainers = [sa for sa in of_kind(objects, "ServiceAccount") if sa["metadata"]["name"] == "retrain-trainer"]
    assert sorted(sa["metadata"]["namespace"] for sa in trainers) == WATCHED
    assert all(sa["automountServiceAccountToken"] is False for sa in trainers)
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        assert all(s["name"] != "retrain-trainer" for s in binding["subjects"])
    assert parse_run_args(one(objects, "Deployment")).training_service_account == "retrain-trainer"


def test_cluster_wide_install_asks_for_the_training_service_account(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert [sa["metadata"]["name"] for sa in of_kind(rendered["default"], "ServiceAccount")] == ["retrain-operator"]
    with helm.Config(storage_driver="memory", namespace=RELEASE_NS) as config:
        notes = config.install(str(CHART), "retrain-operator", {}, dry_run="client", namespace=RELEASE_NS)["notes"]
    assert "kubectl -n NAMESPACE create serviceaccount retrain-trainer" in notes


# ----------------------------------------------------------------------------------------------
# The Grafana dashboard and the alert rules (docs/monitoring/)

MONITORING = ROOT / "docs" / "monitoring"


def test_dashboard_and_alert_rules_are_absent_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant in ("default", "namespaced", "leader-election"):
        assert of_kind(rendered[variant], "ConfigMap") == [], variant
        assert of_kind(rendered[variant], "PrometheusRule") == [], variant
    assert "grafana_dashboard" not in (ROOT / "manifests" / "install.yaml").read_text()


def test_dashboard_config_map_carries_the_docs_dashboard_and_the_sidecar_label(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    config_map = one(rendered["service-monitor"], "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    assert config_map["metadata"]["namespace"] == RELEASE_NS
    (text,) = config_map["data"].values()
    source = (MONITORING / "grafana-dashboard.json").read_text()
    assert text == source.rstrip("\n"), "the ConfigMap holds the dashboard of docs/monitoring/ unchanged"
    assert json.loads(text)["uid"] == "retrain-operator"
    elsewhere = render_chart({"metrics": {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}})
    assert one(elsewhere, "ConfigMap")["metadata"]["namespace"] == "monitoring"


def test_prometheus_rule_carries_the_docs_rules_pointed_at_the_metrics_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["service-monitor"]
    rule = one(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    source = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    service = one(objects, "Service")["metadata"]["name"]
    # prometheus-operator names the scrape job after the Service; the chart puts that name in, nothing else changes.
    expected = yaml.safe_load(
        (MONITORING / "alerts.yaml").read_text().replace('job=~"retrain-operator.*"', f'job="{service}"')
    )
    assert rule["spec"] == expected and rule["spec"] != source
    without_service = render_chart({"metrics": {"service": {"enabled": False}, "prometheusRule": {"enabled": True}}})
    assert one(without_service, "PrometheusRule")["spec"] == source


def test_chart_monitoring_files_are_identical_copies_of_docs() -> None:
    assert sync_monitoring.differences() == []
    for name in sync_monitoring.FILES:
        assert (CHART / "files" / name).read_bytes() == (MONITORING / name).read_bytes()


# ----------------------------------------------------------------------------------------------
# RBAC: least privilege, derived from the code

Grant = tuple[str, str, str, str, tuple[str, ...]]  # scope ("*" or a namespace), group, resource, verb, names

# The official client's methods the adapter may call, and the permission each needs.
CLIENT_METHODS: dict[str, tuple[str, str, str]] = {
    "read_namespaced_job": ("batch", "jobs", "get"),
    "create_namespaced_job": ("batch", "jobs", "create"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "list_namespaced_pod": ("", "pods", "list"),
    "create_namespaced_event": ("", "events", "create"),
    "read_namespaced_secret": ("", "secrets", "get"),
    "get_namespaced_custom_object": (api.GROUP, "{plural}", "get"),
    "get_cluster_custom_object": (api.GROUP, "{plural}", "get"),
    "patch_namespaced_custom_object_status": (api.GROUP, "{plural}/status", "patch"),
    "read_namespaced_lease": ("coordination.k8s.io", "leases", "get"),
    "create_namespaced_lease": ("coordination.k8s.io", "leases", "create"),
    "replace_namespaced_lease": ("coordination.k8s.io", "leases", "update"),
}


def our_crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted((ROOT / "crds").glob("*.yaml"))]


HTTP_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
API_PATH = re.compile(
    r"^/apis?/(?:(?P<group>[^/{}]+)/)?v1[^/]*(?:/namespaces/\{\w+\})?/(?P<resource>[a-z]+)"
    r"(?P<name>/\{\w+\})?(?:/(?P<sub>[a-z]+))?$"
)


def _raw_call(node: ast.Call, function: ast.AST) -> tuple[str, str, str]:
    """(group, resource, verb) of ``self._api.call_api(path, method, ...)``, the path read from its f-string."""
    path_node: ast.AST = node.args[1]
    if isinstance(path_node, ast.Name):
        assigned = [
            n.value
            for n in ast.walk(function)
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == path_node.id for t in n.targets)
        ]
        assert len(assigned) == 1, f"cannot read the path of a raw call: {ast.unparse(node)}"
        path_node = assigned[0]
    assert isinstance(path_node, ast.JoinedStr), ast.unparse(path_node)
    path = ""
    for part in path_node.values:
        if isinstance(part, ast.Constant):
            path += str(part.value)
        else:
            assert isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name)
            name = part.value.id
            path += str(getattr(kube_adapter, name)) if name.isupper() else "{" + name + "}"
    match = API_PATH.match(path)
    assert match, f"unexpected API path {path}"
    method = ast.literal_eval(node.args[2])
    verb = HTTP_VERBS.get(method) or ("get" if match["name"] else "list")
    resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
    return match["group"] or "", resource, verb


def adapter_calls() -> Iterator[tuple[str, str, str, str]]:
    """(method, group, resource, verb) of every API call in ``ApiKubeClient``, read from its source."""
    tree = ast.parse(inspect.getsource(kube_adapter.ApiKubeClient))
    for function in ast.walk(tree):
        if not isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_call"):
                continue
            target = node.args[0]
            assert isinstance(target, ast.Attribute), ast.dump(target)
            if target.attr == "call_api":
                yield (function.name, *_raw_call(node, function))
                continue
            assert target.attr in CLIENT_METHODS, (
                f"ApiKubeClient calls {target.attr}: add it to CLIENT_METHODS and its rule to the chart's RBAC"
            )
            group, resource, verb = CLIENT_METHODS[target.attr]
            if "{plural}" in resource:
                plurals = [
                    getattr(api, a.id) for a in node.args if isinstance(a, ast.Name) and a.id.endswith("_PLURAL")
                ]
                assert len(plurals) == 1, f"cannot tell which resource {target.attr} reaches"
                resource = resource.format(plural=plurals[0])
            yield function.name, group, resource, verb


def kopf_watches() -> Iterator[tuple[str, str]]:
    """(group, plural) of every resource a kopf handler watches, read from the handlers' decorators."""
    tree = ast.parse(inspect.getsource(handlers))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).startswith("kopf.on."):
                    kind = ast.unparse(decorator.func).removeprefix("kopf.on.")
                    if kind in ("login", "startup", "cleanup", "probe"):
                        continue
                    assert kind == "event", f"kopf.on.{kind} may patch objects: review the RBAC for it"
                    group, _, plural = (
                        getattr(handlers, a.id) if isinstance(a, ast.Name) else ast.literal_eval(a)
                        for a in decorator.args[:3]
                    )
                    yield group, plural


def callers(method: str) -> set[str]:
    """Modules of the operator's package that call ``<anything>.<method>(...)``, the adapters aside."""
    package = Path(cli.__file__).resolve().parent
    found = set()
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "adapters":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
                found.add(".".join(path.relative_to(package.parent).with_suffix("").parts))
    return found


def elector_arguments() -> dict[str, str]:
    """The arguments ``retrain-operator run`` builds its LeaderElector with. It must build exactly one, and
    only under ``if args.leader_election:``, so the Lease rules are needed only with --leader-election."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cli._run)))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    calls = [
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and ast.unparse(node.func) == "LeaderElector"
    ]
    assert len(calls) == 1, "retrain-operator run must build one LeaderElector"
    node: ast.AST = calls[0]
    while not (isinstance(node, ast.If) and ast.unparse(node.test) == "args.leader_election"):
        assert node in parents, "the LeaderElector must be built only under `if args.leader_election:`"
        child, node = node, parents[node]
    assert any(child is statement for statement in node.body), "built in the else branch"
    return {k.arg: ast.unparse(k.value) for k in calls[0].keywords if k.arg}


def lease_calls() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of the adapter's Lease calls, after checking only the leader elector makes them."""
    leases = {
        (method, group, resource, verb)
        for method, group, resource, verb in adapter_calls()
        if (group, resource) == ("coordination.k8s.io", "leases")
    }
    assert leases, "ApiKubeClient makes no Lease call"
    for method in {method for method, *_ in leases}:
        assert callers(method) == {"retrain_operator.reconcile.leader"}, (
            f"{method} is called outside the leader elector: review the Lease rules of the chart's RBAC"
        )
    return {(group, resource, verb) for _, group, resource, verb in leases}


def required_grants(*, namespaced: list[str], lease: str | None) -> set[Grant]:
    """Every permission the operator needs in a mode, and nothing else. ``lease``: the Lease's name with
    leader election, None without."""
    scopes = {crd["spec"]["names"]["plural"]: crd["spec"]["scope"] for crd in our_crds()}
    plurals = {crd["spec"]["names"]["kind"]: crd["spec"]["names"]["plural"] for crd in our_crds()}
    cluster_scoped: set[tuple[str, str, str]] = set()
    watched: set[tuple[str, str, str]] = set()
    own: set[tuple[str, str, str]] = set()
    # Lease calls come from the leader elector alone, which `run` builds only with --leader-election,
    # for the Lease named --lease-name in --operator-namespace (the release namespace).
    election = lease_calls()
    arguments = elector_arguments()
    assert (arguments["namespace"], arguments["name"]) == ("args.operator_namespace", "args.lease_name")
    for _, group, resource, verb in adapter_calls():
        if (group, resource, verb) in election:
            continue  # below, only with leader election
        if resource == "secrets":
            own.add((group, resource, verb))  # MetricsEndpoint credentials: the operator's namespace only
        elif scopes.get(resource.split("/")[0]) == "Cluster":
            cluster_scoped.add((group, resource, verb))
        else:
            watched.add((group, resource, verb))
    for group, plural in kopf_watches():
        target = cluster_scoped if scopes.get(plural) == "Cluster" else watched
        target |= {(group, plural, "list"), (group, plural, "watch")}
    # Jobs carry ownerReferences with blockOwnerDeletion: the API server then asks for update on the
    # owner's finalizers subresource.
    job = build_job(
        api.parse_policy_spec(policy()["spec"]),
        store=store(),
        policy=PolicyRef("ns", "p", "u"),
        sequence=0,
        triggers=["t"],
        trainer_image="i",
        service_account="s",
    )
    for owner in job["metadata"]["ownerReferences"]:
        if owner.get("blockOwnerDeletion"):
            watched.add((owner["apiVersion"].split("/")[0], f"{plurals[owner['kind']]}/finalizers", "update"))
    # kopf itself: it observes CRDs so that ours are noticed even when established after it starts,
    # and it posts events (those about cluster-scoped objects go to the operator's namespace).
    cluster_scoped |= {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }
    watched.add(("", "events", "create"))
    grants: set[Grant] = set()
    names: tuple[str, ...] = ()
    grants |= {("*", g, r, v, names) for g, r, v in cluster_scoped}
    grants |= {(RELEASE_NS, g, r, v, names) for g, r, v in own}
    if not namespaced:
        grants |= {("*", g, r, v, names) for g, r, v in watched}
    else:
        for ns in namespaced:
            grants |= {(ns, g, r, v, names) for g, r, v in watched}
        grants.add((RELEASE_NS, "", "events", "create", ()))
        # kopf, given namespaces by name, observes namespaces to start and stop their watches.
        grants |= {("*", "", "namespaces", v, names) for v in ("list", "watch")}
    if lease is not None:
        # RBAC authorizes a create before the new object's name is known, so create cannot be narrowed
        # by resourceNames; get and update (the elector's replace) can.
        grants |= {(RELEASE_NS, g, r, v, () if v == "create" else (lease,)) for g, r, v in election}
    return grants


def granted(objects: list[dict[str, Any]], *, service_account: str = "retrain-operator") -> set[Grant]:
    """What the operator's ServiceAccount may do, from the rendered roles and their bindings."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }
    out: set[Grant] = set()
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account and s["namespace"] == RELEASE_NS
            for s in binding["subjects"]
        ):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        scope = "*" if binding["kind"] == "ClusterRoleBinding" else namespace
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((scope, group, resource, verb, tuple(rule.get("resourceNames") or ())))
    return out


@pytest.mark.parametrize("variant", ["default", "namespaced", "leader-election", "leader-election-namespaced"])
def test_rbac_is_exactly_what_the_operator_calls(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    values = VARIANTS[variant]
    election = leader_election(values)
    expected = required_grants(namespaced=values.get("watchNamespaces", []), lease=election[0] if election else None)
    actual = granted(rendered[variant])
    assert actual - expected == set(), "granted but never used"
    assert expected - actual == set(), "used but not granted"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rbac_has_no_wildcards_and_no_cluster_wide_secrets(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    objects = rendered[variant]
    for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(key, [])), (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
            assert not rule.get("nonResourceURLs")
            if role["kind"] == "ClusterRole":
                assert not {"secrets", "serviceaccounts", "serviceaccounts/token"} & set(rule["resources"])
            if "secrets" in rule["resources"]:
                assert role["metadata"]["namespace"] == RELEASE_NS and rule["verbs"] == ["get"]
    secret_names = VARIANTS[variant].get("rbac", {}).get("metricsEndpointSecrets")
    secret_rules = [r for role in of_kind(objects, "Role") for r in role["rules"] if "secrets" in r["resources"]]
    assert len(secret_rules) == 1
    assert secret_rules[0].get("resourceNames") == secret_names


# ----------------------------------------------------------------------------------------------
# Generated files stay in sync with their sources


def test_chart_crds_are_identical_copies_of_crds() -> None:
    assert sync_crds.differences() == []
    for source in (ROOT / "crds").glob("*.yaml"):
        assert (CHART / "crds" / source.name).read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))


def test_install_manifest_is_a_fresh_render() -> None:
    current = (ROOT / "manifests" / "install.yaml").read_text()
    assert current == render_manifests.install_manifest(), "run: python hack/render_manifests.py"


def test_install_manifest_installs_everything_in_order() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert (
        kinds[0] == "Namespace" and docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    )
    crd_names = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition")
    assert crd_names == sorted(yaml.safe_load(p.read_text())["metadata"]["name"] for p in (ROOT / "crds").glob("*"))
    assert kinds.index("Deployment") > max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition")
    assert kinds.index("Deployment") > kinds.index("ClusterRoleBinding")
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] in ("Deployment", "Service", "Role")} == {
        RELEASE_NS
    }


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9_]*):", line)
        if not match:
            continue
        above = lines[index - 1] if index else ""
        if not above.startswith(f"{match.group(1)}# -- "):
            undocumented.append(f"values.yaml:{index + 1}: {match.group(2)}")
    assert undocumented == []


# ----------------------------------------------------------------------------------------------
# The image recipe (no container engine here: the Dockerfile is checked as text)


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        pending += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            instruction, _, rest = pending.strip().partition(" ")
            out.append((instruction.upper(), rest.strip()))
            pending = ""
    return out


def test_dockerfile_is_multi_stage_pinned_non_root_and_read_only_friendly() -> None:
    instructions = dockerfile()
    args: dict[str, str] = {}
    for instruction, rest in instructions:
        if instruction == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args.setdefault(name, default)
    bases = [rest.split()[0] for instruction, rest in instructions if instruction == "FROM"]
    assert len(bases) >= 2, "build and runtime stages"
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert image.startswith("python:3.11"), image
        name_tag = image.split("@")[0]
        assert ":" in name_tag and not name_tag.endswith(":latest"), image
        assert re.search(r":3\.11\.\d+-slim", name_tag) or "@sha256:" in image, f"{image} is not pinned"
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [rest for k, rest in final if k == "USER"]
    assert users and users[-1] == "65532:65532"
    env = " ".join(rest for k, rest in final if k == "ENV")
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    entrypoint = [rest for k, rest in final if k == "ENTRYPOINT"]
    assert entrypoint == ['["retrain-operator"]'], "exec form, the console script"
    assert [rest for k, rest in final if k == "CMD"] == ['["run"]']
    labels = " ".join(rest for k, rest in final if k == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    runs = " ".join(rest for k, rest in final if k == "RUN")
    assert "pip uninstall" in runs
    for tool in ("apt-get install", "curl", "wget", "gcc", "git "):
        assert tool not in runs, f"the runtime stage installs {tool.strip()}"
    assert not any(k == "ADD" for k, _ in instructions), "COPY only; no remote ADD"


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    """``.dockerignore`` excludes everything and re-includes the sources; each COPY source must survive."""
    rules = [
        r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and not r.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negated = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if (
                fnmatch.fnmatch(path, pattern)
                or path.startswith(pattern + "/")
                or fnmatch.fnmatch(path, pattern.replace("**/", "*/"))
            ):
                keep = negated
        return keep

    sources = [
        src for k, rest in dockerfile() if k == "COPY" and "--from" not in rest for src in shlex.split(rest)[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert included(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    assert included("operator/src/retrain_operator/cli.py")
    for excluded in (
        ".git",
        ".venv/bin/python",
        "tests/test_chart.py",
        ".sandbox",
        "charts/retrain-operator",
        "operator/src/retrain_operator/__pycache__/cli.cpython-311.pyc",
    ):
        assert not included(excluded), excluded
