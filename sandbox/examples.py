"""The world ``examples/`` is written for, made of the sandbox's own parts, so the examples apply as they are.

The policies and the budget in ``examples/`` live in the namespaces ``team-a`` and ``team-b`` and name
the MetricsEndpoint ``default`` and the ModelStore ``default``. The sandbox creates those: the two
namespaces (with what the chart gives a watched namespace), a ``default`` MetricsEndpoint on the
sandbox's Prometheus and a ``default`` ModelStore on its S3, admitting both teams, and the Secrets
the examples name (the store's ``model-store-s3``, team-b's own ``fraud-s3`` and ``feature-store``).
``examples/metricsendpoint.yaml`` and ``examples/modelstore.yaml`` describe a real cluster's admin
objects (their URLs are services the sandbox does not run); they are not applied here. Limits: the
sandbox's demo model exports its series in ``demo``; the examples' policies see no series of their
own until something exports them, and say so (MetricsUnavailable).
"""

from __future__ import annotations

from typing import Any

EXAMPLE_NAMESPACES = ("team-a", "team-b")
ENDPOINT = "default"
STORE = "default"
BUCKET = "models"


def example_world(
    *, prometheus_url: str, s3_endpoint: str, region: str, access_key: str, secret_key: str
) -> list[dict[str, Any]]:
    """The namespaces, Secrets, MetricsEndpoint and ModelStore the examples name, on the sandbox's parts."""
    credentials = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}

    def secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": data,
        }

    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}} for namespace in EXAMPLE_NAMESPACES
    ]
    docs += [secret("model-store-s3", namespace, credentials) for namespace in EXAMPLE_NAMESPACES]
    docs += [
        secret("fraud-s3", "team-b", credentials),
        secret("feature-store", "team-b", {"token": "sandbox"}),
        {
            "apiVersion": "retrain.dev/v1alpha1",
            "kind": "MetricsEndpoint",
            "metadata": {"name": ENDPOINT},
            "spec": {
                "url": prometheus_url,
                "namespaceLabel": "namespace",
                # team-b's example reads its own PromQL.
                "allowRawQueries": True,
                "allowedNamespaces": list(EXAMPLE_NAMESPACES),
            },
        },
        {
            "apiVersion": "retrain.dev/v1alpha1",
            "kind": "ModelStore",
            "metadata": {"name": STORE},
            "spec": {
                "endpoint": s3_endpoint,
                "region": region,
                "addressingStyle": "path",
                "credentialsSecret": {"name": "model-store-s3"},
                "allowedNamespaces": list(EXAMPLE_NAMESPACES),
                "buckets": [{"bucket": BUCKET, "prefixes": ["churn/", "data/", "fraud/"]}],
            },
        },
    ]
    return docs
