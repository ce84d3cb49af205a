"""What the viewer shows is what the predictions say (issue 10, items 1-6), in a real viewer:

each map its own contrast range; deleted layers stay deleted; no stale state after new
predictions; read-only category maps with class names in the status bar; a threshold that lets
the slide show through; two maps side by side on one camera; an exported heatmap that lands on
its slide when opened again.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from histoviz.io.predictions import read_predictions
from histoviz.viz.maps import _robust_limits
from tests.gui.conftest import checkerboard, patch_pixels, patch_world_centre

pytestmark = pytest.mark.gui


def _settle(qtbot, ms: int = 30) -> None:
    QApplication.processEvents()
    qtbot.wait(ms)


def _gray(widget, spec: str) -> None:
    """Show ``spec`` in gray at full opacity (as a user would, through the widget)."""
    assert widget.show_map(spec), widget.message
    widget.cmap_combo.setCurrentText("gray")
    widget.opacity.setValue(100)


def _check_extremes(viewer, widget, values: np.ndarray, lo: float, hi: float) -> None:
    """Patches at or above ``hi`` are white, at or below ``lo`` black, others in between."""
    _, _, px = patch_pixels(viewer, widget)
    for i, v in enumerate(values):
        g = px[i].mean()
        if v >= hi:
            assert g > 230, (i, v, px[i])
        elif v <= lo:
            assert g < 25, (i, v, px[i])
        else:
            want = 255 * (v - lo) / (hi - lo)
            assert abs(g - want) < 20, (i, v, g, want)


def test_each_map_gets_its_own_contrast_range(slide_viewer, svs_predictions, qtbot):
    """Issue 10.1: MKI67-after-attention appeared at attention's range; now each map has its own
    (robust percentiles by default) and keeps what the user sets, on screen and on the colour bar."""
    viewer, widget = slide_viewer
    adata = read_predictions(svs_predictions)
    assert widget.load_predictions(svs_predictions)
    att = adata.obs["attention"].to_numpy()
    big = np.asarray(adata[:, "BIG"].X).ravel()
    _gray(widget, "attention")
    viewer.reset_view()
    _settle(qtbot)
    lo, hi = _robust_limits(att.astype(np.float32))
    layer = widget._current_layer()
    assert tuple(layer.contrast_limits) == pytest.approx((lo, hi))
    assert widget.display.colorbar_text()[1:] == (f"{lo:.3g}", f"{hi:.3g}")
    _check_extremes(viewer, widget, att, lo, hi)

    _gray(widget, "gene:BIG")  # ~1000x the range of attention
    _settle(qtbot)
    blo, bhi = _robust_limits(big.astype(np.float32))
    assert tuple(layer.contrast_limits) == pytest.approx((blo, bhi)) and blo > 1000
    assert widget.display.colorbar_text() == ("gene BIG (target space)", f"{blo:.3g}", f"{bhi:.3g}")
    _check_extremes(viewer, widget, big, blo, bhi)

    # the user narrows BIG's range (as napari's own contrast slider does) ...
    layer.contrast_limits = (1200.0, 1300.0)
    assert widget.display.colorbar_text()[1:] == ("1.2e+03", "1.3e+03")
    _gray(widget, "attention")  # ... attention keeps its own range ...
    _settle(qtbot)
    assert tuple(layer.contrast_limits) == pytest.approx((lo, hi))
    _check_extremes(viewer, widget, att, lo, hi)
    assert widget.show_map("gene:BIG")  # ... and BIG gets back what the user set
    _settle(qtbot)
    assert tuple(layer.contrast_limits) == pytest.approx((1200.0, 1300.0))
    _check_extremes(viewer, widget, big, 1200.0, 1300.0)
    widget.display.btn_auto.click()  # "Auto" returns to the robust default
    assert tuple(layer.contrast_limits) == pytest.approx((blo, bhi))


def test_deleted_layers_stay_deleted_and_clearing_resets_the_widget(
        module_viewer, svs_path, svs_predictions, svs_predictions_b, qtbot):
    """Issue 10.2: removing slide or map layers re-added them and swapped the predictions shown.
    Issue 17.8: after clearing every layer the widget still showed the old file, slide prediction,
    selected patch and warning; after reopening the slide no map was drawn."""
    from napari_plugin._widget import PredictionWidget
    from tests.gui.conftest import fresh

    viewer = module_viewer
    fresh(viewer)
    viewer.open(str(svs_predictions), plugin="histoviz")  # slide + map, both naming file A
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction maps")
    qtbot.waitUntil(lambda: widget.adata is not None, timeout=5000)
    pinned = widget.pin_current()  # a kept map of file A (its metadata names A)
    assert widget.load_predictions(svs_predictions_b)  # the user switches to file B
    source = widget.session.source
    assert source.endswith("b.h5ad")
    widget.select_patch(4)
    names = {la.name for la in viewer.layers}

    viewer.layers.remove(widget._current_layer())
    _settle(qtbot, 100)
    assert {la.name for la in viewer.layers} == names - {"map: gene MARKER"}
    assert widget.session.source == source and widget.adata.uns["histoviz"]["model"] == "second fixture"

    viewer.layers.remove("CMU-1-Small-Region")  # the slide layer names file A
    _settle(qtbot, 100)
    assert "CMU-1-Small-Region" not in viewer.layers and widget.session.source == source
    assert not widget.message_is_error and pinned in viewer.layers

    viewer.layers.clear()  # nothing of the predictions is left: the widget starts over
    _settle(qtbot, 100)
    assert len(viewer.layers) == 0 and widget.adata is None and widget.current is None
    assert widget.selected is None and widget.warning is None and not widget.warning_label.isVisible()
    assert widget.source_label.text() == "No predictions loaded." and widget.slide_panel.text() == ""
    assert widget.kind_combo.count() == 0 and not widget.kind_combo.isEnabled()
    # only an explicit request adds a layer again: showing a map now is refused
    assert not widget.show_map("risk") and "Load predictions first" in widget.message and len(viewer.layers) == 0
    # opening the slide again draws the maps it had, on it
    viewer.open(str(svs_path), plugin="histoviz")
    qtbot.waitUntil(lambda: widget.adata is not None, timeout=5000)
    assert widget.session.source == source and widget.current.label == "gene MARKER"
    layer = widget._current_layer()
    assert layer in viewer.layers and layer.visible
    assert widget.layout.values_from_raster(layer.data) == pytest.approx(np.asarray(widget.adata[:, "MARKER"].X).ravel())
    viewer.add_image(np.zeros((8, 8), np.float32))
    viewer.screenshot(canvas_only=True)  # the viewer still draws
    viewer.window.remove_dock_widget(viewer.window.dock_widgets["Prediction maps"])


def test_new_predictions_leave_no_stale_state(slide_viewer, svs_predictions, svs_predictions_b, foreign_predictions):
    """Issue 10.3: old outline, old error, old map name and kept layers above new maps."""
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    widget.select_patch(5)
    outline = next(la for la in viewer.layers if la.name == "selected patch")
    assert len(outline.data) == 1
    kept = widget.pin_current()
    assert not widget.load_predictions(foreign_predictions["junk"]) and widget.message_is_error
    assert widget.load_predictions(svs_predictions_b)
    assert len(outline.data) == 0 and widget.selected is None
    assert "No patch selected" in widget.patch_label.text()
    assert not widget.message_is_error and widget.current.label in widget.message
    shown = widget._current_layer()
    order = list(viewer.layers)
    assert order.index(shown) > order.index(kept)  # the new map is above the kept one
    assert widget.show_map("risk") and widget.message == "Showing risk."


def test_category_maps_are_read_only_and_the_status_bar_names_the_class(slide_viewer, svs_predictions):
    """Issue 10.4: categorical maps were editable Labels showing label numbers."""
    viewer, widget = slide_viewer
    adata = read_predictions(svs_predictions)
    assert widget.load_predictions(svs_predictions)
    scale, translate = widget._geometry()
    lay = widget.layout
    types = adata.obsm["cell_type_weights"].idxmax(axis=1).to_numpy()
    for spec, names in (("dominant_type", types), ("grade_class", adata.obs["grade_pred"].astype(str).to_numpy())):
        assert widget.show_map(spec)
        labels = widget._current_layer()
        assert not labels.editable and labels.mode == "pan_zoom"
        controls = viewer.window._qt_viewer.controls.widgets[labels]
        assert not controls.paint_button.isEnabled() and not controls.fill_button.isEnabled()
        labels.mode = "paint"
        assert labels.mode == "pan_zoom"
        labels.editable = True  # napari re-enables editing on new data; the widget switches it off
        assert not labels.editable
        for i in (0, 1, 2, len(lay) - 1):
            pos = patch_world_centre(lay, i, scale, translate)
            status = labels.get_status(pos, world=True, view_direction=None, dims_displayed=[0, 1])
            assert f": {names[i]}" in status["value"], (spec, i, status)
    assert widget.show_map("risk")
    image = widget._current_layer()
    for i in (0, 7):
        pos = patch_world_centre(lay, i, scale, translate)
        status = image.get_status(pos, world=True, view_direction=None, dims_displayed=[0, 1])
        value = float(status["value"].split(",")[-1].strip("[] ")) if "," in status["value"] else float(status["value"])
        assert value == pytest.approx(adata.obs["risk"].iloc[i], abs=1e-3)


def test_threshold_hides_patches_below_it(slide_viewer, svs_predictions, qtbot):
    """Issue 10.5: a threshold for probability maps; below it the slide shows through."""
    viewer, widget = slide_viewer
    adata = read_predictions(svs_predictions)
    p3 = adata.obsm["grade_proba"]["G3"].to_numpy()
    assert widget.load_predictions(svs_predictions)
    _gray(widget, "grade_proba:G3")
    assert widget.display.thr_check.isEnabled() and widget.display.thr_slider.maximum() == 1.0
    viewer.reset_view()
    layer = widget._current_layer()
    layer.visible = False
    _settle(qtbot)
    _, _, slide_px = patch_pixels(viewer, widget)
    layer.visible = True
    widget.display.thr_slider.setValue(0.5)
    widget.display.thr_check.setChecked(True)  # what the user clicks
    _settle(qtbot)
    _, _, px = patch_pixels(viewer, widget)
    below = p3 < 0.5
    assert 5 < below.sum() < len(p3) - 5
    for i in range(len(p3)):
        if below[i]:
            assert np.abs(px[i] - slide_px[i]).max() <= 3, (i, p3[i], px[i], slide_px[i])
        else:
            assert abs(px[i].mean() - 255 * p3[i]) < 12, (i, p3[i], px[i])
    assert f"{int((~below).sum())} of {len(p3)} patches at or above 0.5" in widget.message
    # the threshold belongs to this map: another map shows every patch, coming back restores it
    assert widget.show_map("risk") and np.isfinite(widget._current_layer().data).sum() == len(p3)
    assert widget.show_map("grade_proba:G3") and widget.display.thr_check.isChecked()
    assert np.isfinite(widget._current_layer().data).sum() == int((~below).sum())
    widget.display.thr_check.setChecked(False)
    assert np.isfinite(widget._current_layer().data).sum() == len(p3)


def test_two_maps_side_by_side_on_one_camera(slide_viewer, svs_predictions, qtbot):
    """Issue 10.5: two maps side by side (grid mode), panning one pans the other."""
    viewer, widget = slide_viewer
    assert widget.load_predictions(svs_predictions)
    _gray(widget, "gene:ANTI")
    _gray(widget, "gene:MARKER")
    before = [(la.name, la.visible) for la in viewer.layers]
    widget.btn_compare.click()  # arm, then pick the second map as a user would
    assert widget.show_map("gene:ANTI"), widget.message
    _settle(qtbot, 100)
    grid = viewer.canvas.grid
    assert grid.enabled and grid.actual_shape(viewer.layers) == (1, 2)
    canvas = viewer.window._qt_viewer.canvas
    assert len(canvas.grid_views) == 2
    assert all(cam._camera is viewer.camera for cam in canvas.grid_cameras)  # one camera model
    viewer.reset_view()
    _settle(qtbot, 100)
    marker = checkerboard(widget.layout.index)
    _, _, left = patch_pixels(viewer, widget, canvas.grid_views[0])
    _, _, right = patch_pixels(viewer, widget, canvas.grid_views[1])
    for i, m in enumerate(marker):
        bright, dark = (left[i], right[i]) if m == 1 else (right[i], left[i])
        assert bright.min() > 230 and dark.max() < 25, (i, m, left[i], right[i])
    # zooming moves both panels alike: same rows, same horizontal offset, distances doubled in both
    from tests.gui.conftest import world_to_canvas

    scale, translate = widget._geometry()
    a, b = (patch_world_centre(widget.layout, k, scale, translate) for k in (0, len(marker) - 1))

    def spots():
        return [[np.array(world_to_canvas(viewer, w, v)) for w in (a, b)] for v in canvas.grid_views]

    (la0, lb0), (ra0, rb0) = spots()
    viewer.camera.zoom *= 2
    _settle(qtbot, 100)
    (la1, lb1), (ra1, rb1) = spots()
    assert np.allclose(ra1 - la1, ra0 - la0, atol=1) and np.allclose(rb1 - lb1, rb0 - lb0, atol=1)
    for (p0, q0), (p1, q1) in (((la0, lb0), (la1, lb1)), ((ra0, rb0), (ra1, rb1))):
        assert np.linalg.norm(q1 - p1) == pytest.approx(2 * np.linalg.norm(q0 - p0), rel=0.02)
    widget.btn_compare.click()  # back to one map
    _settle(qtbot, 100)
    assert not grid.enabled and [(la.name, la.visible) for la in viewer.layers] == before


def test_exported_heatmap_opens_over_its_slide(slide_viewer, svs_predictions, tmp_path):
    """Issue 10.6: the pyramidal OME-TIFF lands on the slide without manual scaling."""
    viewer, widget = slide_viewer
    adata = read_predictions(svs_predictions)
    assert widget.load_predictions(svs_predictions)
    assert widget.show_map("risk")
    risk = adata.obs["risk"].to_numpy()
    scale, translate = widget._geometry()
    for d in (None, 8):
        path = widget.export_ome_tiff(tmp_path / f"risk{d}.ome.tif", downsample=d)
        (layer,) = viewer.open(str(path), plugin="histoviz")
        assert layer.multiscale and [str(u) for u in layer.units] == ["micrometer", "micrometer"]
        for i in (0, 11, len(risk) - 1):
            x0, y0, x1, y1 = widget.layout.patch_bounds(i)
            for fx, fy in ((0.5, 0.5), (0.05, 0.05), (0.95, 0.95)):  # centre and near two corners
                pos = patch_world_centre(widget.layout, i, scale, translate) if (fx, fy) == (0.5, 0.5) else \
                    (translate[0] + scale[0] * (y0 + fy * 224 - 0.5), translate[1] + scale[1] * (x0 + fx * 224 - 0.5))
                got = layer.get_value(pos, world=True)
                got = got[1] if isinstance(got, tuple) else got
                assert got == pytest.approx(risk[i], abs=1e-6), (d, i, fx, fy, got)
        viewer.layers.remove(layer)
