"""The plugin's only door to the Kubernetes API: read policies and what surrounds them, and the three writes.

The plugin runs as the person who calls it, with their kubeconfig (``--kubeconfig``, ``KUBECONFIG`` or
``~/.kube/config``, and ``--context``), never as the operator: what it may read or change is what that
person's RBAC grants. Its writes are the ones a person makes by hand, so the operator needs nothing new:
an annotation (``retrain.dev/force-retrain``, ``retrain.dev/rollback-to``) or ``spec.suspend``, each a
JSON merge patch of the policy. Objects are plain dicts, as on the wire. Limits: no watch; every command
reads once.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3

from retrain_operator.domain.api import BUDGET_PLURAL, GROUP, POLICY_PLURAL, STORE_PLURAL, VERSION


class PluginError(Exception):
    """A failure the plugin reports in one line and a non-zero exit."""


class NotFound(PluginError):
    """The object does not exist (HTTP 404)."""


class Forbidden(PluginError):
    """The caller's RBAC does not allow the call (HTTP 403)."""


@dataclass(frozen=True)
class Connection:
    """The API client and the namespace the kubeconfig's context names (``default`` when it names none)."""

    api: Any
    namespace: str
    context: str | None


def connect(*, kubeconfig: str | None, context: str | None) -> Connection:
    """A client for ``context`` of ``kubeconfig`` (default: ``KUBECONFIG``, then ``~/.kube/config``)."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    configuration = client.Configuration()
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
        chosen = active
        if context is not None:
            chosen = next((c for c in contexts if c.get("name") == context), None)
            if chosen is None:
                names = ", ".join(sorted(str(c.get("name")) for c in contexts)) or "none"
                raise PluginError(f'--context "{context}" is not in {path}; its contexts: {names}')
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except config.ConfigException as exc:
        raise PluginError(f"cannot load the kubeconfig {path}: {exc}") from None
    except OSError as exc:
        raise PluginError(f"cannot read the kubeconfig {path}: {exc}") from None
    namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
    return Connection(api=client.ApiClient(configuration), namespace=namespace, context=(chosen or {}).get("name"))


class Kube:
    """Every call the plugin makes, over the official client."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self._client = client
        self._core = client.CoreV1Api(api)
        self._batch = client.BatchV1Api(api)
        self._custom = client.CustomObjectsApi(api)

    def _call(self, fn: Any, *args: Any, what: str, **kwargs: Any) -> Any:
        try:
            response = fn(*args, _preload_content=False, _request_timeout=30, **kwargs)
        except self._client.ApiException as exc:
            message = str(exc.reason)
            try:
                message = json.loads(exc.body or "{}").get("message", message)
            except (ValueError, TypeError, AttributeError):
                pass
            if exc.status == 404:
                raise NotFound(f"{what} not found") from None
            if exc.status == 403:
                raise Forbidden(f"not allowed to read or change {what}: {message}") from None
            raise PluginError(f"{what}: the API server answered {exc.status}: {message}") from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise PluginError(f"cannot reach the API server: {getattr(exc, 'reason', None) or exc}") from None
        data = response.data
        return json.loads(data) if data else {}

    def list_policies(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            result = self._call(
                self._custom.list_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL, what="RetrainPolicies"
            )
        else:
            result = self._call(
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                POLICY_PLURAL,
                what=f"RetrainPolicies in namespace {namespace}",
            )
        return list(result.get("items") or [])

    def get_policy(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self._call(
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                POLICY_PLURAL,
                name,
                what=f'RetrainPolicy "{name}" in namespace "{namespace}"',
            )
        except NotFound:
            raise NotFound(
                f'RetrainPolicy "{name}" not found in namespace "{namespace}" '
                f"(kubectl retrain list -n {namespace} shows the policies there)"
            ) from None
        return result

    def patch_policy(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the policy's metadata or spec (never its status)."""
        result: dict[str, Any] = self._call(
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            POLICY_PLURAL,
            name,
            dict(patch),
            what=f'RetrainPolicy "{name}" in namespace "{namespace}"',
        )
        return result

    def get_budget(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call(
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                BUDGET_PLURAL,
                name,
                what=f'RetrainBudget "{name}" in namespace "{namespace}"',
            )
        except NotFound:
            return None
        return result

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = self._call(
            self._batch.list_namespaced_job,
            namespace,
            label_selector=label_selector,
            what=f"Jobs in namespace {namespace}",
        )
        return list(result.get("items") or [])

    def get_model_store(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call(
                self._custom.get_cluster_custom_object, GROUP, VERSION, STORE_PLURAL, name, what=f'ModelStore "{name}"'
            )
        except NotFound:
            return None
        return result

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        result = self._call(
            self._core.read_namespaced_secret, name, namespace, what=f'Secret "{name}" in namespace "{namespace}"'
        )
        data = result.get("data") or {}
        return {str(k): base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items() if isinstance(v, str)}
