"""Score a fitted model on a holdout with the policy's metric, and compare two scores the right way round.

The challenger and the champion are scored by the same function on the same rows, so their scores
can be compared at all. Classification metrics of two classes treat the greater label as positive (1
for 0/1, "yes" for no/yes) and average per class (macro) otherwise; ``roc_auc`` and ``log_loss`` use
``predict_proba`` (``roc_auc`` falls back to ``decision_function``), against the model's own classes.
``log_loss``, ``rmse`` and ``mae`` are lower-is-better; :func:`improvement` turns any pair into
"how much better", positive when the first score is the better one.

Limits: a class absent from the holdout scores 0 for it in precision, recall and f1 (no warning);
``roc_auc`` needs every class of the model present in the holdout.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from retrain_operator.settings.training import LOWER_IS_BETTER, Metric

__all__ = ["PROBABILITY_METRICS", "ScoringError", "average_of", "higher_is_better", "improvement", "score_model"]

PROBABILITY_METRICS: frozenset[Metric] = frozenset({"roc_auc", "log_loss"})


class ScoringError(Exception):
    """A model could not be scored; the message says why in one line."""


def higher_is_better(metric: Metric) -> bool:
    return metric not in LOWER_IS_BETTER


def improvement(metric: Metric, score: float, than: float) -> float:
    """How much better ``score`` is than ``than`` (negative when worse), whichever way the metric points."""
    return score - than if higher_is_better(metric) else than - score


def average_of(metric: Metric, classes: tuple[object, ...]) -> str | None:
    """How a per-class metric is averaged: ``binary`` for two classes, ``macro`` beyond, None otherwise."""
    if metric not in {"f1", "precision", "recall", "roc_auc"}:
        return None
    return "binary" if len(classes) == 2 else "macro"


def score_model(model: BaseEstimator, *, metric: Metric, x: pd.DataFrame, y: pd.Series) -> float:
    """The holdout ``metric`` of ``model`` on rows ``x`` with truth ``y``; ScoringError when it cannot be had."""
    classes = tuple(getattr(model, "classes_", ()))
    try:
        value = _score(model, metric=metric, x=x, y=y, classes=classes)
    except ScoringError:
        raise
    except Exception as exc:  # scikit-learn raises many types for rows or labels a model cannot handle
        raise ScoringError(f"{type(exc).__name__}: {exc}") from exc
    if not math.isfinite(value):
        raise ScoringError(f"the holdout {metric} is not a number ({len(y)} holdout rows)")
    return value


def _score(
    model: BaseEstimator, *, metric: Metric, x: pd.DataFrame, y: pd.Series, classes: tuple[object, ...]
) -> float:
    if metric in PROBABILITY_METRICS:
        return _probability_score(model, metric=metric, x=x, y=y, classes=classes)
    predicted = model.predict(x)
    if metric == "accuracy":
        return float(accuracy_score(y, predicted))
    if metric == "r2":
        return float(r2_score(y, predicted))
    if metric == "rmse":
        return float(root_mean_squared_error(y, predicted))
    if metric == "mae":
        return float(mean_absolute_error(y, predicted))
    scorer = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[metric]
    if len(classes) == 2:
        return float(scorer(y, predicted, average="binary", pos_label=classes[-1], zero_division=0))
    return float(scorer(y, predicted, average="macro", zero_division=0))


def _probability_score(
    model: BaseEstimator, *, metric: Metric, x: pd.DataFrame, y: pd.Series, classes: tuple[object, ...]
) -> float:
    if hasattr(model, "predict_proba"):
        scores: np.ndarray[Any, Any] = np.asarray(model.predict_proba(x))
    elif metric == "roc_auc" and hasattr(model, "decision_function"):
        scores = np.asarray(model.decision_function(x))
    else:
        raise ScoringError(f"metric {metric} needs predict_proba, which {type(model).__name__} does not offer")
    if metric == "log_loss":
        return float(log_loss(y, scores, labels=list(classes)))
    if len(classes) == 2:
        positive = scores[:, -1] if scores.ndim == 2 else scores
        return float(roc_auc_score(np.asarray(y == classes[-1]), positive))
    return float(roc_auc_score(y, scores, multi_class="ovr", average="macro", labels=list(classes)))
