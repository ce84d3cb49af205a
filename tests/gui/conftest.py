"""Fixtures for the napari GUI tests: prediction files with known values, viewer helpers.

These tests open a real napari viewer; run them under Xvfb
(``xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python -m pytest tests/gui``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(scope="session")
def svs_predictions(tmp_path_factory: pytest.TempPathFactory, svs_path: Path) -> Path:
    """Predictions for the real SVS: gene ``MARKER`` is a checkerboard over the patch lattice
    (1 on even cells, 0 on odd ones); the other maps are simulated from tile H&E density."""
    import anndata as ad

    from histoviz.io import open_slide
    from histoviz.io.predictions import make_prediction_adata, write_predictions
    from histoviz.tiling.grid import TilingConfig, make_tile_grid
    from histoviz.viz.demo import simulated_predictions
    from histoviz.viz.maps import PatchLayout

    with open_slide(svs_path) as reader:
        grid = make_tile_grid(reader, TilingConfig(tile_size=224, mpp=0.5))
        sim = simulated_predictions(reader, grid, n_genes=6)
    layout = PatchLayout.from_coords(grid.coords, grid.tile_size_level0)
    marker = checkerboard(layout.index)
    expr = np.column_stack([marker, np.asarray(sim.X)])
    a = make_prediction_adata(
        grid.coords,
        slide_id=reader.slide_id,
        tile_size_level0=grid.tile_size_level0,
        expression=expr,
        genes=["MARKER", *map(str, sim.var_names)],
        obs={k: sim.obs[k].to_numpy() for k in ("risk", "attention", "grade_set", "risk_lo", "risk_hi")},
        obsm={k: sim.obsm[k] for k in ("cell_type_weights", "grade_proba", "coattention")},
        meta=dict(sim.uns["histoviz"]),
    )
    assert isinstance(a, ad.AnnData)
    return write_predictions(a, tmp_path_factory.mktemp("pred") / "CMU-1-Small-Region.h5ad")


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


def world_to_canvas(viewer, world_yx) -> tuple[float, float]:
    """Canvas pixel ``(row, col)`` where world ``(y, x)`` is drawn (2D view)."""
    canvas = viewer.window._qt_viewer.canvas
    view = canvas.view
    tr = view.transform * view.scene.transform
    x, y = tr.map([float(world_yx[1]), float(world_yx[0])])[:2]
    return float(y), float(x)


@pytest.fixture
def slide_viewer(make_napari_viewer, svs_path, qtbot):
    """A shown viewer with the SVS opened through the histoviz reader and the widget docked."""
    from napari_plugin._widget import PredictionWidget

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    layers = viewer.open(str(svs_path), plugin="histoviz")
    assert len(layers) == 1
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction maps", area="right")
    qtbot.wait(10)
    return viewer, widget


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
