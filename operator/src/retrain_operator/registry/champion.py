"""The champion pointer document: which version is in production, since when and why.

``<prefix>champion.json`` and every ``<prefix>promotions/<generation>.json`` record hold this one
document, so the operator, serving code and the trainer read the same fields (see
:mod:`retrain_operator.registry.layout` for where they live and how they are written). Encoding and
parsing are pure; reading and conditional writing belong to whoever holds a storage client.

Parsing is strict about the fields a reader relies on (``version``, ``generation``, ``modelUri``) and
lenient about the rest, so a newer writer may add fields without breaking older readers.

Limits: ``reason`` is cut to :data:`REASON_LIMIT` characters so the document stays small.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from retrain_operator.registry.layout import check_version_id, parse_s3_uri

__all__ = ["POINTER_SCHEMA_VERSION", "REASON_LIMIT", "Action", "ChampionPointer", "encode_pointer", "parse_pointer"]

POINTER_SCHEMA_VERSION: Final = 1
REASON_LIMIT: Final = 500

Action = Literal["Train", "Promote"]
_ACTIONS: Final[tuple[Action, ...]] = ("Train", "Promote")


@dataclass(frozen=True)
class ChampionPointer:
    """One state of the champion pointer."""

    version: str
    model_uri: str
    metric: str
    score: float | None
    trained_at: str | None
    promoted_at: str
    action: Action
    reason: str
    previous: str | None
    generation: int
    run: dict[str, str | None] = field(default_factory=dict)


def encode_pointer(pointer: ChampionPointer) -> bytes:
    """The JSON bytes written to ``champion.json`` and to the promotion record."""
    document: dict[str, Any] = {
        "schemaVersion": POINTER_SCHEMA_VERSION,
        "version": pointer.version,
        "modelUri": pointer.model_uri,
        "metric": pointer.metric,
        "score": pointer.score if pointer.score is not None and math.isfinite(pointer.score) else None,
        "trainedAt": pointer.trained_at,
        "promotedAt": pointer.promoted_at,
        "action": pointer.action,
        "reason": " ".join(pointer.reason.split())[:REASON_LIMIT],
        "previous": pointer.previous,
        "generation": pointer.generation,
        "run": dict(pointer.run),
    }
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


def parse_pointer(body: bytes) -> ChampionPointer:
    """Read a pointer document; raise ValueError saying what is wrong with it."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    version = raw.get("version")
    if not isinstance(version, str):
        raise ValueError("field 'version' is missing or not a string")
    check_version_id(version)
    model_uri = raw.get("modelUri")
    if not isinstance(model_uri, str):
        raise ValueError("field 'modelUri' is missing or not a string")
    parse_s3_uri(model_uri)
    generation = raw.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise ValueError("field 'generation' is missing or not a positive integer")
    score = raw.get("score")
    previous = raw.get("previous")
    action = raw.get("action")
    run = raw.get("run")
    return ChampionPointer(
        version=version,
        model_uri=model_uri,
        metric=str(raw.get("metric") or ""),
        score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
        trained_at=raw["trainedAt"] if isinstance(raw.get("trainedAt"), str) else None,
        promoted_at=str(raw.get("promotedAt") or ""),
        action=action if action in _ACTIONS else "Train",
        reason=str(raw.get("reason") or ""),
        previous=previous if isinstance(previous, str) else None,
        generation=generation,
        run={str(k): (v if isinstance(v, str) else None) for k, v in run.items()} if isinstance(run, dict) else {},
    )
