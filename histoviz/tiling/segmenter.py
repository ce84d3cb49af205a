"""Optional learned tissue segmenter, loaded from a local safetensors file.

For users who have trained one: a small fully convolutional network (:class:`TissueFCN`)
maps a slide thumbnail at ``input_mpp`` to tissue logits. Its file is safetensors only
(tensors plus a few metadata strings, never a pickle), written by :func:`save_segmenter`::

    metadata: format = "histoviz-tissue-segmenter", arch = "fcn", channels = "16,16",
              input_mpp = "8.0", threshold = "0.5"

It runs through the same interface as the colour rules:
``tissue_mask(reader, method="learned", weights="seg.safetensors")`` or
``TilingConfig(mask_method="learned", mask_weights=...)``. Importing this module imports torch.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from histoviz.errors import MissingWeightsError

__all__ = ["FORMAT", "Segmenter", "TissueFCN", "load_segmenter", "save_segmenter"]

FORMAT = "histoviz-tissue-segmenter"
_MAX_HEADER = 1 << 20


class TissueFCN(nn.Module):
    """Fully convolutional tissue classifier: 3x3 conv + ReLU layers, then a 1x1 logit.

    Parameters
    ----------
    channels
        Width of each hidden layer, e.g. ``(16, 16)``.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 16)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, int(c), 3, padding=1), nn.ReLU()]
            c_in = int(c)
        layers.append(nn.Conv2d(c_in, 1, 1))
        self.net = nn.Sequential(*layers)
        self.channels = tuple(int(c) for c in channels)

    @property
    def halo(self) -> int:
        """Pixels of context each output pixel sees on each side."""
        return len(self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 or 0..255 float -> ``(B, 1, H, W)`` logits."""
        return self.net(x.float() / 127.5 - 1.0)


def save_segmenter(model: TissueFCN, path: str | os.PathLike, *, input_mpp: float = 8.0,
                   threshold: float = 0.5) -> Path:
    """Write a segmenter as safetensors with the metadata :func:`load_segmenter` needs."""
    from safetensors.torch import save_file

    from histoviz._atomic import atomic_path

    meta = {"format": FORMAT, "arch": "fcn", "channels": ",".join(map(str, model.channels)),
            "input_mpp": repr(float(input_mpp)), "threshold": repr(float(threshold))}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    return Path(path)


@dataclass
class Segmenter:
    """A loaded segmenter: ``predict(rgb) -> bool mask`` at ``input_mpp``."""

    model: TissueFCN
    input_mpp: float
    threshold: float
    path: str

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, block: int = 1024) -> np.ndarray:
        """Tissue mask of an ``(H, W, 3)`` uint8 thumbnail (blockwise: bounded memory)."""
        h, w = rgb.shape[:2]
        halo = self.model.halo
        logit_t = float(np.log(self.threshold / (1 - self.threshold)))
        out = np.zeros((h, w), bool)
        x_all = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        for y0 in range(0, h, block):
            for x0 in range(0, w, block):
                y1, x1 = min(h, y0 + block), min(w, x0 + block)
                ya, xa = max(0, y0 - halo), max(0, x0 - halo)
                yb, xb = min(h, y1 + halo), min(w, x1 + halo)
                z = self.model(x_all[None, :, ya:yb, xa:xb])[0, 0]
                out[y0:y1, x0:x1] = (z[y0 - ya : y1 - ya, x0 - xa : x1 - xa] > logit_t).numpy()
        return out


def _header(path: Path) -> dict:
    """The safetensors JSON header, read without loading anything else."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError("file too short")
        (n,) = struct.unpack("<Q", raw)
        if not 2 <= n <= _MAX_HEADER:
            raise ValueError("no safetensors header")
        head = fh.read(n)
    if not head.startswith(b"{"):
        raise ValueError("no safetensors header")
    return json.loads(head)


def load_segmenter(path: str | os.PathLike) -> Segmenter:
    """Load a segmenter written by :func:`save_segmenter` (safetensors only, no pickles).

    Raises
    ------
    MissingWeightsError
        Missing file, not safetensors (e.g. a pickled ``.pt``), or tensors and metadata that
        do not describe a :class:`TissueFCN`; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"{path}: segmenter weights file not found")
    try:
        head = _header(path)
    except (OSError, ValueError) as e:
        raise MissingWeightsError(
            f"{path}: not a safetensors file ({e}); learned segmenters load from .safetensors "
            "only (pickled .pt/.pth files are never loaded); convert it with safetensors"
        ) from None
    meta = head.get("__metadata__") or {}
    if meta.get("format") != FORMAT or meta.get("arch") != "fcn":
        raise MissingWeightsError(
            f"{path}: safetensors metadata does not describe a histoviz tissue segmenter "
            f"(format={meta.get('format')!r}, arch={meta.get('arch')!r}); write it with "
            "histoviz.tiling.segmenter.save_segmenter"
        )
    try:
        channels = tuple(int(c) for c in meta["channels"].split(","))
        input_mpp = float(meta.get("input_mpp", "8.0"))
        threshold = float(meta.get("threshold", "0.5"))
        if not (channels and all(0 < c <= 256 for c in channels) and len(channels) <= 16):
            raise ValueError(f"channels {channels}")
        if not (0.1 <= input_mpp <= 100 and 0 < threshold < 1):
            raise ValueError(f"input_mpp {input_mpp}, threshold {threshold}")
    except (KeyError, ValueError) as e:
        raise MissingWeightsError(f"{path}: bad segmenter metadata ({e})") from None
    from safetensors.torch import load_file

    model = TissueFCN(channels)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise MissingWeightsError(f"{path}: tensors do not fit a TissueFCN{channels}: {first}") from None
    return Segmenter(model.eval(), input_mpp, threshold, str(path))
