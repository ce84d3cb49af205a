"""``TileGrid``: level-0 tile corners at a target resolution, selected by tissue fraction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import ConfigError, NoTissueError

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader
    from histoviz.tiling.mask import TissueMask

__all__ = ["TileGrid", "TilingConfig", "make_tile_grid"]


@dataclass(frozen=True, slots=True)
class TilingConfig:
    """How to tile a slide.

    Defaults follow HEST: 224 px at 0.5 um/px (112 um), non-overlapping, tiles kept when at
    least half is tissue.
    """

    tile_size: int = 224
    mpp: float | None = 0.5
    overlap: float = 0.0
    min_tissue_fraction: float = 0.5
    mask_mpp: float = 8.0
    mask_method: str = "combined"
    mpp_override: float | None = None

    def __post_init__(self) -> None:
        if self.tile_size < 8:
            raise ConfigError(f"tile_size must be >= 8 px, got {self.tile_size}")
        if self.mpp is not None and self.mpp <= 0:
            raise ConfigError(f"mpp must be > 0, got {self.mpp}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if not 0.0 <= self.min_tissue_fraction <= 1.0:
            raise ConfigError(f"min_tissue_fraction must be in [0, 1], got {self.min_tissue_fraction}")
        if self.mpp_override is not None and self.mpp_override <= 0:
            raise ConfigError(f"mpp_override must be > 0, got {self.mpp_override}")


@dataclass(frozen=True)
class TileGrid:
    """Tiles of one slide.

    Attributes
    ----------
    coords
        ``(N, 2)`` int64 level-0 top-left corners ``(x, y)``, row-major order.
    tile_size
        Output tile side in pixels (at ``mpp``).
    tile_size_level0
        Tile side in level-0 pixels.
    stride_level0
        Distance between neighbouring tile corners in level-0 pixels.
    mpp
        Target microns per pixel of the tiles (``None``: native level-0 pixels).
    slide_mpp
        The slide's level-0 mpp used for the conversion.
    dimensions
        Slide level-0 ``(width, height)``.
    tissue_fraction
        ``(N,)`` tissue fraction of each kept tile.
    """

    coords: np.ndarray
    tile_size: int
    tile_size_level0: int
    stride_level0: int
    mpp: float | None
    slide_mpp: float | None
    dimensions: tuple[int, int]
    tissue_fraction: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def downsample(self) -> float:
        """Level-0 pixels per output tile pixel."""
        return self.tile_size_level0 / self.tile_size

    @property
    def centers(self) -> np.ndarray:
        """``(N, 2)`` float level-0 tile centres."""
        return self.coords + self.tile_size_level0 / 2.0

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the full lattice covering the slide."""
        w, h = self.dimensions
        return (
            max(1, math.ceil((h - self.tile_size_level0) / self.stride_level0) + 1),
            max(1, math.ceil((w - self.tile_size_level0) / self.stride_level0) + 1),
        )

    @property
    def grid_index(self) -> np.ndarray:
        """``(N, 2)`` integer ``(row, col)`` of each tile in the lattice."""
        return np.stack(
            [self.coords[:, 1] // self.stride_level0, self.coords[:, 0] // self.stride_level0], axis=1
        ).astype(np.int64)

    def to_raster(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Place per-tile ``values`` (N,) or (N, C) on the lattice: ``(rows, cols[, C])``."""
        values = np.asarray(values)
        rows, cols = self.grid_shape
        out = np.full((rows, cols, *values.shape[1:]), fill, dtype=np.result_type(values, type(fill)))
        gi = self.grid_index
        out[gi[:, 0], gi[:, 1]] = values
        return out

    def attrs(self) -> dict[str, Any]:
        """Attributes recorded with features and predictions."""
        return {
            "tile_size": int(self.tile_size),
            "tile_size_level0": int(self.tile_size_level0),
            "stride_level0": int(self.stride_level0),
            "mpp": float(self.mpp) if self.mpp is not None else -1.0,
            "slide_mpp": float(self.slide_mpp) if self.slide_mpp is not None else -1.0,
            "slide_width": int(self.dimensions[0]),
            "slide_height": int(self.dimensions[1]),
        }

    @classmethod
    def from_mask(
        cls,
        mask: TissueMask,
        *,
        dimensions: tuple[int, int],
        tile_size: int,
        tile_size_level0: int,
        overlap: float = 0.0,
        min_tissue_fraction: float = 0.5,
        mpp: float | None = None,
        slide_mpp: float | None = None,
    ) -> TileGrid:
        """Lay a lattice over the slide and keep tiles with enough tissue.

        Tissue fractions come from an integral image of the mask, so the cost is independent
        of tile size and linear in the number of lattice cells.
        """
        w, h = dimensions
        stride = max(1, int(round(tile_size_level0 * (1.0 - overlap))))
        nx = max(0, (w - tile_size_level0) // stride + 1)
        ny = max(0, (h - tile_size_level0) // stride + 1)
        if nx == 0 or ny == 0:
            return cls(np.zeros((0, 2), np.int64), tile_size, tile_size_level0, stride, mpp, slide_mpp,
                       dimensions, np.zeros(0))
        m = mask.mask
        ii = np.zeros((m.shape[0] + 1, m.shape[1] + 1), np.int64 if m.size >= 2**31 else np.int32)
        np.cumsum(m, axis=0, dtype=ii.dtype, out=ii[1:, 1:])
        np.cumsum(ii[1:, 1:], axis=1, out=ii[1:, 1:])
        xs = np.arange(nx, dtype=np.int64) * stride
        ys = np.arange(ny, dtype=np.int64) * stride
        ds = mask.downsample

        def _lo(v: np.ndarray, limit: int) -> np.ndarray:
            return np.clip(np.floor(v / ds + 1e-6).astype(np.int64), 0, limit)

        def _hi(v: np.ndarray, limit: int) -> np.ndarray:
            return np.clip(np.ceil(v / ds - 1e-6).astype(np.int64), 0, limit)

        # mask pixels touched by each tile
        x0, x1 = _lo(xs, m.shape[1]), _hi(xs + tile_size_level0, m.shape[1])
        y0, y1 = _lo(ys, m.shape[0]), _hi(ys + tile_size_level0, m.shape[0])
        # guarantee at least one mask pixel per tile (tiles smaller than a mask pixel)
        x1 = np.maximum(x1, np.minimum(x0 + 1, m.shape[1]))
        y1 = np.maximum(y1, np.minimum(y0 + 1, m.shape[0]))
        s = (
            ii[y1[:, None], x1[None, :]] - ii[y0[:, None], x1[None, :]]
            - ii[y1[:, None], x0[None, :]] + ii[y0[:, None], x0[None, :]]
        )
        area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
        frac = s / np.maximum(area, 1)
        keep = frac >= min_tissue_fraction if min_tissue_fraction > 0 else np.ones_like(frac, bool)
        if min_tissue_fraction > 0:
            keep &= frac > 0
        iy, ix = np.nonzero(keep)
        coords = np.stack([xs[ix], ys[iy]], axis=1).astype(np.int64)
        return cls(coords, tile_size, tile_size_level0, stride, mpp, slide_mpp, dimensions,
                   frac[iy, ix].astype(np.float32))


def make_tile_grid(
    reader: SlideReader,
    config: TilingConfig | None = None,
    *,
    mask: TissueMask | None = None,
    allow_empty: bool = False,
) -> TileGrid:
    """Tissue mask + lattice for one slide.

    Parameters
    ----------
    reader
        An open slide.
    config
        Tile size, target mpp, overlap, tissue threshold; ``mpp=None`` tiles at level-0 pixels.
    mask
        A precomputed tissue mask (computed when omitted).
    allow_empty
        Return an empty grid instead of raising :class:`NoTissueError`.

    Returns
    -------
    :class:`TileGrid` whose coordinates are level-0 top-left corners.

    Raises
    ------
    MissingMppError
        ``config.mpp`` is set, the slide has no mpp and no ``mpp_override`` was given.
    NoTissueError
        No tile passes the tissue threshold.
    """
    from histoviz.tiling.mask import tissue_mask

    cfg = config or TilingConfig()
    if cfg.mpp_override is not None:
        reader.with_mpp(cfg.mpp_override)
    if cfg.mpp is None:
        slide_mpp = reader.mpp
        ts0 = cfg.tile_size
    else:
        slide_mpp = reader.require_mpp()
        ts0 = max(1, int(round(cfg.tile_size * cfg.mpp / slide_mpp)))
    if mask is None:
        mask = tissue_mask(reader, target_mpp=cfg.mask_mpp, method=cfg.mask_method)
    grid = TileGrid.from_mask(
        mask,
        dimensions=reader.dimensions,
        tile_size=cfg.tile_size,
        tile_size_level0=ts0,
        overlap=cfg.overlap,
        min_tissue_fraction=cfg.min_tissue_fraction,
        mpp=cfg.mpp,
        slide_mpp=slide_mpp,
    )
    if len(grid) == 0 and not allow_empty:
        raise NoTissueError(
            f"{reader.path or reader.slide_id}: no tile of {cfg.tile_size} px"
            f"{f' at {cfg.mpp} um/px' if cfg.mpp else ''} has >= {cfg.min_tissue_fraction:.0%} tissue "
            f"(tissue covers {mask.fraction:.1%} of the slide); check the slide or lower "
            "--min-tissue"
        )
    return grid
