"""Feature bags read from disk on demand, so a cohort trains in bounded memory.

A TCGA-sized cohort (1,000 slides x 20k patches x 1,024-d float32) is 80 GB of features; holding
every bag in memory does not fit a 24 GB machine. :class:`LazyBags` is a sequence of a cohort's
patient bags (one or several HDF5 bags per patient, concatenated) that reads a bag only when
it is indexed, and reads only the requested rows when patches are sampled
(:meth:`LazyBags.read`), so training touches one batch of patches at a time.

It behaves like a list of ``(n_i, D)`` float32 arrays (``len``, indexing, iteration, ``shape``
of every bag without reading it: :attr:`LazyBags.shapes`), so every model accepts it;
:func:`take` makes index views without reading anything.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from histoviz.io.featurebag import FeatureBag
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> for i in range(2):
...     _ = FeatureBag(np.zeros((3 + i, 2), np.int64), np.full((3 + i, 4), i, np.float32),
...                    {"tile_size_level0": 224}).to_h5(d / f"s{i}.h5")
>>> bags = LazyBags([[d / "s0.h5"], [d / "s1.h5"]])
>>> bags.shapes, bags[1].shape, float(bags.read(1, [0, 2]).sum())
([(3, 4), (4, 4)], (4, 4), 8.0)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histoviz.errors import DataError

__all__ = ["LazyBags", "bag_shapes", "take"]


class LazyBags(Sequence):
    """Patient bags backed by HDF5 files (see the module docstring).

    Parameters
    ----------
    files
        One list of ``<slide_id>.h5`` paths per patient (their patches are concatenated).
    """

    def __init__(self, files: Sequence[Sequence[str | os.PathLike]], *, _shapes: list[tuple[int, int]] | None = None,
                 _rows: list[list[int]] | None = None) -> None:
        import h5py

        self.files = [[Path(p) for p in fs] for fs in files]
        if _shapes is None:
            self._rows = []
            shapes = []
            for fs in self.files:
                counts, dims = [], set()
                for p in fs:
                    try:
                        with h5py.File(p, "r") as f:
                            ds = f["features"]
                            shp = ds.shape[1:] if ds.ndim == 3 else ds.shape
                    except (OSError, KeyError) as e:
                        raise DataError(f"{p}: not a readable feature bag ({e})") from e
                    counts.append(int(shp[0]))
                    dims.add(int(shp[1]))
                if len(dims) > 1:
                    raise DataError(f"{fs}: bags of one patient have different feature dimensions {sorted(dims)}")
                self._rows.append(counts)
                shapes.append((int(sum(counts)), dims.pop() if dims else 0))
            self.shapes = shapes
        else:
            self.shapes = list(_shapes)
            self._rows = [list(r) for r in (_rows or [])]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return take(self, np.arange(len(self))[i])
        return self.read(int(i))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.read(i)

    @property
    def nbytes(self) -> int:
        """Bytes of all bags as float32 (what eager loading would hold)."""
        return int(sum(n * d * 4 for n, d in self.shapes))

    def read(self, i: int, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Bag ``i`` as float32 ``(n, D)``, or only ``rows`` of it (indices into the concatenated
        bag, any order; read from disk in sorted order)."""
        import h5py

        if not -len(self) <= i < len(self):
            raise IndexError(f"bag {i} out of range 0..{len(self) - 1}")
        i = i % len(self)
        fs, counts = self.files[i], self._rows[i]
        if rows is None:
            parts = []
            for p in fs:
                with h5py.File(p, "r") as f:
                    x = f["features"][()]
                parts.append(x[0] if x.ndim == 3 else x)
            return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        r = np.asarray(rows, dtype=np.int64)
        order = np.argsort(r, kind="stable")
        rs = r[order]
        out = np.empty((len(r), self.shapes[i][1]), np.float32)
        start = 0
        for p, n in zip(fs, counts):
            lo, hi = np.searchsorted(rs, [start, start + n])
            if hi > lo:
                local = rs[lo:hi] - start
                uniq, inv = np.unique(local, return_inverse=True)
                with h5py.File(p, "r") as f:
                    ds = f["features"]
                    x = ds[0, uniq] if ds.ndim == 3 else ds[uniq]
                out[order[lo:hi]] = np.asarray(x, np.float32)[inv]
            start += n
        return out


class _View(LazyBags):
    """Index view of a :class:`LazyBags` (no reading)."""

    def __init__(self, base: LazyBags, idx: np.ndarray) -> None:
        self.base = base
        self.idx = np.asarray(idx, dtype=np.int64)
        self.files = [base.files[j] for j in self.idx]
        self.shapes = [base.shapes[j] for j in self.idx]
        self._rows = [base._rows[j] for j in self.idx]


def take(bags: Sequence[Any], idx: Sequence[int] | np.ndarray) -> Sequence[Any]:
    """``bags[idx]``: a lazy view for :class:`LazyBags`, a list otherwise."""
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(bags, LazyBags):
        return _View(bags, idx)
    return [bags[int(i)] for i in idx]


def bag_shapes(bags: Sequence[Any]) -> list[tuple[int, ...]]:
    """Shapes of every bag without reading lazy ones."""
    if isinstance(bags, LazyBags):
        return list(bags.shapes)
    return [tuple(getattr(b, "shape", ())) for b in bags]
