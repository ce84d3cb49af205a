"""histoviz.evaluation.paired: the paired comparison of two runs, checked against direct
computations (histoviz correlations, lifelines, scikit-learn, scipy's Wilcoxon) and on data
whose truth is known (a better model, an equally good one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _runs import write_heldout_run, write_outcome_run

from histoviz.errors import DataError
from histoviz.evaluation import paired as pr
from histoviz.evaluation.classification import classification_metrics
from histoviz.evaluation.metrics import columnwise_pearson, columnwise_spearman
from histoviz.evaluation.survival import concordance_index


# ---- weighted metrics == the metric of the explicitly resampled data ---------------------------------
def _expand(w: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    idx = np.repeat(np.arange(len(w)), w.astype(int))
    return [a[idx] for a in arrays]


def test_weighted_metrics_equal_references_on_resampled_data() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n, m = 30, 6
    y = rng.normal(size=(n, m))
    y[:, 2] = np.round(y[:, 2])  # ties
    p = 0.5 * y + rng.normal(size=(n, m))
    p[:, 3] = np.round(p[:, 3] * 2)
    y[3, 4], p[5, 5] = np.nan, np.nan  # missing pairs
    w = rng.multinomial(n, np.full(n, 1 / n), size=6).astype(float)
    got_p, got_s = pr.weighted_pearson(w, y, p), pr.weighted_spearman(w, y, p)
    for b in range(len(w)):
        yy, pp = _expand(w[b], y, p)
        np.testing.assert_allclose(got_p[b], columnwise_pearson(yy, pp), atol=1e-12)
        np.testing.assert_allclose(got_s[b], columnwise_spearman(yy, pp), atol=1e-12)

    t = rng.integers(1, 12, n).astype(float)  # tied times
    e = rng.integers(0, 2, n)
    r = np.round(rng.normal(size=n), 1)  # tied risks
    codes = rng.integers(0, 3, n)
    proba = rng.dirichlet(np.ones(3), n)
    proba[:, 0] = np.round(proba[:, 0], 1)
    c = pr.weighted_c_index(w, t, r, e)
    auc = pr.weighted_auc(w, codes == 1, proba[:, 1])
    for b in range(len(w)):
        tt, rr, ee, cc, pp = _expand(w[b], t, r, e, codes, proba)
        assert c[b] == pytest.approx(concordance_index(tt, rr, ee), abs=1e-12)
        assert auc[b] == pytest.approx(roc_auc_score(cc == 1, pp[:, 1]), abs=1e-12)
        ref = classification_metrics(cc, pp, ["a", "b", "c"])
        for met in ("auc_macro", "auc_micro", "balanced_accuracy", "accuracy"):
            assert pr.weighted_class_metric(w[b:b + 1], codes, proba, met)[0] == pytest.approx(ref[met], abs=1e-12)


# ---- fake runs with held-out tables ------------------------------------------------------------------
def _cohort(seed: int = 0, n: int = 60, m: int = 40, k: int = 5):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, m))
    folds = np.arange(n) % k
    return rng, signal, folds


def test_a_better_model_is_called_better_and_numbers_equal_direct_computation(tmp_path: Path) -> None:
    from scipy.stats import wilcoxon

    rng, y, folds = _cohort()
    good = y + 0.7 * rng.normal(size=y.shape)
    bad = y + 2.5 * rng.normal(size=y.shape)
    a = write_heldout_run(tmp_path / "good", "good", y, good, folds)
    b = write_heldout_run(tmp_path / "bad", "bad", y, bad, folds)
    [res] = pr.compare_paired(a, b, metric="pearson", task="gene", n_boot=500)
    # direct: per fold, per target Pearson from the held-out values; mean over folds, then targets
    ra = np.stack([columnwise_pearson(y[folds == f], good[folds == f]) for f in range(5)])
    rb = np.stack([columnwise_pearson(y[folds == f], bad[folds == f]) for f in range(5)])
    d = (ra - rb).mean(axis=0)
    assert res.difference == pytest.approx(d.mean(), abs=1e-12)
    assert res.mean_a == pytest.approx(ra.mean(), abs=1e-12) and res.mean_b == pytest.approx(rb.mean(), abs=1e-12)
    w = wilcoxon(d)
    assert res.wilcoxon_statistic == pytest.approx(w.statistic) and res.wilcoxon_p == pytest.approx(w.pvalue, rel=1e-12)
    assert res.wins == 5 and res.win_rate == 1.0 and res.n_units == 5 and res.n_targets == 40
    np.testing.assert_allclose(res.per_unit["difference"], (ra - rb).mean(axis=1), atol=1e-12)
    assert res.per_unit["n_patients"].tolist() == [12] * 5
    assert 0 < res.ci_low < res.difference < res.ci_high  # the interval excludes 0 and holds the estimate
    assert 0 < res.boot_low < res.difference < res.boot_high
    assert res.verdict == "good better" and res.n_boot == 500
    assert "patients within folds and over targets" in res.boot_method
    assert res.interval_method.startswith("Nadeau-Bengio corrected resampled t over 5 folds (df 4")
    # the corrected interval from the per-fold differences, by hand: 12 of 60 patients held out per fold
    du = (ra - rb).mean(axis=1)
    se = np.sqrt((1 / 5 + 12 / 48) * du.var(ddof=1))
    from scipy.stats import t as student_t
    half = student_t.ppf(0.975, 4) * se
    assert (res.ci_low, res.ci_high) == (pytest.approx(du.mean() - half, abs=1e-12), pytest.approx(du.mean() + half, abs=1e-12))
    assert res.corrected_p == pytest.approx(2 * student_t.sf(abs(du.mean() / se), 4), rel=1e-9)
    # the same comparison the other way round flips the sign and the verdict
    [rev] = pr.compare_paired(b, a, metric="pearson", n_boot=500)
    assert rev.difference == pytest.approx(-res.difference) and rev.verdict == "good better"
    assert rev.ci_high < 0


def test_identical_runs_are_within_noise(tmp_path: Path) -> None:
    rng, y, folds = _cohort(1)
    p = y + rng.normal(size=y.shape)
    a = write_heldout_run(tmp_path / "a", "a", y, p, folds)
    b = write_heldout_run(tmp_path / "b", "b", y, p, folds)
    [res] = pr.compare_paired(a, b, n_boot=200)
    assert res.difference == 0 and res.ci_low == 0 and res.ci_high == 0 and res.boot_low == 0
    assert res.verdict == "within noise" and res.win_rate == 0.5
    assert np.isnan(res.wilcoxon_p)  # no nonzero difference to test


def test_interval_covers_zero_for_equally_good_models() -> None:
    """Two models of the same quality whose errors are shared across targets (a patient-level
    error, as real models make): the 95% interval of the difference holds 0 in about 95% of 40
    cohorts. Resampling targets alone (the fallback for runs without held-out tables) misses
    the patient-level variation and holds 0 far less often."""
    import tempfile

    covered = targets_only = 0
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(40):
            rng = np.random.default_rng(100 + s)
            n, m = 40, 30
            load = rng.uniform(0.5, 1.5, m)
            y = rng.normal(size=n)[:, None] * load + 0.5 * rng.normal(size=(n, m))
            folds = np.arange(n) % 5
            pa = y + 1.5 * rng.normal(size=n)[:, None] * load + 0.3 * rng.normal(size=(n, m))
            pb = y + 1.5 * rng.normal(size=n)[:, None] * load + 0.3 * rng.normal(size=(n, m))
            a = write_heldout_run(Path(tmp) / f"a{s}", "a", y, pa, folds)
            b = write_heldout_run(Path(tmp) / f"b{s}", "b", y, pb, folds)
            [res] = pr.compare_paired(a, b, n_boot=300, seed=s)
            covered += res.boot_low <= 0 <= res.boot_high
            (b / "heldout" / "gene.parquet").unlink()
            (b / "predictions.parquet").unlink()
            [res] = pr.compare_paired(a, b, n_boot=300, seed=s)
            targets_only += res.boot_low <= 0 <= res.boot_high
    assert covered >= 34, f"the patient bootstrap held 0 in only {covered}/40 null comparisons"
    assert targets_only <= 25, f"targets-only intervals held 0 in {targets_only}/40: not a discriminating check"


def test_different_target_sets_compare_on_the_intersection(tmp_path: Path) -> None:
    rng, y, folds = _cohort(2)
    p = y + rng.normal(size=y.shape)
    names = [f"G{j:03d}" for j in range(40)]
    a = write_heldout_run(tmp_path / "a", "a", y, p, folds, targets=names)
    b = write_heldout_run(tmp_path / "b", "b", y[:, 10:], p[:, 10:] + rng.normal(size=(60, 30)), folds,
                          targets=names[10:])
    [res] = pr.compare_paired(a, b, n_boot=100)
    assert res.n_targets == 30 and res.only_a == names[:10] and res.only_b == []
    assert "compared on the 30 gene targets both runs predict (10 only in a, 0 only in b)" in res.notes[0]
    assert set(res.per_target["target"]) == set(names[10:])


def test_repeated_folds_are_the_unit(tmp_path: Path) -> None:
    rng, y, folds = _cohort(3, n=40)
    yy, f2 = np.vstack([y, y]), np.concatenate([folds, (folds + 2) % 5])  # two repeats of 5 folds
    rep = np.repeat([0, 1], 40)
    a = write_heldout_run(tmp_path / "a", "a", yy, yy + rng.normal(size=yy.shape), f2, repeat=rep)
    b = write_heldout_run(tmp_path / "b", "b", yy, yy + 2 * rng.normal(size=yy.shape), f2, repeat=rep)
    [res] = pr.compare_paired(a, b, n_boot=100)
    assert res.n_units == 10 and res.unit == "repeat x fold"
    assert list(res.per_unit.columns[:2]) == ["repeat", "fold"]


def test_refusals_and_fallbacks(tmp_path: Path) -> None:
    rng, y, folds = _cohort(4)
    p = y + rng.normal(size=y.shape)
    a = write_heldout_run(tmp_path / "a", "a", y, p, folds)
    other = write_heldout_run(tmp_path / "other", "other", y, p, np.roll(folds, 1))  # other patients per fold
    with pytest.raises(DataError, match="different held-out patients"):
        pr.compare_paired(a, other, n_boot=10)
    four = write_heldout_run(tmp_path / "four", "four", y, p, np.arange(60) % 4)
    with pytest.raises(DataError, match="different folds"):
        pr.compare_paired(a, four, n_boot=10)
    with pytest.raises(DataError, match="does not apply"):
        pr.compare_paired(a, a, metric="c_index")
    with pytest.raises(DataError, match="not predicted by both"):
        pr.compare_paired(a, a, task="protein")
    # a run without held-out tables: the interval resamples targets only, and says so
    bare = write_heldout_run(tmp_path / "bare", "bare", y, y + 2 * rng.normal(size=y.shape), folds)
    (bare / "heldout" / "gene.parquet").unlink()
    (bare / "predictions.parquet").unlink()
    [res] = pr.compare_paired(a, bare, n_boot=200)
    assert res.boot_method == "bootstrap over targets" and np.isfinite(res.boot_low) and np.isfinite(res.ci_low)
    assert any("bare has no held-out predictions" in n for n in res.notes)


def test_outcomes_paired_on_folds_with_a_patient_bootstrap(tmp_path: Path) -> None:
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(5)
    n = 200
    folds = np.arange(n) % 4
    z = rng.normal(size=n)  # true risk
    time = rng.exponential(np.exp(-z)) * 10
    event = (rng.random(n) < 0.7).astype(int)
    codes = np.digitize(z + 0.5 * rng.normal(size=n), [-0.5, 0.5])

    def proba(noise: float) -> np.ndarray:
        s = z[:, None] * np.array([-1.0, 0.0, 1.0]) + noise * rng.normal(size=(n, 3))
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    good = write_outcome_run(tmp_path / "good", "good", folds, time=time, event=event, risk=z + 0.3 * rng.normal(size=n),
                             codes=codes, proba=proba(0.3))
    null = write_outcome_run(tmp_path / "null", "null", folds, time=time, event=event, risk=rng.normal(size=n),
                             codes=codes, proba=proba(50.0))
    res = {r.task: r for r in pr.compare_paired(good, null, n_boot=300)}
    assert set(res) == {"grade", "survival"}
    s = res["survival"]
    assert s.metric == "c_index" and s.wilcoxon_over == "folds"
    hg = pd.read_parquet(good / "heldout" / "survival.parquet")
    hn = pd.read_parquet(null / "heldout" / "survival.parquet")
    cg = np.array([concordance_index(g["time"], g["risk"], g["event"]) for _, g in hg.groupby("fold")])
    cn = np.array([concordance_index(g["time"], g["risk"], g["event"]) for _, g in hn.groupby("fold")])
    assert s.difference == pytest.approx((cg - cn).mean(), abs=1e-12)
    assert s.wilcoxon_p == pytest.approx(wilcoxon(cg - cn).pvalue)
    assert s.ci_low > 0 and s.verdict == "good better" and s.win_rate == 1.0
    g = res["grade"]
    assert g.metric == "auc_macro" and g.ci_low > 0 and g.verdict == "good better"
    [same] = pr.compare_paired(good, good, task="survival", n_boot=100)
    assert same.difference == 0 and same.verdict == "within noise"


def test_cli_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from histoviz.cli import main

    rng, y, folds = _cohort(6)
    a = write_heldout_run(tmp_path / "a", "a", y, y + 0.7 * rng.normal(size=y.shape), folds)
    b = write_heldout_run(tmp_path / "b", "b", y, y + 2.5 * rng.normal(size=y.shape), folds)
    assert main(["compare", str(a), str(b), "--metric", "pearson", "--task", "gene", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    [res] = pr.compare_paired(a, b, metric="pearson", task="gene", n_boot=200)
    assert f"a - b = {res.difference:+.3f}" in out and f"[{res.ci_low:+.3f}, {res.ci_high:+.3f}]" in out
    assert "verdict: a better" in out and "fold win rate: a better in 5 of 5 folds" in out
    assert main(["compare", str(a), str(b), "--json", "--n-boot", "200"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["difference"] == pytest.approx(res.difference) and rows[0]["verdict"] == "a better"
    assert main(["compare", str(a), str(b), "--metric", "c_index"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not apply" in err[0]
