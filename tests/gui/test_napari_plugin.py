"""The histoviz napari plugin in a real viewer (Xvfb): maps on the slide, clicks, export, errors, runs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from histoviz.io.predictions import read_predictions
from histoviz.viz.export import read_geojson, read_ome_tiff_heatmap
from histoviz.viz.maps import level0_to_world
from tests.gui.conftest import (
    checkerboard,
    fresh,
    patch_pixels,
    patch_world_centre,
    pixel,
    world_to_canvas,
)

pytestmark = pytest.mark.gui


def test_reader_opens_svs_lazily_as_pyramid_in_micrometres(slide_viewer, svs_path):
    viewer, _ = slide_viewer
    layer = viewer.layers["CMU-1-Small-Region"]
    assert layer.multiscale and layer.rgb
    assert layer.data[0].shape == (2967, 2220, 3)
    # the single-level SVS gets lazy 2x levels down to <= 1024 px for the overview
    assert [lvl.shape[:2] for lvl in layer.data] == [(2967, 2220), (1483, 1110), (741, 555)]
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
    img, ratio, px = patch_pixels(viewer, widget)
    lay = widget.layout
    marker = checkerboard(lay.index)
    for i in range(len(lay)):
        assert (px[i].min() > 230) if marker[i] == 1 else (px[i].max() < 25), (i, px[i])
    # alignment: 2 screen px either side of the boundary between a bright patch and its dark
    # right-hand neighbour
    scale, translate = widget._geometry()
    bright = next(i for i in range(len(lay)) if marker[i] == 1
                  and lay.patch_at_level0(lay.patch_bounds(i)[2] + 1, lay.patch_bounds(i)[1] + 1) is not None)
    x0, y0, x1, y1 = lay.patch_bounds(bright)
    edge = world_to_canvas(viewer, level0_to_world((x1, (y0 + y1) / 2), scale, translate))
    assert pixel(img, ratio, (edge[0], edge[1] - 2)).min() > 230
    assert pixel(img, ratio, (edge[0], edge[1] + 2)).max() < 25
    # outside the tissue (no patch) the slide shows through: not black, not the map's white
    bg = pixel(img, ratio, world_to_canvas(viewer, level0_to_world((30, 30), scale, translate)))
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
        r, c = world_to_canvas(viewer, patch_world_centre(lay, i, scale, translate))
        qtbot.mouseClick(native, Qt.LeftButton, pos=QPoint(int(round(c)), int(round(r))))
        qtbot.waitUntil(lambda i=i: widget.selected == i, timeout=2000)
        text = widget.patch_label.text()
        assert adata.obs_names[i] in text
        # every single-valued output, by its registry label, with its value
        assert f"{adata.obs['risk'].iloc[i]:.4g}" in text and "Survival bound width (conformal)" in text
        chart = widget.patch_panel.chart("Cell-type weight")
        assert dict(chart.items()) == pytest.approx(adata.obsm["cell_type_weights"].iloc[i].to_dict())
        grades = widget.patch_panel.chart("Grade probability")
        assert [g for g, _ in grades.items()] == ["G1", "G2", "G3"]  # class order kept
        assert [g for g, _ in widget.summary["top_genes"]][0] == adata.var_names[int(np.argmax(np.asarray(adata.X[i])))]
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
    r, c = world_to_canvas(viewer, patch_world_centre(lay, 0, scale, translate))
    qtbot.mousePress(native, Qt.LeftButton, pos=QPoint(int(c), int(r)))
    qtbot.mouseMove(native, QPoint(int(c) + 40, int(r) + 40))
    qtbot.mouseRelease(native, Qt.LeftButton, pos=QPoint(int(c) + 40, int(r) + 40))
    qtbot.wait(50)
    assert widget.selected is None


def test_map_list_and_slide_prediction_come_from_the_file(slide_viewer, svs_predictions):
    from histoviz.viz.maps import available_maps, kind_labels

    _, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    adata = read_predictions(svs_predictions)
    kinds = [widget.kind_combo.itemData(k) for k in range(widget.kind_combo.count())]
    assert kinds == list(available_maps(adata))
    labels = kind_labels()
    assert [widget.kind_combo.itemText(k) for k in range(widget.kind_combo.count())] == [labels[k] for k in kinds]
    text = widget.slide_panel.text()
    assert "grade: G3 (p = 0.60); conformal set {G2, G3}" in text
    assert "risk 0.250" in text and "conformal interval [-0.500, 1.000]" in text
    assert widget.show_map("risk")
    assert widget.display.colorbar_text()[0] == "risk (-sum S (higher = worse))"  # unit from the registry


def test_switching_maps_updates_layers_in_place(slide_viewer, svs_predictions):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    n_layers = len(viewer.layers)
    img_layer = widget._current_layer()
    before = np.array(img_layer.data)
    assert widget.show_map("gene:BIG")
    assert widget._current_layer() is img_layer
    assert not np.allclose(np.nan_to_num(before), np.nan_to_num(img_layer.data))
    assert img_layer.name == "map: gene BIG"
    assert widget.show_map("dominant_type")
    labels = widget._current_layer()
    assert labels is not img_layer and labels.visible and not img_layer.visible
    assert set(np.unique(labels.data)) <= {0, 1, 2, 3}
    for spec in ("risk", "grade_class", "cell_type:tumour", "attention", "grade_proba:G3", "grade_set_size",
                 "risk_width", "dominant_type", "gene:MARKER"):
        assert widget.show_map(spec), widget.message
        assert widget.current.label in widget.message  # the status line names the map shown
    assert len(viewer.layers) == n_layers + 1  # the labels layer, added once
    assert widget._current_layer() is img_layer and img_layer.visible and not labels.visible
    # display settings are remembered per map
    widget.cmap_combo.setCurrentText("viridis")
    assert img_layer.colormap.name == "viridis"
    widget.show_map("risk")
    assert img_layer.colormap.name == "magma"  # risk's own default (registry)
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
    completer.setCompletionPrefix("i")
    assert completer.completionCount() == 2  # contains-match, case-insensitive: ANTI, BIG
    widget.key_combo.setEditText("ANTI")
    qtbot.keyClick(widget.key_combo.lineEdit(), Qt.Key_Return)
    assert widget.current.label == "gene ANTI"
    n = len(viewer.layers)
    widget.key_combo.setEditText("NOT_A_GENE")
    qtbot.keyClick(widget.key_combo.lineEdit(), Qt.Key_Return)
    assert widget.message_is_error and "unknown gene 'NOT_A_GENE'" in widget.message
    assert widget.current.label == "gene ANTI" and len(viewer.layers) == n


def test_exported_geojson_and_ome_tiff_carry_the_values(slide_viewer, svs_predictions, tmp_path):
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    adata = read_predictions(svs_predictions)
    widget.show_map("gene:BIG")
    df = read_geojson(widget.export_geojson(tmp_path / "map.geojson")).set_index("name")
    assert len(df) == adata.n_obs
    want = np.asarray(adata[:, "BIG"].X).ravel()
    assert df.loc[adata.obs_names, "gene BIG"].to_numpy() == pytest.approx(want, rel=1e-6)
    assert (df.loc[adata.obs_names, "x"].to_numpy() == adata.obs["x"].to_numpy()).all()
    assert (df["width"] == 224).all()
    widget.show_map("dominant_type")
    df = read_geojson(widget.export_geojson(tmp_path / "types.geojson")).set_index("name")
    w = adata.obsm["cell_type_weights"]
    assert (df.loc[adata.obs_names, "classification"].to_numpy() == w.idxmax(axis=1).to_numpy()).all()
    # OME-TIFF of the shown map: level 0 has the slide's size, every pixel of a patch holds its value
    widget.show_map("risk")
    arr, meta = read_ome_tiff_heatmap(widget.export_ome_tiff(tmp_path / "risk.ome.tif"))
    assert meta["downsample"] == 1 and meta["slide_dimensions"] == [2220, 2967]
    assert arr.shape == (2967, 2220) and meta["physical_size_x"] == pytest.approx(0.499)
    x, y = int(adata.obs["x"].iloc[0]), int(adata.obs["y"].iloc[0])
    assert np.all(arr[y:y + 224, x:x + 224] == np.float32(adata.obs["risk"].iloc[0]))


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
    assert meta["map"] == "gene MARKER" and np.nanmax(arr) == 1.0 and arr.shape == (2967, 2220)
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
    assert widget.show_map("risk") and not widget.message_is_error
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


def test_run_model_in_background_with_a_determinate_progress_bar(slide_viewer, svs_predictions, qtbot, tmp_path):
    viewer, widget = slide_viewer
    expected = read_predictions(svs_predictions)
    gate = threading.Event()
    predict, calls = _stand_in_model(expected, gate=gate)
    widget.predict_fn = predict
    seen = []
    widget.progress.valueChanged.connect(seen.append)
    worker = widget.run_model(tmp_path)
    assert worker is not None and widget.running and widget.progress.isVisible()
    # determinate before the first report (a busy indicator has maximum 0)
    assert widget.progress.maximum() > 0 and widget.progress.value() == 0
    gate.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=10000)
    assert calls and calls[0][0] == "CMU-1-Small-Region" and calls[0][2] != "MainThread"
    # 0 when the run starts, then one step per progress report, in order, none lost or repeated
    assert seen == list(range(0, 21))
    assert widget.progress.maximum() == 20
    assert widget.adata is not None and widget.adata.n_obs == expected.n_obs
    assert not widget.message_is_error and widget.current is not None and widget.btn_run.isEnabled()


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


def test_prediction_file_opens_with_its_slide(module_viewer, svs_predictions, qtbot):
    from napari_plugin._widget import PredictionWidget

    viewer = module_viewer
    fresh(viewer)
    layers = viewer.open(str(svs_predictions), plugin="histoviz")
    assert [la.name for la in layers] == ["CMU-1-Small-Region", "map: gene MARKER"]
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.adata is not None, timeout=5000)
    # the map layer made by the reader is reused, not duplicated
    assert len(viewer.layers) == 2 and widget._current_layer() is layers[1]


def test_sample_data_real_slide_is_labelled_simulated(module_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOVIZ_CACHE", str(tmp_path))
    viewer = module_viewer
    fresh(viewer)
    viewer.open_sample("histoviz", "real")
    assert [la.name for la in viewer.layers] == ["CMU-1-Small-Region", "map: simulated cell type tumour"]
    widget = viewer.window.dock_widgets["Prediction maps (histoviz)"]
    qtbot.waitUntil(lambda: getattr(widget, "adata", None) is not None, timeout=10000)
    assert widget.layout.tile_size_level0 == 112
    for spec in ("gene:sim_gene_01", "dominant_type"):
        assert widget.show_map(spec)
        assert widget._current_layer().name.startswith("map: simulated ")
        assert widget.display.colorbar_text()[0].startswith("simulated ")
        assert "simulated values" in widget.message
    # nothing the sample has no model for: no grade, risk, attention or uncertainty maps
    assert not {"grade_proba", "risk", "attention", "grade_set_size"} & set(widget.map_panel.available)
    assert "No slide-level prediction" in widget.slide_panel.text()
    widget.select_patch(3)
    assert "simulated values" in widget.patch_label.text() and "top simulated genes" in widget.patch_label.text()


def test_histoviz_can_be_made_the_default_slide_reader(module_viewer, svs_path, tmp_path, monkeypatch):
    import napari.settings as napari_settings

    from napari_plugin.__main__ import set_default_reader

    viewer = module_viewer
    fresh(viewer)
    cfg = tmp_path / "settings.yaml"
    monkeypatch.setattr(napari_settings, "_SETTINGS", napari_settings.NapariSettings(config_path=cfg))
    set_default_reader()
    assert "'*.svs': histoviz" in cfg.read_text()
    (layer,) = viewer.open(str(svs_path), plugin=None)  # what `napari SLIDE.svs` does
    assert layer.multiscale and tuple(layer.scale) == pytest.approx((0.499, 0.499))
    set_default_reader(enable=False)
    assert "histoviz" not in cfg.read_text()



def test_a_clean_start_shows_no_warning(tmp_path):
    """Issue 17.8: every launch showed "napari support for the PyQt5 backend is deprecated"; with the
    Qt binding napari recommends (the ``napari`` extra installs PyQt6) a fresh process that opens the
    viewer, docks the widget and opens the real sample shows no warning notification."""
    import json
    import os
    import subprocess
    import sys

    code = """
import json, napari, qtpy
from napari.utils.notifications import notification_manager
from qtpy.QtWidgets import QApplication
v = napari.Viewer(show=True)
v.window.add_plugin_dock_widget("histoviz", "Prediction maps")
v.open_sample("histoviz", "real")
for _ in range(20):
    QApplication.processEvents()
recs = [(str(n.severity), str(n.message)) for n in notification_manager.records]
print("RESULT " + json.dumps({"api": qtpy.API_NAME, "records": recs, "layers": [la.name for la in v.layers]}))
v.close()
"""
    env = {k: v for k, v in os.environ.items() if k != "QT_API"}
    env["HISTOVIZ_CACHE"] = str(tmp_path)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert r.returncode == 0 and line is not None, r.stdout[-2000:] + r.stderr[-2000:]
    got = json.loads(line[len("RESULT "):])
    assert got["api"] in ("PyQt6", "PySide6"), got["api"]
    assert got["layers"][0] == "CMU-1-Small-Region"
    bad = [m for sev, m in got["records"] if sev.lower() in ("warning", "error")]
    assert bad == [], bad
    assert "deprecated" not in r.stderr
