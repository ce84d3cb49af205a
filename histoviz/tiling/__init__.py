"""Tissue masks, tile grids, tile quality and tile datasets."""

from __future__ import annotations

from histoviz.tiling.grid import TileGrid, TilingConfig, make_tile_grid
from histoviz.tiling.mask import (
    MASK_METHODS,
    TissueMask,
    artifact_mask,
    tissue_mask,
    tissue_mask_from_rgb,
)
from histoviz.tiling.quality import BLUR_THRESHOLD, QUALITY_KEYS, mask_quality, tile_sharpness

__all__ = [
    "BLUR_THRESHOLD",
    "MASK_METHODS",
    "QUALITY_KEYS",
    "TileGrid",
    "TilingConfig",
    "TissueMask",
    "artifact_mask",
    "make_tile_grid",
    "mask_quality",
    "tile_sharpness",
    "tissue_mask",
    "tissue_mask_from_rgb",
]
