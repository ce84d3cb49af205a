"""Shared fixtures: real sample slides (shipped in sample_data/) and tiny synthetic slides."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "sample_data" / "real"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-gpu", action="store_true", default=False, help="run tests that need CUDA")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-gpu"):
        return
    skip = pytest.mark.skip(reason="needs --run-gpu and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def svs_path() -> Path:
    """Aperio SVS (CMU-1-Small-Region): 2220x2967, 0.499 um/px, JPEG tiles 240 px."""
    return REAL / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def png_path() -> Path:
    """1000x1000 H&E PNG without mpp."""
    return REAL / "he_1000px.png"


@pytest.fixture(scope="session")
def plain_tiff_path() -> Path:
    """Uncompressed strip TIFF 1493x901, no resolution tags, almost no tissue."""
    return REAL / "kidney-48-5.tif"


def make_layout_image(w: int = 1792, h: int = 1344, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic slide with a known layout: white background, one tissue rectangle.

    Returns the RGB image and the boolean ground-truth tissue mask. The tissue rectangle
    spans x in [448, 1344), y in [224, 1120): exactly 4 x 4 tiles of 224 px.
    """
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 243, np.uint8)
    img += rng.integers(0, 6, img.shape, dtype=np.uint8)
    truth = np.zeros((h, w), bool)
    truth[224:1120, 448:1344] = True
    tissue = np.empty((896, 896, 3), np.uint8)
    tissue[..., 0] = rng.integers(170, 230, (896, 896))
    tissue[..., 1] = rng.integers(60, 130, (896, 896))
    tissue[..., 2] = rng.integers(150, 210, (896, 896))
    img[224:1120, 448:1344] = tissue
    return img, truth


def write_pyramid_tiff(path: Path, img: np.ndarray, mpp: float = 0.5, tile: int = 256,
                       compression: str = "jpeg", ome: bool = False) -> Path:
    """Write a tiled pyramidal TIFF readable by both OpenSlide and tifffile."""
    import tifffile

    levels = [img]
    while max(levels[-1].shape[:2]) >= 1024:
        p = levels[-1]
        hh, ww = p.shape[0] // 2, p.shape[1] // 2
        levels.append(p[: 2 * hh, : 2 * ww].reshape(hh, 2, ww, 2, 3).mean(axis=(1, 3)).astype(np.uint8))
    kw = {"compression": compression} if compression != "none" else {}
    if ome:
        with tifffile.TiffWriter(path, ome=True) as tw:
            tw.write(levels[0], subifds=len(levels) - 1, tile=(tile, tile), photometric="rgb",
                     metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}, **kw)
            for lv in levels[1:]:
                tw.write(lv, tile=(tile, tile), photometric="rgb", subfiletype=1, **kw)
        return path
    with tifffile.TiffWriter(path) as tw:
        for i, lv in enumerate(levels):
            tw.write(lv, tile=(tile, tile), photometric="rgb", subfiletype=1 if i else 0,
                     resolution=(1e4 / (mpp * 2**i),) * 2, resolutionunit="CENTIMETER", **kw)
    return path


@pytest.fixture(scope="session")
def layout_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(path, image, truth mask) of a pyramidal JPEG TIFF with a known tissue rectangle."""
    img, truth = make_layout_image()
    p = write_pyramid_tiff(tmp_path_factory.mktemp("layout") / "layout.tif", img)
    return p, img, truth


@pytest.fixture(scope="session")
def fault_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs of the fault tables (see tests/_faults.py): a slide, a cohort of feature bags, a
    trained run and its twin with NaN weights; built once per session (CLI and napari tables)."""
    from _faults import build_inputs

    return build_inputs(tmp_path_factory.mktemp("fault_inputs"))
