"""The operator's log: kopf's per-event success lines only at DEBUG, and ``--log-format json`` lines that parse.

The unit tests log through kopf's own per-object logger the line kopf writes after each handler
run (``f"{handler} succeeded."``, with the handlers this operator registers); the integration test
runs the real operator process on the real control plane and reads its log.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from kopf._cogs.configs.configuration import OperatorSettings
from kopf._cogs.structs.bodies import Body
from kopf._core.actions.loggers import LocalObjectLogger

from retrain_operator.handlers import logs
from retrain_operator.handlers.operator import registry
from tests.support.stack import Stack, wait_for

SUCCEEDED = re.compile(r"Handler '[^']*' succeeded\.")
POLICY = Body(
    {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainPolicy",
        "metadata": {"name": "churn", "namespace": "team-a", "uid": "uid-1"},
    }
)


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[io.StringIO, Any]]:
    """The root logger configured by ``logs.configure``, writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger(logs.KOPF_OBJECTS).filters[:])
    buffer = io.StringIO()

    def configure(level: str, fmt: str = "text") -> None:
        logs.configure(level=level, fmt=fmt)
        root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]

    try:
        yield buffer, configure
    finally:
        root.handlers[:], _, logging.getLogger(logs.KOPF_OBJECTS).filters[:] = saved
        root.setLevel(saved[1])
        logging.captureWarnings(False)


def kopf_lines() -> None:
    """What kopf logs while handling one watch event per handler, then an ordinary and a failing line."""
    logger = LocalObjectLogger(body=POLICY, settings=OperatorSettings())
    for handler in registry._watching.get_all_handlers():
        logger.info(f"{handler} succeeded.")  # kopf/_core/actions/execution.py, execute_handler_once
    logger.info("Something kopf says once.")
    logger.error("Handler 'retrain-policy' failed with an exception. Will ignore.")


def test_success_lines_are_not_shown_at_info(captured: tuple[io.StringIO, Any]) -> None:
    buffer, configure = captured
    configure("INFO")
    kopf_lines()
    out = buffer.getvalue()
    assert not SUCCEEDED.search(out), out
    assert "Something kopf says once." in out and "failed with an exception" in out


def test_success_lines_are_shown_at_debug(captured: tuple[io.StringIO, Any]) -> None:
    buffer, configure = captured
    configure("DEBUG")
    kopf_lines()
    shown = [line for line in buffer.getvalue().splitlines() if SUCCEEDED.search(line)]
    assert len(shown) == len(list(registry._watching.get_all_handlers())) == 5
    assert all(" DEBUG kopf.objects: " in line for line in shown), shown


def test_json_lines_parse_and_carry_the_object(captured: tuple[io.StringIO, Any]) -> None:
    buffer, configure = captured
    configure("INFO", "json")
    kopf_lines()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("retrain_operator.reconcile.engine").exception("evaluating %s failed", "team-a/churn")
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "ERROR", "ERROR"]
    assert lines[0] == {
        "time": lines[0]["time"],
        "level": "INFO",
        "logger": "kopf.objects",
        "message": "Something kopf says once.",
        "object": {
            "apiVersion": "retrain.dev/v1alpha1",
            "kind": "RetrainPolicy",
            "name": "churn",
            "namespace": "team-a",
            "uid": "uid-1",
        },
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", lines[0]["time"])
    assert lines[2]["message"] == "evaluating team-a/churn failed"
    assert "RuntimeError: boom" in lines[2]["exception"] and "object" not in lines[2]


def test_unknown_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml' is not one of text, json"):
        logs.configure(level="INFO", fmt="xml")


@pytest.mark.integration
def test_operator_log_is_json_and_quiet_about_routine_events(stack: Stack) -> None:
    """The real operator with --log-format json: many watch events (a policy written many times, its status
    patches), every line parses, and none is kopf's per-event success line."""
    stack.operator.stop()
    operator = stack.start_operator("--log-format", "json", log="operator-json.log")
    stack.push_accuracy(stack.model, [0.94] * 40)
    policy = stack.example_policy()
    policy["spec"]["evaluation"] = {"interval": "5s"}
    for value in ("a", "b", "c"):
        policy["metadata"]["labels"] = {"touch": value}
        applied = stack.apply(policy)
        assert applied.returncode == 0, applied.stderr
    reason = wait_for(
        "the policy evaluated",
        lambda: (stack.status("churn").get("lastDecision") or {}).get("reason"),
        timeout=60,
        log=operator.log,
    )

    def parsed() -> list[dict[str, Any]]:
        return [json.loads(line) for line in operator.log().splitlines() if line.strip()]

    # The decision is logged by the reconciler once its reason is new: the handlers ran, the scheduler decided.
    wait_for(
        "the decision in the log",
        lambda: any(p["logger"].startswith("retrain_operator.") and reason in p["message"] for p in parsed()),
        timeout=30,
        log=operator.log,
    )
    lines = parsed()  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(p) for p in lines), lines[:5]
    assert not [p for p in lines if SUCCEEDED.search(p["message"])], lines
