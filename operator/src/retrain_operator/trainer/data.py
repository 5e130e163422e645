"""Turn the training object's bytes into features and target, or say exactly what is wrong with them.

Parsing and column selection are pure functions of bytes and configuration, so every data error can
be tested without storage. Rows whose target is empty are dropped and counted (labels often arrive
late, and an unlabelled row cannot be learned from); anything else missing is left to the imputers of
the model's pipeline, so the saved model handles the same gaps at prediction time.

Limits: CSV must be UTF-8 with a header row and comma separators; Parquet is read with pyarrow. Column
types are inferred by pandas; a column is numeric if pandas reads it as numbers or booleans, and
categorical otherwise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd
from sklearn.utils.multiclass import type_of_target

from retrain_operator.trainer.config import DataFormat, Metric
from retrain_operator.trainer.errors import DataError

__all__ = ["Dataset", "parse_table", "select_columns"]

_SHOWN_COLUMNS = 40


@dataclass(frozen=True)
class Dataset:
    """Features and target of the labelled rows, and how the features will be encoded."""

    features: pd.DataFrame
    target: pd.Series
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    unlabelled: int


def parse_table(body: bytes, *, fmt: DataFormat, source: str) -> pd.DataFrame:
    """Parse an object's bytes as ``fmt``; ``source`` (an s3:// URI) names it in messages."""
    if not body.strip():
        raise DataError("EmptyData", f"{source} is empty; upload a {fmt} file with a header row and data")
    try:
        if fmt == "csv":
            frame = pd.read_csv(io.BytesIO(body), encoding="utf-8")
        else:
            frame = pd.read_parquet(io.BytesIO(body))
    except UnicodeDecodeError as exc:
        raise DataError("UnparsableData", f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except pd.errors.EmptyDataError:
        raise DataError("EmptyData", f"{source} has no columns; upload a {fmt} file with a header row") from None
    except Exception as exc:  # pandas and pyarrow raise many unrelated types for bad input
        raise DataError("UnparsableData", f"{source} is not valid {fmt}: {exc}") from None
    if frame.empty:
        raise DataError("EmptyData", f"{source} has a header but no rows; it needs labelled rows to train on")
    return frame


def select_columns(
    frame: pd.DataFrame, *, target: str, features: tuple[str, ...], metric: Metric, source: str
) -> Dataset:
    """Pick the target and feature columns (all but the target when ``features`` is empty) and check them."""
    columns = [str(column) for column in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    wanted = [target, *features]
    missing = [name for name in wanted if name not in columns]
    if missing:
        field = "builtin.target" if missing[0] == target else "builtin.features"
        shown = ", ".join(columns[:_SHOWN_COLUMNS]) + (" ..." if len(columns) > _SHOWN_COLUMNS else "")
        raise DataError(
            "MissingColumn",
            f"column {missing[0]!r} ({field}) is not in {source}; available columns: {shown}",
        )
    chosen = list(features) or [column for column in columns if column != target]
    if not chosen:
        raise DataError("MissingColumn", f"{source} has only the target column {target!r}; no feature columns")

    labelled = frame[frame[target].notna()]
    unlabelled = len(frame) - len(labelled)
    if labelled.empty:
        raise DataError("EmptyData", f"every row of {source} has an empty target {target!r}; nothing to learn")
    y = labelled[target].reset_index(drop=True)
    _check_target(y, target=target, metric=metric)

    x = labelled[chosen].reset_index(drop=True)
    numeric = tuple(c for c in chosen if pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c]))
    categorical = tuple(c for c in chosen if c not in numeric)
    return Dataset(features=x, target=y, numeric=numeric, categorical=categorical, unlabelled=unlabelled)


def _check_target(y: pd.Series, *, target: str, metric: Metric) -> None:
    if metric == "r2":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            sample = ", ".join(repr(v) for v in y.drop_duplicates().head(3).tolist())
            raise DataError(
                "InvalidTarget",
                f"target {target!r} must be numeric for metric r2, found values like {sample}; "
                "use accuracy or f1 for class labels",
            )
        return
    kind = type_of_target(y)
    if kind == "continuous":
        raise DataError(
            "InvalidTarget",
            f"target {target!r} holds continuous numbers but metric {metric} scores class labels; "
            "use metric r2 with a regressor",
        )
    if y.nunique() < 2:
        raise DataError(
            "InvalidTarget",
            f"target {target!r} has a single class {y.iloc[:1].tolist()[0]!r}; a classifier needs at least two",
        )
