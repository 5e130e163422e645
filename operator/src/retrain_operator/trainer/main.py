"""Entry point of the training Job: ``retrain-operator train`` or ``python -m retrain_operator.trainer``.

The operator learns the outcome from the container's termination message, so it never needs the
tenant's storage credentials. This module reads the configuration, runs :func:`~.run.train` (or, with
a first argument ``promote``, :func:`~.champion.promote`), and reports one line of JSON (under 4096
bytes, the kubelet's limit) to ``$TERMINATION_MESSAGE_PATH`` (default ``/dev/termination-log``) and to
stdout; progress goes to stderr.

Configuration: ``--config FILE`` or else the JSON in ``$RETRAIN_TRAINER_CONFIG``; see
:mod:`~.config`. Storage credentials come from ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``.
Optional: ``$RETRAIN_ESTIMATOR_ALLOWLIST`` (comma-separated module prefixes allowed besides
``sklearn``, for estimators and for the classes a stored model may contain) and
``$RETRAIN_RESOURCES`` (a JSON object, e.g. the Job's requests and limits, recorded in the metadata).

Training, exit 0 (``promoted`` false when the model was kept as a candidate; ``champion`` is the
champion after this run, null if there is none; ``championScore`` is the champion's score on this
run's holdout, null if there was none or it could not be scored)::

    {"outcome": "Succeeded", "version": ..., "modelUri": ..., "metadataUri": ..., "metric": ...,
     "score": ..., "trainedAt": ..., "rows": ..., "durationSeconds": ..., "promoted": true,
     "promotionReason": "beats champion ...", "champion": {"version": ..., "score": ...},
     "challengerScore": ..., "championScore": ...,
     "data": {"rowsRead": ..., "rowsUsed": ..., "droppedRows": {"missingLabel": ..., ...}},
     "memoryEstimateMiB": ..., "peakMemoryMiB": ..., "warnings": [...]}

``droppedRows`` counts the rows left out by cause (:mod:`.data`); ``memoryEstimateMiB`` is the estimate
made from the objects' sizes before reading them (:mod:`.memory`); ``peakMemoryMiB`` (the process's
maximum resident set size) is in every message, failures included; ``warnings`` (at most three) say,
for example, that the estimate exceeds the Job's memory request.

``promote --version V`` moves the champion pointer to the existing complete version V (a rollback),
using only the ``model`` and ``run`` parts of the same configuration; exit 0::

    {"outcome": "Succeeded", "action": "Promote", "version": ..., "modelUri": ..., "metric": ...,
     "score": ..., "trainedAt": ..., "promoted": true, "changed": true,
     "previousChampion": {"version": ..., "score": ...} or null}

``changed`` is false when V already was the champion (nothing is written). Failure,
``{"outcome": "Failed", "reason": ..., "message": ...}``, with the exit code telling the kind:

== ================================================================================================
1  InternalError: an unexpected exception (a bug); the message names its type.
2  Configuration: InvalidConfig, EstimatorNotAllowed, InvalidParams. Retrying cannot help.
3  Data: DataNotFound, EmptyData, UnparsableData, MissingColumn, InvalidColumn, SchemaMismatch,
   InvalidTarget, TooFewRows, DataTooLarge (the estimate exceeds the Job's memory limit; nothing read).
4  Storage: AccessDenied, BucketNotFound, VersionExists, StorageError (unreachable or 5xx; may pass
   on retry). A failure to move the pointer after the version was written says so: the version stays
   a complete candidate.
5  Training: TrainingError, scikit-learn failed while fitting or scoring.
6  Registry: VersionNotFound, VersionIncomplete, UnsupportedModelFormat (joblib), UntrustedModel,
   InvalidChampion, ChampionConflict (the pointer kept changing; retry).
== ================================================================================================

In every failure the champion pointer is left as it was.

Limits: when the termination file cannot be written (outside Kubernetes, where /dev/termination-log
does not exist) the result is still printed and the exit code is unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NoReturn

from retrain_operator.registry import layout
from retrain_operator.registry.champion import ChampionPointer
from retrain_operator.settings.training import PromoteConfig, TrainerConfig
from retrain_operator.trainer.champion import PromoteResult, promote
from retrain_operator.trainer.config import load_config, load_registry_config
from retrain_operator.trainer.errors import ConfigError, TrainerError, one_line
from retrain_operator.trainer.fit import ALLOWLIST_ENV, parse_allowlist
from retrain_operator.trainer.run import TrainingResult, rfc3339, train
from retrain_operator.trainer.storage import S3Store

__all__ = ["CONFIG_ENV", "RESOURCES_ENV", "TERMINATION_MESSAGE_LIMIT", "main"]

CONFIG_ENV: Final = "RETRAIN_TRAINER_CONFIG"
RESOURCES_ENV: Final = "RETRAIN_RESOURCES"
_REASON_LIMIT: Final = 400
TERMINATION_PATH_ENV: Final = "TERMINATION_MESSAGE_PATH"
DEFAULT_TERMINATION_PATH: Final = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT: Final = 4096

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one training (or ``promote``) and return the process exit code; ``argv`` excludes the program name.

    A leading ``train`` is accepted and skipped, so the console script can pass its arguments on as
    they are.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["train"]:
        args = args[1:]
    env = os.environ
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        allowlist = parse_allowlist(env.get(ALLOWLIST_ENV))
        if args[:1] == ["promote"]:
            registry_config, version = _load_promote(args[1:], env)
            registry = registry_config.model.registry
            promoted = promote(
                store=S3Store.from_config(registry_config.store, env),
                registry=registry,
                version=version,
                run=registry_config.run,
                allowlist=allowlist,
                clock=_utcnow,
                stamp=rfc3339,
            )
            message = _promoted(promoted)
        else:
            config = _load(args, env)
            result = train(
                config,
                store=S3Store.from_config(config.store, env),
                allowlist=allowlist,
                resources=_resources(env),
            )
            message = _success(result)
    except SystemExit as exc:
        # --help and --version exit through argparse; they are not training outcomes.
        return exc.code if isinstance(exc.code, int) else 0
    except TrainerError as exc:
        logger.error("%s: %s", exc.reason, exc.message)
        code, message = exc.exit_code, _failure(exc.reason, exc.message)
    except Exception as exc:
        logger.exception("unexpected failure")
        code, message = 1, _failure("InternalError", f"{type(exc).__name__}: {exc}")
    else:
        code = 0
    _report({**message, "peakMemoryMiB": peak_memory_mib()}, env)
    return code


def peak_memory_mib() -> float:
    """The process's peak resident memory so far (``ru_maxrss``, KiB on Linux), in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError("InvalidConfig", f"command line: {message}")


def _resources(env: Mapping[str, str]) -> dict[str, Any] | None:
    text = env.get(RESOURCES_ENV, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("InvalidConfig", f"${RESOURCES_ENV} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("InvalidConfig", f'${RESOURCES_ENV} must be a JSON object, like {{"requests": {{...}}}}')
    return value


def _load_promote(args: list[str], env: Mapping[str, str]) -> tuple[PromoteConfig, str]:
    parser = _Parser(
        prog="retrain-operator train promote",
        description="Make an existing complete model version the champion (a rollback). "
        f"Configuration: --config FILE or ${CONFIG_ENV} (only model and run are read).",
    )
    parser.add_argument("--version", required=True, help="the version id to promote")
    parser.add_argument("--config", metavar="FILE", help=f"configuration JSON file (overrides ${CONFIG_ENV})")
    options = parser.parse_args(args)
    text, source = _config_text(options.config, env)
    config = load_registry_config(text, source=source)
    try:
        version = layout.check_version_id(options.version)
    except ValueError as exc:
        raise ConfigError("InvalidConfig", f"--version: {exc}") from None
    return config, version


def _config_text(path: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    if path:
        try:
            return Path(path).read_text(encoding="utf-8"), f"--config {path}"
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("InvalidConfig", f"cannot read --config {path}: {exc}") from None
    text = env.get(CONFIG_ENV, "")
    if not text.strip():
        raise ConfigError("InvalidConfig", f"no configuration: pass --config FILE or set ${CONFIG_ENV} to JSON")
    return text, f"${CONFIG_ENV}"


def _load(args: list[str], env: Mapping[str, str]) -> TrainerConfig:
    parser = _Parser(
        prog="retrain-operator train",
        description=f"Train a scikit-learn model from S3 data. Configuration: --config FILE or ${CONFIG_ENV}.",
    )
    parser.add_argument("--config", metavar="FILE", help=f"configuration JSON file (overrides ${CONFIG_ENV})")
    options = parser.parse_args(args)
    text, source = _config_text(options.config, env)
    return load_config(text, source=source)


def _success(result: TrainingResult) -> dict[str, Any]:
    warnings = result.warnings
    return {
        "outcome": "Succeeded",
        "version": result.version,
        "modelUri": result.model_uri,
        "metadataUri": result.metadata_uri,
        "metric": result.metric,
        "score": result.score,
        "trainedAt": rfc3339(result.trained_at),
        "rows": result.rows,
        "durationSeconds": result.duration_seconds,
        "promoted": result.promoted,
        "promotionReason": one_line(result.promotion_reason, _REASON_LIMIT),
        "champion": None
        if result.champion_version is None
        else {"version": result.champion_version, "score": result.champion_score},
        "challengerScore": result.score,
        "championScore": result.champion_holdout_score,
        **({"data": result.data_report} if result.data_report else {}),
        **({"memoryEstimateMiB": result.memory_estimate_mib} if result.memory_estimate_mib is not None else {}),
        **({"warnings": [one_line(str(w), 300) for w in warnings[:3]]} if warnings else {}),
        **({"reference": result.reference} if result.reference else {}),
    }


def _promoted(result: PromoteResult) -> dict[str, Any]:
    pointer = result.pointer
    return {
        "outcome": "Succeeded",
        "action": "Promote",
        "version": pointer.version,
        "modelUri": pointer.model_uri,
        "metric": pointer.metric,
        "score": pointer.score,
        "trainedAt": pointer.trained_at,
        "promoted": True,
        "changed": result.changed,
        "previousChampion": _brief(result.previous),
    }


def _brief(pointer: ChampionPointer | None) -> dict[str, Any] | None:
    return None if pointer is None else {"version": pointer.version, "score": pointer.score}


def _failure(reason: str, message: str) -> dict[str, Any]:
    return {"outcome": "Failed", "reason": reason, "message": one_line(message)}


def _encode_message(message: dict[str, Any]) -> str:
    """One JSON line under the termination message limit, shortening ``message`` if it must.

    The drift reference is the only optional bulk: when it does not fit it is left out and
    ``referenceOmitted`` says so (the histograms stay in the registry either way).
    """
    line = json.dumps(message, separators=(",", ":"), allow_nan=False)
    if "reference" in message and len(line.encode("utf-8")) >= TERMINATION_MESSAGE_LIMIT:
        message = {k: v for k, v in message.items() if k != "reference"} | {"referenceOmitted": True}
        line = json.dumps(message, separators=(",", ":"), allow_nan=False)
    text = str(message.get("message", ""))
    while len(line.encode("utf-8")) >= TERMINATION_MESSAGE_LIMIT and text:
        text = text[: max(0, len(text) - (len(line.encode("utf-8")) - TERMINATION_MESSAGE_LIMIT) - 64)]
        message = {**message, "message": text + "..."}
        line = json.dumps(message, separators=(",", ":"), allow_nan=False)
    return line


def _report(message: dict[str, Any], env: Mapping[str, str]) -> None:
    line = _encode_message(message)
    print(line, flush=True)
    path = env.get(TERMINATION_PATH_ENV) or DEFAULT_TERMINATION_PATH
    try:
        Path(path).write_text(line, encoding="utf-8")
    except OSError as exc:
        logger.warning("could not write the termination message to %s: %s", path, exc)
