"""The napari samples: opened in a fresh process with an empty cache, made by trained models, on
a patient outside the training cohort, and following that slide's known truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(pytestconfig):
    from tests._sample import synthetic_sample

    return synthetic_sample(pytestconfig)


def test_every_sample_opens_in_a_fresh_process_with_an_empty_cache(pytestconfig, tmp_path):
    """First use as a newcomer meets it: a new process, HISTOVIZ_CACHE empty. The sample is built
    in a process of its own, step by step, and nothing in the opening process loads torch."""
    from histoviz.demo.samples import SAMPLES
    from tests._sample import first_open_record, open_in_fresh_process

    assert SAMPLES == ("synthetic", "svs-simulated")
    records = {"synthetic": first_open_record(pytestconfig), "svs-simulated": open_in_fresh_process(
        "svs-simulated", tmp_path)}
    for kind, r in records.items():
        assert r["was_empty"], kind
        n = r["steps"][0][1]
        assert [s[:2] for s in r["steps"]] == [[k, n] for k in range(1, n + 1)], (kind, r["steps"])
        assert not r["torch"], f"{kind}: the opening process imported torch"
        assert r["layers"][0] == ("CMU-1-Small-Region" if kind == "svs-simulated" else "S067"), r["layers"]
        assert len(r["layers"]) == 2 and r["layers"][1].startswith("map: ")
    assert records["synthetic"]["steps"][-1][2].startswith("predicting the patches of S067")
    assert records["svs-simulated"]["layers"][1].startswith("map: simulated ")
    # reopening reads the cache: no build, no steps
    again = open_in_fresh_process("svs-simulated", tmp_path)
    assert not again["was_empty"] and again["steps"] == [] and again["predictions"] == records["svs-simulated"][
        "predictions"]


def test_a_failed_build_names_the_sample_and_its_last_output(tmp_path):
    from histoviz.demo.samples import open_sample
    from histoviz.errors import DataError

    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder should be")
    with pytest.raises(DataError, match=r"(?s)building the svs-simulated sample failed in its own process.*"
                                        r"(FileExistsError|NotADirectoryError)"):
        open_sample("svs-simulated", cache)


def test_sample_maps_come_from_the_trained_runs(sample):
    from histoviz.io.predictions import read_predictions
    from histoviz.io.rundir import RunDir
    from histoviz.viz.maps import available_maps, is_simulated

    a = read_predictions(sample.predictions)
    info = a.uns["histoviz"]
    assert not is_simulated(a) and info["model"] == "cpnn + abmil-grade-survival"
    assert {RunDir(r).info["model"] for r in sample.runs.values()} == {"cpnn", "abmil-grade-survival"}
    assert json.loads(info["trained_on"])["synthetic"] is True
    maps = available_maps(a)
    assert {"gene", "cell_type", "dominant_type", "grade_proba", "grade_class", "grade_set_size",
            "grade_uncertainty", "risk", "risk_width", "risk_uncertainty", "attention"} <= set(maps)
    sp = a.uns["slide_prediction"]
    assert set(sp) == {"gene", "grade", "survival"}
    assert len(sp["grade"]["set"]) >= 1
    surv = sp["survival"]
    if str(surv.get("interval", "")) == "time":  # a conformal lower bound of the event time, in the data's unit
        assert 0 <= surv["lo"] <= surv["hi"] and surv["time_unit"]
    else:  # PathGen's 4-bin risk interval
        assert surv["lo"] <= surv["risk"] <= surv["hi"]


def test_the_shown_slide_is_a_patient_outside_the_training_cohort(sample):
    """No training slide or patient has the shown slide's id, its patient's draws (tumour fraction,
    grade, survival) or its layout; the models' training splits never list it."""
    from histoviz.data.synthetic import load_synthetic_cohort
    from histoviz.io.rundir import RunDir

    shown = load_synthetic_cohort(sample.slide.parent.parent)
    train = load_synthetic_cohort(sample.predictions.parent / "train")
    s, t = shown.cohort_table(), train.cohort_table()
    assert list(s["slide_id"]) == ["S067"] and list(s["patient_id"]) == ["P067"]
    assert not set(s["slide_id"]) & set(t["slide_id"]) and not set(s["patient_id"]) & set(t["patient_id"])
    sp, tp = (pd.read_csv(c.root / "truth" / "patients.csv") for c in (shown, train))
    row = sp.iloc[0]
    same = tp[(np.isclose(tp["tumour_fraction"], row["tumour_fraction"])) | (np.isclose(tp["time"], row["time"]))]
    assert same.empty, same
    labels = shown.truth("S067")["labels"]
    for sid in train.slide_ids:
        other = train.truth(sid)["labels"]
        h, w = other.shape
        assert not (np.array_equal(labels[:h, :w], other) and np.unique(other).size > 1), sid
    for run in sample.runs.values():
        assert "P067" not in set(RunDir(run).splits()["patient_id"])


def test_sample_maps_follow_the_slides_truth(sample):
    """On the shown slide (a patient no model trained on) the per-patch predictions track the
    generator's truth: predicted MKI67 vs true expression, risk and P(grade 4) vs true tumour
    content, each clearly above what the same maps give against shuffled patches (a map placed on
    the wrong patches scores like the shuffled one); ``sample_truth`` (the README's numbers)
    reports the same correlations."""
    from histoviz.data.synthetic import CELL_TYPES, load_synthetic_cohort, tile_truth
    from histoviz.demo.samples import sample_truth
    from histoviz.io.predictions import read_predictions

    a = read_predictions(sample.predictions)
    cohort = load_synthetic_cohort(sample.slide.parent.parent)
    tt = tile_truth(cohort, "S067", a.obs[["x", "y"]].to_numpy(), int(a.uns["histoviz"]["tile_size_level0"]))
    genes = list(a.var_names)
    truth_genes = list(cohort.prototypes().columns)
    rng = np.random.default_rng(0)
    perm = rng.permutation(a.n_obs)
    mki67 = np.asarray(a.X[:, genes.index("MKI67")]).ravel()
    true_mki67 = np.log1p(tt["expression"][:, truth_genes.index("MKI67")])
    tf = tt["tumour_fraction"]
    checks = {
        "MKI67": (pearsonr(mki67, true_mki67)[0], pearsonr(mki67, true_mki67[perm])[0]),
        "risk": (spearmanr(a.obs["risk"], tf)[0], spearmanr(a.obs["risk"], tf[perm])[0]),
        "P(grade 4)": (spearmanr(a.obsm["grade_proba"]["4"], tf)[0], spearmanr(a.obsm["grade_proba"]["4"], tf[perm])[0]),
    }
    for name, (r, shuffled) in checks.items():
        assert r > 0.3 and r - abs(shuffled) > 0.2, (name, r, shuffled)
    report = sample_truth(sample)
    assert report["slide_id"] == "S067" and report["n_patches"] == a.n_obs
    assert report["mki67_pearson"] == pytest.approx(checks["MKI67"][0], abs=1e-9)
    assert report["risk_spearman"] == pytest.approx(checks["risk"][0], abs=1e-9)
    assert report["p_grade4_spearman"] == pytest.approx(checks["P(grade 4)"][0], abs=1e-9)
    lym = a.obsm["cell_type_weights"]["lymphocyte"].to_numpy()
    assert report["cell_type_pearson"]["lymphocyte"] == pytest.approx(
        pearsonr(lym, tt["composition"][:, list(CELL_TYPES).index("lymphocyte")])[0], abs=1e-9)
