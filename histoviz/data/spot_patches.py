"""Spot patches as pixels, read from the slides on demand (models that train their image side).

Models with a frozen image side read spot *features* (:func:`~histoviz.data.spatial.embed_spot_sample`).
A model that trains its image encoder on the patches themselves (CMRCNet / BLEEP with
``image_encoder=...``) reads pixels instead, through one of these sources:

- :class:`SpotPatchStore` cuts one patch per spot with the same grid
  (:func:`~histoviz.data.spatial.spot_grid`) and the same reader call
  (:func:`~histoviz.tiling.dataset.read_tile`) that spot embedding and ``histoviz predict`` use,
  so a model sees the same pixels in training, in evaluation and in prediction. It holds **at
  most** ``cache_bytes`` of decoded patches (least recently used evicted; 224 px patches are
  147 KiB each, so the default 512 MiB keeps about 3,600) and at most ``max_open`` open slides;
  beyond that, patches are read from the slides again in every epoch. Nothing else is held:
  memory is bounded whatever the number of samples and spots.
- :class:`SpotPatches` is a view of a store: an ordered list of ``(sample, spot rows)`` with
  ``len`` and ``read(indices) -> uint8 (n, 3, H, W)``; the spot runner hands these to models.
- :class:`ArrayPatches` wraps patches already in memory (a ``uint8`` array ``(n, 3, H, W)`` or
  ``(n, H, W, 3)``), for the estimator API and tests.

:func:`as_patches` turns either into a source and rejects anything else with a one-line error.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import DataError

if TYPE_CHECKING:
    from histoviz.data.spatial import PatchSpec, SpotSample

__all__ = ["ArrayPatches", "SpotPatchStore", "SpotPatches", "as_patches", "is_patch_source"]

log = logging.getLogger(__name__)


class SpotPatchStore:
    """Reads the spot patches of several samples from their slides, with a bounded cache.

    Parameters
    ----------
    samples
        The spot samples (:class:`~histoviz.data.spatial.SpotSample`).
    patch
        How a patch is cut (:class:`~histoviz.data.spatial.PatchSpec`).
    cache_bytes
        Most bytes of decoded patches kept in memory (0: none).
    max_open
        Most slides open at a time.
    """

    def __init__(self, samples: Sequence[SpotSample], patch: PatchSpec, *, cache_bytes: int = 512 << 20,
                 max_open: int = 4) -> None:
        self.samples = list(samples)
        self.patch = patch
        self.cache_bytes = max(0, int(cache_bytes))
        self.max_open = max(1, int(max_open))
        sizes = {patch.sizes(s)[0] for s in self.samples}
        if len(sizes) > 1:
            raise DataError(f"spot patches of {patch.describe()} have different pixel sizes across samples "
                            f"({sorted(sizes)}); give data.spots.patch a fixed size_um and mpp")
        self.tile_px = sizes.pop() if sizes else int(patch.tile_px)
        self._grids: dict[int, Any] = {}
        self._readers: OrderedDict[int, Any] = OrderedDict()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached = 0
        self.reads = 0  # patches read from slides (cache misses), for tests and logs

    def __len__(self) -> int:
        return sum(len(s) for s in self.samples)

    @property
    def patch_bytes(self) -> int:
        """Bytes of one decoded patch."""
        return 3 * self.tile_px * self.tile_px

    def _reader(self, i: int) -> Any:
        r = self._readers.get(i)
        if r is not None:
            self._readers.move_to_end(i)
            return r
        from histoviz.data.spatial import spot_grid
        from histoviz.io import open_slide

        s = self.samples[i]
        r = open_slide(s.slide_path)
        if s.mpp and not r.mpp:
            r.with_mpp(s.mpp)
        self._readers[i] = r
        if i not in self._grids:
            self._grids[i] = spot_grid(s, self.patch, dimensions=tuple(int(v) for v in r.dimensions))
        while len(self._readers) > self.max_open:
            _, old = self._readers.popitem(last=False)
            old.close()
        return r

    def read(self, i: int, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """``uint8 (len(rows), 3, H, W)``: the patches of spots ``rows`` of sample ``i``."""
        from histoviz.tiling.dataset import read_tile

        rows = np.asarray(rows, np.int64).ravel()
        out = np.empty((len(rows), 3, self.tile_px, self.tile_px), np.uint8)
        for j, r in enumerate(rows.tolist()):
            key = (int(i), int(r))
            t = self._cache.get(key)
            if t is None:
                reader = self._reader(int(i))
                t = np.ascontiguousarray(np.asarray(read_tile(reader, self._grids[int(i)], int(r))).transpose(2, 0, 1))
                self.reads += 1
                if self.cache_bytes >= t.nbytes:
                    self._cache[key] = t
                    self._cached += t.nbytes
                    while self._cached > self.cache_bytes:
                        _, old = self._cache.popitem(last=False)
                        self._cached -= old.nbytes
            else:
                self._cache.move_to_end(key)
            out[j] = t
        return out

    def view(self, parts: Sequence[tuple[int, np.ndarray]]) -> SpotPatches:
        """A :class:`SpotPatches` over ``[(sample index, spot rows), ...]`` in that order."""
        return SpotPatches(self, parts)

    def close(self) -> None:
        """Close the open slides and drop the cache."""
        while self._readers:
            _, r = self._readers.popitem()
            r.close()
        self._cache.clear()
        self._cached = 0

    def __del__(self) -> None:  # readers hold file handles
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class SpotPatches:
    """An ordered selection of spot patches of a :class:`SpotPatchStore` (see the module docstring).

    Attributes
    ----------
    store
        The store that reads them.
    sample, row
        ``(n,)`` sample index and spot row of each patch.
    """

    def __init__(self, store: SpotPatchStore, parts: Sequence[tuple[int, np.ndarray]]) -> None:
        self.store = store
        parts = [(int(i), np.asarray(r, np.int64).ravel()) for i, r in parts]
        self.sample = np.concatenate([np.full(len(r), i, np.int64) for i, r in parts]) if parts \
            else np.zeros(0, np.int64)
        self.row = np.concatenate([r for _, r in parts]) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.row)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(n, 3, H, W)``."""
        t = self.store.tile_px
        return (len(self), 3, t, t)

    def read(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """``uint8 (len(idx), 3, H, W)`` in the order of ``idx`` (positions in this view)."""
        idx = np.asarray(idx, np.int64).ravel()
        out = np.empty((len(idx), 3, self.store.tile_px, self.store.tile_px), np.uint8)
        smp = self.sample[idx]
        for i in np.unique(smp):
            sel = np.flatnonzero(smp == i)
            out[sel] = self.store.read(int(i), self.row[idx[sel]])
        return out

    def subset(self, idx: Sequence[int] | np.ndarray) -> SpotPatches:
        """The patches at positions ``idx`` of this view (a view again; nothing is read)."""
        idx = np.asarray(idx, np.int64).ravel()
        v = SpotPatches(self.store, [])
        v.sample, v.row = self.sample[idx], self.row[idx]
        return v


class ArrayPatches:
    """Patches already in memory: ``uint8 (n, 3, H, W)`` or ``(n, H, W, 3)`` (converted once)."""

    def __init__(self, images: np.ndarray, *, where: str = "spot patches") -> None:
        a = np.asarray(images)
        if a.ndim != 4 or (a.shape[1] != 3 and a.shape[-1] != 3):
            raise DataError(f"{where}: expected RGB images (n, 3, H, W) or (n, H, W, 3), got shape {a.shape}")
        if a.dtype != np.uint8:
            raise DataError(f"{where}: expected uint8 pixels (0-255), got {a.dtype}")
        if a.shape[1] != 3:
            a = a.transpose(0, 3, 1, 2)
        self.images = np.ascontiguousarray(a)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(n, 3, H, W)``."""
        return tuple(self.images.shape)

    def read(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """``uint8 (len(idx), 3, H, W)``."""
        return self.images[np.asarray(idx, np.int64).ravel()]

    def subset(self, idx: Sequence[int] | np.ndarray) -> ArrayPatches:
        """The patches at positions ``idx``."""
        return ArrayPatches(self.images[np.asarray(idx, np.int64).ravel()])


def is_patch_source(x: Any) -> bool:
    """Whether ``x`` holds images (a patch source or a 4-D array), not a feature matrix."""
    if hasattr(x, "read") and hasattr(x, "subset") and hasattr(x, "__len__"):
        return True
    return isinstance(x, np.ndarray) and x.ndim == 4


def as_patches(x: Any, where: str = "spot patches") -> Any:
    """A patch source for ``x`` (a :class:`SpotPatches`, an :class:`ArrayPatches`, or a 4-D uint8 array).

    Raises
    ------
    DataError
        ``x`` is a feature matrix or anything else that holds no images, or holds none at all.
    """
    src = x if (hasattr(x, "read") and hasattr(x, "subset")) else None
    if src is None:
        if not (isinstance(x, np.ndarray) and x.ndim == 4):
            shape = getattr(x, "shape", None)
            raise DataError(f"{where}: this model trains its image encoder on spot patches and needs images "
                            f"(uint8 (n, 3, H, W) or SpotPatches), got {type(x).__name__}"
                            f"{'' if shape is None else f' of shape {tuple(shape)}'}")
        src = ArrayPatches(x, where=where)
    if len(src) == 0:
        raise DataError(f"{where}: no patches")
    return src
