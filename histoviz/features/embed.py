"""``embed_slide``: stream the tiles of a slide through an encoder into a feature bag."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import Cancelled, ConfigError
from histoviz.io.featurebag import FeatureBag, FeatureBagWriter

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterator

    import torch

    from histoviz.features.encoders import PatchEncoder
    from histoviz.io.slide import SlideReader
    from histoviz.tiling.grid import TileGrid, TilingConfig

__all__ = ["EmbedStats", "embed_slide", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(device: str | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is checked.

    Raises
    ------
    ConfigError
        An unknown device name (``tpu9``), or a CUDA device this machine does not have.
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"--device {device!r} is not a device name; use auto, cpu, cuda or "
                          f"cuda:N ({str(e).splitlines()[0][:120]})") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"--device {device}: no CUDA GPU is usable on this machine; use "
                              "--device cpu (or auto)")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"--device {device}: this machine has {n} CUDA GPU(s) "
                              f"(cuda:0..cuda:{n - 1})")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise ConfigError(f"--device {device}: histoviz runs on cpu or cuda (got {dev.type})")
    return dev


@dataclass
class EmbedStats:
    """Timing of one ``embed_slide`` call, by stage.

    ``seconds_mask`` (tissue mask + grid, when computed here), ``seconds_read`` (waiting
    for tiles: decoding, or device decoding), ``seconds_forward`` (the encoder),
    ``seconds_write`` (HDF5), ``seconds`` (the whole call); ``decode`` is ``"cpu"`` or
    ``"device"``.
    """

    n_tiles: int = 0
    seconds: float = 0.0
    seconds_forward: float = 0.0
    seconds_mask: float = 0.0
    seconds_read: float = 0.0
    seconds_write: float = 0.0
    decode: str = "cpu"

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
    decode: str = "auto",
    recipe: dict[str, Any] | None = None,
    quality: bool = True,
    read_threads: int = 1,
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
        When given, features stream into this HDF5 file batch by batch (written atomically:
        a temporary file renamed when complete), so memory does not grow with the slide, and
        its path is returned; otherwise a :class:`FeatureBag` is returned.
    batch_size, num_workers
        DataLoader settings; workers decode tiles in parallel, each sweeping its own band of
        the slide.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (checked: see :func:`resolve_device`).
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
        Filled with timings per stage when given.
    decode
        ``"auto"`` (on CUDA, decode the slide's own JPEG tiles on the GPU when the slide
        has them; elsewhere the CPU DataLoader path), ``"cpu"`` or ``"device"`` (force the
        device path; see :mod:`histoviz.tiling.device_decode`).
    recipe
        Embedding recipe stored in the bag (see :mod:`histoviz.features.recipe`); derived
        from the encoder and ``tiling`` (or the grid) when omitted.
    quality
        Store per-tile quality scores (``quality/`` group: tissue, artefact, background from
        the grid, sharpness measured on the device during the forward pass).
    read_threads
        Threads reading the tiles of a batch (in each loader worker, or in this process):
        OpenSlide and libjpeg-turbo release the GIL, so threads add decoding cores without
        the inter-process copies of DataLoader workers.

    Returns
    -------
    :class:`FeatureBag` (``out is None``) or the path of the written ``.h5``.
    """
    import torch
    from torch.utils.data import DataLoader

    from histoviz.features.encoders import check_precision_device, create_encoder
    from histoviz.tiling.dataset import TileBatchIterable
    from histoviz.tiling.grid import make_tile_grid
    from histoviz.tiling.quality import sharpness_torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if decode not in ("auto", "cpu", "device"):
        raise ConfigError(f"decode must be auto, cpu or device, got {decode!r}")
    t0 = time.perf_counter()
    st = stats if stats is not None else EmbedStats()
    dev = resolve_device(device)
    if isinstance(encoder, str):
        encoder = create_encoder(encoder)
    check_precision_device(getattr(encoder, "precision", "fp32"), dev)
    if grid is None:
        grid = make_tile_grid(reader, tiling)
        st.seconds_mask = time.perf_counter() - t0
    encoder = encoder.to(dev).eval()
    if recipe is None:
        recipe = _recipe_for(encoder, tiling, grid)
    attrs: dict[str, Any] = {
        "slide_id": reader.slide_id,
        "encoder": encoder.name,
        "encoder_weights": encoder.weights_source,
        "slide_path": str(Path(reader.path).resolve()) if reader.path else "",
        "recipe": json.dumps(recipe, sort_keys=True),
        **grid.attrs(),
    }
    n = len(grid)
    grid_quality = dict(grid.quality) if quality else {}
    writer = (FeatureBagWriter(out, grid.coords, encoder.embed_dim, attrs, grid_quality)
              if out is not None else None)
    feats = None if writer is not None else np.empty((n, encoder.embed_dim), np.float32)
    sharp = np.full(n, np.nan, np.float32) if quality and writer is None else None
    batches = _device_batches(reader, grid, dev, batch_size, decode)
    st.decode = "device" if batches is not None else "cpu"
    if batches is None:
        loader = DataLoader(
            TileBatchIterable(reader, grid, batch_size, threads=read_threads),
            batch_size=None,
            num_workers=num_workers,
            pin_memory=dev.type == "cuda",
            prefetch_factor=4 if num_workers > 0 else None,
        )
        batches = ((x.to(dev, non_blocking=True), int(start)) for x, start in loader)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"embed {reader.slide_id}", unit="tile", leave=False)
    use_amp = amp and dev.type == "cuda"
    try:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            done = 0
            tr = time.perf_counter()
            for x, start in batches:
                st.seconds_read += time.perf_counter() - tr
                if cancel_event is not None and cancel_event.is_set():
                    raise Cancelled(f"{reader.path or reader.slide_id}: embedding cancelled")
                tf = time.perf_counter()
                y = encoder(x).float().cpu().numpy()
                s = sharpness_torch(x).cpu().numpy() if quality else None
                tw = time.perf_counter()
                st.seconds_forward += tw - tf
                if writer is not None:
                    writer.write(start, y)
                    if s is not None:
                        writer.write_quality("sharpness", start, s)
                else:
                    feats[start : start + len(y)] = y
                    if sharp is not None:
                        sharp[start : start + len(y)] = s
                st.seconds_write += time.perf_counter() - tw
                done += len(y)
                if bar is not None:
                    bar.update(len(y))
                if progress_callback is not None:
                    progress_callback(done, n)
                tr = time.perf_counter()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    st.n_tiles = n
    if writer is not None:
        tw = time.perf_counter()
        path = writer.close()
        st.seconds_write += time.perf_counter() - tw
        st.seconds = time.perf_counter() - t0
        log.info("embedded %s: %d tiles -> %s", reader.slide_id, n, path)
        return path
    st.seconds = time.perf_counter() - t0
    attrs["embed_dim"] = encoder.embed_dim
    q = {**grid_quality, **({"sharpness": sharp} if sharp is not None else {})}
    return FeatureBag(grid.coords, feats, attrs, q)


def _recipe_for(encoder: PatchEncoder, tiling: TilingConfig | None, grid: TileGrid) -> dict[str, Any]:
    """Recipe of an embedding when the caller gave none (weights digest from the source)."""
    from histoviz.features.recipe import file_digest, make_recipe

    src = str(getattr(encoder, "weights_source", ""))
    if Path(src).is_file():
        w = file_digest(src)
    elif src.startswith("imagenet ("):  # weights shipped by an installed package
        from histoviz.features.encoders import encoder_info

        w = file_digest(encoder_info(encoder.name).package_weights())
    elif src.startswith("none"):
        w = "none"
    else:
        w = f"unknown:{src}"
    if tiling is None:  # a grid from elsewhere: what it says about itself
        from histoviz.tiling.grid import TilingConfig

        tiling = TilingConfig(tile_size=grid.tile_size, mpp=grid.mpp,
                              overlap=round(1 - grid.stride_level0 / grid.tile_size_level0, 6))
        rec = make_recipe(encoder.name, tiling, weights=w, precision=getattr(encoder, "precision", "fp32"))
        rec["mask_method"] = "given grid"
        return rec
    return make_recipe(encoder.name, tiling, weights=w, precision=getattr(encoder, "precision", "fp32"))


def _device_batches(reader: SlideReader, grid: TileGrid, dev: torch.device, batch_size: int,
                    decode: str) -> Iterator[tuple[torch.Tensor, int]] | None:
    """Batches decoded on ``dev`` when asked (or automatic on CUDA), else ``None``."""
    if decode == "cpu" or (decode == "auto" and dev.type != "cuda") or len(grid) == 0:
        return None
    from histoviz.tiling.device_decode import DeviceTileBatches, device_decode_supported

    if not device_decode_supported(reader, grid):
        if decode == "device":
            raise ConfigError(f"{reader.path or reader.slide_id}: decode='device' needs a slide "
                              "stored as JPEG tiles (tiled TIFF, SVS); use decode='cpu'")
        return None
    try:
        src = DeviceTileBatches(reader, grid, dev)
    except ValueError as e:
        if decode == "device":
            raise ConfigError(str(e)) from None
        log.warning("%s; decoding on the CPU instead", e)
        return None
    n = len(grid)
    return ((src.batch(s, min(n, s + batch_size)), s) for s in range(0, n, batch_size))
