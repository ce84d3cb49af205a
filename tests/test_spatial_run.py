"""End to end on synthetic spatial samples with known truth (slow): ``histoviz train`` with a spot
config (patient-out leave-one-out), ``evaluate``, ``predict`` at spots and on a tile grid, the
napari spot reader and the dashboard's Spatial page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoviz.dashboard import APP

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spot_run(tmp_path_factory):
    from histoviz.cli import main
    from histoviz.data.synthetic import make_synthetic_cohort

    d = tmp_path_factory.mktemp("strun")
    cohort = make_synthetic_cohort(d / "syn", n_slides=6, seed=3, slide_size=(1536, 1536), spatial_fraction=1.0,
                                   progress=False)
    sets = [f"data.spots.samples={d / 'syn' / 'spatial'}", f"data.spots.features={d / 'feat'}",
            "model.params.dim=32", "model.params.n_image_tokens=4", "model.params.n_gene_tokens=4",
            "model.params.cross_heads=4", "model.params.fusion_heads=4", "training.epochs=15", "training.patience=5",
            "evaluation.spots.compare=[{name: bleep, params: {dim: 32, n_image_tokens: 4}}, ridge]",
            "evaluation.spots.top_k=[20]", "evaluation.spots.encoders=[morphology, tiny-test]"]
    args = ["train", str(ROOT / "training" / "configs" / "st_cmrcnet.yaml"), "--out", str(d / "run"), "--no-progress"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    return {"dir": d, "run": d / "run", "cohort": cohort}


def _per_sample(run: Path, metric: str = "pearson", subset: str = "hvg50") -> pd.DataFrame:
    from histoviz.evaluation.spots import per_sample
    from histoviz.io.rundir import RunDir

    ps = per_sample(RunDir(run).metrics(), metric)
    return ps[ps["subset"] == subset].pivot_table(index="fold", columns="model", values="value", dropna=False)


def test_cmrcnet_and_bleep_beat_the_shuffled_control_and_the_training_mean(spot_run):
    r = _per_sample(spot_run["run"])
    assert len(r) == 6  # every sample held out once
    for m in ("cmrcnet-20", "bleep-20"):
        margin = r[m] - r["cmrcnet-shuffled-20"]
        assert margin.mean() > 0.25 and (margin > 0).all(), (m, margin.to_dict())  # measured: about 0.5
        assert r[m].mean() > 0.3
    mse = _per_sample(spot_run["run"], "mse")
    for m in ("cmrcnet-20", "bleep-20"):
        assert (mse[m] < 0.8 * mse["spot-mean"]).all(), (m, (mse[m] / mse["spot-mean"]).to_dict())  # measured: ~0.5
    assert r["spot-mean"].isna().all()  # a constant has no correlation: reported as undefined, not as 0


def test_hest_encoder_comparison_runs_from_the_same_command(spot_run):
    r = _per_sample(spot_run["run"], subset="all")
    np.testing.assert_allclose(r["ridge[morphology]"], r["ridge"])  # the same features, the same protocol
    assert r["ridge[tiny-test]"].notna().all()  # a random ViT: whatever it scores, it is listed
    assert (spot_run["dir"] / "feat" / "tiny-test").is_dir()


def test_run_layout_folds_by_patient_and_gene_sets_from_training(spot_run):
    import json

    from histoviz.io.rundir import RunDir

    run = RunDir(spot_run["run"])
    assert run.info["level"] == "spot" and run.blocks == {"gene": "regression"}
    samples = pd.read_parquet(spot_run["run"] / "samples.parquet")
    assert len(samples) == 6 and samples.groupby("patient_id")["fold"].nunique().max() == 1
    assert samples["patient_id"].nunique() == samples["fold"].nunique() == 5  # one patient has two sections
    m = run.metrics()
    assert list(m.columns) == ["model", "fold", "task", "kind", "target", "metric", "value", "n", "axis", "subset"]
    assert {"hvg50", "heg50", "markers", "all"} <= set(m["subset"].astype(str))
    held = run.heldout("gene")
    assert {"sample_id", "spot", "x", "y", "target", "y_true", "y_pred"} <= set(held.columns)
    # every model of the run keeps its held-out predictions (comparison models and controls too), and
    # its per-gene metrics are recomputed from them
    assert set(held["model"].astype(str)) == set(m["model"].astype(str))
    from histoviz.evaluation.metrics import columnwise_pearson

    for lab in ("bleep-20", "ridge", "cmrcnet-shuffled-20"):
        h = held[(held["model"].astype(str) == lab) & (held["sample_id"].astype(str) == str(samples["sample_id"][0]))]
        fold = int(samples["fold"][0])
        g = str(h["target"].iloc[0])
        hg = h[h["target"].astype(str) == g]
        ref = m[(m["model"].astype(str) == lab) & (m["fold"] == h["fold"].iloc[0]) & (m["target"].astype(str) == g)
                & (m["metric"].astype(str) == "pearson") & (m["subset"].astype(str) == "all")]["value"]
        assert fold >= 0 and len(ref) == 1
        got = columnwise_pearson(hg["y_true"].to_numpy()[:, None], hg["y_pred"].to_numpy()[:, None])[0]
        assert got == pytest.approx(float(ref.iloc[0]), abs=1e-5)
    assert run.checkpoint_names() == [f"fold{k}" for k in range(5)] + ["final"]
    for k in range(5):
        doc = json.loads((spot_run["run"] / "checkpoints" / f"fold{k}" / "model.json").read_text())
        test = set(doc["info"]["test_samples"])
        assert test == set(samples.loc[samples["fold"] == k, "sample_id"])
    t = pd.read_parquet(spot_run["run"] / "targets.parquet")
    assert {"train_mean", "train_var", "hvg_rank"} <= set(t.columns)


def test_evaluate_prints_the_model_by_gene_set_table(spot_run, capsys):
    from histoviz.cli import main

    assert main(["evaluate", str(spot_run["run"])]) == 0
    out = capsys.readouterr().out
    assert "hvg50 pearson" in out and "heg50 pearson" in out and "markers pearson" in out
    assert "paired differences vs cmrcnet-20" in out and "bleep-20" in out and "spot-mean" in out


def test_predict_at_spots_reproduces_the_heldout_predictions_and_on_a_tile_grid(spot_run, tmp_path):
    from histoviz.cli import main
    from histoviz.io.predictions import read_predictions
    from histoviz.io.rundir import RunDir

    cohort = spot_run["cohort"]
    sid = sorted(cohort.spatial)[1]
    out = tmp_path / "spots.h5ad"
    assert main(["predict", "--model", str(spot_run["run"]), "--spots", str(cohort.spatial[sid]), "--out", str(out),
                 "--no-progress"]) == 0
    a = read_predictions(out)
    import anndata as ad

    src = ad.read_h5ad(cohort.spatial[sid])
    keep = src.obs["in_tissue"].to_numpy() == 1
    np.testing.assert_allclose(a.obsm["spatial"], src.obsm["spatial"][keep])
    assert a.uns["histoviz"]["spot_diameter_px"] == pytest.approx(110.0)  # 55 um at 0.5 um/px
    held = RunDir(spot_run["run"]).heldout("gene")
    h = held[(held["sample_id"].astype(str) == sid) & (held["model"].astype(str) == "cmrcnet-20")]
    g = str(h["target"].iloc[0])
    hp = h[h["target"].astype(str) == g]["y_pred"].to_numpy()
    np.testing.assert_allclose(a[:, g].X.ravel(), hp, rtol=1e-5, atol=1e-5)  # the fold that held it out
    np.testing.assert_allclose(a.obsm["measured_expression"][g].to_numpy(),
                               h[h["target"].astype(str) == g]["y_true"].to_numpy(), rtol=1e-5)
    tiles = tmp_path / "tiles.h5ad"
    assert main(["predict", "--model", str(spot_run["run"]), "--slide", str(cohort.slides[sid]), "--out", str(tiles),
                 "--no-progress"]) == 0
    b = read_predictions(tiles)
    assert b.uns["histoviz"]["tile_size_level0"] == 224 and "spot_diameter_px" not in b.uns["histoviz"]
    assert b.n_vars == a.n_vars and np.isfinite(b.X).all()


def test_napari_reader_draws_spots_at_the_true_diameter(spot_run, tmp_path):
    from histoviz.predict import predict_spots
    from napari_plugin._reader import get_reader
    from napari_plugin._spots import read_spot_file

    cohort = spot_run["cohort"]
    sid = sorted(cohort.spatial)[0]
    p = tmp_path / "s.h5ad"
    from histoviz.io.predictions import write_predictions

    write_predictions(predict_spots(cohort.spatial[sid], spot_run["run"]), p)
    assert get_reader(str(p)) is read_spot_file and get_reader(str(cohort.spatial[sid])) is read_spot_file
    layers = read_spot_file(str(p), gene="MKI67")
    kinds = [k for _, _, k in layers]
    # slide + measured | slide copy + predicted, then the shared colour-scale layer and the panel titles
    assert kinds == ["image", "points", "image", "points", "image", "points"]
    assert layers[4][1]["name"].startswith("colour scale: MKI67") and layers[5][1]["name"] == "spot panels"
    assert [t.split()[:2] for t in layers[5][1]["features"]["title"]] == [["measured", "MKI67"], ["predicted", "MKI67"]]
    (meas, kw_meas, _), (pred, kw_pred, _) = layers[1], layers[3]
    assert kw_meas["size"] == pytest.approx(110.0 * 0.5)  # diameter in um: the slide layer is in um
    shift = layers[2][1]["translate"][1]
    assert shift == pytest.approx(1536 * 0.5 * 1.05)  # the slide copy sits right of the first one
    np.testing.assert_allclose(pred[:, 1] - meas[:, 1], shift)
    np.testing.assert_allclose(meas[:, ::-1], (cohort_centres(cohort, sid) - 0.5) * 0.5)
    assert kw_meas["name"] == "measured MKI67" and kw_pred["name"] == "predicted MKI67"


def cohort_centres(cohort, sid: str) -> np.ndarray:
    import anndata as ad

    a = ad.read_h5ad(cohort.spatial[sid])
    return np.asarray(a.obsm["spatial"])[a.obs["in_tissue"].to_numpy() == 1]


def test_dashboard_spatial_page_shows_the_table_and_the_spot_map(spot_run, monkeypatch):
    st = pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    empty = spot_run["dir"] / "empty_root"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("HISTOVIZ_RESULTS_ROOT", str(empty))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("views/spatial.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("No spot-level run" in i.value for i in at.info)
    # the run's folder as the results root: the page finds the spot run there
    monkeypatch.setenv("HISTOVIZ_RESULTS_ROOT", str(spot_run["run"].parent))
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("views/spatial.py")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert at.selectbox(key="spot_run").value == spot_run["run"].name
    tables = [d.value for d in at.dataframe]
    table = next(t for t in tables if "hvg50" in t.columns)
    assert {"cmrcnet-20", "bleep-20", "spot-mean"} <= set(table.index)
    assert len(at.get("plotly_chart")) == 1
