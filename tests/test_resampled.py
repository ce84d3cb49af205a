"""histoviz.evaluation.resampled: the Nadeau-Bengio corrected resampled t interval, against a hand
computation on a fixed table and on repeated cross-validation of two equally good refitted models."""

from __future__ import annotations

import numpy as np
import pytest

from histoviz.errors import DataError
from histoviz.evaluation.resampled import corrected_resampled_t


def test_corrected_interval_equals_a_hand_computation_on_a_fixed_table() -> None:
    # five per-fold differences, 12 held-out and 48 training patients per fold
    # mean 0.014; deviations .006 -.004 .016 -.024 .006 -> s^2 = 9.2e-4 / 4 = 2.3e-4
    # var = (1/5 + 12/48) * 2.3e-4 = 1.035e-4 -> se = 0.0101735; t(0.975, df 4) = 2.7764451
    r = corrected_resampled_t([0.02, 0.01, 0.03, -0.01, 0.02], n_test=12, n_train=48)
    assert r.mean == pytest.approx(0.014, abs=1e-15) and r.df == 4 and r.n_units == 5 and r.ratio == 0.25
    assert r.sd ** 2 == pytest.approx(2.3e-4, rel=1e-12)
    assert r.se == pytest.approx(np.sqrt(1.035e-4), rel=1e-12)
    assert r.low == pytest.approx(0.014 - 2.7764451 * np.sqrt(1.035e-4), abs=1e-8)
    assert r.high == pytest.approx(0.014 + 2.7764451 * np.sqrt(1.035e-4), abs=1e-8)
    assert r.t == pytest.approx(0.014 / np.sqrt(1.035e-4), rel=1e-12)
    # per-fold sizes: the ratio is the mean of the folds' ratios; NaN folds are left out
    r2 = corrected_resampled_t([0.1, np.nan, 0.3, 0.2], n_test=[10, 10, 20, 10], n_train=[40, 40, 30, 40])
    assert r2.n_units == 3 and r2.ratio == pytest.approx((0.25 + 2 / 3 + 0.25) / 3)
    assert r2.se == pytest.approx(np.sqrt((1 / 3 + r2.ratio) * 0.01), rel=1e-12)
    assert np.isnan(corrected_resampled_t([0.1], n_test=1, n_train=4).low)
    with pytest.raises(DataError):
        corrected_resampled_t([0.1, 0.2], n_test=0, n_train=4)


def test_corrected_interval_holds_zero_for_equally_good_refitted_models() -> None:
    """Two ridge models on disjoint, equally informative feature halves, refitted in every fold of
    3 x 5-fold cross-validation: the corrected 95% interval holds 0 in >= 90% of 200 data sets;
    the plain t interval of the 15 folds (which ignores that folds share training patients) in far
    fewer."""
    from scipy import stats

    corrected = plain = 0
    for s in range(200):
        rng = np.random.default_rng(s)
        n = 60
        x = rng.normal(size=(n, 10))
        y = x @ np.full(10, 0.4) + 1.5 * rng.normal(size=n)
        d, n_test, n_train = [], [], []
        for _ in range(3):
            folds = rng.permutation(np.arange(n) % 5)
            for f in range(5):
                te, tr = folds == f, folds != f
                r = []
                for cols in (slice(0, 5), slice(5, 10)):
                    xt = x[tr][:, cols]
                    b = np.linalg.solve(xt.T @ xt + np.eye(5), xt.T @ y[tr])
                    r.append(np.corrcoef(x[te][:, cols] @ b, y[te])[0, 1])
                d.append(r[0] - r[1])
                n_test.append(te.sum())
                n_train.append(tr.sum())
        ci = corrected_resampled_t(d, n_test=n_test, n_train=n_train)
        corrected += ci.low <= 0 <= ci.high
        half = stats.t.ppf(0.975, 14) * np.std(d, ddof=1) / np.sqrt(15)
        plain += abs(np.mean(d)) <= half
    assert corrected >= 180, f"corrected interval held 0 in {corrected}/200"
    assert plain <= 160, f"plain t interval held 0 in {plain}/200: not a discriminating check"
