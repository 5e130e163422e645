"""Reference histograms of the training data, in the buckets the serving code exports to Prometheus.

Drift is measured by comparing a live histogram (``<metric>_bucket{le=...}`` from serving) with the one
the model was trained on, bucket by bucket, so the reference must use the same upper bounds. They come
from the configuration (``histograms.features`` and ``histograms.predictions``); a numeric feature
without configured bounds gets the deciles of its training values (``"edgesFrom": "trainingDeciles"``)
so the histogram exists and serving may adopt those bounds.

Each histogram is stored in both forms a reader may want, edges included:

* ``le``: Prometheus's cumulative form, ``[["0.5", 12], ..., ["+Inf", 455]]``, the bound formatted as
  Prometheus writes ``le`` labels (``1.0``, ``2.5``, ``1e+06``, ``+Inf``);
* ``counts``: per-bucket counts, ``len(edges) + 1`` of them, bucket ``i`` holding values in
  ``(edges[i-1], edges[i]]`` and the last one values above the last edge.

``count`` and ``sum`` match Prometheus's ``_count`` and ``_sum``; values that are empty (NaN) are not
observed and are counted in ``missing``. Predictions are the predicted value for a regressor, the
probability of the positive (greater) class for a binary classifier with ``predict_proba``, and
otherwise (multi-class, or no probabilities) the count per predicted class in ``classes``.

Limits: computed on the training rows (not the holdout) after the window; numbers are taken as
float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from retrain_operator.trainer.errors import DataError

__all__ = ["HISTOGRAMS_SCHEMA_VERSION", "build_histograms", "format_le", "histogram"]

HISTOGRAMS_SCHEMA_VERSION: Final = 1
_DEFAULT_PROBABILITY_EDGES: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_DECILES: Final = np.linspace(0.1, 1.0, 10)


def format_le(bound: float) -> str:
    """A bucket bound as Prometheus writes the ``le`` label (the client libraries' Go float format)."""
    if bound == math.inf:
        return "+Inf"
    if bound == -math.inf:
        return "-Inf"
    text = repr(float(bound))
    dot = text.find(".")
    # Go switches to an exponent sooner than Python's repr for large numbers.
    if bound > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def histogram(values: np.ndarray[Any, Any], edges: Sequence[float], *, edges_from: str) -> dict[str, Any]:
    """One histogram of ``values`` over upper bounds ``edges`` in both the cumulative and per-bucket forms."""
    numbers = np.asarray(values, dtype=np.float64)
    present = numbers[~np.isnan(numbers)]
    bounds = np.asarray(edges, dtype=np.float64)
    # side="left" puts a value equal to a bound in that bound's bucket, as Prometheus's le does.
    index = np.searchsorted(bounds, present, side="left")
    counts = np.bincount(index, minlength=len(bounds) + 1).astype(int)
    cumulative = np.cumsum(counts)
    labels = [format_le(float(b)) for b in bounds] + ["+Inf"]
    total = float(present.sum()) if present.size else 0.0
    return {
        "edges": [float(b) for b in bounds],
        "edgesFrom": edges_from,
        "counts": [int(c) for c in counts],
        "le": [[label, int(c)] for label, c in zip(labels, cumulative, strict=True)],
        "count": int(present.size),
        "sum": total if math.isfinite(total) else None,
        "missing": int(numbers.size - present.size),
    }


def build_histograms(
    *,
    model: Pipeline,
    features: pd.DataFrame,
    numeric: Sequence[str],
    configured: Mapping[str, Sequence[float]],
    prediction_edges: Sequence[float] | None,
    classes: Sequence[object],
) -> dict[str, Any]:
    """The ``histograms.json`` document for a fitted ``model`` and its training ``features``."""
    for name in configured:
        if name not in features.columns:
            raise DataError(
                "MissingColumn",
                f"builtin.histograms.features names {name!r}, which is not a feature of this model; "
                f"features: {', '.join(map(str, features.columns[:40]))}",
            )
        if name not in numeric:
            raise DataError(
                "InvalidColumn",
                f"builtin.histograms.features names {name!r}, which is not numeric; "
                "only numeric features have histograms",
            )
    feature_histograms: dict[str, Any] = {}
    for name in numeric:
        values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if name in configured:
            feature_histograms[name] = histogram(values, configured[name], edges_from="config")
        else:
            feature_histograms[name] = histogram(values, _deciles(values), edges_from="trainingDeciles")
    return {
        "schemaVersion": HISTOGRAMS_SCHEMA_VERSION,
        "rows": len(features),
        "rowsFrom": "training split",
        "features": feature_histograms,
        "predictions": _predictions(model, features=features, edges=prediction_edges, classes=classes),
    }


def _predictions(
    model: Pipeline, *, features: pd.DataFrame, edges: Sequence[float] | None, classes: Sequence[object]
) -> dict[str, Any]:
    if not classes:
        values = np.asarray(model.predict(features), dtype=np.float64)
        return {"kind": "value", **histogram(values, edges or _deciles(values), edges_from=_source(edges))}
    if len(classes) == 2 and hasattr(model, "predict_proba"):
        positive = np.asarray(model.predict_proba(features))[:, -1]
        return {
            "kind": "probability",
            "positiveClass": _plain(classes[-1]),
            **histogram(positive, edges or _DEFAULT_PROBABILITY_EDGES, edges_from=_source(edges, "default")),
        }
    predicted = pd.Series(model.predict(features))
    counts = predicted.value_counts()
    return {
        "kind": "class",
        "classes": [[_plain(label), int(counts.get(label, 0))] for label in classes],
        "count": len(predicted),
    }


def _deciles(values: np.ndarray[Any, Any]) -> list[float]:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return [0.0]
    edges = sorted({float(v) for v in np.quantile(present, _DECILES)})
    return edges


def _source(edges: Sequence[float] | None, fallback: str = "trainingDeciles") -> str:
    return "config" if edges is not None else fallback


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
