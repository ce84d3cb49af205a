"""Metrics equal scipy's / lifelines' values; top-k selection and fold summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from histoviz.evaluation.compare import summarise_metrics
from histoviz.evaluation.metrics import (
    OPTIMISTIC_LABEL,
    columnwise_pearson,
    per_sample_correlation,
    per_target_correlation,
    select_topk,
    summarise_over_folds,
    topk_best_predicted,
)
from histoviz.evaluation.survival import concordance_index


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 12))
    y = 0.6 * x + rng.normal(size=x.shape)
    y[:, 2] = np.round(y[:, 2])  # ties for Spearman
    x[:, 3] = np.round(x[:, 3] * 2)
    x[4, 5] = np.nan  # pairwise NaN handling
    y[7, 5] = np.nan
    x[:, 8] = np.nan
    x[:6, 8] = rng.normal(size=6)  # only 6 complete pairs
    return x, y


def test_per_target_equals_scipy(xy):
    x, y = xy
    df = per_target_correlation(x, y, targets=[f"g{j}" for j in range(12)])
    assert list(df.columns) == ["target", "pearson", "spearman", "n"]
    for j in range(12):
        ok = ~(np.isnan(x[:, j]) | np.isnan(y[:, j]))
        r = stats.pearsonr(x[ok, j], y[ok, j])[0]
        rho = stats.spearmanr(x[ok, j], y[ok, j])[0]
        assert df.pearson[j] == pytest.approx(r, abs=1e-12)
        assert df.spearman[j] == pytest.approx(rho, abs=1e-12)
        assert df.n[j] == ok.sum()


def test_undefined_correlations_are_nan_without_warnings():
    x = np.arange(10.0)[:, None].repeat(3, axis=1)
    y = x.copy()
    y[:, 1] = 4.0  # constant prediction
    x[3:, 2] = np.nan  # 3 pairs left, min_n=4
    r = columnwise_pearson(x, y, min_n=4)
    assert r[0] == pytest.approx(1.0)
    assert np.isnan(r[1]) and np.isnan(r[2])


def test_per_sample_equals_scipy_and_centering(xy):
    x, y = xy
    x, y = x[:, :5], y[:, :5] + 10 * np.arange(5)[None, :]  # big target-mean differences
    x = x + 10 * np.arange(5)[None, :]
    x[4, :] = np.nan_to_num(x[4, :])
    df = per_sample_correlation(x, y, center=x.mean(axis=0))
    for i in range(len(x)):
        ok = ~(np.isnan(x[i]) | np.isnan(y[i]))
        assert df.pearson[i] == pytest.approx(stats.pearsonr(x[i, ok], y[i, ok])[0], abs=1e-12)
    # uncentred per-patient correlation is inflated by target means; centred is not
    assert df.pearson.mean() > 0.95
    assert df.pearson_centered.mean() < 0.8


def test_select_topk_uses_given_values_only():
    train = np.array([[0.0, 5.0, 1.0, 2.0], [0.0, -5.0, 1.2, 9.0], [0.0, 5.0, 0.8, 4.0]])
    assert select_topk(train, 2, criterion="variance").tolist() == [1, 3]
    assert select_topk(train, 2, criterion="mean").tolist() == [3, 1]
    assert select_topk(train, 10, criterion="mean", targets=list("abcd")).tolist() == ["d", "b", "c", "a"]
    with pytest.raises(ValueError, match="criterion"):
        select_topk(train, 2, criterion="pearson")


def test_topk_best_predicted_is_optimistic_selection():
    r = np.array([0.1, np.nan, 0.9, 0.5])
    assert topk_best_predicted(r, 2).tolist() == [2, 3]
    assert "optimistic" in OPTIMISTIC_LABEL


def test_c_index_matches_lifelines():
    from lifelines.utils import concordance_index as ll

    rng = np.random.default_rng(1)
    t = rng.exponential(10, 50)
    e = rng.random(50) < 0.7
    risk = -t + rng.normal(0, 5, 50)
    assert concordance_index(t, risk, e) == pytest.approx(ll(t, -risk, e))
    assert concordance_index(t, -t, e) == pytest.approx(1.0)  # higher risk, earlier event
    assert concordance_index(t, t, e) == pytest.approx(0.0)


def test_summaries_mean_and_std_over_folds():
    df = pd.DataFrame({
        "model": "m", "modality": "gene", "fold": [0, 0, 1, 1],
        "target": ["a", "b", "a", "b"], "pearson": [0.2, 0.4, 0.6, np.nan], "spearman": [0.0] * 4,
        "n": 5, "train_var": [1.0, 2.0, 2.0, 1.0], "train_mean": [0.0] * 4,
    })
    s = summarise_over_folds(df, by=["model", "modality"], value="pearson")
    assert s["mean"][0] == pytest.approx((0.3 + 0.6) / 2)
    assert s["std"][0] == pytest.approx(np.std([0.3, 0.6], ddof=1))
    assert s["n_undefined"][0] == 1
    long = df.rename(columns={"modality": "task", "pearson": "value"}).assign(
        metric="pearson", kind="regression", axis="per-target", subset="all")
    long = long[["model", "fold", "task", "kind", "target", "metric", "value", "n", "axis", "subset"]]
    targets = df[["model", "fold", "modality", "target", "train_var", "train_mean"]].rename(columns={"modality": "task"})
    t = summarise_metrics(long, targets=targets, topk=[1], criteria=["variance"])
    t = t[t.metric == "pearson"]
    assert t[t.subset == "all"].iloc[0]["mean"] == pytest.approx((0.3 + 0.6) / 2)
    top = t[t.subset == "top1_variance"].iloc[0]
    # fold 0 keeps target b (train_var 2) -> 0.4; fold 1 keeps a -> 0.6
    assert top["mean"] == pytest.approx(0.5)
    best = t[t.subset == "best1_predicted"].iloc[0]
    assert best.selection == OPTIMISTIC_LABEL
    assert best["mean"] == pytest.approx((0.4 + 0.6) / 2)
