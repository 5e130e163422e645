"""The drift and dataVolume triggers: from observed buckets (or counts) to states, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from retrain_operator.domain.api import parse_policy_spec
from retrain_operator.domain.triggers import Observation, PreviousState, evaluate_data_volume, evaluate_drift
from tests.policies import policy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EDGES = ["1", "2", "3", "4", "+Inf"]


def cumulative(counts: list[float]) -> dict[str, float]:
    return dict(zip(EDGES, np.cumsum(counts).tolist(), strict=True))


def trigger(**drift: Any) -> Any:
    for_ = drift.pop("for_", "0s")
    body = {"metric": "feature_value", "reference": {"source": "Window"}, "threshold": 0.1, "minSamples": 50} | drift
    spec = parse_policy_spec(policy(triggers=[{"name": "drift", "for": for_, "drift": body}])["spec"])
    return spec.triggers[0]


BASE = [100, 200, 400, 200, 100]
SHIFT = [20, 80, 200, 400, 300]


def observe(current: dict[str, list[float]], reference: dict[str, list[float]], **kw: Any) -> Observation:
    return Observation(
        current_buckets={f: cumulative(c) for f, c in current.items()},
        reference_buckets={f: cumulative(c) for f, c in reference.items()},
        **kw,
    )


def test_drifted_feature_fires_and_is_named_with_its_value() -> None:
    t = trigger(statistic="jensenShannonDistance")
    result = evaluate_drift(
        t,
        observation=observe({"age": SHIFT, "income": BASE}, {"age": BASE, "income": BASE}),
        previous=PreviousState(),
        now=NOW,
    )
    expected = jensenshannon(np.array(BASE) / sum(BASE), np.array(SHIFT) / sum(SHIFT), base=2)
    assert result.state == "firing" and result.value == pytest.approx(expected, abs=1e-12)
    assert result.details["features"][0] == {"name": "age", "value": round(expected, 6)}
    assert "age" in result.message


def test_identical_distributions_are_clear() -> None:
    result = evaluate_drift(
        trigger(), observation=observe({"age": BASE}, {"age": [2 * c for c in BASE]}), previous=PreviousState(), now=NOW
    )
    assert result.state == "clear" and result.value == pytest.approx(0.0, abs=1e-12)


def test_for_counts_from_when_drift_was_first_seen() -> None:
    t = trigger(for_="10m")
    obs = observe({"age": SHIFT}, {"age": BASE})
    first = evaluate_drift(t, observation=obs, previous=PreviousState(), now=NOW)
    assert first.state == "pending" and first.since == NOW and "fires in 10m" in first.message
    later = evaluate_drift(t, observation=obs, previous=PreviousState("pending", NOW), now=NOW + timedelta(minutes=10))
    assert later.state == "firing"


@pytest.mark.parametrize(
    ("observation", "problem"),
    [
        (
            Observation(
                current_buckets={"age": {"1": 5, "5": 10, "+Inf": 20}}, reference_buckets={"age": cumulative(BASE)}
            ),
            "BucketMismatch",
        ),
        (observe({"age": [1, 1, 1, 1, 1]}, {"age": BASE}), "InsufficientSamples"),
        (Observation.missing("NoData", "no series"), "NoData"),
        (
            Observation(
                current_buckets={"age": {"1": 5, "2": 3, "+Inf": 20}},
                reference_buckets={"age": {"1": 5, "2": 3, "+Inf": 20}},
            ),
            "MalformedHistogram",
        ),
    ],
)
def test_unusable_data_is_inconclusive_with_its_reason(observation: Observation, problem: str) -> None:
    result = evaluate_drift(trigger(), observation=observation, previous=PreviousState(), now=NOW)
    assert result.state == "inconclusive" and result.problem == problem and result.value is None


def test_bucket_mismatch_names_the_metric_and_both_edge_lists() -> None:
    obs = Observation(
        current_buckets={"age": {"1": 500, "5": 800, "+Inf": 1000}}, reference_buckets={"age": cumulative(BASE)}
    )
    result = evaluate_drift(trigger(), observation=obs, previous=PreviousState(), now=NOW)
    assert "feature_value" in result.message and "age" in result.message


def test_fixed_reference_counts() -> None:
    t = trigger(reference={"source": "Fixed", "counts": {"age": cumulative(BASE)}})
    result = evaluate_drift(
        t, observation=Observation(current_buckets={"age": cumulative(SHIFT)}), previous=PreviousState(), now=NOW
    )
    assert result.state == "firing"


def test_learned_threshold_is_recorded() -> None:
    rng = np.random.default_rng(7)
    windows = tuple({"age": cumulative(rng.multinomial(1000, np.array(BASE) / 1000).tolist())} for _ in range(24))
    t = trigger(threshold=None, learnThreshold={"k": 3, "windows": 24})
    calm = evaluate_drift(
        t,
        observation=observe({"age": BASE}, {"age": BASE}, reference_windows=windows),
        previous=PreviousState(),
        now=NOW,
    )
    shifted = evaluate_drift(
        t,
        observation=observe({"age": SHIFT}, {"age": BASE}, reference_windows=windows),
        previous=PreviousState(),
        now=NOW,
    )
    assert calm.state == "clear" and shifted.state == "firing"
    learned = shifted.details["learnedThreshold"]["age"]
    assert learned["windows"] == 24 and learned["threshold"] == pytest.approx(shifted.threshold)


def test_p_value_mode_fires_below_the_significance_level() -> None:
    t = trigger(statistic="chiSquare", usePValue=True, threshold=0.01)
    result = evaluate_drift(t, observation=observe({"age": SHIFT}, {"age": BASE}), previous=PreviousState(), now=NOW)
    assert result.state == "firing" and result.value is not None and result.value < 0.01


def test_share_mode_needs_enough_features() -> None:
    t = trigger(mode="share", minShare=0.5)
    one_of_three = observe({"a": SHIFT, "b": BASE, "c": BASE}, {"a": BASE, "b": BASE, "c": BASE})
    two_of_three = observe({"a": SHIFT, "b": SHIFT, "c": BASE}, {"a": BASE, "b": BASE, "c": BASE})
    assert evaluate_drift(t, observation=one_of_three, previous=PreviousState(), now=NOW).state == "clear"
    assert evaluate_drift(t, observation=two_of_three, previous=PreviousState(), now=NOW).state == "firing"


@pytest.mark.parametrize(
    ("drift", "field"),
    [
        ({"metric": "x", "reference": {}, "statistic": "mmd", "threshold": 1}, "spec.triggers[0].drift.statistic"),
        ({"metric": "x", "reference": {}}, "spec.triggers[0].drift"),
        ({"metric": "x", "reference": {}, "threshold": 1, "usePValue": True}, "spec.triggers[0].drift.usePValue"),
        ({"metric": "x", "reference": {"source": "Fixed"}, "threshold": 1}, "spec.triggers[0].drift.reference.counts"),
        ({"metric": "x", "reference": {}, "threshold": 1, "mode": "share"}, "spec.triggers[0].drift.minShare"),
        (
            {"metric": "x", "reference": {"window": "1d"}, "window": "1h", "learnThreshold": {"windows": 12}},
            "spec.triggers[0].drift.learnThreshold.windows",
        ),
        (
            {"metric": "x", "reference": {"window": "7d"}, "window": "1h", "learnThreshold": {}},
            "spec.triggers[0].drift.learnThreshold.windows",
        ),
        (
            {"metric": "x", "reference": {"window": "1d"}, "window": "5h", "learnThreshold": {}},
            "spec.triggers[0].drift.learnThreshold.windows",
        ),
        (
            {"metric": "x", "reference": {}, "learnThreshold": {"floor": -0.1}},
            "spec.triggers[0].drift.learnThreshold.floor",
        ),
        (
            {"metric": "x", "reference": {}, "learnThreshold": {"floor": 1e7}},
            "spec.triggers[0].drift.learnThreshold.floor",
        ),
        (
            {"metric": "x", "reference": {}, "threshold": 1, "adjustForFeatures": "yes"},
            "spec.triggers[0].drift.adjustForFeatures",
        ),
    ],
)
def test_invalid_drift_triggers(drift: dict[str, Any], field: str) -> None:
    from retrain_operator.domain.api import InvalidSpec

    with pytest.raises(InvalidSpec) as info:
        parse_policy_spec(policy(triggers=[{"name": "d", "drift": drift}])["spec"])
    assert any(p.field == field for p in info.value.problems), info.value.problems


def volume(**kind: Any) -> Any:
    return parse_policy_spec(
        policy(triggers=[{"name": "v", "dataVolume": {"metric": "labels_total"} | kind}])["spec"]
    ).triggers[0]


@pytest.mark.parametrize(
    ("kind", "value", "rows", "state"),
    [
        ({"minNewSamples": 1000}, 1500, None, "firing"),
        ({"minNewSamples": 1000}, 999, None, "clear"),
        ({"minRelative": 0.2}, 250, 1000, "firing"),
        ({"minRelative": 0.2}, 150, 1000, "clear"),
        ({"minRelative": 0.2}, 150, None, "inconclusive"),
    ],
)
def test_data_volume(kind: dict[str, Any], value: float, rows: float | None, state: str) -> None:
    result = evaluate_data_volume(
        volume(**kind), observation=Observation(value=value), training_rows=rows, previous=PreviousState(), now=NOW
    )
    assert result.state == state


def test_model_reference_comes_from_the_champion() -> None:
    t = trigger(reference={"source": "Model"})
    obs = Observation(current_buckets={"age": cumulative(SHIFT)})
    missing = evaluate_drift(t, observation=obs, previous=PreviousState(), now=NOW)
    assert missing.state == "inconclusive" and missing.problem == "NoReference"
    result = evaluate_drift(
        t, observation=obs, previous=PreviousState(), now=NOW, model_reference={"age": cumulative(BASE)}
    )
    assert result.state == "firing" and result.details["features"][0]["name"] == "age"


# --- defaults that hold up: sub-windows, floor, noise floor, many features ------------------------------------


def test_sub_windows_are_derived_from_the_current_window() -> None:
    derived = trigger(threshold=None, window="1h", reference={"source": "Window", "window": "1d"}, learnThreshold={})
    assert derived.kind.learn_windows == 24
    six = trigger(threshold=None, window="4h", reference={"source": "Window", "window": "1d"}, learnThreshold={})
    assert six.kind.learn_windows == 6


def test_sub_windows_of_another_length_are_refused_naming_the_fields() -> None:
    from retrain_operator.domain.api import InvalidSpec

    body = {"metric": "x", "reference": {"window": "7d"}, "window": "1h", "learnThreshold": {"windows": 24}}
    with pytest.raises(InvalidSpec) as info:
        parse_policy_spec(policy(triggers=[{"name": "d", "drift": body}])["spec"])
    (problem,) = [p for p in info.value.problems if p.field.endswith("learnThreshold.windows")]
    assert "sub-windows of 7h" in problem.message and "drift.window is 1h" in problem.message


def constant_windows(count: int = 24, n: int = 1000) -> tuple[dict[str, dict[str, float]], ...]:
    return tuple({"age": cumulative([0, 0, n, 0, 0])} for _ in range(count))


def test_a_constant_reference_learns_the_floor_not_zero() -> None:
    t = trigger(threshold=None, learnThreshold={"k": 3})
    one_moved = observe({"age": [0, 1, 999, 0, 0]}, {"age": [0, 0, 24000, 0, 0]}, reference_windows=constant_windows())
    result = evaluate_drift(t, observation=one_moved, previous=PreviousState(), now=NOW)
    assert result.state == "clear"
    assert result.details["learnedThreshold"]["age"]["threshold"] == pytest.approx(0.05)
    moved = observe({"age": [0, 300, 700, 0, 0]}, {"age": [0, 0, 24000, 0, 0]}, reference_windows=constant_windows())
    assert evaluate_drift(t, observation=moved, previous=PreviousState(), now=NOW).state == "firing"


def test_a_stated_floor_wins_over_the_statistic_default() -> None:
    t = trigger(threshold=None, learnThreshold={"k": 3, "floor": 0.5})
    moved = observe({"age": [0, 300, 700, 0, 0]}, {"age": [0, 0, 24000, 0, 0]}, reference_windows=constant_windows())
    result = evaluate_drift(t, observation=moved, previous=PreviousState(), now=NOW)
    assert result.details["learnedThreshold"]["age"]["threshold"] == pytest.approx(0.5)


def test_a_clear_learned_trigger_says_the_value_is_below_its_threshold() -> None:
    rng = np.random.default_rng(7)
    windows = tuple({"age": cumulative(rng.multinomial(1000, np.array(BASE) / 1000).tolist())} for _ in range(24))
    t = trigger(threshold=None, learnThreshold={"k": 3})
    result = evaluate_drift(
        t,
        observation=observe({"age": BASE}, {"age": BASE}, reference_windows=windows),
        previous=PreviousState(),
        now=NOW,
    )
    assert result.state == "clear"
    assert "below its learned threshold 0.05" in result.message and "(>" not in result.message


def test_a_fixed_threshold_under_the_noise_floor_is_inconclusive_saying_so() -> None:
    # jensenShannonDistance 0.1 at 200 samples a side over 10 buckets: noise alone gives about 0.13.
    edges = [str(i) for i in range(1, 10)] + ["+Inf"]
    flat = dict(zip(edges, np.cumsum([20.0] * 10).tolist(), strict=True))
    t = trigger(statistic="jensenShannonDistance", threshold=0.1, minSamples=100)
    result = evaluate_drift(
        t,
        observation=Observation(current_buckets={"age": flat}, reference_buckets={"age": flat}),
        previous=PreviousState(),
        now=NOW,
    )
    assert result.state == "inconclusive" and result.problem == "BelowNoiseFloor"
    assert "noise floor" in result.message and "200 reference and 200 current samples" in result.message


def test_a_fixed_threshold_clear_of_the_noise_floor_still_fires() -> None:
    t = trigger(statistic="psi", threshold=0.2, minSamples=50)
    result = evaluate_drift(t, observation=observe({"age": SHIFT}, {"age": BASE}), previous=PreviousState(), now=NOW)
    assert result.state == "firing" and "belowNoiseFloor" not in result.details


def test_only_the_noisy_features_drop_out() -> None:
    t = trigger(statistic="psi", threshold=0.1, minSamples=10)
    quiet = {f: [2, 4, 8, 4, 2] for f in ("tiny",)}
    busy = {"big": [x * 10 for x in SHIFT]}
    reference = {"tiny": [2, 4, 8, 4, 2], "big": [x * 10 for x in BASE]}
    result = evaluate_drift(t, observation=observe(quiet | busy, reference), previous=PreviousState(), now=NOW)
    assert result.state == "firing" and result.details["belowNoiseFloor"] == ["tiny"]
    assert "1 of the features inconclusive" in result.message


def test_many_features_raise_a_learned_k() -> None:
    from retrain_operator.domain.triggers.drift import adjusted_k

    assert adjusted_k(3.0, 1) == 3.0
    assert adjusted_k(3.0, 30) == pytest.approx(3.92, abs=0.01)
    assert adjusted_k(3.0, 1000) > adjusted_k(3.0, 30)
    rng = np.random.default_rng(8)
    names = [f"f{i}" for i in range(30)]
    windows = tuple(
        {f: cumulative(rng.multinomial(1000, np.array(BASE) / 1000).tolist()) for f in names} for _ in range(24)
    )
    obs = observe({f: BASE for f in names}, {f: BASE for f in names}, reference_windows=windows)
    adjusted = evaluate_drift(
        trigger(threshold=None, learnThreshold={"k": 3}), observation=obs, previous=PreviousState(), now=NOW
    )
    assert adjusted.details["adjustedK"] == pytest.approx(3.92, abs=0.01)
    plain = evaluate_drift(
        trigger(threshold=None, learnThreshold={"k": 3}, adjustForFeatures=False),
        observation=obs,
        previous=PreviousState(),
        now=NOW,
    )
    assert "adjustedK" not in plain.details


def test_many_features_share_a_significance_level() -> None:
    names = [f"f{i}" for i in range(10)]
    # One feature with a p-value between 0.01 / 10 and 0.01: significant alone, not among ten.
    rng = np.random.default_rng(3)
    base = {f: BASE for f in names}
    mild = base | {"f0": [100, 200, 400, 240, 60]}
    t = trigger(statistic="chiSquare", usePValue=True, threshold=0.01)
    result = evaluate_drift(t, observation=observe(mild, base), previous=PreviousState(), now=NOW)
    p = result.value
    assert p is not None and 0.001 < p < 0.01, p
    assert result.state == "clear" and "shared by 10 features" in result.message
    alone = trigger(statistic="chiSquare", usePValue=True, threshold=0.01, adjustForFeatures=False)
    assert evaluate_drift(alone, observation=observe(mild, base), previous=PreviousState(), now=NOW).state == "firing"
    del rng
