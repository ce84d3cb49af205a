"""Fixtures for the napari GUI tests: prediction files with known values, viewer helpers.

These tests open a real napari viewer; run them under Xvfb
(``xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python -m pytest tests/gui``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import anndata as ad

# Triton bundles its own LLVM, which clashes with the libLLVM that Mesa's OpenGL (llvmpipe under
# Xvfb) loads on the first draw: a later `import triton` (torch imports it when probing, e.g. via
# torchvision.ops) segfaults the whole test run. Load it before any viewer exists.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401


@pytest.fixture(autouse=True)
def _needs_display() -> None:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        pytest.skip("GUI tests need a display: run them under xvfb-run")


def checkerboard(index: np.ndarray) -> np.ndarray:
    """1.0 on patches whose raster (row + col) is even, 0.0 on the others."""
    return ((index[:, 0] + index[:, 1]) % 2 == 0).astype(np.float32)


def ramp(n: int) -> np.ndarray:
    """``n`` values evenly spread over [0, 1] in patch order."""
    return np.linspace(0.0, 1.0, n).astype(np.float32)


def fixture_predictions(reader, grid, *, model: str = "test fixture") -> ad.AnnData:
    """Prediction AnnData with known values for the open SVS, in the registry's keys.

    - gene ``MARKER``: checkerboard (1 on even lattice cells, 0 on odd ones); ``ANTI`` = 1 - MARKER;
      ``BIG``: 1000 + 500 x ramp (a range far from the others);
    - ``obsm["grade_proba"]`` (G1..G3): P(G3) = ramp, the rest split evenly; ``obs["grade_pred"]``;
    - ``obsm["cell_type_weights"]`` (tumour, stroma, immune): dominant type cycles patch by patch;
    - ``obs["risk"]`` = 2 x ramp - 1, ``obs["risk_width"]``, ``obs["grade_set_size"]``,
      ``obs["attention"]`` (sums to 1, so values around 1 / N);
    - ``uns["slide_prediction"]``: grade G3 with the set {G2, G3}, risk 0.25 in [-0.5, 1.0].
    """
    import pandas as pd

    from histoviz.io.predictions import make_prediction_adata
    from histoviz.viz.maps import PatchLayout

    layout = PatchLayout.from_coords(grid.coords, grid.tile_size_level0)
    n = len(grid)
    marker = checkerboard(layout.index)
    r = ramp(n)
    expr = np.column_stack([marker, 1.0 - marker, 1000.0 + 500.0 * r])
    g3 = r
    rest = (1.0 - g3) / 2.0
    gp = pd.DataFrame({"G1": rest, "G2": rest, "G3": g3})
    ct = np.full((n, 3), 0.1, np.float32)
    ct[np.arange(n), np.arange(n) % 3] = 0.8
    att = np.exp(r) / np.exp(r).sum()
    a = make_prediction_adata(
        grid.coords, slide_id=reader.slide_id, tile_size_level0=grid.tile_size_level0,
        expression=expr, genes=["MARKER", "ANTI", "BIG"],
        obs={"grade_pred": pd.Categorical(gp.idxmax(axis=1).to_numpy(), categories=["G1", "G2", "G3"]),
             "grade_set_size": np.where(r > 0.5, 1.0, 2.0).astype(np.float32),
             "risk": (2 * r - 1).astype(np.float32), "risk_width": (1.5 - r).astype(np.float32),
             "attention": att.astype(np.float32)},
        obsm={"grade_proba": gp, "cell_type_weights": pd.DataFrame(ct, columns=["tumour", "stroma", "immune"])},
        meta={"slide_path": str(reader.path), "slide_dimensions": [int(v) for v in reader.dimensions],
              "mpp": reader.mpp, "tile_size": int(grid.tile_size), "stride_level0": int(grid.stride_level0),
              "model": model},
    )
    a.uns["slide_prediction"] = {
        "grade": {"kind": "classification", "targets": np.array(["G1", "G2", "G3"]),
                  "values": np.array([0.1, 0.3, 0.6]), "predicted": "G3", "set": np.array(["G2", "G3"]),
                  "alpha": 0.1},
        "survival": {"kind": "survival", "targets": np.array(["S_0", "S_1"]), "values": np.array([0.8, 0.5]),
                     "risk": 0.25, "lo": -0.5, "hi": 1.0, "alpha": 0.1},
    }
    return a


@pytest.fixture(scope="session")
def svs_predictions(tmp_path_factory: pytest.TempPathFactory, svs_path: Path) -> Path:
    """Known-value predictions for the real SVS (48 patches of 224 px): see :func:`fixture_predictions`."""
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling.grid import TilingConfig, make_tile_grid

    with open_slide(svs_path) as reader:
        grid = make_tile_grid(reader, TilingConfig(tile_size=224, mpp=0.5))
        a = fixture_predictions(reader, grid)
    return write_predictions(a, tmp_path_factory.mktemp("pred") / "CMU-1-Small-Region.h5ad")


@pytest.fixture(scope="session")
def svs_predictions_b(tmp_path_factory: pytest.TempPathFactory, svs_path: Path) -> Path:
    """A second prediction file of the same SVS (another "model"), for swap checks."""
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling.grid import TilingConfig, make_tile_grid

    with open_slide(svs_path) as reader:
        grid = make_tile_grid(reader, TilingConfig(tile_size=224, mpp=0.5))
        a = fixture_predictions(reader, grid, model="second fixture")
    a.X[:, 0] = 1.0 - a.X[:, 0]
    return write_predictions(a, tmp_path_factory.mktemp("predb") / "CMU-1-Small-Region.b.h5ad")


@pytest.fixture(scope="session")
def synthetic_sample(pytestconfig: pytest.Config):
    """The napari sample predicted by models trained here (built once; see tests/_sample.py)."""
    from tests._sample import synthetic_sample as build

    return build(pytestconfig)


@pytest.fixture(scope="session")
def foreign_predictions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad prediction files: another slide's id, another slide's size, missing keys, not h5ad."""
    import anndata as ad

    from histoviz.io.predictions import make_prediction_adata, write_predictions

    d = tmp_path_factory.mktemp("bad")
    coords = np.array([[0, 0], [224, 0], [0, 224]])
    other_id = make_prediction_adata(coords, slide_id="TCGA-XX-0001", tile_size_level0=224,
                                     expression=np.ones((3, 2)), genes=["A", "B"],
                                     meta={"slide_dimensions": [2220, 2967]})
    other_dims = make_prediction_adata(coords, slide_id="CMU-1-Small-Region", tile_size_level0=224,
                                       expression=np.ones((3, 2)), genes=["A", "B"],
                                       meta={"slide_dimensions": [46000, 32914]})
    outside = make_prediction_adata(coords + 5000, slide_id="CMU-1-Small-Region",
                                    tile_size_level0=224, expression=np.ones((3, 2)),
                                    genes=["A", "B"])
    no_uns = ad.AnnData(X=np.ones((3, 2), np.float32))
    no_uns.obsm["spatial"] = coords.astype(float) + 112
    junk = d / "junk.h5ad"
    junk.write_bytes(b"this is not an HDF5 file")
    no_uns_path = d / "no_uns.h5ad"
    no_uns.write_h5ad(no_uns_path)
    return {
        "other_id": write_predictions(other_id, d / "other_id.h5ad"),
        "other_dims": write_predictions(other_dims, d / "other_dims.h5ad"),
        "outside": write_predictions(outside, d / "outside.h5ad"),
        "missing_keys": no_uns_path,
        "junk": junk,
    }


def world_to_canvas(viewer, world_yx, view=None) -> tuple[float, float]:
    """Canvas pixel ``(row, col)`` where world ``(y, x)`` is drawn (2D view; ``view``: a grid
    panel, ``viewer.window._qt_viewer.canvas.grid_views[k]``)."""
    canvas = viewer.window._qt_viewer.canvas
    view = canvas.view if view is None else view
    tr = view.transform * view.scene.transform
    x, y = tr.map([float(world_yx[1]), float(world_yx[0])])[:2]
    return float(y), float(x)


@pytest.fixture(scope="module")
def module_viewer(qapp):
    """One shown napari viewer per test module (starting a viewer costs seconds; tests that need
    a fresh process state use ``make_napari_viewer``)."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    yield viewer
    viewer.close()


def fresh(viewer, qtbot=None) -> None:
    """Back to an empty viewer: no layers, no docked histoviz widget, one canvas, default camera."""
    from qtpy.QtWidgets import QApplication

    for name in list(viewer.window.dock_widgets):
        w = viewer.window.dock_widgets[name]
        if hasattr(w, "detach"):
            w.detach()  # a removed widget no longer listens to this viewer
        viewer.window.remove_dock_widget(w)
    viewer.canvas.grid.enabled = False
    viewer.layers.clear()
    viewer.text_overlay.visible = False
    QApplication.processEvents()


@pytest.fixture
def slide_viewer(module_viewer, svs_path, qtbot, tmp_path, monkeypatch):
    """The module's viewer, emptied, with the SVS opened through the histoviz reader and a new
    "Prediction maps" widget docked (its remembered resolutions in a fresh cache)."""
    from napari_plugin._widget import PredictionWidget

    monkeypatch.setenv("HISTOVIZ_CACHE", str(tmp_path / "cache"))
    viewer = module_viewer
    fresh(viewer)
    layers = viewer.open(str(svs_path), plugin="histoviz")
    assert len(layers) == 1
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction maps", area="right")
    qtbot.wait(10)
    yield viewer, widget
    widget.cancel_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)


def save_screenshot(viewer, name: str, *, canvas_only: bool = False) -> np.ndarray:
    """Screenshot of the viewer (whole window, or the canvas); also written to
    ``$HISTOVIZ_SCREENSHOTS/<name>.png`` when that variable names a folder (the README's
    pictures come from the GUI tests this way)."""
    img = viewer.screenshot(canvas_only=canvas_only, flash=False)
    out = os.environ.get("HISTOVIZ_SCREENSHOTS")
    if out:
        from PIL import Image

        Path(out).mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(np.asarray(img)[..., :3].astype(np.uint8))
        if im.width > 1600:
            im = im.resize((1600, round(im.height * 1600 / im.width)), Image.LANCZOS)
        im.save(Path(out) / f"{name}.png", optimize=True)
    return img


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic cohort, its features and a trained ridge run (through the CLI)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    d = tmp_path_factory.mktemp("run")
    exe = [sys.executable, "-m", "histoviz.cli"]
    env = {**os.environ, "TQDM_DISABLE": "1"}

    def cli(*args: str) -> None:
        r = subprocess.run([*exe, *args], cwd=d, capture_output=True, text=True, env=env, check=False)
        assert r.returncode == 0, r.stdout + r.stderr

    cli("synth", "--out", "syn", "--slides", "8", "--size", "1024")
    cli("embed", "syn/cohort.csv", "--out", "syn/feat", "--encoder", "morphology", "--workers", "0",
        "--no-progress")
    sets = ["data.cohort=syn/cohort.csv", "data.features=syn/feat", "evaluation.n_folds=2",
            "model.params.n_components=4"]
    sets += [f"data.omics.{m}.path=syn/omics/{m}.h5ad" for m in ("gene", "protein", "mirna", "pathway")]
    cli("train", str(root / "training" / "configs" / "ridge.yaml"), "--out", "run", "--no-progress",
        *[a for s in sets for a in ("--set", s)])
    return {"run": d / "run", "slide": d / "syn" / "slides" / "S001.tif"}


# ---- screen helpers ----------------------------------------------------------------------------
def screen(viewer) -> tuple[np.ndarray, float]:
    """Canvas screenshot (RGB int) and physical pixels per canvas (logical) pixel."""
    img = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    native = viewer.window._qt_viewer.canvas.native
    return img, img.shape[0] / native.height()


def pixel(img: np.ndarray, ratio: float, rc: tuple[float, float]) -> np.ndarray:
    """RGB of the screenshot at canvas ``(row, col)``."""
    r, c = int(round(rc[0] * ratio)), int(round(rc[1] * ratio))
    assert 0 <= r < img.shape[0] and 0 <= c < img.shape[1], "point is off screen"
    return img[r, c]


def patch_world_centre(layout, i: int, scale, translate) -> tuple[float, float]:
    """World ``(y, x)`` of the centre of patch ``i``."""
    from histoviz.viz.maps import level0_to_world

    x0, y0, x1, y1 = layout.patch_bounds(i)
    return level0_to_world(((x0 + x1) / 2, (y0 + y1) / 2), scale, translate)


def patch_pixels(viewer, widget, view=None) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """Screenshot and the RGB at the centre of every patch of the widget's layout."""
    img, ratio = screen(viewer)
    scale, translate = widget._geometry()
    lay = widget.layout
    px = [pixel(img, ratio, world_to_canvas(viewer, patch_world_centre(lay, i, scale, translate), view))
          for i in range(len(lay))]
    return img, ratio, px

