"""Drift statistics from histogram buckets: agreement with SciPy on the same binned data, properties, edge cases."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import spatial, special, stats

from retrain_operator.domain.drift import (
    STATISTIC_NAMES,
    STATISTICS,
    BucketMismatch,
    Histogram,
    InsufficientHistory,
    InsufficientSamples,
    LearnedThreshold,
    MalformedHistogram,
    StatisticNotApplicable,
    UnknownStatistic,
    bin_centres,
    bucket_counts,
    check_edges,
    chi2_sf,
    chi_square,
    compare,
    get_statistic,
    hellinger,
    histograms,
    jensen_shannon_distance,
    jensen_shannon_divergence,
    kl_divergence,
    kolmogorov_sf,
    ks,
    learn_threshold,
    parse_le,
    psi,
    total_variation,
    verdict,
    wasserstein,
)

Row = np.ndarray
RTOL, ATOL = 1e-9, 1e-12


def counts(rng: np.random.Generator, rows: int, buckets: int, *, high: int = 60, empty: float = 0.2) -> np.ndarray:
    """Integer counts with about ``empty`` of the buckets empty, every row holding at least one sample."""
    table = rng.integers(0, high, size=(rows, buckets)).astype(np.float64)
    table[rng.random((rows, buckets)) < empty] = 0.0
    table[table.sum(axis=1) == 0, 0] = 1.0
    return table


def pairs(seed: int, buckets: int, rows: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref, cur = counts(rng, rows, buckets), counts(rng, rows, buckets)
    if buckets > 2:
        ref[0, 1] = cur[0, 1] = 0.0  # empty on both sides
        ref[1, 2], cur[1, 2] = 0.0, 5.0  # empty in the reference only
        ref[2, 0], cur[2, 0] = 7.0, 0.0  # empty in the current only
        ref[0, 0], cur[0, 0] = max(ref[0, 0], 1.0), max(cur[0, 0], 1.0)
        ref[1, 0], cur[2, 2] = max(ref[1, 0], 1.0), max(cur[2, 2], 1.0)
    return ref, cur


def edges_for(buckets: int) -> np.ndarray:
    finite = np.cumsum(np.linspace(0.5, 2.0, buckets - 1)) - 3.0
    return np.append(finite, math.inf)


def share(row: Row) -> Row:
    result: Row = row / row.sum()
    return result


# --- agreement with SciPy, row by row against our batch ----------------------------------------------------------


def _psi_ref(r: Row, c: Row, _: Row) -> float:
    p, q = np.maximum(share(c), 1e-4), np.maximum(share(r), 1e-4)
    return float(np.sum(special.rel_entr(p, q) + special.rel_entr(q, p)))


def _kl_ref(r: Row, c: Row, _: Row) -> float:
    eps, b = 1e-4, len(r)
    return float(stats.entropy((share(c) + eps) / (1 + b * eps), (share(r) + eps) / (1 + b * eps)))


SCIPY: list[tuple[str, Callable[[Row, Row, Row], np.ndarray], Callable[[Row, Row, Row], float]]] = [
    ("psi", lambda r, c, e: psi(r, c), _psi_ref),
    ("kl smoothed", lambda r, c, e: kl_divergence(r, c), _kl_ref),
    ("kl raw", lambda r, c, e: kl_divergence(r, c, epsilon=0.0), lambda r, c, e: float(stats.entropy(c, r))),
    (
        "js divergence base 2",
        lambda r, c, e: jensen_shannon_divergence(r, c),
        lambda r, c, e: float(spatial.distance.jensenshannon(c, r, base=2)) ** 2,
    ),
    (
        "js distance base 2",
        lambda r, c, e: jensen_shannon_distance(r, c),
        lambda r, c, e: float(spatial.distance.jensenshannon(c, r, base=2)),
    ),
    (
        "js distance base e",
        lambda r, c, e: jensen_shannon_distance(r, c, base=math.e),
        lambda r, c, e: float(spatial.distance.jensenshannon(c, r)),
    ),
    (
        "hellinger",
        lambda r, c, e: hellinger(r, c),
        lambda r, c, e: float(spatial.distance.euclidean(np.sqrt(share(c)), np.sqrt(share(r)))) / math.sqrt(2),
    ),
    (
        "total variation",
        lambda r, c, e: total_variation(r, c),
        lambda r, c, e: float(spatial.distance.cityblock(share(c), share(r))) / 2,
    ),
    (
        "wasserstein",
        lambda r, c, e: wasserstein(r, c, edges=e),
        lambda r, c, e: float(stats.wasserstein_distance(bin_centres(e), bin_centres(e), c, r)),
    ),
    (
        "ks statistic",
        lambda r, c, e: ks(r, c).statistic,
        lambda r, c, e: float(
            stats.ks_2samp(
                np.repeat(np.arange(len(r)), r.astype(int)), np.repeat(np.arange(len(c)), c.astype(int))
            ).statistic
        ),
    ),
    (
        "ks p-value",
        lambda r, c, e: ks(r, c).p_value,
        lambda r, c, e: float(
            special.kolmogorov(
                math.sqrt(r.sum() * c.sum() / (r.sum() + c.sum()))
                * np.abs(np.cumsum(share(c)) - np.cumsum(share(r))).max()
            )
        ),
    ),
]


def _chi2_ref(r: Row, c: Row) -> tuple[float, float, int]:
    table = np.array([r, c])
    table = table[:, table.sum(axis=0) > 0]
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


@pytest.mark.parametrize("buckets", [3, 7, 50])
@pytest.mark.parametrize(("name", "ours", "scipy_row"), SCIPY, ids=[s[0] for s in SCIPY])
def test_agrees_with_scipy(
    name: str, ours: Callable[[Row, Row, Row], np.ndarray], scipy_row: Callable[[Row, Row, Row], float], buckets: int
) -> None:
    ref, cur = pairs(seed=buckets, buckets=buckets)
    edges = edges_for(buckets)
    got = ours(ref, cur, edges)
    want = np.array([scipy_row(r, c, edges) for r, c in zip(ref, cur, strict=True)])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("buckets", [2, 3, 7, 50])
def test_chi_square_agrees_with_chi2_contingency_without_yates(buckets: int) -> None:
    ref, cur = pairs(seed=100 + buckets, buckets=buckets)
    ref[3] = cur[3] = 0.0
    ref[3, 0], cur[3, 0] = 10.0, 20.0  # a single shared bucket: nothing to test
    got = chi_square(ref, cur)
    want = [_chi2_ref(r, c) for r, c in zip(ref, cur, strict=True)]
    np.testing.assert_allclose(got.statistic, [w[0] for w in want], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got.p_value, [w[1] for w in want], rtol=RTOL, atol=1e-15)
    assert got.dof.tolist() == [w[2] for w in want]
    assert (got.statistic[3], got.p_value[3], got.dof[3]) == (0.0, 1.0, 0)


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 9, 10, 25, 49, 50, 99])
def test_chi2_sf_is_exact_against_scipy(dof: int) -> None:
    x = np.concatenate([[0.0, 1e-8, 1e-3], np.linspace(0.01, 4.0 * dof + 60, 400)])
    want = stats.chi2.sf(x, dof)
    np.testing.assert_allclose(chi2_sf(x, dof), want, rtol=1e-11, atol=1e-300)


def test_kolmogorov_sf_is_exact_against_scipy() -> None:
    y = np.concatenate([[0.0, 1e-6, 0.2], np.linspace(0.05, 8.0, 800), [0.999999, 1.0, 1.000001]])
    want = special.kolmogorov(y)
    np.testing.assert_allclose(kolmogorov_sf(y), want, rtol=1e-11, atol=1e-15)


def test_ks_p_value_is_close_to_scipys_two_sample_asymptotic_at_window_sizes() -> None:
    """SciPy's ks_2samp(method="asymp") uses kstwo.sf(D, round(n_e)); the difference shrinks like 1/sqrt(n_e)."""
    rng = np.random.default_rng(7)
    ref = rng.multinomial(20_000, share(np.arange(1.0, 21.0)), size=30).astype(np.float64)
    cur = rng.multinomial(15_000, share(np.arange(1.0, 21.0) + rng.random(20) * 0.3), size=30).astype(np.float64)
    got = ks(ref, cur)
    want = stats.kstwo.sf(got.statistic, np.round(got.effective_n))
    np.testing.assert_allclose(got.p_value, want, atol=0.01)


def test_binned_ks_never_exceeds_ks_on_the_raw_samples() -> None:
    rng = np.random.default_rng(11)
    edges = np.append(np.linspace(-2.0, 3.0, 11), math.inf)
    for shift in (0.0, 0.05, 0.3, 1.0):
        a, b = rng.normal(0.0, 1.0, 3000), rng.normal(shift, 1.1, 2000)
        binned = [np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges)) for x in (a, b)]
        d = ks(binned[0], binned[1]).statistic[0]
        assert d <= stats.ks_2samp(a, b).statistic + 1e-12


# --- properties of every registered statistic ---------------------------------------------------------------------

PROPERTY_BUCKETS = (2, 5, 50)


def _batch(seed: int, buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref, cur = pairs(seed=seed, buckets=buckets, rows=200)
    edges = edges_for(max(buckets, 3))[-buckets:] if buckets >= 3 else np.array([0.0, math.inf])
    return ref, cur, edges


def _cases(names: tuple[str, ...] | list[str]) -> list[tuple[str, int]]:
    """Every statistic at every bucket count, except Wasserstein below three buckets (it needs two finite edges)."""
    return [(n, b) for n in names for b in PROPERTY_BUCKETS if not (n == "wasserstein" and b < 3)]


@pytest.mark.parametrize(("name", "buckets"), _cases(STATISTIC_NAMES))
def test_zero_for_identical_and_non_negative(name: str, buckets: int) -> None:
    ref, cur, edges = _batch(seed=1, buckets=buckets)
    statistic = STATISTICS[name]
    same = statistic.compute(ref, ref.copy(), edges)
    assert (same.values == 0.0).all()
    if same.p_values is not None:
        assert (same.p_values == 1.0).all()
    values = statistic.compute(ref, cur, edges).values
    assert (values >= 0.0).all() and np.isfinite(values).all()
    if statistic.upper is not None:
        assert (values <= statistic.upper + 1e-12).all()


@pytest.mark.parametrize(("name", "buckets"), _cases([n for n in STATISTIC_NAMES if STATISTICS[n].symmetric]))
def test_symmetric_statistics_do_not_care_which_side_is_which(name: str, buckets: int) -> None:
    ref, cur, edges = _batch(seed=2, buckets=buckets)
    one, other = STATISTICS[name].compute(ref, cur, edges), STATISTICS[name].compute(cur, ref, edges)
    np.testing.assert_allclose(one.values, other.values, rtol=1e-12, atol=1e-15)
    if one.p_values is not None and other.p_values is not None:
        np.testing.assert_allclose(one.p_values, other.p_values, rtol=1e-10, atol=1e-15)


def test_kl_is_not_symmetric() -> None:
    ref, cur = np.array([[90.0, 10.0, 0.0]]), np.array([[30.0, 30.0, 40.0]])
    assert kl_divergence(ref, cur)[0] > 3 * kl_divergence(cur, ref)[0]


@pytest.mark.parametrize(("name", "buckets"), _cases([n for n in STATISTIC_NAMES if STATISTICS[n].scale_invariant]))
def test_proportion_statistics_ignore_the_window_length(name: str, buckets: int) -> None:
    ref, cur, edges = _batch(seed=3, buckets=buckets)
    statistic = STATISTICS[name]
    np.testing.assert_allclose(
        statistic.compute(2.5 * ref, 7.0 * cur, edges).values,
        statistic.compute(ref, cur, edges).values,
        rtol=1e-9,
        atol=1e-12,
    )
    np.testing.assert_allclose(statistic.compute(ref, 3.0 * ref, edges).values, 0.0, atol=1e-12)


def test_chi_square_grows_linearly_with_the_counts() -> None:
    ref, cur, _ = _batch(seed=4, buckets=20)
    np.testing.assert_allclose(
        chi_square(4.0 * ref, 4.0 * cur).statistic, 4.0 * chi_square(ref, cur).statistic, rtol=1e-12
    )
    assert (chi_square(4.0 * ref, 4.0 * cur).p_value <= chi_square(ref, cur).p_value + 1e-15).all()


@pytest.mark.parametrize(
    "name",
    [
        "psi",
        "jensenShannonDivergence",
        "jensenShannonDistance",
        "hellinger",
        "klDivergence",
        "totalVariation",
        "chiSquare",
    ],
)
def test_bucket_order_does_not_matter_to_divergences(name: str) -> None:
    ref, cur, edges = _batch(seed=5, buckets=30)
    order = np.random.default_rng(5).permutation(30)
    statistic = STATISTICS[name]
    np.testing.assert_allclose(
        statistic.compute(ref[:, order], cur[:, order], edges).values,
        statistic.compute(ref, cur, edges).values,
        rtol=1e-12,
        atol=1e-15,
    )


@pytest.mark.parametrize("name", STATISTIC_NAMES)
def test_rows_of_a_batch_are_computed_independently(name: str) -> None:
    ref, cur, edges = _batch(seed=6, buckets=12)
    statistic = STATISTICS[name]
    batch = statistic.compute(ref, cur, edges).values
    single = [statistic.compute(ref[i : i + 1], cur[i : i + 1], edges).values[0] for i in range(0, 200, 37)]
    np.testing.assert_allclose(batch[::37], single, rtol=1e-14, atol=0.0)


def test_known_inequalities_between_distances() -> None:
    ref, cur, _ = _batch(seed=8, buckets=25)
    h, tv, d = hellinger(ref, cur), total_variation(ref, cur), ks(ref, cur).statistic
    assert (h * h <= tv + 1e-12).all() and (tv <= math.sqrt(2) * h + 1e-12).all()
    assert (d <= tv + 1e-12).all()  # KS looks at half-lines only, TV at every set of buckets


def test_disjoint_supports_reach_the_upper_bounds() -> None:
    ref, cur = np.array([[10.0, 5.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 3.0, 1.0]])
    for fn in (jensen_shannon_divergence, jensen_shannon_distance, hellinger, total_variation):
        assert fn(ref, cur)[0] == pytest.approx(1.0, abs=1e-15)
    assert ks(ref, cur).statistic[0] == 1.0
    assert jensen_shannon_divergence(ref, cur, base=math.e)[0] == pytest.approx(math.log(2))
    assert kl_divergence(ref, cur, epsilon=0.0)[0] == math.inf
    assert math.isfinite(kl_divergence(ref, cur)[0]) and math.isfinite(psi(ref, cur)[0])


def test_psi_epsilon_bounds_an_empty_bucket() -> None:
    value = psi(np.array([100.0, 0.0]), np.array([90.0, 10.0]))[0]
    assert value == pytest.approx((0.9 - 1.0) * math.log(0.9) + (0.1 - 1e-4) * math.log(0.1 / 1e-4))


def test_empty_rows_give_nan_and_bad_counts_are_refused() -> None:
    assert math.isnan(psi([[0.0, 0.0]], [[1.0, 2.0]])[0])
    assert math.isnan(chi_square([[0.0, 0.0]], [[1.0, 2.0]]).p_value[0])
    assert math.isnan(ks([[0.0, 0.0]], [[1.0, 2.0]]).p_value[0])
    with pytest.raises(ValueError, match="differ in shape"):
        hellinger([[1.0, 2.0]], [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="finite and non-negative"):
        total_variation([[1.0, -2.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="finite and non-negative"):
        total_variation([[1.0, math.nan]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="base"):
        jensen_shannon_divergence([1.0], [1.0], base=1.0)


def test_open_buckets_take_half_their_neighbours_width() -> None:
    assert bin_centres([0.0, 1.0, 3.0, math.inf]).tolist() == [-0.5, 0.5, 2.0, 4.0]
    assert bin_centres([0.1, 0.2, math.inf]).tolist() == pytest.approx([0.05, 0.15, 0.25])
    with pytest.raises(ValueError, match="at least three buckets"):
        bin_centres([1.0, math.inf])
    with pytest.raises(ValueError, match="strictly increasing"):
        bin_centres([1.0, 1.0, math.inf])
    # moving all mass from the first bucket to the +Inf one crosses every centre
    assert wasserstein([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], edges=[0.0, 1.0, 3.0, math.inf])[0] == 4.5


# --- histograms ---------------------------------------------------------------------------------------------------


def test_cumulative_buckets_become_counts_per_bucket() -> None:
    h = Histogram.from_cumulative({"+Inf": 10.0, "0.5": 6.0, "0.1": 2.0, "1": 9.0})
    assert h.edges == (0.1, 0.5, 1.0, math.inf)
    assert h.counts == (2.0, 4.0, 3.0, 1.0)
    assert h.total == 10.0


def test_float_noise_is_clamped_but_a_real_decrease_is_an_error() -> None:
    h = Histogram.from_cumulative({"0.1": 5.000000000001, "0.5": 5.0, "+Inf": 7.0})
    assert h.counts[1] == 0.0 and h.counts[2] == pytest.approx(2.0)
    with pytest.raises(MalformedHistogram, match=r"metric latency, feature 'age'.*falls from 5 at le=0.1 to 4.9"):
        Histogram.from_cumulative({"0.1": 5.0, "0.5": 4.9, "+Inf": 7.0}, feature="age", metric="latency")


@pytest.mark.parametrize(
    ("buckets", "problem"),
    [
        ({"0.1": 1.0, "0.5": 2.0}, 'no le="\\+Inf" bucket'),
        ({"abc": 1.0, "+Inf": 2.0}, "le='abc' is not a number"),
        ({"-Inf": 1.0, "+Inf": 2.0}, "not a bucket bound"),
        ({"NaN": 1.0, "+Inf": 2.0}, "not a bucket bound"),
        ({"0.1": math.nan, "+Inf": 2.0}, "finite and non-negative"),
        ({"0.1": -1.0, "+Inf": 2.0}, "finite and non-negative"),
    ],
)
def test_malformed_buckets_are_refused(buckets: dict[str, float], problem: str) -> None:
    with pytest.raises(MalformedHistogram, match=problem):
        Histogram.from_cumulative(buckets, feature="f")


def test_both_spellings_of_one_bound_are_one_bucket() -> None:
    h = Histogram.from_cumulative({"1": 3.0, "1.0": 4.0, "+Inf": 10.0})
    assert h.edges == (1.0, math.inf) and h.counts == (7.0, 3.0)


def test_le_labels_parse_like_prometheus() -> None:
    assert [parse_le(v) for v in ("0.1", "1e-3", "+Inf", "Inf", "10")] == [0.1, 0.001, math.inf, math.inf, 10.0]


def test_histograms_of_many_features_match_one_at_a_time() -> None:
    raw = {
        "age": {"10": 3.0, "20": 8.0, "+Inf": 9.0},
        "income": {"10": 0.0, "20": 1.0, "+Inf": 4.0},
        "score": {"0.5": 2.0, "+Inf": 3.0},
    }
    many = histograms(raw, metric="m")
    assert list(many) == ["age", "income", "score"]
    for feature, buckets in raw.items():
        assert many[feature] == Histogram.from_cumulative(buckets)
    with pytest.raises(MalformedHistogram, match="feature 'bad'"):
        histograms({**raw, "bad": {"10": 5.0, "20": 1.0, "+Inf": 6.0}})


def test_bucket_counts_differences_a_whole_table() -> None:
    table = np.array([[1.0, 3.0, 3.0, 10.0], [0.0, 0.0, 2.0, 2.0 - 1e-13]])
    got = bucket_counts(table, edges=[1.0, 2.0, 4.0, math.inf], features=["a", "b"])
    np.testing.assert_array_equal(got, [[1.0, 2.0, 0.0, 7.0], [0.0, 0.0, 2.0, 0.0]])
    with pytest.raises(MalformedHistogram, match="feature 'b'"):
        bucket_counts([[1.0, 2.0], [3.0, 1.0]], edges=[1.0, math.inf], features=["a", "b"])


def test_histogram_checks_its_own_shape() -> None:
    with pytest.raises(MalformedHistogram, match="last bucket"):
        Histogram((1.0, 2.0), (1.0, 1.0))
    with pytest.raises(MalformedHistogram, match="strictly increasing"):
        Histogram((2.0, 1.0, math.inf), (1.0, 1.0, 1.0))
    with pytest.raises(MalformedHistogram, match="edges for"):
        Histogram((1.0, math.inf), (1.0,))


def test_bucket_mismatch_names_the_feature_and_both_edge_lists() -> None:
    ref = Histogram((0.1, 0.5, math.inf), (1.0, 2.0, 3.0))
    cur = Histogram((0.1, 1.0, math.inf), (1.0, 2.0, 3.0))
    with pytest.raises(BucketMismatch) as caught:
        check_edges(ref, cur, feature="age", metric="feature_value")
    message = str(caught.value)
    assert "metric feature_value, feature 'age'" in message
    assert "[0.1, 0.5, +Inf]" in message and "[0.1, 1.0, +Inf]" in message
    assert caught.value.reference == (0.1, 0.5, math.inf) and caught.value.current == (0.1, 1.0, math.inf)


# --- compare ------------------------------------------------------------------------------------------------------

EDGES = (0.0, 1.0, 2.0, 3.0, math.inf)


def hist(*values: float) -> Histogram:
    return Histogram(EDGES, values)


def test_compare_scores_every_feature_in_one_batch() -> None:
    reference = {"b": hist(10, 20, 30, 40, 0), "a": hist(5, 5, 5, 5, 5)}
    current = {"a": hist(1, 2, 3, 4, 5), "b": hist(10, 20, 30, 40, 1)}
    result = compare(reference, current, statistic=get_statistic("psi"), min_samples=10)
    assert [s.feature for s in result.scores] == ["a", "b"]
    assert result.values == {
        "a": psi([5, 5, 5, 5, 5], [1, 2, 3, 4, 5])[0],
        "b": psi([10, 20, 30, 40, 0], [10, 20, 30, 40, 1])[0],
    }
    assert result.insufficient == () and result.p_values == {} and result.statistic == "psi"


@pytest.mark.parametrize("name", STATISTIC_NAMES)
def test_every_registered_statistic_runs_through_compare(name: str) -> None:
    reference = {"x": hist(10, 20, 30, 40, 5), "y": hist(3, 3, 3, 3, 3)}
    current = {"x": hist(12, 18, 33, 30, 9), "y": hist(1, 5, 3, 3, 3)}
    result = compare(reference, current, statistic=get_statistic(name), min_samples=1)
    assert set(result.values) == {"x", "y"} and all(v > 0 for v in result.values.values())
    assert set(result.p_values) == ({"x", "y"} if STATISTICS[name].has_p_value else set())
    assert all(0.0 <= p <= 1.0 for p in result.p_values.values())


def test_too_few_samples_is_a_result_not_an_exception() -> None:
    reference = {"quiet": hist(1, 1, 1, 1, 1), "busy": hist(50, 50, 50, 50, 50), "gone": hist(40, 40, 40, 40, 40)}
    current = {"quiet": hist(30, 30, 30, 30, 30), "busy": hist(40, 50, 60, 50, 50), "new": hist(9, 9, 9, 9, 9)}
    result = compare(reference, current, statistic=get_statistic("hellinger"), min_samples=100)
    assert list(result.values) == ["busy"]
    assert result.insufficient == (
        InsufficientSamples("gone", 200.0, 0.0, 100),
        InsufficientSamples("new", 0.0, 45.0, 100),
        InsufficientSamples("quiet", 5.0, 150.0, 100),
    )
    assert result.insufficient[2].message == (
        "feature 'quiet': 150 samples in the current window and 5 in the reference, at least 100 needed in each"
    )


def test_compare_reports_a_bucket_change_even_for_a_quiet_feature() -> None:
    reference = {"f": Histogram((1.0, math.inf), (0.0, 1.0))}
    current = {"f": Histogram((2.0, math.inf), (0.0, 1.0))}
    with pytest.raises(BucketMismatch, match=r"metric m, feature 'f'.*\[1.0, \+Inf\].*\[2.0, \+Inf\]"):
        compare(reference, current, statistic=get_statistic("psi"), min_samples=100, metric="m")


def test_compare_refuses_a_minimum_below_one_sample() -> None:
    with pytest.raises(ValueError, match="min_samples must be at least 1"):
        compare({}, {}, statistic=get_statistic("psi"), min_samples=0)


def test_wasserstein_on_a_two_bucket_histogram_names_the_features() -> None:
    two = {"f": Histogram((1.0, math.inf), (3.0, 1.0))}
    with pytest.raises(
        StatisticNotApplicable, match=r"metric m, features f: wasserstein cannot be computed .* Wasserstein needs"
    ):
        compare(two, two, statistic=get_statistic("wasserstein"), min_samples=1, metric="m")


# --- registry -----------------------------------------------------------------------------------------------------


def test_registry_holds_every_statistic_by_its_api_name() -> None:
    assert STATISTIC_NAMES == (
        "psi",
        "jensenShannonDivergence",
        "jensenShannonDistance",
        "hellinger",
        "klDivergence",
        "totalVariation",
        "chiSquare",
        "wasserstein",
        "ks",
    )
    assert all(STATISTICS[n].name == n and STATISTICS[n].description for n in STATISTIC_NAMES)


def test_unknown_statistic_lists_the_allowed_names() -> None:
    with pytest.raises(UnknownStatistic) as caught:
        get_statistic("psy")
    assert "unknown drift statistic 'psy'" in str(caught.value)
    assert all(name in str(caught.value) for name in STATISTIC_NAMES)
    assert caught.value.allowed == STATISTIC_NAMES


# --- learned thresholds -------------------------------------------------------------------------------------------


def windows_from(rng: np.random.Generator, p: np.ndarray, *, n: int, count: int) -> list[Histogram]:
    edges = tuple(edges_for(len(p)).tolist())
    return [Histogram(edges, tuple(row)) for row in rng.multinomial(n, p, size=count).astype(float).tolist()]


def test_threshold_is_mean_plus_k_std_of_leave_one_out_values_on_a_normalising_scale() -> None:
    rng = np.random.default_rng(21)
    windows = windows_from(rng, share(np.arange(1.0, 11.0)), n=500, count=8)
    learned = learn_threshold(windows, statistic=get_statistic("jensenShannonDistance"), min_samples=100, k=2.0)
    assert isinstance(learned, LearnedThreshold)
    table = np.array([w.counts for w in windows])
    values = [jensen_shannon_distance(table.sum(axis=0) - row, row)[0] for row in table]
    assert learned.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert learned.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    # A square root of a divergence: mean + k std of the values to the power 2/3, taken back.
    scaled = np.array(values) ** (2 / 3)
    assert learned.power == pytest.approx(2 / 3)
    assert learned.threshold == pytest.approx((scaled.mean() + 2.0 * scaled.std(ddof=1)) ** 1.5, rel=1e-12)
    assert learned.minimum == pytest.approx(min(values)) and learned.maximum == pytest.approx(max(values))
    assert learned.windows == 8 and learned.skipped == 0
    assert set(learned.as_status()) == {
        "statistic",
        "threshold",
        "k",
        "mean",
        "std",
        "min",
        "median",
        "p95",
        "max",
        "windows",
        "skipped",
        "power",
    }
    assert learned.message.startswith("jensenShannonDistance threshold ")
    assert "to the power 0.667" in learned.message


def test_a_learned_psi_threshold_holds_its_tail_on_chi_square_like_noise() -> None:
    # Without drift PSI is skewed; mean + 3 std of the raw values fires on 1.6% of these windows of noise.
    rng = np.random.default_rng(24)
    p = share(np.linspace(1.0, 3.0, 10))
    statistic = get_statistic("psi")
    alarms = 0
    for _ in range(40):
        reference = windows_from(rng, p, n=200, count=24)
        learned = learn_threshold(reference, statistic=statistic, min_samples=50, k=3.0)
        assert isinstance(learned, LearnedThreshold) and learned.power == pytest.approx(1 / 3)
        whole = np.sum([w.counts for w in reference], axis=0)
        fresh = np.array([w.counts for w in windows_from(rng, p, n=200, count=50)])
        alarms += int(
            (statistic.compute(np.tile(whole, (50, 1)), fresh, np.arange(10.0)).values > learned.threshold).sum()
        )
    assert alarms / 2000 < 0.01


def test_quiet_windows_are_skipped_and_too_few_is_a_result() -> None:
    rng = np.random.default_rng(22)
    p = share(np.ones(6))
    windows = windows_from(rng, p, n=400, count=5) + windows_from(rng, p, n=20, count=2)
    learned = learn_threshold(windows, statistic=get_statistic("psi"), min_samples=100)
    assert isinstance(learned, LearnedThreshold) and (learned.windows, learned.skipped) == (5, 2)
    short = learn_threshold(windows[:4], statistic=get_statistic("psi"), min_samples=100)
    assert short == InsufficientHistory("", 4, 4, 5, 100)
    assert "4 of 4 reference windows hold at least 100 samples" in short.message
    assert learn_threshold([], statistic=get_statistic("psi"), min_samples=1) == InsufficientHistory("", 0, 0, 5, 1)


def test_threshold_floor_and_window_bucket_mismatch() -> None:
    same = [Histogram(EDGES, (10, 10, 10, 10, 10))] * 6
    learned = learn_threshold(same, statistic=get_statistic("psi"), min_samples=1, floor=0.05)
    assert isinstance(learned, LearnedThreshold) and learned.std == 0.0 and learned.threshold == 0.05
    with pytest.raises(BucketMismatch, match=r"between the window 0 .* and the window 2"):
        learn_threshold([*same[:2], Histogram((1.0, math.inf), (1, 1))], statistic=get_statistic("psi"), min_samples=1)
    with pytest.raises(ValueError, match="min_windows"):
        learn_threshold(same, statistic=get_statistic("psi"), min_samples=1, min_windows=1)


def test_learned_threshold_separates_noise_from_drift() -> None:
    rng = np.random.default_rng(23)
    p = share(np.exp(-0.5 * ((np.arange(20) - 9.5) / 4.0) ** 2))
    reference = windows_from(rng, p, n=2000, count=24)
    statistic = get_statistic("hellinger")
    learned = learn_threshold(reference, statistic=statistic, min_samples=100, k=3.0)
    assert isinstance(learned, LearnedThreshold)
    whole = np.sum([w.counts for w in reference], axis=0)
    fresh = np.array([w.counts for w in windows_from(rng, p, n=2000, count=50)])
    false_alarms = (hellinger(np.tile(whole, (50, 1)), fresh) > learned.threshold).sum()
    shifted = np.array([w.counts for w in windows_from(rng, share(np.roll(p, 2)), n=2000, count=10)])
    assert false_alarms <= 2
    assert (hellinger(np.tile(whole, (10, 1)), shifted) > learned.threshold).all()


# --- verdict ------------------------------------------------------------------------------------------------------

VALUES = {"age": 0.41, "income": 0.25, "zip": 0.05, "height": 0.2, "city": 0.31}


@pytest.mark.parametrize(
    ("mode", "min_share", "threshold", "drifted", "over", "message"),
    [
        (
            "any",
            None,
            0.2,
            True,
            ["age", "city", "income"],
            "psi > 0.2 in 3 of 5 features: age 0.41, city 0.31, income 0.25",
        ),
        ("any", None, 0.5, False, [], "psi > 0.5 in none of 5 features; highest age 0.41"),
        (
            "share",
            0.6,
            0.2,
            True,
            ["age", "city", "income"],
            "psi > 0.2 in 3 of 5 features (60%; 60% needed): age 0.41, city 0.31, income 0.25",
        ),
        (
            "share",
            0.7,
            0.2,
            False,
            ["age", "city", "income"],
            "psi > 0.2 in 3 of 5 features (60%; 70% needed): age 0.41, city 0.31, income 0.25",
        ),
        ("share", 0.1, 0.5, False, [], "psi > 0.5 in none of 5 features (0%; 10% needed); highest age 0.41"),
    ],
)
def test_verdict_policies(
    mode: str, min_share: float | None, threshold: float, drifted: bool, over: list[str], message: str
) -> None:
    result = verdict(VALUES, threshold=threshold, mode=mode, min_share=min_share, statistic="psi")
    assert result.drifted is drifted
    assert [d.feature for d in result.top] == over
    assert result.message == message
    assert result.features == 5 and result.over == len(over) and result.share == len(over) / 5


def test_verdict_lists_the_top_features_and_counts_the_rest() -> None:
    result = verdict(VALUES, threshold=0.1, top=2, statistic="psi")
    assert [d.feature for d in result.top] == ["age", "city"]
    assert result.message == "psi > 0.1 in 4 of 5 features: age 0.41, city 0.31, and 2 more"


def test_verdict_with_a_threshold_per_feature() -> None:
    thresholds = {"age": 0.5, "income": 0.1, "zip": 0.01, "height": 0.3, "city": 0.3}
    result = verdict(VALUES, threshold=thresholds, statistic="hellinger")
    assert [(d.feature, d.threshold) for d in result.top] == [("city", 0.3), ("income", 0.1), ("zip", 0.01)]
    assert result.message == (
        "hellinger over its threshold in 3 of 5 features: city 0.31 (threshold 0.3), income 0.25 (threshold 0.1), "
        "zip 0.05 (threshold 0.01)"
    )
    with pytest.raises(ValueError, match="feature 'age' has no threshold"):
        verdict(VALUES, threshold={"zip": 0.1})


def test_a_clear_verdict_with_learned_thresholds_reads_below_them_in_three_digits() -> None:
    result = verdict(
        {"mean smoothness": 0.019612, "age": 0.0101},
        threshold={"mean smoothness": 0.070791, "age": 0.5},
        statistic="psi",
        threshold_name="learned threshold",
    )
    assert not result.drifted
    assert result.message == (
        "psi over its learned threshold in none of 2 features; "
        "highest mean smoothness 0.0196, below its learned threshold 0.0708"
    )


def test_verdict_on_p_values_looks_below_the_threshold() -> None:
    result = verdict({"a": 0.2, "b": 0.001, "c": 0.04}, threshold=0.05, drift_when="below", statistic="ks p-value")
    assert [d.feature for d in result.top] == ["b", "c"]
    assert result.message == "ks p-value < 0.05 in 2 of 3 features: b 0.001, c 0.04"


def test_a_value_equal_to_the_threshold_is_not_drift() -> None:
    assert not verdict({"a": 0.2}, threshold=0.2).drifted


def test_verdict_without_features_is_not_drift_and_says_why() -> None:
    result = verdict({}, threshold=0.2, statistic="psi")
    assert (result.drifted, result.features) == (False, 0)
    assert result.message == "no feature had enough samples to compare psi"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"mode": "all"}, "unknown verdict mode 'all'; allowed: any, share"),
        ({"mode": "share"}, "needs min_share"),
        ({"mode": "share", "min_share": 1.5}, "needs min_share"),
        ({"min_share": 0.5}, "only to mode 'share'"),
        ({"drift_when": "over"}, "allowed: above, below"),
    ],
)
def test_verdict_refuses_bad_options(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        verdict(VALUES, threshold=0.2, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is NaN"):
        verdict({"a": math.nan}, threshold=0.2)


# --- effect floors and no-drift noise floors -------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, s in STATISTICS.items() if s.noise is not None])
@pytest.mark.parametrize(("buckets", "n_ref", "n_cur"), [(10, 200, 200), (10, 5000, 500), (5, 1000, 1000)])
def test_noise_floor_matches_the_mean_without_drift(name: str, buckets: int, n_ref: int, n_cur: int) -> None:
    statistic = STATISTICS[name]
    assert statistic.noise is not None
    rng = np.random.default_rng(41)
    p = share(np.linspace(1.0, 2.0, buckets))
    ref = rng.multinomial(n_ref, p, size=2000).astype(float)
    cur = rng.multinomial(n_cur, p, size=2000).astype(float)
    edges = np.array([*range(1, buckets), math.inf], dtype=float)
    observed = statistic.compute(ref, cur, edges).values.mean()
    assert statistic.noise(buckets, n_ref, n_cur) == pytest.approx(observed, rel=0.25)


def test_effect_floors_are_what_a_fifth_of_a_standard_deviation_gives() -> None:
    # A normal feature shifted by 0.22 sd, in 20 quantile buckets of the reference: each floor is of that order.
    from statistics import NormalDist

    inner = [NormalDist().inv_cdf(q) for q in np.linspace(0.05, 0.95, 19)]
    cuts = np.array([-math.inf, *inner, math.inf])
    ref = np.diff([NormalDist().cdf(c) if math.isfinite(c) else float(c > 0) for c in cuts])
    cur = np.diff([NormalDist(0.22).cdf(c) if math.isfinite(c) else float(c > 0) for c in cuts])
    edges = np.array([*inner, math.inf])
    for name, statistic in STATISTICS.items():
        if statistic.effect_floor is None:
            continue
        value = statistic.compute(ref[None, :] * 1e6, cur[None, :] * 1e6, edges).values[0]
        assert statistic.effect_floor == pytest.approx(value, rel=0.35), name
