"""Reconciliation of one policy: follow its Job, evaluate, let the domain decide, act, and write status once.

Everything that decides is in ``domain``; this module only gathers the facts (the observations,
the Job and its pods, the annotations, the budgets' verdicts), calls the pure functions, performs
the one action the decision asks for, and writes the status it built, only if it differs from the
stored one. The status is a ``PolicyStatus`` value that each step returns anew; nothing else
writes it. Events mark changes: a new decision reason, a Job started, a Job finished, a spec
found invalid. Limits: one policy at a time; the scheduler runs many of these concurrently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retrain_operator.adapters.kubernetes import AlreadyExists, ApiError, KubeClient
from retrain_operator.domain.api import API_VERSION, InvalidSpec, ModelStoreSpec, PolicySpec, Problem, parse_policy_spec
from retrain_operator.domain.decision import (
    ROLLBACK_ANNOTATION,
    Decision,
    Launch,
    Requests,
    evaluation_error,
    force_to_honour,
    invalid,
    launched,
    rollback_to_start,
    rolling_back,
    within_budget,
)
from retrain_operator.domain.evaluation import accuracy_now, evaluate_triggers, sanitise
from retrain_operator.domain.jobs import (
    ANNOTATION_ACTION,
    ANNOTATION_TRIGGER,
    ANNOTATION_VERSION,
    LABEL_POLICY_UID,
    PolicyRef,
    build_job,
    job_name,
    read_outcome,
    trimmed_jobs,
)
from retrain_operator.domain.policy_status import ActiveJob, HistoryEntry, PolicyStatus, RetrainRecord, rollback_result
from retrain_operator.domain.status import merge_diff, status_changed
from retrain_operator.domain.times import parse_rfc3339, rfc3339, utcnow
from retrain_operator.domain.triggers import Observation, TriggerResult
from retrain_operator.reconcile.budgets import Accountant
from retrain_operator.reconcile.spending import Spending
from retrain_operator.reconcile.telemetry import Telemetry
from retrain_operator.registry.layout import check_version_id
from retrain_operator.settings.estimators import DEFAULT_ALLOWLIST

logger = logging.getLogger(__name__)

WARNING_REASONS = frozenset(
    {
        "MetricsUnavailable",
        "NoBaseline",
        "JobCreateFailed",
        "InvalidSpec",
        "JobNameTaken",
        "OverBudget",
        "RollbackFailed",
        "EvaluationError",
    }
)


@dataclass
class PolicyEntry:
    """The operator's view of one RetrainPolicy: its latest body and what parsing it gave."""

    body: dict[str, Any]
    spec: PolicySpec | None = None
    problems: list[Problem] = field(default_factory=list)
    parsed_generation: int | None = None
    status_version: int = -1
    scanned_jobs: bool = False

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.body["metadata"].get("uid") or "")

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    @property
    def created(self) -> datetime | None:
        return parse_rfc3339(self.body["metadata"].get("creationTimestamp"))

    @property
    def annotations(self) -> Mapping[str, str]:
        return dict(self.body["metadata"].get("annotations") or {})

    @property
    def stored_status(self) -> dict[str, Any]:
        """The status as the API server holds it: what the one diff is taken against."""
        return dict(self.body.get("status") or {})

    @property
    def status(self) -> PolicyStatus:
        return PolicyStatus.from_dict(self.body.get("status"))

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(namespace=self.namespace, name=self.name, uid=self.uid)

    def parse(self) -> None:
        """Parse the spec once per generation."""
        if self.parsed_generation == self.generation and (self.spec is not None or self.problems):
            return
        self.parsed_generation = self.generation
        try:
            self.spec, self.problems = parse_policy_spec(self.body.get("spec")), []
        except InvalidSpec as exc:
            self.spec, self.problems = None, exc.problems
        except Exception as exc:  # a spec the parser trips over is invalid, with why, never a stalled loop
            logger.exception("parsing %s/%s failed", self.namespace, self.name)
            self.spec, self.problems = None, [Problem("spec", f"could not be read: {sanitise(exc)}")]

    def accept_body(self, body: dict[str, Any]) -> None:
        """Take a newer body from a watch, without letting an older status replace the one just written."""
        version = _version(body)
        if version is not None and version < self.status_version:
            body = {**body, "status": self.body.get("status")}
        self.body = body


def _version(body: Mapping[str, Any]) -> int | None:
    try:
        return int(body["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None


class Reconciler:
    """Brings one policy up to date per call: follows its Job, evaluates, acts on the decision, writes status once.

    It holds the ports (Kubernetes; the budgets through its Accountant), the settings every training
    Job gets (trainer image, service account) and the operator's telemetry. What it knows about a
    policy between calls is in the ``PolicyEntry`` and in the policy's status, nowhere else.
    """

    def __init__(
        self,
        *,
        kube: KubeClient,
        trainer_image: str,
        service_account: str,
        telemetry: Telemetry | None = None,
        clock: Callable[[], datetime] | None = None,
        stuck_after: float = 300.0,
        estimator_allowlist: Sequence[str] = DEFAULT_ALLOWLIST,
    ) -> None:
        self._kube = kube
        self._stuck_after = stuck_after
        self.estimator_allowlist = tuple(estimator_allowlist)
        self.telemetry = telemetry or Telemetry()
        self.accountant = Accountant(kube=kube, clock=clock or utcnow, telemetry=self.telemetry)
        self._spending = Spending(accountant=self.accountant)
        self._trainer_image = trainer_image
        self._service_account = service_account

    async def _event(self, entry: PolicyEntry, *, reason: str, message: str, warning: bool = False) -> None:
        involved = {"apiVersion": API_VERSION, "kind": "RetrainPolicy", "metadata": entry.body["metadata"]}
        try:
            await self._kube.create_event(
                involved=involved, type="Warning" if warning else "Normal", reason=reason, message=message
            )
        except Exception as exc:  # an event lost must never stop a reconciliation
            logger.warning("event %s for %s/%s not posted: %s", reason, entry.namespace, entry.name, exc)

    async def reconcile(
        self,
        entry: PolicyEntry,
        *,
        observations: Mapping[str, Observation],
        endpoint_problems: Sequence[Problem],
        store: ModelStoreSpec | None = None,
        now: datetime,
    ) -> bool:
        """Bring one policy up to date; return whether its status was written.

        ``endpoint_problems`` are those of the admin's objects the policy uses (its MetricsEndpoint and
        ModelStore); ``store`` is its ModelStore, which every Job it launches is built with.

        An evaluation that raises is never silent: the policy's status says EvaluationError with the
        exception's message (sanitised, bounded), a Warning event says it once per new message, and the
        error goes on to the caller, which retries at the next interval and carries on with the others.
        """
        try:
            return await self._reconcile(
                entry, observations=observations, endpoint_problems=endpoint_problems, store=store, now=now
            )
        except Exception as exc:
            await self._write_error(entry, exc, now=now)
            raise

    async def _write_error(self, entry: PolicyEntry, exc: Exception, *, now: datetime) -> None:
        decision = evaluation_error(sanitise(exc))
        try:
            stored = entry.stored_status
            before = PolicyStatus.from_dict(stored)
            previous = before.last_decision
            status = before.evaluation_failed(decision=decision, generation=entry.generation, now=now)
            if previous is None or previous.message != decision.message:
                await self._event(entry, reason=decision.reason, message=decision.message, warning=True)
            self.telemetry.decided(entry.namespace, decision)
            await self._write(entry, stored, status)
        except Exception:  # the status write itself failing (API down): the log says it, the next interval retries
            logger.exception("recording the failed evaluation of %s/%s failed", entry.namespace, entry.name)

    async def _reconcile(
        self,
        entry: PolicyEntry,
        *,
        observations: Mapping[str, Observation],
        endpoint_problems: Sequence[Problem],
        store: ModelStoreSpec | None,
        now: datetime,
    ) -> bool:
        entry.parse()
        stored = entry.stored_status
        before = PolicyStatus.from_dict(stored)
        problems = [str(p) for p in (entry.problems or list(endpoint_problems))]
        if entry.spec is not None and not problems and store is None:
            problems = ["spec.model.registry.store: no ModelStore is known for this policy; name one"]
        if entry.spec is None or store is None or problems:
            return await self._write_invalid(entry, problems, stored=stored, now=now)
        spec = entry.spec
        status, finished_now, stuck = await self._follow_job(entry, spec, before, now=now)
        results = evaluate_triggers(
            spec, observations=observations, status=status, created=entry.created or now, now=now
        )
        self.telemetry.triggers(entry.namespace, entry.name, {r.name: (r.value, r.firing) for r in results})
        requests = Requests.from_annotations(entry.annotations)
        rollback = rollback_to_start(
            requests, last_request=status.last_rollback_request, active_job=status.active_name, suspended=spec.suspend
        )
        if rollback is not None:
            status, decision = await self._rollback(entry, spec, store, status, version=rollback, now=now)
        else:
            status, decision = await self._retrain(
                entry, spec, store, status, results=results, requests=requests, now=now
            )
        status = status.charged(spec.decision.limits, now=now)  # the window rolls even when nothing is charged
        if finished_now:
            await self._trim(entry, spec, status)
        status = status.evaluated(
            results=results, decision=decision, suspended=spec.suspend, generation=entry.generation, now=now
        )
        await self._announce(entry, decision, previous=before.last_decision.reason if before.last_decision else None)
        written = await self._write(entry, stored, status)
        if stuck is not None:
            # Only once the failure and its cause are recorded: a crash before this leaves the Job to be
            # found stuck again, never a Job that vanished with its cause.
            await self._end_stuck(entry, stuck)
        return written

    async def _end_stuck(self, entry: PolicyEntry, name: str) -> None:
        """Delete a Job whose pod waits for something that will not come (the real Job controller owns its
        conditions, so the operator cannot mark it failed; deleting it also stops its pod)."""
        try:
            await self._kube.delete_job(entry.namespace, name)
        except Exception as exc:  # the record is written; the Job's own deadline still ends it
            logger.warning("deleting stuck Job %s/%s failed: %s", entry.namespace, name, exc)

    async def _announce(self, entry: PolicyEntry, decision: Decision, *, previous: str | None) -> None:
        """Count the decision; log and post an event when its reason changed (firing needs no event of its own)."""
        self.telemetry.decided(entry.namespace, decision)
        if previous != decision.reason or decision.launches:
            logger.info(
                "%s/%s: %s (%s): %s", entry.namespace, entry.name, decision.action, decision.reason, decision.message
            )
        if previous != decision.reason and decision.reason != "TriggerFiring":
            await self._event(
                entry, reason=decision.reason, message=decision.message, warning=decision.reason in WARNING_REASONS
            )

    async def _write(self, entry: PolicyEntry, stored: Mapping[str, Any], status: PolicyStatus) -> bool:
        """The one status write: the merge patch from what the server holds to what was built, if they differ."""
        interval = entry.spec.evaluation.interval if entry.spec is not None and status.phase != "Invalid" else None
        self.telemetry.policy_state(entry.namespace, entry.name, status, interval=interval)
        built = status.to_dict()
        if not status_changed(stored, built):
            return False
        result = await self._kube.patch_policy_status(entry.namespace, entry.name, merge_diff(stored, built))
        entry.body = {**entry.body, "status": result.get("status", built)}
        version = _version(result)
        if version is not None:
            entry.status_version = version
            entry.body["metadata"] = {**entry.body["metadata"], "resourceVersion": str(version)}
        return True

    async def _write_invalid(
        self, entry: PolicyEntry, problems: Sequence[str], *, stored: Mapping[str, Any], now: datetime
    ) -> bool:
        before = PolicyStatus.from_dict(stored)
        decision = invalid(problems)
        status = before.invalid(problems=problems, decision=decision, generation=entry.generation, now=now)
        previous = before.last_decision
        if previous is None or previous.message != decision.message or previous.reason != "InvalidSpec":
            await self._event(entry, reason="InvalidSpec", message=decision.message, warning=True)
        self.telemetry.decided(entry.namespace, decision)
        return await self._write(entry, stored, status)

    async def _retrain(
        self,
        entry: PolicyEntry,
        spec: PolicySpec,
        store: ModelStoreSpec,
        status: PolicyStatus,
        *,
        results: Sequence[TriggerResult],
        requests: Requests,
        now: datetime,
    ) -> tuple[PolicyStatus, Decision]:
        """Decide on the triggers; a retrain must then pass the limits and budgets, and its Job is created."""
        forced = force_to_honour(requests, last_override=status.last_override)
        gate = await self._spending.gate(entry.namespace, spec, results=results, status=status)
        decision = status.decide(
            spec,
            results=results,
            now=now,
            gate=gate,
            forced=forced,
        )
        if not decision.retrains:
            return status, decision
        charge = await self._spending.estimate(
            entry.ref, spec, status, job=job_name(entry.ref, status.retrains), now=now
        )
        status, verdict = await self._spending.admit(
            entry.namespace, spec, status, charge=charge, reserve=decision.launches, now=now
        )
        decision = within_budget(decision, verdict)
        if decision.launches:
            status, decision = await self._launch(
                entry, spec, store, status, decision=decision, charge_key=charge.key, results=results, now=now
            )
        if forced and decision.retrains:
            status = status.override_honoured(forced)
        return status, decision

    async def _follow_job(
        self, entry: PolicyEntry, spec: PolicySpec, status: PolicyStatus, *, now: datetime
    ) -> tuple[PolicyStatus, bool, str | None]:
        """Record the outcome of the active Job if it has ended (and say so); adopt an unrecorded Job after a crash.

        The third value names a Job whose pod is stuck: recorded as failed here, to be deleted once written.
        """
        if not entry.scanned_jobs:
            status = await self._adopt_unrecorded(entry, status, now=now)
            entry.scanned_jobs = True
        active = status.active_job
        if active is None:
            return status, False, None
        job = await self._kube.get_job(entry.namespace, active.name)
        if job is None:
            status, _ = await self._spending.settle(
                entry.ref,
                spec,
                status.job_lost(now=now),
                job=active.name,
                job_body=None,
                started=active.started,
                finished=now,
                now=now,
            )
            await self._event(entry, reason="RetrainFailed", message=f"Job {active.name} disappeared", warning=True)
            return status, True, None
        pods = await self._kube.list_pods(entry.namespace, f"job-name={active.name}")
        outcome = read_outcome(job, pods, now=now, stuck_after=self._stuck_after)
        if not outcome.finished:
            return status, False, None
        stuck = active.name if outcome.stuck else None
        if active.is_rollback:
            moved, message = rollback_result(outcome)
            await self._event(
                entry,
                reason="RolledBack" if moved else "RollbackFailed",
                message=f"Job {active.name}: {message}",
                warning=not moved,
            )
            return status.rollback_finished(outcome, now=now), True, stuck
        record = RetrainRecord.finished(active, outcome, now=now)
        status, seconds = await self._spending.settle(
            entry.ref,
            spec,
            status.training_finished(record, result=outcome.result),
            job=active.name,
            job_body=job,
            started=active.started,
            finished=outcome.finished_at or now,
            now=now,
        )
        status = status.with_history(HistoryEntry.of(record, active, seconds=seconds))
        succeeded = record.outcome == "Succeeded"
        cause = (
            f" ({record.reason}, exit code {record.exit_code})"
            if record.exit_code is not None
            else (f" ({record.reason})" if record.reason else "")
        )
        await self._event(
            entry,
            reason="RetrainSucceeded" if succeeded else "RetrainFailed",
            message=f"Job {active.name}{cause}: {record.message}",
            warning=not succeeded,
        )
        self.telemetry.job(entry.namespace, record.outcome)
        self.telemetry.trained(entry.namespace, record.outcome, seconds)
        return status, True, stuck

    async def _rollback(
        self,
        entry: PolicyEntry,
        spec: PolicySpec,
        store: ModelStoreSpec,
        status: PolicyStatus,
        *,
        version: str,
        now: datetime,
    ) -> tuple[PolicyStatus, Decision]:
        """Launch the Job that points the champion back at ``version`` (the trainer checks it is complete).

        A value that cannot be a version id of the registry layout (``../../etc/passwd``) starts nothing:
        the rollback is recorded as failed with the rule, and the same value never acts again.
        """
        try:
            check_version_id(version)
        except ValueError as exc:
            decision = Decision("Wait", "RollbackFailed", f"{ROLLBACK_ANNOTATION}: {sanitise(exc)}")  # announced
            status = status.rollback_requested(version)
            return status.rollback_not_started(version=version[:63], job="", message=decision.message, now=now), (
                decision
            )
        body = build_job(
            spec,
            policy=entry.ref,
            sequence=status.retrains,
            triggers=["rollback"],
            promote=version,
            trainer_image=self._trainer_image,
            service_account=self._service_account,
            store=store,
            estimator_allowlist=self.estimator_allowlist,
        )
        # A Job by this name is ours, created before a crash: the deterministic name says so.
        launch = await self._create_job(entry, body, trust_name=True)
        decision = rolling_back(version, launch)
        status = status.rollback_requested(version)
        if not launch.running:
            return status.rollback_not_started(
                version=version, job=launch.job, message=decision.message, now=now
            ), decision
        await self._event(entry, reason="RollbackStarted", message=decision.message)
        return status.rollback_started(version=version, job=launch.job, now=now), decision

    async def _adopt_unrecorded(self, entry: PolicyEntry, status: PolicyStatus, *, now: datetime) -> PolicyStatus:
        """A Job created just before a crash has no record in status: find it by its labels and adopt it."""
        if status.active_job is not None:
            return status
        expected = job_name(entry.ref, status.retrains)
        for job in await self._kube.list_jobs(entry.namespace, f"{LABEL_POLICY_UID}={entry.uid}"):
            if job["metadata"]["name"] != expected:
                continue
            annotations = job["metadata"].get("annotations") or {}
            started_at = str(job["metadata"].get("creationTimestamp") or rfc3339(now))
            trigger = str(annotations.get(ANNOTATION_TRIGGER, ""))
            if annotations.get(ANNOTATION_ACTION) == "Promote":
                # A rollback: follow it as one, never charge it, and do not start it again.
                version = str(annotations.get(ANNOTATION_VERSION, ""))
                status = status.job_started(
                    ActiveJob(name=expected, trigger=trigger, started_at=started_at, action="Promote", version=version)
                )
                status = status.rollback_requested(version)
                await self._event(
                    entry,
                    reason="RollbackAdopted",
                    message=f"rollback Job {expected} was created but not recorded; following it",
                )
                continue
            status = status.job_started(ActiveJob(name=expected, trigger=trigger, started_at=started_at))
            if entry.spec is not None:
                status = await self._spending.adopt(
                    entry.ref, entry.spec, status, job=expected, now=parse_rfc3339(started_at) or now
                )
            await self._event(
                entry, reason="RetrainAdopted", message=f"Job {expected} was created but not recorded; following it"
            )
        return status

    async def _create_job(self, entry: PolicyEntry, body: Mapping[str, Any], *, trust_name: bool = False) -> Launch:
        """Create a Job and say what happened; a Job already there is ours if its labels (or ``trust_name``) say so."""
        name = str(body["metadata"]["name"])
        try:
            await self._kube.create_job(entry.namespace, body)
        except AlreadyExists:
            if trust_name:
                return Launch(name, "Adopted")
            existing = await self._kube.get_job(entry.namespace, name)
            labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
            return Launch(name, "Adopted" if labels.get(LABEL_POLICY_UID) == entry.uid else "NameTaken")
        except ApiError as exc:
            return Launch(name, "Failed", str(exc))
        return Launch(name, "Created")

    async def _launch(
        self,
        entry: PolicyEntry,
        spec: PolicySpec,
        store: ModelStoreSpec,
        status: PolicyStatus,
        *,
        decision: Decision,
        charge_key: str,
        results: Sequence[TriggerResult],
        now: datetime,
    ) -> tuple[PolicyStatus, Decision]:
        """Create the training Job; when it cannot run, the reservation made for it is released."""
        body = build_job(
            spec,
            policy=entry.ref,
            sequence=status.retrains,
            triggers=decision.triggers,
            trainer_image=self._trainer_image,
            service_account=self._service_account,
            store=store,
            estimator_allowlist=self.estimator_allowlist,
        )
        try:
            launch = await self._create_job(entry, body)
        except Exception:
            # Unknown whether the Job exists (a timeout, a lost connection): the reservation is released, and
            # if the Job was created after all, the next cycle adopts it and charges it again, once.
            await self._spending.release(entry.namespace, spec, status, key=charge_key, now=now)
            raise
        decision = launched(decision, launch)
        if not launch.running:
            if launch.outcome == "NameTaken":
                await self._event(entry, reason="JobNameTaken", message=decision.message, warning=True)
            return await self._spending.release(entry.namespace, spec, status, key=charge_key, now=now), decision
        baseline, current = accuracy_now(spec, results, status.model_score)
        if baseline is None or current is None:
            baseline = current = None  # the history entry learns from both or from neither
        status = status.job_started(
            ActiveJob(
                name=launch.job,
                trigger=",".join(decision.triggers),
                started_at=rfc3339(now),
                accuracy_before=None if current is None else round(current, 6),
                baseline_before=None if baseline is None else round(baseline, 6),
            )
        )
        await self._event(entry, reason="RetrainStarted", message=decision.message)
        self.telemetry.job(entry.namespace, "Started")
        return status, decision

    async def _trim(self, entry: PolicyEntry, spec: PolicySpec, status: PolicyStatus) -> None:
        jobs = await self._kube.list_jobs(entry.namespace, f"{LABEL_POLICY_UID}={entry.uid}")
        keep = status.last_retrain.job if status.last_retrain is not None else None
        for name in trimmed_jobs(
            jobs, successful=spec.history_limits.successful, failed=spec.history_limits.failed, keep=keep
        ):
            await self._kube.delete_job(entry.namespace, name)
