"""The histoviz napari plugin in a real viewer (Xvfb): maps on the slide, clicks, export, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from histoviz.io.export import read_geojson, read_ome_tiff_heatmap
from histoviz.io.predictions import read_predictions
from histoviz.viz.maps import PatchLayout, level0_to_world
from tests.gui.conftest import checkerboard, world_to_canvas

pytestmark = pytest.mark.gui


def _screen(viewer) -> tuple[np.ndarray, float]:
    """Canvas screenshot (RGB) and physical pixels per canvas (logical) pixel."""
    img = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    native = viewer.window._qt_viewer.canvas.native
    return img, img.shape[0] / native.height()


def _pixel(img: np.ndarray, ratio: float, rc: tuple[float, float]) -> np.ndarray:
    r, c = int(round(rc[0] * ratio)), int(round(rc[1] * ratio))
    assert 0 <= r < img.shape[0] and 0 <= c < img.shape[1], "point is off screen"
    return img[r, c]


def _patch_world_centre(layout: PatchLayout, i: int, scale, translate) -> tuple[float, float]:
    x0, y0, x1, y1 = layout.patch_bounds(i)
    return level0_to_world(((x0 + x1) / 2, (y0 + y1) / 2), scale, translate)


def test_reader_opens_svs_lazily_as_pyramid_in_micrometres(slide_viewer, svs_path):
    viewer, _ = slide_viewer
    layer = viewer.layers["CMU-1-Small-Region"]
    assert layer.multiscale and layer.rgb
    assert layer.data[0].shape == (2967, 2220, 3)
    # the single-level SVS gets lazy 2x levels down to <= 1024 px for the overview
    assert [lvl.shape[:2] for lvl in layer.data] == [(2967, 2220), (1483, 1110), (741, 555)]
    # lazy: indexing a level reads that region only, with the reader's pixels
    from histoviz.io import open_slide
    from histoviz.io.pyramid import LevelArray

    assert all(isinstance(lvl, LevelArray) for lvl in layer.data)
    want = open_slide(svs_path).read_region((700, 1200), 0, (64, 48))
    assert np.array_equal(layer.data[0][1200:1248, 700:764], want)
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]


def test_high_patches_bright_low_patches_dark_on_screen(slide_viewer, svs_predictions):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions), widget.message
    assert widget.show_map("gene:MARKER")
    layer = widget._current_layer()
    layer.colormap = "gray"
    layer.contrast_limits = (0.0, 1.0)
    layer.opacity = 1.0
    viewer.reset_view()
    img, ratio = _screen(viewer)
    lay = widget.layout
    marker = checkerboard(lay.index)
    scale, translate = widget._geometry()
    for i in range(len(lay)):
        px = _pixel(img, ratio, world_to_canvas(viewer, _patch_world_centre(lay, i, scale, translate)))
        if marker[i] == 1:
            assert px.min() > 230, (i, px)
        else:
            assert px.max() < 25, (i, px)
    # alignment: 2 screen px either side of the boundary between a bright patch and its dark
    # right-hand neighbour
    bright = next(i for i in range(len(lay)) if marker[i] == 1
                  and lay.patch_at_level0(lay.patch_bounds(i)[2] + 1, lay.patch_bounds(i)[1] + 1) is not None)
    x0, y0, x1, y1 = lay.patch_bounds(bright)
    edge = world_to_canvas(viewer, level0_to_world((x1, (y0 + y1) / 2), scale, translate))
    assert _pixel(img, ratio, (edge[0], edge[1] - 2)).min() > 230
    assert _pixel(img, ratio, (edge[0], edge[1] + 2)).max() < 25
    # outside the tissue (no patch) the slide shows through: not black, not the map's white
    top_left = world_to_canvas(viewer, level0_to_world((30, 30), scale, translate))
    bg = _pixel(img, ratio, top_left)
    assert 150 < bg.mean() < 250 and bg.min() > 100


def test_click_on_the_canvas_selects_the_patch_under_it(slide_viewer, svs_predictions, qtbot):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    viewer.reset_view()
    qtbot.wait(50)
    lay = widget.layout
    scale, translate = widget._geometry()
    native = viewer.window._qt_viewer.canvas.native
    adata = read_predictions(svs_predictions)
    for i in (0, len(lay) // 2, len(lay) - 1):
        r, c = world_to_canvas(viewer, _patch_world_centre(lay, i, scale, translate))
        qtbot.mouseClick(native, Qt.LeftButton, pos=QPoint(int(round(c)), int(round(r))))
        qtbot.waitUntil(lambda i=i: widget.selected == i, timeout=2000)
        assert adata.obs_names[i] in widget.patch_label.text()
        comp = adata.obsm["cell_type_weights"].iloc[i]
        assert dict(widget.comp_chart.items()) == pytest.approx(comp.to_dict())
        assert [g for g, _ in widget.summary["top_genes"]][0] == adata.var_names[
            int(np.argmax(np.asarray(adata.X[i])))]
    outline = next(la for la in viewer.layers if la.name == "selected patch")
    x0, y0, x1, y1 = lay.patch_bounds(len(lay) - 1)
    assert outline.data[0].min(axis=0) == pytest.approx([y0 - 0.5, x0 - 0.5])
    assert outline.data[0].max(axis=0) == pytest.approx([y1 - 0.5, x1 - 0.5])
    # exact boundary between a patch and its right neighbour belongs to the neighbour
    i = next(k for k in range(len(lay)) if lay.patch_at_level0(lay.patch_bounds(k)[2], lay.patch_bounds(k)[1]) is not None)
    x0, y0, x1, y1 = lay.patch_bounds(i)
    right = lay.patch_at_level0(x1, y0)
    assert widget.select_world(level0_to_world((x1, (y0 + y1) / 2), scale, translate)) == right
    assert widget.select_world(level0_to_world((x1 - 0.01, (y0 + y1) / 2), scale, translate)) == i
    # off the tissue: nothing selected
    assert widget.select_world(level0_to_world((5, 5), scale, translate)) is None
    assert widget.selected is None
    # a drag pans, it does not select
    r, c = world_to_canvas(viewer, _patch_world_centre(lay, 0, scale, translate))
    qtbot.mousePress(native, Qt.LeftButton, pos=QPoint(int(c), int(r)))
    qtbot.mouseMove(native, QPoint(int(c) + 40, int(r) + 40))
    qtbot.mouseRelease(native, Qt.LeftButton, pos=QPoint(int(c) + 40, int(r) + 40))
    qtbot.wait(50)
    assert widget.selected is None


def test_switching_maps_updates_layers_in_place(slide_viewer, svs_predictions):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    n_layers = len(viewer.layers)
    img_layer = widget._current_layer()
    before = np.array(img_layer.data)
    assert widget.show_map("gene:sim_gene_01")
    assert widget._current_layer() is img_layer
    assert not np.allclose(np.nan_to_num(before), np.nan_to_num(img_layer.data))
    assert img_layer.name == "map: gene sim_gene_01"
    assert widget.show_map("dominant_type")
    labels = widget._current_layer()
    assert labels is not img_layer and labels.visible and not img_layer.visible
    assert set(np.unique(labels.data)) <= {0, 1, 2, 3, 4}
    for spec in ("risk", "grade_class", "cell_type:tumour", "coattention:immune response",
                 "attention", "grade_proba:G3", "dominant_type", "gene:MARKER"):
        assert widget.show_map(spec), widget.message
    assert len(viewer.layers) == n_layers + 1  # the labels layer, added once
    assert widget._current_layer() is img_layer and img_layer.visible and not labels.visible
    # display settings are remembered per map
    widget.cmap_combo.setCurrentText("viridis")
    assert img_layer.colormap.name == "viridis"
    widget.show_map("risk")
    widget.show_map("gene:MARKER")
    assert img_layer.colormap.name == "viridis"
    # "keep as layer" adds exactly one layer that stays when the map changes
    pinned = widget.pin_current()
    assert pinned is not None and len(viewer.layers) == n_layers + 2
    widget.show_map("risk")
    assert np.nanmax(pinned.data) == 1.0 and len(viewer.layers) == n_layers + 2


def test_searchable_gene_box_and_unknown_gene_message(slide_viewer, svs_predictions, qtbot):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    completer = widget.key_combo.completer()
    completer.setCompletionPrefix("gene_0")
    assert completer.completionCount() == 6  # contains-match: sim_gene_01..06
    widget.key_combo.setEditText("sim_gene_03")
    qtbot.keyClick(widget.key_combo.lineEdit(), Qt.Key_Return)
    assert widget.current.label == "gene sim_gene_03"
    n = len(viewer.layers)
    widget.key_combo.setEditText("NOT_A_GENE")
    qtbot.keyClick(widget.key_combo.lineEdit(), Qt.Key_Return)
    assert widget.message_is_error and "unknown gene 'NOT_A_GENE'" in widget.message
    assert widget.current.label == "gene sim_gene_03" and len(viewer.layers) == n


def test_exported_geojson_reimports_with_the_same_values(slide_viewer, svs_predictions, tmp_path):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    adata = read_predictions(svs_predictions)
    widget.show_map("gene:sim_gene_02")
    out = widget.export_geojson(tmp_path / "map.geojson")
    df = read_geojson(out).set_index("name")
    assert len(df) == adata.n_obs
    want = np.asarray(adata[:, "sim_gene_02"].X).ravel()
    assert df.loc[adata.obs_names, "gene sim_gene_02"].to_numpy() == pytest.approx(want, rel=1e-6)
    assert (df.loc[adata.obs_names, "x"].to_numpy() == adata.obs["x"].to_numpy()).all()
    assert (df["width"] == 224).all()
    # categorical map -> classification
    widget.show_map("dominant_type")
    df = read_geojson(widget.export_geojson(tmp_path / "types.geojson")).set_index("name")
    w = adata.obsm["cell_type_weights"]
    assert (df.loc[adata.obs_names, "classification"].to_numpy() == w.idxmax(axis=1).to_numpy()).all()
    # OME-TIFF of the shown map: aligned to the slide at the patch grid
    widget.show_map("risk")
    arr, meta = read_ome_tiff_heatmap(widget.export_ome_tiff(tmp_path / "risk.ome.tif"))
    assert meta["downsample"] == 224 and meta["slide_dimensions"] == [2220, 2967]
    assert arr.shape == (-(-2967 // 224), -(-2220 // 224))
    x, y = int(adata.obs["x"].iloc[0]), int(adata.obs["y"].iloc[0])
    assert arr[y // 224, x // 224] == pytest.approx(adata.obs["risk"].iloc[0])


def test_npe2_writers_save_a_map_layer(slide_viewer, svs_predictions, tmp_path):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    layer = widget._current_layer()
    adata = read_predictions(svs_predictions)
    paths = layer.save(str(tmp_path / "marker.geojson"), plugin="histoviz")
    assert paths == [str(tmp_path / "marker.geojson")]
    df = read_geojson(paths[0])
    assert df["gene MARKER"].to_numpy() == pytest.approx(np.asarray(adata[:, "MARKER"].X).ravel())
    paths = layer.save(str(tmp_path / "marker.ome.tif"), plugin="histoviz")
    arr, meta = read_ome_tiff_heatmap(paths[0])
    assert meta["map"] == "gene MARKER" and np.nanmax(arr) == 1.0
    # a layer histoviz did not make has no patch layout: nothing written
    other = viewer.add_image(np.zeros((4, 4), np.float32), name="plain")
    assert not other.save(str(tmp_path / "plain.geojson"), plugin="histoviz")


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("other_id", ["TCGA-XX-0001", "CMU-1-Small-Region"]),
        ("other_dims", ["46000 x 32914", "2220 x 2967"]),
        ("outside", ["outside", "another slide"]),
        ("missing_keys", ["uns['histoviz']"]),
        ("junk", ["not a readable .h5ad"]),
    ],
)
def test_bad_prediction_files_give_a_message_not_a_crash(
    slide_viewer, svs_predictions, foreign_predictions, key, words
):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    names = [la.name for la in viewer.layers]
    shown = widget.current.label
    assert widget.load_predictions(foreign_predictions[key]) is False
    assert widget.message_is_error
    for w in words:
        assert w in widget.message, widget.message
    assert "Traceback" not in widget.message
    # the viewer keeps working with what was shown before
    assert [la.name for la in viewer.layers] == names and widget.current.label == shown
    assert widget.show_map("risk")
    viewer.screenshot(canvas_only=True)


def test_renamed_slide_is_accepted_when_asked(slide_viewer, foreign_predictions):
    _, widget = slide_viewer
    assert not widget.load_predictions(foreign_predictions["other_id"])
    widget.allow_other_id.setChecked(True)
    assert widget.load_predictions(foreign_predictions["other_id"]), widget.message


def _stand_in_model(adata, *, steps=20, gate: threading.Event | None = None):
    calls = []

    def predict(reader, model_dir, *, progress_callback=None, cancel_event=None):
        calls.append((reader.slide_id, model_dir, threading.current_thread().name))
        for k in range(steps):
            if cancel_event is not None and cancel_event.is_set():
                raise RuntimeError("cancelled")
            if gate is not None:
                gate.wait(5)
            time.sleep(0.005)
            if progress_callback is not None:
                progress_callback(k + 1, steps)
        return adata

    return predict, calls


def test_run_model_in_background_with_progress(slide_viewer, svs_predictions, qtbot, tmp_path):
    viewer, widget = slide_viewer
    expected = read_predictions(svs_predictions)
    predict, calls = _stand_in_model(expected)
    widget.predict_fn = predict
    seen = []
    widget.progress.valueChanged.connect(seen.append)
    worker = widget.run_model(tmp_path)
    assert worker is not None and widget.running and widget.progress.isVisible()
    qtbot.waitUntil(lambda: not widget.running, timeout=10000)
    assert calls and calls[0][0] == "CMU-1-Small-Region" and calls[0][2] != "MainThread"
    assert seen and max(seen) == 20 and widget.progress.maximum() == 20
    assert widget.adata is not None and widget.adata.n_obs == expected.n_obs
    assert not widget.message_is_error and widget.current is not None


def test_cancel_a_model_run(slide_viewer, svs_predictions, qtbot, tmp_path):
    _, widget = slide_viewer
    gate = threading.Event()
    predict, _ = _stand_in_model(read_predictions(svs_predictions), gate=gate)
    widget.predict_fn = predict
    assert widget.run_model(tmp_path) is not None
    assert widget.run_model(tmp_path) is None and "already running" in widget.message
    widget.cancel_run()
    gate.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=10000)
    assert "cancelled" in widget.message and widget.adata is None


def test_model_errors_are_messages(slide_viewer, qtbot, tmp_path):
    from histoviz.errors import DataError

    _, widget = slide_viewer

    def broken(reader, model_dir, **kw):
        raise DataError(f"{model_dir}: config.yaml is missing")

    widget.predict_fn = broken
    widget.run_model(tmp_path)
    qtbot.waitUntil(lambda: not widget.running, timeout=10000)
    assert widget.message_is_error and "config.yaml is missing" in widget.message


def test_prediction_file_opens_with_its_slide(make_napari_viewer, svs_predictions, qtbot):
    from napari_plugin._widget import PredictionWidget

    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(svs_predictions), plugin="histoviz")
    assert [la.name for la in layers] == ["CMU-1-Small-Region", "map: gene MARKER"]
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.adata is not None, timeout=5000)
    # the map layer made by the reader is reused, not duplicated
    assert len(viewer.layers) == 2 and widget._current_layer() is layers[1]


def test_sample_data_synthetic_slide_with_predictions(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOVIZ_CACHE", str(tmp_path))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    viewer.open_sample("histoviz", "synthetic")
    slide, mapl = viewer.layers
    assert slide.multiscale and len(slide.data) >= 3  # the TIFF's own pyramid
    widget = viewer.window.dock_widgets["Prediction maps (histoviz)"]
    qtbot.waitUntil(lambda: getattr(widget, "adata", None) is not None, timeout=10000)
    assert widget.current.label == "gene MKI67" and widget._current_layer() is mapl
    # the brightest and darkest patches of MKI67 show as such on the multiscale slide
    mapl.colormap, mapl.opacity = "gray", 1.0
    v = widget.current.values
    mapl.contrast_limits = (float(np.nanmin(v)), float(np.nanmax(v)))
    viewer.reset_view()
    img, ratio = _screen(viewer)
    scale, translate = widget._geometry()
    hi, lo = int(np.nanargmax(v)), int(np.nanargmin(v))
    for i, bright in ((hi, True), (lo, False)):
        px = _pixel(img, ratio, world_to_canvas(viewer, _patch_world_centre(widget.layout, i, scale, translate)))
        assert (px.min() > 230) if bright else (px.max() < 25), (i, px)


def test_sample_data_real_slide(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOVIZ_CACHE", str(tmp_path))
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("histoviz", "real")
    assert [la.name for la in viewer.layers] == ["CMU-1-Small-Region", "map: cell type tumour"]
    widget = viewer.window.dock_widgets["Prediction maps (histoviz)"]
    qtbot.waitUntil(lambda: getattr(widget, "adata", None) is not None, timeout=10000)
    assert widget.layout.tile_size_level0 == 112


@pytest.mark.slow
def test_run_a_trained_model_on_the_open_slide(make_napari_viewer, trained_run, qtbot):
    """The real histoviz.predict.predict_slide in the background worker, then cancelled."""
    from napari_plugin._widget import PredictionWidget

    viewer = make_napari_viewer(show=True)
    viewer.open(str(trained_run["slide"]), plugin="histoviz")
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    seen = []
    widget.progress.valueChanged.connect(seen.append)
    assert widget.run_model(trained_run["run"]) is not None, widget.message
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.adata is not None, widget.message
    assert widget.adata.uns["histoviz"]["model"] == "ridge"
    assert seen and seen[-1] == widget.progress.maximum() == widget.adata.n_obs + 1
    assert widget.current.label.startswith("gene ")
    proteins = [k for k in widget._maps["modality"] if k.startswith("protein/")]
    assert proteins and widget.show_map(f"modality:{proteins[0]}")
    want = widget.adata.obsm["pred_protein"][proteins[0].split("/", 1)[1]].to_numpy()
    assert widget.layout.values_from_raster(widget._current_layer().data) == pytest.approx(want)
    # cancel: the run stops at its next check and nothing changes
    before = widget.adata
    assert widget.run_model(trained_run["run"]) is not None
    widget.cancel_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert "cancelled" in widget.message and widget.adata is before


def test_histoviz_can_be_made_the_default_slide_reader(make_napari_viewer, svs_path, tmp_path, monkeypatch):
    import napari.settings as napari_settings

    from napari_plugin.__main__ import set_default_reader

    viewer = make_napari_viewer()
    cfg = tmp_path / "settings.yaml"
    monkeypatch.setattr(napari_settings, "_SETTINGS", napari_settings.NapariSettings(config_path=cfg))
    set_default_reader()
    assert "'*.svs': histoviz" in cfg.read_text()
    (layer,) = viewer.open(str(svs_path), plugin=None)  # what `napari SLIDE.svs` does
    assert layer.multiscale and tuple(layer.scale) == pytest.approx((0.499, 0.499))
    set_default_reader(enable=False)
    assert "histoviz" not in cfg.read_text()
