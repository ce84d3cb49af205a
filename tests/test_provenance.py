"""What a model was trained on, and the warning when a synthetic-trained model meets a real slide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from histoviz.provenance import (
    cohort_is_synthetic,
    prediction_trained_on,
    prediction_warning,
    slide_is_synthetic,
    synthetic_mismatch,
    training_data,
)

ROOT = Path(__file__).resolve().parents[1]


def _fake_cohort(root: Path, *, synthetic: bool) -> Path:
    """A cohort folder with one slide file; with ``synthetic`` the generator's manifest."""
    (root / "slides").mkdir(parents=True)
    (root / "slides" / "S001.tif").write_bytes(b"not really a tiff")
    (root / "cohort.csv").write_text("slide_id,patient_id,path\nS001,P001,slides/S001.tif\n")
    if synthetic:
        (root / "manifest.json").write_text(json.dumps({
            "generator": "histoviz.data.synthetic", "slides": ["S001"], "files": ["cohort.csv", "slides/S001.tif"]}))
    return root


def _fake_run(run: Path, cohort: Path, features: Path | None = None) -> Path:
    run.mkdir(parents=True)
    cfg = {"data": {"cohort": str(cohort / "cohort.csv"), "features": str(features or cohort / "feats")},
           "_run": {"features": {"encoder": "morphology", "embed_dim": 51}}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def test_synthetic_slides_and_cohorts_are_recognised_by_the_manifest(tmp_path, svs_path):
    syn = _fake_cohort(tmp_path / "syn", synthetic=True)
    real = _fake_cohort(tmp_path / "real", synthetic=False)
    assert slide_is_synthetic(syn / "slides" / "S001.tif") is True
    assert slide_is_synthetic(real / "slides" / "S001.tif") is False
    assert slide_is_synthetic(svs_path) is False
    assert slide_is_synthetic(tmp_path / "gone.tif") is None and slide_is_synthetic(None) is None
    assert cohort_is_synthetic(syn / "cohort.csv") is True and cohort_is_synthetic(syn) is True
    assert cohort_is_synthetic(real / "cohort.csv") is False and cohort_is_synthetic(tmp_path / "no.csv") is None
    # a file copied next to a synthetic cohort but not listed in its manifest is not synthetic
    (syn / "slides" / "mine.tif").write_bytes(b"x")
    assert slide_is_synthetic(syn / "slides" / "mine.tif") is False


def test_training_data_of_a_run(tmp_path):
    syn = _fake_cohort(tmp_path / "syn", synthetic=True)
    real = _fake_cohort(tmp_path / "real", synthetic=False)
    t = training_data(_fake_run(tmp_path / "run_syn", syn))
    assert t["synthetic"] is True and t["encoder"] == "morphology" and "manifest.json" in t["evidence"]
    assert training_data(_fake_run(tmp_path / "run_real", real))["synthetic"] is False
    # the cohort table moved away: the slides named by the feature bags decide
    import h5py

    feats = tmp_path / "feats"
    feats.mkdir()
    with h5py.File(feats / "S001.h5", "w") as h:
        h.attrs["slide_path"] = str(syn / "slides" / "S001.tif")
    moved = _fake_run(tmp_path / "run_moved", tmp_path / "nowhere", features=feats)
    t = training_data(moved)
    assert t["synthetic"] is True and "feature bags" in t["evidence"]
    assert training_data(_fake_run(tmp_path / "run_unknown", tmp_path / "nowhere2"))["synthetic"] is None


def test_the_warning_names_the_slide_and_says_why(tmp_path, svs_path):
    syn = _fake_cohort(tmp_path / "syn", synthetic=True)
    trained = training_data(_fake_run(tmp_path / "run", syn))
    w = synthetic_mismatch(trained, svs_path)
    assert w.startswith("this model was trained on synthetic slides") and "CMU-1-Small-Region.svs is not a synthetic" in w
    assert synthetic_mismatch(trained, syn / "slides" / "S001.tif") is None  # synthetic on synthetic: fine
    assert "could not be checked" in synthetic_mismatch(trained, tmp_path / "elsewhere.tif")
    assert synthetic_mismatch({"synthetic": False}, svs_path) is None
    assert synthetic_mismatch({"synthetic": None}, svs_path) is None
    assert synthetic_mismatch(None, svs_path) is None


@pytest.mark.slow
def test_predict_records_provenance_and_the_cli_warns(pytestconfig, svs_path, tmp_path):
    """A run trained on synthetic slides (the napari sample's) applied to the real SVS."""
    from tests._sample import synthetic_sample

    sample = synthetic_sample(pytestconfig)
    run = sample.runs["grade-survival"]
    env = {**os.environ, "TQDM_DISABLE": "1"}

    r = subprocess.run([sys.executable, "-m", "histoviz.cli", "predict", "--model", str(run), "--slide",
                        str(svs_path), "--out", str(tmp_path / "real.h5ad"), "--no-progress"], capture_output=True,
                       text=True, env=env, cwd=ROOT, check=False, timeout=600)
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "warning:" in ln]
    want = synthetic_mismatch({'synthetic': True}, svs_path, slide_name='CMU-1-Small-Region')
    assert warn == [f"histoviz predict: warning: {want}"]
    from histoviz.io.predictions import read_predictions

    a = read_predictions(tmp_path / "real.h5ad")
    assert json.loads(a.uns["histoviz"]["trained_on"])["synthetic"] is True
    assert prediction_warning(a) is not None
    # the sample itself: the same run on a synthetic slide, nothing to warn about
    assert prediction_warning(read_predictions(sample.predictions)) is None


@pytest.mark.slow
def test_a_slide_copied_into_a_synthetic_cohort_gets_one_answer_everywhere(pytestconfig, svs_path, tmp_path,
                                                                          capsys, monkeypatch):
    """A real slide copied into a synthetic cohort's ``slides/`` folder is not synthetic (it is
    not in the generator's manifest): the CLI, napari's checks and the dashboard all warn, with
    histoviz's one sentence; and they state the slide-level prediction with one sentence too."""
    import shutil

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from histoviz.cli import main
    from histoviz.dashboard import APP
    from histoviz.io.predictions import read_predictions
    from histoviz.viz.summary import slide_predictions
    from tests._sample import synthetic_sample

    run = synthetic_sample(pytestconfig).runs["grade-survival"]  # trained on synthetic slides
    root = tmp_path / "results"
    syn = _fake_cohort(root / "syn", synthetic=True)
    copy = syn / "slides" / "mine.svs"
    shutil.copy(svs_path, copy)
    assert slide_is_synthetic(copy) is False
    want = synthetic_mismatch({"synthetic": True}, copy, slide_name="mine")
    assert "mine is not a synthetic slide" in want

    # CLI
    pred = root / "maps" / "mine.h5ad"
    assert main(["predict", "--model", str(run), "--slide", str(copy), "--out", str(pred), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert f"histoviz predict: warning: {want}" in out.err.splitlines()
    lines = [r["line"] for r in slide_predictions(read_predictions(pred))]  # napari's inspector shows these
    assert len(lines) == 2 and lines[0].startswith("grade: ") and "conformal set {" in lines[0]
    assert [ln.removeprefix("  slide ") for ln in out.out.splitlines() if ln.startswith("  slide ")] == lines
    # napari: the model runner checks the run against the open slide, the reader a prediction file
    assert synthetic_mismatch(training_data(run), copy, slide_name="mine") == want
    assert prediction_warning(read_predictions(pred), slide_path=copy) == want
    # dashboard: the Slide page with this slide and its prediction file
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HISTOVIZ_RESULTS_ROOT", str(root))
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["slide_path"] = "syn/slides/mine.svs"
    at.query_params["pred_path"] = "maps/mine.h5ad"
    at.run()
    at.switch_page("views/slide.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [w.value for w in at.warning] == [want[:1].upper() + want[1:]]
    assert [c.value for c in at.caption if c.value in lines] == lines


def test_a_prediction_says_what_its_model_was_trained_on(tmp_path):
    """From the recorded ``trained_on``, else (older files) from the run config's cohort."""
    syn = _fake_cohort(tmp_path / "syn", synthetic=True)
    real = _fake_cohort(tmp_path / "real", synthetic=False)
    info = {"config": json.dumps({"data": {"cohort": str(syn / "cohort.csv")}})}
    assert prediction_trained_on(info)["synthetic"] is True
    assert prediction_trained_on({"config": json.dumps({"data": {"cohort": str(real / "cohort.csv")}})})[
        "synthetic"] is False
    assert prediction_trained_on({}) is None
    assert prediction_trained_on({"trained_on": json.dumps({"synthetic": False}), **info})["synthetic"] is False
    # the mapping itself (the dashboard passes uns["histoviz"]) gives the same sentence as the AnnData
    (real / "slides" / "copied.svs").write_bytes(b"x")
    (syn / "slides" / "copied.svs").write_bytes(b"x")
    w = prediction_warning(info, slide_path=syn / "slides" / "copied.svs")
    assert w is not None and "copied.svs is not a synthetic slide" in w  # next to the manifest, not made by it
