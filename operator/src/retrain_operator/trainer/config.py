"""The trainer's configuration: the JSON the operator puts in the Job, read into the shared settings.

The document and its checks are :mod:`retrain_operator.settings.training`, the same code the operator
reads the policy with, so the trainer accepts exactly what the operator writes. This module only
turns text into that document and its problems into the trainer's ``InvalidConfig`` failure, each
problem worded ``field message``. Everything is checked before any storage or training work starts,
so a mistake costs a second, not a training run. Whether the estimator exists and accepts its params
is checked by :mod:`retrain_operator.trainer.fit`, which needs scikit-learn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from retrain_operator.settings.reader import InvalidSpec
from retrain_operator.settings.training import (
    PromoteConfig,
    TrainerConfig,
    parse_promote_config,
    parse_trainer_config,
)
from retrain_operator.trainer.errors import ConfigError

__all__ = ["load_config", "load_registry_config", "parse_config", "parse_registry_config"]

_Config = TypeVar("_Config", TrainerConfig, PromoteConfig)


def load_config(text: str, *, source: str) -> TrainerConfig:
    """Parse configuration JSON read from ``source`` (a file name or an environment variable)."""
    return parse_config(_decode(text, source=source))


def load_registry_config(text: str, *, source: str) -> PromoteConfig:
    """Parse the same configuration JSON for the ``promote`` command, which reads only the registry part."""
    return parse_registry_config(_decode(text, source=source))


def parse_config(raw: object) -> TrainerConfig:
    """Check a decoded JSON document and build the configuration; raise ConfigError naming every problem."""
    return _checked(parse_trainer_config, raw)


def parse_registry_config(raw: object) -> PromoteConfig:
    """Check ``model`` and ``run`` of a configuration document; the training sections are not needed."""
    return _checked(parse_promote_config, raw)


def _decode(text: str, *, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("InvalidConfig", f"{source} is not valid JSON: {exc}") from None


def _checked(parse: Callable[[object], _Config], raw: object) -> _Config:
    try:
        return parse(raw)
    except InvalidSpec as exc:
        raise ConfigError("InvalidConfig", "; ".join(f"{p.field} {p.message}" for p in exc.problems)) from None
