"""The pure parts of the registry and the trainer's promotion: pointer documents, the quality gate,
scoring direction, histograms, configuration, partitions and windows, the allowlist and model trust.

Table-driven and without storage; the same rules run end to end against SeaweedFS in test_promote.py.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from retrain_operator.registry.champion import ChampionPointer, encode_pointer, parse_pointer
from retrain_operator.settings.training import PromotionSpec
from retrain_operator.trainer.config import parse_config, parse_registry_config
from retrain_operator.trainer.data import apply_window, combine_parts, to_times
from retrain_operator.trainer.errors import ConfigError, DataError, RegistryError
from retrain_operator.trainer.fit import DEFAULT_ALLOWLIST, is_allowed, parse_allowlist, resolve_estimator
from retrain_operator.trainer.gate import ChampionScore, decide
from retrain_operator.trainer.histograms import format_le, histogram
from retrain_operator.trainer.modelio import dump_model, load_model, untrusted_types
from retrain_operator.trainer.scoring import higher_is_better, improvement

# --- the champion pointer document ---------------------------------------------------------------

POINTER = ChampionPointer(
    version="20261127T194000Z-0a1b2c3d",
    model_uri="s3://models/churn/versions/20261127T194000Z-0a1b2c3d/model.skops",
    metric="accuracy",
    score=0.951,
    trained_at="2026-11-27T19:40:00Z",
    promoted_at="2026-11-27T19:41:00Z",
    action="Train",
    reason="beats champion v1: accuracy 0.951 vs 0.94, better by 0.011 >= 0.005",
    previous="v1",
    generation=2,
    run={"policy": "team-a/churn", "policyUid": "uid", "job": "churn-retrain-2", "trigger": "drop"},
)


def test_pointer_round_trip() -> None:
    body = encode_pointer(POINTER)
    assert parse_pointer(body) == POINTER
    document = json.loads(body)
    assert document["schemaVersion"] == 1
    assert set(document) == {
        "schemaVersion", "version", "modelUri", "metric", "score", "trainedAt", "promotedAt", "action", "reason",
        "previous", "generation", "run",
    }  # fmt: skip


def test_pointer_reason_is_one_bounded_line() -> None:
    pointer = ChampionPointer(**{**POINTER.__dict__, "reason": "a\nb  " + "x" * 900})
    reason = json.loads(encode_pointer(pointer))["reason"]
    assert reason.startswith("a b x") and len(reason) == 500


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"modelUri": "s3://b/k", "generation": 1}', "'version'"),
        (b'{"version": "../x", "modelUri": "s3://b/k", "generation": 1}', "invalid version id"),
        (b'{"version": "v1", "generation": 1}', "'modelUri'"),
        (b'{"version": "v1", "modelUri": "b/k", "generation": 1}', "invalid S3 URI"),
        (b'{"version": "v1", "modelUri": "s3://b/k", "generation": 0}', "'generation'"),
        (b'{"version": "v1", "modelUri": "s3://b/k", "generation": true}', "'generation'"),
    ],
)
def test_invalid_pointers(body: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_pointer(body)


def test_pointer_tolerates_fields_it_does_not_know() -> None:
    body = b'{"version": "v1", "modelUri": "s3://b/k", "generation": 3, "future": 1, "score": "high"}'
    pointer = parse_pointer(body)
    assert (pointer.version, pointer.generation, pointer.score, pointer.previous) == ("v1", 3, None, None)


# --- the quality gate ----------------------------------------------------------------------------

GATE: list[tuple[str, str, float, ChampionScore | None, PromotionSpec, bool, str]] = [
    # (id, metric, challenger, champion, policy, promoted, reason starts with)
    ("first", "accuracy", 0.9, None, PromotionSpec(), True, "first model: no champion yet; accuracy 0.9"),
    ("first-min-score", "accuracy", 0.9, None, PromotionSpec(min_score=0.8), True,
     "first model: no champion yet; accuracy 0.9, passes minScore 0.8"),
    ("first-below-min", "accuracy", 0.7, None, PromotionSpec(min_score=0.8), False,
     "accuracy 0.7 is below minScore 0.8: kept as candidate"),
    ("beats", "accuracy", 0.951, ChampionScore("v1", 0.939), PromotionSpec(min_improvement=0.005), True,
     "beats champion v1: accuracy 0.951 vs 0.939, better by 0.012 >= 0.005"),
    ("too-little", "accuracy", 0.942, ChampionScore("v1", 0.939), PromotionSpec(min_improvement=0.005), False,
     "does not beat champion v1: accuracy 0.942 vs 0.939, better by 0.003, needs at least 0.005: kept as candidate"),
    ("tie", "accuracy", 0.9, ChampionScore("v1", 0.9), PromotionSpec(), False,
     "does not beat champion v1: accuracy 0.9 vs 0.9, better by 0, needs more than 0"),
    ("worse", "f1", 0.8, ChampionScore("v1", 0.9), PromotionSpec(), False, "does not beat champion v1: f1 0.8"),
    ("no-need-to-beat", "accuracy", 0.8, ChampionScore("v1", 0.9), PromotionSpec(must_beat_champion=False), True,
     "mustBeatChampion is false; accuracy 0.8 (champion v1: 0.9)"),
    ("no-need-still-min", "accuracy", 0.6,
     ChampionScore("v1", 0.9), PromotionSpec(must_beat_champion=False, min_score=0.7), False,
     "accuracy 0.6 is below minScore 0.7"),
    ("unscorable", "accuracy", 0.99, ChampionScore("v1", None, "UntrustedModel: ..."), PromotionSpec(), False,
     "champion v1 could not be scored on this holdout (UntrustedModel: ...): kept as candidate"),
    ("rmse-lower-beats", "rmse", 40.0, ChampionScore("v1", 45.0), PromotionSpec(min_improvement=2), True,
     "beats champion v1: rmse 40 vs 45, better by 5 >= 2"),
    ("rmse-higher-loses", "rmse", 50.0, ChampionScore("v1", 45.0), PromotionSpec(), False,
     "does not beat champion v1: rmse 50 vs 45, better by -5"),
    ("rmse-ceiling", "rmse", 60.0, None, PromotionSpec(min_score=55), False,
     "rmse 60 is above minScore 55 (lower is better for rmse): kept as candidate"),
    ("log-loss-under-ceiling", "log_loss", 0.2, None, PromotionSpec(min_score=0.3), True, "first model"),
    ("mae-beats", "mae", 1.0, ChampionScore("v1", 1.5), PromotionSpec(), True, "beats champion v1: mae 1 vs 1.5"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "policy", "promoted", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in GATE],
)
def test_gate(
    metric: Any, challenger: float, champion: ChampionScore | None, policy: PromotionSpec, promoted: bool, reason: str
) -> None:
    verdict = decide(metric=metric, challenger=challenger, champion=champion, policy=policy)
    assert verdict.passed is promoted
    assert verdict.reason.startswith(reason), verdict.reason
    assert "\n" not in verdict.reason


@pytest.mark.parametrize(
    ("metric", "higher"),
    [("accuracy", True), ("f1", True), ("precision", True), ("recall", True), ("roc_auc", True), ("r2", True),
     ("log_loss", False), ("rmse", False), ("mae", False)],
)  # fmt: skip
def test_metric_direction(metric: Any, higher: bool) -> None:
    assert higher_is_better(metric) is higher
    assert (improvement(metric, 2.0, 1.0) > 0) is higher


# --- histograms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bound", "text"),
    [(0.005, "0.005"), (0.5, "0.5"), (1, "1.0"), (2.5, "2.5"), (10, "10.0"), (1e6, "1e+06"), (123456789.0,
     "1.23456789e+08"), (-1, "-1.0"), (math.inf, "+Inf")],
)  # fmt: skip
def test_le_is_formatted_like_prometheus(bound: float, text: str) -> None:
    assert format_le(bound) == text


def test_histogram_counts_values_on_a_bound_in_that_bucket() -> None:
    values = np.array([0.0, 1.0, 1.5, 2.0, 2.0, 7.0, np.nan])

    result = histogram(values, [1.0, 2.0, 5.0], edges_from="config")

    assert result["edges"] == [1.0, 2.0, 5.0]
    assert result["counts"] == [2, 3, 0, 1]
    assert result["le"] == [["1.0", 2], ["2.0", 5], ["5.0", 5], ["+Inf", 6]]
    assert (result["count"], result["sum"], result["missing"]) == (6, 13.5, 1)
    assert result["edgesFrom"] == "config"


# --- configuration -------------------------------------------------------------------------------


def config(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"name": "churn", "registry": {"bucket": "models", "prefix": "churn/"}},
        "builtin": {"data": {"key": "train.csv"}, "target": "label", "estimator": "sklearn.linear_model.Ridge"},
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def test_full_configuration() -> None:
    parsed = parse_config(
        config(
            builtin__data={"prefix": "events/", "format": "parquet", "window": {"column": "ts", "last": "36h",
                                                                                "partitions": 3}},
            builtin__excludeFeatures=["id"],
            builtin__split={"method": "time", "column": "ts"},
            builtin__metric="rmse",
            promotion={"minScore": 50, "mustBeatChampion": False, "minImprovement": 0.5},
            builtin__histograms={"features": {"age": [18, 30.5, 65]}, "predictions": [0.5, 1]},
        )
    )  # fmt: skip
    data = parsed.builtin.data
    assert (data.key, data.prefix, data.format) == (None, "events/", "parquet")
    assert data.window is not None and data.window.last_seconds == 36 * 3600 and data.window.partitions == 3
    assert parsed.builtin.split.method == "time" and parsed.builtin.split.column == "ts"
    assert parsed.builtin.exclude_features == ("id",)
    assert parsed.promotion == PromotionSpec(min_score=50.0, must_beat_champion=False, min_improvement=0.5)
    assert parsed.builtin.histograms.features == {"age": (18.0, 30.5, 65.0)}
    assert parsed.builtin.histograms.predictions == (0.5, 1.0)


def test_defaults() -> None:
    parsed = parse_config(config())
    assert parsed.promotion == PromotionSpec(min_score=None, must_beat_champion=True, min_improvement=0.0)
    assert parsed.builtin.split.method == "random"
    assert parsed.builtin.data.window is None
    assert parsed.builtin.histograms.predictions is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"builtin__data": {}}, "exactly one of key (one object) or prefix"),
        ({"builtin__data": {"key": "a", "prefix": "b/"}}, "exactly one of key"),
        ({"builtin__data": {"key": "a", "window": {"partitions": 2}}}, "partitions needs builtin.data.prefix"),
        ({"builtin__data": {"key": "a", "window": {"column": "ts"}}}, "column and last together"),
        ({"builtin__data": {"key": "a", "window": {}}}, "needs column and last, or partitions"),
        ({"builtin__data": {"key": "a", "window": {"column": "ts", "last": "7 days"}}}, "invalid duration"),
        ({"builtin__data": {"prefix": "p/", "window": {"partitions": 0}}}, "partitions must be an integer"),
        ({"builtin__split": {"method": "time"}}, "needs builtin.split.column"),
        ({"builtin__split": {"method": "random", "column": "ts"}}, "only used with method time"),
        ({"builtin__split": {"method": "kfold"}}, "builtin.split.method must be one of random, time"),
        ({"builtin__metric": "auc"}, "builtin.metric must be one of accuracy, f1, precision, recall, roc_auc"),
        ({"builtin__features": ["a"], "builtin__excludeFeatures": ["b"]}, "not both"),
        ({"promotion": {"minImprovement": -0.1}}, "promotion.minImprovement must be a number of 0 or more"),
        ({"promotion": {"mustBeatChampion": "yes"}}, "promotion.mustBeatChampion must be true or false"),
        ({"promotion": {"minScore": "high"}}, "promotion.minScore must be a finite number"),
        ({"promotion": {"metric": "f1"}}, "unknown field promotion.metric"),
        ({"builtin__histograms": {"features": {"age": [3, 2]}}}, "histograms.features.age must be strictly increasing"),
        (
            {"builtin__histograms": {"predictions": []}},
            "histograms.predictions must be a list of 1 to 1000 finite numbers",
        ),
        ({"builtin__histograms": {"predictions": [1, "inf"]}}, "histograms.predictions must be a list"),
        ({"builtin__histograms": {"features": [1]}}, "histograms.features must be a JSON object"),
    ],
)
def test_invalid_configuration(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(**changes))
    assert caught.value.reason == "InvalidConfig"
    assert words in caught.value.message


def test_promote_reads_only_the_registry_part() -> None:
    parsed = parse_registry_config({**config(), "builtin": {"anything": True}, "run": {"job": "j"}})
    assert parsed.model.registry.prefix == "churn/" and parsed.run.job == "j"
    with pytest.raises(ConfigError, match=r"unknown field config\.colour"):
        parse_registry_config({**config(), "colour": 1})


# --- partitions and windows ----------------------------------------------------------------------


def test_partitions_are_concatenated_in_order() -> None:
    first = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    second = pd.DataFrame({"b": ["z"], "a": [3]})
    combined = combine_parts([("s3://b/p/1", first), ("s3://b/p/2", second)])
    assert combined["a"].tolist() == [1, 2, 3] and combined["b"].tolist() == ["x", "y", "z"]


def test_a_column_empty_in_one_partition_matches_any_type() -> None:
    first = pd.DataFrame({"a": [None, None], "b": [1, 2]})
    second = pd.DataFrame({"a": ["x"], "b": [3]})
    assert len(combine_parts([("p1", first), ("p2", second)])) == 3


@pytest.mark.parametrize(
    ("second", "words"),
    [
        (pd.DataFrame({"a": [1]}), ["partition p2 does not have the columns of p1", "missing 'b'"]),
        (pd.DataFrame({"a": [1], "b": [2], "c": [3]}), ["extra 'c'"]),
        (pd.DataFrame({"a": ["one"], "b": [2]}), ["column 'a' holds text values in partition p2", "number values"]),
    ],
)
def test_schema_mismatch(second: pd.DataFrame, words: list[str]) -> None:
    with pytest.raises(DataError) as caught:
        combine_parts([("p1", pd.DataFrame({"a": [1], "b": [2]})), ("p2", second)])
    assert caught.value.reason == "SchemaMismatch"
    for word in words:
        assert word in caught.value.message


def test_window_counts_back_from_the_newest_row() -> None:
    frame = pd.DataFrame(
        {"ts": ["2026-11-01T00:00:00Z", "2026-11-20T00:00:00Z", None, "2026-11-27T00:00:00Z"], "v": [1, 2, 3, 4]}
    )
    kept, window = apply_window(frame, column="ts", seconds=7 * 86400, source="s3://b/k")
    assert kept["v"].tolist() == [2, 4]
    assert (window.kept, window.dropped, window.untimed) == (2, 1, 1)
    assert window.start.isoformat() == "2026-11-20T00:00:00+00:00"


def test_numbers_are_unix_seconds() -> None:
    times = to_times(pd.Series([0, 86400]), column="ts", field="f", source="s")
    assert [t.isoformat() for t in times] == ["1970-01-01T00:00:00+00:00", "1970-01-02T00:00:00+00:00"]


@pytest.mark.parametrize("values", [["yesterday", "today"], [True, False]])
def test_a_column_that_is_not_a_time(values: list[object]) -> None:
    with pytest.raises(DataError) as caught:
        to_times(pd.Series(values), column="ts", field="builtin.split.column", source="s3://b/k")
    assert caught.value.reason == "InvalidColumn"
    assert "column 'ts' (builtin.split.column) of s3://b/k is not a time" in caught.value.message


# --- the estimator allowlist and model trust -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "allowed"),
    [(None, ("sklearn",)), ("", ("sklearn",)), ("xgboost", ("sklearn", "xgboost")),
     (" xgboost. , lightgbm.sklearn,sklearn", ("sklearn", "xgboost", "lightgbm.sklearn"))],
)  # fmt: skip
def test_allowlist(text: str | None, allowed: tuple[str, ...]) -> None:
    assert parse_allowlist(text) == allowed


@pytest.mark.parametrize("text", ["_private", "a/b", "os.path..x", "x-y"])
def test_invalid_allowlist_entries(text: str) -> None:
    with pytest.raises(ConfigError, match="RETRAIN_ESTIMATOR_ALLOWLIST entry"):
        parse_allowlist(text)


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("sklearn.linear_model.Ridge", True), ("sklearnx.Model", False), ("sklearn", False),
     ("sklearn.utils._testing.X", False), ("xgboost.XGBClassifier", True), ("os.system", False)],
)  # fmt: skip
def test_is_allowed(path: str, allowed: bool) -> None:
    assert is_allowed(path, ("sklearn", "xgboost")) is allowed


def test_not_allowed_names_the_allowed_prefixes() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_estimator("xgboost.XGBClassifier", DEFAULT_ALLOWLIST)
    assert caught.value.reason == "EstimatorNotAllowed"
    assert "allowed prefixes: sklearn (an administrator may add more in RETRAIN_ESTIMATOR_ALLOWLIST)" in str(
        caught.value.message
    )


def test_a_fitted_model_round_trips_with_trusted_types_only() -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    data = dump_model(model)
    assert untrusted_types(data, allowlist=DEFAULT_ALLOWLIST) == []
    loaded = load_model(data, allowlist=DEFAULT_ALLOWLIST, source="s3://b/m")
    assert loaded.predict(np.array([[0.0], [3.0]])).tolist() == [0, 1]


def test_a_model_that_names_a_function_is_refused_before_anything_is_built() -> None:
    data = dump_model(FunctionTransformer(func=os.system))
    assert "posix.system" in untrusted_types(data, allowlist=DEFAULT_ALLOWLIST)
    with pytest.raises(RegistryError) as caught:
        load_model(data, allowlist=(*DEFAULT_ALLOWLIST, "posix"), source="s3://b/m")
    assert caught.value.reason == "UntrustedModel"
    assert "s3://b/m contains types that are not trusted and was not loaded: posix.system" in caught.value.message


def test_garbage_is_not_a_model() -> None:
    with pytest.raises(RegistryError, match="not a readable skops file"):
        load_model(b"\x80\x04not a zip", allowlist=DEFAULT_ALLOWLIST, source="s3://b/m")
