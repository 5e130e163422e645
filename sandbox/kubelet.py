"""Runs the Jobs of an API server as local processes: the sandbox's Job controller and kubelet.

Why it exists: the operator launches training Jobs and learns their outcome from the Job's
conditions and the Pod's termination message. Without a cluster something must play the Job
controller and the kubelet, talking to the API over HTTP only, exactly as they would, so that the
operator sees the same objects and transitions it sees on a cluster:

- for each new Job (not suspended, not finished, without pods yet) it creates a Pod owned by the
  Job, with the `job-name` and `controller-uid` labels, and sets the Job's `startTime` and `active`;
- it then awaits an optional `gate(job)` (tests hold a Job running with it), and runs the first
  container's `command + args` ($(VAR) expanded as Kubernetes does) in a scratch directory, with
  the container's `env`/`envFrom` (Secrets and ConfigMaps read through the API), the PATH of this
  process, HOME and TMPDIR pointing at the scratch directory, `env_overrides`, and
  `TERMINATION_MESSAGE_PATH` naming a local file that stands for the container's
  `terminationMessagePath`;
- it reports Pod phases, container states and the termination message (first 4096 bytes; the log
  tail with `FallbackToLogsOnError`), and Job status as Kubernetes sets it: `succeeded`/`failed`,
  `SuccessCriteriaMet` then `Complete`, or `FailureTarget` then `Failed` (`BackoffLimitExceeded`,
  `DeadlineExceeded`); `backoffLimit` retries with a new Pod, `activeDeadlineSeconds` kills;
- a Job deleted while it runs has its process killed.

Limits: the image is ignored (the command must exist on this machine); only the first container
runs (init containers and sidecars do not); Pods run one at a time per Job, `completions` of them in
sequence, `parallelism` ignored; `restartPolicy: OnFailure` retries with a new Pod like `Never`;
there is no retry back-off delay; a missing Secret or ConfigMap fails the Pod at once
(CreateContainerConfigError) instead of leaving it pending; volumes, probes, resources and security
contexts are not enforced. Completed Jobs are not cleaned up (`ttlSecondsAfterFinished` is ignored).
"""

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from sandbox.apiserver import LOG_ANNOTATION

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Gate = Callable[[JsonDict], Awaitable[None]]

MESSAGE_LIMIT: Final = 4096  # bytes of a termination message, as the kubelet keeps
LOG_TAIL_LIMIT: Final = 2048  # bytes of log used by FallbackToLogsOnError
_NAME_ALPHABET: Final = 'bcdfghjklmnpqrstvwxz2456789'


class ApiFailure(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f'{status}: {body}')
        self.status = status
        self.body = body


class ContainerConfigError(Exception):
    """The container cannot start: its environment refers to something missing."""


@dataclasses.dataclass
class PodRun:
    """What the kubelet ran for one Pod (for assertions)."""

    namespace: str
    job: str
    pod: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    log_path: Path
    started_at: str
    finished_at: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    reason: str | None = None  # Completed, Error, StartError, CreateContainerConfigError, DeadlineExceeded, ...
    message: str = ''

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def log(self) -> str:
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand $(VAR) as Kubernetes does: `$$` escapes, unknown variables stay as they are."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == '$' and i + 1 < len(text):
            following = text[i + 1]
            if following == '$':
                out.append('$')
                i += 2
                continue
            if following == '(':
                end = text.find(')', i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return ''.join(out)


def _exit_code(returncode: int) -> int:
    # A process killed by signal N exits with 128+N in a container.
    return 128 - returncode if returncode < 0 else returncode


class LocalKubelet:
    """
    Runs the Jobs of the API at `api_url` as local processes until the block exits.

    Use as `async with LocalKubelet(api_url=..., workdir=...) as kubelet:`; `kubelet.runs` lists
    what it ran. Exiting kills every process it started.
    """

    def __init__(
            self,
            *,
            api_url: str,
            workdir: Path,
            env_overrides: Mapping[str, str] | None = None,
            gate: Gate | None = None,
            token: str = 'sandbox-token',
            max_grace_period: float = 2.0,
    ) -> None:
        self.api_url = api_url.rstrip('/')
        self.workdir = Path(workdir)
        self.env_overrides = dict(env_overrides or {})
        self.gate = gate
        self.token = token
        self.max_grace_period = max_grace_period
        self._session: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._jobs: dict[str, asyncio.Task[None]] = {}  # by Job uid
        self._handled: set[str] = set()  # Job uids seen to completion or adopted from elsewhere
        self._processes: dict[str, asyncio.subprocess.Process] = {}  # by Pod name
        self._runs: list[PodRun] = []
        self._ready = asyncio.Event()

    @property
    def runs(self) -> list[PodRun]:
        """Every Pod run so far, in order of start."""
        return list(self._runs)

    def runs_of(self, job: str, namespace: str | None = None) -> list[PodRun]:
        return [r for r in self._runs if r.job == job and (namespace is None or r.namespace == namespace)]

    async def __aenter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession(headers={'Authorization': f'Bearer {self.token}'})
        self._watcher = asyncio.create_task(self._watch_jobs(), name='kubelet-watch-jobs')
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._watcher}, return_when=asyncio.FIRST_COMPLETED)
        if self._watcher.done():
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
            await self.__aexit__(None, None, None)
            self._watcher.result()  # the first listing failed: say why
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        tasks = [t for t in [self._watcher, *self._jobs.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for process in list(self._processes.values()):
            await self._kill(process)  # normally done by each job's task; this is the safety net
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------------------------------
    # API access

    async def _api(self, method: str, path: str, body: Any = None, *,
                   content_type: str = 'application/json') -> JsonDict:
        assert self._session is not None, 'the kubelet is not running'
        data = None if body is None else json.dumps(body).encode()
        async with self._session.request(method, self.api_url + path, data=data,
                                         headers={'Content-Type': content_type}) as response:
            text = await response.text()
            answer = json.loads(text) if text.strip() else {}
            if response.status >= 400:
                raise ApiFailure(response.status, answer)
            return dict(answer)

    async def _patch_status(self, kind_path: str, namespace: str, name: str, status: JsonDict) -> JsonDict:
        return await self._api('PATCH', f'{kind_path}/namespaces/{namespace}/{name}/status', {'status': status},
                               content_type='application/merge-patch+json')

    async def _job_status(self, job: JsonDict, status: JsonDict) -> None:
        meta = job['metadata']
        await self._patch_status('/apis/batch/v1', meta['namespace'], f'jobs/{meta["name"]}', status)

    async def _pod_status(self, namespace: str, pod: str, status: JsonDict) -> None:
        with contextlib.suppress(ApiFailure):  # a Pod deleted meanwhile has no status to report
            await self._patch_status('/api/v1', namespace, f'pods/{pod}', status)

    # ------------------------------------------------------------------------------------------
    # Watching Jobs

    async def _watch_jobs(self) -> None:
        while True:
            try:
                await self._list_and_watch_jobs()
            except (aiohttp.ClientError, ApiFailure) as error:
                if not self._ready.is_set():
                    raise  # the API is not there at all: fail the start
                logger.warning('the local kubelet lost its watch of Jobs (%s); listing again', error)
                await asyncio.sleep(0.5)

    async def _list_and_watch_jobs(self) -> None:
        assert self._session is not None
        while True:
            listed = await self._api('GET', '/apis/batch/v1/jobs')
            for job in listed.get('items', []):
                await self._consider(job)
            self._ready.set()
            version = listed['metadata']['resourceVersion']
            gone = False
            while not gone:
                url = f'{self.api_url}/apis/batch/v1/jobs?watch=true&resourceVersion={version}&timeoutSeconds=300'
                async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
                    if response.status != 200:
                        raise ApiFailure(response.status, await response.text())
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event['type'] == 'ERROR':
                            gone = True  # 410: the version is forgotten; list again
                            break
                        version = event['object']['metadata'].get('resourceVersion', version)
                        if event['type'] == 'DELETED':
                            await self._on_deleted(event['object'])
                        elif event['type'] in ('ADDED', 'MODIFIED'):
                            await self._consider(event['object'])

    async def _consider(self, job: JsonDict) -> None:
        uid = job['metadata']['uid']
        if uid in self._jobs or uid in self._handled:
            return
        spec, status = job.get('spec') or {}, job.get('status') or {}
        finished = any(c.get('type') in ('Complete', 'Failed') and c.get('status') == 'True'
                       for c in status.get('conditions') or [])
        if finished or spec.get('suspend'):
            return
        pods = await self._api('GET', f'/api/v1/namespaces/{job["metadata"]["namespace"]}/pods'
                                      f'?labelSelector=batch.kubernetes.io/controller-uid%3D{uid}')
        if pods.get('items'):
            self._handled.add(uid)  # someone else runs it (a previous kubelet): never run it twice
            return
        self._jobs[uid] = asyncio.create_task(self._run_job(job), name=f'kubelet-job-{job["metadata"]["name"]}')

    async def _on_deleted(self, job: JsonDict) -> None:
        task = self._jobs.pop(job['metadata']['uid'], None)
        self._handled.add(job['metadata']['uid'])
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The Pods of a Job deleted without propagation outlive it: report them dead.
        for run in self.runs_of(job['metadata']['name'], job['metadata']['namespace']):
            if run.reason == 'JobDeleted':
                await self._pod_status(run.namespace, run.pod, {
                    'phase': 'Failed', 'reason': 'JobDeleted',
                    'containerStatuses': [self._container_status(run, None, terminated=True)]})

    # ------------------------------------------------------------------------------------------
    # Running a Job

    async def _run_job(self, job: JsonDict) -> None:
        meta, spec = job['metadata'], job.get('spec') or {}
        loop = asyncio.get_running_loop()
        backoff_limit = int(spec.get('backoffLimit', 6))
        completions = int(spec.get('completions', 1) or 1)
        deadline = spec.get('activeDeadlineSeconds')
        deadline_at = loop.time() + float(deadline) if deadline is not None else None
        start_time = _now()
        succeeded = failed = 0
        try:
            while True:
                pod = await self._create_pod(job)
                status: JsonDict = {'active': 1, 'ready': 0, 'terminating': 0, 'uncountedTerminatedPods': {}}
                if succeeded == failed == 0:
                    status['startTime'] = start_time
                await self._job_status(job, status)
                outcome = await self._run_pod(job, pod, deadline_at)
                if outcome == 'DeadlineExceeded':
                    await self._finish_job(job, succeeded=succeeded, failed=failed + 1, reason='DeadlineExceeded',
                                           message='Job was active longer than specified deadline')
                    return
                if outcome == 'Succeeded':
                    succeeded += 1
                    if succeeded >= completions:
                        await self._finish_job(job, succeeded=succeeded, failed=failed, reason=None, message='')
                        return
                else:
                    failed += 1
                    if failed > backoff_limit:
                        await self._finish_job(job, succeeded=succeeded, failed=failed,
                                               reason='BackoffLimitExceeded',
                                               message='Job has reached the specified backoff limit')
                        return
                await self._job_status(job, {'succeeded': succeeded or None, 'failed': failed or None})
        except ApiFailure as error:
            if error.status != 404:  # a Job or Pod deleted under our feet ends the run quietly
                logger.exception('the local kubelet could not run the Job %s/%s', meta['namespace'], meta['name'])
        except Exception:
            logger.exception('the local kubelet failed on the Job %s/%s', meta['namespace'], meta['name'])
        finally:
            self._handled.add(meta['uid'])
            self._jobs.pop(meta['uid'], None)

    async def _finish_job(self, job: JsonDict, *, succeeded: int, failed: int, reason: str | None,
                          message: str) -> None:
        now = _now()
        if reason is None:
            kinds, reason, message = ('SuccessCriteriaMet', 'Complete'), 'CompletionsReached', \
                'Reached expected number of succeeded pods'
        else:
            kinds = ('FailureTarget', 'Failed')
        conditions = [{'type': kind, 'status': 'True', 'reason': reason, 'message': message,
                       'lastProbeTime': now, 'lastTransitionTime': now} for kind in kinds]
        status: JsonDict = {
            'active': None, 'ready': 0, 'terminating': 0, 'uncountedTerminatedPods': {},
            'succeeded': succeeded or None, 'failed': failed or None, 'conditions': conditions,
        }
        if kinds[-1] == 'Complete':
            status['completionTime'] = now
        await self._job_status(job, status)

    async def _create_pod(self, job: JsonDict) -> JsonDict:
        meta = job['metadata']
        template = (job.get('spec') or {}).get('template') or {}
        name = f'{meta["name"]}-{"".join(random.choices(_NAME_ALPHABET, k=5))}'
        pod_dir = self.workdir / meta['namespace'] / name
        (pod_dir / 'scratch').mkdir(parents=True, exist_ok=True)
        labels = dict((template.get('metadata') or {}).get('labels') or {})
        labels.update({'batch.kubernetes.io/controller-uid': meta['uid'], 'batch.kubernetes.io/job-name': meta['name'],
                       'controller-uid': meta['uid'], 'job-name': meta['name']})
        annotations = dict((template.get('metadata') or {}).get('annotations') or {})
        annotations[LOG_ANNOTATION] = str(pod_dir / 'output.log')
        body = {
            'apiVersion': 'v1', 'kind': 'Pod',
            'metadata': {
                'name': name, 'namespace': meta['namespace'], 'labels': labels, 'annotations': annotations,
                'ownerReferences': [{'apiVersion': 'batch/v1', 'kind': 'Job', 'name': meta['name'],
                                     'uid': meta['uid'], 'controller': True, 'blockOwnerDeletion': True}],
            },
            'spec': {**(template.get('spec') or {}), 'nodeName': 'localhost'},
        }
        return await self._api('POST', f'/api/v1/namespaces/{meta["namespace"]}/pods', body)

    async def _run_pod(self, job: JsonDict, pod: JsonDict, deadline_at: float | None) -> str:
        """Run the Pod's first container; return Succeeded, Failed or DeadlineExceeded."""
        meta = pod['metadata']
        namespace, name = meta['namespace'], meta['name']
        container = (pod.get('spec') or {}).get('containers', [{}])[0]
        pod_dir = self.workdir / namespace / name
        scratch, message_file, log_path = pod_dir / 'scratch', pod_dir / 'termination-log', pod_dir / 'output.log'
        run = PodRun(namespace=namespace, job=job['metadata']['name'], pod=name, argv=[], env={}, workdir=scratch,
                     log_path=log_path, started_at=_now())
        self._runs.append(run)
        try:
            async with asyncio.timeout_at(deadline_at):
                if self.gate is not None:
                    await self.gate(job)
                try:
                    run.env = await self._environment(pod, container, scratch=scratch, message_file=message_file)
                except ContainerConfigError as error:
                    run.reason, run.message, run.finished_at = 'CreateContainerConfigError', str(error), _now()
                    await self._pod_status(namespace, name, {
                        'phase': 'Failed', 'reason': 'CreateContainerConfigError', 'message': str(error),
                        'containerStatuses': [self._container_status(run, container, waiting=True)]})
                    return 'Failed'
                run.argv = [expand(part, run.env) for part in
                            [*(container.get('command') or []), *(container.get('args') or [])]]
                grace = (pod.get('spec') or {}).get('terminationGracePeriodSeconds')
                await self._execute(run, container, message_file,
                                    grace=min(self.max_grace_period, float(grace if grace is not None else 30)))
        except TimeoutError:
            run.reason, run.finished_at = 'DeadlineExceeded', run.finished_at or _now()
            run.message = run.message or 'Pod was active on the node longer than the specified deadline'
            started = run.exit_code is not None
            await self._pod_status(namespace, name, {
                'phase': 'Failed', 'reason': 'DeadlineExceeded', 'message': run.message,
                'containerStatuses': [self._container_status(run, container, terminated=started,
                                                             waiting=not started)]})
            return 'DeadlineExceeded'
        except asyncio.CancelledError:
            run.reason = run.reason or 'JobDeleted'
            run.finished_at = run.finished_at or _now()
            raise
        phase = 'Succeeded' if run.exit_code == 0 else 'Failed'
        await self._pod_status(namespace, name, {
            'phase': phase, 'containerStatuses': [self._container_status(run, container, terminated=True)]})
        return phase

    async def _execute(self, run: PodRun, container: JsonDict, message_file: Path, *, grace: float) -> None:
        namespace, name = run.namespace, run.pod
        if not run.argv:
            run.exit_code, run.reason, run.finished_at = 128, 'StartError', _now()
            run.message = 'the local kubelet cannot run an image entrypoint: the container needs a command'
            return
        run.log_path.parent.mkdir(parents=True, exist_ok=True)
        with run.log_path.open('ab') as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *run.argv, env=run.env, cwd=run.workdir, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            except OSError as error:
                run.exit_code, run.reason, run.finished_at = 128, 'StartError', _now()
                run.message = f'failed to start the container process: exec: "{run.argv[0]}": {error.strerror}'
                return
        self._processes[name] = process
        run.pid, run.started_at = process.pid, _now()
        await self._pod_status(namespace, name, {
            'phase': 'Running', 'startTime': run.started_at, 'hostIP': '127.0.0.1', 'podIP': '127.0.0.1',
            'containerStatuses': [self._container_status(run, container)]})
        try:
            returncode = await process.wait()
        finally:
            if process.returncode is None:
                await self._kill(process, grace=grace)
            self._processes.pop(name, None)
            run.exit_code = _exit_code(process.returncode if process.returncode is not None else -9)
            run.finished_at = _now()
            run.message = self._termination_message(run, container, message_file)
        run.reason = 'Completed' if returncode == 0 else 'Error'

    def _termination_message(self, run: PodRun, container: JsonDict, message_file: Path) -> str:
        message = ''
        if message_file.exists():
            with message_file.open('rb') as handle:
                message = handle.read(MESSAGE_LIMIT).decode(errors='replace')
        if not message and run.exit_code and container.get('terminationMessagePolicy') == 'FallbackToLogsOnError':
            tail = run.log_path.read_bytes()[-LOG_TAIL_LIMIT:] if run.log_path.exists() else b''
            message = tail.decode(errors='replace')
        return message

    async def _kill(self, process: asyncio.subprocess.Process, grace: float | None = None) -> None:
        """Stop a process and everything it started: SIGTERM to its group, SIGKILL after the grace period."""
        if process.returncode is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)  # the process leads its own session: pgid == pid
            try:
                await asyncio.wait_for(process.wait(), grace if grace is not None else self.max_grace_period)
                return
            except TimeoutError:
                continue

    async def _environment(self, pod: JsonDict, container: JsonDict, *, scratch: Path,
                           message_file: Path) -> dict[str, str]:
        namespace = pod['metadata']['namespace']
        env: dict[str, str] = {'PATH': os.environ.get('PATH', '')}
        for source in container.get('envFrom') or []:
            prefix = source.get('prefix', '')
            for kind in ('secretRef', 'configMapRef'):
                if kind in source:
                    ref = source[kind]
                    data = await self._read_data(namespace, kind, ref.get('name', ''), optional=ref.get('optional'))
                    env.update({prefix + key: value for key, value in data.items()})
        for var in container.get('env') or []:
            name = var['name']
            if 'value' in var:
                env[name] = expand(str(var['value']), env)
            elif 'valueFrom' in var:
                value = await self._value_from(pod, var['valueFrom'])
                if value is not None:
                    env[name] = value
            else:
                env[name] = ''
        env.update({'HOME': str(scratch), 'TMPDIR': str(scratch)})
        env.update(self.env_overrides)
        env['TERMINATION_MESSAGE_PATH'] = str(message_file)
        return env

    async def _value_from(self, pod: JsonDict, source: JsonDict) -> str | None:
        namespace = pod['metadata']['namespace']
        for kind, ref_kind in (('secretKeyRef', 'secretRef'), ('configMapKeyRef', 'configMapRef')):
            if kind in source:
                ref = source[kind]
                data = await self._read_data(namespace, ref_kind, ref.get('name', ''), optional=ref.get('optional'))
                if ref['key'] not in data:
                    if ref.get('optional'):
                        return None
                    what = 'secret' if kind == 'secretKeyRef' else 'configmap'
                    raise ContainerConfigError(f"couldn't find key {ref['key']} in {what.capitalize()} "
                                               f'{namespace}/{ref.get("name")}')
                return data[ref['key']]
        if 'fieldRef' in source:
            value: Any = pod
            path = source['fieldRef'].get('fieldPath', '')
            if path.startswith(('metadata.labels[', 'metadata.annotations[')):
                field, key = path[len('metadata.'):].split('[', 1)
                return str(pod['metadata'].get(field, {}).get(key.strip('\'"]'), ''))
            for part in path.split('.'):
                value = value.get(part) if isinstance(value, dict) else None
            return '' if value is None else str(value)
        return None

    async def _read_data(self, namespace: str, kind: str, name: str, *, optional: bool | None) -> dict[str, str]:
        plural, label = ('secrets', 'secret') if kind == 'secretRef' else ('configmaps', 'configmap')
        try:
            obj = await self._api('GET', f'/api/v1/namespaces/{namespace}/{plural}/{name}')
        except ApiFailure as error:
            if error.status == 404 and optional:
                return {}
            if error.status == 404:
                raise ContainerConfigError(f'{label} "{name}" not found') from None
            raise
        data = dict(obj.get('data') or {})
        if plural == 'secrets':
            return {k: base64.b64decode(v).decode(errors='replace') for k, v in data.items()}
        return {k: str(v) for k, v in data.items()}

    def _container_status(self, run: PodRun, container: JsonDict | None, *, terminated: bool = False,
                          waiting: bool = False) -> JsonDict:
        container = container or {}
        status: JsonDict = {
            'name': container.get('name', 'main'), 'image': container.get('image', ''), 'imageID': '',
            'containerID': f'local://{run.pid}' if run.pid else 'local://', 'restartCount': 0,
            'ready': not (terminated or waiting), 'started': not (terminated or waiting),
        }
        if waiting:
            status['state'] = {'waiting': {'reason': run.reason, 'message': run.message}}
        elif terminated:
            state: JsonDict = {'exitCode': run.exit_code if run.exit_code is not None else 137,
                               'reason': run.reason or 'Error', 'startedAt': run.started_at,
                               'finishedAt': run.finished_at or _now()}
            if run.message:
                state['message'] = run.message
            status['state'] = {'terminated': state}
        else:
            status['state'] = {'running': {'startedAt': run.started_at}}
        return status
