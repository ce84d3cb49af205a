"""Where each patch of a prediction file sits on its slide: :class:`PatchLayout` (the lattice of
patch corners, rasters at one cell per patch, pixel <-> patch lookups) and :class:`Placement`
(scale and offset into viewer world coordinates); :mod:`histoviz.viz.maps` re-exports them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["MAX_RASTER_CELLS", "PatchLayout", "Placement", "RasterMap", "contour_paths", "level0_to_world",
           "world_to_level0"]

logger = logging.getLogger(__name__)

#: Largest raster (cells) a layout may need; more means the coordinates are not a lattice.
MAX_RASTER_CELLS = 200_000_000


# ------------------------------------------------------------------------------------------------
# layout and placement
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Affine placement of a raster in world coordinates, ``(y, x)`` order (napari's).

    Attributes
    ----------
    scale
        World size of one raster pixel.
    translate
        World position of the centre of raster pixel ``(0, 0)``.
    """

    scale: tuple[float, float]
    translate: tuple[float, float]


@dataclass(frozen=True, eq=False)
class PatchLayout:
    """The lattice that the patches of one slide lie on.

    Build it with :meth:`from_coords` or :meth:`from_adata`.

    Attributes
    ----------
    coords
        ``(N, 2)`` int64 level-0 top-left corners ``(x, y)`` of the patches.
    tile_size_level0
        Patch side in level-0 pixels.
    cell_size
        Lattice spacing in level-0 pixels: the side of one raster pixel. Equal to the patch
        size for non-overlapping patches; for overlapping patches (stride < size) each raster
        pixel covers the central ``stride x stride`` part of its patch.
    origin
        Level-0 ``(x, y)`` of the top-left corner of raster pixel ``(0, 0)``.
    shape
        Raster ``(rows, cols)``.
    index
        ``(N, 2)`` raster ``(row, col)`` of each patch.
    snapped
        True when coordinates were not on one lattice and had to be rounded to it.
    """

    coords: np.ndarray
    tile_size_level0: int
    cell_size: int
    origin: tuple[float, float]
    shape: tuple[int, int]
    index: np.ndarray
    snapped: bool = False
    _lookup: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_coords(
        cls,
        coords: np.ndarray,
        tile_size_level0: int,
        *,
        stride_level0: int | None = None,
    ) -> PatchLayout:
        """Infer the lattice from patch corners.

        Parameters
        ----------
        coords
            ``(N, 2)`` level-0 top-left corners ``(x, y)``.
        tile_size_level0
            Patch side in level-0 pixels.
        stride_level0
            Lattice spacing; inferred from the coordinates when omitted (the greatest common
            divisor of corner offsets, or the patch size when patches only leave gaps).

        Raises
        ------
        DataError
            No patches, a non-positive patch size, or coordinates needing an absurd raster.
        """
        xy = np.asarray(coords)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise DataError(f"patch coordinates must be (N, 2), got shape {xy.shape}")
        if len(xy) == 0:
            raise DataError("the prediction file holds no patches")
        if not np.all(np.isfinite(xy)):
            raise DataError("patch coordinates contain NaN or infinite values")
        xy = np.rint(xy).astype(np.int64)
        ts = int(round(float(tile_size_level0)))
        if ts <= 0:
            raise DataError(f"tile_size_level0 must be > 0, got {tile_size_level0}")
        stride = int(stride_level0) if stride_level0 else _infer_stride(xy, ts)
        if stride <= 0:
            raise DataError(f"stride_level0 must be > 0, got {stride_level0}")
        mins = xy.min(axis=0)
        rel = xy - mins
        snapped = bool(np.any(rel % stride))
        if snapped:
            logger.warning(
                "patch corners are not on a %d px lattice; snapping them to the nearest cell", stride
            )
        col_row = np.rint(rel / stride).astype(np.int64)
        rows, cols = int(col_row[:, 1].max()) + 1, int(col_row[:, 0].max()) + 1
        if rows * cols > MAX_RASTER_CELLS:
            raise DataError(
                f"patch coordinates span {cols} x {rows} cells of {stride} px; they do not look "
                "like a tile lattice (check tile_size_level0)"
            )
        index = np.stack([col_row[:, 1], col_row[:, 0]], axis=1)
        off = (ts - stride) / 2.0 if stride < ts else 0.0
        lookup = np.full((rows, cols), -1, dtype=np.int64)
        lookup[index[:, 0], index[:, 1]] = np.arange(len(xy))
        n_dup = len(xy) - int((lookup >= 0).sum())
        if n_dup:
            logger.warning("%d patches share a lattice cell with another; the last one is shown", n_dup)
        return cls(
            coords=xy,
            tile_size_level0=ts,
            cell_size=stride,
            origin=(float(mins[0] + off), float(mins[1] + off)),
            shape=(rows, cols),
            index=index,
            snapped=snapped,
            _lookup=lookup,
        )

    @classmethod
    def from_adata(cls, adata: ad.AnnData) -> PatchLayout:
        """Layout of a prediction AnnData (``obs["x"], obs["y"]`` or ``obsm["spatial"]``)."""
        info = adata.uns.get("histoviz", {})
        if "tile_size_level0" not in info:
            raise DataError("uns['histoviz']['tile_size_level0'] is missing; cannot place patches")
        ts = float(info["tile_size_level0"])
        if "x" in adata.obs and "y" in adata.obs:
            coords = np.stack([adata.obs["x"].to_numpy(), adata.obs["y"].to_numpy()], axis=1)
        elif "spatial" in adata.obsm:
            coords = np.asarray(adata.obsm["spatial"], dtype=np.float64) - ts / 2.0
        else:
            raise DataError("patch coordinates are missing: neither obs x/y nor obsm['spatial']")
        stride = info.get("stride_level0")
        stride = int(stride) if stride is not None and float(stride) > 0 else None
        return cls.from_coords(coords, int(round(ts)), stride_level0=stride)

    # ---- basic properties ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.coords)

    @property
    def lookup(self) -> np.ndarray:
        """``(rows, cols)`` int64 patch index of each raster pixel, ``-1`` where there is none."""
        return self._lookup

    @property
    def extent_level0(self) -> tuple[float, float, float, float]:
        """Level-0 ``(x0, y0, x1, y1)`` covered by the raster."""
        x0, y0 = self.origin
        return x0, y0, x0 + self.shape[1] * self.cell_size, y0 + self.shape[0] * self.cell_size

    def patch_bounds(self, i: int) -> tuple[int, int, int, int]:
        """Level-0 ``(x0, y0, x1, y1)`` of patch ``i``."""
        x, y = (int(v) for v in self.coords[i])
        return x, y, x + self.tile_size_level0, y + self.tile_size_level0

    # ---- rasters ------------------------------------------------------------------------------
    def raster(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Per-patch ``values`` ``(N,)`` as a float32 ``(rows, cols)`` raster, ``fill`` elsewhere."""
        v = np.asarray(values, dtype=np.float32).reshape(-1)
        if len(v) != len(self):
            raise DataError(f"{len(v)} values for {len(self)} patches")
        out = np.full(self.shape, fill, dtype=np.float32)
        out[self.index[:, 0], self.index[:, 1]] = v
        return out

    def label_raster(self, codes: np.ndarray) -> np.ndarray:
        """Category codes ``(N,)`` (``-1`` = none) as labels ``code + 1``, background 0 (int32)."""
        c = np.asarray(codes).reshape(-1)
        if len(c) != len(self):
            raise DataError(f"{len(c)} codes for {len(self)} patches")
        out = np.zeros(self.shape, dtype=np.int32)
        out[self.index[:, 0], self.index[:, 1]] = np.where(c >= 0, c + 1, 0).astype(np.int32)
        return out

    def values_from_raster(self, raster: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`raster`: the ``(N,)`` per-patch values read back from a raster."""
        r = np.asarray(raster)
        if r.shape[:2] != self.shape:
            raise DataError(f"raster shape {r.shape[:2]} does not match the layout {self.shape}")
        return r[self.index[:, 0], self.index[:, 1]]

    # ---- placement ----------------------------------------------------------------------------
    def placement(
        self,
        slide_scale: Sequence[float] = (1.0, 1.0),
        slide_translate: Sequence[float] = (0.0, 0.0),
    ) -> Placement:
        """Scale and translate that put raster pixels exactly over their patches.

        Parameters
        ----------
        slide_scale
            World size ``(y, x)`` of one level-0 pixel of the slide layer (``(mpp, mpp)`` for a
            slide shown in micrometres, ``(1, 1)`` in pixels).
        slide_translate
            World ``(y, x)`` translate of the slide layer.

        Returns
        -------
        :class:`Placement` with ``scale = cell_size * slide_scale`` and the translate of the
        centre of raster pixel ``(0, 0)``.
        """
        return _placement(float(self.cell_size), self.origin, slide_scale, slide_translate)

    # ---- finer maps ---------------------------------------------------------------------------
    @property
    def overlapping(self) -> bool:
        """True when patches overlap (stride below the patch size)."""
        return self.cell_size < self.tile_size_level0

    def fine_raster(self, values: np.ndarray, *, smooth_level0: float = 0.0) -> RasterMap:
        """A map finer than one value per patch: every cell of the overlap lattice gets the mean
        of the patches that cover it, optionally smoothed.

        With overlapping patches (stride ``s`` below the patch size ``t``) the lattice cell is
        ``gcd(s, t)`` level-0 px and an interior cell is covered by ``(t / s)^2`` patches; with
        non-overlapping patches the cells are the patches. ``smooth_level0`` is the standard
        deviation (level-0 px) of a Gaussian applied to covered cells only (NaN-aware: empty
        cells neither receive nor give weight).

        Returns
        -------
        :class:`RasterMap` (float32, NaN outside the tissue).
        """
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(v) != len(self):
            raise DataError(f"{len(v)} values for {len(self)} patches")
        ts = self.tile_size_level0
        cell = math.gcd(int(self.cell_size), ts) if self.overlapping else ts
        k = ts // cell
        mins = self.coords.min(axis=0)
        rc = ((self.coords - mins) // cell).astype(np.int64)  # (x, y) cell of each top-left corner
        rows, cols = int(rc[:, 1].max()) + k, int(rc[:, 0].max()) + k
        if rows * cols > MAX_RASTER_CELLS:
            raise DataError(f"a finer map would need {cols} x {rows} cells; too large")
        total = np.zeros((rows, cols), np.float64)
        count = np.zeros((rows, cols), np.float64)
        ok = np.isfinite(v)
        for dy in range(k):
            for dx in range(k):
                np.add.at(total, (rc[ok, 1] + dy, rc[ok, 0] + dx), v[ok])
                np.add.at(count, (rc[ok, 1] + dy, rc[ok, 0] + dx), 1.0)
        if smooth_level0 > 0:
            from scipy.ndimage import gaussian_filter

            sigma = float(smooth_level0) / cell
            w = (count > 0).astype(np.float64)
            mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
            num = gaussian_filter(mean * w, sigma, mode="constant")
            den = gaussian_filter(w, sigma, mode="constant")
            out = np.where(count > 0, num / np.where(den > 0, den, 1.0), np.nan)
        else:
            out = np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)
        return RasterMap(out.astype(np.float32), cell, (float(mins[0]), float(mins[1])))

    # ---- picking ------------------------------------------------------------------------------
    def patch_at_level0(self, x: float, y: float) -> int | None:
        """Index of the patch drawn at level-0 position ``(x, y)``, or ``None``.

        A point on the boundary between two patches belongs to the right / lower one.
        """
        c = math.floor((float(x) - self.origin[0]) / self.cell_size)
        r = math.floor((float(y) - self.origin[1]) / self.cell_size)
        if not (0 <= r < self.shape[0] and 0 <= c < self.shape[1]):
            return None
        i = int(self._lookup[r, c])
        return i if i >= 0 else None

    def patch_at_world(
        self,
        position: Sequence[float],
        slide_scale: Sequence[float] = (1.0, 1.0),
        slide_translate: Sequence[float] = (0.0, 0.0),
    ) -> int | None:
        """Index of the patch under a world ``(..., y, x)`` position (a viewer click), or ``None``."""
        x, y = world_to_level0(position, slide_scale, slide_translate)
        return self.patch_at_level0(x, y)


@dataclass(frozen=True)
class RasterMap:
    """A map raster with its own lattice: ``data`` (rows, cols), the level-0 side of a ``cell``
    and the level-0 ``origin`` ``(x, y)`` of the top-left corner of cell ``(0, 0)``."""

    data: np.ndarray
    cell: float
    origin: tuple[float, float]

    def placement(self, slide_scale: Sequence[float] = (1.0, 1.0),
                  slide_translate: Sequence[float] = (0.0, 0.0)) -> Placement:
        """Scale and translate that put the cells over the slide (as :meth:`PatchLayout.placement`)."""
        return _placement(float(self.cell), self.origin, slide_scale, slide_translate)

    def contours(self, level: float) -> list[np.ndarray]:
        """:func:`contour_paths` of this raster at ``level``."""
        return contour_paths(self.data, level, cell=self.cell, origin=self.origin)


def contour_paths(raster: np.ndarray, level: float, *, cell: float, origin: Sequence[float]) -> list[np.ndarray]:
    """Iso-lines of a map raster at ``level`` as level-0 ``(K, 2)`` ``(x, y)`` polylines.

    Cells without a value (NaN) are left out (:func:`skimage.measure.find_contours` with a
    mask), so lines stop at the tissue edge instead of circling every patch. A cell's value sits
    at its centre.
    """
    from skimage.measure import find_contours

    r = np.asarray(raster, np.float64)
    mask = np.isfinite(r)
    if mask.sum() < 2 or not np.isfinite(level):
        return []
    lines = find_contours(np.where(mask, r, np.nanmin(r)), float(level), mask=mask)
    ox, oy = (float(v) for v in origin)
    return [np.stack([ox + (ln[:, 1] + 0.5) * cell, oy + (ln[:, 0] + 0.5) * cell], axis=1)
            for ln in lines if len(ln) >= 2]


def _placement(cell: float, origin: Sequence[float], slide_scale: Sequence[float],
               slide_translate: Sequence[float]) -> Placement:
    sy, sx = (float(v) for v in slide_scale[-2:])
    ty, tx = (float(v) for v in slide_translate[-2:])
    ox, oy = (float(v) for v in origin)
    return Placement(scale=(cell * sy, cell * sx),
                     translate=(ty + sy * (oy + cell / 2.0 - 0.5), tx + sx * (ox + cell / 2.0 - 0.5)))


def world_to_level0(
    position: Sequence[float],
    slide_scale: Sequence[float] = (1.0, 1.0),
    slide_translate: Sequence[float] = (0.0, 0.0),
) -> tuple[float, float]:
    """World ``(..., y, x)`` to continuous level-0 ``(x, y)`` (OpenSlide convention)."""
    wy, wx = (float(v) for v in position[-2:])
    sy, sx = (float(v) for v in slide_scale[-2:])
    ty, tx = (float(v) for v in slide_translate[-2:])
    return (wx - tx) / sx + 0.5, (wy - ty) / sy + 0.5


def level0_to_world(
    xy: Sequence[float],
    slide_scale: Sequence[float] = (1.0, 1.0),
    slide_translate: Sequence[float] = (0.0, 0.0),
) -> tuple[float, float]:
    """Continuous level-0 ``(x, y)`` to world ``(y, x)``; inverse of :func:`world_to_level0`."""
    x, y = (float(v) for v in xy)
    sy, sx = (float(v) for v in slide_scale[-2:])
    ty, tx = (float(v) for v in slide_translate[-2:])
    return ty + sy * (y - 0.5), tx + sx * (x - 0.5)


def _axis_gcd(v: np.ndarray) -> int:
    d = np.diff(np.unique(v))
    return int(np.gcd.reduce(d)) if d.size else 0


def _infer_stride(xy: np.ndarray, ts: int) -> int:
    gx, gy = _axis_gcd(xy[:, 0]), _axis_gcd(xy[:, 1])
    g = math.gcd(gx, gy)
    if g == 0:
        return ts
    if g % ts == 0:  # non-overlapping patches with gaps between them
        return ts
    if g * 8 < ts:  # a tiny common divisor: not a lattice, snap to the patch size
        return ts
    return g
