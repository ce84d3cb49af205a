"""napari for pathologists (issue 17), in a shown viewer under Xvfb, with screenshots:

- resolution field for slides without one (checked as ``--mpp-override``, remembered, warning);
- clinical units: survival at horizons in months, median, cohort percentile; omics on the
  training data's scale or as a cohort percentile; the most useful map first;
- regions drawn on a synthetic slide with known truth: tumour vs stroma differ in predicted
  tumour weight, with an interval that excludes 0; export as CSV and QuPath GeoJSON;
- two models on one slide and one model on two slides side by side, titles and colour bars;
- finer maps from overlapping tiles, smoothing, contours at the threshold.

Set ``HISTOVIZ_SCREENSHOTS=docs/img`` to write the README's pictures from these tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from histoviz.io.predictions import read_predictions
from tests.gui.conftest import (
    checkerboard,
    fresh,
    patch_pixels,
    ramp,
    save_screenshot,
)

pytestmark = pytest.mark.gui


def _settle(qtbot, ms: int = 30) -> None:
    QApplication.processEvents()
    qtbot.wait(ms)


def _place(obs: dict, obsm: dict, outs: dict) -> None:
    from histoviz.outputs import get_output

    for name, v in outs.items():
        spec = get_output(name)
        (obs if spec.store in ("obs", "obs_category") else obsm)[spec.anndata_key] = v


def clinical_predictions(reader, grid, *, slide_mean: bool = True):
    """Predictions of a joint grade + survival + expression model for the SVS, built with the
    same task code ``histoviz predict`` uses: survival in months (bins 0-14-40-70-inf, a cohort
    of 66 held-out risks), grade G1-G3, two genes z-scored with training mean / std."""
    from histoviz.io.predictions import make_prediction_adata
    from histoviz.tasks import get_task, survival_reference

    n = len(grid)
    r = ramp(n)
    hazard = np.clip((0.05 + 0.45 * r)[:, None] * np.array([1.0, 1.2, 1.4, 1.6]), 0.0, 0.95)
    s = np.cumprod(1.0 - hazard, axis=1)
    edges = np.array([0.0, 14.0, 40.0, 70.0, np.inf])
    ref = survival_reference(edges, "months", cohort_risk=-np.linspace(3.6, 0.9, 66))
    obs: dict = {}
    obsm: dict = {}
    surv, cls = get_task("survival"), get_task("classification")
    conf_s, conf_c = {"qhat": 0.7, "alpha": 0.1}, {"qhat": 0.6, "alpha": 0.1}
    _place(obs, obsm, surv.patch_outputs("survival", s, [f"S_{k}" for k in range(4)], conformal=conf_s, reference=ref))
    probs = np.column_stack([(1 - r) * 0.6, (1 - r) * 0.4, r])
    _place(obs, obsm, cls.patch_outputs("grade", probs, ["G1", "G2", "G3"], conformal=conf_c))
    genes = ["MKI67", "COL1A1"]
    marker = checkerboard(np.array([[int(y // grid.stride_level0), int(x // grid.stride_level0)]
                                    for x, y in grid.coords]))
    z = np.column_stack([2.0 * marker - 1.0 + r, 1.0 - 2.0 * marker]).astype(np.float32)
    mean, std = np.array([1.2, 0.8]), np.array([0.3, 0.25])
    a = make_prediction_adata(
        grid.coords, slide_id=reader.slide_id, tile_size_level0=grid.tile_size_level0, expression=z, genes=genes,
        obs=obs, obsm=obsm,
        meta={"slide_path": str(reader.path), "slide_dimensions": [int(v) for v in reader.dimensions],
              "mpp": reader.mpp, "tile_size": int(grid.tile_size), "stride_level0": int(grid.stride_level0),
              "model": "joint test model", "modality": "gene",
              "tasks": json.dumps({"gene": "regression", "grade": "classification", "survival": "survival"})},
    )
    a.uns["slide_prediction"] = {
        "grade": cls.slide_summary("grade", probs.mean(0), ["G1", "G2", "G3"], conformal=conf_c),
        "survival": surv.slide_summary("survival", s.mean(0), [f"S_{k}" for k in range(4)], conformal=conf_s,
                                       reference=ref),
    }
    a.uns["survival"] = {"survival": {k: v for k, v in ref.items() if v is not None}}
    a.uns["units"] = {"median_survival": "months"}
    a.uns["target_scale"] = {"gene": {"unit": "log10(1 + CP10k)", "model_unit": "z-score of log10(1 + CP10k)",
                                      "targets": np.array(genes), "mean": mean, "std": std}}
    cohort = np.random.default_rng(0).normal(size=(66, 2))
    a.uns["cohort_reference"] = {"gene": {"targets": np.array(genes),
                                          "quantiles": np.quantile(cohort, np.linspace(0, 1, 101), axis=0)}}
    return a


@pytest.fixture(scope="module")
def clinical_file(tmp_path_factory, svs_path):
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling.grid import TilingConfig, make_tile_grid

    with open_slide(svs_path) as reader:
        grid = make_tile_grid(reader, TilingConfig(tile_size=224, mpp=0.5))
        a = clinical_predictions(reader, grid)
    return write_predictions(a, tmp_path_factory.mktemp("clin") / "CMU-1-Small-Region.clinical.h5ad")


# ------------------------------------------------------------------------------------------------
# 2. resolution
# ------------------------------------------------------------------------------------------------
def test_resolution_field_for_a_slide_without_one(module_viewer, plain_tiff_path, svs_path, qtbot, tmp_path,
                                                   monkeypatch):
    from napari_plugin._slides import remembered_mpp
    from napari_plugin._widget import PredictionWidget

    monkeypatch.setenv("HISTOVIZ_CACHE", str(tmp_path))
    viewer = module_viewer
    fresh(viewer)
    (layer,) = viewer.open(str(plain_tiff_path), plugin="histoviz")
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction maps")
    assert tuple(layer.scale) == (1.0, 1.0) and widget.mpp_edit.text() == ""
    assert "not recorded" in widget.mpp_edit.placeholderText()
    # the command line's checks: not a number, implausible
    for bad, words in (("abc", "must be a number"), ("49", "outside the plausible range 0.1-20")):
        widget.mpp_edit.setText(bad)
        widget.mpp_edit.returnPressed.emit()
        assert widget.message_is_error and words in widget.message, widget.message
        assert tuple(layer.scale) == (1.0, 1.0)
    widget.mpp_edit.setText("0.5")
    widget.mpp_edit.returnPressed.emit()
    assert not widget.message_is_error and tuple(layer.scale) == (0.5, 0.5)
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"] and widget.warning is None
    assert remembered_mpp() == {str(plain_tiff_path.resolve()): 0.5}
    # a model run tiles the slide at the entered resolution
    seen = []

    def predict(reader, model_dir, **kw):
        seen.append(reader.mpp)
        raise RuntimeError("stop here")

    widget.predict_fn = predict
    assert widget.run_model(tmp_path) is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    assert seen == [0.5]
    # remembered: the slide opened again (a new widget, as after a restart) gets it back
    fresh(viewer)
    (layer,) = viewer.open(str(plain_tiff_path), plugin="histoviz")
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction maps")
    assert tuple(layer.scale) == (0.5, 0.5) and widget.mpp_edit.text() == "0.5"
    assert "entered before" in widget.message
    # a slide that records its own: entering another warns, naming both values
    fresh(viewer)
    (layer,) = viewer.open(str(svs_path), plugin="histoviz")
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction maps")
    assert widget.mpp_edit.text() == "0.499"
    assert widget.set_mpp("0.25") and tuple(layer.scale) == (0.25, 0.25)
    text = widget.warning_label.text()
    assert widget.warning_label.isVisibleTo(widget) and "0.25 um/px" in text and "slide's own 0.499 um/px (openslide)" in text
    _settle(qtbot)
    save_screenshot(viewer, "napari_mpp_warning")


# ------------------------------------------------------------------------------------------------
# 3. clinical units
# ------------------------------------------------------------------------------------------------
def test_survival_and_expression_in_clinical_units(slide_viewer, clinical_file, qtbot, tmp_path):
    viewer, widget = slide_viewer
    adata = read_predictions(clinical_file)
    assert widget.load_predictions(clinical_file), widget.message
    # the most useful map first: survival at a horizon, in the training data's time unit
    assert str(widget.current.spec) == "survival_probability:3 years"  # the middle of 1, 3, 5 years
    assert widget.display.colorbar_text() == ("survival at 3 years (probability)", "0", "1")
    from histoviz.evaluation.survival import survival_probability

    s = adata.obsm["survival_function"].to_numpy()
    edges = [0, 14, 40, 70, np.inf]
    full = np.column_stack([s, np.zeros(len(s))])
    got = widget.layout.values_from_raster(widget._current_layer().data)
    np.testing.assert_allclose(got, survival_probability(full, edges, 36.0), rtol=1e-5)
    # what the predictions are, and the slide in months, not "-sum S"
    src = widget.source_label.text()
    assert "48 patches; gene (2 targets, log10(1 + CP10k)), grade (3 classes), survival (4 time bins, months)" in src
    assert "0 genes" not in src
    line = widget.slide_panel.text()
    assert "survival: predicted survival 1 year" in line and "3 years" in line and "5 years" in line
    assert "median" in line and "months" in line and "percentile of the training cohort (held-out, n = 66)" in line
    assert "-sum S" not in line and "conformal: event" in line
    # the raw risk stays in the inspector
    widget.select_patch(5)
    assert "Risk" in widget.patch_label.text() and "-sum S (higher = worse)" in widget.patch_label.text()
    assert "Predicted median survival" in widget.patch_label.text()
    # other horizons, in months
    widget.horizons.setText("6, 30")
    widget.horizons.returnPressed.emit()
    assert str(widget.current.spec) == "survival_probability:6 months", widget.message
    np.testing.assert_allclose(widget.current.values, survival_probability(full, edges, 6.0), rtol=1e-5)
    widget.horizons.setText("80")
    widget.horizons.returnPressed.emit()
    assert widget.message_is_error and "last bin end, 70 months" in widget.message
    # expression on the training data's scale, with its unit; or as a cohort percentile
    assert widget.show_map("gene:MKI67")
    np.testing.assert_allclose(widget.current.values, np.asarray(adata[:, "MKI67"].X).ravel() * 0.3 + 1.2, rtol=1e-5)
    assert widget.display.colorbar_text()[0] == "gene MKI67 (log10(1 + CP10k))"
    assert widget.scale_combo.isVisibleTo(widget) and widget.scale_combo.count() == 3
    widget.scale_combo.setCurrentIndex(widget.scale_combo.findData("percentile"))
    widget.scale_combo.activated.emit(widget.scale_combo.currentIndex())
    assert str(widget.current.spec) == "gene:MKI67@percentile"
    assert widget.display.colorbar_text() == ("gene MKI67 (percentile of the training cohort's held-out predictions)",
                                              "0", "100")
    assert widget.current.values.min() >= 0 and widget.current.values.max() <= 100
    # a category map: legend, no paint tools
    assert widget.show_map("grade_class")
    labels = widget._current_layer()
    assert not labels.editable and "G3" in widget.legend.text() and not widget.scale_combo.isVisibleTo(widget)
    assert widget.show_map("survival_probability:6 months")
    _settle(qtbot)
    save_screenshot(viewer, "napari_survival_months")
    # the first map after a run is the most useful one, whatever was shown before
    assert widget.show_map("grade_class")
    fresh_adata = read_predictions(clinical_file)
    widget.predict_fn = lambda reader, model_dir, **kw: fresh_adata
    assert widget.run_model(tmp_path) is not None
    qtbot.waitUntil(lambda: widget.adata is fresh_adata, timeout=20000)
    assert str(widget.current.spec) == "survival_probability:3 years" and "0 genes" not in widget.source_label.text()


# ------------------------------------------------------------------------------------------------
# 4. regions on a synthetic slide with known truth
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def composition_slide(tmp_path_factory):
    """A synthetic slide with per-patch cell-type weights predicted by a ridge read-out of
    morphology features, trained on four other slides' true composition; its truth."""
    from sklearn.linear_model import Ridge

    from histoviz.data.synthetic import make_synthetic_cohort, tile_truth
    from histoviz.features import create_encoder, embed_slide
    from histoviz.io import open_slide
    from histoviz.io.predictions import make_prediction_adata, write_predictions
    from histoviz.tiling import TilingConfig, make_tile_grid

    root = tmp_path_factory.mktemp("regions")
    c = make_synthetic_cohort(root / "syn", n_slides=5, seed=11, slide_size=(1024, 1024), spatial_fraction=0.0)
    enc = create_encoder("morphology")
    feats, comp, grids = {}, {}, {}
    for sid, path in c.slides.items():
        with open_slide(path) as reader:
            grid = make_tile_grid(reader, TilingConfig(tile_size=112, mpp=0.5))
            feats[sid] = embed_slide(reader, enc, grid).features
        grids[sid] = grid
        comp[sid] = tile_truth(c, sid, grid.coords, grid.tile_size_level0)
    shown, *train = list(c.slides)
    types = list(c.truth(shown)["cell_types"])
    model = Ridge(alpha=1.0).fit(np.vstack([feats[s] for s in train]), np.vstack([comp[s]["composition"] for s in train]))
    w = np.clip(model.predict(feats[shown]), 0.0, None)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)
    import pandas as pd

    grid = grids[shown]
    with open_slide(c.slides[shown]) as reader:
        a = make_prediction_adata(
            grid.coords, slide_id=shown, tile_size_level0=grid.tile_size_level0,
            obsm={"cell_type_weights": pd.DataFrame(w.astype(np.float32), columns=types)},
            meta={"slide_path": str(c.slides[shown]), "slide_dimensions": [int(v) for v in reader.dimensions],
                  "mpp": reader.mpp, "stride_level0": int(grid.stride_level0),
                  "model": "ridge read-out of true composition (test, trained on 4 other slides)"})
    pred = write_predictions(a, root / f"{shown}.h5ad")
    return {"slide": c.slides[shown], "predictions": pred, "truth": comp[shown], "types": types, "grid": grid}


def _box_around(layout, idx, scale, translate):
    """World polygon of the bounding box of a set of patches (a region as a user draws it)."""
    b = np.array([layout.patch_bounds(i) for i in idx])
    x0, y0, x1, y1 = b[:, 0].min() + 8, b[:, 1].min() + 8, b[:, 2].max() - 8, b[:, 3].max() - 8
    return np.array([[translate[0] + scale[0] * (y - 0.5), translate[1] + scale[1] * (x - 0.5)]
                     for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))])


@pytest.mark.slow
def test_regions_on_tumour_and_stroma_differ_in_predicted_tumour_weight(
        module_viewer, composition_slide, qtbot, tmp_path):
    from histoviz.viz.regions import read_qupath_geojson
    from napari_plugin._widget import PredictionWidget

    viewer = module_viewer
    fresh(viewer)
    viewer.open(str(composition_slide["slide"]), plugin="histoviz")
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction maps")
    assert widget.load_predictions(composition_slide["predictions"]), widget.message
    assert widget.show_map("cell_type:tumour")
    truth = composition_slide["truth"]
    t_tum = truth["composition"][:, composition_slide["types"].index("tumour")]
    lay = widget.layout
    # the true tumour core and a tissue area without tumour, 2 x 2 patches each, as a user would
    # outline them after looking at the slide
    blocks = {}
    for name, score in (("tumour", t_tum), ("stroma", np.where(truth["tissue_fraction"] > 0.9, -t_tum, -np.inf))):
        best = None
        for i in range(len(lay)):
            r0, c0 = lay.index[i]
            idx = [lay.lookup[r, c] for r in (r0, r0 + 1) for c in (c0, c0 + 1)
                   if r < lay.shape[0] and c < lay.shape[1]]
            if len(idx) == 4 and min(idx) >= 0:
                s = float(np.mean(score[idx]))
                if best is None or s > best[0]:
                    best = (s, idx)
        blocks[name] = best[1]
    assert t_tum[blocks["tumour"]].mean() > 0.5 > t_tum[blocks["stroma"]].mean() + 0.3
    widget.regions.start_drawing()
    layer = widget.regions.layer
    assert layer.mode == "add_polygon" and viewer.layers.selection.active is layer
    scale, translate = widget._geometry()
    for name in ("tumour", "stroma"):
        box = _box_around(lay, blocks[name], scale, translate)
        layer.add_polygons([np.array([layer.world_to_data(w) for w in box])])  # data coordinates, as drawn
        layer.features = {"name": np.asarray([*list(layer.features["name"])[:-1], name], dtype=object)}
    layer.mode = "pan_zoom"
    widget.regions.update_table()
    assert widget.regions.region_names() == ["tumour", "stroma"]
    tab = widget.regions.table.set_index("region")
    assert tab.loc["tumour", "n_patches"] == 4 and tab.loc["stroma", "n_patches"] == 4
    c = widget.regions.compare("tumour", "stroma").iloc[0]
    w = widget.current.values
    assert c.difference == pytest.approx(w[blocks["tumour"]].mean() - w[blocks["stroma"]].mean(), rel=1e-5)
    assert c.difference > 0 and c.ci_low > 0 and c.excludes_zero  # right direction, interval excludes 0
    assert "tumour − stroma = +" in widget.regions.result.text() and "excludes 0" in widget.regions.result.text()
    # exports: the full table of every map, the comparison, the shapes for QuPath
    out = widget.regions.export_csv(tmp_path / "regions.csv")
    import pandas as pd

    t = pd.read_csv(out)
    assert set(t["region"]) == {"tumour", "stroma"} and {"cell_type:tumour", "cell_type:fibroblast"} <= set(t["map"])
    assert pd.read_csv(tmp_path / "regions_comparison.csv")["excludes_zero"].iloc[0]
    regs = read_qupath_geojson(widget.regions.export_geojson(tmp_path / "regions.geojson"))
    assert [r.name for r in regs] == ["tumour", "stroma"]
    # and back: imported regions give the same patches
    viewer.layers.remove(layer)
    assert widget.regions.import_geojson(tmp_path / "regions.geojson") == 2
    assert widget.regions.compare("tumour", "stroma").iloc[0].difference == pytest.approx(c.difference)
    viewer.reset_view()
    _settle(qtbot)
    save_screenshot(viewer, "napari_regions")


# ------------------------------------------------------------------------------------------------
# 5. two models on one slide, one model on two slides
# ------------------------------------------------------------------------------------------------
def test_two_models_side_by_side_share_camera_titles_and_colour_scale(
        slide_viewer, svs_predictions, svs_predictions_b, qtbot):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    assert widget.show_map("gene:MARKER")
    widget.cmap_combo.setCurrentText("gray")
    widget.opacity.setValue(100)
    assert widget.compare_file(svs_predictions_b), widget.message
    _settle(qtbot, 100)
    grid = viewer.canvas.grid
    assert grid.enabled and grid.actual_shape(viewer.layers) == (1, 2)
    left, right = widget._current_layer(), widget.comparison.state["map"]
    assert left.name == "test fixture · gene MARKER" and right.name.startswith("second fixture · ")
    assert left.name_overlay.visible and right.name_overlay.visible
    assert left.colorbar.visible and right.colorbar.visible
    assert tuple(right.contrast_limits) == tuple(left.contrast_limits) and right.colormap.name == "gray"
    canvas = viewer.window._qt_viewer.canvas
    viewer.reset_view()
    _settle(qtbot, 100)
    marker = checkerboard(widget.layout.index)
    _, _, lpx = patch_pixels(viewer, widget, canvas.grid_views[0])
    _, _, rpx = patch_pixels(viewer, widget, canvas.grid_views[1])
    for i, m in enumerate(marker):  # file B's MARKER is 1 - A's: bright left means dark right
        bright, dark = (lpx[i], rpx[i]) if m == 1 else (rpx[i], lpx[i])
        assert bright.min() > 200 and dark.max() < 60, (i, m, lpx[i], rpx[i])
    # choosing another map on the left: the right follows (same map of the other model)
    assert widget.show_map("risk")
    assert widget.comparison.state is not None and "risk" in right.name
    assert widget.layout.values_from_raster(right.data) == pytest.approx(
        read_predictions(svs_predictions_b).obs["risk"].to_numpy())
    _settle(qtbot, 50)
    save_screenshot(viewer, "napari_two_models")
    widget.end_compare()
    assert not grid.enabled and right not in viewer.layers and not left.name_overlay.visible


def test_one_model_on_two_slides_side_by_side(slide_viewer, svs_predictions, composition_slide, qtbot):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    assert widget.show_map("cell_type:tumour")
    n = len(viewer.layers)
    assert widget.compare_file(composition_slide["predictions"]), widget.message
    _settle(qtbot, 100)
    state = widget.comparison.state
    assert state["slide"] is not None and state["slide"].name.startswith(composition_slide["slide"].stem)
    assert viewer.canvas.grid.enabled and "cell type tumour" in state["map"].name
    other = read_predictions(composition_slide["predictions"])
    from histoviz.viz.maps import PatchLayout

    got = PatchLayout.from_adata(other).values_from_raster(state["map"].data)
    assert got == pytest.approx(other.obsm["cell_type_weights"]["tumour"].to_numpy())
    widget.end_compare()
    assert len(viewer.layers) == n


# ------------------------------------------------------------------------------------------------
# 6. finer maps
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def overlap_predictions(tmp_path_factory, svs_path):
    """Risk on 224-px tiles overlapping by half (stride 112): a ramp along x."""
    from histoviz.io import open_slide
    from histoviz.io.predictions import make_prediction_adata, write_predictions
    from histoviz.tiling.grid import TilingConfig, make_tile_grid

    with open_slide(svs_path) as reader:
        grid = make_tile_grid(reader, TilingConfig(tile_size=224, mpp=0.5, overlap=0.5))
        x = grid.coords[:, 0].astype(np.float32)
        a = make_prediction_adata(grid.coords, slide_id=reader.slide_id, tile_size_level0=grid.tile_size_level0,
                                  obs={"risk": (x - x.min()) / (x.max() - x.min())},
                                  meta={"slide_path": str(reader.path), "mpp": reader.mpp,
                                        "slide_dimensions": [int(v) for v in reader.dimensions],
                                        "stride_level0": int(grid.stride_level0)})
    return write_predictions(a, tmp_path_factory.mktemp("ovl") / "CMU-1-Small-Region.overlap.h5ad")


def test_overlapping_tiles_give_a_finer_map_with_contours(slide_viewer, overlap_predictions, qtbot):
    viewer, widget = slide_viewer
    assert widget.load_predictions(overlap_predictions)
    lay = widget.layout
    assert lay.overlapping and lay.cell_size * 2 == lay.tile_size_level0
    assert widget.show_map("risk") and widget.fine.isEnabled()
    plain = widget._current_layer().data.copy()
    widget.fine.setChecked(True)
    layer = widget._current_layer()
    fine = lay.fine_raster(widget.current.values)
    assert layer.data.shape == fine.data.shape and layer.data.shape[1] == plain.shape[1] + 1
    # a cell covered by four tiles shows their mean
    risk = widget.current.values
    for i in range(len(lay)):
        x, y = lay.coords[i] + 112 + 56  # inside the cell at offset (112, 112) of tile i
        covering = [j for j in range(len(lay)) if lay.coords[j, 0] <= x < lay.coords[j, 0] + 224
                    and lay.coords[j, 1] <= y < lay.coords[j, 1] + 224]
        if len(covering) == 4:
            break
    assert len(covering) == 4
    r, c = int((y - fine.origin[1]) // fine.cell), int((x - fine.origin[0]) // fine.cell)
    assert layer.data[r, c] == pytest.approx(np.mean(risk[covering]), rel=1e-5)
    # placed on the slide: the cell's world centre lands where that level-0 position is drawn
    sc, tr = widget._geometry()
    pl = fine.placement(sc, tr)
    assert tuple(layer.scale) == pytest.approx(pl.scale) and tuple(layer.translate) == pytest.approx(pl.translate)
    widget.smooth.setValue(100.0)  # um
    assert np.nanstd(np.diff(widget._current_layer().data, axis=1)) < np.nanstd(np.diff(fine.data, axis=1))
    widget.display.thr_slider.setValue(0.5)
    widget.display.thr_check.setChecked(True)
    widget.contours.setChecked(True)
    contour = widget.map_panel.layers["contour"]
    assert len(contour.data) >= 1 and "contour line" in widget.message
    xs = np.concatenate([d[:, 1] for d in contour.data]) / sc[1]  # level-0 x of the iso-line
    level0_x = lay.coords[:, 0].min() + 0.5 * (lay.coords[:, 0].max() - lay.coords[:, 0].min()) + 112
    assert abs(np.median(xs) - level0_x) < 2 * lay.cell_size  # the ramp crosses 0.5 halfway
    widget.opacity.setValue(80)
    _settle(qtbot)
    save_screenshot(viewer, "napari_finer_contours")
    widget.contours.setChecked(False)
    assert len(contour.data) == 0
