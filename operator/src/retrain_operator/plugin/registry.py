"""What the model registry says about a policy's versions, for ``history`` and ``rollback``, read as the caller.

The operator never reads tenants' storage (it learns a run's outcome from the termination message), so
status alone cannot say which version every past run produced or whether it became champion. The
registry can: each complete version's ``metadata.json`` names its Job and trigger, its duration and
score, and ``promotions/`` lists every move of the champion pointer. The plugin reads them with the
keys of the Secret the policy's ModelStore names, from the policy's own namespace, so it needs the
caller's right to read that Secret; without it (or without a store) ``history`` says so and shows what
status and the Jobs hold. Limits: at most :data:`MAX_VERSIONS` newest versions are read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from retrain_operator.domain.api import InvalidSpec, parse_model_store_spec
from retrain_operator.plugin.kube import Kube, PluginError
from retrain_operator.plugin.views import RegistryView, VersionInfo, version_info
from retrain_operator.registry import (
    METADATA_FILENAME,
    champion_key,
    parse_pointer,
    promotions_prefix,
    version_of_key,
    versions_prefix,
)

MAX_VERSIONS = 50


def read_registry(kube: Kube, policy: Mapping[str, Any]) -> RegistryView:
    """The policy's registry, read with its ModelStore's credentials; never raises for what it cannot read."""
    spec = policy.get("spec") or {}
    registry = (spec.get("model") or {}).get("registry") or {}
    namespace = str((policy.get("metadata") or {}).get("namespace") or "")
    bucket, prefix = str(registry.get("bucket") or ""), str(registry.get("prefix") or "")
    location = f"s3://{bucket}/{prefix}"
    store_name = registry.get("store")
    if not bucket or not store_name:
        return RegistryView(location, problem="the policy names no ModelStore (spec.model.registry.store)")
    try:
        raw_store = kube.get_model_store(str(store_name))
        if raw_store is None:
            return RegistryView(location, problem=f'ModelStore "{store_name}" does not exist')
        store = parse_model_store_spec(str(store_name), raw_store.get("spec"))
        secret_name = registry.get("credentialsSecret") or (store.credentials.name if store.credentials else None)
        env: dict[str, str] = {}
        if secret_name:
            keys = kube.read_secret(namespace, str(secret_name))
            access = store.credentials.access_key_id_key if store.credentials else "AWS_ACCESS_KEY_ID"
            secret = store.credentials.secret_access_key_key if store.credentials else "AWS_SECRET_ACCESS_KEY"
            env = {"AWS_ACCESS_KEY_ID": keys.get(access, ""), "AWS_SECRET_ACCESS_KEY": keys.get(secret, "")}
    except PluginError as exc:
        return RegistryView(location, problem=str(exc))
    except InvalidSpec as exc:
        return RegistryView(location, problem=f'ModelStore "{store_name}" is invalid: {exc}')
    return _read_store(store.connection, env=env, bucket=bucket, prefix=prefix, location=location)


def _read_store(connection: Any, *, env: Mapping[str, str], bucket: str, prefix: str, location: str) -> RegistryView:
    # The trainer's own store speaks the ModelStore's addressing and endpoint exactly as the Job does.
    from retrain_operator.trainer.storage import S3Store, StoreError

    try:
        store = S3Store.from_config(connection, env=env)
        promoted: set[str] = set()
        for info in store.list(bucket, promotions_prefix(prefix))[-100:]:
            try:
                pointer = parse_pointer(store.read(bucket, info.key)[0])
            except ValueError:
                continue
            if pointer.action == "Train":
                promoted.add(pointer.version)
        champion = None
        try:
            champion = parse_pointer(store.read(bucket, champion_key(prefix))[0]).version
        except StoreError as exc:
            if exc.kind != "NotFound":
                raise
        except ValueError:
            champion = None
        keys = [
            info.key
            for info in store.list(bucket, versions_prefix(prefix))
            if info.key.endswith("/" + METADATA_FILENAME)
        ]
        versions: dict[str, VersionInfo] = {}
        for key in keys[-MAX_VERSIONS:]:
            version = version_of_key(prefix, key)
            if version is None:
                continue
            try:
                metadata = json.loads(store.read(bucket, key)[0])
            except ValueError:
                continue
            if isinstance(metadata, Mapping):
                versions[version] = version_info(version, metadata, promoted=promoted)
    except StoreError as exc:
        return RegistryView(location, problem=f"reading {location} failed: {exc}")
    except ValueError as exc:
        return RegistryView(location, problem=str(exc))
    return RegistryView(location, versions=versions, champion=champion)
