"""``embed_slide``: stream the tiles of a slide through an encoder into a feature bag."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import Cancelled
from histoviz.io.featurebag import FeatureBag, FeatureBagWriter

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    import torch

    from histoviz.features.encoders import PatchEncoder
    from histoviz.io.slide import SlideReader
    from histoviz.tiling.grid import TileGrid, TilingConfig

__all__ = ["EmbedStats", "embed_slide", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(device: str | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class EmbedStats:
    """Timing of one ``embed_slide`` call."""

    n_tiles: int = 0
    seconds: float = 0.0
    seconds_forward: float = 0.0

    @property
    def tiles_per_s(self) -> float:
        """Throughput of the whole call."""
        return self.n_tiles / self.seconds if self.seconds > 0 else float("nan")


def embed_slide(
    reader: SlideReader,
    encoder: PatchEncoder | str,
    grid: TileGrid | None = None,
    *,
    tiling: TilingConfig | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = "auto",
    amp: bool = True,
    progress: bool = False,
    progress_callback: Callable[[int, int], None] | None = None,
    cancel_event: threading.Event | None = None,
    stats: EmbedStats | None = None,
) -> FeatureBag | Path:
    """Embed every tile of a slide.

    Parameters
    ----------
    reader
        An open slide.
    encoder
        A :class:`PatchEncoder` or a registry name.
    grid
        Tiles to embed; computed from ``tiling`` when omitted.
    tiling
        Tiling configuration (default 224 px at 0.5 um/px).
    out
        When given, features stream into this HDF5 file (written atomically) and its path is
        returned; otherwise a :class:`FeatureBag` is returned.
    batch_size, num_workers
        DataLoader settings; workers decode tiles in parallel, each sweeping its own band of
        the slide.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    amp
        bfloat16 autocast on CUDA.
    progress
        Show a tqdm progress bar.
    progress_callback
        ``callback(done, total)`` after every batch (for GUIs).
    cancel_event
        Checked between batches; when set, :class:`~histoviz.errors.Cancelled` is raised and
        nothing is written.
    stats
        Filled with timings when given.

    Returns
    -------
    :class:`FeatureBag` (``out is None``) or the path of the written ``.h5``.
    """
    import torch
    from torch.utils.data import DataLoader

    from histoviz.features.encoders import create_encoder
    from histoviz.tiling.dataset import TileBatchIterable
    from histoviz.tiling.grid import make_tile_grid

    t0 = time.perf_counter()
    if isinstance(encoder, str):
        encoder = create_encoder(encoder)
    if grid is None:
        grid = make_tile_grid(reader, tiling)
    dev = resolve_device(device)
    encoder = encoder.to(dev).eval()
    attrs: dict[str, Any] = {
        "slide_id": reader.slide_id,
        "encoder": encoder.name,
        "encoder_weights": encoder.weights_source,
        "slide_path": str(Path(reader.path).resolve()) if reader.path else "",
        **grid.attrs(),
    }
    n = len(grid)
    writer = FeatureBagWriter(out, grid.coords, encoder.embed_dim, attrs) if out is not None else None
    feats = None if writer is not None else np.empty((n, encoder.embed_dim), np.float32)
    ds = TileBatchIterable(reader, grid, batch_size)
    loader = DataLoader(
        ds,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"embed {reader.slide_id}", unit="tile", leave=False)
    use_amp = amp and dev.type == "cuda"
    t_fwd = 0.0
    try:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            done = 0
            for x, start in loader:
                if cancel_event is not None and cancel_event.is_set():
                    raise Cancelled(f"{reader.path or reader.slide_id}: embedding cancelled")
                tf = time.perf_counter()
                y = encoder(x.to(dev, non_blocking=True)).float().cpu().numpy()
                t_fwd += time.perf_counter() - tf
                if writer is not None:
                    writer.write(int(start), y)
                else:
                    feats[int(start) : int(start) + len(y)] = y
                done += len(y)
                if bar is not None:
                    bar.update(len(y))
                if progress_callback is not None:
                    progress_callback(done, n)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    if stats is not None:
        stats.n_tiles = n
        stats.seconds = time.perf_counter() - t0
        stats.seconds_forward = t_fwd
    if writer is not None:
        path = writer.close()
        log.info("embedded %s: %d tiles -> %s", reader.slide_id, n, path)
        return path
    attrs["embed_dim"] = encoder.embed_dim
    return FeatureBag(grid.coords, feats, attrs)
