"""The local kubelet runs Jobs as processes and reports them as the Job controller and kubelet do."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox.apiserver import LOG_ANNOTATION, RunningApi, serve_api
from sandbox.kubelet import LocalKubelet, expand

JOBS = '/apis/batch/v1/namespaces/default/jobs'
PODS = '/api/v1/namespaces/default/pods'


class Api:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def __call__(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.url + path, json=body) as response:
            answer = await response.json()
            assert response.status < 300, answer
            return answer


def job(name: str, script: str, *, args: list[str] | None = None, env: list[dict[str, Any]] | None = None,
        **spec: Any) -> dict[str, Any]:
    container = {'name': 'train', 'image': 'ignored:1', 'command': [sys.executable, '-c', script],
                 'args': args or [], 'env': env or []}
    return {'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': name},
            'spec': {'backoffLimit': 0, 'template': {'spec': {'restartPolicy': 'Never', 'containers': [container]}},
                     **spec}}


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 10.0) -> Any:
    """Poll until `check()` returns something truthy; return it."""
    deadline = asyncio.get_running_loop().time() + within
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, 'the condition did not hold in time'
        await asyncio.sleep(0.02)
    return result


async def finished(api: Api, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = await api('GET', f'{JOBS}/{name}')
        conditions = body.get('status', {}).get('conditions', [])
        return body if any(c['type'] in ('Complete', 'Failed') for c in conditions) else None
    result: dict[str, Any] = await eventually(check)
    return result


async def pods_of(api: Api, name: str) -> list[dict[str, Any]]:
    listed = await api('GET', f'{PODS}?labelSelector=job-name%3D{name}')
    items: list[dict[str, Any]] = listed['items']
    return sorted(items, key=lambda p: p['metadata']['creationTimestamp'] + p['metadata']['resourceVersion'].zfill(9))


@pytest.fixture()
async def served() -> AsyncIterator[RunningApi]:
    async with serve_api() as running:
        yield running
        assert running.server.errors == []


@pytest.fixture()
async def api(served: RunningApi) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, served.url)


@pytest.fixture()
async def kubelet(served: RunningApi, tmp_path: Path) -> AsyncIterator[LocalKubelet]:
    async with LocalKubelet(api_url=served.url, workdir=tmp_path / 'pods',
                            env_overrides={'S3_ENDPOINT': 'http://127.0.0.1:1'}) as running:
        yield running


SUCCEEDING = """
import json, os, sys
print('training', sys.argv[1:], flush=True)
with open(os.environ['TERMINATION_MESSAGE_PATH'], 'w') as f:
    json.dump({'score': 0.93, 'home': os.environ['HOME'], 'tmp': os.environ['TMPDIR'],
               's3': os.environ['S3_ENDPOINT'], 'cwd': os.getcwd()}, f)
"""


async def test_a_successful_job_completes_with_a_termination_message(api: Api, kubelet: LocalKubelet) -> None:
    created = await api('POST', JOBS, job('train', SUCCEEDING, args=['--model', '$(MODEL)', '$$(MODEL)'],
                                          env=[{'name': 'MODEL', 'value': 'churn'}]))
    done = await finished(api, 'train')
    status = done['status']
    assert [(c['type'], c['status'], c['reason']) for c in status['conditions']] == [
        ('SuccessCriteriaMet', 'True', 'CompletionsReached'), ('Complete', 'True', 'CompletionsReached')]
    assert status['succeeded'] == 1 and 'active' not in status and 'failed' not in status
    assert status['startTime'] <= status['completionTime']

    [pod] = await pods_of(api, 'train')
    uid = created['metadata']['uid']
    assert pod['metadata']['ownerReferences'][0]['uid'] == uid
    labels = pod['metadata']['labels']
    assert labels['job-name'] == labels['batch.kubernetes.io/job-name'] == 'train'
    assert labels['controller-uid'] == labels['batch.kubernetes.io/controller-uid'] == uid
    assert pod['status']['phase'] == 'Succeeded'
    terminated = pod['status']['containerStatuses'][0]['state']['terminated']
    assert (terminated['exitCode'], terminated['reason']) == (0, 'Completed')
    assert terminated['startedAt'] <= terminated['finishedAt']
    message = json.loads(terminated['message'])
    assert message['score'] == 0.93 and message['s3'] == 'http://127.0.0.1:1'
    assert message['home'] == message['tmp'] == message['cwd']
    assert Path(message['home']).is_relative_to(kubelet.workdir)

    log = await asyncio.to_thread(Path(pod['metadata']['annotations'][LOG_ANNOTATION]).read_text)
    assert "training ['--model', 'churn', '$(MODEL)']" in log
    [run] = kubelet.runs_of('train')
    assert run.exit_code == 0 and run.reason == 'Completed' and run.pod == pod['metadata']['name']
    served_log = await api.session.get(f'{api.url}{PODS}/{run.pod}/log')
    assert 'training' in await served_log.text()


async def test_a_failing_job_retries_up_to_its_backoff_limit(api: Api, kubelet: LocalKubelet) -> None:
    await api('POST', JOBS, job('flaky', 'import sys; print("boom"); sys.exit(3)', backoffLimit=1))
    done = await finished(api, 'flaky')
    status = done['status']
    assert [(c['type'], c['reason']) for c in status['conditions']] == [
        ('FailureTarget', 'BackoffLimitExceeded'), ('Failed', 'BackoffLimitExceeded')]
    assert status['failed'] == 2 and 'succeeded' not in status and 'completionTime' not in status
    pods = await pods_of(api, 'flaky')
    assert len(pods) == 2
    for pod in pods:
        assert pod['status']['phase'] == 'Failed'
        terminated = pod['status']['containerStatuses'][0]['state']['terminated']
        assert (terminated['exitCode'], terminated['reason']) == (3, 'Error')
    assert [r.exit_code for r in kubelet.runs_of('flaky')] == [3, 3]


async def test_logs_stand_in_for_an_empty_message_when_asked(api: Api, kubelet: LocalKubelet) -> None:
    body = job('noisy', 'import sys; print("the data is gone"); sys.exit(1)')
    body['spec']['template']['spec']['containers'][0]['terminationMessagePolicy'] = 'FallbackToLogsOnError'
    await api('POST', JOBS, body)
    await finished(api, 'noisy')
    [pod] = await pods_of(api, 'noisy')
    assert pod['status']['containerStatuses'][0]['state']['terminated']['message'] == 'the data is gone\n'


async def test_a_job_over_its_deadline_is_killed(api: Api, kubelet: LocalKubelet) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await api('POST', JOBS, job('slow', 'import time; time.sleep(60)', activeDeadlineSeconds=1))
    done = await finished(api, 'slow')
    assert loop.time() - started < 8
    assert [(c['type'], c['reason']) for c in done['status']['conditions']] == [
        ('FailureTarget', 'DeadlineExceeded'), ('Failed', 'DeadlineExceeded')]
    [pod] = await pods_of(api, 'slow')
    assert pod['status']['phase'] == 'Failed' and pod['status']['reason'] == 'DeadlineExceeded'
    [run] = kubelet.runs_of('slow')
    assert run.reason == 'DeadlineExceeded' and run.exit_code in (143, 137)


async def test_env_comes_from_secrets_and_config_maps(api: Api, kubelet: LocalKubelet) -> None:
    await api('POST', '/api/v1/namespaces/default/secrets', {
        'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 's3'},
        'data': {'AWS_SECRET_ACCESS_KEY': base64.b64encode(b'hunter2').decode()}})
    await api('POST', '/api/v1/namespaces/default/configmaps', {
        'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'settings'}, 'data': {'region': 'eu-1'}})
    script = ("import os; open(os.environ['TERMINATION_MESSAGE_PATH'], 'w').write("
              "os.environ['AWS_SECRET_ACCESS_KEY'] + ' ' + os.environ['REGION'] + ' ' + os.environ['POD'])")
    await api('POST', JOBS, job('secretive', script, env=[
        {'name': 'AWS_SECRET_ACCESS_KEY',
         'valueFrom': {'secretKeyRef': {'name': 's3', 'key': 'AWS_SECRET_ACCESS_KEY'}}},
        {'name': 'REGION', 'valueFrom': {'configMapKeyRef': {'name': 'settings', 'key': 'region'}}},
        {'name': 'POD', 'valueFrom': {'fieldRef': {'fieldPath': 'metadata.name'}}},
    ]))
    await finished(api, 'secretive')
    [pod] = await pods_of(api, 'secretive')
    message = pod['status']['containerStatuses'][0]['state']['terminated']['message']
    assert message == f'hunter2 eu-1 {pod["metadata"]["name"]}'


async def test_a_missing_secret_fails_the_pod(api: Api, kubelet: LocalKubelet) -> None:
    await api('POST', JOBS, job('unconfigured', 'pass', env=[
        {'name': 'KEY', 'valueFrom': {'secretKeyRef': {'name': 'absent', 'key': 'k'}}}]))
    done = await finished(api, 'unconfigured')
    assert done['status']['conditions'][-1]['reason'] == 'BackoffLimitExceeded'
    [pod] = await pods_of(api, 'unconfigured')
    assert pod['status']['phase'] == 'Failed' and pod['status']['reason'] == 'CreateContainerConfigError'
    waiting = pod['status']['containerStatuses'][0]['state']['waiting']
    assert waiting == {'reason': 'CreateContainerConfigError', 'message': 'secret "absent" not found'}
    assert kubelet.runs_of('unconfigured')[0].argv == []  # nothing was started


async def test_a_gate_holds_the_job_running(served: RunningApi, api: Api, tmp_path: Path) -> None:
    release = asyncio.Event()
    held: list[str] = []

    async def gate(body: dict[str, Any]) -> None:
        held.append(body['metadata']['name'])
        await release.wait()

    async with LocalKubelet(api_url=served.url, workdir=tmp_path, gate=gate) as kubelet:
        await api('POST', JOBS, job('held', 'pass'))
        await eventually(lambda: asyncio.sleep(0, result=held == ['held']))
        running = await api('GET', f'{JOBS}/held')
        assert running['status']['active'] == 1 and running['status']['startTime']
        assert 'conditions' not in running['status']
        [run] = kubelet.runs_of('held')
        assert not run.finished and run.argv == []
        release.set()
        await finished(api, 'held')
        assert kubelet.runs_of('held')[0].exit_code == 0


async def test_deleting_a_running_job_kills_its_process(api: Api, kubelet: LocalKubelet, tmp_path: Path) -> None:
    marker = tmp_path / 'pid'
    script = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    await api('POST', JOBS, job('doomed', script))
    pid = int(await eventually(lambda: asyncio.sleep(0, result=marker.exists() and marker.read_text())))
    await api('DELETE', f'{JOBS}/doomed')  # batch/v1 orphans the Pod; its process must still die

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(lambda: asyncio.sleep(0, result=gone()))
    await eventually(lambda: asyncio.sleep(0, result=kubelet.runs_of('doomed')[0].reason == 'JobDeleted'))

    async def reported() -> bool:
        [pod] = await pods_of(api, 'doomed')
        return bool(pod['status']['phase'] == 'Failed')

    await eventually(reported)


async def test_shutdown_kills_what_runs(served: RunningApi, api: Api, tmp_path: Path) -> None:
    marker = tmp_path / 'pid'
    script = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    async with LocalKubelet(api_url=served.url, workdir=tmp_path / 'pods'):
        await api('POST', JOBS, job('forever', script))
        pid = int(await eventually(lambda: asyncio.sleep(0, result=marker.exists() and marker.read_text())))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_expansion_follows_kubernetes() -> None:
    env = {'A': 'x', 'B': '$(A)'}
    assert expand('$(A)-$(B)-$$(A)-$(C)-$-$A', env) == 'x-$(A)-$(A)-$(C)-$-$A'
