"""Your own cohort, end to end, with the README's commands: a TCGA-like mini download (GDC folder
layout, cBioPortal clinical and RPPA files, a Xena matrix, a samples x genes CSV) -> ``histoviz
import`` -> ``histoviz train`` (multi-omics, grade, survival) -> ``histoviz predict`` over the
download folder -> the dashboard's Cohort and Slide pages, scanpy's spatial plot and the napari
reader on the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tcga_download import make_download

pytestmark = pytest.mark.slow

TINY = ["--set", "training.epochs=3", "--set", "evaluation.n_folds=2", "--no-progress"]
CAL = ["--set", "evaluation.conformal.alpha=0.5", "--set", "evaluation.calibration_fraction=0.3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch

    from histoviz.data.synthetic import make_synthetic_cohort

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("own_cohort")
    synth = base / "synth"
    make_synthetic_cohort(synth, n_slides=22, slide_size=(640, 640), seed=3, spatial_fraction=0.0, n_genes=40,
                          n_proteins=8, n_mirna=6, n_cells_reference=60)
    root = base / "results"
    dl = root / "download"
    expected = make_download(synth, dl, corrupt=True)
    return {"root": root, "dl": dl, "exp": expected, "cohort": root / "cohort"}


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from histoviz.cli import main

    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_import_train_predict_look(world: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    root, exp, cohort = world["root"], world["exp"], world["cohort"]
    monkeypatch.chdir(root)
    # ---- import: the README's command --------------------------------------------------------------
    args = ["import", "--slides", "download/gdc", "--clinical", "download/cbio/data_clinical_patient.txt",
            "download/cbio/data_clinical_sample.txt", "--omics", "download/xena/HiSeqV2.tsv",
            "download/cbio/data_rppa.txt", "download/mirna_samples_x_genes.csv", "--encoder", "morphology",
            "--out", "cohort"]
    rc, out, err = run(args, capsys)
    assert rc == 0, err
    rep = json.loads((cohort / "import_report.json").read_text())
    s, p = rep["slides"], rep["patients"]
    assert (s["found"], s["kept"], s["n_dropped"]) == (exp["found"], exp["kept"], 3)
    reasons = {k.split(" (")[0].split(":")[0]: v["n"] for k, v in s["dropped"].items()}
    assert reasons == {"sample type 11": 1, "frozen slide": 1, "unreadable slide file": 1}, reasons
    assert "truncated or corrupt" in next(iter(s["unreadable"].values()))
    assert s["without_clinical_row"] == exp["slides_without_clinical"]
    assert p["n"] == exp["patients"] and p["with_clinical_row"] == exp["patients"] - 1
    assert p["with_several_slides"] == len(exp["two_slides"])
    assert rep["clinical"]["grades"]["unknown"] == {"High Grade": 1} and rep["clinical"]["grades"]["not_assessed"] == 1
    g = rep["omics"]["gene"]
    assert (g["orientation"], g["patients_matched"], g["duplicate_targets_collapsed"]) == (
        "targets x samples", exp["gene_patients"], 1)
    assert {k.split(" (")[0]: v["n"] for k, v in g["samples_dropped"].items()} == {
        "sample type 11": 1, "patient has no kept slide": 1}
    assert rep["omics"]["mirna"]["orientation"] == "samples x targets"
    assert rep["omics"]["protein"]["missing_values"] == 1
    assert set(rep["configs"]["written"]) == {"omics", "grade", "survival", "grade_survival", "pathgen"}
    table = pd.read_csv(cohort / "cohort.csv")
    assert len(table) == exp["kept"] and table["time"].notna().sum() == exp["kept"] - len(exp["slides_without_clinical"])
    assert table.loc[table["patient_id"] == exp["gx"], "grade"].isna().all()
    # a rerun with the same inputs is a no-op
    before = {q: q.stat().st_mtime_ns for q in cohort.rglob("*") if q.is_file()}
    rc, out, _ = run(args, capsys)
    assert rc == 0 and "up to date" in out
    assert {q: q.stat().st_mtime_ns for q in cohort.rglob("*") if q.is_file()} == before
    # ---- train: multi-omics, grade, survival from the generated configs ----------------------------------
    for task, extra in (("omics", []), ("grade", CAL), ("survival", CAL)):
        rc, out, err = run(["train", f"cohort/configs/{task}.yaml", "--out", f"runs/{task}", *TINY, *extra], capsys)
        assert rc == 0, err
    # patient folds never split a patient: both slides of a two-slide patient are held out together
    folds = pd.read_csv(root / "runs/grade/folds.csv")
    assert folds["patient_id"].is_unique
    held = pd.read_parquet(root / "runs/grade/heldout/grade.parquet")
    two = held[held["patient_id"].isin(exp["two_slides"])]
    assert len(two) and all(len(x.split(";")) == 2 for x in two["slide_ids"])
    slide_fold = {sid: f for sids, f in zip(held["slide_ids"], held["fold"]) for sid in sids.split(";")}
    by_patient = table.assign(fold=table["slide_id"].map(slide_fold)).dropna(subset=["fold"])
    assert (by_patient.groupby("patient_id")["fold"].nunique() == 1).all()
    # ---- predict every slide of the download folder, three runs -----------------------------------------
    rc, out, err = run(["predict", "--slides", "download/gdc", "--model", "runs/omics", "--model", "runs/grade",
                        "--model", "runs/survival", "--genes", "MKI67", "COL1A1", "--out", "preds"], capsys)
    assert rc == 3, err  # the corrupt slide failed, reported, the others finished
    assert "predict: slides" in err
    pred = pd.read_csv(root / "preds/predictions.csv")
    assert len(pred) == exp["found"]
    failed = pred[pred["status"] == "failed"]
    assert len(failed) == 1 and failed["slide_id"].iloc[0].endswith("-DX9")
    assert "truncated or corrupt" in failed["error"].iloc[0]
    ok = pred[pred["status"] == "done"]
    for col in ("grade", "grade_set", "grade_p_1", "survival_risk", "survival_time_lo", "survival_time_unit",
                "gene:MKI67", "gene:COL1A1"):
        assert ok[col].notna().all(), col
    # the survival interval is a conformal lower bound of survival time, in the cohort's declared unit
    assert (ok["survival_time_lo"] >= 0).all() and (ok["survival_time_unit"] == "months").all()
    assert "survival_risk_lo" not in ok.columns  # no risk-unit interval beside a time-unit one
    assert not ok.loc[ok["slide_id"].str.contains("-11Z-|TS1"), "in_training_cohort"].any()
    # resumable: a rerun predicts nothing again
    rc, out, _ = run(["predict", "--slides", "download/gdc", "--model", "runs/omics", "--model", "runs/grade",
                      "--model", "runs/survival", "--out", "preds", "--no-progress"], capsys)
    assert rc == 3 and f"{len(ok)} skipped (done before)" in out
    # one slide's predictions equal a single-slide predict
    sid = exp["slide_barcode"][exp["first"]]
    path = table.loc[table["slide_id"] == sid, "path"].iloc[0]
    for r in ("grade", "omics", "survival"):
        rc, _, err = run(["predict", "--slide", path, "--model", f"runs/{r}", "--out", f"single/{r}.h5ad",
                          "--no-progress"], capsys)
        assert rc == 0, err
        _same(root / f"preds/{sid}.{r}.h5ad", root / f"single/{r}.h5ad")
    # ---- look: scanpy, the dashboard, napari ------------------------------------------------------------
    _scanpy(root / f"preds/{sid}.survival.h5ad")
    _dashboard(root, monkeypatch, rep, sid, path)
    _napari_reader(root / f"preds/{sid}.grade.h5ad")


def _same(a_path: Path, b_path: Path) -> None:
    import anndata as ad

    a, b = ad.read_h5ad(a_path), ad.read_h5ad(b_path)
    assert a.obs_names.tolist() == b.obs_names.tolist() and list(a.var_names) == list(b.var_names)
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert set(a.obsm) == set(b.obsm)
    for k in a.obsm:
        np.testing.assert_array_equal(np.asarray(a.obsm[k]), np.asarray(b.obsm[k]))
    for blk, sp in a.uns["slide_prediction"].items():
        for k, v in sp.items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(b.uns["slide_prediction"][blk][k]))
    sa, sb = a.uns["spatial"], b.uns["spatial"]
    assert list(sa) == list(sb)
    lib = next(iter(sa))
    np.testing.assert_array_equal(sa[lib]["images"]["hires"], sb[lib]["images"]["hires"])


def _scanpy(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    a = sc.read_h5ad(path)
    lib = next(iter(a.uns["spatial"]))
    sf = a.uns["spatial"][lib]["scalefactors"]
    width = a.uns["histoviz"]["slide_dimensions"][0]
    for key in ("hires", "lowres"):
        assert a.uns["spatial"][lib]["images"][key].shape[1] == round(width * sf[f"tissue_{key}_scalef"])
    scale = sf["tissue_lowres_scalef"]
    assert scale < 1  # the low-res thumbnail is smaller than the slide: the placement below means something
    ax = sc.pl.spatial(a, color="risk", img_key="lowres", show=False)[0]
    paths = [q for c in ax.collections for q in c.get_paths()]
    centres = np.array([(q.vertices.min(0) + q.vertices.max(0)) / 2 for q in paths])
    sizes = np.array([q.vertices.max(0) - q.vertices.min(0) for q in paths])
    # each patch is drawn at its centre on the thumbnail (obsm["spatial"], level-0 px, x the scale factor),
    # as wide as the patch
    np.testing.assert_allclose(np.sort(centres, axis=0), np.sort(a.obsm["spatial"] * scale, axis=0), rtol=1e-6)
    np.testing.assert_allclose(sizes, a.uns["histoviz"]["tile_size_level0"] * scale, rtol=1e-6)
    plt.close("all")


def _dashboard(root: Path, monkeypatch: pytest.MonkeyPatch, rep: dict, sid: str, path: str) -> None:
    st = pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HISTOVIZ_RESULTS_ROOT", str(root))
    st.cache_data.clear()
    from histoviz.dashboard import APP as app
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    at.switch_page("views/cohort.py").run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Patients"] == str(rep["patients"]["n"]) and metrics["Slides"] == str(rep["slides"]["kept"])
    at = AppTest.from_file(str(app), default_timeout=120)
    at.query_params["slide_path"] = str(Path(path).relative_to(root))
    at.run()
    at.switch_page("views/slide.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.get("plotly_chart"), "no prediction map on the Slide page"
    assert any(f"preds/{sid}." in c.value for c in at.code)


def _napari_reader(path: Path) -> None:
    pytest.importorskip("napari")
    from napari_plugin._reader import get_reader

    reader = get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    assert layers and any(kind == "image" for _, _, kind in layers)
