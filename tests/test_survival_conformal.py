"""Conformal survival bounds in the data's time unit, calibrated with censored patients too
(histoviz.evaluation.survival_conformal): the pieces against references (unweighted split
conformal, lifelines' Kaplan-Meier of the censoring times, exponential quantiles), and coverage
over 200 random splits on lifelines' Rossi data (one-patch bags) and on a synthetic cohort whose
true survival times are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoviz.errors import DataError
from histoviz.evaluation import survival_conformal as sc


def test_weighted_quantile_equals_split_conformal_with_unit_weights_and_refuses_too_little_weight() -> None:
    from histoviz.evaluation.conformal import conformal_quantile

    rng = np.random.default_rng(0)
    for n in (9, 20, 57):
        s = rng.normal(size=n)
        assert sc.weighted_conformal_quantile(s, np.ones(n), 0.1) == conformal_quantile(s, 0.1)
    # zero weights drop out; fractional weights move the threshold down as the high scores lose weight
    s = np.arange(1.0, 31.0)
    assert sc.weighted_conformal_quantile(np.r_[s, 100.0], np.r_[np.ones(30), 0.0], 0.1) == \
        conformal_quantile(s, 0.1)
    w = np.r_[np.ones(20), np.full(10, 0.2)]
    q = sc.weighted_conformal_quantile(s, w, 0.1)
    # by hand: total 22, need 0.9 * 23 = 20.7: cumulative weight reaches 20.2 at s=21, 20.4 at s=22, 20.6 at 23,
    # 20.8 at 24
    assert q == 24.0
    with pytest.raises(DataError, match="needs at least 9"):
        sc.weighted_conformal_quantile(s[:20], np.full(20, 0.4), 0.1)


def test_censoring_km_equals_lifelines_reverse_kaplan_meier() -> None:
    from lifelines import KaplanMeierFitter

    from histoviz.evaluation.survival import censoring_km

    rng = np.random.default_rng(1)
    t = np.ceil(rng.exponential(10, 300))  # ties, events and censorings at the same times
    e = (rng.random(300) < 0.6).astype(int)
    ut, g = censoring_km(t, e)
    # lifelines' KM of the censoring indicator, with events leaving the risk set first at tied times
    km = KaplanMeierFitter().fit(t - 1e-7 * e, 1 - e)  # an event at t happens just before a censoring at t
    ref = km.survival_function_at_times(ut).to_numpy()
    np.testing.assert_allclose(g, ref, atol=1e-12)


def test_quantile_time_is_exact_for_exponential_curves() -> None:
    edges = np.array([0.0, 7.0, 15.0, 31.0, np.inf])
    lam = np.array([0.005, 0.03, 0.2, 1.5])
    surv = np.exp(-lam[:, None] * np.array([7.0, 15.0, 31.0, 60.0]))
    for a in (0.05, 0.1, 0.5):
        np.testing.assert_allclose(sc.quantile_time(surv, edges, a), -np.log1p(-a) / lam, rtol=1e-12)
    assert sc.calibration_size_for(0.1, 0.03) == 98 and sc.coverage_sd(0.1, 98) <= 0.03 + 1e-12 < sc.coverage_sd(0.1, 97)


def _rossi() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    from lifelines.datasets import load_rossi

    d = load_rossi()
    x = d.drop(columns=["week", "arrest"]).to_numpy(float)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return [r[None, :].astype(np.float32) for r in x], d["week"].to_numpy(float), d["arrest"].to_numpy(int)


@pytest.mark.slow
def test_coverage_over_200_random_splits_on_rossi_as_one_patch_bags() -> None:
    """Rossi: 432 released prisoners, re-arrest within 52 weeks (114 events); every censored
    patient is followed to week 52, past the horizon, so the weighted coverage is the plain one."""
    from histoviz.training.survival_check import survival_split_check

    bags, t, e = _rossi()
    res = survival_split_check(bags, t, e, n_fits=10, splits_per_fit=20, time_unit="weeks",
                               params={"tasks": ["survival"], "cox_components": 7},
                               groups=np.where(pd.Series(bags).map(lambda b: b[0, 1] > 0), "age>mean", "age<=mean"))
    a = res[res["group"] == "all"]
    print(a.groupby("model")[["coverage", "lower_bound", "width", "tau", "n_eff", "coverage_sd"]].mean().to_string())
    print("SD of coverage over the 200 splits:", a.groupby("model")["coverage"].std().round(4).to_dict())
    print(res.groupby(["model", "group"])["coverage"].mean().to_string())
    assert a["split"].nunique() == 200
    for model in ("model", "shuffled"):
        cov = a[a["model"] == model]["coverage"]
        assert cov.mean() >= 1 - 0.1 - 0.03, (model, cov.mean())
        assert cov.mean() <= 0.99  # not trivially everything
    assert (a["tau"] < 52).all()  # the horizon is within every patient's follow-up


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from _model_fixtures import outcome_cohort

    from histoviz.io.featurebag import FeatureBag

    c = outcome_cohort(tmp_path_factory)
    table = pd.read_csv(c.cohort_csv)
    truth = pd.read_csv(c.root / "truth" / "patients.csv").set_index("patient_id")
    pats = list(dict.fromkeys(table["patient_id"].astype(str)))
    bags = []
    for p in pats:  # one patch per patient: the mean of its slides' patch features
        feats = [FeatureBag.from_h5(c.features / f"{s}.h5").features for s in table.loc[table["patient_id"] == p, "slide_id"]]
        bags.append(np.concatenate(feats).mean(axis=0, keepdims=True).astype(np.float32))
    tr = truth.loc[pats]
    return bags, tr


@pytest.mark.slow
def test_coverage_over_200_random_splits_on_a_synthetic_cohort_against_the_true_survival_times(synthetic) -> None:
    """The synthetic cohort knows every patient's uncensored survival time: the bound calibrated with
    censored patients covers the true time at the promised rate, per grade too, and the
    censoring-weighted estimate a run reports agrees with it; the bounds of the model are higher than
    the shuffled control's."""
    from histoviz.training.survival_check import survival_split_check

    bags, tr = synthetic
    res = survival_split_check(bags, tr["time"].to_numpy(float), tr["event"].to_numpy(int), n_fits=10,
                               splits_per_fit=20, params={"tasks": ["survival"]},
                               true_time=tr["event_time"].to_numpy(float), groups=tr["grade"].astype(str).to_numpy())
    a = res[res["group"] == "all"]
    summary = a.groupby("model")[["coverage", "coverage_true", "lower_bound", "width", "n_eff", "coverage_sd"]].mean()
    print(summary.to_string())
    print("SD of true coverage over the 200 splits:", a.groupby("model")["coverage_true"].std().round(4).to_dict())
    print(res.groupby(["model", "group"])["coverage_true"].mean().to_string())
    assert a["split"].nunique() == 200
    for model in ("model", "shuffled"):
        m = summary.loc[model]
        assert m["coverage_true"] >= 1 - 0.1 - 0.03 and m["coverage"] >= 1 - 0.1 - 0.03, (model, m.to_dict())
        assert abs(m["coverage"] - m["coverage_true"]) < 0.03  # the weighted estimate tracks the truth
    assert summary.loc["model", "lower_bound"] > 1.2 * summary.loc["shuffled", "lower_bound"]
