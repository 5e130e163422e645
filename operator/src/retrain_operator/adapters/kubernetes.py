"""The operator's writes and reads of the Kubernetes API, behind one small interface.

Only this module (and kopf's own watching) talks to the API. ``KubeClient`` is what reconciliation
needs and nothing more; ``ApiKubeClient`` implements it with the official client (its blocking
calls run in worker threads), ``FakeKubeClient`` keeps objects in memory for component tests.
Objects are plain dicts in both, as they are on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from retrain_operator.domain.api import BUDGET_PLURAL, ENDPOINT_PLURAL, GROUP, POLICY_PLURAL, STORE_PLURAL, VERSION
from retrain_operator.domain.status import without_nulls
from retrain_operator.domain.times import rfc3339, utcnow


class AlreadyExists(Exception):
    """The object to create exists already (HTTP 409 AlreadyExists)."""


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class Conflict(Exception):
    """An optimistic-concurrency write lost: the object changed since it was read (409, or 422 on a failed test)."""


class ApiError(Exception):
    """Any other refusal of the API server, with its status code and reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


class KubeClient(Protocol):
    """The operator's port to the Kubernetes API: every call it makes, so the RBAC can be derived from it."""

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    async def delete_job(self, namespace: str, name: str) -> None: ...
    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    async def patch_policy_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]: ...
    async def create_event(self, *, involved: Mapping[str, Any], type: str, reason: str, message: str) -> None: ...
    async def read_secret(self, namespace: str, name: str) -> dict[str, str]: ...
    async def get_metrics_endpoint(self, name: str) -> dict[str, Any] | None: ...
    async def get_model_store(self, name: str) -> dict[str, Any] | None: ...
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def get_budget(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def replace_budget_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]: ...


def event_body(*, involved: Mapping[str, Any], type: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    meta = involved.get("metadata") or {}
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "retrain-operator"},
        "reportingComponent": "retrain-operator",
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class ApiKubeClient:
    """KubeClient over the official ``kubernetes`` client, configured from a kubeconfig or in-cluster."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._client = client
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._coordination = client.CoordinationV1Api(api_client)

    @classmethod
    def from_environment(cls, *, kubeconfig: str | None = None) -> ApiKubeClient:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
            configuration = client.Configuration.get_default_copy()
        except config.ConfigException:
            configuration = client.Configuration()
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            try:
                response = fn(*args, _preload_content=False, **kwargs)
            except self._client.ApiException as exc:
                reason, message = "", str(exc.reason)
                try:
                    payload = json.loads(exc.body or "{}")
                    reason, message = payload.get("reason", ""), payload.get("message", message)
                except (ValueError, TypeError):
                    pass
                if exc.status == 404:
                    raise NotFound(message) from None
                if exc.status == 409 and reason == "AlreadyExists":
                    raise AlreadyExists(message) from None
                raise ApiError(exc.status or 0, reason, message) from None
            data = response.data
            return json.loads(data) if data else {}

        return await asyncio.to_thread(run)

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(self._batch.read_namespaced_job, name, namespace)
            return result
        except NotFound:
            return None

    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(self._batch.create_namespaced_job, namespace, dict(body))
        return result

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = await self._call(self._batch.list_namespaced_job, namespace, label_selector=label_selector)
        return list(result.get("items") or [])

    async def delete_job(self, namespace: str, name: str) -> None:
        try:
            await self._call(
                self._batch.delete_namespaced_job, name, namespace, body={"propagationPolicy": "Background"}
            )
        except NotFound:
            pass

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = await self._call(self._core.list_namespaced_pod, namespace, label_selector=label_selector)
        return list(result.get("items") or [])

    async def patch_policy_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            POLICY_PLURAL,
            name,
            {"status": dict(status)},
        )
        return result

    async def create_event(self, *, involved: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        body = event_body(involved=involved, type=type, reason=reason, message=message, now=utcnow())
        namespace = body["metadata"]["namespace"] or "default"
        await self._call(self._core.create_namespaced_event, namespace, body)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(self._coordination.read_namespaced_lease, name, namespace)
            return result
        except NotFound:
            return None

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(self._coordination.create_namespaced_lease, namespace, dict(body))
        return result

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        # A replace carries the resourceVersion read: a concurrent writer makes it fail with 409.
        try:
            result: dict[str, Any] = await self._call(
                self._coordination.replace_namespaced_lease, name, namespace, dict(body)
            )
        except ApiError as exc:
            if exc.status == 409:
                raise Conflict(str(exc)) from None
            raise
        return result

    async def get_budget(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(
                self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, BUDGET_PLURAL, name
            )
            return result
        except NotFound:
            return None

    async def replace_budget_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        # A JSON patch whose first operation tests the resourceVersion read: if anyone wrote the budget
        # since, the server answers 422 and nothing is written.
        body = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/status", "value": dict(status)},
        ]
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{BUDGET_PLURAL}/{name}/status"
        try:
            # The generated custom-objects methods always send merge patches; a JSON patch needs the raw call.
            result: dict[str, Any] = await self._call(
                self._api.call_api,
                path,
                "PATCH",
                body=body,
                auth_settings=["BearerToken"],
                header_params={"Content-Type": "application/json-patch+json", "Accept": "application/json"},
                # Without it call_api answers (response, status, headers), not the response.
                _return_http_data_only=True,
            )
        except ApiError as exc:
            if exc.status in (409, 422):
                raise Conflict(str(exc)) from None
            raise
        return result

    async def get_metrics_endpoint(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(
                self._custom.get_cluster_custom_object, GROUP, VERSION, ENDPOINT_PLURAL, name
            )
            return result
        except NotFound:
            return None

    async def get_model_store(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(
                self._custom.get_cluster_custom_object, GROUP, VERSION, STORE_PLURAL, name
            )
            return result
        except NotFound:
            return None

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        result = await self._call(self._core.read_namespaced_secret, name, namespace)
        data = result.get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies ``application/merge-patch+json``."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    for part in filter(None, selector.split(",")):
        key, _, value = part.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKubeClient:
    """An in-memory KubeClient for component tests: records every write, supports equality selectors only."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.status_writes: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.created_jobs: list[str] = []
        self.deleted_jobs: list[str] = []
        self.fail_create_with: Exception | None = None
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.stores: dict[str, dict[str, Any]] = {}
        self.budgets: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.budget_conflicts = 0
        self._version = 0

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job else None

    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.fail_create_with is not None:
            raise self.fail_create_with
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobs:
            raise AlreadyExists(name)
        job = copy.deepcopy(dict(body))
        job["metadata"]["uid"] = str(uuid.uuid4())
        job["metadata"]["creationTimestamp"] = rfc3339(utcnow())
        self.jobs[(namespace, name)] = job
        self.created_jobs.append(name)
        return copy.deepcopy(job)

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(j)
            for (ns, _), j in self.jobs.items()
            if ns == namespace and _matches(j["metadata"].get("labels") or {}, label_selector)
        ]

    async def delete_job(self, namespace: str, name: str) -> None:
        if self.jobs.pop((namespace, name), None) is not None:
            self.deleted_jobs.append(name)

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(p)
            for (ns, _), p in self.pods.items()
            if ns == namespace and _matches(p["metadata"].get("labels") or {}, label_selector)
        ]

    async def patch_policy_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        # As the API server stores it: nulls pruned from fields the CRD does not mark nullable.
        merged = without_nulls(merge_patch(self.statuses.get((namespace, name), {}), status))
        self.statuses[(namespace, name)] = merged
        self.status_writes.append((namespace, name, copy.deepcopy(dict(status))))
        return {"metadata": {"namespace": namespace, "name": name}, "status": copy.deepcopy(merged)}

    async def create_event(self, *, involved: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append(event_body(involved=involved, type=type, reason=reason, message=message, now=utcnow()))

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        lease = self.leases.get((namespace, name))
        return copy.deepcopy(lease) if lease else None

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if (namespace, name := body["metadata"]["name"]) in self.leases:
            raise AlreadyExists(name)
        self._version += 1
        lease = copy.deepcopy(dict(body))
        lease["metadata"]["resourceVersion"] = str(self._version)
        self.leases[(namespace, name)] = lease
        return copy.deepcopy(lease)

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        current = self.leases.get((namespace, name))
        if current is None:
            raise NotFound(name)
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(name)
        self._version += 1
        lease = copy.deepcopy(dict(body))
        lease["metadata"]["resourceVersion"] = str(self._version)
        self.leases[(namespace, name)] = lease
        return copy.deepcopy(lease)

    def add_budget(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        self._version += 1
        self.budgets[(namespace, name)] = {
            "metadata": {"namespace": namespace, "name": name, "resourceVersion": str(self._version)},
            "spec": copy.deepcopy(dict(spec)),
        }

    async def get_budget(self, namespace: str, name: str) -> dict[str, Any] | None:
        budget = self.budgets.get((namespace, name))
        snapshot = copy.deepcopy(budget) if budget else None
        await asyncio.sleep(0)  # let concurrent reconciliations interleave between read and write, as on a network
        return snapshot

    async def replace_budget_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        budget = self.budgets.get((namespace, name))
        if budget is None:
            raise NotFound(f"retrainbudget {namespace}/{name}")
        if budget["metadata"]["resourceVersion"] != resource_version:
            self.budget_conflicts += 1
            raise Conflict(f"retrainbudget {namespace}/{name} changed")
        self._version += 1
        budget["status"] = copy.deepcopy(dict(status))
        budget["metadata"]["resourceVersion"] = str(self._version)
        return copy.deepcopy(budget)

    async def get_metrics_endpoint(self, name: str) -> dict[str, Any] | None:
        endpoint = self.endpoints.get(name)
        return copy.deepcopy(endpoint) if endpoint else None

    async def get_model_store(self, name: str) -> dict[str, Any] | None:
        store = self.stores.get(name)
        return copy.deepcopy(store) if store else None

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        try:
            return dict(self.secrets[(namespace, name)])
        except KeyError:
            raise NotFound(f"secret {namespace}/{name}") from None
