"""Reconciliation of one policy: follow its Job, evaluate, decide, act, and write status once.

Everything that decides is in ``domain``; this module only gathers the inputs (the observations,
the Job and its pods), calls the pure functions, performs the one action the decision asks for,
and writes the status it built, only if it differs from the stored one. Events mark changes: a
new decision reason, a Job started, a Job finished, a spec found invalid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retrain_operator.adapters.kubernetes import AlreadyExists, ApiError, KubeClient
from retrain_operator.domain.api import API_VERSION, InvalidSpec, PolicySpec, Problem, parse_policy_spec
from retrain_operator.domain.decision import (
    Decision,
    Launch,
    Requests,
    decide,
    force_to_honour,
    invalid,
    launched,
    rollback_to_start,
    rolling_back,
    within_budget,
)
from retrain_operator.domain.evaluation import accuracy_now, evaluate_triggers
from retrain_operator.domain.jobs import (
    ANNOTATION_ACTION,
    ANNOTATION_VERSION,
    LABEL_POLICY_UID,
    JobOutcome,
    PolicyRef,
    build_job,
    job_name,
    read_outcome,
    trimmed_jobs,
)
from retrain_operator.domain.status import (
    conditions_for,
    conditions_from,
    decision_status,
    merge_conditions,
    phase_for,
    status_changed,
    trigger_status,
    without_nulls,
)
from retrain_operator.domain.times import parse_rfc3339, rfc3339, utcnow
from retrain_operator.domain.triggers import Observation, TriggerResult
from retrain_operator.reconcile import telemetry
from retrain_operator.reconcile.budgets import Accountant
from retrain_operator.reconcile.spending import Spending, record_history

logger = logging.getLogger(__name__)

WARNING_REASONS = frozenset({"MetricsUnavailable", "JobCreateFailed", "InvalidSpec", "JobNameTaken", "OverBudget",
                             "RollbackFailed"})


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
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})

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
    def __init__(self, *, kube: KubeClient, trainer_image: str, service_account: str,
                 on_decision: Callable[[PolicyEntry, Decision], None] | None = None,
                 on_job: Callable[[PolicyEntry, str], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._kube = kube
        self.accountant = Accountant(kube=kube, clock=clock or utcnow)
        self._spending = Spending(accountant=self.accountant)
        self._trainer_image = trainer_image
        self._service_account = service_account
        self._on_decision = on_decision
        self._on_job = on_job

    async def _event(self, entry: PolicyEntry, *, reason: str, message: str, warning: bool = False) -> None:
        involved = {"apiVersion": API_VERSION, "kind": "RetrainPolicy", "metadata": entry.body["metadata"]}
        try:
            await self._kube.create_event(involved=involved, type="Warning" if warning else "Normal",
                                          reason=reason, message=message)
        except Exception as exc:  # an event lost must never stop a reconciliation
            logger.warning("event %s for %s/%s not posted: %s", reason, entry.namespace, entry.name, exc)

    async def reconcile(self, entry: PolicyEntry, *, observations: Mapping[str, Observation],
                        endpoint_problems: Sequence[Problem], now: datetime) -> bool:
        """Bring one policy up to date; return whether its status was written."""
        entry.parse()
        stored = entry.status
        status = dict(stored)
        problems = [str(p) for p in (entry.problems or list(endpoint_problems))]
        if entry.spec is None or problems:
            return await self._write_invalid(entry, problems, stored=stored, now=now)
        spec = entry.spec
        finished_now = await self._follow_job(entry, spec, status, now=now)
        created = parse_rfc3339(entry.body["metadata"].get("creationTimestamp")) or now
        results = evaluate_triggers(spec, observations=observations, status=status, created=created, now=now)
        telemetry.record_triggers(entry.namespace, entry.name, {r.name: (r.value, r.firing) for r in results})
        active = (status.get("activeJob") or {}).get("name")
        last_start = parse_rfc3339((status.get("lastRetrain") or {}).get("startedAt"))
        requests = Requests.from_annotations(entry.body["metadata"].get("annotations") or {})
        forced = force_to_honour(requests, last_override=status.get("lastOverride"))
        rollback = rollback_to_start(requests, last_request=status.get("lastRollbackRequest"), active_job=active,
                                     suspended=spec.suspend)
        if rollback is not None:
            decision = await self._rollback(entry, spec, status, rollback, now=now)
        else:
            gate = await self._spending.gate(entry.namespace, spec, results=results, status=status)
            decision = decide(spec, results=results, active_job=active, last_retrain_start=last_start, now=now,
                              gate=gate, forced=forced)
        if decision.retrains:
            job = job_name(entry.ref, int(status.get("retrains") or 0))
            charge = await self._spending.estimate(entry.namespace, entry.name, spec, status, job=job, now=now)
            verdict = await self._spending.admit(entry.namespace, spec, status, charge=charge,
                                                 reserve=decision.launches, now=now)
            decision = within_budget(decision, verdict)
            if decision.launches:
                decision = await self._launch(entry, spec, status, decision, now=now, charge_key=charge.key,
                                              results=results)
            if forced and decision.retrains:
                status["lastOverride"] = forced
        self._spending.roll(spec, status, now=now)
        if finished_now:
            await self._trim(entry, spec, status)
        previous_decision = stored.get("lastDecision") or {}
        status["lastDecision"] = decision_status(previous_decision, decision, now=now)
        status["triggers"] = trigger_status(results)
        metrics_ok = not any(r.problem for r in results if r.type != "schedule")
        active = (status.get("activeJob") or {}).get("name")
        status["phase"] = phase_for(valid=True, suspended=spec.suspend, active_job=active, metrics_ok=metrics_ok)
        status["conditions"] = [c.to_dict() for c in merge_conditions(
            conditions_from(stored.get("conditions")),
            conditions_for(valid_problems=[], results=results, decision=decision, active_job=active,
                           last_outcome=(status.get("lastRetrain") or {}).get("outcome")),
            generation=entry.generation, now=now)]
        status["observedGeneration"] = entry.generation
        if self._on_decision is not None:
            self._on_decision(entry, decision)
        if previous_decision.get("reason") != decision.reason or decision.launches:
            logger.info("%s/%s: %s (%s): %s", entry.namespace, entry.name, decision.action, decision.reason,
                        decision.message)
        if previous_decision.get("reason") != decision.reason and decision.reason != "TriggerFiring":
            await self._event(entry, reason=decision.reason, message=decision.message,
                              warning=decision.reason in WARNING_REASONS)
        return await self._write(entry, stored, status)

    async def _write(self, entry: PolicyEntry, stored: Mapping[str, Any], status: dict[str, Any]) -> bool:
        status = without_nulls(status)
        if not status_changed(stored, status):
            return False
        patch = merge_diff(stored, status)
        result = await self._kube.patch_policy_status(entry.namespace, entry.name, patch)
        entry.body = {**entry.body, "status": result.get("status", status)}
        version = _version(result)
        if version is not None:
            entry.status_version = version
            entry.body["metadata"] = {**entry.body["metadata"], "resourceVersion": str(version)}
        return True

    async def _write_invalid(self, entry: PolicyEntry, problems: Sequence[str], *, stored: Mapping[str, Any],
                             now: datetime) -> bool:
        status = dict(stored)
        decision = invalid(problems)
        message = decision.message
        previous_decision = stored.get("lastDecision") or {}
        status["lastDecision"] = decision_status(previous_decision, decision, now=now)
        status["phase"] = "Invalid"
        status["triggers"] = []
        status["observedGeneration"] = entry.generation
        status["conditions"] = [c.to_dict() for c in merge_conditions(
            conditions_from(stored.get("conditions")),
            conditions_for(valid_problems=problems, results=[], decision=decision,
                           active_job=(stored.get("activeJob") or {}).get("name"),
                           last_outcome=(stored.get("lastRetrain") or {}).get("outcome")),
            generation=entry.generation, now=now)]
        if previous_decision.get("message") != message or previous_decision.get("reason") != "InvalidSpec":
            await self._event(entry, reason="InvalidSpec", message=message, warning=True)
        if self._on_decision is not None:
            self._on_decision(entry, decision)
        return await self._write(entry, stored, status)

    async def _follow_job(self, entry: PolicyEntry, spec: PolicySpec, status: dict[str, Any], *,
                          now: datetime) -> bool:
        """Record the outcome of the active Job if it has ended; adopt an unrecorded Job after a crash."""
        if not entry.scanned_jobs:
            await self._adopt_unrecorded(entry, status)
            entry.scanned_jobs = True
        active = status.get("activeJob") or {}
        name = active.get("name")
        if not name:
            return False
        job = await self._kube.get_job(entry.namespace, name)
        if job is None:
            status["lastRetrain"] = {
                "job": name, "trigger": active.get("trigger", ""), "startedAt": active.get("startedAt"),
                "finishedAt": rfc3339(now), "outcome": "Failed",
                "message": "the Job disappeared before it finished (deleted?)",
            }
            status.pop("activeJob", None)
            await self._spending.settle(entry.namespace, entry.name, spec, status, job=name, job_body=None,
                                        started=parse_rfc3339(active.get("startedAt")), finished=now, now=now)
            await self._event(entry, reason="RetrainFailed", message=f"Job {name} disappeared", warning=True)
            return True
        pods = await self._kube.list_pods(entry.namespace, f"job-name={name}")
        outcome = read_outcome(job, pods)
        if not outcome.finished:
            return False
        if active.get("action") == "Promote":
            await self._finish_rollback(entry, status, active, outcome, now=now)
            return True
        result = outcome.result
        record: dict[str, Any] = {
            "job": name, "trigger": active.get("trigger", ""), "startedAt": active.get("startedAt"),
            "finishedAt": rfc3339(outcome.finished_at or now),
            "outcome": "Succeeded" if outcome.succeeded else "Failed",
            "message": outcome.message[:512] or ("model trained" if outcome.succeeded else "failed"),
        }
        if outcome.succeeded and result.get("version"):
            record["modelVersion"] = str(result["version"])
            if isinstance(result.get("score"), int | float):
                record["score"] = float(result["score"])
            # A trainer without a promotion gate (a custom image) promotes what it reports.
            promoted = bool(result.get("promoted", True))
            record["promoted"] = promoted
            if result.get("promotionReason"):
                record["promotionReason"] = str(result["promotionReason"])[:512]
            if promoted:
                status["model"] = model_record(result, finished=record["finishedAt"])
            if not record["message"] or record["message"] == "training Job completed":
                verb = "trained and promoted" if promoted else "trained, kept as a candidate"
                record["message"] = (f"model {result['version']} {verb}, {result.get('metric', 'score')} "
                                     f"{result.get('score')}")
        status["lastRetrain"] = record
        seconds = await self._spending.settle(
            entry.namespace, entry.name, spec, status, job=name, job_body=job,
            started=parse_rfc3339(active.get("startedAt")), finished=outcome.finished_at or now, now=now)
        record_history(status, {
            "job": name, "durationSeconds": round(seconds, 1), "outcome": record["outcome"],
            **{k: active[k] for k in ("accuracyBefore", "baselineBefore") if k in active},
            **({"scoreAfter": record["score"]} if "score" in record else {}),
        })
        status.pop("activeJob", None)
        if outcome.succeeded:
            await self._event(entry, reason="RetrainSucceeded", message=f"Job {name}: {record['message']}")
        else:
            await self._event(entry, reason="RetrainFailed", message=f"Job {name}: {record['message']}", warning=True)
        if self._on_job is not None:
            self._on_job(entry, record["outcome"])
        return True

    async def _finish_rollback(self, entry: PolicyEntry, status: dict[str, Any], active: Mapping[str, Any],
                               outcome: JobOutcome, *, now: datetime) -> None:
        name, version = str(active["name"]), str(active.get("version", ""))
        finished = rfc3339(outcome.finished_at or now)
        if outcome.succeeded and outcome.result.get("version"):
            status["model"] = model_record(outcome.result, finished=finished)
            message = f"champion is now {outcome.result['version']}"
            await self._event(entry, reason="RolledBack", message=f"Job {name}: {message}")
        else:
            message = outcome.message or "the promote Job failed"
            await self._event(entry, reason="RollbackFailed", message=f"Job {name}: {message}", warning=True)
        status["lastRollback"] = {"version": version, "job": name, "finishedAt": finished, "message": message[:512],
                                  "outcome": "Succeeded" if outcome.succeeded else "Failed"}
        status.pop("activeJob", None)

    async def _rollback(self, entry: PolicyEntry, spec: PolicySpec, status: dict[str, Any], version: str, *,
                        now: datetime) -> Decision:
        """Launch the Job that points the champion back at ``version`` (the trainer checks it is complete)."""
        sequence = int(status.get("retrains") or 0)
        body = build_job(spec, policy=entry.ref, sequence=sequence, triggers=["rollback"], promote=version,
                         trainer_image=self._trainer_image, service_account=self._service_account)
        # A Job by this name is ours, created before a crash: the deterministic name says so.
        launch = await self._create_job(entry, body, trust_name=True)
        decision = rolling_back(version, launch)
        name = launch.job
        status["lastRollbackRequest"] = version
        if not launch.running:
            status["lastRollback"] = {"version": version, "job": name, "outcome": "Failed",
                                      "message": decision.message[:512], "finishedAt": rfc3339(now)}
            return decision
        status["activeJob"] = {"name": name, "trigger": "rollback", "action": "Promote", "version": version,
                               "startedAt": rfc3339(now)}
        status["retrains"] = sequence + 1
        status["lastRollback"] = {"version": version, "job": name, "outcome": "Running",
                                  "message": f"moving the champion to {version}"}
        await self._event(entry, reason="RollbackStarted", message=decision.message)
        return decision

    async def _adopt_unrecorded(self, entry: PolicyEntry, status: dict[str, Any]) -> None:
        """A Job created just before a crash has no record in status: find it by its labels and adopt it."""
        if (status.get("activeJob") or {}).get("name"):
            return
        sequence = int(status.get("retrains") or 0)
        expected = job_name(entry.ref, sequence)
        jobs = await self._kube.list_jobs(entry.namespace, f"{LABEL_POLICY_UID}={entry.uid}")
        for job in jobs:
            if job["metadata"]["name"] == expected:
                annotations = job["metadata"].get("annotations") or {}
                status["activeJob"] = {
                    "name": expected, "trigger": annotations.get("retrain.dev/trigger", ""),
                    "startedAt": job["metadata"].get("creationTimestamp") or rfc3339(utcnow()),
                }
                status["retrains"] = sequence + 1
                if annotations.get(ANNOTATION_ACTION) == "Promote":
                    # A rollback: follow it as one, never charge it, and do not start it again.
                    version = annotations.get(ANNOTATION_VERSION, "")
                    status["activeJob"].update(action="Promote", version=version)
                    status["lastRollbackRequest"] = version
                    await self._event(entry, reason="RollbackAdopted",
                                      message=f"rollback Job {expected} was created but not recorded; following it")
                    continue
                if entry.spec is not None:
                    await self._spending.adopt(entry.namespace, entry.name, entry.spec, status, job=expected,
                                               now=parse_rfc3339(status["activeJob"]["startedAt"]) or utcnow())
                await self._event(entry, reason="RetrainAdopted",
                                  message=f"Job {expected} was created but not recorded; following it")

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

    async def _launch(self, entry: PolicyEntry, spec: PolicySpec, status: dict[str, Any], decision: Decision, *,
                      now: datetime, charge_key: str, results: Sequence[TriggerResult]) -> Decision:
        """Create the training Job; when it cannot run, the reservation made for it is released."""
        sequence = int(status.get("retrains") or 0)
        body = build_job(spec, policy=entry.ref, sequence=sequence, triggers=decision.triggers,
                         trainer_image=self._trainer_image, service_account=self._service_account)
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
            await self._spending.release(entry.namespace, spec, status, key=charge_key, now=now)
            return decision
        status["activeJob"] = {"name": launch.job, "trigger": ",".join(decision.triggers), "startedAt": rfc3339(now)}
        model_score = (status.get("model") or {}).get("score")
        baseline, current = accuracy_now(spec, results, float(model_score) if model_score is not None else None)
        if baseline is not None and current is not None:
            status["activeJob"].update(accuracyBefore=round(current, 6), baselineBefore=round(baseline, 6))
        status["retrains"] = sequence + 1
        await self._event(entry, reason="RetrainStarted", message=decision.message)
        if self._on_job is not None:
            self._on_job(entry, "Started")
        return decision

    async def _trim(self, entry: PolicyEntry, spec: PolicySpec, status: Mapping[str, Any]) -> None:
        jobs = await self._kube.list_jobs(entry.namespace, f"{LABEL_POLICY_UID}={entry.uid}")
        keep = (status.get("lastRetrain") or {}).get("job")
        for name in trimmed_jobs(jobs, successful=spec.history_limits.successful, failed=spec.history_limits.failed,
                                 keep=keep):
            await self._kube.delete_job(entry.namespace, name)


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``old`` into ``new``.

    A merge patch keeps whatever it does not name, at every depth: a key that went away, even inside a
    nested object such as activeJob or model, must be named with null, or the stored object keeps it.
    """
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_diff(before, value)
        else:
            patch[key] = value
    return patch


def model_record(result: Mapping[str, Any], *, finished: str) -> dict[str, Any]:
    """status.model from a trainer's result: the champion now serving."""
    return {
        "version": str(result["version"]), "uri": str(result.get("modelUri", "")),
        "metric": str(result.get("metric", "")),
        **({"score": float(result["score"])} if isinstance(result.get("score"), int | float) else {}),
        "trainedAt": str(result.get("trainedAt") or finished),
        **({"rows": int(result["rows"])} if isinstance(result.get("rows"), int) else {}),
        **({"reference": result["reference"]} if isinstance(result.get("reference"), Mapping) else {}),
    }
