"""Split conformal: thresholds and sets equal MAPIE's, coverage holds at the promised rate,
too-small calibration sets are refused with the minimum size, PathGen's uncertainty formulas."""

from __future__ import annotations

import numpy as np
import pytest

from histoviz.errors import DataError
from histoviz.evaluation.conformal import (
    class_scores,
    class_sets,
    conformal_quantile,
    grade_uncertainty,
    min_calibration_size,
    mondrian_quantiles,
    risk_uncertainty,
)
from histoviz.tasks import ConformalSettings, get_task


def _probs(rng: np.random.Generator, n: int, k: int = 4, sharp: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated toy classifier: labels drawn from the predicted probabilities (exchangeable)."""
    logits = rng.normal(0, sharp, size=(n, k))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return p, y


def test_quantile_level_and_minimum_size():
    assert min_calibration_size(0.1) == 9
    assert min_calibration_size(0.2) == 4
    s = np.arange(1, 11, dtype=float)  # n = 10, level ceil(11 * 0.9) / 10 = 1.0 -> the max
    assert conformal_quantile(s, 0.1) == 10.0
    s = np.arange(1, 20, dtype=float)  # n = 19, level ceil(20 * 0.9) / 19 = 18/19 -> the 18th value
    assert conformal_quantile(s, 0.1) == 18.0
    with pytest.raises(DataError, match=r"8 calibration patient\(s\); alpha=0.1 needs at least 9"):
        conformal_quantile(np.ones(8), 0.1)
    # per column, NaN (patients without the target) left out
    q = conformal_quantile(np.array([[1.0, np.nan], [2.0, 5.0]] * 10), 0.2)
    assert q.shape == (2,) and q[1] == 5.0


def test_lac_sets_equal_mapie():
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    rng = np.random.default_rng(0)
    p_cal, y_cal = _probs(rng, 300)
    p_test, _ = _probs(rng, 200)

    class Fixed(ClassifierMixin, BaseEstimator):  # returns the probabilities it is given as X
        def fit(self, x, y):
            self.classes_ = np.arange(4)
            return self

        def predict_proba(self, x):
            return np.asarray(x)

        def predict(self, x):
            return np.argmax(x, axis=1)

    est = Fixed().fit(p_cal, y_cal)
    mapie = SplitConformalClassifier(estimator=est, confidence_level=0.9, conformity_score="lac", prefit=True)
    mapie.conformalize(p_cal, y_cal)
    _, sets_mapie = mapie.predict_set(p_test)
    q = conformal_quantile(class_scores(p_cal, y_cal, method="lac"), 0.1)
    ours = class_sets(p_test, q, method="lac", empty="keep")
    np.testing.assert_array_equal(ours, sets_mapie[:, :, 0])


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_class_coverage_over_50_random_splits(method):
    """Marginal coverage of grade sets within 3 points of 1 - alpha (mean over 50 splits)."""
    rng = np.random.default_rng(1)
    p, y = _probs(rng, 1000)
    cov = []
    for _ in range(50):
        perm = rng.permutation(len(y))
        cal, test = perm[:300], perm[300:]
        q = conformal_quantile(class_scores(p[cal], y[cal], method=method), 0.1)
        sets = class_sets(p[test], q, method=method)
        cov.append(sets[np.arange(len(test)), y[test]].mean())
    assert abs(np.mean(cov) - 0.9) < 0.03, np.mean(cov)
    assert np.mean(cov) >= 0.9 - 0.01  # the guarantee is >= 1 - alpha (up to Monte-Carlo error)


def test_regression_and_risk_intervals_cover_over_50_splits():
    rng = np.random.default_rng(2)
    task = get_task("survival")
    cs = ConformalSettings(alpha=0.1, survival="risk_bins")  # PathGen's interval on the risk scale
    # survival: predicted survival curves from a noisy view of the true bin
    from histoviz.data.outcomes import SurvivalBlock

    n, nb = 800, 4
    true_bin = rng.integers(0, nb, n)
    noisy = np.clip(true_bin + rng.normal(0, 0.8, n), 0, nb - 0.01)
    surv = np.clip(noisy[:, None] - np.arange(nb)[None, :], 0, 1)  # S_k ~ survived past bin k
    edges = np.array([0.0, 1.0, 2.0, 3.0, np.inf])
    blk = SurvivalBlock("survival", true_bin + 0.5, np.ones(n, int), np.ones(n, bool), edges)
    cov = []
    for _ in range(50):
        perm = rng.permutation(n)
        cal, test = perm[:300], perm[300:]
        q = conformal_quantile(task.scores(blk.subset(cal), surv[cal], cs), 0.1)
        reg = task.regions(surv[test], q, cs)
        c = task.coverage(blk.subset(test), surv[test], reg, cs)
        cov.append(float(c.loc[c["metric"] == "coverage", "value"].iloc[0]))
    assert abs(np.mean(cov) - 0.9) < 0.03, np.mean(cov)
    # regression: per-target absolute residuals
    from histoviz.data.omics import TargetBlock

    y = rng.normal(size=(800, 3))
    pred = y + rng.normal(0, [0.5, 1.0, 2.0], size=(800, 3))
    rb = TargetBlock("gene", ["a", "b", "c"], y, np.ones(800, bool))
    rt = get_task("regression")
    cov = []
    for _ in range(50):
        perm = rng.permutation(800)
        cal, test = perm[:300], perm[300:]
        q = conformal_quantile(rt.scores(rb.subset(cal), pred[cal], cs), 0.1)
        c = rt.coverage(rb.subset(test), pred[test], rt.regions(pred[test], q, cs), cs)
        cov.append(c.loc[c["metric"] == "coverage", "value"].to_numpy())
    cov = np.mean(cov, axis=0)
    assert np.all(np.abs(cov - 0.9) < 0.03), cov


def test_mondrian_gives_each_group_its_own_threshold():
    rng = np.random.default_rng(3)
    groups = np.array(["a"] * 200 + ["b"] * 200)
    scores = np.concatenate([rng.uniform(0, 0.2, 200), rng.uniform(0, 0.9, 200)])
    q = mondrian_quantiles(scores, groups, 0.1)
    assert q["a"] < 0.21 and q["b"] > 0.75
    with pytest.raises(DataError, match="subgroup 'c'"):
        mondrian_quantiles(np.ones(5), np.array(["c"] * 5), 0.1)


def test_pathgen_uncertainty_formulas():
    sets = np.array([[False, True, False, False], [True, True, True, True], [True, False, False, True]])
    np.testing.assert_allclose(grade_uncertainty(sets), [0.0, 1.0, 0.5 * 1.0])
    unc, size = risk_uncertainty(np.array([-4.0, -1.5, -0.2]), np.array([0.0, -0.5, 0.0]), 4)
    np.testing.assert_array_equal(size, [4, 1, 1])  # bins whose risk -b lies in [lo, hi]
    np.testing.assert_allclose(unc, [1.0, 1 / 4 * 1.0 / 4, 1 / 4 * 0.2 / 4])
