"""Tissue masks, tile grids and tile datasets."""

from __future__ import annotations

from histoviz.tiling.grid import TileGrid, TilingConfig, make_tile_grid
from histoviz.tiling.mask import TissueMask, tissue_mask, tissue_mask_from_rgb

__all__ = [
    "TileGrid",
    "TilingConfig",
    "TissueMask",
    "make_tile_grid",
    "tissue_mask",
    "tissue_mask_from_rgb",
]
