"""Reading a discrete-time survival function in time units: survival at horizons, the median,
default horizons and cohort percentiles (histoviz.evaluation.survival)."""

from __future__ import annotations

import numpy as np
import pytest

from histoviz.errors import DataError
from histoviz.evaluation.survival import (
    default_horizons,
    median_survival,
    percentile_of,
    survival_probability,
)

EDGES = np.array([0.0, 10.5, 24.0, 51.0, np.inf])


def _surv(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumprod(1.0 - rng.uniform(0.05, 0.6, size=(n, 4)), axis=1)


def test_at_bin_ends_it_is_the_models_own_survival_function():
    s = _surv(50)
    got = survival_probability(s, EDGES, EDGES[1:4])
    np.testing.assert_array_equal(got, s[:, :3])
    # S(0) = 1; the last bin is open, so beyond its start the model says nothing
    assert np.all(survival_probability(s, EDGES, 0.0) == 1.0)
    assert np.isnan(survival_probability(s, EDGES, [51.01, 200.0])).all()


def test_between_bin_ends_it_matches_numpys_linear_interpolation():
    s = _surv(20, seed=1)
    h = np.array([0.0, 3.0, 10.5, 17.2, 30.0, 50.9])
    got = survival_probability(s, EDGES, h)
    for i in range(len(s)):
        want = np.interp(h, [0.0, 10.5, 24.0, 51.0], [1.0, *s[i, :3]])
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-12)
    assert survival_probability(s[0], EDGES, 17.2).shape == ()
    assert survival_probability(s, EDGES, [[1.0, 2.0]]).shape == (20, 1, 2)


def test_median_is_where_the_interpolated_curve_crosses_one_half():
    s = _surv(60, seed=2)
    med = median_survival(s, EDGES)
    grid = np.linspace(0.0, 51.0, 51001)
    dense = survival_probability(s, EDGES, grid)
    for i in range(len(s)):
        below = np.flatnonzero(dense[i] <= 0.5)
        if below.size:
            assert med[i] == pytest.approx(grid[below[0]], abs=2e-3)
        else:  # still above 0.5 at the last bin end: not defined by the model
            assert np.isnan(med[i])
    assert np.isfinite(med).any() and np.isnan(med).any()


def test_default_horizons_are_years_inside_the_model_range_or_the_bin_ends():
    t, lab = default_horizons([0, 14.0, 40.0, 70.0, np.inf], "months")
    assert t.tolist() == [12.0, 36.0, 60.0] and lab == ["1 year", "3 years", "5 years"]
    t, lab = default_horizons([0, 200.0, 500.0, 800.0, np.inf], "days")
    assert t.tolist() == [365.25, 730.5] and lab == ["1 year", "2 years"]
    t, lab = default_horizons([0, 0.4, 0.9, 1.3, np.inf], "arbitrary")
    assert t.tolist() == [0.4, 0.9, 1.3] and lab == ["0.4 arbitrary", "0.9 arbitrary", "1.3 arbitrary"]


def test_percentile_of_a_cohort_matches_scipy():
    from scipy.stats import percentileofscore

    rng = np.random.default_rng(3)
    ref = rng.normal(size=67).round(1)  # ties included
    v = np.concatenate([rng.normal(size=30).round(1), [ref.min() - 1, ref.max() + 1]])
    want = [percentileofscore(ref, x, kind="mean") for x in v]
    np.testing.assert_allclose(percentile_of(v, ref), want)


def test_bad_edges_and_horizons_are_refused():
    s = _surv(3)
    with pytest.raises(DataError, match="needs 5 bin edges"):
        survival_probability(s, [0, 1, 2], 1.0)
    with pytest.raises(DataError, match="horizons"):
        survival_probability(s, EDGES, [-1.0])
