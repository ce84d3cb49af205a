"""Static overlays: a patch's colour lands where the patch is on the thumbnail."""

from __future__ import annotations

import numpy as np

from histoviz.io import open_slide
from histoviz.io.predictions import make_prediction_adata
from histoviz.viz.colors import apply_colormap
from histoviz.viz.overlay import render_overlay, save_overlay


def test_overlay_pixel_lands_on_its_patch(tmp_path):
    img = np.full((1000, 1400, 3), 200, np.uint8)
    r = open_slide(img, mpp=0.5)
    coords = np.array([[x, y] for y in range(0, 800, 200) for x in range(0, 1200, 200)])
    vals = np.zeros((len(coords), 1), np.float32)
    hot = 9  # patch at (600, 200)
    vals[hot] = 10.0
    a = make_prediction_adata(coords, slide_id="array", tile_size_level0=200, expression=vals, genes=["G"])
    out, info = render_overlay(r, a, "gene:G", max_size=700, opacity=1.0, colormap="gray")
    assert info["scale"] == (2.0, 2.0) and out.shape == (500, 700, 3)
    lo, hi = info["contrast_limits"]
    top = apply_colormap(np.array([10.0]), "gray", (lo, hi))[0, :3]
    bottom = apply_colormap(np.array([0.0]), "gray", (lo, hi))[0, :3]
    # centre of the hot patch in thumbnail pixels: level-0 (700, 300) / 2
    assert np.array_equal(out[150, 350], top)
    assert np.array_equal(out[100 + 1, 300 + 1], top) and np.array_equal(out[199 - 1, 399 - 1], top)
    assert np.array_equal(out[150, 300 - 2], bottom)  # the neighbour to the left
    assert np.array_equal(out[450, 650], [200, 200, 200])  # no patch there: slide unchanged
    p = save_overlay(r, a, "gene:G", tmp_path / "o.png", max_size=700)
    assert p.exists() and p.stat().st_size > 1000
