"""Choose the estimator, build the pipeline, fit it on a split and score the holdout.

Only scikit-learn classifiers and regressors named by their public import path may run: the class is
imported by name from the policy, so the rule keeps a policy from importing arbitrary code. Parameter
values are validated by scikit-learn itself, at ``set_params`` and at ``fit``, and its message is
passed on.

The saved model is a Pipeline whose first step encodes raw columns (median imputation and scaling for
numeric columns, most-frequent imputation and one-hot encoding for the others, unseen categories
ignored), so whoever loads it predicts on rows shaped like the training file without this package.

Limits: one holdout split, no cross-validation or search; the scaler is applied for every estimator
(harmless for trees, needed by linear models); the encoded matrix is dense, so one-hot encoding a
high-cardinality column costs memory in proportion to its distinct values. Warnings raised while
fitting are recorded in the metadata, not fatal.
"""

from __future__ import annotations

import importlib
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, f1_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from retrain_operator.trainer.config import Metric
from retrain_operator.trainer.data import Dataset
from retrain_operator.trainer.errors import ConfigError, DataError, TrainingError, one_line

__all__ = ["FitResult", "fit_and_score", "make_estimator", "resolve_estimator"]

ESTIMATOR_RULE: Final = (
    "builtin.estimator must be the public import path of a scikit-learn classifier or regressor class, "
    "for example sklearn.linear_model.LogisticRegression or sklearn.ensemble.RandomForestRegressor"
)
_PATH = re.compile(r"^sklearn(?:\.[A-Za-z][A-Za-z0-9_]*)+$")
_MAX_WARNINGS: Final = 10
# scikit-learn's parameter validation error lives in a private module; match it by name instead.
_PARAM_ERROR_NAMES: Final = {"InvalidParameterError"}


@dataclass(frozen=True)
class FitResult:
    """A fitted pipeline and how it did on the holdout."""

    model: Pipeline
    score: float
    train_rows: int
    test_rows: int
    stratified: bool
    classes: tuple[object, ...]
    f1_average: str | None
    warnings: tuple[str, ...]


def resolve_estimator(path: str) -> type[BaseEstimator]:
    """Import the estimator class ``path`` if the allowlist admits it; EstimatorNotAllowed otherwise."""
    if not _PATH.match(path):
        raise ConfigError("EstimatorNotAllowed", f"{path!r} is not allowed: {ESTIMATOR_RULE}")
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError("EstimatorNotAllowed", f"{path!r}: no module {module_name}; {ESTIMATOR_RULE}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, BaseEstimator) or not callable(getattr(cls, "fit", None)):
        raise ConfigError("EstimatorNotAllowed", f"{path!r} is not an estimator class; {ESTIMATOR_RULE}")
    return cls


def make_estimator(path: str, params: Mapping[str, object], *, metric: Metric, seed: int) -> BaseEstimator:
    """Instantiate the estimator with ``params``; seed it unless ``random_state`` is given."""
    cls = resolve_estimator(path)
    try:
        estimator = cls()
    except TypeError as exc:
        raise ConfigError(
            "EstimatorNotAllowed", f"{path!r} needs constructor arguments ({exc}); {ESTIMATOR_RULE}"
        ) from None
    classifier, regressor = is_classifier(estimator), is_regressor(estimator)
    if not classifier and not regressor:
        raise ConfigError("EstimatorNotAllowed", f"{path!r} is neither a classifier nor a regressor; {ESTIMATOR_RULE}")
    if metric == "r2" and not regressor:
        raise ConfigError(
            "InvalidConfig",
            f"builtin.metric r2 scores a regressor but {path} is a classifier; use accuracy or f1, or a regressor",
        )
    if metric != "r2" and not classifier:
        raise ConfigError(
            "InvalidConfig",
            f"builtin.metric {metric} scores a classifier but {path} is a regressor; use r2, or a classifier",
        )
    settings = dict(params)
    if "random_state" in estimator.get_params(deep=False) and "random_state" not in settings:
        settings["random_state"] = seed
    try:
        estimator.set_params(**settings)
    except (ValueError, TypeError) as exc:
        raise ConfigError("InvalidParams", f"builtin.params for {path}: {exc}") from None
    return estimator


def fit_and_score(
    dataset: Dataset, *, estimator: BaseEstimator, metric: Metric, test_size: float, seed: int
) -> FitResult:
    """Split, fit the pipeline on the training part and score it on the holdout."""
    x_train, x_test, y_train, y_test, stratified = _split(dataset, metric=metric, test_size=test_size, seed=seed)
    model = Pipeline([("preprocess", _preprocessor(dataset)), ("estimator", estimator)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.fit(x_train, y_train)
        except Exception as exc:
            if any(cls.__name__ in _PARAM_ERROR_NAMES for cls in type(exc).__mro__):
                raise ConfigError("InvalidParams", f"builtin.params: {exc}") from None
            raise TrainingError("TrainingError", f"fit failed: {type(exc).__name__}: {exc}") from None
        try:
            predicted = model.predict(x_test)
            score, average = _score(metric, y_test, predicted, classes=_classes(model))
        except Exception as exc:
            raise TrainingError("TrainingError", f"scoring failed: {type(exc).__name__}: {exc}") from None
    if not math.isfinite(score):
        raise TrainingError(
            "TrainingError",
            f"the holdout {metric} is not a number ({len(y_test)} holdout rows); add rows or raise builtin.testSize",
        )
    return FitResult(
        model=model,
        score=score,
        train_rows=len(y_train),
        test_rows=len(y_test),
        stratified=stratified,
        classes=_classes(model),
        f1_average=average,
        warnings=_summarize(caught),
    )


def _split(
    dataset: Dataset, *, metric: Metric, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series, bool]:
    x, y = dataset.features, dataset.target
    if metric != "r2":
        try:
            parts = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
            return parts[0], parts[1], parts[2], parts[3], True
        except ValueError:
            # Too few rows of some class to stratify; an unstratified split is still useful.
            pass
    try:
        parts = train_test_split(x, y, test_size=test_size, random_state=seed)
    except ValueError as exc:
        raise DataError(
            "TooFewRows", f"{len(y)} labelled rows cannot be split with testSize {test_size}: {exc}"
        ) from None
    return parts[0], parts[1], parts[2], parts[3], False


def _preprocessor(dataset: Dataset) -> ColumnTransformer:
    transformers: list[tuple[str, Any, list[str]]] = []
    if dataset.numeric:
        numeric = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
        transformers.append(("numeric", numeric, list(dataset.numeric)))
    if dataset.categorical:
        categorical = make_pipeline(
            SimpleImputer(strategy="most_frequent", keep_empty_features=True),
            OneHotEncoder(handle_unknown="ignore"),
        )
        transformers.append(("categorical", categorical, list(dataset.categorical)))
    # Always dense: several estimators (HistGradientBoosting*, GaussianNB, ...) reject sparse input.
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def _classes(model: Pipeline) -> tuple[object, ...]:
    classes = getattr(model[-1], "classes_", None)
    if classes is None:
        return ()
    return tuple(value.item() if isinstance(value, np.generic) else value for value in classes)


def _score(
    metric: Metric, truth: pd.Series, predicted: np.ndarray[Any, Any], *, classes: tuple[object, ...]
) -> tuple[float, str | None]:
    if metric == "accuracy":
        return float(accuracy_score(truth, predicted)), None
    if metric == "r2":
        return float(r2_score(truth, predicted)), None
    if len(classes) == 2:
        # Binary F1 of the greater label: 1 for 0/1 targets, "yes" for no/yes.
        return float(f1_score(truth, predicted, average="binary", pos_label=classes[-1])), "binary"
    return float(f1_score(truth, predicted, average="macro")), "macro"


def _summarize(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in caught:
        seen.setdefault(one_line(f"{item.category.__name__}: {item.message}", 300), None)
    return tuple(list(seen)[:_MAX_WARNINGS])
