"""The emulated API server behaves like a real one where the operator depends on it.

Every test talks HTTP to a served `ApiServer`: raw aiohttp for the protocol details, the official
Python client (in a thread) and kubectl (a subprocess) for what real clients send, and kopf for
the list-then-watch pattern of the operator itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from sandbox.apiserver import (
    ApiServer,
    RunningApi,
    merge_patch,
    parse_label_selector,
    serve_api,
    strategic_merge_patch,
    structural_problems,
    write_kubeconfig,
)

ROOT = Path(__file__).resolve().parents[1]
CRDS = [ROOT / 'crds' / 'retrainpolicies.yaml', ROOT / 'crds' / 'metricsendpoints.yaml']
KUBECTL = Path('/work/venv/bin/kubectl') if Path('/work/venv/bin/kubectl').exists() else Path('kubectl')
POLICIES = '/apis/retrain.dev/v1alpha1/namespaces/default/retrainpolicies'
CONFIGMAPS = '/api/v1/namespaces/default/configmaps'
JOBS = '/apis/batch/v1/namespaces/default/jobs'


def policy(name: str = 'churn', **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        'apiVersion': 'retrain.dev/v1alpha1',
        'kind': 'RetrainPolicy',
        'metadata': {'name': name},
        'spec': {
            'model': {'name': 'churn', 'registry': {'bucket': 'models'}},
            'metrics': {'endpoint': 'prometheus'},
            'triggers': [{'name': 'weekly', 'schedule': {'cron': '0 3 * * 1'}}],
            'training': {'image': 'trainer:1', 'command': ['train']},
        },
    }
    body['spec'].update(spec)
    return body


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': name, 'labels': labels or {}},
            'data': data}


class Http:
    """A thin JSON client that returns (status, body) and never raises on HTTP errors."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def __call__(self, method: str, path: str, body: Any = None, *,
                      content_type: str = 'application/json') -> tuple[int, Any]:
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.request(method, self.url + path, data=data,
                                        headers={'Content-Type': content_type}) as response:
            text = await response.text()
            return response.status, json.loads(text) if text.strip() else None

    async def ok(self, method: str, path: str, body: Any = None, *, content_type: str = 'application/json') -> Any:
        status, answer = await self(method, path, body, content_type=content_type)
        assert 200 <= status < 300, (status, answer)
        return answer

    async def watch(self, path: str, *, until: Callable[[list[dict[str, Any]]], bool],
                    within: float = 5.0) -> list[dict[str, Any]]:
        """Read a watch stream until `until(events)` holds or the server ends the stream."""
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(within), self.session.get(self.url + path) as response:
            assert response.status == 200, await response.text()
            async for line in response.content:
                if line.strip():
                    events.append(json.loads(line))
                    if until(events):
                        break
        return events


@pytest.fixture()
async def api() -> AsyncIterator[RunningApi]:
    async with serve_api(crd_paths=CRDS) as running:
        yield running
        assert running.server.errors == []  # no request crashed the server


@pytest.fixture()
async def http(api: RunningApi) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(session, api.url)


@pytest.fixture()
def client(api: RunningApi) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration(host=api.url)
    configuration.api_key = {'authorization': 'Bearer sandbox-token'}
    return kubernetes.client.ApiClient(configuration)


@pytest.fixture()
def kubectl(api: RunningApi, tmp_path: Path) -> Callable[..., Awaitable[tuple[int, str, str]]]:
    kubeconfig = write_kubeconfig(tmp_path / 'kubeconfig', api.url)

    async def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL), '--kubeconfig', str(kubeconfig), '--cache-dir', str(tmp_path / 'cache'), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={'PATH': os.environ.get('PATH', ''), 'HOME': str(tmp_path)},
        )
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    return run


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, 'the condition did not hold in time'
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------------------------
# Metadata the server owns

async def test_server_sets_identity_and_versions(http: Http) -> None:
    first = await http.ok('POST', POLICIES, policy('first'))
    second = await http.ok('POST', POLICIES, policy('second'))
    meta = first['metadata']
    assert meta['namespace'] == 'default'
    assert re.fullmatch(r'[0-9a-f-]{36}', meta['uid'])
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', meta['creationTimestamp'])
    assert meta['generation'] == 1
    assert isinstance(meta['resourceVersion'], str)
    assert int(second['metadata']['resourceVersion']) > int(meta['resourceVersion'])
    assert second['metadata']['uid'] != meta['uid']


async def test_generation_counts_only_spec_changes(http: Http) -> None:
    created = await http.ok('POST', POLICIES, policy())
    relabelled = await http.ok('PATCH', f'{POLICIES}/churn', {'metadata': {'labels': {'team': 'a'}}},
                               content_type='application/merge-patch+json')
    assert relabelled['metadata']['generation'] == 1
    assert int(relabelled['metadata']['resourceVersion']) > int(created['metadata']['resourceVersion'])
    status = await http.ok('PATCH', f'{POLICIES}/churn/status', {'status': {'phase': 'Watching'}},
                           content_type='application/merge-patch+json')
    assert status['metadata']['generation'] == 1
    changed = await http.ok('PATCH', f'{POLICIES}/churn', {'spec': {'suspend': True}},
                            content_type='application/merge-patch+json')
    assert changed['metadata']['generation'] == 2
    same = await http.ok('PATCH', f'{POLICIES}/churn', {'spec': {'suspend': True}},
                         content_type='application/merge-patch+json')
    assert same['metadata']['resourceVersion'] == changed['metadata']['resourceVersion']  # a no-op write


async def test_generation_without_status_subresource(http: Http) -> None:
    await http.ok('POST', CONFIGMAPS, configmap('settings', x='1'))
    relabelled = await http.ok('PATCH', f'{CONFIGMAPS}/settings', {'metadata': {'labels': {'a': 'b'}}},
                               content_type='application/merge-patch+json')
    assert relabelled['metadata']['generation'] == 1
    changed = await http.ok('PATCH', f'{CONFIGMAPS}/settings', {'data': {'x': '2'}},
                            content_type='application/merge-patch+json')
    assert changed['metadata']['generation'] == 2


async def test_generate_name_and_namespace_from_url(http: Http) -> None:
    body = configmap('')
    body['metadata'] = {'generateName': 'train-'}
    created = await http.ok('POST', '/api/v1/namespaces/team-a/configmaps', body)
    assert re.fullmatch(r'train-[a-z0-9]{5}', created['metadata']['name'])
    assert created['metadata']['namespace'] == 'team-a'
    body['metadata'] = {'name': 'x', 'namespace': 'team-b'}
    status, error = await http('POST', '/api/v1/namespaces/team-a/configmaps', body)
    assert (status, error['reason']) == (400, 'BadRequest')


# ----------------------------------------------------------------------------------------------
# Status subresource

async def test_status_is_written_only_through_its_subresource(http: Http) -> None:
    body = policy()
    body['status'] = {'phase': 'Training'}
    created = await http.ok('POST', POLICIES, body)
    assert 'status' not in created  # a client cannot create an object with a status

    patched = await http.ok('PATCH', f'{POLICIES}/churn', {'spec': {'suspend': True}, 'status': {'phase': 'Invalid'}},
                            content_type='application/merge-patch+json')
    assert patched['spec']['suspend'] is True and 'status' not in patched

    patched = await http.ok('PATCH', f'{POLICIES}/churn/status',
                            {'spec': {'suspend': False}, 'status': {'phase': 'Watching'}},
                            content_type='application/merge-patch+json')
    assert patched['spec']['suspend'] is True and patched['status'] == {'phase': 'Watching'}

    replaced = dict(patched, status={'phase': 'Suspended'})
    replaced['spec'] = dict(patched['spec'], suspend=False)
    after_put = await http.ok('PUT', f'{POLICIES}/churn', replaced)
    assert after_put['spec']['suspend'] is False and after_put['status'] == {'phase': 'Watching'}


async def test_job_status_has_its_subresource(http: Http) -> None:
    job = await http.ok('POST', JOBS, {
        'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': 'train'},
        'spec': {'template': {'spec': {'restartPolicy': 'Never', 'containers': [{'name': 'c', 'image': 'i'}]}}},
        'status': {'active': 5},
    })
    assert 'active' not in job.get('status', {})
    assert job['spec']['backoffLimit'] == 6  # server defaults, as on a cluster
    uid = job['metadata']['uid']
    assert job['spec']['selector'] == {'matchLabels': {'batch.kubernetes.io/controller-uid': uid}}
    assert job['spec']['template']['metadata']['labels']['job-name'] == 'train'
    updated = await http.ok('PATCH', f'{JOBS}/train/status', {'status': {'active': 1}},
                            content_type='application/merge-patch+json')
    assert updated['status'] == {'active': 1}
    assert updated['metadata']['generation'] == 1


# ----------------------------------------------------------------------------------------------
# Errors

async def test_errors_are_status_objects_with_standard_reasons(http: Http) -> None:
    status, error = await http('GET', f'{POLICIES}/missing')
    assert status == 404
    assert error['kind'] == 'Status' and error['status'] == 'Failure' and error['code'] == 404
    assert error['reason'] == 'NotFound'
    assert error['message'] == 'retrainpolicies.retrain.dev "missing" not found'
    assert error['details'] == {'name': 'missing', 'group': 'retrain.dev', 'kind': 'retrainpolicies'}

    await http.ok('POST', POLICIES, policy())
    status, error = await http('POST', POLICIES, policy())
    assert (status, error['reason']) == (409, 'AlreadyExists')

    status, error = await http('POST', POLICIES, policy('Not_A_Name'))
    assert (status, error['reason']) == (422, 'Invalid')
    assert [c['field'] for c in error['details']['causes']] == ['metadata.name']

    status, error = await http('POST', f'{POLICIES}/churn', policy())
    assert (status, error['reason']) == (405, 'MethodNotAllowed')

    status, error = await http('PATCH', f'{POLICIES}/churn', b'spec: {}', content_type='application/apply-patch+yaml')
    assert (status, error['reason']) == (415, 'UnsupportedMediaType')
    status, error = await http('PATCH', f'{POLICIES}/churn', {'spec': {}},
                               content_type='application/strategic-merge-patch+json')
    assert (status, error['reason']) == (415, 'UnsupportedMediaType')  # never for custom resources

    status, error = await http('GET', f'{POLICIES}?labelSelector=a%20in%20(b')
    assert (status, error['reason']) == (400, 'BadRequest')
    status, error = await http('GET', f'{POLICIES}?fieldSelector=spec.suspend%3Dtrue')
    assert (status, error['reason']) == (400, 'BadRequest')

    status, error = await http('GET', '/apis/retrain.dev/v1alpha1/namespaces/default/nothings')
    assert (status, error['reason']) == (404, 'NotFound')


async def test_json_patch_with_a_failed_test_is_invalid(http: Http) -> None:
    created = await http.ok('POST', POLICIES, policy())
    rv = created['metadata']['resourceVersion']
    ops = [{'op': 'test', 'path': '/metadata/resourceVersion', 'value': rv},
           {'op': 'add', 'path': '/metadata/finalizers', 'value': ['retrain.dev/cleanup']}]
    patched = await http.ok('PATCH', f'{POLICIES}/churn', ops, content_type='application/json-patch+json')
    assert patched['metadata']['finalizers'] == ['retrain.dev/cleanup']

    status, error = await http('PATCH', f'{POLICIES}/churn', ops, content_type='application/json-patch+json')
    assert (status, error['reason']) == (422, 'Invalid')  # the resourceVersion moved on: kopf retries later
    status, error = await http('PATCH', f'{POLICIES}/churn', [{'op': 'remove', 'path': '/spec/nothing'}],
                               content_type='application/json-patch+json')
    assert (status, error['reason']) == (422, 'Invalid')


async def test_merge_patch_follows_rfc_7386(http: Http) -> None:
    await http.ok('POST', CONFIGMAPS, configmap('settings', {'a': '1', 'b': '2'}, x='1', y='2'))
    patched = await http.ok('PATCH', f'{CONFIGMAPS}/settings',
                            {'metadata': {'labels': {'a': None, 'c': '3'}}, 'data': {'y': None, 'z': '3'}},
                            content_type='application/merge-patch+json')
    assert patched['metadata']['labels'] == {'b': '2', 'c': '3'}
    assert patched['data'] == {'x': '1', 'z': '3'}
    assert merge_patch({'a': [1, 2], 'b': {'c': 1}}, {'a': [3], 'b': None}) == {'a': [3]}


def test_strategic_merge_patch_merges_lists_by_key() -> None:
    spec = {'containers': [{'name': 'a', 'image': 'x', 'env': [{'name': 'E', 'value': '1'}]},
                           {'name': 'b', 'image': 'y'}]}
    patch = {'$setElementOrder/containers': [{'name': 'a'}, {'name': 'b'}],
             'containers': [{'name': 'a', 'env': [{'name': 'F', 'value': '2'}]},
                            {'name': 'b', '$patch': 'delete'}]}
    assert strategic_merge_patch(spec, patch) == {
        'containers': [{'name': 'a', 'image': 'x', 'env': [{'name': 'E', 'value': '1'}, {'name': 'F', 'value': '2'}]}]}


async def test_put_replaces_and_refuses_stale_versions(http: Http) -> None:
    created = await http.ok('POST', CONFIGMAPS, configmap('settings', x='1'))
    replaced = await http.ok('PUT', f'{CONFIGMAPS}/settings', configmap('settings', y='2') | {
        'metadata': {'name': 'settings', 'resourceVersion': created['metadata']['resourceVersion']}})
    assert replaced['data'] == {'y': '2'}
    assert replaced['metadata']['uid'] == created['metadata']['uid']

    stale = configmap('settings', z='3') | {'metadata': {'name': 'settings',
                                                         'resourceVersion': created['metadata']['resourceVersion']}}
    status, error = await http('PUT', f'{CONFIGMAPS}/settings', stale)
    assert (status, error['reason']) == (409, 'Conflict')
    status, error = await http('PUT', f'{CONFIGMAPS}/missing', configmap('missing'))
    assert (status, error['reason']) == (404, 'NotFound')
    status, error = await http('PATCH', f'{CONFIGMAPS}/settings',
                               {'metadata': {'resourceVersion': created['metadata']['resourceVersion']}},
                               content_type='application/merge-patch+json')
    assert (status, error['reason']) == (409, 'Conflict')


async def test_python_client_sees_conflicts_and_typed_lists(client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(client)

    def scenario() -> None:
        created = core.create_namespaced_config_map('default', configmap('settings', x='1'))
        created.data = {'x': '2'}
        core.replace_namespaced_config_map('settings', 'default', created)
        created.data = {'x': '3'}
        with pytest.raises(ApiException) as info:
            core.replace_namespaced_config_map('settings', 'default', created)  # still the first version
        assert info.value.status == 409 and json.loads(info.value.body)['reason'] == 'Conflict'
        listed = core.list_namespaced_config_map('default')
        assert listed.kind == 'ConfigMapList'
        assert [item.data for item in listed.items] == [{'x': '2'}]
        with pytest.raises(ApiException) as info:
            core.read_namespaced_config_map('missing', 'default')
        assert info.value.status == 404

    await asyncio.to_thread(scenario)


# ----------------------------------------------------------------------------------------------
# Lists and selectors

async def test_lists_carry_kind_and_honour_selectors(http: Http) -> None:
    await http.ok('POST', CONFIGMAPS, configmap('a', {'tier': 'web', 'env': 'prod'}))
    await http.ok('POST', CONFIGMAPS, configmap('b', {'tier': 'db', 'env': 'prod'}))
    await http.ok('POST', CONFIGMAPS, configmap('c', {'tier': 'web'}))
    await http.ok('POST', '/api/v1/namespaces/other/configmaps', configmap('d', {'tier': 'web'}))

    async def names(query: str, path: str = CONFIGMAPS) -> list[str]:
        listed = await http.ok('GET', f'{path}?{query}')
        assert listed['kind'] == 'ConfigMapList' and listed['apiVersion'] == 'v1'
        assert int(listed['metadata']['resourceVersion']) > 0
        assert all(item['kind'] == 'ConfigMap' for item in listed['items'])
        return [item['metadata']['name'] for item in listed['items']]

    assert await names('') == ['a', 'b', 'c']
    assert await names('', '/api/v1/configmaps') == ['a', 'b', 'c', 'd']
    assert await names('labelSelector=tier%3Dweb') == ['a', 'c']
    assert await names('labelSelector=tier%3D%3Dweb,env%3Dprod') == ['a']
    assert await names('labelSelector=env!%3Dprod') == ['c']
    assert await names('labelSelector=tier%20in%20(db,cache)') == ['b']
    assert await names('labelSelector=tier%20notin%20(db)') == ['a', 'c']
    assert await names('labelSelector=env') == ['a', 'b']
    assert await names('labelSelector=!env') == ['c']
    assert await names('fieldSelector=metadata.name%3Db') == ['b']
    assert await names('fieldSelector=metadata.namespace%3Dother', '/api/v1/configmaps') == ['d']
    assert await names('fieldSelector=metadata.name!%3Db') == ['a', 'c']

    page = await http.ok('GET', f'{CONFIGMAPS}?limit=2')
    assert [i['metadata']['name'] for i in page['items']] == ['a', 'b']
    rest = await http.ok('GET', f'{CONFIGMAPS}?limit=2&continue={page["metadata"]["continue"]}')
    assert [i['metadata']['name'] for i in rest['items']] == ['c'] and 'continue' not in rest['metadata']


def test_label_selector_grammar() -> None:
    requirements = parse_label_selector('a=b, c in (d, e),!f,g notin (h),i!=j,k')
    assert [(r.key, r.op, sorted(r.values)) for r in requirements] == [
        ('a', '=', ['b']), ('c', 'in', ['d', 'e']), ('f', '!exists', []), ('g', 'notin', ['h']),
        ('i', '!=', ['j']), ('k', 'exists', [])]


# ----------------------------------------------------------------------------------------------
# Watches

async def test_watch_resumes_from_a_resource_version(http: Http) -> None:
    await http.ok('POST', CONFIGMAPS, configmap('before', x='1'))
    listed = await http.ok('GET', CONFIGMAPS)
    since = listed['metadata']['resourceVersion']
    await http.ok('POST', CONFIGMAPS, configmap('after', x='1'))
    await http.ok('PATCH', f'{CONFIGMAPS}/before', {'data': {'x': '2'}}, content_type='application/merge-patch+json')
    await http.ok('DELETE', f'{CONFIGMAPS}/after')
    events = await http.watch(f'{CONFIGMAPS}?watch=true&resourceVersion={since}', until=lambda e: len(e) >= 3)
    assert [(e['type'], e['object']['metadata']['name']) for e in events] == [
        ('ADDED', 'after'), ('MODIFIED', 'before'), ('DELETED', 'after')]
    versions = [int(e['object']['metadata']['resourceVersion']) for e in events]
    assert versions == sorted(versions) and versions[0] > int(since)


async def test_watch_without_version_replays_then_streams_live(http: Http) -> None:
    await http.ok('POST', CONFIGMAPS, configmap('old', {'app': 'x'}))
    url = f'{http.url}{CONFIGMAPS}?watch=true&labelSelector=app%3Dx'
    async with asyncio.timeout(5), http.session.get(url) as response:
        lines = aiter(response.content)

        async def next_event() -> tuple[str, str]:
            event = json.loads(await anext(lines))
            return event['type'], event['object']['metadata']['name']

        assert await next_event() == ('ADDED', 'old')  # the replay: the watch is now live
        await http.ok('POST', CONFIGMAPS, configmap('other', {'app': 'y'}))  # never matches
        await http.ok('POST', CONFIGMAPS, configmap('new', {'app': 'x'}))
        await http.ok('PATCH', f'{CONFIGMAPS}/new', {'metadata': {'labels': {'app': 'y'}}},
                      content_type='application/merge-patch+json')  # leaves the selection: DELETED
        await http.ok('PATCH', f'{CONFIGMAPS}/other', {'metadata': {'labels': {'app': 'x'}}},
                      content_type='application/merge-patch+json')  # enters the selection: ADDED
        assert [await next_event() for _ in range(3)] == [('ADDED', 'new'), ('DELETED', 'new'), ('ADDED', 'other')]


async def test_watch_ends_after_its_timeout(http: Http) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await http.watch(f'{CONFIGMAPS}?watch=true&timeoutSeconds=1', until=lambda e: False)
    assert events == [] and 0.9 < loop.time() - started < 4


async def test_watch_from_a_forgotten_version_is_gone() -> None:
    async with serve_api(server=ApiServer(history_limit=3)) as running, aiohttp.ClientSession() as session:
        http = Http(session, running.url)
        first = await http.ok('POST', CONFIGMAPS, configmap('a'))
        for n in range(5):
            await http.ok('PATCH', f'{CONFIGMAPS}/a', {'data': {'n': str(n)}},
                          content_type='application/merge-patch+json')
        events = await http.watch(f'{CONFIGMAPS}?watch=true&resourceVersion={first["metadata"]["resourceVersion"]}',
                                  until=lambda e: False)
        assert len(events) == 1 and events[0]['type'] == 'ERROR'
        assert events[0]['object']['code'] == 410 and events[0]['object']['reason'] == 'Expired'
        listed = await http.ok('GET', CONFIGMAPS)
        resumed = await http.watch(f'{CONFIGMAPS}?watch=true&timeoutSeconds=1&resourceVersion='
                                   f'{listed["metadata"]["resourceVersion"]}', until=lambda e: False)
        assert resumed == []


# ----------------------------------------------------------------------------------------------
# Deletion

async def test_finalizers_hold_deletion_and_owned_objects_follow(http: Http) -> None:
    owner = policy()
    owner['metadata']['finalizers'] = ['retrain.dev/cleanup']
    created = await http.ok('POST', POLICIES, owner)
    reference = {'apiVersion': 'retrain.dev/v1alpha1', 'kind': 'RetrainPolicy', 'name': 'churn',
                 'uid': created['metadata']['uid'], 'controller': True}
    child = configmap('owned')
    child['metadata']['ownerReferences'] = [reference]
    await http.ok('POST', CONFIGMAPS, child)
    grandchild = configmap('owned-by-owned')
    owned = await http.ok('GET', f'{CONFIGMAPS}/owned')
    grandchild['metadata']['ownerReferences'] = [{'apiVersion': 'v1', 'kind': 'ConfigMap', 'name': 'owned',
                                                  'uid': owned['metadata']['uid']}]
    await http.ok('POST', CONFIGMAPS, grandchild)
    await http.ok('POST', CONFIGMAPS, configmap('unrelated'))

    deleting = await http.ok('DELETE', f'{POLICIES}/churn')
    assert deleting['metadata']['deletionTimestamp']
    assert (await http.ok('GET', f'{POLICIES}/churn'))['metadata']['deletionTimestamp']
    assert len((await http.ok('GET', CONFIGMAPS))['items']) == 3  # nothing is collected before the owner goes

    await http.ok('PATCH', f'{POLICIES}/churn', {'metadata': {'finalizers': None}},
                  content_type='application/merge-patch+json')
    status, _ = await http('GET', f'{POLICIES}/churn')
    assert status == 404
    assert [i['metadata']['name'] for i in (await http.ok('GET', CONFIGMAPS))['items']] == ['unrelated']


async def test_jobs_orphan_their_pods_unless_told_otherwise(http: Http) -> None:
    async def job_with_pod(name: str) -> None:
        job = await http.ok('POST', JOBS, {
            'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': name},
            'spec': {'template': {'spec': {'restartPolicy': 'Never',
                                           'containers': [{'name': 'c', 'image': 'i'}]}}}})
        await http.ok('POST', '/api/v1/namespaces/default/pods', {
            'apiVersion': 'v1', 'kind': 'Pod',
            'metadata': {'name': f'{name}-pod', 'ownerReferences': [
                {'apiVersion': 'batch/v1', 'kind': 'Job', 'name': name, 'uid': job['metadata']['uid']}]},
            'spec': {'restartPolicy': 'Never', 'containers': [{'name': 'c', 'image': 'i'}]}})

    await job_with_pod('kept')
    await job_with_pod('collected')
    await http.ok('DELETE', f'{JOBS}/kept')
    await http.ok('DELETE', f'{JOBS}/collected', {'propagationPolicy': 'Background'})
    pods = (await http.ok('GET', '/api/v1/namespaces/default/pods'))['items']
    assert [p['metadata']['name'] for p in pods] == ['kept-pod']
    assert 'ownerReferences' not in pods[0]['metadata']


# ----------------------------------------------------------------------------------------------
# Validation

def test_project_crds_are_structural() -> None:
    for path in CRDS:
        crd = yaml.safe_load(path.read_text())
        for version in crd['spec']['versions']:
            assert structural_problems(version['schema']['openAPIV3Schema']) == [], path


async def test_custom_resources_get_defaults_and_pruning(http: Http) -> None:
    body = policy(training={'builtin': {'data': {'key': 'train.csv'}, 'target': 'y',
                                       'estimator': 'sklearn.linear_model.LogisticRegression',
                                       'params': {'C': 0.5, 'anything': {'goes': True}}},
                            'resources': {'requests': {'cpu': '500m', 'memory': 1073741824}}},
                  unknownField='pruned')
    created = await http.ok('POST', POLICIES, body)
    spec = created['spec']
    assert 'unknownField' not in spec
    assert spec['suspend'] is False
    assert spec['evaluation'] == {'interval': '60s'}  # `default: {}` then its own defaults
    assert spec['historyLimits'] == {'successful': 3, 'failed': 1}
    assert spec['decision'] == {'cooldown': '1h', 'dryRun': False}
    assert spec['triggers'][0]['onMissingData'] == 'Inconclusive'
    builtin = spec['training']['builtin']
    assert builtin['testSize'] == 0.2 and builtin['metric'] == 'accuracy' and builtin['data']['format'] == 'csv'
    assert builtin['params'] == {'C': 0.5, 'anything': {'goes': True}}  # x-kubernetes-preserve-unknown-fields
    assert spec['training']['resources']['requests'] == {'cpu': '500m', 'memory': 1073741824}

    status = await http.ok('PATCH', f'{POLICIES}/churn/status', {'status': {
        'phase': 'Watching', 'triggers': [{'name': 'weekly', 'value': None, 'state': 'clear'}], 'extra': 1}},
        content_type='application/merge-patch+json')
    assert status['status'] == {'phase': 'Watching', 'triggers': [{'name': 'weekly', 'value': None,
                                                                   'state': 'clear'}]}

    status_code, error = await http('POST', f'{POLICIES}?fieldValidation=Strict', policy('strict', bogus=1))
    assert (status_code, error['reason']) == (400, 'BadRequest') and 'bogus' in error['message']


@pytest.mark.parametrize(('change', 'field', 'reason'), [
    ({'training': {'builtin': {'data': {'key': 'k'}, 'target': 'y', 'estimator': 'e', 'metric': 'auc'}}},
     'spec.training.builtin.metric', 'FieldValueNotSupported'),
    ({'metrics': {}}, 'spec.metrics.endpoint', 'FieldValueRequired'),
    ({'model': {'name': 'Churn Model', 'registry': {'bucket': 'models'}}}, 'spec.model.name', 'FieldValueInvalid'),
    ({'training': {'builtin': {'data': {'key': 'k'}, 'target': 'y', 'estimator': 'e', 'testSize': 1}}},
     'spec.training.builtin.testSize', 'FieldValueInvalid'),
    ({'training': {'builtin': {'data': {'key': 'k'}, 'target': 'y', 'estimator': 'e', 'testSize': 0}}},
     'spec.training.builtin.testSize', 'FieldValueInvalid'),
    ({'training': {'resources': {'limits': {'cpu': 1.5}}}}, 'spec.training.resources.limits.cpu',
     'FieldValueInvalid'),
    ({'triggers': [{'name': 'a'}, {'name': 'a'}]}, 'spec.triggers', 'FieldValueDuplicate'),
    ({'triggers': []}, 'spec.triggers', 'FieldValueInvalid'),
])
async def test_custom_resources_are_validated_against_the_crd(
        http: Http, change: dict[str, Any], field: str, reason: str) -> None:
    status, error = await http('POST', POLICIES, policy(**change))
    assert (status, error['reason']) == (422, 'Invalid'), error
    assert error['details']['kind'] == 'RetrainPolicy'
    assert (field, reason) in [(c['field'], c['reason']) for c in error['details']['causes']], error
    assert error['message'].startswith('RetrainPolicy.retrain.dev "churn" is invalid: ')


async def test_status_is_validated_too(http: Http) -> None:
    await http.ok('POST', POLICIES, policy())
    status, error = await http('PATCH', f'{POLICIES}/churn/status', {'status': {'phase': 'Sleeping'}},
                               content_type='application/merge-patch+json')
    assert (status, error['details']['causes'][0]['field']) == (422, 'status.phase')
    status, error = await http('PATCH', f'{POLICIES}/churn/status', {'status': {'conditions': [
        {'type': 'Ready', 'status': 'True', 'lastTransitionTime': 'yesterday'}]}},
        content_type='application/merge-patch+json')
    assert (status, error['details']['causes'][0]['field']) == (422, 'status.conditions[0].lastTransitionTime')


async def test_builtin_kinds_are_checked_against_official_schemas(http: Http) -> None:
    def job(**spec: Any) -> dict[str, Any]:
        container = {'name': 'train', 'image': 'trainer:1', 'command': ['train']}
        template = {'spec': {'restartPolicy': 'Never', 'containers': [container]}}
        return {'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': 'train'},
                'spec': {'template': template, **spec}}

    cases: list[tuple[dict[str, Any], str]] = [
        (job(backoffLimit='six'), 'spec.backoffLimit'),
        (job(activeDeadlineSecond=60), 'spec.activeDeadlineSecond'),  # a typo is not silently dropped
        (job(template={'spec': {'restartPolicy': 'Always', 'containers': [{'name': 'c', 'image': 'i'}]}}),
         'spec.template.spec.restartPolicy'),
        (job(template={'spec': {'restartPolicy': 'Never', 'containers': [{'name': 'c'}]}}),
         'spec.template.spec.containers[0].image'),
        (job(template={'spec': {'restartPolicy': 'Never', 'containers': [
            {'name': 'c', 'image': 'i', 'resources': {'limits': {'cpu': 'lots'}}}]}}),
         'spec.template.spec.containers[0].resources.limits[cpu]'),
    ]
    for body, field in cases:
        status, error = await http('POST', JOBS, body)
        assert (status, error['reason']) == (422, 'Invalid'), (field, error)
        assert field in [c['field'] for c in error['details']['causes']], (field, error)
        assert error['message'].startswith('Job.batch "train" is invalid')

    long_name = job()
    long_name['metadata']['name'] = 'x' * 64  # the job-name label of its pods could not hold it
    status, error = await http('POST', JOBS, long_name)
    assert status == 422 and error['details']['causes'][0]['field'] == 'spec.template.labels'

    created = await http.ok('POST', JOBS, job(activeDeadlineSeconds=60))
    assert created['spec']['template']['spec']['containers'][0]['terminationMessagePath'] == '/dev/termination-log'
    changed = json.loads(json.dumps(created))
    changed['spec']['template']['spec']['containers'][0]['image'] = 'trainer:2'
    status, error = await http('PUT', f'{JOBS}/train', changed)
    assert status == 422 and error['details']['causes'][0]['field'] == 'spec.template'


async def test_secrets_merge_string_data(http: Http) -> None:
    secret = await http.ok('POST', '/api/v1/namespaces/default/secrets', {
        'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 's3'}, 'stringData': {'key': 'hunter2'}})
    assert secret['data'] == {'key': 'aHVudGVyMg=='} and 'stringData' not in secret and secret['type'] == 'Opaque'


async def test_deleting_a_namespace_deletes_its_objects(http: Http) -> None:
    await http.ok('POST', '/api/v1/namespaces', {'apiVersion': 'v1', 'kind': 'Namespace',
                                                 'metadata': {'name': 'team-a'}})
    await http.ok('POST', '/api/v1/namespaces/team-a/configmaps', configmap('a'))
    namespace = await http.ok('GET', '/api/v1/namespaces/team-a')
    assert namespace['status']['phase'] == 'Active'
    await http.ok('DELETE', '/api/v1/namespaces/team-a')
    assert (await http('GET', '/api/v1/namespaces/team-a'))[0] == 404
    assert (await http.ok('GET', '/api/v1/namespaces/team-a/configmaps'))['items'] == []


# ----------------------------------------------------------------------------------------------
# Real clients

async def test_kubectl_registers_a_crd_then_applies_its_resource(
        kubectl: Callable[..., Awaitable[tuple[int, str, str]]], tmp_path: Path) -> None:
    code, out, err = await kubectl('get', 'crd', '-o', 'name')
    assert code == 0, err
    for line in out.split():
        await kubectl('delete', line)
    code, _, err = await kubectl('get', 'retrainpolicies')
    assert code != 0, err

    code, out, err = await kubectl('apply', '--validate=false', '-f', str(CRDS[0]))
    assert code == 0 and 'created' in out, err
    manifest = tmp_path / 'policy.yaml'
    manifest.write_text(yaml.safe_dump(policy()))
    code, out, err = await kubectl('apply', '--validate=false', '-f', str(manifest))
    assert (code, out.strip()) == (0, 'retrainpolicy.retrain.dev/churn created'), err
    # Re-applying sends the defaulted trigger list again (merge patches replace lists, as on a real
    # cluster); the server re-applies the same defaults, so nothing changes.
    code, out, err = await kubectl('apply', '--validate=false', '-f', str(manifest))
    assert code == 0, err
    code, out, err = await kubectl('get', 'retrainpolicy', 'churn', '-o', 'jsonpath={.metadata.generation}')
    assert (code, out) == (0, '1'), err

    code, out, err = await kubectl('get', 'rp')
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ['NAME', 'MODEL', 'PHASE', 'LAST', 'DECISION', 'LAST', 'RETRAIN', 'AGE']
    assert row.split()[:2] == ['churn', 'churn']
    code, out, err = await kubectl('get', 'retrainpolicy', 'churn', '-o', 'json')
    assert code == 0 and json.loads(out)['spec']['decision'] == {'cooldown': '1h', 'dryRun': False}, err
    code, out, err = await kubectl('describe', 'retrainpolicies', 'churn')
    assert code == 0 and 'Name:' in out and 'churn' in out, err

    bad = policy('bad', decision={'dryRun': 'yes'})
    code, _, err = await kubectl('apply', '--validate=false', '-f', '-', stdin=yaml.safe_dump(bad))
    assert code != 0 and 'is invalid' in err and 'spec.decision.dryRun' in err
    code, out, err = await kubectl('delete', 'retrainpolicy', 'churn')
    assert code == 0 and 'deleted' in out, err


async def test_kubectl_works_with_builtin_kinds(kubectl: Callable[..., Awaitable[tuple[int, str, str]]]) -> None:
    manifest = yaml.safe_dump(configmap('settings', {'app': 'web'}, x='1'))
    assert (await kubectl('apply', '--validate=false', '-f', '-', stdin=manifest))[0] == 0
    changed = yaml.safe_dump(configmap('settings', {'app': 'api'}, x='2'))
    code, out, err = await kubectl('apply', '--validate=false', '-f', '-', stdin=changed)
    assert (code, out.strip()) == (0, 'configmap/settings configured'), err
    code, out, err = await kubectl('get', 'cm', '-l', 'app=api', '-o', 'json')
    assert code == 0, err
    assert [i['data'] for i in json.loads(out)['items']] == [{'x': '2'}]
    code, out, err = await kubectl('get', 'namespaces')
    assert code == 0 and 'default' in out and 'Active' in out, err
    code, out, err = await kubectl('describe', 'configmap', 'settings')
    assert code == 0 and 'app=api' in out, err
    code, out, err = await kubectl('delete', 'configmap', 'settings')
    assert code == 0, err


async def test_kopf_sees_a_created_resource(api: RunningApi, http: Http, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('KUBECONFIG', str(write_kubeconfig(tmp_path / 'kubeconfig', api.url)))
    registry = kopf.OperatorRegistry()
    seen: list[str] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: Any, **_: Any) -> None:
        settings.watching.server_timeout = 5
        settings.posting.enabled = False
        settings.peering.standalone = True

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create('retrain.dev', 'v1alpha1', 'retrainpolicies', registry=registry)
    def created(name: str, spec: Any, **_: Any) -> None:
        seen.append(f'{name}:{spec["model"]["name"]}')

    await http.ok('POST', POLICIES, policy('before'))
    stop = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(kopf.operator(registry=registry, clusterwide=True, standalone=True,
                                             stop_flag=stop))
    try:
        await eventually(lambda: asyncio.sleep(0, result='before:churn' in seen), within=10)
        await http.ok('POST', POLICIES, policy('after'))
        await eventually(lambda: asyncio.sleep(0, result='after:churn' in seen), within=10)

        async def annotated() -> bool:
            body = await http.ok('GET', f'{POLICIES}/after')
            return 'kopf.zalando.org/last-handled-configuration' in body['metadata'].get('annotations', {})

        await eventually(annotated, within=10)  # kopf's own patches were accepted
    finally:
        stop.set_result(None)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
    assert seen.count('before:churn') == 1 and seen.count('after:churn') == 1
