"""Tissue detection on a low-resolution level.

The default method (``"robust"``) finds stained tissue with Otsu thresholds on saturation and
optical density (each capped so pale tissue is kept), adds faint tissue that differs from the
slide's own glass colour and carries texture, and removes what is not H&E: marker ink (blue,
green: red transmits less than green, which neither stain does; black), debris and the rims
of air bubbles (dark and grey or brown). Those pixels form the ``artifact`` map kept with the
mask, so tiles can be scored for them. ``"combined"`` is the detector of histoviz <= 0.1 (no
faint tissue, no artefact rules); ``"learned"`` runs a segmenter from a local safetensors file
(:mod:`histoviz.tiling.segmenter`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from histoviz.errors import SlideOpenError

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader

__all__ = ["MASK_METHODS", "MAX_MASK_SOURCE_PIXELS", "TissueMask", "artifact_mask", "is_greyscale",
           "tissue_mask", "tissue_mask_from_rgb"]

MASK_METHODS = ("robust", "combined", "saturation", "od", "learned")
#: most level pixels a mask may read (bounded time on single-level or hostile files): 2**32
MAX_MASK_SOURCE_PIXELS = 2**32
_READ_BLOCK = 4096  # side of the blocks a large level is read in


@dataclass(frozen=True)
class TissueMask:
    """Boolean tissue mask with its scale.

    ``mask[i, j]`` covers level-0 pixels ``[j * downsample, (j + 1) * downsample)`` in x and
    the same in y. ``artifact`` (same shape, optional) marks ink, debris and bubble rims.
    """

    mask: np.ndarray
    downsample: float
    artifact: np.ndarray | None = None
    method: str = "robust"

    @property
    def fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def artifact_fraction(self) -> float:
        """Fraction of the slide covered by ink, debris or bubble rims."""
        if self.artifact is None or not self.artifact.size:
            return 0.0
        return float(self.artifact.mean())


def _saturation(rgb: np.ndarray) -> np.ndarray:
    r, g, b = _channels(rgb)
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    return (mx - mn).astype(np.float32) / np.maximum(mx, 1).astype(np.float32)


_OD_LUT = (-np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    r, g, b = _channels(rgb)
    return (_OD_LUT[r] + _OD_LUT[g] + _OD_LUT[b]) / 3.0


def _channels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.ascontiguousarray(rgb[..., 0]), np.ascontiguousarray(rgb[..., 1]),
            np.ascontiguousarray(rgb[..., 2]))


def is_greyscale(rgb: np.ndarray, *, tol: int = 3) -> bool:
    """True when no pixel of ``rgb`` has colour (channels within ``tol`` of each other): a
    greyscale scan, or a grey image stored as RGB."""
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 4e6)))
    sub = rgb[::step, ::step].astype(np.int16)
    return bool(sub.size) and int(np.abs(sub[..., 0] - sub[..., 1]).max()) <= tol and int(
        np.abs(sub[..., 1] - sub[..., 2]).max()) <= tol


def artifact_mask(rgb: np.ndarray, *, smooth: int = 3) -> np.ndarray:
    """Pixels of a thumbnail that are not H&E: marker ink, debris, bubble rims.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 thumbnail.
    smooth
        Side of the box filter applied to the colour before the rules (JPEG noise).

    Returns
    -------
    Boolean ``(H, W)`` map. The rules use two properties every mix of haematoxylin and
    eosin has, in optical density (OD): green is absorbed at least as much as red (OD_G
    >= ~0.93 OD_R) and more than blue (OD_G > OD_B). Blue and green ink absorb red most
    (OD_R > 1.1 OD_G; blue ink over tissue: OD_R >= 0.9 OD_G with little blue absorbed),
    brown debris absorbs blue most (OD_B > OD_G), and black ink, grey debris and bubble
    rims are dark without colour. Pixels next to such an artefact that look partly like
    it (mixed edge pixels) count too. A greyscale image (no pixel with colour) has no
    artefact map: without colour every stained pixel would look like grey debris.
    """
    from scipy.ndimage import binary_dilation, uniform_filter

    if is_greyscale(rgb):
        return np.zeros(rgb.shape[:2], bool)

    ch = _channels(rgb)
    if smooth > 1:
        ch = tuple(uniform_filter(c, smooth, mode="nearest") for c in ch)
    r, g, b = (_OD_LUT[c] for c in ch)
    mx = np.maximum(np.maximum(ch[0], ch[1]), ch[2]).astype(np.float32)
    mn = np.minimum(np.minimum(ch[0], ch[1]), ch[2]).astype(np.float32)
    sat = (mx - mn) / np.maximum(mx, 1.0)
    total = r + g + b
    absorbs = total > 0.3
    ink = absorbs & ((r > 1.1 * g + 0.05) | ((r >= 0.9 * g) & (b < 0.35 * r) & (r > 0.3)))
    brown = absorbs & (b > g + 0.08)
    dark = ((sat < 0.12) & (mx < 160.0)) | (mx < 80.0)
    strong = ink | brown | dark
    if not strong.any():
        return strong
    weak = (total > 0.15) & (((r > 0.6 * g) & (b < 0.6 * r)) | (b > g + 0.02))
    weak |= (sat < 0.25) & (mx < 200.0)
    return strong | (weak & binary_dilation(strong, iterations=1))


def _glass(ch: tuple[np.ndarray, np.ndarray, np.ndarray], sat: np.ndarray
           ) -> tuple[np.ndarray, float] | None:
    """Optical density of the slide's glass (per channel) and its noise, or None."""
    step = max(1, int(np.sqrt(sat.size / 1e6)))  # statistics on <= ~1M pixels
    r, g, b = (c[::step, ::step] for c in ch)
    s = sat[::step, ::step]
    bright = (s < 0.08) & (np.minimum(np.minimum(r, g), b) > 180)
    if bright.sum() < max(64, 0.01 * bright.size):
        return None
    grey = (r[bright].astype(np.float32) + g[bright] + b[bright]) / 3.0
    mode = int(np.argmax(np.bincount(np.round(grey).astype(np.int64), minlength=256)))
    near = np.abs(grey - mode) <= 4
    od = np.stack([_OD_LUT[c[bright][near]] for c in (r, g, b)], 1)
    glass = np.median(od, axis=0)
    noise = float(np.median(np.abs(od.mean(axis=1) - glass.mean())) * 1.4826)
    return glass.astype(np.float32), max(noise, 0.002)


def _faint_tissue(ch: tuple[np.ndarray, np.ndarray, np.ndarray], sat: np.ndarray) -> np.ndarray:
    """Faint tissue: darker than the glass beside it and textured (vignetting is smooth)."""
    from scipy.ndimage import uniform_filter

    gl = _glass(ch, sat)
    if gl is None:
        return np.zeros(sat.shape, bool)
    glass, noise = gl
    delta = np.zeros(sat.shape, np.float32)
    for c, g0 in zip(ch, glass):
        delta += np.maximum(_OD_LUT[c] - g0, 0.0)
    t = max(0.06, 8 * noise)
    d_s = uniform_filter(delta, 3, mode="nearest")
    m = uniform_filter(delta, 5, mode="nearest")
    var = uniform_filter(delta * delta, 5, mode="nearest")
    var -= m * m
    # the pixel itself must absorb too: the box mean alone would grow a ring around tissue
    return (d_s > t) & (delta > 0.75 * t) & (var > max(0.015, 3 * noise) ** 2)


def _robust_extras(rgb: np.ndarray, sat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Add faint tissue to ``mask`` (in place) and return the artefact map.

    Thumbnails above 4 Mpx are binned 2x2 first: ink, debris and faint regions are much
    larger than a mask pixel, and this keeps a 100k-px slide's mask near a second.
    """
    h, w = sat.shape
    if h * w <= 4_000_000 or min(h, w) < 4:
        mask |= _faint_tissue(_channels(rgb), sat)
        return artifact_mask(rgb)
    from histoviz.io.slide import resize_rgb

    hh, ww = h // 2, w // 2
    small = resize_rgb(rgb[: 2 * hh, : 2 * ww], (ww, hh))
    faint = _faint_tissue(_channels(small), _saturation(small))
    art = artifact_mask(small)

    def up(m: np.ndarray) -> np.ndarray:
        out = np.zeros((h, w), bool)
        out[: 2 * hh, : 2 * ww] = np.repeat(np.repeat(m, 2, axis=0), 2, axis=1)
        return out

    mask |= up(faint)
    return up(art)


def tissue_mask_from_rgb(
    rgb: np.ndarray,
    *,
    method: str = "robust",
    min_object_px: int = 16,
    max_hole_px: int = 16,
    min_signal: float = 0.04,
    return_artifact: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Tissue mask of a small RGB image.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 thumbnail.
    method
        ``"robust"`` (default: stained and faint tissue, ink/debris/bubbles removed),
        ``"combined"`` (saturation OR optical density, each Otsu-thresholded; the detector of
        histoviz <= 0.1), ``"saturation"`` or ``"od"``.
    min_object_px, max_hole_px
        Objects smaller than this are removed, holes smaller than this are filled (pixels of
        ``rgb``); holes that are artefacts stay open.
    min_signal
        If the image's signal range is below this, it holds no tissue (an all-white or
        all-grey slide) and the mask is empty instead of an arbitrary Otsu split.
    return_artifact
        Also return the artefact map (empty for the methods without one).

    Returns
    -------
    Boolean ``(H, W)`` mask (and the artefact map when ``return_artifact``).
    """
    # Otsu alone splits pale from densely stained tissue when the tissue itself is bimodal,
    # so each threshold is capped at a level that background (white, grey or slightly tinted
    # glass) does not reach: saturation 0.10, optical density 0.15 (mean RGB ~ 220).
    sat = _saturation(rgb)
    art = np.zeros(rgb.shape[:2], bool)
    if method in ("combined", "robust"):
        mask = _otsu_mask(sat, min_signal, 0.15, cap=0.10)
        mask |= _otsu_mask(_optical_density(rgb), 2 * min_signal, None, floor=0.12, cap=0.15)
    elif method == "saturation":
        mask = _otsu_mask(sat, min_signal, 0.15, cap=0.10)
    elif method == "od":
        mask = _otsu_mask(_optical_density(rgb), 2 * min_signal, None, floor=0.12, cap=0.15)
    else:
        raise ValueError(f"unknown tissue method {method!r}; use one of {', '.join(MASK_METHODS)}")
    # exclude pen-black and pure white
    gray = rgb[..., 0].astype(np.uint16) + rgb[..., 1] + rgb[..., 2]
    mask &= (gray < 3 * 245) & (gray > 3 * 20)
    if method == "robust":
        mask &= ~(art := _robust_extras(rgb, sat, mask))
    if min_object_px > 0:
        mask = _drop_small_components(mask, min_object_px)
    if max_hole_px > 0:
        mask = ~_drop_small_components(~mask, max_hole_px)
        mask &= ~art
    return (mask, art) if return_artifact else mask


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


def _bounded_thumbnail(reader: SlideReader, ds: float, max_side: int) -> tuple[np.ndarray, float]:
    """Whole-slide image at about ``ds`` level-0 px per pixel, read with bounded memory.

    Reads a stored level directly when one is close enough; otherwise reads the finest
    level coarse enough in blocks of ``_READ_BLOCK`` px, each resized on the fly. Refuses
    (:class:`~histoviz.errors.SlideOpenError`) when that would read more than
    :data:`MAX_MASK_SOURCE_PIXELS` level pixels.
    """
    from histoviz.io.slide import resize_rgb

    w0, h0 = reader.dimensions
    level = 0
    for i, d in enumerate(reader.level_downsamples):
        if d <= ds * 1.5:
            level = i
    lds = reader.level_downsamples[level]
    lw, lh = reader.level_dimensions[level]
    if lw * lh > MAX_MASK_SOURCE_PIXELS:
        raise SlideOpenError(
            f"{reader.path or reader.slide_id}: no pyramid level is coarse enough for the tissue "
            f"mask (level {level} is {lw} x {lh} px; histoviz reads at most "
            f"{MAX_MASK_SOURCE_PIXELS / 1e9:.1f} Gpx for it); if the header is right, add a "
            "pyramid (e.g. vips tiffsave IN OUT.tif --tile --pyramid), else the file is corrupt"
        )
    if lds >= ds / 1.5:
        if lw * lh <= _READ_BLOCK * _READ_BLOCK:
            return reader.read_region((0, 0), level, (lw, lh)), lds
        rel = 1.0  # large level: read it in blocks, without resizing
    else:
        rel = ds / lds
    ow = max(1, int(round(lw / rel)))
    oh = max(1, int(round(lh / rel)))
    out = np.empty((oh, ow, 3), np.uint8)
    blk = max(1, int(_READ_BLOCK // rel)) if rel > 1 else _READ_BLOCK  # output px per block
    for oy in range(0, oh, blk):
        for ox in range(0, ow, blk):
            bw, bh = min(blk, ow - ox), min(blk, oh - oy)
            sx, sy = int(round(ox * rel)), int(round(oy * rel))
            ex, ey = min(lw, int(round((ox + bw) * rel))), min(lh, int(round((oy + bh) * rel)))
            src = reader.read_region((int(sx * lds), int(sy * lds)), level,
                                     (max(1, ex - sx), max(1, ey - sy)))
            out[oy : oy + bh, ox : ox + bw] = resize_rgb(src, (bw, bh))
    return out, lds * (lw / ow)


def tissue_mask(
    reader: SlideReader,
    *,
    target_mpp: float = 8.0,
    max_side: int = 4096,
    method: str = "robust",
    min_object_um2: float = 2.0e4,
    max_hole_um2: float = 1.0e4,
    weights: str | os.PathLike | None = None,
) -> TissueMask:
    """Compute the tissue mask of a slide on a low-resolution level.

    The mask is computed at about ``target_mpp`` microns per pixel (capped to ``max_side``
    pixels on the long side), reading the closest pyramid level so that a 100k-pixel slide
    costs one small read; slides without a coarse level are read in blocks, and slides that
    would need more than :data:`MAX_MASK_SOURCE_PIXELS` are refused.

    Parameters
    ----------
    reader
        An open slide.
    target_mpp
        Resolution of the mask; used only when the slide's mpp is known.
    max_side
        Upper bound on the mask's long side in pixels.
    method
        One of :data:`MASK_METHODS`; see :func:`tissue_mask_from_rgb`. ``"learned"`` needs
        ``weights``.
    min_object_um2, max_hole_um2
        Clean-up sizes in square microns (converted with the slide's mpp; pixel defaults
        otherwise).
    weights
        Safetensors file of a learned segmenter (``method="learned"``), see
        :func:`histoviz.tiling.segmenter.load_segmenter`.

    Returns
    -------
    :class:`TissueMask`.
    """
    if method not in MASK_METHODS:
        raise ValueError(f"unknown tissue method {method!r}; use one of {', '.join(MASK_METHODS)}")
    seg = None
    if method == "learned":
        from histoviz.tiling.segmenter import load_segmenter

        if weights is None:
            raise ValueError("method='learned' needs weights=PATH (a .safetensors segmenter)")
        seg = load_segmenter(weights)
        target_mpp = seg.input_mpp
    w0, h0 = reader.dimensions
    if reader.mpp:
        ds = max(target_mpp / reader.mpp, 1.0)
    else:
        ds = max(max(w0, h0) / 2048.0, 1.0)
    ds = max(ds, max(w0, h0) / max_side, 1.0)
    thumb, ds_read = _bounded_thumbnail(reader, ds, max_side)
    px_area_um2 = (ds_read * reader.mpp) ** 2 if reader.mpp else None
    if px_area_um2:
        min_obj = int(min_object_um2 / px_area_um2)
        max_hole = int(max_hole_um2 / px_area_um2)
    else:
        min_obj, max_hole = 16, 16
    ds_eff = w0 / thumb.shape[1]
    if seg is not None:
        mask = seg.predict(thumb)
        if min_obj > 0:
            mask = _drop_small_components(mask, min_obj)
        return TissueMask(mask=mask, downsample=float(ds_eff), artifact=None, method="learned")
    mask, art = tissue_mask_from_rgb(thumb, method=method, min_object_px=min_obj,
                                     max_hole_px=max_hole, return_artifact=True)
    return TissueMask(mask=mask, downsample=float(ds_eff),
                      artifact=art if method == "robust" else None, method=method)
