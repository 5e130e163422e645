"""The registry key layout: the names the trainer writes and the operator reads must never drift."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from retrain_operator.registry import layout

NOW = datetime(2026, 11, 27, 19, 40, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("prefix", "version", "model", "metadata"),
    [
        ("", "v1", "versions/v1/model.skops", "versions/v1/metadata.json"),
        ("churn/", "v1", "churn/versions/v1/model.skops", "churn/versions/v1/metadata.json"),
        (
            "models/churn/",
            "20261127T194000Z-0a1b2c3d",
            "models/churn/versions/20261127T194000Z-0a1b2c3d/model.skops",
            "models/churn/versions/20261127T194000Z-0a1b2c3d/metadata.json",
        ),
    ],
)
def test_keys(prefix: str, version: str, model: str, metadata: str) -> None:
    assert layout.model_key(prefix, version) == model
    assert layout.metadata_key(prefix, version) == metadata
    assert layout.version_prefix(prefix, version) == metadata.removesuffix("metadata.json")
    assert layout.versions_prefix(prefix) == f"{prefix}versions/"
    assert layout.histograms_key(prefix, version) == metadata.replace("metadata.json", "histograms.json")
    assert layout.model_key(prefix, version, "joblib") == model.replace("model.skops", "model.joblib")
    assert layout.champion_key(prefix) == f"{prefix}champion.json"
    assert layout.promotions_prefix(prefix) == f"{prefix}promotions/"


@pytest.mark.parametrize(
    ("prefix", "generation", "key"),
    [
        ("", 1, "promotions/000000000001.json"),
        ("churn/", 42, "churn/promotions/000000000042.json"),
        ("churn/", 10**12 - 1, "churn/promotions/999999999999.json"),
    ],
)
def test_promotion_keys_sort_by_generation(prefix: str, generation: int, key: str) -> None:
    assert layout.promotion_key(prefix, generation) == key
    assert layout.generation_of_promotion_key(prefix, key) == generation
    assert layout.promotion_key(prefix, 9) < layout.promotion_key(prefix, 10) < layout.promotion_key(prefix, 100)


@pytest.mark.parametrize("generation", [0, -1, 10**12])
def test_invalid_generations(generation: int) -> None:
    with pytest.raises(ValueError, match="invalid champion generation"):
        layout.promotion_key("", generation)


@pytest.mark.parametrize(
    "key",
    ["churn/promotions/1.json", "churn/promotions/000000000000.json", "churn/promotions/00000000000x.json",
     "churn/promotions/000000000001.txt", "other/promotions/000000000001.json", "churn/champion.json"],
)  # fmt: skip
def test_other_keys_are_not_promotion_records(key: str) -> None:
    assert layout.generation_of_promotion_key("churn/", key) is None


@pytest.mark.parametrize(
    ("key", "fmt"),
    [("a/versions/v/model.skops", "skops"), ("model.joblib", "joblib"), ("a/versions/v/metadata.json", None)],
)
def test_model_format_of_key(key: str, fmt: str | None) -> None:
    assert layout.model_format_of_key(key) == fmt


def test_only_skops_is_loadable() -> None:
    assert layout.LOADABLE_FORMATS == {"skops"}


def test_unknown_model_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown model format 'pickle'"):
        layout.model_key("", "v1", "pickle")  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["", "a/", "models/churn/", "a.b/c_d/(x)/", "x!*-/"])
def test_valid_prefixes(prefix: str) -> None:
    assert layout.check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["churn", "/churn/", "a//", "a b/", "../", "a/./", "a/../", "é/"])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid registry prefix"):
        layout.check_prefix(prefix)


@pytest.mark.parametrize("version", ["v1", "1", "20261127T194000Z-0a1b2c3d", "a.b_c-d", "x" * 63])
def test_valid_version_ids(version: str) -> None:
    assert layout.check_version_id(version) == version


@pytest.mark.parametrize("version", ["", "-v1", "v1-", ".", "..", "a/b", "v 1", "x" * 64, "v1/", "ü"])
def test_invalid_version_ids(version: str) -> None:
    with pytest.raises(ValueError, match="invalid version id"):
        layout.check_version_id(version)
    with pytest.raises(ValueError):
        layout.model_key("", version)


@pytest.mark.parametrize(
    ("now", "token", "expected"),
    [
        (NOW, "job-a", "20261127T194000Z-"),
        (NOW.astimezone(timezone(timedelta(hours=-5))), "job-a", "20261127T194000Z-"),
        (NOW + timedelta(microseconds=999_999), None, "20261127T194000Z-"),
    ],
)
def test_new_version_id_is_utc_time_then_suffix(now: datetime, token: str | None, expected: str) -> None:
    version = layout.new_version_id(now, token)
    assert version.startswith(expected)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", version)
    assert layout.check_version_id(version) == version
    assert layout.version_time(version) == NOW


def test_new_version_id_from_token_is_stable_and_random_otherwise() -> None:
    assert layout.new_version_id(NOW, "job-a") == layout.new_version_id(NOW, "job-a")
    assert layout.new_version_id(NOW, "job-a") != layout.new_version_id(NOW, "job-b")
    assert len({layout.new_version_id(NOW) for _ in range(50)}) == 50


def test_new_version_id_sorts_by_time() -> None:
    times = [NOW + timedelta(seconds=s) for s in (0, 1, 59, 3600, 86400 * 40)]
    versions = [layout.new_version_id(t, "zzzz") for t in times[:1]] + [
        layout.new_version_id(t, "aaaa") for t in times[1:]
    ]
    assert sorted(versions) == versions


def test_new_version_id_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        layout.new_version_id(datetime(2026, 11, 27, 19, 40))


@pytest.mark.parametrize("version", ["v1", "20261127T194000Z-xyz12345", "20261127T194000Z-0a1b2c3"])
def test_version_time_of_other_ids_is_none(version: str) -> None:
    assert layout.version_time(version) is None


@pytest.mark.parametrize(
    ("prefix", "key", "version"),
    [
        ("churn/", "churn/versions/v1/model.joblib", "v1"),
        ("churn/", "churn/versions/v1/model.skops", "v1"),
        ("churn/", "churn/promotions/000000000001.json", None),
        ("churn/", "churn/versions/v1/metadata.json", "v1"),
        ("", "versions/v2/anything/deeper", "v2"),
        ("churn/", "churn/versions/v1", None),
        ("churn/", "churn/versions/", None),
        ("churn/", "other/versions/v1/model.joblib", None),
        ("churn/", "churn/champion.json", None),
        ("churn/", "churn/versions/../x/model.joblib", None),
        ("", "data/train.csv", None),
    ],
)
def test_version_of_key(prefix: str, key: str, version: str | None) -> None:
    assert layout.version_of_key(prefix, key) == version


@pytest.mark.parametrize(
    ("bucket", "key", "uri"),
    [
        ("models", "churn/versions/v1/model.joblib", "s3://models/churn/versions/v1/model.joblib"),
        ("my.bucket", "k", "s3://my.bucket/k"),
    ],
)
def test_s3_uri_round_trip(bucket: str, key: str, uri: str) -> None:
    assert layout.s3_uri(bucket, key) == uri
    assert layout.parse_s3_uri(uri) == (bucket, key)


@pytest.mark.parametrize("uri", ["models/k", "s3://models", "s3://models/", "s3:///k", "http://models/k"])
def test_parse_s3_uri_rejects(uri: str) -> None:
    with pytest.raises(ValueError, match="invalid S3 URI"):
        layout.parse_s3_uri(uri)


@pytest.mark.parametrize("bucket", ["", "a/b"])
def test_s3_uri_rejects_bad_buckets(bucket: str) -> None:
    with pytest.raises(ValueError, match="invalid bucket name"):
        layout.s3_uri(bucket, "k")
