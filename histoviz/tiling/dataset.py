"""Torch datasets that read tiles lazily (each DataLoader worker opens its own reader).

Importing this module imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from histoviz.tiling.grid import TileGrid, read_tile

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader

__all__ = ["TileBatchIterable", "TileDataset", "read_tile", "tile_collate"]


class _ReaderMixin:
    _reader: SlideReader | None
    _reopen: dict[str, Any]
    _pid: int = -1

    def _get_reader(self) -> SlideReader:
        """The reader, reopened once in each worker process (file handles are not shared)."""
        reopenable = self._reopen.get("path_or_array") is not None and not isinstance(
            self._reopen["path_or_array"], np.ndarray
        )
        if self._reader is None or (reopenable and self._pid != os.getpid()):
            from histoviz.io import open_slide

            self._reader = open_slide(**self._reopen)
            self._pid = os.getpid()
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._reopen.get("path_or_array") is not None and not isinstance(
            self._reopen["path_or_array"], np.ndarray
        ):
            state["_reader"] = None  # reopened lazily in the worker process
        return state


def tile_collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate ``(uint8 (H, W, 3) array, index)`` items into ``(uint8 (B, 3, H, W), (B,))``.

    Stacks the contiguous ``(H, W, 3)`` buffers with numpy (one copy) and permutes once (a
    view): ``torch.stack`` over channel-first views is two orders of magnitude slower (a
    strided copy per element), and torch's intra-op thread pool stalls on a busy machine.
    """
    tiles = torch.from_numpy(np.stack([np.asarray(t) for t, _ in batch]))
    return tiles.permute(0, 3, 1, 2), torch.tensor([i for _, i in batch])


class TileDataset(_ReaderMixin, Dataset):
    """Map-style dataset of ``(tile, index)``.

    Parameters
    ----------
    reader
        The slide (reopened lazily in each worker from its path).
    grid
        Tiles to read.
    transform
        Callable applied to the RGB uint8 ``(H, W, 3)`` tile (default: none, the array itself,
        possibly read-only). Without a transform, use :func:`tile_collate` as the DataLoader's
        ``collate_fn``: it yields ``uint8 (B, 3, H, W)`` batches that every
        :class:`~histoviz.features.PatchEncoder` accepts.
    """

    def __init__(
        self, reader: SlideReader, grid: TileGrid, transform: Callable[[np.ndarray], Any] | None = None
    ) -> None:
        self._reader = reader
        self._reopen = reader.reopen_args()
        self._pid = os.getpid()
        self.grid = grid
        self.transform = transform

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        tile = read_tile(self._get_reader(), self.grid, int(i))
        if self.transform is not None:
            return self.transform(tile), int(i)
        return tile, int(i)


class TileBatchIterable(_ReaderMixin, IterableDataset):
    """Iterable of contiguous batches ``(uint8 tensor (B, 3, H, W), start)`` for ``embed_slide``.

    Work is split into contiguous runs of rows of the lattice, handed to DataLoader workers
    round-robin, so each worker sweeps its own band in row-major order and decodes each
    stored slide tile once (the readers' tile cache holds the band's tiles).
    """

    def __init__(self, reader: SlideReader, grid: TileGrid, batch_size: int, *, chunk_batches: int = 4,
                 threads: int = 1):
        self._reader = reader
        self._reopen = reader.reopen_args()
        self._pid = os.getpid()
        self.grid = grid
        self.batch_size = int(batch_size)
        self.chunk = self.batch_size * max(1, chunk_batches)
        self.threads = max(1, int(threads))

    def __len__(self) -> int:
        return -(-len(self.grid) // self.batch_size)

    def _chunks(self) -> list[tuple[int, int]]:
        n = len(self.grid)
        return [(s, min(s + self.chunk, n)) for s in range(0, n, self.chunk)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = self._get_reader()
        ts = self.grid.tile_size
        pool = None
        if self.threads > 1:  # decoders (OpenSlide, libjpeg-turbo) release the GIL
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(self.threads)
        try:
            for ci, (s, e) in enumerate(self._chunks()):
                if ci % nw != wid:
                    continue
                for b in range(s, e, self.batch_size):
                    be = min(b + self.batch_size, e)
                    # in a DataLoader worker the batch goes to shared memory anyway: allocate it
                    # there, so handing it to the main process costs no copy
                    t = torch.empty((be - b, ts, ts, 3), dtype=torch.uint8)
                    if info is not None:
                        t.share_memory_()
                    out = t.numpy()

                    def fill(j: int, out: np.ndarray = out, b: int = b) -> None:
                        out[j - b] = read_tile(reader, self.grid, j)

                    if pool is None:
                        for j in range(b, be):
                            fill(j)
                    else:
                        list(pool.map(fill, range(b, be)))
                    yield t.permute(0, 3, 1, 2), b
        finally:
            if pool is not None:
                pool.shutdown()
