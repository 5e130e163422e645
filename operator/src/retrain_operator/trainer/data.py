"""Turn the training objects' bytes into features and target, or say exactly what is wrong with them.

Parsing, combining partitions, the time window and column selection are pure functions of bytes and
configuration, so every data error can be tested without storage. Every row left out is counted by
cause, and the counts reach the model's metadata and the policy's status: CSV lines with more fields
than the header (``malformedLine``: skipped, where one such line used to fail the whole run), rows
whose target is empty (``missingLabel``: labels often arrive late, and an unlabelled row cannot be
learned from) and rows with every feature empty (``missingFeatures``: nothing to learn from either).
Anything else missing is left to the imputers of the model's pipeline, so the saved model handles the
same gaps at prediction time.

Partitions (every object under a prefix) are concatenated in key order and must share one schema: the
same column names, and each column of the same kind (number, text or time) wherever it holds values; a
column that is empty in one partition matches any kind. Otherwise the run fails with SchemaMismatch
naming both partitions, because silently aligning a renamed or retyped column would train on gaps.

Time columns (a window's or a time split's) may hold datetimes (Parquet), ISO 8601 text, or numbers
read as Unix seconds; all are taken as UTC. Rows without a time are dropped and counted. Unless
``features`` lists them, the window and split columns are not used as features: a timestamp does not
generalise to the future a model serves.

Limits: CSV must be UTF-8 with a header row and comma separators; Parquet is read with pyarrow. Column
types are inferred by pandas; a column is numeric if pandas reads it as numbers or booleans, and
categorical otherwise. Every partition is held in memory at once.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
from sklearn.utils.multiclass import type_of_target

from retrain_operator.settings.training import REGRESSION_METRICS, DataFormat, Metric
from retrain_operator.trainer.errors import DataError

__all__ = [
    "Dataset",
    "Window",
    "apply_window",
    "combine_parts",
    "parse_table",
    "read_table",
    "select_columns",
    "to_times",
]

_SHOWN_COLUMNS = 40

ColumnKind = Literal["number", "text", "time", "empty"]


@dataclass(frozen=True)
class Dataset:
    """Features and target of the labelled rows, and how the features will be encoded.

    ``table`` holds the same rows with every column, so a champion trained on other columns can be
    scored on exactly these rows; ``times`` holds the split column's times when the split is by time.
    """

    features: pd.DataFrame
    target: pd.Series
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    unlabelled: int
    table: pd.DataFrame | None = None
    times: pd.Series | None = None
    untimed: int = 0
    featureless: int = 0


@dataclass(frozen=True)
class Window:
    """What a time window kept: its bounds (UTC) and how many rows it dropped."""

    column: str
    start: pd.Timestamp
    end: pd.Timestamp
    kept: int
    dropped: int
    untimed: int


def parse_table(body: bytes, *, fmt: DataFormat, source: str) -> pd.DataFrame:
    """Parse an object's bytes as ``fmt``; ``source`` (an s3:// URI) names it in messages."""
    return read_table(body, fmt=fmt, source=source)[0]


def read_table(body: bytes, *, fmt: DataFormat, source: str) -> tuple[pd.DataFrame, int]:
    """Parse an object's bytes as ``fmt``, and count the CSV lines skipped for having too many fields."""
    if not body.strip():
        raise DataError("EmptyData", f"{source} is empty; upload a {fmt} file with a header row and data")
    malformed = 0
    try:
        if fmt == "csv":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                frame = pd.read_csv(io.BytesIO(body), encoding="utf-8", on_bad_lines="warn")
            for warning in caught:
                if issubclass(warning.category, pd.errors.ParserWarning):
                    malformed += str(warning.message).count("Skipping line")
                else:
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        else:
            frame = pd.read_parquet(io.BytesIO(body))
    except UnicodeDecodeError as exc:
        raise DataError("UnparsableData", f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except pd.errors.EmptyDataError:
        raise DataError("EmptyData", f"{source} has no columns; upload a {fmt} file with a header row") from None
    except Exception as exc:  # pandas and pyarrow raise many unrelated types for bad input
        raise DataError("UnparsableData", f"{source} is not valid {fmt}: {exc}") from None
    if frame.empty:
        detail = f" ({malformed} lines have more fields than the header)" if malformed else ""
        raise DataError("EmptyData", f"{source} has a header but no rows{detail}; it needs labelled rows to train on")
    return frame, malformed


def combine_parts(parts: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Concatenate parsed partitions (``(source, frame)`` in key order) after checking they share a schema."""
    if not parts:
        raise DataError("EmptyData", "no partitions to combine")
    first_source, first = parts[0]
    reference = {str(c): _kind(first[c]) for c in first.columns}
    for source, frame in parts[1:]:
        kinds = {str(c): _kind(frame[c]) for c in frame.columns}
        missing = [c for c in reference if c not in kinds]
        extra = [c for c in kinds if c not in reference]
        if missing or extra:
            detail = "; ".join(
                part
                for part in (
                    f"missing {', '.join(repr(c) for c in missing[:5])}" if missing else "",
                    f"extra {', '.join(repr(c) for c in extra[:5])}" if extra else "",
                )
                if part
            )
            raise DataError(
                "SchemaMismatch",
                f"partition {source} does not have the columns of {first_source} ({detail}); every partition "
                "under builtin.data.prefix must have the same columns",
            )
        for column, kind in kinds.items():
            if kind == "empty":
                continue
            if reference[column] == "empty":
                reference[column] = kind
            elif reference[column] != kind:
                raise DataError(
                    "SchemaMismatch",
                    f"column {column!r} holds {kind} values in partition {source} but {reference[column]} values "
                    f"in earlier partitions (first: {first_source}); every partition must keep each column's type",
                )
    if len(parts) == 1:
        return first
    return pd.concat([frame for _, frame in parts], ignore_index=True, sort=False)


def to_times(values: pd.Series, *, column: str, field: str, source: str) -> pd.Series:
    """The column as UTC timestamps (NaT where empty); InvalidColumn when it is not a time."""
    try:
        if pd.api.types.is_bool_dtype(values):
            raise ValueError("booleans are not times")
        if pd.api.types.is_numeric_dtype(values):
            return pd.to_datetime(values, unit="s", utc=True)
        if pd.api.types.is_datetime64_any_dtype(values):
            return pd.to_datetime(values, utc=True)
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError) as exc:
        sample = ", ".join(repr(v) for v in values.dropna().head(3).tolist())
        raise DataError(
            "InvalidColumn",
            f"column {column!r} ({field}) of {source} is not a time: {exc}; values like {sample}; use datetimes, "
            "ISO 8601 text or Unix seconds",
        ) from None


def apply_window(frame: pd.DataFrame, *, column: str, seconds: float, source: str) -> tuple[pd.DataFrame, Window]:
    """Keep the rows whose ``column`` lies within ``seconds`` of its newest value (bounds included)."""
    if column not in frame.columns:
        raise DataError("MissingColumn", _missing_message(column, "builtin.data.window.column", frame, source))
    times = to_times(frame[column], column=column, field="builtin.data.window.column", source=source)
    timed = times.notna()
    if not timed.any():
        raise DataError("EmptyData", f"column {column!r} (builtin.data.window.column) of {source} has no times")
    end = times[timed].max()
    start = end - pd.Timedelta(seconds=seconds)
    keep = timed & (times >= start)
    kept = frame[keep.to_numpy()].reset_index(drop=True)
    window = Window(
        column=column,
        start=start,
        end=end,
        kept=len(kept),
        dropped=int(timed.sum()) - len(kept),
        untimed=int((~timed).sum()),
    )
    return kept, window


def select_columns(
    frame: pd.DataFrame,
    *,
    target: str,
    features: tuple[str, ...],
    metric: Metric,
    source: str,
    exclude: tuple[str, ...] = (),
    reserved: tuple[str, ...] = (),
    time_column: str | None = None,
) -> Dataset:
    """Pick the target and feature columns and check them.

    Features are ``features`` when given, else every column but the target, ``exclude`` and ``reserved``
    (the window and split columns). With ``time_column`` the rows without a time are dropped and the
    times of the rest are kept for a time split.
    """
    columns = [str(column) for column in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    wanted = [(target, "builtin.target"), *((f, "builtin.features") for f in features)]
    wanted += [(f, "builtin.excludeFeatures") for f in exclude]
    if time_column is not None:
        wanted.append((time_column, "builtin.split.column"))
    for name, field in wanted:
        if name not in columns:
            raise DataError("MissingColumn", _missing_message(name, field, frame, source))
    left_out = {target, *exclude, *reserved}
    chosen = list(features) or [column for column in columns if column not in left_out]
    if not chosen:
        raise DataError(
            "MissingColumn", f"{source} has no feature columns besides the target {target!r} and the excluded ones"
        )

    labelled = frame[frame[target].notna()]
    unlabelled = len(frame) - len(labelled)
    if labelled.empty:
        raise DataError("EmptyData", f"every row of {source} has an empty target {target!r}; nothing to learn")
    times, untimed = None, 0
    if time_column is not None:
        all_times = to_times(labelled[time_column], column=time_column, field="builtin.split.column", source=source)
        timed = all_times.notna().to_numpy()
        untimed = int((~timed).sum())
        labelled, times = labelled[timed], all_times[timed].reset_index(drop=True)
        if labelled.empty:
            raise DataError("EmptyData", f"no labelled row of {source} has a time in {time_column!r}")
    empty = labelled[chosen].isna().all(axis=1).to_numpy()
    featureless = int(empty.sum())
    if featureless:
        labelled = labelled[~empty]
        if times is not None:
            times = times[~empty].reset_index(drop=True)
        if labelled.empty:
            raise DataError("EmptyData", f"every labelled row of {source} has all of its features empty")
    table = labelled.reset_index(drop=True)
    y = table[target]
    _check_target(y, target=target, metric=metric)

    x = table[chosen]
    numeric = tuple(c for c in chosen if pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c]))
    categorical = tuple(c for c in chosen if c not in numeric)
    return Dataset(
        features=x,
        target=y,
        numeric=numeric,
        categorical=categorical,
        unlabelled=unlabelled,
        table=table,
        times=times,
        untimed=untimed,
        featureless=featureless,
    )


def _missing_message(name: str, field: str, frame: pd.DataFrame, source: str) -> str:
    columns = [str(c) for c in frame.columns]
    shown = ", ".join(columns[:_SHOWN_COLUMNS]) + (" ..." if len(columns) > _SHOWN_COLUMNS else "")
    return f"column {name!r} ({field}) is not in {source}; available columns: {shown}"


def _kind(values: pd.Series) -> ColumnKind:
    if values.isna().all():
        return "empty"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "time"
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "number"
    return "text"


def _check_target(y: pd.Series, *, target: str, metric: Metric) -> None:
    if metric in REGRESSION_METRICS:
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            sample = ", ".join(repr(v) for v in y.drop_duplicates().head(3).tolist())
            raise DataError(
                "InvalidTarget",
                f"target {target!r} must be numeric for metric {metric}, found values like {sample}; "
                "use accuracy or f1 for class labels",
            )
        return
    kind = type_of_target(y)
    if kind == "continuous":
        raise DataError(
            "InvalidTarget",
            f"target {target!r} holds continuous numbers but metric {metric} scores class labels; "
            "use metric r2, rmse or mae with a regressor",
        )
    if y.nunique() < 2:
        raise DataError(
            "InvalidTarget",
            f"target {target!r} has a single class {y.iloc[:1].tolist()[0]!r}; a classifier needs at least two",
        )
