"""Tiles decoded on the encoder's device: the slide's own JPEG tiles go to the GPU compressed.

On CUDA, cheap encoders are host-bound: decoding JPEG on CPU cores cannot keep up with the
forward pass. :class:`DeviceTileBatches` reads the stored JPEG tiles a batch of grid tiles
needs (a few bytes each, positional reads), decodes them together with
``torchvision.io.decode_jpeg(..., device=...)`` (nvJPEG on CUDA), and cuts, assembles and
resizes the grid tiles on the device. The same code runs on CPU (libjpeg-turbo in
torchvision), which is how it is tested without a GPU; on CPU the default path stays the
DataLoader one.

Before use, one stored tile is decoded both ways and compared with the CPU reader; a decoder
that disagrees (e.g. about the colour transform) disables the device path with a log line.
Importing this module imports torch.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader
    from histoviz.tiling.grid import TileGrid

__all__ = ["DeviceTileBatches", "device_decode_supported"]

log = logging.getLogger(__name__)


def device_decode_supported(reader: SlideReader, grid: TileGrid) -> bool:
    """True when the grid's tiles come from a level stored as JPEG tiles."""
    level = reader.best_level_for_downsample(grid.downsample)
    return reader.jpeg_tiles(level) is not None


class DeviceTileBatches:
    """Batches of grid tiles decoded and assembled on ``device``.

    Parameters
    ----------
    reader
        The slide (a backend with :meth:`~histoviz.io.SlideReader.jpeg_tiles`).
    grid
        Tiles to produce.
    device
        ``torch.device`` to decode on (``cuda:N``; ``cpu`` for tests).
    verify
        Compare one decoded stored tile with the CPU reader first (raise ``ValueError`` if
        they differ by more than 2 grey levels).

    Raises
    ------
    ValueError
        The level is not stored as JPEG tiles, or the device decoder disagrees.
    """

    def __init__(self, reader: SlideReader, grid: TileGrid, device: torch.device, *,
                 verify: bool = True) -> None:
        from histoviz.io.slide import MPP_TOLERANCE

        self.reader, self.grid, self.device = reader, grid, torch.device(device)
        self.level = reader.best_level_for_downsample(grid.downsample)
        src = reader.jpeg_tiles(self.level)
        if src is None:
            raise ValueError(f"{reader.path}: level {self.level} is not stored as JPEG tiles")
        self.src = src
        self.lds = reader.level_downsamples[self.level]
        rel = grid.downsample / self.lds
        ts = grid.tile_size
        self.src_size = ts if abs(rel - 1) <= MPP_TOLERANCE else max(1, round(ts * rel))
        self._cache: dict[tuple[int, int], torch.Tensor] = {}
        self._weights: dict[tuple, torch.Tensor] = {}
        if verify and len(grid):
            self._verify()

    def _decode(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        from histoviz.errors import SlideOpenError

        streams, order, out = [], [], {}
        for k in keys:
            s = self.src.jpeg_stream(*k)
            if s is None:  # sparse tile: white
                out[k] = torch.full((3, self.src.th, self.src.tw), 255, dtype=torch.uint8,
                                    device=self.device)
            else:
                streams.append(torch.frombuffer(bytearray(s), dtype=torch.uint8))
                order.append(k)
        if streams:
            try:
                dec = decode_jpeg(streams, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError as e:
                raise SlideOpenError(f"{self.reader.path}: cannot decode JPEG tiles on "
                                     f"{self.device} ({e}); the file is corrupt or truncated") from e
            out.update(zip(order, dec))
        return out

    def _verify(self) -> None:
        x, y = (int(v) for v in self.grid.coords[0])
        k = (int(math.floor(x / self.lds)) // self.src.tw, int(math.floor(y / self.lds)) // self.src.th)
        k = (min(k[0], self.src.ntx - 1), min(k[1], self.src.nty - 1))
        got = self._decode([k])[k].permute(1, 2, 0).cpu().numpy().astype(np.int16)
        want = self.src._tile(*k).astype(np.int16)
        h, w = min(got.shape[0], want.shape[0]), min(got.shape[1], want.shape[1])
        diff = int(np.abs(got[:h, :w] - want[:h, :w]).max()) if h and w else 0
        if diff > 2:
            raise ValueError(f"{self.reader.path}: the JPEG decoder on {self.device} differs from "
                             f"the CPU decoder by up to {diff} grey levels")

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Grid tiles ``start:stop`` as uint8 ``(B, 3, tile_size, tile_size)`` on the device."""
        src, lw, lh = self.src, self.src.w, self.src.h
        sz = self.src_size
        boxes = []
        need: set[tuple[int, int]] = set()
        for x0, y0 in self.grid.coords[start:stop]:
            x, y = int(math.floor(int(x0) / self.lds)), int(math.floor(int(y0) / self.lds))
            cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + sz, lw), min(y + sz, lh)
            boxes.append((x, y, cx0, cy0, cx1, cy1))
            if cx1 > cx0 and cy1 > cy0:
                for ty in range(cy0 // src.th, (cy1 - 1) // src.th + 1):
                    for tx in range(cx0 // src.tw, (cx1 - 1) // src.tw + 1):
                        need.add((tx, ty))
        missing = sorted(k for k in need if k not in self._cache)
        decoded = {k: v for k, v in self._cache.items() if k in need}
        decoded.update(self._decode(missing))
        self._cache = decoded  # keep this batch's tiles: the next batch shares its borders
        out = torch.full((stop - start, 3, sz, sz), 255, dtype=torch.uint8, device=self.device)
        for i, (x, y, cx0, cy0, cx1, cy1) in enumerate(boxes):
            for ty in range(cy0 // src.th, (cy1 - 1) // src.th + 1) if cy1 > cy0 else ():
                for tx in range(cx0 // src.tw, (cx1 - 1) // src.tw + 1) if cx1 > cx0 else ():
                    t = decoded[(tx, ty)]
                    sx0, sx1 = max(cx0, tx * src.tw), min(cx1, (tx + 1) * src.tw)
                    sy0, sy1 = max(cy0, ty * src.th), min(cy1, (ty + 1) * src.th)
                    out[i, :, sy0 - y : sy1 - y, sx0 - x : sx1 - x] = t[
                        :, sy0 - ty * src.th : sy1 - ty * src.th, sx0 - tx * src.tw : sx1 - tx * src.tw]
        ts = self.grid.tile_size
        if sz != ts:
            if sz > ts:  # exact area average (PIL's BOX filter): separable weight matrices
                w = self._box_weights(sz, ts)
                out = torch.matmul(torch.matmul(w, out.float()), w.T)
            else:
                out = torch.nn.functional.interpolate(out.float(), size=(ts, ts), mode="bilinear",
                                                      align_corners=False)
            out = out.round_().clamp_(0, 255).to(torch.uint8)
        return out

    def _box_weights(self, n_in: int, n_out: int) -> torch.Tensor:
        """``(n_out, n_in)`` matrix of PIL's BOX filter (the CPU path's resize).

        Each output pixel averages the input pixels whose centres fall in its extent, as
        Pillow's ``ImagingResample`` computes its coefficients.
        """
        key = ("box", n_in, n_out)
        w = self._weights.get(key)
        if w is None:
            scale = n_in / n_out
            support = 0.5 * scale
            m = np.zeros((n_out, n_in))
            for xx in range(n_out):
                center = (xx + 0.5) * scale
                xmin = max(int(center - support + 0.5), 0)
                xmax = min(int(center + support + 0.5), n_in)
                x = np.arange(xmin, xmax)
                u = (x - center + 0.5) / scale
                wts = ((u > -0.5) & (u <= 0.5)).astype(float)
                if wts.sum() > 0:
                    m[xx, xmin:xmax] = wts / wts.sum()
            w = torch.as_tensor(m, dtype=torch.float32, device=self.device)
            self._weights[key] = w
        return w
