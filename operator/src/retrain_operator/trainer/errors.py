"""The trainer's failures, each with the CamelCase reason and exit code the operator sees.

Every expected failure is raised as one of these and turned into the termination message by
:mod:`retrain_operator.trainer.main`. The class sets the exit code, so a Job's pod failure policy can
tell a mistake in the policy (do not retry) from a flaky store (retry) without parsing text.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConfigError",
    "DataError",
    "RegistryError",
    "StorageError",
    "TrainerError",
    "TrainingError",
    "one_line",
]

_MESSAGE_LIMIT = 1000


def one_line(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """Collapse whitespace to single spaces and cut to ``limit`` characters, for reason messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class TrainerError(Exception):
    """A failure the trainer reports as ``{"outcome": "Failed", "reason": ..., "message": ...}``."""

    exit_code: ClassVar[int] = 1

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = one_line(message)


class ConfigError(TrainerError):
    """The configuration is wrong: InvalidConfig, EstimatorNotAllowed, InvalidParams."""

    exit_code = 2


class DataError(TrainerError):
    """The training data is missing or unusable: DataNotFound, EmptyData, UnparsableData, MissingColumn,
    InvalidColumn, SchemaMismatch, InvalidTarget, TooFewRows."""

    exit_code = 3


class StorageError(TrainerError):
    """The registry cannot be used: AccessDenied, BucketNotFound, VersionExists, StorageError."""

    exit_code = 4


class TrainingError(TrainerError):
    """scikit-learn failed while fitting or scoring: TrainingError."""

    exit_code = 5


class RegistryError(TrainerError):
    """The registry refuses the request: VersionNotFound, VersionIncomplete, UnsupportedModelFormat,
    UntrustedModel, InvalidChampion, ChampionConflict. Retrying cannot help until someone fixes it."""

    exit_code = 6
