"""farm.engine.stats against values computed by hand (and by the definitions)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.engine import stats


def test_summary_of_one_to_ten_matches_hand_computation():
    s = stats.summarize([float(x) for x in range(10, 0, -1)], cold_ms=42.0)
    assert s["n"] == 10
    assert s["mean_ms"] == pytest.approx(5.5)
    # sample variance of 1..10 is 55/6; t(9) = 2.2622
    sd = math.sqrt(55 / 6)
    assert s["stdev_ms"] == pytest.approx(sd)
    half = 2.2622 * sd / math.sqrt(10)
    assert s["ci95_low_ms"] == pytest.approx(5.5 - half)
    assert s["ci95_high_ms"] == pytest.approx(5.5 + half)
    assert s["median_ms"] == pytest.approx(5.5)
    assert s["p90_ms"] == pytest.approx(9.1)  # rank 8.1 -> 9 + 0.1 * (10 - 9)
    assert s["q1_ms"] == pytest.approx(3.25)
    assert s["q3_ms"] == pytest.approx(7.75)
    assert s["iqr_ms"] == pytest.approx(4.5)
    assert (s["min_ms"], s["max_ms"]) == (1.0, 10.0)
    assert s["outliers"] == 0
    assert s["p99_ms"] is None
    assert s["cold_ms"] == 42.0


def test_tukey_fences_count_outliers_on_both_sides():
    # q1 = 2, q3 = 4, IQR = 2: fences at -1 and 7
    assert stats.summarize([1.0, 2.0, 3.0, 4.0, 100.0])["outliers"] == 1
    assert stats.summarize([-50.0, 2.0, 2.0, 3.0, 4.0, 4.0, 100.0])["outliers"] == 2
    assert stats.summarize([1.0, 2.0, 3.0, 4.0, 7.0])["outliers"] == 0  # on the fence


def test_p99_only_from_662_samples():
    assert stats.summarize([float(x) for x in range(661)])["p99_ms"] is None
    s = stats.summarize([float(x) for x in range(1, 1001)])
    assert s["p99_ms"] == pytest.approx(990.01)  # rank 989.01 of 0..999
    assert stats.summarize([float(x) for x in range(662)])["p99_ms"] is not None


def test_one_sample_has_no_spread():
    s = stats.summarize([3.0])
    assert s["stdev_ms"] is None and s["ci95_low_ms"] is None and s["ci95_high_ms"] is None
    assert s["median_ms"] == s["mean_ms"] == s["p90_ms"] == 3.0


def test_no_samples_is_an_error():
    with pytest.raises(ValueError):
        stats.summarize([])


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.7062), (2, 4.3027), (9, 2.2622), (29, 2.0452), (30, 2.0423), (31, 2.0395),
     (40, 2.0211), (60, 2.0003), (120, 1.9799), (10_000, 1.9602)],
)  # fmt: skip
def test_t_critical_values(df, expected):
    assert stats.t_critical_95(df) == pytest.approx(expected, abs=2e-4)


def test_t_critical_decreases_towards_normal():
    values = [stats.t_critical_95(df) for df in range(1, 200)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert values[-1] > 1.959963984540054


def test_percentile_edges():
    xs = [1.0, 2.0, 4.0]
    assert stats.percentile(xs, 0) == 1.0
    assert stats.percentile(xs, 100) == 4.0
    assert stats.percentile(xs, 75) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        stats.percentile(xs, 101)
    assert stats.median([5.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=1e4), min_size=2, max_size=200))
def test_summary_invariants(xs):
    s = stats.summarize(xs)
    eps = 1e-9 * max(xs)
    assert s["min_ms"] - eps <= s["mean_ms"] <= s["max_ms"] + eps
    assert s["ci95_low_ms"] <= s["mean_ms"] <= s["ci95_high_ms"]
    assert s["min_ms"] <= s["q1_ms"] <= s["median_ms"] <= s["q3_ms"] <= s["p90_ms"] <= s["max_ms"]
    assert 0 <= s["outliers"] < len(xs)


def test_median_ci_is_the_order_statistics_either_side():
    from farm.engine.stats import median_ci95

    xs = [float(i) for i in range(1, 101)]  # ranks 50 -/+ 9.8 (and one): 40 and 61
    assert median_ci95(xs) == (40.0, 61.0)
    assert median_ci95(xs[:9]) == (None, None)  # too few samples for a useful interval
    s = stats.summarize(xs)
    assert s["median_ci95_low_ms"] <= s["median_ms"] <= s["median_ci95_high_ms"]
