"""The decision benchmark's simulated Prometheus answers the very queries the triggers build, with the right numbers.

If a trigger's PromQL changes shape, the benchmark must fail loudly rather than decide on nothing:
these run the operator's real observer against it and check each observation.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from bench import decisions

from retrain_operator.domain.api import EndpointSpec, parse_policy_spec
from retrain_operator.reconcile.observe import Observer, QuerySource, Subject

STEPS = 200


def prometheus() -> decisions.SimulatedPrometheus:
    counts = np.zeros((STEPS, 2, 3))
    counts[:, 0, :] = [10, 20, 70]
    counts[:, 1, :] = [50, 50, 0]
    accuracy = np.linspace(0.9, 0.7, STEPS)
    return decisions.SimulatedPrometheus(
        model="bench",
        columns=["a", "b"],
        les=[["0.5", "1.0", "+Inf"]] * 2,
        bucket_counts=counts,
        accuracy=accuracy,
        rows=100,
        shared={},
    )


async def observe(policy: dict[str, object], step: int) -> dict[str, object]:
    source = prometheus()

    async def source_for(_: str) -> QuerySource:
        return source

    spec = parse_policy_spec(policy)
    now = decisions.START + timedelta(hours=step + 1)
    subject = Subject(
        "bench", "p", spec, "default", EndpointSpec(url="http://simulated"), model_trained_at=now - timedelta(hours=5)
    )
    observed = await Observer(source_for=source_for).observe([subject], now=now)
    return {trigger: obs for (_, _, trigger), obs in observed.items()}


async def test_accuracy_with_for_reads_the_window_mean_and_the_held_maximum() -> None:
    (obs,) = (await observe(decisions.POLICIES["accuracy"], 190)).values()
    accuracy = np.linspace(0.9, 0.7, STEPS)
    assert obs.value == pytest.approx(accuracy[189:191].mean())
    assert obs.held == pytest.approx(accuracy[188:190].mean())
    assert obs.held_points >= obs.expected_points - 1 > 0


async def test_drift_reads_cumulative_buckets_of_the_current_reference_and_sub_windows() -> None:
    (obs,) = (await observe(decisions.POLICIES["drift-learned"], 199)).values()
    assert obs.current_buckets == {
        "a": {"0.5": 10.0, "1.0": 30.0, "+Inf": 100.0},
        "b": {"0.5": 50.0, "1.0": 100.0, "+Inf": 100.0},
    }
    assert obs.reference_buckets["a"]["+Inf"] == 2400.0
    assert len(obs.reference_windows) == 24
    assert all(w["b"]["+Inf"] == 100.0 for w in obs.reference_windows)


async def test_data_volume_counts_the_rows_since_the_model_was_trained() -> None:
    (obs,) = (await observe(decisions.POLICIES["volume"], 190)).values()
    assert obs.value == 5 * 100


async def test_a_query_of_another_shape_is_an_error_not_an_empty_answer() -> None:
    with pytest.raises(ValueError, match="cannot evaluate"):
        await prometheus().query("rate(x[5m])", at=decisions.START)
