"""Tissue detection on a low-resolution level: Otsu threshold + morphological clean-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader

__all__ = ["TissueMask", "tissue_mask", "tissue_mask_from_rgb"]


@dataclass(frozen=True)
class TissueMask:
    """Boolean tissue mask with its scale.

    ``mask[i, j]`` covers level-0 pixels ``[j * downsample, (j + 1) * downsample)`` in x and
    the same in y.
    """

    mask: np.ndarray
    downsample: float

    @property
    def fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def _saturation(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    return (mx - mn).astype(np.float32) / np.maximum(mx, 1).astype(np.float32)


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    f = rgb.astype(np.float32)
    return -np.log((f + 1.0) / 256.0).mean(axis=2)


def tissue_mask_from_rgb(
    rgb: np.ndarray,
    *,
    method: str = "combined",
    min_object_px: int = 16,
    max_hole_px: int = 16,
    min_signal: float = 0.04,
) -> np.ndarray:
    """Tissue mask of a small RGB image.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 thumbnail.
    method
        ``"combined"`` (default: saturation OR optical density, each Otsu-thresholded, so
        stained tissue and pale grey tissue such as necrosis both count), ``"saturation"``
        (HSV saturation, robust to grey background) or ``"od"`` (optical density).
    min_object_px, max_hole_px
        Objects smaller than this are removed, holes smaller than this are filled (pixels of
        ``rgb``).
    min_signal
        If the image's signal range is below this, it holds no tissue (an all-white or
        all-grey slide) and the mask is empty instead of an arbitrary Otsu split.

    Returns
    -------
    Boolean ``(H, W)`` mask.
    """
    # Otsu alone splits pale from densely stained tissue when the tissue itself is bimodal,
    # so each threshold is capped at a level that background (white, grey or slightly tinted
    # glass) does not reach: saturation 0.10, optical density 0.15 (mean RGB ~ 220).
    if method == "combined":
        mask = _otsu_mask(_saturation(rgb), min_signal, 0.15, cap=0.10)
        mask |= _otsu_mask(_optical_density(rgb), 2 * min_signal, None, floor=0.12, cap=0.15)
    elif method == "saturation":
        mask = _otsu_mask(_saturation(rgb), min_signal, 0.15, cap=0.10)
    elif method == "od":
        mask = _otsu_mask(_optical_density(rgb), 2 * min_signal, None, floor=0.12, cap=0.15)
    else:
        raise ValueError(f"unknown tissue method {method!r}; use 'combined', 'saturation' or 'od'")
    # exclude pen-black and pure white
    gray = rgb[..., 0].astype(np.uint16) + rgb[..., 1] + rgb[..., 2]
    mask &= (gray < 3 * 245) & (gray > 3 * 20)
    if min_object_px > 0:
        mask = _drop_small_components(mask, min_object_px)
    if max_hole_px > 0:
        mask = ~_drop_small_components(~mask, max_hole_px)
    return mask


def _otsu_mask(sig: np.ndarray, min_signal: float, uniform_tissue: float | None,
               floor: float = 0.0, cap: float = np.inf) -> np.ndarray:
    """Otsu split of a signal (threshold clipped to [floor, cap]); empty (or full) when the
    image has no contrast at all."""
    from skimage.filters import threshold_otsu

    step = max(1, int(np.sqrt(sig.size / 2.5e5)))  # percentiles on a <= 250k-pixel subsample
    sub = sig[::step, ::step]
    lo, hi = np.percentile(sub, [1, 99.9])
    if hi - lo < min_signal:
        # no contrast: all background (or all tissue if uniformly stained)
        full = uniform_tissue is not None and float(np.median(sub)) > uniform_tissue
        return np.full(sig.shape, full)
    return sig > max(min(threshold_otsu(sig), cap), min_signal, floor)


def _drop_small_components(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Remove 8-connected components with fewer than ``min_px`` pixels (one labelling pass)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def tissue_mask(
    reader: SlideReader,
    *,
    target_mpp: float = 8.0,
    max_side: int = 4096,
    method: str = "combined",
    min_object_um2: float = 2.0e4,
    max_hole_um2: float = 1.0e4,
) -> TissueMask:
    """Compute the tissue mask of a slide on a low-resolution level.

    The mask is computed at about ``target_mpp`` microns per pixel (capped to ``max_side``
    pixels on the long side), reading the closest pyramid level so that a 100k-pixel slide
    costs one small read.

    Parameters
    ----------
    reader
        An open slide.
    target_mpp
        Resolution of the mask; used only when the slide's mpp is known.
    max_side
        Upper bound on the mask's long side in pixels.
    method
        See :func:`tissue_mask_from_rgb`.
    min_object_um2, max_hole_um2
        Clean-up sizes in square microns (converted with the slide's mpp; pixel defaults
        otherwise).

    Returns
    -------
    :class:`TissueMask`.
    """
    w0, h0 = reader.dimensions
    if reader.mpp:
        ds = max(target_mpp / reader.mpp, 1.0)
    else:
        ds = max(max(w0, h0) / 2048.0, 1.0)
    ds = max(ds, max(w0, h0) / max_side, 1.0)
    # read a stored pyramid level close to the target directly (one small read); resize only
    # when the closest level is much finer than needed
    level = 0
    for i, d in enumerate(reader.level_downsamples):
        if d <= ds * 1.5:
            level = i
    lds = reader.level_downsamples[level]
    if lds >= ds / 1.5:
        lw, lh = reader.level_dimensions[level]
        thumb = reader.read_region((0, 0), level, (lw, lh))
        ds = lds
    else:
        size = (max(1, int(round(w0 / ds))), max(1, int(round(h0 / ds))))
        thumb = reader.read_region_downsample((0, 0), size, ds)
    px_area_um2 = (ds * reader.mpp) ** 2 if reader.mpp else None
    if px_area_um2:
        min_obj = int(min_object_um2 / px_area_um2)
        max_hole = int(max_hole_um2 / px_area_um2)
    else:
        min_obj, max_hole = 16, 16
    ds_eff = w0 / thumb.shape[1]
    mask = tissue_mask_from_rgb(thumb, method=method, min_object_px=min_obj, max_hole_px=max_hole)
    return TissueMask(mask=mask, downsample=float(ds_eff))
