"""An in-memory Kubernetes API server with the semantics the operator relies on.

Why it exists: the operator, kubectl and the Python client must be exercised against a server
that behaves like the real one, and no cluster is available in CI or on a laptop. kmock's
`KubernetesEmulator` provides the HTTP plumbing and API discovery; `ApiServer` replaces its object
handling with a store that has real API-server semantics:

- metadata the server owns: a global `resourceVersion` counter, `uid`, `creationTimestamp`,
  `generation` (bumped only when something outside metadata and status changes), the namespace
  taken from the URL, `generateName`;
- the status subresource split for Jobs, Pods, CRDs and custom resources that declare it;
- POST/PUT/PATCH/DELETE with optimistic concurrency (409 Conflict), JSON merge patch, JSON patch
  (a failed `test` is 422), finalizers, and background garbage collection through ownerReferences;
- lists with `kind`, label and field selectors, `limit`/`continue`; watches that resume from a
  resourceVersion and answer 410 Gone once it has left the bounded history;
- validation of every stored object: built-in kinds against the official schemas of
  `kubernetes_validate`, custom resources against their CRD's structural schema after pruning
  and defaulting, as the real server does; errors are `Status` objects with the standard reasons;
- CRDs register their resources for discovery, so `kubectl apply` and kopf work as on a cluster;
- garbage collection: an object whose owners (of kinds served here) are all gone is deleted, also
  when it is created with an ownerReference to a uid that does not exist, as the real collector does;
- `Table` output for `kubectl get`, pod logs for `kubectl logs` (files of the local kubelet),
  `/healthz`, `/readyz` and `/livez`; /openapi/* answers 404, which kubectl accepts (only
  `kubectl explain` needs the documents).

Limits, deliberately:

- one process, memory only, JSON only (no protobuf); no authentication or authorization;
- server-side apply (`application/apply-patch+yaml`) answers 415;
- strategic merge patch is approximated: JSON merge patch, plus merging by key for a few
  well-known lists (containers, env, volumes, ports, conditions, ownerReferences, ...) and the
  `$patch`, `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList` directives;
- built-in kinds are checked against the *strict* schemas, so an unknown field is rejected with
  422 where a real server would drop it with a warning: a typo in a Job the operator builds
  should fail a test rather than vanish. Custom resources are pruned as a real server does
  (400 only with `fieldValidation=Strict`);
- CEL rules (`x-kubernetes-validations`), webhooks, conversion between CRD versions (all
  versions share one store), quotas, Pod Security admission and most per-kind validation are not
  implemented; a few common checks are (Job `restartPolicy`, container names and images,
  quantities, label syntax, Job names short enough for the `job-name` label);
- namespaced objects are accepted in namespaces that do not exist unless `strict_namespaces`;
- Foreground deletion behaves like Background; deleting a CRD removes its objects at once;
  Jobs deleted through batch/v1 without a propagation policy orphan their Pods, as on a real
  server;
- watches always carry plain objects (no `Table` rows for `kubectl get -w`) and never bookmarks,
  except the one that ends `sendInitialEvents`;
- no controllers except garbage collection and namespace cleanup: `LocalKubelet` runs Jobs.
"""

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import dataclasses
import datetime
import importlib.resources
import json
import random
import re
import signal
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp.web
import attrs
import jsonpatch
import jsonschema
import jsonschema.validators
import kmock
import referencing
import yaml
from typing_extensions import override

from retrain_operator.adapters.kubernetes import merge_patch

JsonDict = dict[str, Any]
ObjectKey = tuple[str | None, str]  # (namespace, name)
StoreKey = tuple[str, str]  # (group, plural): all served versions of a resource share a store

LOG_ANNOTATION: Final = 'sandbox.retrain.dev/log'
"""Pod annotation naming the local file with the container's output (written by the kubelet)."""

DEFAULT_KUBERNETES_VERSION: Final = '1.30'
INITIAL_NAMESPACES: Final = ('default', 'kube-system', 'kube-public', 'kube-node-lease')
ALL_VERBS: Final = ('create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch')

_DNS1123_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
_DNS1123_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
_QUALIFIED_NAME = re.compile(r'^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$')
_LABEL_VALUE = re.compile(r'^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$')
_ENV_NAME = re.compile(r'^[-._a-zA-Z][-._a-zA-Z0-9]*$')
_QUANTITY = re.compile(r'^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$')
_RFC3339 = re.compile(r'^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$')
_GENERATE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789'  # the real server's: no vowels, no look-alikes

# Lists merged element by element in strategic merge patches, by field name and merge key.
_SMP_MERGE_KEYS: Final[Mapping[str, str]] = {
    'containers': 'name', 'initContainers': 'name', 'ephemeralContainers': 'name',
    'env': 'name', 'volumes': 'name', 'volumeMounts': 'mountPath', 'volumeDevices': 'devicePath',
    'ports': 'containerPort', 'imagePullSecrets': 'name', 'conditions': 'type',
    'ownerReferences': 'uid', 'hostAliases': 'ip', 'secrets': 'name',
}
_SMP_MERGED_PRIMITIVE_LISTS: Final = frozenset({'finalizers'})


# ----------------------------------------------------------------------------------------------
# Errors

class ApiError(Exception):
    """A failure that the server answers with a `Status` object, as a real API server does."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details: JsonDict = dict(details or {})

    def status(self) -> JsonDict:
        body: JsonDict = {
            'kind': 'Status', 'apiVersion': 'v1', 'metadata': {},
            'status': 'Failure', 'message': self.message, 'reason': self.reason, 'code': self.code,
        }
        if self.details:
            body['details'] = self.details
        return body


def _bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message)


def _url_not_found() -> ApiError:
    return ApiError(404, 'NotFound', 'the server could not find the requested resource')


def _method_not_allowed() -> ApiError:
    return ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')


def _unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415, 'UnsupportedMediaType',
        f'the body of the request was in an unknown format ({content_type or "none"}) - accepted media types '
        'include: application/json-patch+json, application/merge-patch+json, '
        'application/strategic-merge-patch+json',
    )


# ----------------------------------------------------------------------------------------------
# Resource types

@dataclasses.dataclass(frozen=True, eq=False)
class ResourceType:
    """One served resource (group, version, plural) with what the server needs to know about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ''
    has_status: bool = False
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    list_kind: str = ''
    schema: 'CustomSchema | None' = None  # only for custom resources

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def store_key(self) -> StoreKey:
        return (self.group, self.plural)

    @property
    def qualified_plural(self) -> str:
        return f'{self.plural}.{self.group}' if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f'{self.kind}.{self.group}' if self.group else self.kind

    @property
    def is_custom(self) -> bool:
        return self.schema is not None

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, 'NotFound', f'{self.qualified_plural} "{name}" not found', self._details(name))

    def already_exists(self, name: str) -> ApiError:
        return ApiError(409, 'AlreadyExists', f'{self.qualified_plural} "{name}" already exists', self._details(name))

    def conflict(self, name: str, why: str) -> ApiError:
        return ApiError(
            409, 'Conflict', f'Operation cannot be fulfilled on {self.qualified_plural} "{name}": {why}',
            self._details(name),
        )

    def invalid(self, name: str, causes: Sequence[JsonDict]) -> ApiError:
        texts = [f'{c["field"]}: {c["message"]}' if c.get('field') else c['message'] for c in causes]
        summary = texts[0] if len(texts) == 1 else '[' + ', '.join(texts) + ']'
        return ApiError(
            422, 'Invalid', f'{self.qualified_kind} "{name}" is invalid: {summary}',
            {'name': name, 'group': self.group, 'kind': self.kind, 'causes': list(causes)},
        )

    def _details(self, name: str) -> JsonDict:
        return {'name': name, 'group': self.group, 'kind': self.plural}


BUILTIN_TYPES: Final = (
    ResourceType('', 'v1', 'namespaces', 'Namespace', False, 'namespace', True, ('ns',)),
    ResourceType('', 'v1', 'pods', 'Pod', True, 'pod', True, ('po',), ('all',)),
    ResourceType('', 'v1', 'events', 'Event', True, 'event', False, ('ev',)),
    ResourceType('', 'v1', 'secrets', 'Secret', True, 'secret'),
    ResourceType('', 'v1', 'configmaps', 'ConfigMap', True, 'configmap', False, ('cm',)),
    ResourceType('', 'v1', 'serviceaccounts', 'ServiceAccount', True, 'serviceaccount', False, ('sa',)),
    ResourceType('batch', 'v1', 'jobs', 'Job', True, 'job', True, (), ('all',)),
    ResourceType('events.k8s.io', 'v1', 'events', 'Event', True, 'event', False, ('ev',)),
    ResourceType('coordination.k8s.io', 'v1', 'leases', 'Lease', True, 'lease'),
    ResourceType(
        'apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition', False,
        'customresourcedefinition', True, ('crd', 'crds'), ('api-extensions',),
    ),
)
_NAMESPACES: Final = BUILTIN_TYPES[0]
_CRDS: Final = BUILTIN_TYPES[-1]


# ----------------------------------------------------------------------------------------------
# Small helpers

def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _flag(value: str | None) -> bool:
    """A boolean query parameter as the real server parses it (Go's strconv.ParseBool)."""
    return value in ('1', 't', 'T', 'true', 'TRUE', 'True')


def _meta(obj: Mapping[str, Any]) -> JsonDict:
    meta = obj.get('metadata')
    return meta if isinstance(meta, dict) else {}


def _join(path: str, key: str) -> str:
    return f'{path}.{key}' if path else key


def _field_path(parts: Iterable[str | int]) -> str:
    path = ''
    for part in parts:
        path = f'{path}[{part}]' if isinstance(part, int) else _join(path, part)
    return path


def _cause(field: str, message: str, reason: str = 'FieldValueInvalid') -> JsonDict:
    return {'reason': reason, 'message': message, 'field': field}


def _label_key_causes(key: Any, field: str) -> list[JsonDict]:
    if not isinstance(key, str) or not key:
        return [_cause(field, f'Invalid value: {json.dumps(key)}: a qualified name must not be empty')]
    prefix, _, name = key.rpartition('/')
    causes = []
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        causes.append(_cause(field, f'Invalid value: "{key}": prefix part must be a lowercase RFC 1123 subdomain'))
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        causes.append(_cause(
            field, f'Invalid value: "{key}": name part must consist of alphanumeric characters, \'-\', \'_\' '
            "or '.', must start and end with an alphanumeric character and be no more than 63 characters",
        ))
    return causes


def _labels_causes(labels: Any, field: str) -> list[JsonDict]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [_cause(field, 'Invalid value: must be a map of strings')]
    causes: list[JsonDict] = []
    for key, value in labels.items():
        causes += _label_key_causes(key, field)
        if not isinstance(value, str):
            causes.append(_cause(f'{field}', f'Invalid value: {json.dumps(value)}: must be a string'))
        elif len(value) > 63:
            causes.append(_cause(field, f'Invalid value: "{value}": must be no more than 63 characters'))
        elif not _LABEL_VALUE.match(value):
            causes.append(_cause(
                field, f'Invalid value: "{value}": a valid label must be an empty string or consist of '
                "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ))
    return causes


def _human_duration(seconds: float) -> str:
    """Render an age the way kubectl shows it (5s, 3m10s, 4h, 2d3h)."""
    s = int(seconds)
    if s < 0:
        return '<invalid>'
    if s < 120:
        return f'{s}s'
    m, h, d = s // 60, s // 3600, s // 86400
    if m < 10:
        return f'{m}m{s % 60}s' if s % 60 else f'{m}m'
    if h < 3:
        return f'{m}m'
    if h < 8:
        return f'{h}h{m % 60}m' if m % 60 else f'{h}h'
    if h < 48:
        return f'{h}h'
    if d < 8:
        return f'{d}d{h % 24}h' if h % 24 else f'{d}d'
    return f'{d}d'


def _age(timestamp: Any) -> str:
    if not isinstance(timestamp, str):
        return '<unknown>'
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace('Z', '+00:00'))
    except ValueError:
        return '<unknown>'
    return _human_duration((datetime.datetime.now(datetime.UTC) - then).total_seconds())


# ----------------------------------------------------------------------------------------------
# Selectors

@dataclasses.dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # '=', '!=', 'in', 'notin', 'exists', '!exists'
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.op:
            case '=' | 'in':
                return present and labels[self.key] in self.values
            case '!=' | 'notin':
                return not present or labels[self.key] not in self.values
            case 'exists':
                return present
            case _:
                return not present


_SET_REQ = re.compile(r'^([^\s!=(),]+)\s+(in|notin)\s*\(([^()]*)\)$')
_EQ_REQ = re.compile(r'^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$')
_KEY_ONLY = re.compile(r'^(!?)\s*([^\s!=(),]+)$')


def parse_label_selector(text: str) -> list[_Requirement]:
    """Parse a `labelSelector` query parameter (=, ==, !=, in, notin, exists, !exists)."""
    parts: list[str] = []
    depth, current = 0, ''
    for char in text:
        depth += (char == '(') - (char == ')')
        if char == ',' and depth == 0:
            parts.append(current)
            current = ''
        else:
            current += char
    parts.append(current)
    requirements = []
    for raw in parts:
        part = raw.strip()
        if not part:
            continue
        if m := _SET_REQ.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(',') if v.strip())
            requirements.append(_Requirement(m.group(1), m.group(2), values))
        elif m := _EQ_REQ.match(part):
            op = '!=' if m.group(2) == '!=' else '='
            requirements.append(_Requirement(m.group(1), op, frozenset({m.group(3)})))
        elif m := _KEY_ONLY.match(part):
            requirements.append(_Requirement(m.group(2), '!exists' if m.group(1) else 'exists'))
        else:
            raise _bad_request(f'unable to parse requirement: {part!r}')
    return requirements


# Field selectors a real server supports per kind, beyond metadata.name and metadata.namespace.
_FIELD_LABELS: Final[Mapping[tuple[str, str], frozenset[str]]] = {
    ('', 'Event'): frozenset({
        'involvedObject.kind', 'involvedObject.namespace', 'involvedObject.name', 'involvedObject.uid',
        'involvedObject.apiVersion', 'involvedObject.resourceVersion', 'involvedObject.fieldPath',
        'reason', 'reportingComponent', 'source', 'type',
    }),
    ('events.k8s.io', 'Event'): frozenset({
        'regarding.kind', 'regarding.namespace', 'regarding.name', 'regarding.uid', 'reason', 'type',
        'reportingController',
    }),
    ('', 'Pod'): frozenset({
        'spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName',
        'status.phase', 'status.podIP', 'status.nominatedNodeName',
    }),
    ('', 'Secret'): frozenset({'type'}),
    ('', 'Namespace'): frozenset({'status.phase'}),
    ('batch', 'Job'): frozenset({'status.successful'}),
}


def parse_field_selector(text: str, rtype: ResourceType) -> list[tuple[str, bool, str]]:
    """Parse a `fieldSelector` into (path, equal, value) triples, refusing unsupported fields."""
    allowed = {'metadata.name', 'metadata.namespace'} | _FIELD_LABELS.get((rtype.group, rtype.kind), frozenset())
    result = []
    for raw in text.split(','):
        part = raw.strip()
        if not part:
            continue
        m = re.match(r'^([^=!]+?)\s*(==|=|!=)\s*(.*)$', part)
        if m is None:
            raise _bad_request(f'invalid selector: {part!r}; can\'t understand {part!r}')
        path = m.group(1).strip()
        if path not in allowed:
            raise _bad_request(f'field label not supported: {path}')
        result.append((path, m.group(2) != '!=', m.group(3).strip()))
    return result


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split('.'):
        value = value.get(part) if isinstance(value, Mapping) else None
    if path == 'status.successful':  # a real server exposes the count under this name
        value = obj.get('status', {}).get('succeeded')
    if value is None:
        return ''
    return value if isinstance(value, str) else json.dumps(value)


@dataclasses.dataclass(frozen=True)
class _Selection:
    """What a list or watch request asks for."""

    namespace: str | None = None
    name: str | None = None
    labels: tuple[_Requirement, ...] = ()
    fields: tuple[tuple[str, bool, str], ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = _meta(obj)
        if self.namespace is not None and meta.get('namespace') != self.namespace:
            return False
        if self.name is not None and meta.get('name') != self.name:
            return False
        labels = meta.get('labels') or {}
        if not all(req.matches(labels) for req in self.labels):
            return False
        return all((_field_value(obj, path) == value) == equal for path, equal, value in self.fields)


# ----------------------------------------------------------------------------------------------
# Patches

def strategic_merge_patch(target: Any, patch: Any, field: str = '') -> Any:
    """Approximate a strategic merge patch (see the module docstring for what is covered)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get('$patch') == 'replace':
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != '$patch'}
    if patch.get('$patch') == 'delete':
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get('$retainKeys')
    for key, value in patch.items():
        if key.startswith('$deleteFromPrimitiveList/'):
            name = key.split('/', 1)[1]
            if isinstance(result.get(name), list) and isinstance(value, list):
                result[name] = [item for item in result[name] if item not in value]
            continue
        if key.startswith('$'):  # $setElementOrder/..., $retainKeys, $patch: ordering hints only here
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, key)
        else:
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(current: Any, patch: list[Any], field: str) -> list[Any]:
    merge_key = _SMP_MERGE_KEYS.get(field)
    if field in _SMP_MERGED_PRIMITIVE_LISTS and isinstance(current, list):
        return current + [item for item in patch if item not in current]
    if merge_key is None or not isinstance(current, list) or not all(isinstance(i, dict) for i in patch):
        return [item for item in copy.deepcopy(patch) if not (isinstance(item, dict) and '$patch' in item)]
    result = copy.deepcopy(current)
    for item in patch:
        if item.get('$patch') == 'replace':
            return [{k: v for k, v in i.items() if k != '$patch'} for i in patch if isinstance(i, dict)]
        index = next((n for n, old in enumerate(result) if isinstance(old, dict)
                      and merge_key in item and old.get(merge_key) == item[merge_key]), None)
        if item.get('$patch') == 'delete':
            if index is not None:
                del result[index]
        elif index is None:
            result.append(item)
        else:
            result[index] = strategic_merge_patch(result[index], item, field)
    return result


# ----------------------------------------------------------------------------------------------
# Custom resource schemas

def _nullable_aware(check: Callable[..., Iterator[jsonschema.ValidationError]]) -> Callable[..., Any]:
    def wrapped(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
        if instance is None and schema.get('nullable') is True:
            return
        yield from check(validator, value, instance, schema)
    return wrapped


def _int_or_string(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if value is True and (isinstance(instance, bool) or not isinstance(instance, int | str)):
        yield jsonschema.ValidationError(f'{json.dumps(instance)} is not an integer or a string')


def _list_type(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if not isinstance(instance, list):
        return
    if value == 'set':
        seen: list[Any] = []
        for item in instance:
            if item in seen:
                yield jsonschema.ValidationError(f'Duplicate value: {json.dumps(item)}')
            seen.append(item)
    elif value == 'map':
        keys = schema.get('x-kubernetes-list-map-keys') or []
        seen_keys: set[str] = set()
        for item in instance:
            if isinstance(item, dict):
                ident = json.dumps([item.get(k) for k in keys])
                if ident in seen_keys:
                    yield jsonschema.ValidationError(
                        'Duplicate value: ' + json.dumps({k: item.get(k) for k in keys}))
                seen_keys.add(ident)


_FORMATS = jsonschema.FormatChecker(formats=())


def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.match(value))


def _is_byte(value: object) -> bool:
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


_FORMATS.checks('date-time')(_is_date_time)
_FORMATS.checks('byte', raises=(binascii.Error, ValueError))(_is_byte)


# OpenAPI v3 as Kubernetes reads it: draft 4 semantics (boolean exclusiveMinimum/Maximum),
# `nullable`, and the x-kubernetes extensions that constrain values.
_CrValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {
        **{name: _nullable_aware(check) for name, check in jsonschema.Draft4Validator.VALIDATORS.items()},
        'x-kubernetes-int-or-string': _int_or_string,
        'x-kubernetes-list-type': _list_type,
    },
)


def _describe_error(error: jsonschema.ValidationError) -> list[JsonDict]:
    path = _field_path(error.absolute_path)
    instance = error.instance
    match error.validator:
        case 'required':
            missing = [p for p in error.validator_value if isinstance(instance, dict) and p not in instance]
            return [_cause(_join(path, p), 'Required value', 'FieldValueRequired') for p in missing]
        case 'enum':
            allowed = ', '.join(json.dumps(v) for v in error.validator_value)
            return [_cause(path, f'Unsupported value: {json.dumps(instance)}: supported values: {allowed}',
                           'FieldValueNotSupported')]
        case 'pattern':
            detail = f'{path} in body should match \'{error.validator_value}\''
        case 'type':
            detail = f'{path} in body must be of type {error.validator_value}: "{type(instance).__name__}"'
        case 'minimum' | 'maximum':
            word = 'greater' if error.validator == 'minimum' else 'less'
            exclusive = error.schema.get('exclusiveMinimum' if word == 'greater' else 'exclusiveMaximum')
            detail = (f'{path} in body should be {word} than '
                      f'{"" if exclusive else "or equal to "}{error.validator_value}')
        case 'maxLength' | 'maxItems' | 'maxProperties':
            return [_cause(path, f'Too long: may not be longer than {error.validator_value}', 'FieldValueTooLong')]
        case 'x-kubernetes-list-type':
            return [_cause(path, error.message, 'FieldValueDuplicate')]
        case _:
            detail = error.message
    shown = json.dumps(instance) if not isinstance(instance, dict | list) else type(instance).__name__
    return [_cause(path, f'Invalid value: {shown}: {detail}')]


def _prune(value: Any, schema: Mapping[str, Any], path: str, unknown: list[str], *, root: bool = False) -> None:
    """Drop fields the structural schema does not know, and nulls it does not allow, in place."""
    if isinstance(value, dict):
        props = schema.get('properties') if isinstance(schema.get('properties'), Mapping) else None
        extra = schema.get('additionalProperties')
        keep_unknown = extra is True or schema.get('x-kubernetes-preserve-unknown-fields') is True
        for key in list(value):
            if root and key in ('apiVersion', 'kind', 'metadata'):
                continue
            sub: Any = props[key] if props is not None and key in props else extra
            if not isinstance(sub, Mapping):
                if not keep_unknown:
                    unknown.append(_join(path, key))
                    del value[key]
                continue
            if value[key] is None and sub.get('nullable') is not True:
                del value[key]  # the real server prunes nulls of non-nullable fields before defaulting
                continue
            _prune(value[key], sub, _join(path, key), unknown)
    elif isinstance(value, list) and isinstance(schema.get('items'), Mapping):
        for index, item in enumerate(value):
            _prune(item, schema['items'], f'{path}[{index}]', unknown)


def _apply_defaults(value: Any, schema: Mapping[str, Any]) -> None:
    """Fill `default`s in place, then descend, so that `default: {}` gets its own inner defaults."""
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema['properties'] if isinstance(schema.get('properties'), Mapping) else {}
        extra = schema.get('additionalProperties')
        for key, sub in props.items():
            if key not in value and isinstance(sub, Mapping) and 'default' in sub:
                value[key] = copy.deepcopy(sub['default'])
        for key, child in value.items():
            sub = props.get(key, extra)
            if isinstance(sub, Mapping):
                _apply_defaults(child, sub)
    elif isinstance(value, list) and isinstance(schema.get('items'), Mapping):
        for item in value:
            _apply_defaults(item, schema['items'])


class CustomSchema:
    """The `openAPIV3Schema` of one CRD version: pruning, defaulting and validation."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema: JsonDict = copy.deepcopy(dict(schema))
        self._validator = _CrValidator(self.schema, format_checker=_FORMATS)

    def admit(self, obj: JsonDict) -> tuple[list[str], list[JsonDict]]:
        """Prune and default `obj` in place; return the pruned paths and the validation causes."""
        unknown: list[str] = []
        _prune(obj, self.schema, '', unknown, root=True)
        _apply_defaults(obj, self.schema)
        causes: list[JsonDict] = []
        for error in sorted(self._validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            if error.absolute_path and error.absolute_path[0] == 'metadata':
                continue  # metadata is validated as ObjectMeta, never by the CRD's schema
            causes += _describe_error(error)
        return unknown, causes


_VALUE_VALIDATIONS_FORBIDDEN = ('type', 'default', 'additionalProperties', 'nullable',
                                'x-kubernetes-preserve-unknown-fields')


def structural_problems(schema: Any, path: str = 'openAPIV3Schema', *, root: bool = True) -> list[JsonDict]:
    """Why a schema is not structural, or why its defaults would not validate (empty if fine)."""
    if not isinstance(schema, Mapping):
        return [_cause(path, 'Invalid value: must be an object')]
    problems = []
    int_or_string = schema.get('x-kubernetes-int-or-string') is True
    preserve = schema.get('x-kubernetes-preserve-unknown-fields') is True
    if not schema.get('type') and not int_or_string and not preserve:
        problems.append(_cause(f'{path}.type', 'Required value: must not be empty for specified object fields',
                               'FieldValueRequired'))
    if root and schema.get('type') != 'object':
        problems.append(_cause(f'{path}.type', 'Unsupported value: must be object at the root',
                               'FieldValueNotSupported'))
    if 'properties' in schema and schema.get('additionalProperties') is not None:
        problems.append(_cause(f'{path}.additionalProperties',
                               'Forbidden: additionalProperties and properties are mutual exclusive',
                               'FieldValueForbidden'))
    for junctor in ('anyOf', 'allOf', 'oneOf', 'not'):
        branches = schema.get(junctor)
        for n, branch in enumerate(branches if isinstance(branches, list) else [branches] if branches else []):
            for word in _VALUE_VALIDATIONS_FORBIDDEN:
                if isinstance(branch, Mapping) and word in branch and not (word == 'type' and int_or_string):
                    problems.append(_cause(f'{path}.{junctor}[{n}].{word}', 'Forbidden: must not be specified',
                                           'FieldValueForbidden'))
    for key, sub in (schema.get('properties') or {}).items():
        problems += structural_problems(sub, f'{path}.properties[{key}]', root=False)
    if isinstance(schema.get('additionalProperties'), Mapping):
        problems += structural_problems(schema['additionalProperties'], f'{path}.additionalProperties', root=False)
    if 'items' in schema:
        if isinstance(schema['items'], Mapping):
            problems += structural_problems(schema['items'], f'{path}.items', root=False)
        else:
            problems.append(_cause(f'{path}.items', 'Forbidden: items must be a schema object, not an array',
                                   'FieldValueForbidden'))
    if 'default' in schema and not problems:
        value = copy.deepcopy(schema['default'])
        unknown: list[str] = []
        _prune(value, schema, '', unknown)
        _apply_defaults(value, schema)
        errors = list(_CrValidator(dict(schema), format_checker=_FORMATS).iter_errors(value))
        for error in errors:
            problems.append(_cause(f'{path}.default', f'Invalid value: {json.dumps(schema["default"])}: '
                                   f'{error.message}'))
        if unknown:
            problems.append(_cause(f'{path}.default', f'Invalid value: unknown fields {", ".join(unknown)} '
                                   'would be pruned'))
    return problems


# ----------------------------------------------------------------------------------------------
# Built-in schemas

class BuiltinSchemas:
    """Validators for built-in kinds, built from the official schemas shipped by kubernetes-validate."""

    def __init__(self, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> None:
        self.root = importlib.resources.files('kubernetes_validate') / 'kubernetes-json-schema'
        shipped = sorted(
            (tuple(int(p) for p in m.group(1).split('.')), entry.name)
            for entry in self.root.iterdir()
            if (m := re.match(r'^v(\d+\.\d+)\.\d+-local-strict$', entry.name))
        )
        wanted = tuple(int(p) for p in kubernetes_version.split('.')[:2])
        eligible = [name for version, name in shipped if version <= wanted]
        if not eligible:
            raise ValueError(f'kubernetes-validate ships no schemas for Kubernetes {kubernetes_version} or older')
        self.directory = self.root / eligible[-1]
        self._validators: dict[tuple[str, str], Any] = {}
        self._definitions: referencing.Resource[Any] | None = None

    def causes(self, obj: Mapping[str, Any]) -> list[JsonDict]:
        validator = self._validator(str(obj.get('apiVersion')), str(obj.get('kind')))
        if validator is None:
            return []
        causes: list[JsonDict] = []
        for error in validator.iter_errors(obj):
            path = _field_path(error.absolute_path)
            if error.validator == 'additionalProperties' and isinstance(error.instance, dict):
                known = set(error.schema.get('properties') or {})
                for key in error.instance:
                    if key not in known:
                        causes.append(_cause(_join(path, key), 'Invalid value: field not declared in schema'))
            else:
                causes += _describe_error(error)
        return causes

    def _validator(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._validators:
            stem = re.sub(r'^([^./]*)(?:\.[^/]*)?/', r'\1-', api_version)
            path = self.directory / f'{kind.lower()}-{stem}.json'
            if not path.is_file():
                self._validators[key] = None
            else:
                if self._definitions is None:
                    defs = json.loads((self.directory / '_definitions.json').read_text())
                    self._definitions = referencing.Resource.from_contents(defs)
                schema = json.loads(path.read_text())
                registry: referencing.Registry[Any] = referencing.Registry().with_resources([
                    (schema['$id'], referencing.Resource.from_contents(schema)),
                    (self._definitions.id() or '', self._definitions),
                ])
                self._validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
        return self._validators[key]


def _pod_spec_causes(spec: Any, path: str, *, job: bool) -> list[JsonDict]:
    """The checks of the real server's Pod validation that the operator is likely to trip over."""
    if not isinstance(spec, dict):
        return []
    causes = []
    if job and spec.get('restartPolicy') not in ('Never', 'OnFailure'):
        value = spec.get('restartPolicy')
        message = 'Required value' if value is None else f'Unsupported value: {json.dumps(value)}'
        causes.append(_cause(f'{path}.restartPolicy', f'{message}: supported values: "OnFailure", "Never"',
                             'FieldValueRequired' if value is None else 'FieldValueNotSupported'))
    for group in ('initContainers', 'containers'):
        for n, container in enumerate(spec.get(group) or []):
            where = f'{path}.{group}[{n}]'
            if not isinstance(container, dict):
                continue
            name = container.get('name')
            if not isinstance(name, str) or not _DNS1123_LABEL.match(name) or len(name) > 63:
                causes.append(_cause(f'{where}.name', f'Invalid value: {json.dumps(name)}: a lowercase RFC 1123 '
                                     'label must consist of lower case alphanumeric characters or \'-\''))
            if not container.get('image'):
                causes.append(_cause(f'{where}.image', 'Required value', 'FieldValueRequired'))
            for m, env in enumerate(container.get('env') or []):
                if isinstance(env, dict) and not _ENV_NAME.match(str(env.get('name', ''))):
                    causes.append(_cause(f'{where}.env[{m}].name',
                                         f'Invalid value: {json.dumps(env.get("name"))}: a valid environment '
                                         'variable name must consist of alphabetic characters, digits, \'_\', '
                                         '\'-\', or \'.\', and must not start with a digit'))
            for kind in ('requests', 'limits'):
                for resource, quantity in ((container.get('resources') or {}).get(kind) or {}).items():
                    if isinstance(quantity, str) and not _QUANTITY.match(quantity):
                        causes.append(_cause(f'{where}.resources.{kind}[{resource}]',
                                             f'Invalid value: "{quantity}": must match the regex '
                                             f'{_QUANTITY.pattern}'))
    return causes


def _default_pod_spec(spec: Any) -> None:
    """The defaults the real server fills into pod specs (those that matter to readers of them)."""
    if not isinstance(spec, dict):
        return
    spec.setdefault('dnsPolicy', 'ClusterFirst')
    spec.setdefault('schedulerName', 'default-scheduler')
    spec.setdefault('securityContext', {})
    spec.setdefault('terminationGracePeriodSeconds', 30)
    spec.setdefault('restartPolicy', 'Always')
    for group in ('initContainers', 'containers'):
        for container in spec.get(group) or []:
            if isinstance(container, dict):
                container.setdefault('terminationMessagePath', '/dev/termination-log')
                container.setdefault('terminationMessagePolicy', 'File')
                image = str(container.get('image', ''))
                latest = image.endswith(':latest') or ':' not in image.rsplit('/', 1)[-1]
                container.setdefault('imagePullPolicy', 'Always' if latest and '@' not in image else 'IfNotPresent')
                container.setdefault('resources', {})


# ----------------------------------------------------------------------------------------------
# Tables for kubectl

def _json_path(obj: Any, expression: str) -> Any:
    """Evaluate the simple JSONPath of printer columns: `.a.b`, `[0]`, `[?(@.type=="Ready")]`."""
    tokens = re.findall(r'\[\?\(@\.([\w.-]+)\s*==\s*["\']([^"\']*)["\']\)\]|\[(\d+)\]|\.?([\w-]+)',
                        expression.strip().strip('{}'))
    value = obj
    for filter_key, filter_value, index, key in tokens:
        if filter_key:
            items = value if isinstance(value, list) else []
            value = next((i for i in items if isinstance(i, dict)
                          and str(_json_path(i, '.' + filter_key)) == filter_value), None)
        elif index:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def _table_columns(rtype: ResourceType, crd: Mapping[str, Any] | None) -> list[tuple[str, str, str]]:
    """(name, type, JSONPath or a built-in key) of each column."""
    if crd is not None:
        versions = crd.get('spec', {}).get('versions', [])
        version: JsonDict = next((v for v in versions if v.get('name') == rtype.version), {})
        printer = version.get('additionalPrinterColumns')
        if printer:
            return [('Name', 'string', '.metadata.name')] + [
                (c['name'], c.get('type', 'string'), c['jsonPath']) for c in printer if c.get('priority', 0) == 0]
    builtin: Mapping[str, list[tuple[str, str, str]]] = {
        'Pod': [('Name', 'string', '.metadata.name'), ('Ready', 'string', 'pod:ready'),
                ('Status', 'string', 'pod:status'), ('Restarts', 'string', 'pod:restarts'),
                ('Age', 'date', '.metadata.creationTimestamp')],
        'Job': [('Name', 'string', '.metadata.name'), ('Status', 'string', 'job:status'),
                ('Completions', 'string', 'job:completions'), ('Age', 'date', '.metadata.creationTimestamp')],
        'Namespace': [('Name', 'string', '.metadata.name'), ('Status', 'string', '.status.phase'),
                      ('Age', 'date', '.metadata.creationTimestamp')],
        'Secret': [('Name', 'string', '.metadata.name'), ('Type', 'string', '.type'),
                   ('Data', 'integer', 'count:data'), ('Age', 'date', '.metadata.creationTimestamp')],
        'ConfigMap': [('Name', 'string', '.metadata.name'), ('Data', 'integer', 'count:data'),
                      ('Age', 'date', '.metadata.creationTimestamp')],
        'Event': [('Last Seen', 'date', '.lastTimestamp'), ('Type', 'string', '.type'),
                  ('Reason', 'string', '.reason'), ('Message', 'string', '.message')],
    }
    if rtype.group in ('', 'batch') and rtype.kind in builtin:
        return builtin[rtype.kind]
    return [('Name', 'string', '.metadata.name'), ('Age', 'date', '.metadata.creationTimestamp')]


def _table_cell(obj: JsonDict, kind: str, source: str) -> Any:
    status = obj.get('status') or {}
    match source:
        case 'pod:ready':
            statuses = status.get('containerStatuses') or []
            total = len(obj.get('spec', {}).get('containers') or [])
            return f'{sum(1 for s in statuses if s.get("ready"))}/{total}'
        case 'pod:status':
            for s in status.get('containerStatuses') or []:
                state = s.get('state') or {}
                reason = (state.get('waiting') or state.get('terminated') or {}).get('reason')
                if reason and status.get('phase') != 'Running':
                    return reason
            return status.get('reason') or status.get('phase') or 'Pending'
        case 'pod:restarts':
            return str(sum(int(s.get('restartCount', 0)) for s in status.get('containerStatuses') or []))
        case 'job:status':
            for condition in status.get('conditions') or []:
                if condition.get('type') in ('Complete', 'Failed') and condition.get('status') == 'True':
                    return str(condition['type'])
            return 'Running' if status.get('active') else 'Pending' if not status.get('startTime') else 'Running'
        case 'job:completions':
            return f'{status.get("succeeded", 0)}/{obj.get("spec", {}).get("completions", 1)}'
        case 'count:data':
            return len(obj.get('data') or {}) + len(obj.get('binaryData') or {})
    value = _json_path(obj, source)
    if kind == 'date' and value is not None:
        return _age(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return '<none>' if value is None else value


# ----------------------------------------------------------------------------------------------
# The store

@dataclasses.dataclass(frozen=True)
class _Event:
    rv: int
    type: str
    obj: JsonDict
    old: JsonDict | None = None


@dataclasses.dataclass
class _Collection:
    objects: dict[ObjectKey, JsonDict] = dataclasses.field(default_factory=dict)
    history: deque[_Event] = dataclasses.field(default_factory=deque)
    compacted_rv: int = 0  # watches from an older resourceVersion get 410 Gone
    watchers: set[asyncio.Queue[_Event | None]] = dataclasses.field(default_factory=set)


@dataclasses.dataclass(frozen=True)
class _Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _parse_route(path: str) -> _Route | None:
    parts = [p for p in path.split('/') if p]
    if len(parts) >= 3 and parts[0] == 'api':
        group, version, rest = '', parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == 'apis':
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    # /api/v1/namespaces/{name}/status is the namespace's own subresource, not a collection.
    if rest[0] == 'namespaces' and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ('status', 'finalize')):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return _Route(group, version, '', namespace, None, None)  # unknown shape: answered with 404
    return _Route(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None,
                  rest[2] if len(rest) > 2 else None)


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """
    The Kubernetes API served from memory (see the module docstring for the semantics and limits).

    Serve it with `serve_api()`. In-process helpers (`load_crds`, `put_object`, `get_object`,
    `list_objects`) share the code paths of HTTP requests, validation included. kmock's own
    `objects` view stays empty: objects live in this class's store. kmock's reactions still apply
    to paths that are not resources; `errors` lists requests that crashed the server.
    """

    history_limit: int = 1000
    """Events kept per resource for watches that resume from a resourceVersion."""
    strict_namespaces: bool = False
    """Refuse namespaced objects in namespaces that do not exist (404), as a real server does."""
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    """The version reported by /version, and of the schemas that built-in kinds are checked against."""
    request_history: int | None = None
    """How many requests kmock keeps for assertions (None: all; long sandbox runs want a bound)."""

    _types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _collections: dict[StoreKey, _Collection] = attrs.field(factory=dict, init=False)
    _uids: dict[str, tuple[StoreKey, ObjectKey]] = attrs.field(factory=dict, init=False)
    _owned: dict[str, set[tuple[StoreKey, ObjectKey]]] = attrs.field(factory=dict, init=False)  # by owner uid
    _rv: int = attrs.field(default=0, init=False)
    _builtin_schemas: BuiltinSchemas | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._builtin_schemas = BuiltinSchemas(self.kubernetes_version)
        for rtype in BUILTIN_TYPES:
            self._register(rtype)
        for name in INITIAL_NAMESPACES:
            self._create(_NAMESPACES, None, {'metadata': {'name': name}}, params={})

    @classmethod
    def from_crd_files(cls, paths: Iterable[str | Path], **kwargs: Any) -> 'ApiServer':
        server = cls(**kwargs)
        server.load_crds(paths)
        return server

    # ------------------------------------------------------------------------------------------
    # In-process API

    @property
    def resource_version(self) -> int:
        return self._rv

    def load_crds(self, paths: Iterable[str | Path]) -> list[JsonDict]:
        """Create or replace the CRDs found in YAML files (multi-document files are fine)."""
        stored = []
        for path in paths:
            for document in yaml.safe_load_all(Path(path).read_text()):
                if document:
                    stored.append(self.put_object(document))
        return stored

    def put_object(self, obj: Mapping[str, Any]) -> JsonDict:
        """Create an object, or replace it if it exists, with the validation of HTTP requests."""
        rtype = self._type_for(str(obj.get('apiVersion')), str(obj.get('kind')))
        body = copy.deepcopy(dict(obj))
        namespace = _meta(body).get('namespace') if rtype.namespaced else None
        if rtype.namespaced and not namespace:
            namespace = 'default'
        name = _meta(body).get('name')
        existing = self._collection(rtype).objects.get((namespace, name)) if isinstance(name, str) else None
        if existing is None:
            return self._create(rtype, namespace, body, params={})
        body.setdefault('metadata', {})['resourceVersion'] = _meta(existing)['resourceVersion']
        result = self._update(rtype, existing, body, status_only=False, params={}, require_rv=False)
        if rtype.has_status and 'status' in obj:
            body['metadata']['resourceVersion'] = result['metadata']['resourceVersion']
            result = self._update(rtype, result, body, status_only=True, params={}, require_rv=False)
        return copy.deepcopy(result)

    def get_object(self, resource: str, namespace: str | None, name: str) -> JsonDict | None:
        """One stored object; `resource` as kmock parses it, e.g. 'batch/v1/jobs' or 'v1/pods'."""
        rtype = self._type_for_resource(resource)
        obj = self._collection(rtype).objects.get((namespace if rtype.namespaced else None, name))
        return copy.deepcopy(self._present(rtype, obj)) if obj is not None else None

    def list_objects(self, resource: str, namespace: str | None = None) -> list[JsonDict]:
        """Stored objects of a resource (all namespaces if `namespace` is None), sorted."""
        rtype = self._type_for_resource(resource)
        items = self._collection(rtype).objects.items()
        ordered = sorted(items, key=lambda kv: (kv[0][0] or '', kv[0][1]))
        return [copy.deepcopy(self._present(rtype, obj)) for key, obj in ordered
                if namespace is None or key[0] == namespace]

    def close_watches(self) -> None:
        """End every open watch stream, so that the HTTP server can stop without waiting."""
        self._closing = True
        for collection in self._collections.values():
            for queue in collection.watchers:
                queue.put_nowait(None)

    def _type_for_resource(self, resource: str) -> ResourceType:
        parsed = kmock.resource(resource)
        for (group, version, plural), rtype in self._types.items():
            if parsed.check(kmock.resource(group, version, plural)):
                return rtype
        raise KeyError(f'unknown resource: {resource}')

    def _type_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition('/')
        for (g, v, _), rtype in self._types.items():
            if (g, v) == (group, version) and rtype.kind == kind:
                return rtype
        raise ApiError(404, 'NotFound', f'the server could not find the requested resource ({kind} {api_version})')

    # ------------------------------------------------------------------------------------------
    # HTTP

    @override
    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        major, minor = self.kubernetes_version.split('.')[:2]
        return {
            'major': major, 'minor': minor, 'gitVersion': f'v{major}.{minor}.0', 'gitCommit': '',
            'gitTreeState': 'clean',
            'buildDate': '2024-01-01T00:00:00Z', 'goVersion': 'go1.22', 'compiler': 'gc', 'platform': 'linux/amd64',
        }

    # Discovery keeps kmock's routes, with answers built from the served types: the core group
    # must say "v1" (not "/v1"), subresources carry no short names (kubectl warns about those),
    # versions are ordered by Kubernetes priority (the first is preferred), and an unknown group
    # is an ordinary 404 answer, not a server error (kopf rescans groups whose CRDs are gone).

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            if version not in groups.setdefault(group, []):
                groups[group].append(version)
        return {group: sorted(versions, key=_version_priority) for group, versions in groups.items()}

    def _unknown_discovery_path(self, path: str) -> bool:
        parts = [p for p in path.split('/') if p]
        match parts:
            case ['api', version]:
                return version not in self._group_versions().get('', [])
            case ['apis', group]:
                return group not in self._group_versions()
            case ['apis', group, version]:
                return version not in self._group_versions().get(group, [])
        return False

    def _group_body(self, group: str, versions: list[str]) -> JsonDict:
        entries = [{'groupVersion': f'{group}/{v}', 'version': v} for v in versions]
        return {'name': group, 'versions': entries, 'preferredVersion': entries[0]}

    @override
    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        groups = [self._group_body(g, vs) for g, vs in sorted(self._group_versions().items()) if g]
        return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': groups}

    @override
    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        group = request.url.path.strip('/').split('/')[1]
        versions = self._group_versions().get(group)
        if not versions or not group:
            raise kmock.KubernetesNotFoundError()  # never reached: __call__ answers unknown groups
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **self._group_body(group, versions)}

    @override
    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        parts = request.url.path.strip('/').split('/')
        group, version = ('', parts[1]) if parts[0] == 'api' else (parts[1], parts[2])
        served = [t for (g, v, _), t in sorted(self._types.items()) if (g, v) == (group, version)]
        if not served:
            raise kmock.KubernetesNotFoundError()  # never reached: __call__ answers unknown versions
        resources: list[JsonDict] = []
        for rtype in served:
            resources.append({
                'name': rtype.plural, 'singularName': rtype.singular or rtype.kind.lower(),
                'namespaced': rtype.namespaced, 'kind': rtype.kind, 'verbs': list(ALL_VERBS),
                'shortNames': list(rtype.short_names), 'categories': list(rtype.categories),
            })
            if rtype.has_status:
                resources.append({'name': f'{rtype.plural}/status', 'singularName': '', 'namespaced': rtype.namespaced,
                                  'kind': rtype.kind, 'verbs': ['get', 'patch', 'update']})
            if rtype.plural == 'pods' and not rtype.group:
                resources.append({'name': 'pods/log', 'singularName': '', 'namespaced': True, 'kind': 'Pod',
                                  'verbs': ['get']})
        return {'kind': 'APIResourceList', 'apiVersion': 'v1', 'groupVersion': f'{group}/{version}'.lstrip('/'),
                'resources': resources}

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path in ('/healthz', '/readyz', '/livez'):
            return aiohttp.web.Response(text='ok')
        if raw_request.path.startswith('/openapi/') or self._unknown_discovery_path(raw_request.path):
            # No OpenAPI documents: kubectl then falls back to what discovery tells it (apply works).
            return aiohttp.web.json_response(_url_not_found().status(), status=404)
        route = _parse_route(raw_request.path)
        if route is None:
            return await super().__call__(raw_request)

        # kmock's request parser misreads some resource paths (e.g. /api/v1/namespaces/{name}),
        # so requests for resources are parsed here, and handled with kmock's error bookkeeping.
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        method = raw_request.method.upper()
        watch = _flag(raw_request.query.get('watch'))
        action = (kmock.action.WATCH if method == 'GET' and watch else
                  kmock.action.FETCH if method == 'GET' and route.name else
                  kmock.action.LIST if method == 'GET' else
                  kmock.action.CREATE if method == 'POST' else
                  kmock.action.UPDATE if method in ('PUT', 'PATCH') else
                  kmock.action.DELETE if method == 'DELETE' else None)
        request = kmock.Request(
            id=len(self._requests), raw_request=raw_request, url=raw_request.url, method=method,
            params=dict(raw_request.query), headers=dict(raw_request.headers), cookies=dict(raw_request.cookies),
            body=body, text=body.decode(errors='replace'), data=data, action=action,
            resource=kmock.resource(route.group, route.version, route.plural),
            namespace=route.namespace, name=route.name, subresource=route.subresource,
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as error:
            if not self._errors:
                raise
            self._errors[-1].append(error)
            return await self._render_error(error)

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.request_history is not None and len(self._requests) > self.request_history:
            del self._requests[:-self.request_history]
        route = _parse_route(request.url.path)
        if route is None:
            return await super()._handle(request)  # discovery, /version, /openapi/*, user reactions
        try:
            return await self._serve(request, route)
        except ApiError as error:
            return aiohttp.web.json_response(error.status(), status=error.code)

    async def _serve(self, request: kmock.Request, route: _Route) -> aiohttp.web.StreamResponse:
        rtype = self._types.get((route.group, route.version, route.plural))
        if rtype is None or (route.namespace is not None and not rtype.namespaced):
            raise _url_not_found()
        if rtype.namespaced and route.name is not None and route.namespace is None:
            raise _url_not_found()
        if route.subresource is not None and not (
                (route.subresource == 'status' and rtype.has_status)
                or (route.subresource == 'log' and rtype is self._types[('', 'v1', 'pods')])):
            raise _url_not_found()
        method = request.method.value.upper()
        params = dict(request.params)
        watch = _flag(params.get('watch'))
        if method == 'GET' and watch:
            return await self._stream_watch(request, rtype, route, params)
        match method, route.name:
            case 'GET', None:
                selection = self._selection(rtype, route, params)
                return self._respond(request, rtype, self._list(rtype, selection, params), params)
            case 'GET', str(name) if route.subresource == 'log':
                return self._serve_log(rtype, route.namespace, name)
            case 'GET', str(name):
                return self._respond(request, rtype, self._fetch(rtype, route.namespace, name), params)
            case 'POST', None:
                if rtype.namespaced and route.namespace is None:
                    raise _method_not_allowed()
                created = self._create(rtype, route.namespace, self._body(request), params=params)
                return self._respond(request, rtype, created, params, status=201)
            case 'PUT', str(name):
                old = self._fetch_raw(rtype, route.namespace, name)
                body = self._body(request)
                self._check_identity(rtype, body, route.namespace, name)
                updated = self._update(rtype, old, body, status_only=route.subresource == 'status',
                                       params=params, require_rv=rtype.is_custom)
                return self._respond(request, rtype, updated, params)
            case 'PATCH', str(name):
                patched = self._patch(rtype, route, name, request, params=params)
                return self._respond(request, rtype, patched, params)
            case 'DELETE', str(name):
                options = self._delete_options(request, params)
                deleted, headers = self._delete(rtype, route.namespace, name, options=options)
                return self._respond(request, rtype, deleted, params, headers=headers)
            case 'DELETE', None:
                options = self._delete_options(request, params)
                selection = self._selection(rtype, route, params)
                gone = [self._delete(rtype, _meta(obj).get('namespace'), _meta(obj)['name'], options=options)[0]
                        for obj in self._list(rtype, selection, {})['items']]
                return self._respond(request, rtype, self._list_body(rtype, gone), params)
            case _:
                raise _method_not_allowed()

    def _respond(self, request: kmock.Request, rtype: ResourceType, body: JsonDict, params: Mapping[str, str], *,
                 status: int = 200, headers: Mapping[str, str] | None = None) -> aiohttp.web.StreamResponse:
        accept = request.headers.get('Accept', '')
        if 'as=Table' in accept and request.method.value.upper() == 'GET':
            body = self._table(rtype, body, params)
        return aiohttp.web.json_response(body, status=status, headers=headers)

    def _table(self, rtype: ResourceType, body: JsonDict, params: Mapping[str, str]) -> JsonDict:
        items = body['items'] if 'items' in body else [body]
        crd = None
        if rtype.is_custom:
            crd = self._collection(_CRDS).objects.get((None, rtype.qualified_plural))
        columns = _table_columns(rtype, crd)
        include = params.get('includeObject', 'Metadata')
        rows = []
        for obj in items:
            row_object = obj if include == 'Object' else None if include == 'None' else {
                'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': obj.get('metadata', {})}
            rows.append({'cells': [_table_cell(obj, kind, source) for _, kind, source in columns],
                         'object': row_object})
        return {
            'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1',
            'metadata': {'resourceVersion': body.get('metadata', {}).get('resourceVersion', str(self._rv))},
            'columnDefinitions': [
                {'name': name, 'type': 'string' if kind == 'date' else kind,
                 'format': 'name' if name == 'Name' else '', 'description': name, 'priority': 0}
                for name, kind, _ in columns],
            'rows': rows,
        }

    def _serve_log(self, rtype: ResourceType, namespace: str | None, name: str) -> aiohttp.web.StreamResponse:
        pod = self._fetch_raw(rtype, namespace, name)
        path = (_meta(pod).get('annotations') or {}).get(LOG_ANNOTATION)
        if not path or not Path(path).is_file():
            raise _bad_request(f'container of pod "{name}" has no logs yet (it is not run by the local kubelet)')
        return aiohttp.web.Response(body=Path(path).read_bytes(), content_type='text/plain')

    def _body(self, request: kmock.Request) -> JsonDict:
        content_type = request.headers.get('Content-Type', 'application/json').split(';')[0].strip()
        try:
            if content_type in ('application/yaml', 'application/x-yaml'):
                body = yaml.safe_load(request.body)
            elif content_type in ('application/json', ''):
                body = json.loads(request.body)
            else:
                raise _unsupported_media_type(content_type)
        except (ValueError, yaml.YAMLError) as error:
            raise _bad_request(f'the request body could not be decoded: {error}') from None
        if not isinstance(body, dict):
            raise _bad_request('the request body must be an object')
        if not isinstance(body.get('metadata', {}), dict):
            raise _bad_request('metadata must be an object')
        return body

    def _check_identity(self, rtype: ResourceType, body: JsonDict, namespace: str | None, name: str) -> None:
        meta = _meta(body)
        if meta.get('name') not in (None, name):
            raise _bad_request(f'the name of the object ({meta.get("name")}) does not match the name on the URL '
                               f'({name})')
        if rtype.namespaced and meta.get('namespace') not in (None, '', namespace):
            raise _bad_request('the namespace of the provided object does not match the namespace sent on the '
                               'request')

    def _delete_options(self, request: kmock.Request, params: Mapping[str, str]) -> JsonDict:
        options: JsonDict = {}
        if request.body.strip():
            try:
                loaded = json.loads(request.body)
            except ValueError:
                raise _bad_request('the DeleteOptions could not be decoded') from None
            options = loaded if isinstance(loaded, dict) else {}
        if 'propagationPolicy' in params:
            options['propagationPolicy'] = params['propagationPolicy']
        if params.get('orphanDependents'):
            options['orphanDependents'] = _flag(params['orphanDependents'])
        return options

    def _selection(self, rtype: ResourceType, route: _Route, params: Mapping[str, str]) -> _Selection:
        return _Selection(
            namespace=route.namespace if rtype.namespaced else None,
            name=route.name,
            labels=tuple(parse_label_selector(params.get('labelSelector', ''))),
            fields=tuple(parse_field_selector(params.get('fieldSelector', ''), rtype)),
        )

    # ------------------------------------------------------------------------------------------
    # Watches

    async def _stream_watch(self, request: kmock.Request, rtype: ResourceType, route: _Route,
                           params: Mapping[str, str]) -> aiohttp.web.StreamResponse:
        selection = self._selection(rtype, route, params)
        since = params.get('resourceVersion', '')
        try:
            timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
            since_rv = int(since) if since not in ('', '0') else None
        except ValueError:
            raise _bad_request('resourceVersion and timeoutSeconds must be numbers') from None
        collection = self._collection(rtype)
        queue: asyncio.Queue[_Event | None] = asyncio.Queue()

        # The snapshot and the subscription happen without an await in between: no event is lost.
        initial: list[JsonDict] = []
        if since_rv is None:
            for obj in self._list(rtype, selection, {})['items']:
                initial.append({'type': 'ADDED', 'object': obj})
            if _flag(params.get('sendInitialEvents')):
                initial.append({'type': 'BOOKMARK', 'object': {
                    'kind': rtype.kind, 'apiVersion': rtype.api_version, 'metadata': {
                        'resourceVersion': str(self._rv),
                        'annotations': {'k8s.io/initial-events-end': 'true'}}}})
        elif since_rv < collection.compacted_rv:
            initial.append({'type': 'ERROR', 'object': ApiError(
                410, 'Expired', f'too old resource version: {since_rv} ({collection.compacted_rv})').status()})
        else:
            for past in collection.history:
                if past.rv > since_rv:
                    initial += self._watch_events(rtype, selection, past)
        gone = bool(initial) and initial[-1]['type'] == 'ERROR'
        if not gone and not self._closing:
            collection.watchers.add(queue)

        raw_request = request._raw_request
        assert raw_request is not None  # set for every request that came over HTTP
        response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json'})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        try:
            await response.prepare(raw_request)
            await self._write_events(response, initial)
            while not gone and not self._closing:
                wait = 5.0 if deadline is None else min(5.0, deadline - loop.time())
                if wait <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    transport = raw_request.transport
                    if transport is None or transport.is_closing():
                        break  # the client has gone; nobody reads this stream any more
                    continue
                if event is None:
                    break
                await self._write_events(response, self._watch_events(rtype, selection, event))
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass
        finally:
            collection.watchers.discard(queue)
        return response

    async def _write_events(self, response: aiohttp.web.StreamResponse, events: Sequence[JsonDict]) -> None:
        if events:
            await response.write(b''.join(json.dumps(e).encode() + b'\n' for e in events))

    def _watch_events(self, rtype: ResourceType, selection: _Selection, event: _Event) -> list[JsonDict]:
        # An object that starts or stops matching a selector is ADDED to or DELETED from the watch.
        now_matches = selection.matches(event.obj)
        was_matching = event.old is not None and selection.matches(event.old)
        kind = event.type
        if kind == 'MODIFIED':
            kind = ('MODIFIED' if was_matching else 'ADDED') if now_matches else 'DELETED' if was_matching else ''
        elif not now_matches:
            kind = ''
        return [{'type': kind, 'object': self._present(rtype, event.obj)}] if kind else []

    # ------------------------------------------------------------------------------------------
    # Reads

    def _collection(self, rtype: ResourceType) -> _Collection:
        return self._collections.setdefault(rtype.store_key, _Collection())

    def _present(self, rtype: ResourceType, obj: JsonDict) -> JsonDict:
        # Versions of one CRD share a store; each request sees its own apiVersion.
        return obj if obj.get('apiVersion') == rtype.api_version else {**obj, 'apiVersion': rtype.api_version}

    def _fetch_raw(self, rtype: ResourceType, namespace: str | None, name: str) -> JsonDict:
        obj = self._collection(rtype).objects.get((namespace if rtype.namespaced else None, name))
        if obj is None:
            raise rtype.not_found(name)
        return obj

    def _fetch(self, rtype: ResourceType, namespace: str | None, name: str) -> JsonDict:
        return self._present(rtype, self._fetch_raw(rtype, namespace, name))

    def _list(self, rtype: ResourceType, selection: _Selection, params: Mapping[str, str]) -> JsonDict:
        keys = sorted(self._collection(rtype).objects, key=lambda k: (k[0] or '', k[1]))
        objects = self._collection(rtype).objects
        items = [self._present(rtype, objects[k]) for k in keys if selection.matches(objects[k])]
        start = 0
        if params.get('continue'):
            try:
                after = json.loads(base64.urlsafe_b64decode(params['continue']))
                start = next((n for n, obj in enumerate(items)
                              if [_meta(obj).get('namespace') or '', _meta(obj)['name']] > after), len(items))
            except (ValueError, TypeError, binascii.Error):
                raise ApiError(410, 'Expired', 'the provided continue parameter is too old or malformed') from None
        limit = int(params['limit']) if params.get('limit', '').isdigit() and int(params['limit']) > 0 else None
        page = items[start:start + limit] if limit else items[start:]
        body = self._list_body(rtype, page)
        if limit and start + limit < len(items):
            last = _meta(page[-1])
            token = json.dumps([last.get('namespace') or '', last['name']]).encode()
            body['metadata']['continue'] = base64.urlsafe_b64encode(token).decode()
            body['metadata']['remainingItemCount'] = len(items) - start - limit
        return body

    def _list_body(self, rtype: ResourceType, items: list[JsonDict]) -> JsonDict:
        return {
            'kind': rtype.list_kind or f'{rtype.kind}List',
            'apiVersion': rtype.api_version,
            'metadata': {'resourceVersion': str(self._rv)},
            'items': items,
        }

    # ------------------------------------------------------------------------------------------
    # Writes (synchronous: with one event loop, each write is atomic for every reader)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, rtype: ResourceType, kind: str, obj: JsonDict, old: JsonDict | None = None) -> None:
        collection = self._collection(rtype)
        event = _Event(int(_meta(obj)['resourceVersion']), kind, obj, old)
        while len(collection.history) >= self.history_limit:
            collection.compacted_rv = collection.history.popleft().rv
        collection.history.append(event)
        for queue in collection.watchers:
            queue.put_nowait(event)

    def _create(self, rtype: ResourceType, namespace: str | None, body: JsonDict, *,
                params: Mapping[str, str]) -> JsonDict:
        obj = copy.deepcopy(body)
        self._check_type(rtype, obj)
        meta = obj.setdefault('metadata', {})
        if rtype.namespaced:
            if meta.get('namespace') not in (None, '', namespace):
                raise _bad_request('the namespace of the provided object does not match the namespace sent on '
                                   'the request')
            meta['namespace'] = namespace
            self._check_namespace(rtype, namespace)
        else:
            meta.pop('namespace', None)
        if meta.get('resourceVersion'):
            raise _bad_request('resourceVersion should not be set on objects to be created')
        collection = self._collection(rtype)
        if not meta.get('name'):
            prefix = meta.get('generateName')
            if not prefix or not isinstance(prefix, str):
                raise rtype.invalid('', [_cause('metadata.name', 'Required value: name or generateName is required',
                                                'FieldValueRequired')])
            for _ in range(8):
                meta['name'] = prefix + ''.join(random.choices(_GENERATE_ALPHABET, k=5))
                if (meta.get('namespace'), meta['name']) not in collection.objects:
                    break
        name = meta['name']
        if not isinstance(name, str):
            raise rtype.invalid(str(name), [_cause('metadata.name', 'Invalid value: must be a string')])
        if (meta.get('namespace'), name) in collection.objects:
            raise rtype.already_exists(name)
        for field in ('deletionTimestamp', 'deletionGracePeriodSeconds', 'managedFields', 'selfLink'):
            meta.pop(field, None)
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = _now()
        meta['generation'] = 1
        if rtype.has_status:
            obj.pop('status', None)  # the status of a new object is the server's, never the client's
        self._admit(rtype, obj, None, params)
        if rtype is _CRDS:
            self._accept_crd(obj)
        meta['resourceVersion'] = self._next_rv()
        self._put(rtype, (meta.get('namespace'), name), obj)
        self._emit(rtype, 'ADDED', obj)
        if rtype is _CRDS:
            self._register_crd(obj)
        if meta.get('ownerReferences'):
            self._collect_if_orphaned(rtype, obj)
        return self._present(rtype, obj)

    def _update(self, rtype: ResourceType, old: JsonDict, body: JsonDict, *, status_only: bool,
                params: Mapping[str, str], require_rv: bool) -> JsonDict:
        new = copy.deepcopy(body)
        self._check_type(rtype, new)
        old_meta = _meta(old)
        given_rv = _meta(new).get('resourceVersion')
        if given_rv not in (None, '') and given_rv != old_meta['resourceVersion']:
            raise rtype.conflict(old_meta['name'], 'the object has been modified; please apply your changes to the '
                                 'latest version and try again')
        if require_rv and not status_only and given_rv in (None, ''):
            raise rtype.invalid(old_meta['name'], [_cause(
                'metadata.resourceVersion', 'Invalid value: 0x0: must be specified for an update')])
        if status_only:
            candidate = copy.deepcopy(old)
            candidate.pop('status', None)
            if new.get('status') is not None:
                candidate['status'] = new['status']
        else:
            candidate = new
            if rtype.has_status:
                candidate.pop('status', None)
                if 'status' in old:
                    candidate['status'] = copy.deepcopy(old['status'])
        meta = candidate.setdefault('metadata', {})
        for field in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp',
                      'deletionGracePeriodSeconds', 'generation', 'resourceVersion'):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta.pop('managedFields', None)
        if old_meta.get('deletionTimestamp'):
            added = set(meta.get('finalizers') or []) - set(old_meta.get('finalizers') or [])
            if added:
                raise rtype.invalid(old_meta['name'], [_cause(
                    'metadata.finalizers', f'Forbidden: no new finalizers can be added if the object is being '
                    f'deleted, found new finalizers {sorted(added)!r}', 'FieldValueForbidden')])
        self._admit(rtype, candidate, old, params)
        if rtype is _CRDS:
            self._accept_crd(candidate)
        if _spec_view(candidate) != _spec_view(old):
            meta['generation'] = int(old_meta.get('generation', 1)) + 1
        if candidate == old:
            return self._present(rtype, old)  # a no-op write changes nothing, not even resourceVersion
        meta['resourceVersion'] = self._next_rv()
        key = (meta.get('namespace'), meta['name'])
        if meta.get('deletionTimestamp') and not meta.get('finalizers'):
            self._remove(rtype, key, candidate)
            return self._present(rtype, candidate)
        self._put(rtype, key, candidate)
        self._emit(rtype, 'MODIFIED', candidate, old)
        if rtype is _CRDS:
            self._register_crd(candidate)
        return self._present(rtype, candidate)

    def _patch(self, rtype: ResourceType, route: _Route, name: str, request: kmock.Request, *,
               params: Mapping[str, str]) -> JsonDict:
        content_type = request.headers.get('Content-Type', '').split(';')[0].strip()
        if content_type == 'application/apply-patch+yaml':
            raise ApiError(415, 'UnsupportedMediaType',
                           'server-side apply is not supported by this server; use a merge or JSON patch')
        if content_type not in ('application/merge-patch+json', 'application/json-patch+json',
                                'application/strategic-merge-patch+json'):
            raise _unsupported_media_type(content_type)
        if content_type == 'application/strategic-merge-patch+json' and rtype.is_custom:
            raise ApiError(415, 'UnsupportedMediaType',
                           'strategic merge patch is not supported for custom resources')
        old = self._fetch_raw(rtype, route.namespace, name)
        try:
            patch = json.loads(request.body)
        except ValueError:
            raise _bad_request('the patch could not be decoded as JSON') from None
        current = self._present(rtype, old)
        if content_type == 'application/json-patch+json':
            if not isinstance(patch, list):
                raise _bad_request('a JSON patch must be a list of operations')
            try:
                patched = jsonpatch.apply_patch(current, patch)
            except jsonpatch.JsonPatchTestFailed as error:
                raise rtype.invalid(name, [_cause('', f'the server rejected our request due to an error in our '
                                                  f'request: {error}')]) from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as error:
                raise rtype.invalid(name, [_cause('', f'the server rejected our request due to an error in our '
                                                  f'request: {error}')]) from None
        elif not isinstance(patch, dict):
            raise _bad_request('a merge patch must be an object')
        elif content_type == 'application/merge-patch+json':
            patched = merge_patch(current, patch)
        else:
            patched = strategic_merge_patch(current, patch)
        if not isinstance(patched, dict) or not isinstance(patched.get('metadata', {}), dict):
            raise _bad_request('the patched object is not an object with metadata')
        self._check_identity(rtype, patched, route.namespace, name)
        if _meta(patched).get('resourceVersion') == _meta(old)['resourceVersion']:
            _meta(patched).pop('resourceVersion')  # only a resourceVersion set by the patch is a precondition
        return self._update(rtype, old, patched, status_only=route.subresource == 'status', params=params,
                            require_rv=False)

    def _delete(self, rtype: ResourceType, namespace: str | None, name: str, *,
                options: Mapping[str, Any]) -> tuple[JsonDict, dict[str, str]]:
        obj = self._fetch_raw(rtype, namespace, name)
        meta = _meta(obj)
        headers: dict[str, str] = {}
        preconditions = options.get('preconditions') or {}
        if preconditions.get('uid') not in (None, meta['uid']):
            raise rtype.conflict(name, f'Precondition failed: UID in precondition: {preconditions["uid"]}, UID in '
                                 f'object meta: {meta["uid"]}')
        if preconditions.get('resourceVersion') not in (None, meta['resourceVersion']):
            raise rtype.conflict(name, f'Precondition failed: ResourceVersion in precondition: '
                                 f'{preconditions["resourceVersion"]}, ResourceVersion in object meta: '
                                 f'{meta["resourceVersion"]}')
        policy = options.get('propagationPolicy')
        if policy is None and isinstance(options.get('orphanDependents'), bool):
            policy = 'Orphan' if options['orphanDependents'] else 'Background'
        if policy is None and (rtype.group, rtype.version, rtype.plural) == ('batch', 'v1', 'jobs'):
            policy = 'Orphan'  # batch/v1 keeps this default for backward compatibility
            headers['Warning'] = ('299 - "child pods are preserved by default when jobs are deleted; set '
                                  'propagationPolicy=Background to remove them or set propagationPolicy=Orphan '
                                  'to suppress this warning"')
        if policy not in (None, 'Orphan', 'Background', 'Foreground'):
            raise _bad_request(f'unsupported propagationPolicy: {policy}')
        if policy == 'Orphan':
            self._orphan_dependents(meta['uid'])
        if meta.get('deletionTimestamp'):
            return self._present(rtype, obj), headers
        key = (meta.get('namespace'), name)
        if rtype is _NAMESPACES:
            return self._delete_namespace(obj), headers
        if meta.get('finalizers'):
            marked = copy.deepcopy(obj)
            marked['metadata']['deletionTimestamp'] = _now()
            marked['metadata']['deletionGracePeriodSeconds'] = 0
            marked['metadata']['resourceVersion'] = self._next_rv()
            self._put(rtype, key, marked)
            self._emit(rtype, 'MODIFIED', marked, obj)
            return self._present(rtype, marked), headers
        final = copy.deepcopy(obj)
        final['metadata']['resourceVersion'] = self._next_rv()
        self._remove(rtype, key, final)
        return self._present(rtype, final), headers

    def _delete_namespace(self, obj: JsonDict) -> JsonDict:
        name = _meta(obj)['name']
        marked = copy.deepcopy(obj)
        marked['metadata']['deletionTimestamp'] = _now()
        marked['metadata']['resourceVersion'] = self._next_rv()
        marked.setdefault('status', {})['phase'] = 'Terminating'
        self._put(_NAMESPACES, (None, name), marked)
        self._emit(_NAMESPACES, 'MODIFIED', marked, obj)
        for rtype in self._namespaced_types():
            for key in [k for k in self._collection(rtype).objects if k[0] == name]:
                if key in self._collection(rtype).objects:
                    self._delete(rtype, name, key[1], options={'propagationPolicy': 'Background'})
        self._finish_namespace(name)
        return self._present(_NAMESPACES, self._collection(_NAMESPACES).objects.get((None, name), marked))

    def _finish_namespace(self, name: str | None) -> None:
        if name is None:
            return
        namespace = self._collection(_NAMESPACES).objects.get((None, name))
        if namespace is None or not _meta(namespace).get('deletionTimestamp'):
            return
        if any(k[0] == name for rtype in self._namespaced_types() for k in self._collection(rtype).objects):
            return
        final = copy.deepcopy(namespace)
        final['metadata']['resourceVersion'] = self._next_rv()
        self._remove(_NAMESPACES, (None, name), final)

    def _namespaced_types(self) -> list[ResourceType]:
        seen: dict[StoreKey, ResourceType] = {}
        for rtype in self._types.values():
            if rtype.namespaced:
                seen.setdefault(rtype.store_key, rtype)
        return list(seen.values())

    def _remove(self, rtype: ResourceType, key: ObjectKey, final: JsonDict) -> None:
        self._pop(rtype, key)
        uid = _meta(final).get('uid')
        self._emit(rtype, 'DELETED', final)
        if rtype is _CRDS:
            self._unregister_crd(final)
        if uid:
            self._collect_dependents(uid)
        if rtype.namespaced:
            self._finish_namespace(key[0])

    def _put(self, rtype: ResourceType, key: ObjectKey, obj: JsonDict) -> None:
        self._pop(rtype, key)
        self._collection(rtype).objects[key] = obj
        meta = _meta(obj)
        self._uids[meta['uid']] = (rtype.store_key, key)
        for ref in meta.get('ownerReferences') or []:
            self._owned.setdefault(str(ref.get('uid')), set()).add((rtype.store_key, key))

    def _pop(self, rtype: ResourceType, key: ObjectKey) -> None:
        obj = self._collection(rtype).objects.pop(key, None)
        if obj is None:
            return
        meta = _meta(obj)
        self._uids.pop(meta['uid'], None)
        for ref in meta.get('ownerReferences') or []:
            owned = self._owned.get(str(ref.get('uid')), set())
            owned.discard((rtype.store_key, key))
            if not owned:
                self._owned.pop(str(ref.get('uid')), None)

    def _dependents(self, uid: str) -> list[tuple[ResourceType, JsonDict]]:
        found = []
        for store_key, key in sorted(self._owned.get(uid, set()), key=repr):
            obj = self._collections[store_key].objects.get(key)
            if obj is not None:
                found.append((self._store_type(store_key), obj))
        return found

    def _owner_alive(self, ref: Any) -> bool:
        if not isinstance(ref, dict):
            return False
        if ref.get('uid') in self._uids:
            return True
        try:
            self._type_for(str(ref.get('apiVersion')), str(ref.get('kind')))
        except ApiError:
            return True  # an owner of a kind this server does not serve cannot be checked: keep it
        return False

    def _orphan_dependents(self, uid: str) -> None:
        for rtype, obj in self._dependents(uid):
            refs = [ref for ref in _meta(obj).get('ownerReferences') or [] if ref.get('uid') != uid]
            self._rewrite_owners(rtype, obj, refs)

    def _rewrite_owners(self, rtype: ResourceType, obj: JsonDict, refs: list[JsonDict]) -> None:
        changed = copy.deepcopy(obj)
        if refs:
            changed['metadata']['ownerReferences'] = refs
        else:
            changed['metadata'].pop('ownerReferences', None)
        changed['metadata']['resourceVersion'] = self._next_rv()
        self._put(rtype, (_meta(obj).get('namespace'), _meta(obj)['name']), changed)
        self._emit(rtype, 'MODIFIED', changed, obj)

    def _collect_dependents(self, uid: str) -> None:
        # Background propagation: the owner is gone first, then its dependents follow.
        for rtype, obj in self._dependents(uid):
            current = self._collection(rtype).objects.get((_meta(obj).get('namespace'), _meta(obj)['name']))
            if current is not None:
                self._collect_if_orphaned(rtype, current)

    def _store_type(self, store_key: StoreKey) -> ResourceType:
        return next(t for t in self._types.values() if t.store_key == store_key)

    def _collect_if_orphaned(self, rtype: ResourceType, obj: JsonDict) -> None:
        refs = _meta(obj).get('ownerReferences') or []
        alive = [ref for ref in refs if self._owner_alive(ref)]
        if not alive:
            with contextlib.suppress(ApiError):
                self._delete(rtype, _meta(obj).get('namespace'), _meta(obj)['name'],
                             options={'propagationPolicy': 'Background'})
        elif len(alive) < len(refs):
            self._rewrite_owners(rtype, obj, alive)

    # ------------------------------------------------------------------------------------------
    # Admission: what a real server checks and fills in before it stores an object

    def _check_type(self, rtype: ResourceType, obj: JsonDict) -> None:
        api_version = obj.get('apiVersion', rtype.api_version)
        group = api_version.rpartition('/')[0] if isinstance(api_version, str) else None
        if group != rtype.group or obj.get('kind', rtype.kind) != rtype.kind:
            raise _bad_request(f'{obj.get("kind")} in version "{api_version}" cannot be handled as a {rtype.kind}: '
                               f'the object does not match the resource {rtype.qualified_plural}')
        obj['apiVersion'] = rtype.api_version
        obj['kind'] = rtype.kind
        if not isinstance(obj.get('metadata', {}), dict):
            raise _bad_request('metadata must be an object')

    def _check_namespace(self, rtype: ResourceType, namespace: str | None) -> None:
        namespaces = self._collection(_NAMESPACES).objects
        existing = namespaces.get((None, namespace or ''))
        if existing is not None and _meta(existing).get('deletionTimestamp'):
            raise ApiError(403, 'Forbidden', f'unable to create new content in namespace {namespace} because it is '
                           'being terminated', {'name': namespace, 'kind': 'namespaces'})
        if self.strict_namespaces and existing is None:
            raise _NAMESPACES.not_found(str(namespace))

    def _admit(self, rtype: ResourceType, obj: JsonDict, old: JsonDict | None, params: Mapping[str, str]) -> None:
        meta = obj['metadata']
        name = meta['name']
        causes = self._meta_causes(rtype, meta)
        if rtype.schema is not None:
            unknown, schema_causes = rtype.schema.admit(obj)
            if unknown and params.get('fieldValidation') == 'Strict':
                raise _bad_request('strict decoding error: ' + ', '.join(f'unknown field "{u}"' for u in unknown))
            causes += schema_causes
        else:
            self._default_builtin(rtype, obj, old)
            causes += self._builtin_causes(rtype, obj, old)
            assert self._builtin_schemas is not None
            causes += self._builtin_schemas.causes(obj)
        if causes:
            raise rtype.invalid(name, causes[:25])

    def _meta_causes(self, rtype: ResourceType, meta: JsonDict) -> list[JsonDict]:
        name = meta['name']
        causes: list[JsonDict] = []
        label_like = rtype is _NAMESPACES
        if label_like and (len(name) > 63 or not _DNS1123_LABEL.match(name)):
            causes.append(_cause('metadata.name', f'Invalid value: "{name}": a lowercase RFC 1123 label must '
                                 "consist of lower case alphanumeric characters or '-', and must start and end with "
                                 'an alphanumeric character'))
        elif not label_like and (len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name)):
            causes.append(_cause('metadata.name', f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                                 "consist of lower case alphanumeric characters, '-' or '.', and must start and end "
                                 'with an alphanumeric character'))
        causes += _labels_causes(meta.get('labels'), 'metadata.labels')
        annotations = meta.get('annotations')
        if annotations is not None:
            if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
                causes.append(_cause('metadata.annotations', 'Invalid value: must be a map of strings'))
            else:
                for key in annotations:
                    causes += _label_key_causes(key, 'metadata.annotations')
        finalizers = meta.get('finalizers')
        if finalizers is not None and (not isinstance(finalizers, list)
                                       or not all(isinstance(f, str) for f in finalizers)):
            causes.append(_cause('metadata.finalizers', 'Invalid value: must be a list of strings'))
        for n, ref in enumerate(meta.get('ownerReferences') or []):
            for field in ('apiVersion', 'kind', 'name', 'uid'):
                if not isinstance(ref, dict) or not ref.get(field):
                    causes.append(_cause(f'metadata.ownerReferences[{n}].{field}', 'Required value',
                                         'FieldValueRequired'))
        return causes

    def _default_builtin(self, rtype: ResourceType, obj: JsonDict, old: JsonDict | None) -> None:
        match rtype.group, rtype.kind:
            case '', 'Secret':
                obj.setdefault('type', 'Opaque')
                string_data = obj.pop('stringData', None)
                if isinstance(string_data, dict):
                    data = obj.setdefault('data', {})
                    for key, value in string_data.items():
                        data[key] = base64.b64encode(str(value).encode()).decode()
            case '', 'Namespace':
                obj.setdefault('spec', {}).setdefault('finalizers', ['kubernetes'])
                if not _meta(obj).get('deletionTimestamp'):
                    obj.setdefault('status', {})['phase'] = 'Active'
                labels = obj['metadata'].setdefault('labels', {})
                if isinstance(labels, dict):
                    labels['kubernetes.io/metadata.name'] = obj['metadata']['name']
            case '', 'Pod':
                _default_pod_spec(obj.get('spec'))
                if old is None:
                    obj['status'] = {'phase': 'Pending', 'qosClass': 'BestEffort'}
            case 'batch', 'Job':
                self._default_job(obj, old)

    def _default_job(self, job: JsonDict, old: JsonDict | None) -> None:
        spec = job.get('spec')
        if not isinstance(spec, dict):
            return
        for field, value in (('backoffLimit', 6), ('completions', 1), ('parallelism', 1),
                             ('completionMode', 'NonIndexed'), ('suspend', False), ('manualSelector', False),
                             ('podReplacementPolicy', 'TerminatingOrFailed')):
            spec.setdefault(field, value)
        template = spec.get('template')
        if isinstance(template, dict):
            _default_pod_spec(template.get('spec'))
            if old is None:
                uid, name = job['metadata']['uid'], job['metadata']['name']
                labels = template.setdefault('metadata', {}).setdefault('labels', {})
                if isinstance(labels, dict):
                    labels.update({'batch.kubernetes.io/controller-uid': uid, 'batch.kubernetes.io/job-name': name,
                                   'controller-uid': uid, 'job-name': name})
                spec.setdefault('selector', {'matchLabels': {'batch.kubernetes.io/controller-uid': uid}})

    def _builtin_causes(self, rtype: ResourceType, obj: JsonDict, old: JsonDict | None) -> list[JsonDict]:
        causes: list[JsonDict] = []
        match rtype.group, rtype.kind:
            case '', 'Pod':
                causes += _pod_spec_causes(obj.get('spec'), 'spec', job=False)
            case 'batch', 'Job':
                template = (obj.get('spec') or {}).get('template') or {}
                causes += _pod_spec_causes(template.get('spec'), 'spec.template.spec', job=True)
                causes += _labels_causes((template.get('metadata') or {}).get('labels'), 'spec.template.labels')
                if old is not None and (old.get('spec') or {}).get('template') != template:
                    causes.append(_cause('spec.template', 'Invalid value: field is immutable'))
            case '', 'Secret':
                for key, value in (obj.get('data') or {}).items():
                    try:
                        base64.b64decode(str(value), validate=True)
                    except binascii.Error:
                        causes.append(_cause(f'data[{key}]', 'Invalid value: illegal base64 data'))
            case 'apiextensions.k8s.io', 'CustomResourceDefinition':
                causes += self._crd_causes(obj)
        return causes

    # ------------------------------------------------------------------------------------------
    # Custom resource definitions

    def _crd_causes(self, crd: JsonDict) -> list[JsonDict]:
        spec = crd.get('spec') or {}
        names = spec.get('names') or {}
        group = spec.get('group')
        causes = []
        if not isinstance(group, str) or '.' not in group:
            causes.append(_cause('spec.group', f'Invalid value: {json.dumps(group)}: should be a domain with at '
                                 "least one dot"))
        if crd['metadata']['name'] != f'{names.get("plural")}.{group}':
            causes.append(_cause('metadata.name', f'Invalid value: "{crd["metadata"]["name"]}": must be '
                                 'spec.names.plural+"."+spec.group'))
        versions = spec.get('versions') or []
        if sum(1 for v in versions if isinstance(v, dict) and v.get('storage')) != 1:
            causes.append(_cause('spec.versions', 'Invalid value: must have exactly one version marked as storage '
                                 'version'))
        for n, version in enumerate(versions):
            schema = ((version or {}).get('schema') or {}).get('openAPIV3Schema')
            if schema is None:
                causes.append(_cause(f'spec.versions[{n}].schema.openAPIV3Schema', 'Required value: schemas are '
                                     'required', 'FieldValueRequired'))
            else:
                for problem in structural_problems(schema):
                    causes.append({**problem, 'field': f'spec.versions[{n}].schema.{problem["field"]}'})
        return causes

    def _accept_crd(self, crd: JsonDict) -> None:
        spec = crd['spec']
        storage = [v['name'] for v in spec.get('versions', []) if v.get('storage')]
        crd['status'] = {
            'acceptedNames': copy.deepcopy(spec.get('names', {})),
            'conditions': [
                {'type': kind, 'status': 'True', 'reason': reason, 'message': message,
                 'lastTransitionTime': _meta(crd).get('creationTimestamp', _now())}
                for kind, reason, message in (('NamesAccepted', 'NoConflicts', 'no conflicts found'),
                                              ('Established', 'InitialNamesAccepted', 'the initial names have been '
                                               'accepted'))],
            'storedVersions': sorted(set(storage) | set((crd.get('status') or {}).get('storedVersions', []))),
        }

    def _register_crd(self, crd: JsonDict) -> None:
        spec = crd['spec']
        names = spec['names']
        self._unregister_crd(crd, keep_objects=True)
        for version in spec.get('versions', []):
            if not version.get('served', True):
                continue
            self._register(ResourceType(
                group=spec['group'], version=version['name'], plural=names['plural'], kind=names['kind'],
                namespaced=spec.get('scope') == 'Namespaced', singular=names.get('singular', names['kind'].lower()),
                has_status='status' in (version.get('subresources') or {}),
                short_names=tuple(names.get('shortNames', [])), categories=tuple(names.get('categories', [])),
                list_kind=names.get('listKind', ''),
                schema=CustomSchema(version['schema']['openAPIV3Schema']),
            ))

    def _unregister_crd(self, crd: JsonDict, *, keep_objects: bool = False) -> None:
        spec = crd.get('spec') or {}
        group, plural = spec.get('group'), (spec.get('names') or {}).get('plural')
        registered = [k for k in self._types if k[0] == group and k[2] == plural]
        if not keep_objects and registered:
            rtype = self._types[registered[0]]
            for key, obj in list(self._collection(rtype).objects.items()):
                final = copy.deepcopy(obj)
                final['metadata']['resourceVersion'] = self._next_rv()
                self._remove(rtype, key, final)
        for type_key in registered:
            del self._types[type_key]
            with contextlib.suppress(KeyError):
                del self.resources[kmock.resource(*type_key)]

    def _register(self, rtype: ResourceType) -> None:
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._collection(rtype)
        self.resources[kmock.resource(rtype.group, rtype.version, rtype.plural)] = kmock.ResourceInfo(
            kind=rtype.kind, namespaced=rtype.namespaced, singular=rtype.singular or rtype.kind.lower(),
            verbs=set(ALL_VERBS), shortnames=set(rtype.short_names), categories=set(rtype.categories),
            subresources={'status'} if rtype.has_status else set(),
        )


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of Kubernetes version names: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    m = re.fullmatch(r'v(\d+)(?:(alpha|beta)(\d+))?', version)
    if m is None:
        return (0, 0, 0, version)
    stage = {None: 3, 'beta': 2, 'alpha': 1}[m.group(2)]
    return (-stage, -int(m.group(1)), -int(m.group(3) or 0), version)


def _spec_view(obj: Mapping[str, Any]) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in ('metadata', 'status', 'apiVersion', 'kind')}


# ----------------------------------------------------------------------------------------------
# Running it

@dataclasses.dataclass(frozen=True)
class RunningApi:
    """A served `ApiServer`: where to reach it, and the server for in-process assertions."""

    url: str
    server: ApiServer
    host: str
    port: int


@contextlib.asynccontextmanager
async def serve_api(
        *,
        crd_paths: Iterable[str | Path] = (),
        host: str = '127.0.0.1',
        port: int = 0,
        server: ApiServer | None = None,
) -> AsyncIterator[RunningApi]:
    """Serve an `ApiServer` over plain HTTP until the block exits (port 0 picks a free port)."""
    api = server if server is not None else ApiServer()
    api.load_crds(crd_paths)
    async with api:
        # handler_cancellation ends a watch as soon as its client disconnects.
        web_server = aiohttp.web.Server(api, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(web_server, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = aiohttp.web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            yield RunningApi(url=f'http://{bound_host}:{bound_port}', server=api, host=bound_host, port=bound_port)
        finally:
            api.close_watches()
            await runner.cleanup()


def write_kubeconfig(path: str | Path, url: str, namespace: str = 'default') -> Path:
    """Write a kubeconfig for `url` (plain HTTP, a dummy bearer token) and return its path."""
    config = {
        'apiVersion': 'v1',
        'kind': 'Config',
        'clusters': [{'name': 'sandbox', 'cluster': {'server': url}}],
        'users': [{'name': 'sandbox', 'user': {'token': 'sandbox-token'}}],
        'contexts': [{'name': 'sandbox', 'context': {'cluster': 'sandbox', 'user': 'sandbox',
                                                     'namespace': namespace}}],
        'current-context': 'sandbox',
        'preferences': {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the API until interrupted: `python -m sandbox.apiserver --crd crds/*.yaml`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--crd', action='append', default=[], help='a CRD YAML file to preload (repeatable)')
    parser.add_argument('--kubeconfig', help='write a kubeconfig for the server to this path')
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = ApiServer(request_history=1000)
        async with serve_api(crd_paths=args.crd, host=args.host, port=args.port, server=server) as api:
            if args.kubeconfig:
                write_kubeconfig(args.kubeconfig, api.url)
            print(f'Kubernetes API at {api.url}', flush=True)
            await stop.wait()

    asyncio.run(run())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
