"""Entry point of the training Job: ``retrain-operator train`` or ``python -m retrain_operator.trainer``.

The operator learns the outcome from the container's termination message, so it never needs the
tenant's storage credentials. This module reads the configuration, runs :func:`~.run.train`, and
reports one line of JSON (under 4096 bytes, the kubelet's limit) to ``$TERMINATION_MESSAGE_PATH``
(default ``/dev/termination-log``) and to stdout; progress goes to stderr.

Configuration: ``--config FILE`` or else the JSON in ``$RETRAIN_TRAINER_CONFIG``; see
:mod:`~.config`. Storage credentials come from ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``.

Success, exit 0::

    {"outcome": "Succeeded", "version": ..., "modelUri": ..., "metadataUri": ..., "metric": ...,
     "score": ..., "trainedAt": ..., "rows": ..., "durationSeconds": ...}

Failure, ``{"outcome": "Failed", "reason": ..., "message": ...}``, with the exit code telling the kind:

== ================================================================================================
1  InternalError: an unexpected exception (a bug); the message names its type.
2  Configuration: InvalidConfig, EstimatorNotAllowed, InvalidParams. Retrying cannot help.
3  Data: DataNotFound, EmptyData, UnparsableData, MissingColumn, InvalidTarget, TooFewRows.
4  Storage: AccessDenied, BucketNotFound, VersionExists, StorageError (unreachable or 5xx; may pass
   on retry).
5  Training: TrainingError, scikit-learn failed while fitting or scoring.
== ================================================================================================

Limits: when the termination file cannot be written (outside Kubernetes, where /dev/termination-log
does not exist) the result is still printed and the exit code is unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from retrain_operator.trainer.config import TrainerConfig, load_config
from retrain_operator.trainer.errors import ConfigError, TrainerError, one_line
from retrain_operator.trainer.run import TrainingResult, rfc3339, train
from retrain_operator.trainer.storage import S3Store

__all__ = ["CONFIG_ENV", "TERMINATION_MESSAGE_LIMIT", "main"]

CONFIG_ENV: Final = "RETRAIN_TRAINER_CONFIG"
TERMINATION_PATH_ENV: Final = "TERMINATION_MESSAGE_PATH"
DEFAULT_TERMINATION_PATH: Final = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT: Final = 4096

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one training and return the process exit code; ``argv`` excludes the program name.

    A leading ``train`` is accepted and skipped, so the console script can pass its arguments on as
    they are.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["train"]:
        args = args[1:]
    env = os.environ
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = _load(args, env)
        result = train(config, store=S3Store.from_config(config.model.registry, env))
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
        code, message = 0, _success(result)
    _report(message, env)
    return code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError("InvalidConfig", f"command line: {message}")


def _load(args: list[str], env: Mapping[str, str]) -> TrainerConfig:
    parser = _Parser(
        prog="retrain-operator train",
        description=f"Train a scikit-learn model from S3 data. Configuration: --config FILE or ${CONFIG_ENV}.",
    )
    parser.add_argument("--config", metavar="FILE", help=f"configuration JSON file (overrides ${CONFIG_ENV})")
    options = parser.parse_args(args)
    if options.config:
        try:
            text = Path(options.config).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("InvalidConfig", f"cannot read --config {options.config}: {exc}") from None
        return load_config(text, source=f"--config {options.config}")
    text = env.get(CONFIG_ENV, "")
    if not text.strip():
        raise ConfigError("InvalidConfig", f"no configuration: pass --config FILE or set ${CONFIG_ENV} to JSON")
    return load_config(text, source=f"${CONFIG_ENV}")


def _success(result: TrainingResult) -> dict[str, Any]:
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
    }


def _failure(reason: str, message: str) -> dict[str, Any]:
    return {"outcome": "Failed", "reason": reason, "message": one_line(message)}


def _encode_message(message: dict[str, Any]) -> str:
    """One JSON line under the termination message limit, shortening ``message`` if it must."""
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
