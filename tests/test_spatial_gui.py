"""Spots in a real napari viewer (Xvfb): circles of the true diameter on the slide, coloured by a
gene, measured beside predicted; the spot widget switches the gene on both sides."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

with contextlib.suppress(ImportError):  # see tests/gui/conftest.py: load triton before any viewer
    import triton  # noqa: F401

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _needs_display() -> None:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        pytest.skip("GUI tests need a display: run them under xvfb-run")


@pytest.fixture
def spot_file(tmp_path) -> Path:
    """A per-spot prediction file on a plain grey slide: 3 spots, gene HI measured (0, 1, 0.5) and
    predicted (1, 0, 0.5); gene LO the reverse."""
    import anndata as ad
    import pandas as pd
    import tifffile

    from histoviz.io.predictions import make_prediction_adata, write_predictions

    slide = tmp_path / "grey.tif"
    tifffile.imwrite(slide, np.full((400, 600, 3), 200, np.uint8), resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    centres = np.array([[150.0, 200.0], [300.0, 200.0], [450.0, 200.0]])
    d = 80.0
    a = make_prediction_adata(np.round(centres - d / 2), slide_id="grey", tile_size_level0=int(d),
                              expression=np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), genes=["HI", "LO"],
                              meta={"slide_path": str(slide), "slide_dimensions": [600, 400], "mpp": 0.5, "model": "test model",
                                    "spot_diameter_px": d})
    a.obsm["spatial"] = centres
    a.obsm["measured_expression"] = pd.DataFrame([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], index=a.obs_names,
                                                 columns=["HI", "LO"])
    assert isinstance(a, ad.AnnData)
    return write_predictions(a, tmp_path / "grey.spots.h5ad")


def _canvas(viewer, world_yx):
    view = viewer.window._qt_viewer.canvas.view
    tr = view.transform * view.scene.transform
    x, y = tr.map([float(world_yx[1]), float(world_yx[0])])[:2]
    return float(y), float(x)


def test_spots_are_true_diameter_circles_measured_beside_predicted(make_napari_viewer, spot_file, qtbot):
    from napari.utils.colormaps import ensure_colormap

    from napari_plugin._spots import SpotWidget

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    layers = viewer.open(str(spot_file), plugin="histoviz")
    assert [type(la).__name__ for la in layers] == ["Image", "Points", "Image", "Points", "Image", "Points"]
    widget = SpotWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.wait(100)  # the dock takes its width from the canvas
    assert widget.show_gene("HI")
    spots = [la for la in viewer.layers if la.name.startswith(("measured", "predicted"))]
    assert [la.name for la in spots] == ["measured HI", "predicted HI"]
    # issue 17.7: one colour scale for both sides, a colour bar with its unit, a label per side
    assert tuple(spots[0].face_contrast_limits) == tuple(spots[1].face_contrast_limits) == (0.0, 1.0)
    assert widget.colorbar_text() == ("HI (log1p(normalised counts)), measured and predicted", "0", "1")
    labels = viewer.layers["spot panels"]
    assert list(labels.features["title"]) == ["measured HI", "predicted HI (test model)"]
    scale_layer = next(la for la in viewer.layers if la.name.startswith("colour scale"))
    assert scale_layer.colorbar.visible and tuple(scale_layer.contrast_limits) == (0.0, 1.0)
    assert labels.data[1, 1] - labels.data[0, 1] == pytest.approx(600 * 0.5 * 1.05)  # above each copy
    viewer.reset_view()
    qtbot.wait(50)
    img = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    ratio = img.shape[0] / viewer.window._qt_viewer.canvas.native.height()
    cmap = ensure_colormap("inferno")
    top, bottom = (np.round(cmap.map(np.array([v]))[0, :3] * 255) for v in (1.0, 0.0))
    shift = 600 * 0.5 * 1.05  # the predicted copy of the slide, in um
    r_world = 80 * 0.5 / 2

    def px(world_yx):
        rr, cc = _canvas(viewer, world_yx)
        return img[int(round(rr * ratio)), int(round(cc * ratio))]

    for i, (x, y) in enumerate([(150, 200), (300, 200), (450, 200)]):
        wy, wx = (y - 0.5) * 0.5, (x - 0.5) * 0.5
        meas, pred = px((wy, wx)), px((wy, wx + shift))
        want_m = top if i == 1 else bottom if i == 0 else None
        want_p = top if i == 0 else bottom if i == 1 else None
        if want_m is not None:
            assert np.abs(meas - want_m).max() <= 40, (i, meas, want_m)
            assert np.abs(pred - want_p).max() <= 40, (i, pred, want_p)
        # inside the circle (0.8 r) the spot colour, outside (1.25 r) the grey slide
        assert np.abs(px((wy + 0.8 * r_world, wx)) - meas).max() <= 40
        assert np.abs(px((wy + 1.25 * r_world, wx)) - 200).max() <= 30
    assert widget.show_gene("LO")  # the widget recolours both sides
    qtbot.wait(50)
    img = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    wy, wx = (200 - 0.5) * 0.5, (150 - 0.5) * 0.5
    assert np.abs(px((wy, wx)) - top).max() <= 40 and np.abs(px((wy, wx + shift)) - bottom).max() <= 40
    assert "Pearson r" in widget.info.text() and list(labels.features["title"])[0] == "measured LO"
    from tests.gui.conftest import save_screenshot

    save_screenshot(viewer, "napari_spots")
    # the same spots on a full-resolution image of the section (here the grey slide at 2x)
    import tifffile

    big = spot_file.parent / "grey_full.tif"
    tifffile.imwrite(big, np.full((800, 1200, 3), 200, np.uint8), resolution=(1e4 / 0.25, 1e4 / 0.25),
                     resolutionunit="CENTIMETER")
    assert widget.use_full_resolution(big)
    meas = viewer.layers["measured LO"]
    assert meas.size[0] == pytest.approx(160 * 0.25)  # 80 px spots at 2x, in um
    np.testing.assert_allclose(meas.data[:, 1], (np.array([300.0, 600.0, 900.0]) - 0.5) * 0.25)
    assert viewer.layers["grey_full"].data[0].shape[:2] == (800, 1200)
