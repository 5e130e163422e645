"""Reconciliation with fake ports: one cycle at a time with a fixed clock, every write recorded."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from retrain_operator.adapters.kubernetes import FakeKubeClient
from retrain_operator.adapters.prometheus import PrometheusUnreachable, Sample
from retrain_operator.domain.jobs import LABEL_POLICY_UID, PolicyRef, job_name
from retrain_operator.reconcile.engine import Reconciler
from retrain_operator.reconcile.observe import Observer, QuerySource
from retrain_operator.reconcile.scheduler import Endpoints, Scheduler
from retrain_operator.reconcile.telemetry import Telemetry
from tests.policies import STORE_SPEC, policy, store

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class ModelAccuracy:
    """A metric source that knows each model's accuracy and answers the merged queries like Prometheus would."""

    def __init__(
        self, accuracy: Mapping[str, float], *, held: Mapping[str, float] | None = None, error: Exception | None = None
    ) -> None:
        self.accuracy = dict(accuracy)
        self.held = dict(held or accuracy)
        self.error = error
        self.queries: list[str] = []

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        self.queries.append(promql)
        if self.error is not None:
            raise self.error
        models = re.search(r'model=~?"([^"]*)"', promql)
        wanted = set(models.group(1).split("|")) if models else set(self.accuracy)
        values = self.held if promql.startswith("max_over_time") else self.accuracy
        out = []
        for model in sorted(wanted & set(values)):
            value = 10.0 if promql.startswith("count_over_time") else values[model]
            labels = {"model": model}
            if "namespace" in promql:
                labels["namespace"] = "team-a"
            out.append(Sample(labels=labels, value=value, timestamp=at.timestamp()))
        return out


class Harness:
    def __init__(self, source: ModelAccuracy, *, endpoint: dict[str, Any] | None = None) -> None:
        self.kube = FakeKubeClient()
        self.source = source
        self.now = NOW
        self.telemetry = Telemetry()
        endpoints = Endpoints(kube=self.kube, operator_namespace="retrain-system")

        async def source_for(_: str) -> QuerySource:
            return source

        self.scheduler = Scheduler(
            reconciler=Reconciler(
                kube=self.kube,
                trainer_image="img",
                service_account="trainer",
                telemetry=self.telemetry,
                clock=lambda: self.now,
            ),
            endpoints=endpoints,
            clock=lambda: self.now,
            observer=Observer(source_for=source_for, telemetry=self.telemetry),
        )
        self.scheduler.upsert_endpoint("default", endpoint or {"url": "http://prom:9090"})
        self.scheduler.upsert_store("default", STORE_SPEC)

    def add(self, body: dict[str, Any]) -> None:
        self.scheduler.upsert_policy(body)

    async def cycle(self) -> None:
        await self.scheduler.run_cycle(list(self.scheduler.entries))

    def status(self, name: str = "churn", namespace: str = "team-a") -> dict[str, Any]:
        """The policy's status as the API server holds it after the last write."""
        return self.scheduler.entries[(namespace, name)].stored_status

    def finish_job(self, name: str, *, succeeded: bool, result: dict[str, Any]) -> None:
        job = self.kube.jobs[("team-a", name)]
        kind = "Complete" if succeeded else "Failed"
        job["status"] = {
            "completionTime": "2026-11-27T12:01:00Z",
            "conditions": [{"type": kind, "status": "True", "reason": "Done"}],
        }
        self.kube.pods[("team-a", f"{name}-pod")] = {
            "metadata": {"name": f"{name}-pod", "labels": {"job-name": name}},
            "status": {
                "containerStatuses": [
                    {"state": {"terminated": {"finishedAt": "2026-11-27T12:01:00Z", "message": json.dumps(result)}}}
                ]
            },
        }


def named(name: str, uid: str, model: str = "churn", **spec: Any) -> dict[str, Any]:
    body = policy(**spec)
    body["metadata"].update(name=name, uid=uid)
    body["spec"]["metrics"]["selector"] = {"model": model}
    return body


async def test_firing_trigger_launches_exactly_one_job_and_explains_it() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy())
    await h.cycle()
    assert len(h.kube.created_jobs) == 1
    status = h.status()
    assert status["phase"] == "Training"
    assert status["activeJob"]["name"] == h.kube.created_jobs[0]
    assert status["lastDecision"]["action"] == "Retrain" and status["lastDecision"]["reason"] == "TriggerFiring"
    assert "model_accuracy over 5m = 0.8 < 0.85 for at least 5m" in status["lastDecision"]["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["RetrainNeeded"]["status"] == "True" and conditions["Training"]["status"] == "True"
    assert [e["reason"] for e in h.kube.events] == ["RetrainStarted"]
    assert status["triggers"][0] | {"since": None} == {
        "name": "accuracy-drop",
        "type": "accuracyDecay",
        "state": "firing",
        "value": 0.8,
        "threshold": 0.85,
        "since": None,
        "message": status["triggers"][0]["message"],
    }

    writes = len(h.kube.status_writes)
    h.now += timedelta(seconds=30)
    await h.cycle()
    assert len(h.kube.created_jobs) == 1, "a running Job must never get a sibling"
    assert len(h.kube.status_writes) == writes + 1  # TrainingInProgress is a new decision
    h.now += timedelta(seconds=30)
    await h.cycle()
    assert len(h.kube.status_writes) == writes + 1, "nothing changed, nothing written"


async def test_job_outcome_updates_model_and_the_baseline_follows_it() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy())
    await h.cycle()
    name = h.kube.created_jobs[0]
    h.finish_job(
        name,
        succeeded=True,
        result={
            "outcome": "Succeeded",
            "version": "20261127T120100Z-abc",
            "modelUri": "s3://models/churn/versions/v/model.joblib",
            "metric": "accuracy",
            "score": 0.97,
            "trainedAt": "2026-11-27T12:01:00Z",
        },
    )
    h.source.accuracy = h.source.held = {"churn": 0.96}
    h.now += timedelta(minutes=2)
    await h.cycle()
    status = h.status()
    assert "activeJob" not in status
    assert status["lastRetrain"]["outcome"] == "Succeeded" and status["lastRetrain"]["score"] == 0.97
    assert status["model"] == {
        "version": "20261127T120100Z-abc",
        "uri": "s3://models/churn/versions/v/model.joblib",
        "metric": "accuracy",
        "score": 0.97,
        "trainedAt": "2026-11-27T12:01:00Z",
    }
    assert status["triggers"][0]["threshold"] == pytest.approx(0.92)  # 0.97 - 0.05: the new model's score
    assert status["triggers"][0]["state"] == "clear" and status["phase"] == "Watching"
    assert "RetrainSucceeded" in [e["reason"] for e in h.kube.events]
    # Accuracy falls under the new baseline, but the cooldown holds the next retrain back.
    h.source.accuracy = h.source.held = {"churn": 0.90}
    h.now += timedelta(minutes=1)
    await h.cycle()
    assert h.status()["lastDecision"]["reason"] == "CoolingDown" and len(h.kube.created_jobs) == 1


async def test_failed_job_is_reported_and_keeps_the_model() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy())
    await h.cycle()
    h.finish_job(
        h.kube.created_jobs[0],
        succeeded=False,
        result={"outcome": "Failed", "reason": "MissingColumn", "message": "column 'label' is missing"},
    )
    await h.cycle()
    status = h.status()
    assert status["lastRetrain"]["outcome"] == "Failed"
    assert status["lastRetrain"]["message"] == "column 'label' is missing"
    assert "model" not in status
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Training"] == "JobFailed"
    assert "RetrainFailed" in [e["reason"] for e in h.kube.events]


async def test_job_created_before_a_crash_is_adopted_not_duplicated() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    body = policy()
    ref = PolicyRef("team-a", "churn", body["metadata"]["uid"])
    name = job_name(ref, 0)
    h.kube.jobs[("team-a", name)] = {
        "metadata": {"name": name, "labels": {LABEL_POLICY_UID: ref.uid}, "creationTimestamp": "2026-11-27T11:59:00Z"},
        "status": {},
    }
    h.add(body)
    await h.cycle()
    assert h.kube.created_jobs == []
    assert h.status()["activeJob"]["name"] == name and h.status()["retrains"] == 1
    assert "RetrainAdopted" in [e["reason"] for e in h.kube.events]


@pytest.mark.parametrize("error", [PrometheusUnreachable("connection refused")])
async def test_unreachable_prometheus_means_no_job_and_says_why(error: Exception) -> None:
    h = Harness(ModelAccuracy({"churn": 0.5}, error=error))
    h.add(policy())
    await h.cycle()
    assert h.kube.created_jobs == []
    status = h.status()
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["MetricsAvailable"]["status"] == "False"
    assert conditions["MetricsAvailable"]["reason"] == "Unreachable"
    assert status["phase"] == "Degraded" and status["lastDecision"]["reason"] == "MetricsUnavailable"
    assert "value" not in status["triggers"][0], "no value, never 0"
    assert [e["type"] for e in h.kube.events] == ["Warning"]
    # No nulls are written (the API server prunes them), so the next identical cycle writes nothing.
    writes = len(h.kube.status_writes)
    await h.cycle()
    assert len(h.kube.status_writes) == writes, "nothing changed, nothing written"


async def test_no_data_for_a_model_is_inconclusive() -> None:
    h = Harness(ModelAccuracy({"other": 0.5}))
    h.add(policy())
    await h.cycle()
    status = h.status()
    assert h.kube.created_jobs == []
    assert {c["type"]: c["reason"] for c in status["conditions"]}["MetricsAvailable"] == "NoData"
    assert 'no samples of model_accuracy{model="churn"} in the last 5m' in status["triggers"][0]["message"]


async def test_invalid_policy_is_marked_and_others_carry_on() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80, "fraud": 0.80}))
    bad = named("bad", "uid-bad", model="fraud")
    bad["spec"]["triggers"][0]["for"] = "five minutes"
    h.add(bad)
    h.add(policy())
    await h.cycle()
    bad_status = h.status("bad")
    assert bad_status["phase"] == "Invalid"
    valid = {c["type"]: c for c in bad_status["conditions"]}["Valid"]
    assert valid["status"] == "False" and valid["message"].startswith("spec.triggers[0].for: 'five minutes'")
    assert h.status()["phase"] == "Training" and len(h.kube.created_jobs) == 1
    assert [e["reason"] for e in h.kube.events if e["involvedObject"]["name"] == "bad"] == ["InvalidSpec"]
    writes = len(h.kube.status_writes)
    await h.cycle()
    assert [e["reason"] for e in h.kube.events if e["involvedObject"]["name"] == "bad"] == ["InvalidSpec"]
    assert len(h.kube.status_writes) == writes + 1  # only the valid policy's TrainingInProgress


async def test_endpoint_that_does_not_admit_the_namespace() -> None:
    h = Harness(ModelAccuracy({"churn": 0.8}), endpoint={"url": "http://prom", "allowedNamespaces": ["team-b"]})
    h.add(policy())
    await h.cycle()
    assert h.status()["phase"] == "Invalid" and h.kube.created_jobs == [] and h.source.queries == []
    assert "does not admit namespace 'team-a'" in h.status()["lastDecision"]["message"]


async def test_dry_run_records_would_retrain_and_launches_nothing() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy(decision={"dryRun": True}))
    await h.cycle()
    assert h.kube.created_jobs == []
    assert h.status()["lastDecision"]["action"] == "WouldRetrain"
    assert [e["reason"] for e in h.kube.events] == ["DryRun"]


async def test_suspended_policy_evaluates_but_never_launches() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy(suspend=True))
    await h.cycle()
    assert h.kube.created_jobs == [] and h.status()["phase"] == "Suspended"
    assert h.status()["triggers"][0]["state"] == "firing"


@pytest.mark.parametrize(("policies", "templates", "queries"), [(1, 1, 3), (50, 1, 3), (450, 1, 9), (50, 2, 6)])
async def test_queries_grow_with_templates_not_policies(policies: int, templates: int, queries: int) -> None:
    source = ModelAccuracy({f"m{i}": 0.99 for i in range(policies)})
    h = Harness(source)
    for i in range(policies):
        body = named(f"p{i}", f"uid-{i}", model=f"m{i}")
        if i % templates:
            body["spec"]["triggers"][0]["accuracyDecay"]["window"] = "10m"
        h.add(body)
    await h.cycle()
    assert len(source.queries) == queries
    assert all(h.status(f"p{i}")["triggers"][0]["state"] == "clear" for i in range(policies))


async def test_history_limits_trim_finished_jobs() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy(historyLimits={"successful": 1, "failed": 0}, decision={"cooldown": "0s"}))
    await h.cycle()
    for _ in range(3):
        name = h.kube.created_jobs[-1]
        h.kube.jobs[("team-a", name)]["metadata"]["creationTimestamp"] = h.now.isoformat()
        h.finish_job(
            name, succeeded=True, result={"outcome": "Succeeded", "version": name, "score": 0.99, "metric": "accuracy"}
        )
        h.now += timedelta(minutes=1)
        await h.cycle()  # records the outcome, trims, and (still firing, no cooldown) starts the next Job
    created = h.kube.created_jobs
    assert len(created) == 4
    assert sorted(h.kube.jobs) == sorted([("team-a", created[2]), ("team-a", created[3])])
    assert h.kube.deleted_jobs == created[:2]


async def test_tenant_header_and_namespace_label() -> None:
    h = Harness(
        ModelAccuracy({"churn": 0.99}),
        endpoint={"url": "http://prom", "namespaceLabel": "namespace", "tenantHeader": "X-Scope-OrgID"},
    )
    h.add(policy())
    calls: list[Mapping[str, str] | None] = []
    original = h.source.query

    async def spy(promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        calls.append(headers)
        return await original(promql, at=at, headers=headers)

    h.source.query = spy  # type: ignore[method-assign]
    await h.cycle()
    assert all('namespace="team-a"' in q for q in h.source.queries)
    assert calls and all(c == {"X-Scope-OrgID": "team-a"} for c in calls)
    assert h.status()["triggers"][0]["state"] == "clear"


async def test_spec_change_is_noticed_and_status_catches_up() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    body = policy(suspend=True)
    h.add(body)
    await h.cycle()
    changed = copy.deepcopy(h.scheduler.entries[("team-a", "churn")].body)
    changed["spec"]["suspend"] = False
    changed["metadata"]["generation"] = 2
    h.add(changed)
    await h.cycle()
    assert h.status()["observedGeneration"] == 2 and len(h.kube.created_jobs) == 1


async def test_endpoint_credentials_come_from_the_operator_namespace() -> None:
    kube = FakeKubeClient()
    endpoints = Endpoints(kube=kube, operator_namespace="retrain-system")
    kube.endpoints["secured"] = {"spec": {"url": "https://prom:9090", "auth": {"bearerTokenSecret": {"name": "tok"}}}}
    spec = await endpoints.lookup("secured")
    assert spec is not None and spec.bearer_token is not None
    with pytest.raises(Exception, match="secret retrain-system/tok"):
        await endpoints.source("secured")
    kube.secrets[("retrain-system", "tok")] = {"token": "s3cr3t"}
    client = await endpoints.source("secured")
    assert client is await endpoints.source("secured"), "one client per endpoint, reused"
    await endpoints.close()
    assert await endpoints.lookup("absent") is None


async def test_unusable_endpoint_makes_triggers_inconclusive_not_crash() -> None:
    kube = FakeKubeClient()
    endpoints = Endpoints(kube=kube, operator_namespace="retrain-system")
    scheduler = Scheduler(
        reconciler=Reconciler(kube=kube, trainer_image="img", service_account="sa"),
        endpoints=endpoints,
        clock=lambda: NOW,
    )
    scheduler.upsert_endpoint("default", {"url": "http://prom:9090", "auth": {"bearerTokenSecret": {"name": "gone"}}})
    scheduler.upsert_store("default", STORE_SPEC)
    scheduler.upsert_policy(policy())
    await scheduler.run_cycle(list(scheduler.entries))
    status = scheduler.entries[("team-a", "churn")].stored_status
    metrics = {c["type"]: c for c in status["conditions"]}["MetricsAvailable"]
    assert metrics["reason"] == "EndpointUnavailable" and "retrain-system/gone" in metrics["message"]
    assert kube.created_jobs == []


async def test_candidate_not_promoted_keeps_the_champion() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy(decision={"cooldown": "0s"}))
    await h.cycle()
    h.finish_job(
        h.kube.created_jobs[0],
        succeeded=True,
        result={"outcome": "Succeeded", "version": "v1", "score": 0.97, "metric": "accuracy", "promoted": True},
    )
    await h.cycle()
    h.finish_job(
        h.kube.created_jobs[1],
        succeeded=True,
        result={
            "outcome": "Succeeded",
            "version": "v2",
            "score": 0.90,
            "metric": "accuracy",
            "promoted": False,
            "promotionReason": "does not beat champion v1 accuracy 0.97: kept as candidate",
        },
    )
    await h.cycle()
    status = h.status()
    assert status["model"]["version"] == "v1"
    assert status["lastRetrain"]["modelVersion"] == "v2" and status["lastRetrain"]["promoted"] is False
    assert "kept as candidate" in status["lastRetrain"]["promotionReason"]


async def test_rollback_annotation_launches_one_promote_job_and_updates_the_model() -> None:
    h = Harness(ModelAccuracy({"churn": 0.99}))
    body = policy()
    body["metadata"]["annotations"] = {"retrain.dev/rollback-to": "20261101T000000Z-aaaaaaaa"}
    h.add(body)
    await h.cycle()
    [name] = h.kube.created_jobs
    job = h.kube.jobs[("team-a", name)]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["retrain-operator", "train", "promote", "--version", "20261101T000000Z-aaaaaaaa"]
    assert h.status()["lastDecision"]["reason"] == "RollbackInProgress"
    assert h.status()["lastRollback"]["outcome"] == "Running"
    h.finish_job(
        name,
        succeeded=True,
        result={
            "outcome": "Succeeded",
            "action": "Promote",
            "promoted": True,
            "version": "20261101T000000Z-aaaaaaaa",
            "score": 0.93,
            "metric": "accuracy",
            "modelUri": "s3://m/churn/versions/x/model.skops",
        },
    )
    await h.cycle()
    await h.cycle()
    status = h.status()
    assert status["model"]["version"] == "20261101T000000Z-aaaaaaaa"
    assert status["lastRollback"]["outcome"] == "Succeeded"
    assert len(h.kube.created_jobs) == 1, "the same annotation value rolls back once"
    assert "lastRetrain" not in status and "RolledBack" in [e["reason"] for e in h.kube.events]


async def test_images_outside_the_admins_registries_are_invalid() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.scheduler.allowed_images = ("registry.example.com/ml/",)
    custom = {"image": "evil.example.org/miner:1", "command": ["python", "train.py"]}
    h.add(named("custom", "uid-c", training=custom))
    h.add(named("allowed", "uid-a", training=custom | {"image": "registry.example.com/ml/trainer:2"}))
    await h.cycle()
    problem = {c["type"]: c for c in h.status("custom")["conditions"]}["Valid"]["message"]
    assert problem.startswith("spec.training.image: 'evil.example.org/miner:1' is not from an allowed registry")
    assert [j for j in h.kube.created_jobs if j.startswith("allowed")] and not [
        j for j in h.kube.created_jobs if j.startswith("custom")
    ]


async def test_a_status_field_that_goes_away_is_removed() -> None:
    h = Harness(ModelAccuracy({"churn": 0.99}))
    h.add(policy(decision={"limits": {"window": "1h", "runs": 2}}))
    await h.cycle()
    assert "spending" in h.status()
    changed = copy.deepcopy(h.scheduler.entries[("team-a", "churn")].body)
    del changed["spec"]["decision"]["limits"]
    changed["metadata"]["generation"] = 2
    h.add(changed)
    await h.cycle()
    assert "spending" not in h.status()
    assert "spending" in h.kube.status_writes[-1][2] and h.kube.status_writes[-1][2]["spending"] is None


def test_status_changed_notices_a_removed_field() -> None:
    from retrain_operator.domain.status import status_changed

    assert status_changed({"phase": "Watching", "spending": {"used": {}}}, {"phase": "Watching"})
    assert not status_changed({"phase": "Watching"}, {"phase": "Watching"})


async def test_a_training_job_after_a_rollback_is_recorded_as_training() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    body = policy(decision={"cooldown": "1h"})
    body["metadata"]["annotations"] = {"retrain.dev/rollback-to": "v1"}
    h.add(body)
    await h.cycle()
    h.finish_job(
        h.kube.created_jobs[0],
        succeeded=True,
        result={
            "outcome": "Succeeded",
            "action": "Promote",
            "promoted": True,
            "version": "v1",
            "score": 0.9,
            "metric": "accuracy",
        },
    )
    await h.cycle()  # records the rollback and, the trigger still firing, starts a training Job
    active = h.status()["activeJob"]
    assert "action" not in active and "version" not in active, active
    h.finish_job(
        h.kube.created_jobs[1],
        succeeded=True,
        result={"outcome": "Succeeded", "version": "v2", "score": 0.97, "metric": "accuracy", "promoted": True},
    )
    h.now += timedelta(minutes=1)
    await h.cycle()
    status = h.status()
    assert status["lastRetrain"]["modelVersion"] == "v2" and status["model"]["version"] == "v2"
    assert status["lastDecision"]["reason"] == "CoolingDown" and len(h.kube.created_jobs) == 2


async def test_nested_fields_that_go_away_are_removed_and_writes_stop() -> None:
    h = Harness(ModelAccuracy({"churn": 0.70}))
    h.add(policy(decision={"prices": {"cpuHour": 1.0}, "costBenefit": {"valuePerAccuracyPointPerDay": 10.0}}))
    await h.cycle()
    assert "costBenefit" in h.status()["lastDecision"]
    h.now += timedelta(seconds=30)
    await h.cycle()
    assert "costBenefit" not in h.status()["lastDecision"]
    writes = len(h.kube.status_writes)
    for _ in range(3):
        h.now += timedelta(seconds=30)
        await h.cycle()
    assert len(h.kube.status_writes) == writes, "nothing changed, nothing written"


async def test_a_rollback_job_created_before_a_crash_is_followed_as_a_rollback() -> None:
    from retrain_operator.domain.api import parse_policy_spec
    from retrain_operator.domain.jobs import build_job

    h = Harness(ModelAccuracy({"churn": 0.99}))
    h.kube.add_budget("team-a", "team", {"window": "24h", "limits": {"runs": 5}})
    body = policy(decision={"budget": "team"})
    body["metadata"]["annotations"] = {"retrain.dev/rollback-to": "v1"}
    ref = PolicyRef("team-a", "churn", body["metadata"]["uid"])
    job = build_job(
        parse_policy_spec(body["spec"]),
        store=store(),
        policy=ref,
        sequence=0,
        triggers=["rollback"],
        promote="v1",
        trainer_image="img",
        service_account="sa",
    )
    await h.kube.create_job("team-a", job)
    h.kube.created_jobs.clear()
    h.add(body)
    await h.cycle()
    assert h.kube.created_jobs == [], "the rollback must not start a second time"
    assert h.status()["activeJob"]["action"] == "Promote" and h.status()["lastRollbackRequest"] == "v1"
    assert not (h.kube.budgets[("team-a", "team")].get("status") or {}).get("ledger"), "a rollback is not charged"


async def test_one_policys_bad_time_never_blinds_the_others() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80, "volume": 0.99}))
    volume = named(
        "volume",
        "uid-v",
        model="volume",
        triggers=[{"name": "new-data", "dataVolume": {"metric": "labels_total", "minNewSamples": 10}}],
    )
    volume["status"] = {"model": {"version": "v0", "trainedAt": "2026-11-27T11:00:00"}}  # no offset
    h.add(volume)
    h.add(policy())
    await h.cycle()
    assert h.status()["triggers"][0]["state"] == "firing" and len(h.kube.created_jobs) == 1
