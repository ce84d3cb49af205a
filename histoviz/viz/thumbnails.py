"""Slide thumbnails with tile grids drawn on top (for the CLI, README and reports)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from histoviz._atomic import atomic_path

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader
    from histoviz.tiling.grid import TileGrid

__all__ = ["draw_grid", "grid_preview"]


def draw_grid(thumb: np.ndarray, grid: TileGrid, scale: float, colour=(0, 160, 0)) -> np.ndarray:
    """Outline each tile of ``grid`` on ``thumb`` (``scale`` = thumbnail px per level-0 px)."""
    out = thumb.copy()
    h, w = out.shape[:2]
    s = max(1, int(round(grid.tile_size_level0 * scale)))
    for x, y in np.round(grid.coords * scale).astype(int):
        x1, y1 = min(x + s, w) - 1, min(y + s, h) - 1
        if x >= w or y >= h:
            continue
        out[y, x : x1 + 1] = colour
        out[y1, x : x1 + 1] = colour
        out[y : y1 + 1, x] = colour
        out[y : y1 + 1, x1] = colour
    return out


def grid_preview(
    reader: SlideReader, grid: TileGrid, path: str | os.PathLike, *, max_size: int = 1024
) -> Path:
    """Write a PNG thumbnail of the slide with the kept tiles outlined."""
    from PIL import Image

    thumb = reader.get_thumbnail(max_size)
    scale = thumb.shape[1] / reader.dimensions[0]
    img = draw_grid(thumb, grid, scale)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return Path(path)
