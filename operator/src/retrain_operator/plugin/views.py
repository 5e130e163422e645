"""What the plugin shows, as pure functions of the objects it read and ``now``: no API, no clock of its own.

Everything comes from what the operator already wrote: ``status`` read through the operator's own typed
value (:class:`PolicyStatus`), so the plugin and the operator cannot disagree on a field, plus the
RetrainBudget's status, the training Jobs' annotations and, where readable, the registry's metadata.
Each view is first a plain structure (what ``-o json|yaml`` prints) and then text for people: the
``why`` explanation in sentences, ``list`` and ``history`` as kubectl-like tables. Numbers are rounded
to four significant digits; times are RFC 3339 with a relative age.

Limits: status holds no time of the next evaluation (the scheduler keeps due times in memory, and
writing one would be a status write per cycle), so ``list`` gives the interval the next one comes within.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retrain_operator.domain.budget_status import BudgetStatus, SpendingStatus
from retrain_operator.domain.decision import FORCE_ANNOTATION, ROLLBACK_ANNOTATION
from retrain_operator.domain.jobs import ANNOTATION_ACTION, ANNOTATION_TRIGGER
from retrain_operator.domain.numbers import number
from retrain_operator.domain.policy_status import PolicyStatus, TriggerRecord
from retrain_operator.domain.times import parse_rfc3339
from retrain_operator.settings.durations import DurationError, format_duration, parse_duration


def num(value: float | None) -> str:
    """A number as people read it: four significant digits, no float noise; ``-`` for none."""
    return "-" if value is None else number(value)


def age(stamp: str | None, *, now: datetime) -> str:
    """How long ago ``stamp`` was, kubectl-style (``45s``, ``12m``, ``3h``, ``2d``); ``-`` for none."""
    at = parse_rfc3339(stamp)
    if at is None:
        return "-"
    seconds = max(0.0, (now - at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _when(stamp: str | None, *, now: datetime) -> str:
    return f"{stamp} ({age(stamp, now=now)} ago)" if stamp else "an unknown time"


def _duration(text: Any, default: float) -> float:
    try:
        return parse_duration(str(text)) if text else default
    except DurationError:
        return default


def _meta(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = policy.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _spec(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = policy.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


# What the registry says (read by ``plugin.registry``).


@dataclass(frozen=True)
class VersionInfo:
    """One complete version as its metadata describes it, and whether a training made it champion."""

    version: str
    job: str | None = None
    trigger: str | None = None
    trained_at: str | None = None
    duration_seconds: float | None = None
    metric: str | None = None
    score: float | None = None
    gate_passed: bool | None = None
    gate_reason: str | None = None
    promoted: bool | None = None
    policy_uid: str | None = None


@dataclass(frozen=True)
class RegistryView:
    """The registry as read, or why it could not be (``problem``)."""

    location: str = ""
    versions: Mapping[str, VersionInfo] = field(default_factory=dict)
    champion: str | None = None
    problem: str | None = None

    def by_job(self, policy_uid: str | None = None) -> dict[str, VersionInfo]:
        """The versions training Jobs wrote, by Job; with ``policy_uid`` only that policy's (prefixes may be shared)."""
        return {
            v.job: v
            for v in self.versions.values()
            if v.job and (policy_uid is None or v.policy_uid in (None, policy_uid))
        }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def version_info(version: str, metadata: Mapping[str, Any], *, promoted: set[str]) -> VersionInfo:
    """A version from its ``metadata.json``; ``promoted`` holds the versions a training moved the pointer to."""
    run, promotion = _section(metadata, "run"), _section(metadata, "promotion")
    gate = _section(promotion, "gate")
    passed = gate.get("passed")
    return VersionInfo(
        version=version,
        job=run.get("job") if isinstance(run.get("job"), str) else None,
        trigger=run.get("trigger") if isinstance(run.get("trigger"), str) else None,
        trained_at=metadata.get("trainedAt") if isinstance(metadata.get("trainedAt"), str) else None,
        duration_seconds=_number(metadata.get("durationSeconds")),
        metric=metadata.get("metric") if isinstance(metadata.get("metric"), str) else None,
        score=_number(metadata.get("score")),
        gate_passed=passed if isinstance(passed, bool) else None,
        gate_reason=gate.get("reason") if isinstance(gate.get("reason"), str) else None,
        promoted=version in promoted,
        policy_uid=run.get("policyUid") if isinstance(run.get("policyUid"), str) else None,
    )


def status_of(policy: Mapping[str, Any]) -> PolicyStatus:
    return PolicyStatus.from_dict(policy.get("status"))


# list


def next_evaluation(policy: Mapping[str, Any], status: PolicyStatus) -> str:
    """When the next evaluation comes, as far as status can say (see the module's limits)."""
    interval = format_duration(_duration(_section(_spec(policy), "evaluation").get("interval"), 60.0))
    if status.phase == "Invalid":
        return "after a spec change"
    if status.active_job is not None:
        return f"when Job {status.active_job.name} ends, or within {interval}"
    if status.phase is None:
        return "pending first evaluation"
    return f"within {interval}"


def summary(policy: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """One row of ``list``."""
    meta, spec, status = _meta(policy), _spec(policy), status_of(policy)
    decision = status.last_decision
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "model": _section(spec, "model").get("name"),
        "phase": status.phase or ("Suspended" if spec.get("suspend") else "Pending"),
        "suspended": bool(spec.get("suspend")),
        "lastDecision": None
        if decision is None
        else {"action": decision.action, "reason": decision.reason, "since": decision.time or None},
        "modelVersion": status.model.version if status.model else None,
        "nextEvaluation": next_evaluation(policy, status),
    }


def _decision_cell(decision: Mapping[str, Any]) -> str:
    """``Wait (CoolingDown)``; a decision to do nothing by its reason alone (``Suspended``, ``NoTriggerFiring``)."""
    if not decision:
        return "-"
    if decision.get("action") == "None":
        return str(decision.get("reason"))
    return f"{decision.get('action')} ({decision.get('reason')})"


def list_table(rows: Sequence[Mapping[str, Any]], *, all_namespaces: bool, now: datetime) -> str:
    headers = ["NAME", "MODEL", "PHASE", "LAST DECISION", "SINCE", "MODEL VERSION", "NEXT EVALUATION"]
    body = []
    for row in rows:
        decision = row.get("lastDecision") or {}
        cells = [
            str(row.get("name") or ""),
            str(row.get("model") or "-"),
            str(row.get("phase") or "-"),
            _decision_cell(decision),
            age(decision.get("since"), now=now),
            str(row.get("modelVersion") or "-"),
            str(row.get("nextEvaluation") or "-"),
        ]
        body.append([str(row.get("namespace") or ""), *cells] if all_namespaces else cells)
    return table(["NAMESPACE", *headers] if all_namespaces else headers, body)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, three spaces apart, as kubectl prints them."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=False))
        for line in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


# why


def _trigger(record: TriggerRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": record.name,
        "type": record.type,
        "state": record.state,
        "value": record.value,
        "threshold": record.threshold,
        "since": record.since,
        "message": record.message,
    }
    if record.features:
        out["features"] = [{"name": f.name, "value": f.value} for f in record.features]
    if record.learned_threshold:
        out["learnedThreshold"] = dict(record.learned_threshold)
    return out


def _spending(spending: SpendingStatus | None, limits: Mapping[str, Any]) -> dict[str, Any] | None:
    if spending is None:
        return None
    return {
        "windowStart": spending.window_start,
        "windowEnd": spending.window_end,
        "limits": {k: limits[k] for k in ("runs", "cpuHours", "gpuHours", "cost") if k in limits},
        "used": spending.used.to_dict(),
        "remaining": spending.remaining.to_dict(),
    }


def explain(policy: Mapping[str, Any], *, budget: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """Everything ``why`` says, as a structure: the decision, every trigger, cooldown, budgets, cost-benefit."""
    meta, spec, status = _meta(policy), _spec(policy), status_of(policy)
    decision_spec = _section(spec, "decision")
    decision = status.last_decision
    cooldown = _duration(decision_spec.get("cooldown"), 3600.0)
    # The cooldown counts from the last training's start (a running rollback trains nothing).
    training = status.active_job if status.active_job and not status.active_job.is_rollback else None
    started = training.started_at if training else None
    started = started or (status.last_retrain.started_at if status.last_retrain else None)
    started_at = parse_rfc3339(started)
    remaining = None
    if started_at is not None:
        remaining = max(0.0, cooldown - (now - started_at).total_seconds())
    budget_name = decision_spec.get("budget")
    budget_view: dict[str, Any] | None = None
    if isinstance(budget_name, str):
        budget_view = {"name": budget_name, "found": budget is not None}
        if budget is not None:
            budget_status = BudgetStatus.from_dict(budget.get("status"))
            budget_view["spending"] = _spending(budget_status.spending, _section(_spec(budget), "limits"))
            budget_view["exhausted"] = next(
                (c.message for c in budget_status.conditions if c.type == "Exhausted" and c.status == "True"), None
            )
            budget_view["problem"] = budget_status.problem()
    gate_spec = _section(decision_spec, "costBenefit")
    numbers = decision.cost_benefit if decision else None
    annotations = _section(meta, "annotations")
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "model": _section(spec, "model").get("name"),
        "phase": status.phase,
        "suspended": bool(spec.get("suspend")),
        "dryRun": bool(decision_spec.get("dryRun")),
        "observedGeneration": status.observed_generation,
        "generation": meta.get("generation"),
        "decision": None
        if decision is None
        else {
            "action": decision.action,
            "reason": decision.reason,
            "since": decision.time,
            "message": decision.message,
        },
        "triggers": [_trigger(t) for t in status.triggers or ()],
        "conditions": [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message} for c in status.conditions
        ],
        "cooldown": {
            "seconds": cooldown,
            "lastRetrainStartedAt": started,
            "remainingSeconds": remaining,
        },
        "activeJob": status.active_job.to_dict() if status.active_job else None,
        "budget": budget_view,
        "policyLimits": _spending(status.spending, _section(decision_spec, "limits")),
        "costBenefit": None
        if not gate_spec
        else {
            "minNetBenefit": gate_spec.get("minNetBenefit", 0),
            "valuePerAccuracyPointPerDay": gate_spec.get("valuePerAccuracyPointPerDay"),
            "horizon": gate_spec.get("horizon"),
            "lastAssessment": numbers.to_dict() if numbers else None,
        },
        "champion": status.model.to_dict() if status.model else None,
        "requests": {
            "forceRetrain": annotations.get(FORCE_ANNOTATION),
            "lastForceHonoured": status.last_override,
            "rollbackTo": annotations.get(ROLLBACK_ANNOTATION),
            "lastRollbackRequest": status.last_rollback_request,
        },
    }


def _trigger_text(t: Mapping[str, Any], *, now: datetime) -> list[str]:
    state = str(t.get("state") or "unknown")
    since = f" since {_when(t.get('since'), now=now)}" if t.get("since") and state in ("firing", "pending") else ""
    numbers = f"value {num(t.get('value'))}, threshold {num(t.get('threshold'))}"
    lines = [f"  {t.get('name')} ({t.get('type')}) is {state}{since}: {numbers}"]
    if t.get("message"):
        lines.append(f"    {t['message']}")
    features = t.get("features") or []
    if features:
        shown = ", ".join(f"{f['name']} {num(f['value'])}" for f in features)
        lines.append(f"    most drifted features: {shown}")
    return lines


def _usage_text(spending: Mapping[str, Any]) -> str:
    limits, used, left = spending.get("limits") or {}, spending.get("used") or {}, spending.get("remaining") or {}
    names = {"runs": "runs", "cpuHours": "CPU-hours", "gpuHours": "GPU-hours", "cost": "cost"}
    parts = [
        f"{names[k]} {num(used.get(k, 0))} of {num(limits[k])} ({num(left.get(k))} left)" for k in names if k in limits
    ]
    window = f"in the window {spending.get('windowStart')} to {spending.get('windowEnd')}"
    return f"{', '.join(parts) or 'no limits'} {window}"


def explain_text(view: Mapping[str, Any], *, now: datetime) -> str:
    """``why`` in words: what was decided and since when, then every number behind it."""
    phase = view.get("phase") or "not yet evaluated"
    lines = [f"RetrainPolicy {view['namespace']}/{view['name']} (model {view.get('model') or '-'}) is {phase}."]
    decision = view.get("decision")
    if decision is None:
        lines.append(
            "No decision yet: the operator has not evaluated this policy (is it running and watching this namespace?)."
        )
    else:
        lines.append(
            f"Decision: {decision['action']} ({decision['reason']}) since {_when(decision.get('since'), now=now)}."
        )
        lines.append(f"  {decision['message']}")
    generation, observed = view.get("generation"), view.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        lines.append(f"  (status describes generation {observed}; the spec is at {generation} and not evaluated yet)")
    if view.get("suspended"):
        lines.append("Suspended: spec.suspend is true; no retrain starts until `kubectl retrain resume`.")
    if view.get("dryRun"):
        lines.append("Dry run: a retrain is only recorded as WouldRetrain, never launched.")

    triggers = view.get("triggers") or []
    firing = sum(1 for t in triggers if t.get("state") == "firing")
    lines.append("")
    lines.append(f"Triggers ({firing} of {len(triggers)} firing):" if triggers else "Triggers: none evaluated yet.")
    for t in triggers:
        lines.extend(_trigger_text(t, now=now))

    lines.append("")
    cooldown = view["cooldown"]
    length = format_duration(cooldown["seconds"])
    if cooldown.get("lastRetrainStartedAt") is None:
        lines.append(f"Cooldown: {length} between retrain starts; no retrain has started yet, so none applies.")
    else:
        last = _when(cooldown["lastRetrainStartedAt"], now=now)
        left = cooldown.get("remainingSeconds")
        ends = f"so it ends in {format_duration(left)}" if left else "so it is over"
        lines.append(f"Cooldown: {length} between retrain starts; the last started {last}, {ends}.")
    active = view.get("activeJob")
    if active:
        what = active.get("trigger") or active.get("action")
        lines.append(f"Running: Job {active.get('name')} ({what}) since {_when(active.get('startedAt'), now=now)}.")

    budget = view.get("budget")
    if budget is None:
        lines.append("Budget: none (spec.decision.budget names no RetrainBudget).")
    elif not budget.get("found"):
        lines.append(
            f"Budget: RetrainBudget {budget['name']} does not exist or is not readable; retrains wait until it does."
        )
    else:
        spending = budget.get("spending")
        text = _usage_text(spending) if spending else "no spending recorded yet"
        state = f"; exhausted ({budget['exhausted']})" if budget.get("exhausted") else ""
        problem = f"; invalid: {budget['problem']}" if budget.get("problem") else ""
        lines.append(f"Budget: RetrainBudget {budget['name']}: {text}{state}{problem}.")
    limits = view.get("policyLimits")
    if limits:
        lines.append(f"Policy limits: {_usage_text(limits)}.")

    gate = view.get("costBenefit")
    if gate is None:
        lines.append("Cost-benefit: no gate (spec.decision.costBenefit is not set).")
    else:
        numbers = gate.get("lastAssessment")
        minimum = num(gate.get("minNetBenefit"))
        if numbers is None:
            lines.append(f"Cost-benefit: gate set (minimum net benefit {minimum}); no assessment in the last decision.")
        else:
            verdict = "worth it" if numbers["net"] > float(gate.get("minNetBenefit") or 0) else "not worth it"
            drop = numbers.get("accuracyDrop")
            drop_text = f"accuracy drop {num(drop * 100)} points" if drop is not None else "no accuracy drop to value"
            lines.append(
                f"Cost-benefit: {verdict}: expected benefit {num(numbers['expectedBenefit'])} vs expected cost "
                f"{num(numbers['expectedCost'])}, net {num(numbers['net'])} (minimum {minimum}); "
                f"{drop_text}, {num(numbers['recoveryShare'] * 100)}% of it recovered by a retrain, "
                f"expected duration {format_duration(numbers['expectedDurationSeconds'])}."
            )
    requests = view.get("requests") or {}
    force, honoured = requests.get("forceRetrain"), requests.get("lastForceHonoured")
    if force and force != honoured:
        lines.append(f"Force: {FORCE_ANNOTATION}={force!r} is waiting for the next evaluation.")
    rollback, done = requests.get("rollbackTo"), requests.get("lastRollbackRequest")
    if rollback and rollback != done:
        lines.append(f"Rollback: {ROLLBACK_ANNOTATION}={rollback!r} is waiting for the next evaluation.")
    model = view.get("champion")
    if model:
        lines.append(
            f"Model: {model.get('version')} ({model.get('metric') or 'score'} {num(model.get('score'))}), "
            f"trained {_when(model.get('trainedAt'), now=now)}."
        )
    return "\n".join(lines)


# history


def history(
    policy: Mapping[str, Any],
    *,
    jobs: Sequence[Mapping[str, Any]],
    ledgers: Sequence[Mapping[str, Any]],
    registry: RegistryView | None,
    now: datetime,
) -> dict[str, Any]:
    """Every retrain the objects remember, oldest first, merged by Job name.

    ``ledgers`` are the spending statuses that may hold this policy's charges (its own, its budget's);
    a charge is keyed ``namespace/job``, so a cost is matched to its run exactly.
    """
    meta, status = _meta(policy), status_of(policy)
    namespace = str(meta.get("namespace") or "")
    rows: dict[str, dict[str, Any]] = {}

    def row(job: str) -> dict[str, Any]:
        return rows.setdefault(job, {"job": job})

    for entry in status.history:
        if entry.job:
            r = row(entry.job)
            r.update(outcome=entry.outcome, durationSeconds=entry.duration_seconds, score=entry.score_after)
    for job_object in jobs:
        job_meta = _meta(job_object)
        annotations = _section(job_meta, "annotations")
        if annotations.get(ANNOTATION_ACTION) == "Promote":
            continue
        name = str(job_meta.get("name") or "")
        job_status = _section(job_object, "status")
        r = row(name)
        r.setdefault("trigger", annotations.get(ANNOTATION_TRIGGER))
        r.setdefault("startedAt", job_status.get("startTime") or job_meta.get("creationTimestamp"))
        if job_status.get("completionTime"):
            r.setdefault("finishedAt", job_status.get("completionTime"))
        if job_status.get("succeeded"):
            r.setdefault("outcome", "Succeeded")
        elif job_status.get("failed") and any(
            c.get("type") == "Failed" and c.get("status") == "True" for c in job_status.get("conditions") or []
        ):
            r.setdefault("outcome", "Failed")
    last = status.last_retrain
    if last is not None:
        r = row(last.job)
        r.update(
            trigger=last.trigger or r.get("trigger"),
            startedAt=last.started_at or r.get("startedAt"),
            finishedAt=last.finished_at or r.get("finishedAt"),
            outcome=last.outcome,
            modelVersion=last.model_version,
            score=last.score if last.score is not None else r.get("score"),
            promoted=last.promoted,
            message=last.message,
        )
    active = status.active_job
    if active is not None and not active.is_rollback:
        row(active.name).update(trigger=active.trigger, startedAt=active.started_at, outcome="Running")
    if registry is not None:
        for job_name, info in registry.by_job(str(meta.get("uid") or "") or None).items():
            r = row(job_name)
            r.setdefault("trigger", info.trigger)
            r["modelVersion"] = r.get("modelVersion") or info.version
            if r.get("promoted") is None:
                r["promoted"] = info.promoted
            if r.get("score") is None:
                r["score"] = info.score
            if r.get("durationSeconds") is None and info.duration_seconds is not None:
                r["durationSeconds"] = round(info.duration_seconds, 1)
            r.setdefault("startedAt", None)
            r.setdefault("finishedAt", info.trained_at)
            r.setdefault("outcome", "Succeeded")
    for ledger in ledgers:
        for charge in ledger.get("ledger") or []:
            key = str(charge.get("key") or "")
            prefix = f"{namespace}/"
            if key.startswith(prefix) and key[len(prefix) :] in rows:
                r = rows[key[len(prefix) :]]
                r["cost"] = charge.get("cost")
                r["costState"] = charge.get("state")
    for r in rows.values():
        if r.get("durationSeconds") is None:
            start, end = parse_rfc3339(r.get("startedAt")), parse_rfc3339(r.get("finishedAt"))
            if start is not None and end is not None:
                r["durationSeconds"] = round((end - start).total_seconds(), 1)
    ordered = sorted(rows.values(), key=lambda r: str(r.get("startedAt") or r.get("finishedAt") or ""))
    rollback = status.last_rollback
    return {
        "namespace": namespace,
        "name": meta.get("name"),
        "retrains": [{k: v for k, v in r.items() if v is not None} for r in ordered],
        "champion": status.model.version if status.model else None,
        "lastRollback": rollback.to_dict() if rollback else None,
        "registry": None
        if registry is None
        else {"location": registry.location, "problem": registry.problem, "champion": registry.champion},
    }


def history_text(view: Mapping[str, Any], *, now: datetime) -> str:
    headers = ["JOB", "STARTED", "TRIGGER", "DURATION", "OUTCOME", "COST", "VERSION", "PROMOTED"]
    body = []
    for r in view.get("retrains") or []:
        promoted = r.get("promoted")
        cost = num(r.get("cost")) + (" (reserved)" if r.get("costState") == "Reserved" else "") if "cost" in r else "-"
        body.append(
            [
                str(r["job"]),
                age(r.get("startedAt"), now=now) + " ago" if r.get("startedAt") else "-",
                str(r.get("trigger") or "-"),
                format_duration(r["durationSeconds"]) if r.get("durationSeconds") is not None else "-",
                str(r.get("outcome") or "-"),
                cost,
                str(r.get("modelVersion") or "-"),
                "-" if promoted is None else ("yes" if promoted else "no"),
            ]
        )
    lines = [table(headers, body) if body else f"No retrains recorded for {view['namespace']}/{view['name']}."]
    lines.append(f"Champion: {view.get('champion') or 'none yet'}.")
    rollback = view.get("lastRollback")
    if rollback:
        lines.append(
            f"Last rollback: to {rollback.get('version')}, {rollback.get('outcome')}: {rollback.get('message')}."
        )
    registry = view.get("registry")
    if registry and registry.get("problem"):
        lines.append(f"Registry {registry.get('location')} not read: {registry['problem']}.")
    elif registry:
        lines.append(f"Registry: {registry.get('location')} (champion pointer: {registry.get('champion') or 'none'}).")
    return "\n".join(lines)
