"""Lazy display pyramids for viewers (napari multiscale, tiled web views).

:func:`display_levels` returns a slide's pyramid as :class:`LevelArray` objects: read-only,
array-like ``(H, W, 3)`` uint8 levels whose indexing reads only the requested region through
the slide reader (and its tile cache). Creating them costs nothing, whatever the slide size
(a dask graph with one task per 1024-px chunk takes seconds to build for a 100k-px slide),
and a viewer drawing a screenful makes one read per level instead of one per chunk.

A slide file without coarse levels (a single-level SVS, a plain TIFF) gets virtual 2x levels,
read with :meth:`~histoviz.io.slide.SlideReader.read_region_downsample`, until the coarsest
fits in ``max_coarse_side`` pixels, so an overview never reads the full-resolution image.

Examples
--------
>>> import numpy as np
>>> from histoviz.io import open_slide
>>> img = np.arange(64 * 96 * 3, dtype=np.uint8).reshape(64, 96, 3)
>>> levels = display_levels(open_slide(img, mpp=0.5), max_coarse_side=32)
>>> [lv.shape for lv in levels]
[(64, 96, 3), (32, 48, 3), (16, 24, 3)]
>>> bool((levels[0][10:20, 5:9] == img[10:20, 5:9]).all())
True
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader

__all__ = ["LevelArray", "display_levels"]

logger = logging.getLogger(__name__)


class LevelArray:
    """One pyramid level of a slide as a lazy, read-only ``(H, W, 3)`` uint8 array.

    Parameters
    ----------
    reader
        The open slide.
    level
        A level of the file; or ``None`` with ``downsample`` for a virtual level.
    downsample
        Integer level-0 pixels per pixel of a virtual level.

    Notes
    -----
    Supports what viewers use: ``shape``, ``dtype``, ``ndim``, ``size``, ``len()``, basic
    indexing with integers and slices (steps included) and ``np.asarray``.
    """

    def __init__(self, reader: SlideReader, level: int | None = None, *,
                 downsample: int | None = None) -> None:
        self.reader = reader
        self.level = level
        w0, h0 = reader.dimensions
        if level is not None:
            w, h = reader.level_dimensions[level]
            self.downsample = float(reader.level_downsamples[level])
        else:
            if not downsample or downsample < 1:
                raise ValueError(f"a virtual level needs an integer downsample >= 1, got {downsample}")
            self.downsample = float(downsample)
            w, h = max(1, w0 // int(downsample)), max(1, h0 // int(downsample))
        self.shape: tuple[int, int, int] = (int(h), int(w), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes if read in full."""
        return self.size

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        kind = f"level {self.level}" if self.level is not None else f"virtual 1/{self.downsample:g}"
        return f"LevelArray({self.reader.slide_id!r}, {kind}, shape={self.shape})"

    def _read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if w <= 0 or h <= 0:
            return np.zeros((max(h, 0), max(w, 0), 3), np.uint8)
        # the smallest level-0 position that maps back to (x, y) at this level's downsample
        loc = (math.ceil(x * self.downsample - 1e-9), math.ceil(y * self.downsample - 1e-9))
        if self.level is not None:
            return self.reader.read_region(loc, self.level, (w, h))
        return self.reader.read_region_downsample(loc, (w, h), self.downsample)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (3 - (len(key) - 1)) + key[i + 1 :]
        if len(key) > 3:
            raise IndexError(f"too many indices for a 3-d level: {key}")
        key = key + (slice(None),) * (3 - len(key))
        ky, kx, kc = key
        sel = []
        box = []
        for k, n in ((ky, self.shape[0]), (kx, self.shape[1])):
            if isinstance(k, (int, np.integer)):
                i = int(k) + (n if k < 0 else 0)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} out of bounds for axis of size {n}")
                box.append((i, i + 1))
                sel.append(0)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step < 0:
                    raise IndexError("negative steps are not supported by slide levels")
                box.append((start, max(start, stop)))
                sel.append(slice(None, None, step))
            else:
                raise TypeError(f"slide levels support integer and slice indexing, got {type(k).__name__}")
        (y0, y1), (x0, x1) = box
        out = self._read(x0, y0, x1 - x0, y1 - y0)
        return out[sel[0], sel[1]][..., kc]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.size > 2**30:
            logger.warning("reading a %s x %s level in full (%.1f GB)", self.shape[1], self.shape[0],
                           self.size / 2**30)
        arr = self[:, :, :]
        return arr.astype(dtype) if dtype is not None else arr


def display_levels(reader: SlideReader, *, max_coarse_side: int = 1024) -> list[LevelArray]:
    """Pyramid levels of a slide for display, finest first, as lazy :class:`LevelArray`.

    Parameters
    ----------
    reader
        An open slide.
    max_coarse_side
        Add 2x-downsampled virtual levels until the coarsest level's longer side is at most
        this many pixels.

    Returns
    -------
    The file's levels (those whose longer side is at least 256 px, and always level 0), then
    virtual ones. Level ``k``'s downsample is level 0's shape over its shape.
    """
    levels = [LevelArray(reader, 0)]
    for i in range(1, reader.level_count):
        if max(reader.level_dimensions[i]) < 256:
            break
        levels.append(LevelArray(reader, i))
    w0 = reader.dimensions[0]
    while max(levels[-1].shape[:2]) > max_coarse_side:
        ds = max(2, int(round(w0 / levels[-1].shape[1])) * 2)
        levels.append(LevelArray(reader, downsample=ds))
    return levels
