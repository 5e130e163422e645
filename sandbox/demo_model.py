"""A stand-in for a model's serving code: it exports the model's live accuracy for Prometheus to scrape.

Real serving code measures accuracy from delayed labels; this one tells a story instead. Accuracy
starts near the score of the model in production and drifts down (the world shifts), until a new
model version appears in the registry; then it jumps back to that model's holdout score, read from
the version's metadata. The registry is polled through S3 exactly where the trainer writes.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server


@dataclass
class DemoModel:
    namespace: str
    model: str
    bucket: str
    prefix: str
    s3: Any
    start: float = 0.95
    floor: float = 0.78
    decay_per_second: float = 0.004
    version: str | None = None
    score: float | None = None
    _since: float = field(default_factory=time.monotonic)
    _base: float = 0.95

    def __post_init__(self) -> None:
        self._base = self.start

    def accuracy(self) -> float:
        """Decays linearly from the current model's score towards the floor."""
        elapsed = max(0.0, time.monotonic() - self._since)
        return max(self.floor, self._base - self.decay_per_second * elapsed)

    def poll_registry(self) -> bool:
        """Serve the champion the registry's pointer names, as serving code would; return whether it changed."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}champion.json")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return False
        champion = json.loads(body)
        if champion.get("version") == self.version:
            return False
        score = champion.get("score")
        self.version = str(champion["version"])
        self.score = float(score) if score is not None else self.start
        self._base = self.score
        self._since = time.monotonic() + 60.0  # a fresh model holds its accuracy for a while
        return True


def serve(model: DemoModel, *, port: int, stop: threading.Event, poll_seconds: float = 1.0) -> None:
    """Export ``model_accuracy`` on ``port`` until ``stop`` is set; meant for a daemon thread."""
    registry = CollectorRegistry()
    gauge = Gauge(
        "model_accuracy", "Live accuracy of the model, from delayed labels.", ["namespace", "model"], registry=registry
    )
    gauge.labels(model.namespace, model.model).set_function(model.accuracy)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        while not stop.wait(poll_seconds):
            try:
                model.poll_registry()
            except Exception:  # the registry may be briefly unavailable; the next poll retries
                continue
    finally:
        server.shutdown()
        thread.join(timeout=5)
