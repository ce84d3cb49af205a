"""histoviz.viz.dashboard: the computations behind the Streamlit app, checked against lifelines,
compare_runs and the slide/tiling functions they wrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _runs import write_run

from histoviz.errors import DataError
from histoviz.evaluation import survival as surv
from histoviz.viz import dashboard as dash


@pytest.fixture(scope="module")
def gbsg2() -> pd.DataFrame:
    from lifelines.datasets import load_gbsg2

    d = load_gbsg2().rename(columns={"cens": "event", "tgrade": "grade"})
    d["patient_id"] = [f"P{i:04d}" for i in range(len(d))]
    return d


# ---- Kaplan-Meier and log-rank against lifelines -------------------------------------------------
def test_km_curves_equal_lifelines_survival_function(gbsg2: pd.DataFrame) -> None:
    from lifelines import KaplanMeierFitter

    curves = surv.km_curves(gbsg2, "grade")
    assert list(curves.columns) == list(surv.KM_COLUMNS)
    assert list(dict.fromkeys(curves["group"])) == ["I", "II", "III"]
    for g, sub in gbsg2.groupby("grade"):
        kmf = KaplanMeierFitter().fit(sub["time"], sub["event"])
        mine = curves[curves["group"] == g]
        assert len(mine) == len(kmf.survival_function_)
        np.testing.assert_allclose(mine["time"], kmf.survival_function_.index.to_numpy(dtype=float))
        np.testing.assert_allclose(mine["survival"], kmf.survival_function_.iloc[:, 0].to_numpy())
        ci = kmf.confidence_interval_survival_function_
        np.testing.assert_allclose(mine["ci_lower"], ci.iloc[:, 0].to_numpy())
        np.testing.assert_allclose(mine["ci_upper"], ci.iloc[:, 1].to_numpy())
        assert (mine["n"] == len(sub)).all()
        assert mine["at_risk"].iloc[0] == len(sub)


def test_logrank_equals_lifelines(gbsg2: pd.DataFrame) -> None:
    from lifelines.statistics import multivariate_logrank_test

    ref = multivariate_logrank_test(gbsg2["time"], gbsg2["grade"], gbsg2["event"])
    res = surv.logrank(gbsg2, "grade")
    assert res["p_value"] == pytest.approx(ref.p_value, rel=1e-12)
    assert res["test_statistic"] == pytest.approx(ref.test_statistic, rel=1e-12)
    assert res["degrees_of_freedom"] == 2 and res["n_groups"] == 3 and res["n"] == len(gbsg2)
    assert res["p_value"] < 1e-3  # grade separates survival in GBSG2


def test_km_counts_each_patient_once(gbsg2: pd.DataFrame) -> None:
    """A patient with several slides (rows) is one subject unless unit=None."""
    from lifelines import KaplanMeierFitter

    d = gbsg2.head(120)
    doubled = pd.concat([d, d.head(30)], ignore_index=True)  # 30 patients with a second slide
    per_patient = surv.km_curves(doubled, None)
    np.testing.assert_allclose(per_patient["survival"],
                               KaplanMeierFitter().fit(d["time"], d["event"]).survival_function_.iloc[:, 0])
    assert per_patient["n"].iloc[0] == 120
    per_row = surv.km_curves(doubled, None, unit=None)
    assert per_row["n"].iloc[0] == 150
    assert set(per_row["group"]) == {"all"}
    assert surv.logrank(doubled, "grade")["n"] == 120


def test_km_numeric_groups_and_bad_input() -> None:
    df = pd.DataFrame({"time": [1, 2, 3, 4, 5, 6], "event": [1, 0, 1, 1, 0, 1],
                       "grade": [10.0, 2.0, 2.0, 10.0, 3.0, np.nan]})
    curves = surv.km_curves(df, "grade", unit=None)
    assert list(dict.fromkeys(curves["group"])) == ["2", "3", "10"]  # numeric order, NaN dropped
    one = surv.logrank(df[df["grade"] == 2.0], "grade", unit=None)
    assert np.isnan(one["p_value"]) and one["n_groups"] == 1
    with pytest.raises(DataError, match="lacks column"):
        surv.km_curves(df.drop(columns="event"), "grade")
    with pytest.raises(DataError, match="negative"):
        surv.km_curves(df.assign(time=-df["time"]), "grade", unit=None)
    fig = dash.km_figure(curves, group_label="grade")
    lines = [t for t in fig.data if t.showlegend is not False]  # not the confidence bands
    assert [t.name for t in lines] == ["grade 2 (n=2)", "grade 3 (n=1)", "grade 10 (n=2)"]
    assert all(t.line.shape == "hv" for t in lines)


# ---- runs -----------------------------------------------------------------------------------------
def test_mark_optimistic_and_bar_figure(tmp_path: Path) -> None:
    from histoviz.evaluation.compare import compare_runs
    from histoviz.evaluation.metrics import OPTIMISTIC_LABEL

    dirs = [write_run(tmp_path / "a", "ridge", seed=1), write_run(tmp_path / "b", "mtl", seed=2)]
    table = compare_runs(dirs, topk=(50,))
    shown = dash.mark_optimistic(table)
    assert list(shown.columns[:2]) == ["view", "optimistic"]
    assert shown["optimistic"].sum() > 0
    assert (shown["optimistic"] == (table["selection"] == OPTIMISTIC_LABEL)).all()
    assert shown.loc[shown["optimistic"], "subset"].str.startswith("best50").all()
    assert shown.loc[shown["optimistic"], "view"].str.contains("OPTIMISTIC").all()
    pd.testing.assert_frame_equal(shown.drop(columns=["view", "optimistic"]), table)

    fig = dash.pearson_bar_figure(table)
    head = table[(table["subset"] == "all") & (table["axis"] == "per-target")]
    assert {t.name for t in fig.data} == {"ridge", "mtl"}
    for t in fig.data:
        ref = head[(head["model"] == t.name) & (head["metric"] == "pearson")].set_index("task")["mean"]
        assert dict(zip(t.x, t.y)) == pytest.approx(ref.to_dict())


def test_embed_summary(tmp_path: Path) -> None:
    feats = tmp_path / "features" / "morphology"
    feats.mkdir(parents=True)
    pd.DataFrame({"slide_id": ["S1", "S2", "S3"], "status": ["done", "skipped", "failed"],
                  "path": ["a", "b", "c"], "n_tiles": [10, 5, 0], "seconds": [1.0, 0.0, 0.5],
                  "error": ["", "", "boom"]}).to_csv(feats / "embed_summary.csv", index=False)
    (feats / "embed_config.json").write_text('{"encoder": "morphology", "embed_dim": 51}')
    table, totals = dash.embed_summary(feats / "embed_summary.csv")
    assert len(table) == 3
    assert totals == {"slides": 3, "done": 1, "skipped": 1, "failed": 1, "tiles": 15, "seconds": 1.5,
                      "encoder": "morphology", "embed_dim": 51}
    with pytest.raises(DataError, match="not found"):
        dash.embed_summary(tmp_path / "nope.csv")


# ---- one slide ----------------------------------------------------------------------------------
def test_slide_overview_real_svs(svs_path: Path) -> None:
    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid

    with open_slide(svs_path) as r:
        ov = dash.slide_overview(r, TilingConfig(), max_size=512)
        grid = make_tile_grid(r, TilingConfig())
        thumb = r.get_thumbnail(512)
    assert ov.grid_error is None and ov.n_tiles == len(grid) > 0
    assert ov.meta["vendor"] == "aperio" and ov.meta["dimensions"] == [2220, 2967]
    assert ov.preview.shape == thumb.shape and ov.preview.dtype == np.uint8
    assert (ov.preview != thumb).any()  # tile outlines drawn
    assert ov.mean_tissue == pytest.approx(float(grid.tissue_fraction.mean()))
    assert ov.caption.startswith(f"{len(grid)} tiles of 224 px at 0.5 um/px")
    t = dash.meta_table(ov.meta)
    assert list(t.columns) == ["field", "value"]
    assert dict(zip(t["field"], t["value"]))["dimensions"] == "2220 x 2967"


def test_slide_overview_without_mpp_keeps_thumbnail(png_path: Path) -> None:
    from histoviz.io import open_slide

    with open_slide(png_path) as r:
        ov = dash.slide_overview(r, max_size=256)
    assert ov.n_tiles == 0 and "microns per pixel" in (ov.grid_error or "")
    assert ov.preview.shape[:2] == (256, 256)
    assert ov.caption.startswith("no tile grid")
    assert dict(zip(*dash.meta_table(ov.meta).to_dict("list").values()))["mpp"] == "—"


def test_map_spec_and_legend() -> None:
    assert dash.map_spec("gene", "MKI67") == "gene:MKI67"
    assert dash.map_spec("risk", "") == "risk"
    with pytest.raises(DataError):
        dash.map_spec("gene")
    with pytest.raises(DataError):
        dash.map_spec("nonsense", "x")
    html = dash.legend_html({"tumour": (230, 159, 0), "<b>x</b>": (1, 2, 3)})
    assert "rgb(230,159,0)" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "<b>" not in html
