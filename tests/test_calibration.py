"""Calibration of outcome predictions: the reliability diagram and ECE of grade probabilities
equal a computation on scikit-learn's ``calibration_curve``; predicted survival at a horizon vs
Kaplan-Meier by risk decile equals lifelines' ``KaplanMeierFitter`` on independently formed
groups; coverage per subgroup equals a pandas group-by of the held-out sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoviz.errors import DataError
from histoviz.evaluation import calibration as cal


def _ece_sklearn(y: np.ndarray, p: np.ndarray, n_bins: int, strategy: str) -> float:
    from sklearn.calibration import calibration_curve

    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    edges = (np.linspace(0, 1, n_bins + 1) if strategy == "uniform"
             else np.percentile(p, np.linspace(0, 100, n_bins + 1)))
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(prob_true - prob_pred)) / counts.sum())


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_and_ece_equal_sklearn_calibration_curve(strategy: str) -> None:
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    n, k = 400, 3
    logits = rng.normal(size=(n, k)) * 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(k, p=row ** 0.6 / (row ** 0.6).sum()) for row in proba])  # under-confident
    classes = ["1", "2", "3"]
    h = pd.DataFrame({"fold": np.arange(n) % 5, "y_true": np.asarray(classes)[truth]})
    for j, c in enumerate(classes):
        h[f"p_{c}"] = proba[:, j]
    curves, summary = cal.grade_calibration(h, n_bins=10, strategy=strategy)
    conf, correct = proba.max(axis=1), (proba.argmax(axis=1) == truth).astype(int)
    top = curves[curves["view"] == "top-label"]
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=10, strategy=strategy)
    np.testing.assert_allclose(top["observed"], prob_true, atol=1e-12)
    np.testing.assert_allclose(top["predicted"], prob_pred, atol=1e-12)
    assert summary["ece"] == pytest.approx(_ece_sklearn(correct, conf, 10, strategy), abs=1e-12)
    for j, c in enumerate(classes):
        yc = (truth == j).astype(int)
        assert summary["ece_per_class"][c] == pytest.approx(_ece_sklearn(yc, proba[:, j], 10, strategy), abs=1e-12)
    assert top["count"].sum() == n and summary["n"] == n
    assert (top["lower"] <= top["observed"] + 1e-12).all() and (top["upper"] >= top["observed"] - 1e-12).all()
    # a calibrated predictor has a smaller ECE than this under-confident one
    rng2 = np.random.default_rng(1)
    p = rng2.uniform(0, 1, 20000)
    assert cal.expected_calibration_error(rng2.uniform(size=p.size) < p, p) < 0.02 < summary["ece"]
    with pytest.raises(DataError, match="p_<class>"):
        cal.grade_calibration(h[["fold", "y_true"]])


def _survival_heldout(seed: int = 0, n: int = 300) -> pd.DataFrame:
    """Two folds with their own bins; S_k from a Weibull-ish model with a per-patient risk."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    fold = np.arange(n) % 2
    time = rng.exponential(20 * np.exp(-0.7 * risk)) + 0.1
    cens = rng.exponential(40, n) + 0.1
    ends = np.where(fold[:, None] == 0, [[8.0, 18.0, 35.0, np.inf]], [[10.0, 20.0, 30.0, np.inf]])
    s = np.exp(-np.where(np.isfinite(ends), ends, 80.0) / (20 * np.exp(-0.6 * risk))[:, None])
    h = pd.DataFrame({"fold": fold, "patient_id": [f"P{i}" for i in range(n)], "time": np.minimum(time, cens),
                      "event": (time <= cens).astype(int), "risk": -s.sum(axis=1)})
    for k in range(4):
        h[f"S_{k}"] = s[:, k]
        h[f"end_{k}"] = ends[:, k]
    return h


def test_survival_calibration_by_decile_equals_lifelines_km() -> None:
    from lifelines import KaplanMeierFitter

    h = _survival_heldout()
    horizon = 15.0
    table, summary = cal.survival_calibration(h, horizon, n_groups=10)
    # independent: S(horizon) interpolated linearly between each fold's bin ends, S(0) = 1
    pred = np.array([np.interp(horizon, [0.0, *r[["end_0", "end_1", "end_2"]]], [1.0, *r[["S_0", "S_1", "S_2"]]])
                     for _, r in h.iterrows()])
    np.testing.assert_allclose(cal.survival_at_horizon(h, horizon), pred, rtol=1e-12)
    order = np.argsort(pred, kind="stable")
    groups = np.array_split(order, 10)
    assert table["n"].tolist() == [len(g) for g in groups] and summary["n"] == len(h)
    for row, idx in zip(table.itertuples(), groups):
        kmf = KaplanMeierFitter().fit(h["time"].to_numpy()[idx], h["event"].to_numpy()[idx])
        assert row.observed == pytest.approx(float(kmf.predict(horizon)), abs=1e-12)
        assert row.predicted == pytest.approx(pred[idx].mean(), abs=1e-12)
        assert row.events == int(h["event"].to_numpy()[idx].sum())
        assert row.lower <= row.observed <= row.upper
    # the highest-risk decile survives least, in prediction and (here) in observation
    assert table["predicted"].is_monotonic_increasing
    assert table["observed"].iloc[0] < table["observed"].iloc[-1]
    # past the last finite bin end of a fold, that fold's patients are undefined and left out
    _, s2 = cal.survival_calibration(h, 33.0, n_groups=5)
    assert s2["n_undefined"] == int((h["fold"] == 1).sum())
    with pytest.raises(DataError, match="retrain"):
        cal.survival_calibration(h.drop(columns=[f"end_{k}" for k in range(4)]), horizon)


def test_coverage_by_group_equals_a_pandas_groupby() -> None:
    rng = np.random.default_rng(0)
    n = 90
    h = pd.DataFrame({"fold": np.arange(n) % 3, "y_true": rng.choice(["1", "2", "3"], n),
                      "covered": rng.random(n) < 0.85, "set_size": rng.integers(1, 4, n).astype(float)})
    got = cal.coverage_by_group(h, "classification")
    by_class = got[got["by"] == "class"].set_index("group")
    ref = h.groupby("y_true")
    np.testing.assert_allclose(by_class["coverage"], ref["covered"].mean())
    np.testing.assert_allclose(by_class["size"], ref["set_size"].mean())
    assert by_class["n"].tolist() == ref.size().tolist()
    assert got[got["by"] == "fold"]["n"].sum() == n
    s = pd.DataFrame({"fold": np.arange(n) % 3, "event": rng.integers(0, 2, n), "bin": rng.integers(0, 4, n),
                      "risk_lo": -rng.uniform(0, 4, n), "width": rng.uniform(0, 4, n)})
    s["covered"] = np.where(s["event"] == 1, rng.random(n) < 0.9, np.nan)
    got = cal.coverage_by_group(s, "survival").set_index("group")
    ev, ce = s[s["event"] == 1], s[s["event"] == 0]
    assert got.loc["event (coverage)", "coverage"] == pytest.approx(ev["covered"].astype(float).mean())
    assert got.loc["censored (consistent)", "coverage"] == pytest.approx((ce["risk_lo"] <= -ce["bin"]).mean())
    assert cal.coverage_by_group(s.drop(columns="covered"), "survival").empty
