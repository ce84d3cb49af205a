"""``TileGrid``: level-0 tile corners at a target resolution, selected by tissue fraction."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import ConfigError, ImplausibleMppError, NoTissueError
from histoviz.io.mpp import MAX_UPSAMPLE

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader
    from histoviz.tiling.mask import TissueMask

__all__ = ["TileGrid", "TilingConfig", "make_tile_grid", "read_tile"]


@dataclass(frozen=True, slots=True)
class TilingConfig:
    """How to tile a slide.

    Defaults follow HEST: 224 px at 0.5 um/px (112 um), non-overlapping, tiles kept when at
    least half is tissue. ``mask_method`` picks the tissue detector (see
    :func:`~histoviz.tiling.tissue_mask`); tiles with more than ``max_artifact_fraction`` ink,
    debris or bubble rims are dropped; ``min_sharpness`` (off by default: it reads every
    tile) drops out-of-focus tiles (see :mod:`histoviz.tiling.quality`).
    """

    tile_size: int = 224
    mpp: float | None = 0.5
    overlap: float = 0.0
    min_tissue_fraction: float = 0.5
    mask_mpp: float = 8.0
    mask_method: str = "robust"
    mpp_override: float | None = None
    max_artifact_fraction: float = 0.1
    min_sharpness: float | None = None
    mask_weights: str | None = None

    def __post_init__(self) -> None:
        from histoviz.io.mpp import check_mpp_value
        from histoviz.tiling.mask import MASK_METHODS

        def number(name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            ok = ok and math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
                raise ConfigError(f"{name} must be a finite number in {lb}{lo:g}, {hi:g}{rb}, got {v!r}")

        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, (int, np.integer)) \
                or not 8 <= self.tile_size <= 8192:
            raise ConfigError(f"tile_size must be an integer from 8 to 8192 px, got {self.tile_size!r}")
        if self.mpp is not None:
            number("mpp", 0.0, 1e3, lo_open=True)
        number("overlap", 0.0, 1.0, hi_open=True)
        number("min_tissue_fraction", 0.0, 1.0)
        number("mask_mpp", 0.0, 1e3, lo_open=True)
        number("max_artifact_fraction", 0.0, 1.0)
        if self.min_sharpness is not None:
            number("min_sharpness", 0.0, 10.0)
        if self.mpp_override is not None:
            try:
                check_mpp_value(self.mpp_override, "mpp_override")
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if self.mask_method not in MASK_METHODS:
            raise ConfigError(f"mask_method must be one of {', '.join(MASK_METHODS)}, got "
                              f"{self.mask_method!r}")
        if (self.mask_method == "learned") != (self.mask_weights is not None):
            raise ConfigError("mask_method='learned' and mask_weights=PATH (a .safetensors "
                              "segmenter) go together")


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
    quality
        Per-tile scores ``name -> (N,)`` float32 (``tissue``, ``artifact``, ``background``
        and, when measured, ``sharpness``); see :mod:`histoviz.tiling.quality`.
    """

    coords: np.ndarray
    tile_size: int
    tile_size_level0: int
    stride_level0: int
    mpp: float | None
    slide_mpp: float | None
    dimensions: tuple[int, int]
    tissue_fraction: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    quality: dict[str, np.ndarray] = field(repr=False, default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.coords)

    def select(self, keep: np.ndarray) -> TileGrid:
        """The grid restricted to ``keep`` (boolean ``(N,)`` or indices), e.g. by quality::

            grid.select(grid.quality["artifact"] == 0)
        """
        keep = np.asarray(keep)
        tf = self.tissue_fraction[keep] if len(self.tissue_fraction) == len(self) else self.tissue_fraction
        return replace(self, coords=self.coords[keep], tissue_fraction=tf,
                       quality={k: v[keep] for k, v in self.quality.items()})

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
        max_artifact_fraction: float = 1.0,
    ) -> TileGrid:
        """Lay a lattice over the slide and keep tiles with enough tissue.

        Tissue (and artefact) fractions come from integral images of the mask, so the cost is
        independent of tile size and linear in the number of lattice cells. Tiles with more
        than ``max_artifact_fraction`` artefact are dropped (when the mask has an artefact map).
        """
        from histoviz.tiling.quality import box_fractions

        w, h = dimensions
        stride = max(1, int(round(tile_size_level0 * (1.0 - overlap))))
        nx = max(0, (w - tile_size_level0) // stride + 1)
        ny = max(0, (h - tile_size_level0) // stride + 1)
        if nx == 0 or ny == 0:
            empty = np.zeros(0, np.float32)
            return cls(np.zeros((0, 2), np.int64), tile_size, tile_size_level0, stride, mpp, slide_mpp,
                       dimensions, empty,
                       {"tissue": empty, "artifact": empty, "background": empty})
        xs = np.arange(nx, dtype=np.int64) * stride
        ys = np.arange(ny, dtype=np.int64) * stride
        # mask pixels touched by each tile (at least one, for tiles smaller than a mask pixel)
        frac = box_fractions(mask.mask, mask.downsample, xs, ys, tile_size_level0)
        art = (box_fractions(mask.artifact, mask.downsample, xs, ys, tile_size_level0)
               if mask.artifact is not None else np.zeros_like(frac))
        keep = frac >= min_tissue_fraction if min_tissue_fraction > 0 else np.ones_like(frac, bool)
        if min_tissue_fraction > 0:
            keep &= frac > 0
        if max_artifact_fraction < 1.0:
            keep &= art <= max_artifact_fraction
        iy, ix = np.nonzero(keep)
        coords = np.stack([xs[ix], ys[iy]], axis=1).astype(np.int64)
        t, a = frac[iy, ix].astype(np.float32), art[iy, ix].astype(np.float32)
        quality = {"tissue": t, "artifact": a,
                   "background": np.clip(1.0 - t - a, 0.0, 1.0).astype(np.float32)}
        return cls(coords, tile_size, tile_size_level0, stride, mpp, slide_mpp, dimensions, t, quality)


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
        recorded, source = reader.mpp, reader.meta.mpp_source
        if recorded and source != "override" and abs(cfg.mpp_override - recorded) > 0.02 * recorded:
            log.warning("%s: --mpp-override %g um/px replaces the %g um/px the slide records (%s): tiles "
                        "and maps follow the override (drop it to use the slide's value)",
                        reader.path or reader.slide_id, cfg.mpp_override, recorded, source)
        reader.with_mpp(cfg.mpp_override)
    if cfg.mpp is None:
        slide_mpp = reader.mpp
        ts0 = cfg.tile_size
    else:
        slide_mpp = reader.require_mpp()
        if cfg.mpp * MAX_UPSAMPLE < slide_mpp:
            raise ImplausibleMppError(
                f"{reader.path or reader.slide_id}: tiles at {cfg.mpp:g} um/px would upsample the "
                f"slide's finest level ({slide_mpp:g} um/px, {reader.meta.mpp_source}) "
                f"{slide_mpp / cfg.mpp:.1f}x (at most {MAX_UPSAMPLE:g}x is allowed); tile at "
                f"--mpp {slide_mpp:.2g} or coarser, or fix the slide's mpp with --mpp-override"
            )
        ts0 = max(1, int(round(cfg.tile_size * cfg.mpp / slide_mpp)))
    if mask is None:
        mask = tissue_mask(reader, target_mpp=cfg.mask_mpp, method=cfg.mask_method,
                           weights=cfg.mask_weights)
    grid = TileGrid.from_mask(
        mask,
        dimensions=reader.dimensions,
        tile_size=cfg.tile_size,
        tile_size_level0=ts0,
        overlap=cfg.overlap,
        min_tissue_fraction=cfg.min_tissue_fraction,
        mpp=cfg.mpp,
        slide_mpp=slide_mpp,
        max_artifact_fraction=cfg.max_artifact_fraction,
    )
    if cfg.min_sharpness is not None and len(grid):
        grid = _with_sharpness(reader, grid)
        grid = grid.select(grid.quality["sharpness"] >= cfg.min_sharpness)
    if len(grid) == 0 and not allow_empty:
        name = reader.path or reader.slide_id
        if mask.artifact_fraction > 0.02 and mask.artifact_fraction >= 0.5 * mask.fraction:
            why = (f"ink, debris or bubbles cover {mask.artifact_fraction:.1%} of the slide and "
                   f"usable tissue {mask.fraction:.1%}")
        else:
            why = f"tissue covers {mask.fraction:.1%} of the slide"
        raise NoTissueError(
            f"{name}: no usable tissue: no tile of {cfg.tile_size} px"
            f"{f' at {cfg.mpp} um/px' if cfg.mpp else ''} has >= {cfg.min_tissue_fraction:.0%} tissue"
            f" and <= {cfg.max_artifact_fraction:.0%} artefact"
            f"{' and enough sharpness' if cfg.min_sharpness is not None else ''} ({why}); check "
            "the slide or lower --min-tissue"
        )
    return grid


def read_tile(reader: SlideReader, grid: TileGrid, i: int) -> np.ndarray:
    """RGB ``(tile_size, tile_size, 3)`` uint8 of tile ``i`` at the grid's resolution."""
    x, y = (int(v) for v in grid.coords[i])
    ts = grid.tile_size
    return reader.read_region_downsample((x, y), (ts, ts), grid.downsample)


def _with_sharpness(reader: SlideReader, grid: TileGrid, batch: int = 64) -> TileGrid:
    """The grid with ``quality["sharpness"]`` measured on its tiles (reads every tile)."""
    from histoviz.tiling.quality import tile_sharpness

    vals = np.empty(len(grid), np.float32)
    for s in range(0, len(grid), batch):
        e = min(len(grid), s + batch)
        vals[s:e] = tile_sharpness(np.stack([read_tile(reader, grid, i) for i in range(s, e)]))
    return replace(grid, quality={**grid.quality, "sharpness": vals})
