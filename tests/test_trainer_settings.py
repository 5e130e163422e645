"""The built-in trainer's settings round-trip: what the operator parsed from a policy is what the trainer reads.

The operator writes the settings into the training Job's ``RETRAIN_TRAINER_CONFIG``; the trainer parses
them back with its own entry point. Both use the one model in ``retrain_operator.settings``, and these
tests hold every example policy and every test policy with the built-in trainer to equality of the
typed values, so a field that one side drops or reads differently fails here, not in a Job.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrain_operator.domain.api import PolicySpec, parse_policy_spec
from retrain_operator.domain.jobs import PolicyRef, build_job
from retrain_operator.settings.training import RunSpec
from retrain_operator.trainer.config import load_config, load_registry_config
from retrain_operator.trainer.main import CONFIG_ENV
from tests.policies import BASE, EVERY_TRAINER_SETTING, store

ROOT = Path(__file__).resolve().parents[1]
REF = PolicyRef(namespace="team-a", name="churn", uid="0b6c5f0e-1111-2222-3333-444455556666")


def _policies_with_the_builtin_trainer() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "RetrainPolicy" and "builtin" in doc["spec"]["training"]:
                found.append((f"examples/{path.name}:{doc['metadata']['name']}", doc["spec"]))
    found.append(("tests/policies.py:BASE", BASE["spec"]))
    found += [(f"tests/policies.py:EVERY_TRAINER_SETTING[{i}]", p["spec"]) for i, p in enumerate(EVERY_TRAINER_SETTING)]
    return found


POLICIES = _policies_with_the_builtin_trainer()


def _parsed(spec: dict[str, Any]) -> PolicySpec:
    return parse_policy_spec(copy.deepcopy(spec))


def _config_env(job: dict[str, Any]) -> str:
    env = {var["name"]: var.get("value") for var in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    text = env[CONFIG_ENV]
    assert isinstance(text, str)
    return text


def test_examples_use_the_builtin_trainer() -> None:
    assert sum(name.startswith("examples/") for name, _ in POLICIES) >= 2


@pytest.mark.parametrize(("name", "spec"), POLICIES, ids=[name for name, _ in POLICIES])
def test_the_trainer_reads_back_what_the_operator_parsed(name: str, spec: dict[str, Any]) -> None:
    parsed = _parsed(spec)
    job = build_job(
        parsed,
        store=store(),
        policy=REF,
        sequence=4,
        triggers=["accuracy-drop", "input-drift"],
        trainer_image="retrain-operator:test",
        service_account="retrain-trainer",
    )

    config = load_config(_config_env(job), source=f"${CONFIG_ENV}")

    assert config.model == parsed.model
    assert config.builtin == parsed.training.builtin
    assert config.promotion == parsed.promotion
    assert config.store == store().connection
    assert config.run == RunSpec(
        policy="team-a/churn", policy_uid=REF.uid, job=job["metadata"]["name"], trigger="accuracy-drop,input-drift"
    )


@pytest.mark.parametrize(("name", "spec"), POLICIES, ids=[name for name, _ in POLICIES])
def test_a_rollback_reads_back_the_model_the_operator_parsed(name: str, spec: dict[str, Any]) -> None:
    parsed = _parsed(spec)
    job = build_job(
        parsed,
        store=store(),
        policy=REF,
        sequence=5,
        triggers=[],
        trainer_image="retrain-operator:test",
        service_account="retrain-trainer",
        promote="20261127-104000-abc",
    )

    config = load_registry_config(_config_env(job), source=f"${CONFIG_ENV}")

    assert config.model == parsed.model
    assert config.store == store().connection
    assert config.run == RunSpec(
        policy="team-a/churn", policy_uid=REF.uid, job=job["metadata"]["name"], trigger="rollback"
    )


def _settings(value: Any) -> list[Any]:
    """A settings value and every settings value inside it."""
    found = [value]
    for spec in dataclasses.fields(value):
        inner = getattr(value, spec.name)
        if dataclasses.is_dataclass(inner):
            found += _settings(inner)
    return found


def _is_set(value: Any, spec: dataclasses.Field[Any]) -> bool:
    if spec.default_factory is not dataclasses.MISSING:
        return bool(getattr(value, spec.name) != spec.default_factory())
    return spec.default is dataclasses.MISSING or getattr(value, spec.name) != spec.default


def test_the_round_trip_covers_every_setting() -> None:
    """Each field differs from its default in some policy above, so dropping it on one side would fail."""
    set_fields: dict[type, set[str]] = {}
    for _, spec in POLICIES:
        parsed = _parsed(spec)
        assert parsed.training.builtin is not None
        for value in (*_settings(parsed.model), *_settings(parsed.training.builtin), *_settings(parsed.promotion)):
            set_fields.setdefault(type(value), set()).update(
                spec.name for spec in dataclasses.fields(value) if _is_set(value, spec)
            )
    assert {cls.__name__ for cls in set_fields} == {
        "ModelSpec",
        "RegistrySpec",
        "BuiltinTrainer",
        "DataSpec",
        "WindowSpec",
        "SplitSpec",
        "HistogramSpec",
        "PromotionSpec",
    }
    for cls, names in set_fields.items():
        unset = {spec.name for spec in dataclasses.fields(cls)} - names
        assert not unset, f"{cls.__name__}: no policy sets {sorted(unset)} away from the default"
