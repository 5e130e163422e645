"""Least privilege, proven by the real authorizer: the chart's RBAC, applied to the real API server.

The operator's identity in every end-to-end test is a token of the chart's ServiceAccount, so the
end-to-end suite proves the chart grants enough; these tests prove it grants no more than it says:
calls outside the README's RBAC table are refused with 403 by kube-apiserver (RBAC authorizer), and
the training pods' ServiceAccount can do nothing at all.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.cluster import OPERATOR_NAMESPACE, install_tenant
from sandbox.controlplane import ControlPlane
from sandbox.processes import kubectl
from tests.support.cluster import Kubectl
from tests.support.stack import CHART_VALUES

pytestmark = pytest.mark.integration


def refused(result: subprocess.CompletedProcess[str]) -> bool:
    """kubectl failed with the API server's 403 (worded "(Forbidden)" or "is forbidden" by kubectl)."""
    return result.returncode != 0 and ("(Forbidden)" in result.stderr or " is forbidden: " in result.stderr)


@pytest.fixture
def tenant(admin: Kubectl, unique_namespace: str) -> str:
    """A namespace the operator watches (the chart's Role and RoleBinding in it) holding a tenant's Secret."""
    install_tenant(admin.kubeconfig, values=CHART_VALUES, namespace=unique_namespace)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tenant-s3", "namespace": unique_namespace},
        "stringData": {"AWS_SECRET_ACCESS_KEY": "tenant-only"},
    }
    assert admin.apply(secret).returncode == 0
    return unique_namespace


@pytest.mark.parametrize(
    "args",
    [
        ("get", "secret", "tenant-s3"),
        ("get", "secrets"),
        ("get", "pod", "any-pod"),  # pods may be listed (for termination messages), never read one by one
        ("create", "configmap", "x", "--from-literal=a=b"),
        ("create", "serviceaccount", "escalate"),
        ("create", "rolebinding", "escalate", "--clusterrole=admin", "--serviceaccount=default:default"),
        ("delete", "pod", "any-pod"),
    ],
)
def test_the_operator_is_refused_outside_its_rules(
    operator_kubeconfig: Path, tenant: str, args: tuple[str, ...]
) -> None:
    result = kubectl(operator_kubeconfig, *args, "-n", tenant)
    assert refused(result), (args, result.returncode, result.stderr)


def merge_patch(kubeconfig: Path, path: str, body: dict[str, Any]) -> int:
    """PATCH ``path`` as the kubeconfig's user, without the GET kubectl makes first; the HTTP status."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    request = urllib.request.Request(
        cluster["server"] + path,
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {user['token']}", "Content-Type": "application/merge-patch+json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_operator_writes_a_policys_status_never_its_spec_or_metadata(
    operator_kubeconfig: Path, admin: Kubectl, tenant: str
) -> None:
    policy = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "churn-policy.yaml").read_text())
    policy["metadata"]["namespace"] = tenant
    assert admin.apply(policy).returncode == 0
    path = f"/apis/retrain.dev/v1alpha1/namespaces/{tenant}/retrainpolicies/churn"
    assert merge_patch(operator_kubeconfig, path, {"spec": {"suspend": True}}) == 403
    assert merge_patch(operator_kubeconfig, path, {"metadata": {"labels": {"owned": "yes"}}}) == 403
    assert merge_patch(operator_kubeconfig, path + "/status", {"status": {"phase": "Watching"}}) == 200


def test_the_operator_reads_secrets_only_in_its_own_namespace(operator_kubeconfig: Path, admin: Kubectl) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "prometheus-token", "namespace": OPERATOR_NAMESPACE},
        "stringData": {"token": "t"},
    }
    assert admin.apply(secret).returncode == 0
    own = kubectl(operator_kubeconfig, "get", "secret", "prometheus-token", "-n", OPERATOR_NAMESPACE)
    assert own.returncode == 0, own.stderr
    listing = kubectl(operator_kubeconfig, "get", "secrets", "-n", OPERATOR_NAMESPACE)
    assert refused(listing), "get by name only: never list (or watch) Secrets"


def test_the_training_service_account_has_no_rights(
    control_plane: ControlPlane, admin: Kubectl, operator_kubeconfig: Path, tenant: str, tmp_path: Path
) -> None:
    account = install_tenant(admin.kubeconfig, values=CHART_VALUES, namespace=tenant)
    body = admin.get("serviceaccount", account, namespace=tenant)
    assert body["automountServiceAccountToken"] is False
    token = admin("create", "token", account, "-n", tenant)
    assert token.returncode == 0, token.stderr
    assert control_plane.pki is not None
    trainer = control_plane.token_kubeconfig(
        tmp_path / "trainer",
        token=token.stdout.strip(),
        user=f"system:serviceaccount:{tenant}:{account}",
        namespace=tenant,
    )
    for args in (
        ("get", "secret", "tenant-s3"),
        ("get", "pods"),
        ("get", "retrainpolicies"),
        ("get", "jobs"),
        ("get", "configmaps"),
    ):
        assert refused(kubectl(trainer, *args, "-n", tenant)), args
    # Beyond what the cluster gives every authenticated user, nothing: the same rules as a bare account.
    assert admin("create", "serviceaccount", "bare", "-n", tenant).returncode == 0
    bare_token = admin("create", "token", "bare", "-n", tenant)
    bare = control_plane.token_kubeconfig(
        tmp_path / "bare",
        token=bare_token.stdout.strip(),
        user=f"system:serviceaccount:{tenant}:bare",
        namespace=tenant,
    )
    rules = kubectl(trainer, "auth", "can-i", "--list", "-n", tenant)
    baseline = kubectl(bare, "auth", "can-i", "--list", "-n", tenant)
    assert rules.returncode == baseline.returncode == 0, rules.stderr + baseline.stderr
    assert sorted(rules.stdout.splitlines()) == sorted(baseline.stdout.splitlines())
