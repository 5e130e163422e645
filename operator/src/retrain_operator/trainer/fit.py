"""Choose the estimator, build the pipeline, fit it on a split and score the holdout.

Only classifiers and regressors named by their public import path under an allowed prefix may run:
the class is imported by name from the policy, so the rule keeps a policy from importing arbitrary
code. The allowlist is ``sklearn`` and whatever prefixes the administrator adds in
``RETRAIN_ESTIMATOR_ALLOWLIST`` (comma-separated, e.g. ``xgboost,lightgbm.sklearn``); no path segment
may start with ``_``. The same prefixes decide which classes a stored model may contain when it is
loaded (:mod:`.modelio`). Parameter values are validated by scikit-learn itself, at ``set_params``
and at ``fit``, and its message is passed on.

The split is random (stratified for classification when every class has enough rows, seeded) or by
time: the newest ``testSize`` fraction of rows by the split column is the holdout, which is how the
model will be used, on rows newer than any it saw.

The saved model is a Pipeline whose first step encodes raw columns (median imputation and scaling for
numeric columns, most-frequent imputation and one-hot encoding for the others, unseen categories
ignored), so whoever loads it predicts on rows shaped like the training file without this package.

Limits: one holdout split, no cross-validation or search; a time split keeps rows with equal times
together only as far as a stable sort does; the scaler is applied for every estimator
(harmless for trees, needed by linear models); the encoded matrix is dense, so one-hot encoding a
high-cardinality column costs memory in proportion to its distinct values. Warnings raised while
fitting are recorded in the metadata, not fatal.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from retrain_operator.settings import estimators
from retrain_operator.settings.estimators import ALLOWLIST_ENV, DEFAULT_ALLOWLIST, is_allowed
from retrain_operator.settings.training import METRICS, REGRESSION_METRICS, Metric, SplitSpec
from retrain_operator.trainer.data import Dataset
from retrain_operator.trainer.errors import ConfigError, DataError, TrainingError, one_line
from retrain_operator.trainer.scoring import PROBABILITY_METRICS, ScoringError, average_of, score_model

__all__ = [
    "ALLOWLIST_ENV",
    "DEFAULT_ALLOWLIST",
    "FitResult",
    "fit_and_score",
    "is_allowed",
    "make_estimator",
    "parse_allowlist",
    "resolve_estimator",
]

ESTIMATOR_RULE: Final = (
    "builtin.estimator must be the public import path of a scikit-learn classifier or regressor class "
    "(or one under a prefix the administrator allows), "
    "for example sklearn.linear_model.LogisticRegression or sklearn.ensemble.RandomForestRegressor"
)
_CLASSIFICATION_METRICS: Final = ", ".join(m for m in METRICS if m not in REGRESSION_METRICS)
_REGRESSION_METRICS: Final = ", ".join(m for m in METRICS if m in REGRESSION_METRICS)
_MAX_WARNINGS: Final = 10
# scikit-learn's parameter validation error lives in a private module; match it by name instead.
_PARAM_ERROR_NAMES: Final = {"InvalidParameterError"}


@dataclass(frozen=True)
class FitResult:
    """A fitted pipeline, how it did on the holdout, and the rows of both sides of the split.

    ``holdout`` keeps every column of the holdout rows, so a champion trained on other columns can be
    scored on the very same rows; ``train_features`` feeds the reference histograms.
    """

    model: Pipeline
    score: float
    train_rows: int
    test_rows: int
    stratified: bool
    classes: tuple[object, ...]
    f1_average: str | None
    warnings: tuple[str, ...]
    holdout: pd.DataFrame
    holdout_target: pd.Series
    train_features: pd.DataFrame
    average: str | None = None
    split: str = "random"
    holdout_start: pd.Timestamp | None = None


def parse_allowlist(text: str | None) -> tuple[str, ...]:
    """The allowed estimator prefixes (:func:`retrain_operator.settings.estimators.parse_allowlist`), or ConfigError."""
    try:
        return estimators.parse_allowlist(text)
    except estimators.InvalidAllowlist as exc:
        raise ConfigError("InvalidConfig", str(exc)) from None


def _allowed_text(allowlist: tuple[str, ...]) -> str:
    return f"allowed prefixes: {', '.join(allowlist)} (an administrator may add more in {ALLOWLIST_ENV})"


def resolve_estimator(path: str, allowlist: tuple[str, ...] = DEFAULT_ALLOWLIST) -> type[BaseEstimator]:
    """Import the estimator class ``path`` if the allowlist admits it; EstimatorNotAllowed otherwise."""
    if not is_allowed(path, allowlist) or path.count(".") < 1:
        raise ConfigError(
            "EstimatorNotAllowed", f"{path!r} is not allowed: {ESTIMATOR_RULE}; {_allowed_text(allowlist)}"
        )
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError("EstimatorNotAllowed", f"{path!r}: no module {module_name}; {ESTIMATOR_RULE}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, BaseEstimator) or not callable(getattr(cls, "fit", None)):
        raise ConfigError("EstimatorNotAllowed", f"{path!r} is not an estimator class; {ESTIMATOR_RULE}")
    return cls


def make_estimator(
    path: str,
    params: Mapping[str, object],
    *,
    metric: Metric,
    seed: int,
    allowlist: tuple[str, ...] = DEFAULT_ALLOWLIST,
) -> BaseEstimator:
    """Instantiate the estimator with ``params``; seed it unless ``random_state`` is given."""
    cls = resolve_estimator(path, allowlist)
    try:
        estimator = cls()
    except TypeError as exc:
        raise ConfigError(
            "EstimatorNotAllowed", f"{path!r} needs constructor arguments ({exc}); {ESTIMATOR_RULE}"
        ) from None
    classifier, regressor = is_classifier(estimator), is_regressor(estimator)
    if not classifier and not regressor:
        raise ConfigError("EstimatorNotAllowed", f"{path!r} is neither a classifier nor a regressor; {ESTIMATOR_RULE}")
    if metric in REGRESSION_METRICS and not regressor:
        raise ConfigError(
            "InvalidConfig",
            f"builtin.metric {metric} scores a regressor but {path} is a classifier; "
            f"use one of {_CLASSIFICATION_METRICS}, or a regressor",
        )
    if metric not in REGRESSION_METRICS and not classifier:
        raise ConfigError(
            "InvalidConfig",
            f"builtin.metric {metric} scores a classifier but {path} is a regressor; "
            f"use one of {_REGRESSION_METRICS}, or a classifier",
        )
    settings = dict(params)
    if "random_state" in estimator.get_params(deep=False) and "random_state" not in settings:
        settings["random_state"] = seed
    try:
        estimator.set_params(**settings)
    except (ValueError, TypeError) as exc:
        raise ConfigError("InvalidParams", f"builtin.params for {path}: {exc}") from None
    if metric in PROBABILITY_METRICS and not hasattr(estimator, "predict_proba"):
        if metric == "log_loss" or not hasattr(estimator, "decision_function"):
            raise ConfigError(
                "InvalidConfig",
                f"builtin.metric {metric} needs class probabilities but {path} with these params has no "
                "predict_proba; choose another metric or estimator",
            )
    return estimator


def fit_and_score(
    dataset: Dataset,
    *,
    estimator: BaseEstimator,
    metric: Metric,
    test_size: float,
    seed: int,
    split: SplitSpec | None = None,
) -> FitResult:
    """Split, fit the pipeline on the training part and score it on the holdout."""
    split = split or SplitSpec()
    train_rows, test_rows, stratified = _split(dataset, metric=metric, test_size=test_size, seed=seed, split=split)
    table = dataset.table if dataset.table is not None else dataset.features
    x_train, y_train = dataset.features.iloc[train_rows], dataset.target.iloc[train_rows]
    x_test, y_test = dataset.features.iloc[test_rows], dataset.target.iloc[test_rows]
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
            score = score_model(model, metric=metric, x=x_test, y=y_test)
        except ScoringError as exc:
            message = str(exc)
            if "not a number" in message:
                message += "; add rows or raise builtin.testSize"
            raise TrainingError("TrainingError", f"scoring failed: {message}") from None
    classes = _classes(model)
    average = average_of(metric, classes)
    holdout_start = None
    if split.method == "time" and dataset.times is not None:
        holdout_start = dataset.times.iloc[test_rows].min()
    return FitResult(
        model=model,
        score=score,
        train_rows=len(y_train),
        test_rows=len(y_test),
        stratified=stratified,
        classes=classes,
        f1_average=average if metric == "f1" else None,
        warnings=_summarize(caught),
        holdout=table.iloc[test_rows].reset_index(drop=True),
        holdout_target=y_test.reset_index(drop=True),
        train_features=x_train.reset_index(drop=True),
        average=average,
        split=split.method,
        holdout_start=holdout_start,
    )


Rows = np.ndarray[Any, np.dtype[np.intp]]


def _split(
    dataset: Dataset, *, metric: Metric, test_size: float, seed: int, split: SplitSpec
) -> tuple[Rows, Rows, bool]:
    y = dataset.target
    rows = np.arange(len(y), dtype=np.intp)
    if split.method == "time":
        if dataset.times is None:
            raise DataError("MissingColumn", "builtin.split.method time needs the times of builtin.split.column")
        order = np.argsort(dataset.times.to_numpy(), kind="stable").astype(np.intp)
        holdout = math.ceil(len(order) * test_size)
        if len(order) - holdout < 1 or holdout < 1:
            raise DataError("TooFewRows", f"{len(y)} labelled rows cannot be split by time with testSize {test_size}")
        return order[: len(order) - holdout], order[len(order) - holdout :], False
    if metric not in REGRESSION_METRICS:
        try:
            train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=y)
            return np.asarray(train, dtype=np.intp), np.asarray(test, dtype=np.intp), True
        except ValueError:
            # Too few rows of some class to stratify; an unstratified split is still useful.
            pass
    try:
        train, test = train_test_split(rows, test_size=test_size, random_state=seed)
    except ValueError as exc:
        raise DataError(
            "TooFewRows", f"{len(y)} labelled rows cannot be split with testSize {test_size}: {exc}"
        ) from None
    return np.asarray(train, dtype=np.intp), np.asarray(test, dtype=np.intp), False


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


def _summarize(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in caught:
        seen.setdefault(one_line(f"{item.category.__name__}: {item.message}", 300), None)
    return tuple(list(seen)[:_MAX_WARNINGS])
