"""The operator's log: a level, plain text or one JSON object per line, and kopf's routine lines at debug.

kopf logs "Handler 'retrain-policy' succeeded." at INFO for every watch event it hands to a handler:
with the handlers here only passing objects to the scheduler, that is one line per change of every
watched object (policies, Jobs, budgets), and it buries the decisions and Job outcomes the operator
itself logs. Those lines are shown at DEBUG instead. A failing handler is still logged by kopf at its
own level. Limits: only the root logger's stream handler set up here formats JSON; a library that
writes to stderr itself is not rewritten.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# kopf's per-object logger, and the line it writes for every handler run that raised nothing.
KOPF_OBJECTS = "kopf.objects"
_SUCCEEDED = re.compile(r"^Handler '[^']*' succeeded\.$")


class RoutineAtDebug(logging.Filter):
    """Shows kopf's "Handler ... succeeded." lines at DEBUG: passed on only when DEBUG is enabled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _SUCCEEDED.match(record.getMessage()):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class JsonLines(logging.Formatter):
    """One JSON object per record: time (RFC 3339, UTC), level, logger, message, the object a kopf
    line is about (``object``: apiVersion, kind, namespace, name, uid) and an exception's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            line["object"] = {k: v for k, v in ref.items() if v is not None}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(*, level: str, fmt: str = "text") -> None:
    """Set up the root logger: ``level`` (a logging level name) and ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning is a log line too, in the same format
    objects = logging.getLogger(KOPF_OBJECTS)
    if not any(isinstance(f, RoutineAtDebug) for f in objects.filters):
        objects.addFilter(RoutineAtDebug())
