"""The napari sample is model output, and the model output follows the slide's known truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(pytestconfig):
    from tests._sample import synthetic_sample

    return synthetic_sample(pytestconfig)


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
    assert len(sp["grade"]["set"]) >= 1 and sp["survival"]["lo"] <= sp["survival"]["risk"] <= sp["survival"]["hi"]


def test_sample_maps_follow_the_slides_truth(sample):
    """On the shown slide (not a training slide) the per-patch predictions track the generator's
    truth: predicted MKI67 vs true expression, risk and P(grade 4) vs true tumour content, each
    far above what the same maps give against shuffled patches."""
    from histoviz.data.synthetic import load_synthetic_cohort, tile_truth
    from histoviz.io.predictions import read_predictions

    a = read_predictions(sample.predictions)
    cohort = load_synthetic_cohort(sample.slide.parent.parent)
    tt = tile_truth(cohort, "S001", a.obs[["x", "y"]].to_numpy(), int(a.uns["histoviz"]["tile_size_level0"]))
    genes = list(a.var_names)
    rng = np.random.default_rng(0)
    perm = rng.permutation(a.n_obs)
    mki67 = np.asarray(a.X[:, genes.index("MKI67")]).ravel()
    true_mki67 = np.log1p(tt["expression"][:, genes.index("MKI67")])
    tf = tt["tumour_fraction"]
    checks = {
        "MKI67": (pearsonr(mki67, true_mki67)[0], pearsonr(mki67, true_mki67[perm])[0]),
        "risk": (spearmanr(a.obs["risk"], tf)[0], spearmanr(a.obs["risk"], tf[perm])[0]),
        "P(grade 4)": (spearmanr(a.obsm["grade_proba"]["4"], tf)[0], spearmanr(a.obsm["grade_proba"]["4"], tf[perm])[0]),
    }
    for name, (r, shuffled) in checks.items():
        assert r > 0.5 and r - abs(shuffled) > 0.3, (name, r, shuffled)
