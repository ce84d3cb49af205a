"""Tile-level quality scores: tissue, artefact (ink, debris, bubbles), background, sharpness.

Mask-derived scores come free with the grid (integral images over the tissue and artefact
maps of :class:`~histoviz.tiling.TissueMask`). Sharpness needs the tile's pixels: it is
computed on the fly when tiles are embedded (on the encoder's device) or by
:func:`tile_sharpness` over tiles that were read.

``sharpness`` is the ratio of fine to coarse Laplacian energy of the grey tile, which does
not depend on stain intensity: in-focus 224-px tiles at 0.5 um/px score about 0.45-0.55,
the same tiles blurred by a 0.5 um Gaussian about 0.33, by 1 um about 0.26. Tiles below
:data:`BLUR_THRESHOLD` are likely out of focus.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from histoviz.tiling.mask import TissueMask

__all__ = ["BLUR_THRESHOLD", "QUALITY_KEYS", "box_fractions", "mask_quality", "sharpness_torch",
           "tile_sharpness"]

QUALITY_KEYS = ("tissue", "artifact", "background", "sharpness")
#: tiles (224 px at 0.5 um/px) with a sharpness below this are likely out of focus
BLUR_THRESHOLD = 0.40


def box_fractions(m: np.ndarray, downsample: float, xs: np.ndarray, ys: np.ndarray,
                  size_level0: int) -> np.ndarray:
    """Mean of a boolean map over level-0 boxes, from an integral image.

    Parameters
    ----------
    m
        ``(H, W)`` map with ``downsample`` level-0 px per pixel.
    downsample
        Level-0 pixels per map pixel.
    xs, ys
        Level-0 box corners along x (columns) and y (rows); every (y, x) pair is scored.
    size_level0
        Box side in level-0 pixels.

    Returns
    -------
    ``(len(ys), len(xs))`` fractions. Boxes smaller than a map pixel use that pixel.
    """
    ii = np.zeros((m.shape[0] + 1, m.shape[1] + 1), np.int64 if m.size >= 2**31 else np.int32)
    np.cumsum(m, axis=0, dtype=ii.dtype, out=ii[1:, 1:])
    np.cumsum(ii[1:, 1:], axis=1, out=ii[1:, 1:])

    def _lo(v: np.ndarray, limit: int) -> np.ndarray:
        return np.clip(np.floor(v / downsample + 1e-6).astype(np.int64), 0, limit)

    def _hi(v: np.ndarray, limit: int) -> np.ndarray:
        return np.clip(np.ceil(v / downsample - 1e-6).astype(np.int64), 0, limit)

    x0, x1 = _lo(xs, m.shape[1]), _hi(xs + size_level0, m.shape[1])
    y0, y1 = _lo(ys, m.shape[0]), _hi(ys + size_level0, m.shape[0])
    x1 = np.maximum(x1, np.minimum(x0 + 1, m.shape[1]))
    y1 = np.maximum(y1, np.minimum(y0 + 1, m.shape[0]))
    s = (ii[y1[:, None], x1[None, :]] - ii[y0[:, None], x1[None, :]]
         - ii[y1[:, None], x0[None, :]] + ii[y0[:, None], x0[None, :]])
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return s / np.maximum(area, 1)


def mask_quality(mask: TissueMask, coords: np.ndarray, tile_size_level0: int) -> dict[str, np.ndarray]:
    """Tissue, artefact and background fractions of tiles.

    Parameters
    ----------
    mask
        The slide's tissue mask (with its artefact map when the method has one).
    coords
        ``(N, 2)`` level-0 tile corners.
    tile_size_level0
        Tile side in level-0 pixels.

    Returns
    -------
    ``{"tissue", "artifact", "background"}`` -> ``(N,)`` float32 (they sum to 1).
    """
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    out: dict[str, np.ndarray] = {}
    for key, m in (("tissue", mask.mask), ("artifact", mask.artifact)):
        if m is None or len(coords) == 0:
            out[key] = np.zeros(len(coords), np.float32)
            continue
        vals = np.empty(len(coords), np.float32)
        # score unique rows of corners at once (the grid is a lattice)
        for y in np.unique(coords[:, 1]):
            sel = np.flatnonzero(coords[:, 1] == y)
            vals[sel] = box_fractions(m, mask.downsample, coords[sel, 0], np.array([y]),
                                      tile_size_level0)[0]
        out[key] = vals
    out["background"] = np.clip(1.0 - out["tissue"] - out["artifact"], 0.0, 1.0).astype(np.float32)
    return out


def sharpness_torch(x: torch.Tensor) -> torch.Tensor:
    """Sharpness of a batch of tiles on their device.

    Parameters
    ----------
    x
        ``(B, 3, H, W)`` tiles (uint8 or float in 0..255).

    Returns
    -------
    ``(B,)`` float32: mean |Laplacian| of the grey tile over that of its 2x-binned version
    (plus one grey level, so flat tiles do not divide by zero).
    """
    import torch

    f = torch.nn.functional
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
                     device=x.device).view(1, 1, 3, 3)
    out = []
    with torch.autocast(x.device.type, enabled=False):
        for s in range(0, len(x), 32):  # slices: float temporaries stay small beside the encoder
            g = x[s : s + 32].float().mean(1, keepdim=True)
            hf = f.conv2d(g, k).abs().mean((1, 2, 3))
            mf = f.conv2d(f.avg_pool2d(g, 2), k).abs().mean((1, 2, 3))
            out.append(hf / (mf + 1.0))
    return torch.cat(out).float() if out else torch.zeros(0, device=x.device)


def tile_sharpness(tiles: np.ndarray) -> np.ndarray:
    """:func:`sharpness_torch` for RGB uint8 tiles ``(B, H, W, 3)`` (or one ``(H, W, 3)``)."""
    import torch

    t = np.asarray(tiles)
    if t.ndim == 3:
        t = t[None]
    with torch.inference_mode():
        return sharpness_torch(torch.from_numpy(np.ascontiguousarray(t)).permute(0, 3, 1, 2)).numpy()
