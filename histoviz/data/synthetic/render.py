"""The slide model of the synthetic cohort (:mod:`histoviz.data.synthetic`): tissue and cell
types, stain colours and nuclear shapes, and the rendering of a label map into an H&E-like
pyramidal JPEG TIFF.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from histoviz._atomic import atomic_path
from histoviz.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["CELL_TYPES", "FORMAT_VERSION", "MODALITIES", "TISSUE_TYPES", "render_synthetic_slide"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the on-disk layout and of the generative model; bump when either changes."""

TISSUE_TYPES: tuple[str, ...] = ("background", "tumour", "stroma", "immune", "normal", "necrosis")
"""Tissue types of the label maps; index 0 is background (glass)."""

CELL_TYPES: tuple[str, ...] = (
    "tumour",
    "fibroblast",
    "lymphocyte",
    "macrophage",
    "epithelial",
    "endothelial",
)
"""Cell types of the prototypes, the compositions and the scRNA reference."""

MODALITIES: tuple[str, ...] = ("gene", "protein", "mirna", "pathway")
"""Omics layers written under ``omics/``."""

# Cell-type mix of each tissue type (rows: TISSUE_TYPES, columns: CELL_TYPES; rows sum to 1).
_TISSUE_TO_CELL = np.array(
    [
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # background
        [0.72, 0.10, 0.06, 0.06, 0.02, 0.04],  # tumour
        [0.02, 0.70, 0.08, 0.08, 0.00, 0.12],  # stroma
        [0.02, 0.05, 0.75, 0.12, 0.00, 0.06],  # immune
        [0.00, 0.12, 0.05, 0.05, 0.70, 0.08],  # normal
        [0.25, 0.05, 0.25, 0.40, 0.00, 0.05],  # necrosis
    ]
)
# Nuclei per mm^2 of section, per tissue type.
_CELLS_PER_MM2 = np.array([0.0, 5000.0, 2000.0, 12000.0, 4000.0, 1500.0])
# Colour of cytoplasm / extracellular matrix (no nuclei), RGB, per tissue type.
_TISSUE_RGB = np.array(
    [
        [243, 242, 246],  # background: glass
        [228, 150, 200],  # tumour: eosinophilic purple-pink cytoplasm
        [238, 146, 182],  # stroma: strong eosin pink
        [200, 182, 228],  # immune: bluish lilac
        [244, 204, 220],  # normal: pale pink
        [212, 196, 202],  # necrosis: grey-pink
    ],
    dtype=np.float64,
)
_NUCLEUS_RGB = np.array([55.0, 30.0, 110.0])  # haematoxylin at strength 1 on white
# Nuclear appearance per cell type (+ one "fragment" class used inside necrosis):
# (major diameter um, minor diameter um, size jitter, stain strength, vesicular 0/1)
_NUCLEUS_SHAPE = np.array(
    [
        [12.5, 9.5, 0.25, 0.85, 1.0],  # tumour: large, pleomorphic, vesicular with nucleolus
        [13.0, 3.2, 0.20, 0.80, 0.0],  # fibroblast: spindle
        [6.5, 6.0, 0.08, 1.25, 0.0],  # lymphocyte: small, round, very dark
        [9.0, 6.5, 0.15, 0.55, 0.0],  # macrophage: oval, pale
        [8.0, 6.5, 0.12, 0.60, 0.0],  # epithelial: regular, moderate
        [11.0, 3.0, 0.20, 0.70, 0.0],  # endothelial: flat, elongated
        [3.0, 2.2, 0.40, 0.50, 0.0],  # necrotic fragment
    ]
)
_N_STAMP_VARIANTS = 6
_OD_SCALE = 300.0  # optical density -> uint8 for the bilinear upsampling of stain maps
# Correlation length of the field that places each tissue type, relative to region_scale_um.
_REGION_SCALE_REL = {"tumour": 1.0, "stroma": 1.2, "immune": 0.55, "normal": 1.3, "necrosis": 0.7}





# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _rng(seed: int, stream: str, *idx: int) -> np.random.Generator:
    """Independent, reproducible generator per (seed, named stream, indices)."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode()), *map(int, idx)])


def _keys_cubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    out = np.zeros_like(x)
    m1 = x <= 1
    m2 = (x > 1) & (x < 2)
    out[m1] = (a + 2) * x[m1] ** 3 - (a + 3) * x[m1] ** 2 + 1
    out[m2] = a * x[m2] ** 3 - 5 * a * x[m2] ** 2 + 8 * a * x[m2] - 4 * a
    return out


def _resample_axis(arr: np.ndarray, axis: int, n_out: int, step: float) -> np.ndarray:
    """Cubic-convolution resampling along one axis (``step`` output samples per input).

    A 4-tap gather instead of a dense matrix product: exact same result on every machine
    (no BLAS threading) and cheap.
    """
    n_in = arr.shape[axis]
    t = (np.arange(n_out) + 0.5) / step - 0.5
    i0 = np.floor(t).astype(np.int64)
    frac = t - i0
    shape = [1] * arr.ndim
    shape[axis] = n_out
    out = np.zeros(arr.shape[:axis] + (n_out,) + arr.shape[axis + 1 :])
    for k in (-1, 0, 1, 2):
        wk = _keys_cubic(frac - k).reshape(shape)
        out += wk * np.take(arr, np.clip(i0 + k, 0, n_in - 1), axis=axis)
    return out


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], cell_px: float, scale_px: float
) -> np.ndarray:
    """Unit-variance Gaussian random field on a grid of ``cell_px``-sized cells.

    White noise on a coarse grid (node spacing ``scale_px / 4``) is Gaussian-smoothed and
    resampled with cubic convolution, so the cost does not grow with ``scale_px``.
    """
    from scipy.ndimage import gaussian_filter

    hl, wl = shape
    step_px = max(scale_px / 4.0, cell_px)
    step = step_px / cell_px  # label cells per coarse node
    sigma = scale_px / step_px
    pad = int(math.ceil(3 * sigma)) + 2
    nh = int(math.ceil(hl / step)) + 1
    nw = int(math.ceil(wl / step)) + 1
    noise = rng.standard_normal((nh + 2 * pad, nw + 2 * pad))
    sm = gaussian_filter(noise, sigma, mode="wrap")
    sm /= max(float(sm.std()), 1e-12)
    sm = sm[pad : pad + nh, pad : pad + nw]
    return _resample_axis(_resample_axis(sm, 0, hl, step), 1, wl, step)


def _resize_float(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float32 array with PIL."""
    from PIL import Image

    return np.array(
        Image.fromarray(np.ascontiguousarray(img, dtype=np.float32)).resize(
            size_wh, Image.Resampling.BILINEAR
        )
    )


def _resize_u8(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 (h, w) or (h, w, 3) array with PIL."""
    from PIL import Image

    return np.asarray(
        Image.fromarray(np.ascontiguousarray(img)).resize(size_wh, Image.Resampling.BILINEAR)
    )


def _nucleus_stamp(
    rng: np.random.Generator, shape_row: np.ndarray, mpp: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One nucleus stamp: (dy, dx, value) of its non-zero pixels."""
    major_um, minor_um, jitter, strength, vesicular = shape_row
    s = math.exp(rng.normal(0.0, jitter))
    a = max(major_um * s / mpp / 2.0, 0.7)
    b = max(minor_um * s * math.exp(rng.normal(0.0, jitter / 2)) / mpp / 2.0, 0.7)
    th = rng.uniform(0, math.pi)
    r = int(math.ceil(max(a, b))) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    xr = xx * math.cos(th) + yy * math.sin(th)
    yr = -xx * math.sin(th) + yy * math.cos(th)
    rho = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    val = np.clip((1.0 - rho) * min(a, b) + 0.5, 0.0, 1.0)
    val *= 0.75 + 0.25 * rng.random(val.shape)  # chromatin texture
    if vesicular:  # pale centre, dark rim, one nucleolus
        val *= 0.45 + 0.55 * np.clip(rho, 0.0, 1.0) ** 2
        cy, cx = rng.uniform(-0.3, 0.3, 2) * min(a, b)
        val = np.maximum(val, 1.1 * (np.hypot(xr - cx, yr - cy) < max(1.0, 0.22 * min(a, b))))
    val *= strength
    keep = val > 0.02
    return yy[keep].astype(np.int64), xx[keep].astype(np.int64), val[keep].astype(np.float32)


# ----------------------------------------------------------------------------------------------
# slide rendering
# ----------------------------------------------------------------------------------------------
def _layout(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cell_px: int,
    mpp: float,
    tissue_fraction: float,
    tumour_fraction: float,
    type_bias: np.ndarray,
    region_scale_um: float,
) -> np.ndarray:
    """Tissue-type label map on a grid of ``cell_px`` level-0 pixels."""
    hl, wl = shape
    # --- tissue versus glass: a few elliptical blobs with a noisy outline -----------------------
    yy = (np.arange(hl)[:, None] + 0.5) / max(hl, wl)
    xx = (np.arange(wl)[None, :] + 0.5) / max(hl, wl)
    cy0, cx0 = hl / max(hl, wl) / 2, wl / max(hl, wl) / 2
    span_y, span_x = hl / max(hl, wl), wl / max(hl, wl)
    blobs = np.zeros((hl, wl))
    for _ in range(int(rng.integers(1, 4))):
        cy = cy0 + rng.uniform(-0.22, 0.22) * span_y
        cx = cx0 + rng.uniform(-0.22, 0.22) * span_x
        sa = rng.uniform(0.16, 0.30) * min(span_x, span_y) * 1.3
        sb = sa * rng.uniform(0.55, 1.0)
        th = rng.uniform(0, math.pi)
        dx, dy = xx - cx, yy - cy
        u = dx * math.cos(th) + dy * math.sin(th)
        v = -dx * math.sin(th) + dy * math.cos(th)
        blobs = np.maximum(blobs, np.exp(-0.5 * ((u / sa) ** 2 + (v / sb) ** 2)))
    outline = _smooth_field(rng, shape, cell_px, 1.6 * region_scale_um / mpp)
    # rounded-square window keeps tissue off the slide edges without straight cuts
    ry = np.abs(2.0 * yy / span_y - 1.0)
    rx = np.abs(2.0 * xx / span_x - 1.0)
    win = np.clip((1.0 - (rx**4 + ry**4) ** 0.25) / 0.15, 0.0, 1.0)
    tissue_field = blobs * win + 0.22 * outline - 3.0 * (1.0 - win)
    thr = np.quantile(tissue_field, 1.0 - tissue_fraction)
    tissue = tissue_field > thr

    # --- tissue types ------------------------------------------------------------------------
    scale_px = region_scale_um / mpp
    f = {
        name: _smooth_field(rng, shape, cell_px, rel * scale_px)
        for name, rel in _REGION_SCALE_REL.items()
    }
    f["necrosis"] = 0.6 * f["tumour"] + 0.8 * f["necrosis"]  # necrosis sits by the tumour
    others = np.stack([f[n] for n in ("stroma", "immune", "normal", "necrosis")]) + np.asarray(
        type_bias, dtype=np.float64
    ).reshape(4, 1, 1)
    other_label = (np.argmax(others, axis=0) + 2).astype(np.uint8)
    labels = np.where(tissue, other_label, 0).astype(np.uint8)
    if tumour_fraction > 0 and tissue.any():
        d = f["tumour"] - others.max(axis=0)
        cut = np.quantile(d[tissue], 1.0 - tumour_fraction)
        labels[tissue & (d >= cut)] = 1
    return labels


def render_synthetic_slide(
    rng: np.random.Generator,
    size: tuple[int, int],
    mpp: float = 0.5,
    *,
    tissue_fraction: float | None = None,
    tumour_fraction: float | None = None,
    type_bias: Sequence[float] | None = None,
    region_scale_um: float = 120.0,
    label_downsample: int = 4,
    od_shift: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic H&E slide and its tissue-type label map.

    Parameters
    ----------
    rng
        Random generator; the output is a pure function of its state and the arguments.
    size
        Level-0 ``(width, height)`` in pixels.
    mpp
        Microns per pixel; nuclear sizes and region scales are physical, so they scale with it.
    tissue_fraction
        Fraction of the image covered by tissue (default: uniform in 0.4-0.7).
    tumour_fraction
        Fraction of the tissue that is tumour (default: uniform in 0.05-0.75); met exactly on
        the label map.
    type_bias
        Log-odds offsets of stroma, immune, normal and necrosis (default: random).
    region_scale_um
        Correlation length of the tissue-type fields, in microns.
    label_downsample
        Cell size of the label grid in level-0 pixels.
    od_shift
        Called with the label map; may return an ``(h, w, 3)`` optical-density tint added to the
        cytoplasm / matrix of each label cell (the mechanism knobs,
        :mod:`histoviz.data.synthetic.mechanisms`). It draws nothing from ``rng``.

    Returns
    -------
    rgb
        ``(height, width, 3)`` uint8 image.
    labels
        ``(ceil(height / label_downsample), ceil(width / label_downsample))`` uint8 map of
        indices into :data:`TISSUE_TYPES`; the image is rendered from exactly this map.
    """
    w, h = int(size[0]), int(size[1])
    ds = int(label_downsample)
    if w < 1 or h < 1 or ds < 1 or not mpp > 0:
        raise ConfigError(f"render_synthetic_slide: bad size {size}, mpp {mpp} or downsample {ds}")
    for name, val, lo_ok in (
        ("tissue_fraction", tissue_fraction, False),
        ("tumour_fraction", tumour_fraction, True),
    ):
        if val is not None and not ((0.0 <= val < 1.0) if lo_ok else (0.0 < val <= 1.0)):
            raise ConfigError(f"render_synthetic_slide: {name}={val} is outside [0, 1]")
    hl, wl = -(-h // ds), -(-w // ds)
    if tissue_fraction is None:
        tissue_fraction = float(rng.uniform(0.4, 0.7))
    if tumour_fraction is None:
        tumour_fraction = float(rng.uniform(0.05, 0.75))
    if type_bias is None:
        type_bias = np.array([0.3, -0.2, 0.0, -0.8 + 1.2 * tumour_fraction]) + rng.normal(0, 0.4, 4)
    labels = _layout(
        rng,
        (hl, wl),
        ds,
        mpp,
        tissue_fraction,
        tumour_fraction,
        np.asarray(type_bias),
        region_scale_um,
    )
    rgb = _paint(rng, labels, ds, (w, h), mpp, None if od_shift is None else od_shift(labels))
    return rgb, labels


def _paint(
    rng: np.random.Generator, labels: np.ndarray, ds: int, size: tuple[int, int], mpp: float,
    od_shift: np.ndarray | None = None,
) -> np.ndarray:
    """Paint an H&E-like RGB image from a label map (optical densities add, Beer-Lambert)."""
    w, h = size
    hl, wl = labels.shape
    wp, hp = wl * ds, hl * ds
    # per-slide stain variation, tissue only
    stain = np.exp(rng.normal(0.0, 0.04, 3))
    od_tissue = -np.log(_TISSUE_RGB / 255.0)
    od_tissue[1:] *= stain
    od_nuc = -np.log(_NUCLEUS_RGB / 255.0) * np.exp(rng.normal(0.0, 0.04, 3))
    wobble = 1.0 + 0.08 * _smooth_field(rng, (hl, wl), ds, 80.0 / mpp)
    tissue = labels > 0

    # stamps first (fixed number of draws), then nuclei positions
    shape_rows = _NUCLEUS_SHAPE
    stamps = [
        [_nucleus_stamp(rng, shape_rows[a], mpp) for _ in range(_N_STAMP_VARIANTS)]
        for a in range(len(shape_rows))
    ]
    pad = max(int(np.abs(s[0]).max(initial=0)) for row in stamps for s in row)
    pad = max(pad, max(int(np.abs(s[1]).max(initial=0)) for row in stamps for s in row)) + 1

    dens_px = _CELLS_PER_MM2 * (mpp / 1000.0) ** 2
    lam = dens_px[labels] * (ds * ds)
    counts = rng.poisson(lam).ravel()
    cell_idx = np.repeat(np.arange(hl * wl), counts)
    n = cell_idx.size
    ys = (cell_idx // wl + rng.random(n)) * ds
    xs = (cell_idx % wl + rng.random(n)) * ds
    tis = labels.ravel()[cell_idx]
    cum = np.cumsum(_TISSUE_TO_CELL, axis=1)
    ctype = np.minimum((rng.random(n)[:, None] >= cum[tis]).sum(axis=1), len(CELL_TYPES) - 1)
    appearance = np.where(tis == TISSUE_TYPES.index("necrosis"), len(CELL_TYPES), ctype)
    variant = rng.integers(0, _N_STAMP_VARIANTS, n)
    intensity = np.exp(rng.normal(0.0, 0.12, n)).astype(np.float32)
    inside = (xs < w) & (ys < h)

    hmap = np.zeros((h + 2 * pad, w + 2 * pad), dtype=np.float32)
    flat = hmap.reshape(-1)
    stride = w + 2 * pad
    base = (ys.astype(np.int64) + pad) * stride + (xs.astype(np.int64) + pad)
    for a in range(len(shape_rows)):
        for v in range(_N_STAMP_VARIANTS):
            sel = np.flatnonzero(inside & (appearance == a) & (variant == v))
            if sel.size == 0:
                continue
            dy, dx, val = stamps[a][v]
            idx = base[sel, None] + (dy * stride + dx)[None, :]
            vals = intensity[sel, None] * val[None, :]
            cur = flat[idx]
            np.maximum(cur, vals, out=cur)
            flat[idx] = cur
    hmap = hmap[pad : pad + h, pad : pad + w]

    # texture: fine grain everywhere; wavy collagen fibres in stroma
    grain = rng.random((h, w), dtype=np.float32)
    grain -= 0.5
    grain *= 0.3
    grain += 1.0
    theta = rng.uniform(0, math.pi)
    warp_low = _smooth_field(rng, (hl, wl), ds, 30.0 / mpp)
    stroma_low = labels == TISSUE_TYPES.index("stroma")
    if stroma_low.any():
        stroma_w = _resize_u8(stroma_low.astype(np.uint8) * 255, (wp, hp))[:h, :w]
        warp = _resize_float((25.0 * warp_low).astype(np.float32), (wp, hp))[:h, :w]
        k = 2 * math.pi * mpp / 7.0  # fibre period 7 um
        warp += np.arange(w, dtype=np.float32)[None, :] * np.float32(k * math.cos(theta))
        warp += np.arange(h, dtype=np.float32)[:, None] * np.float32(k * math.sin(theta))
        fib = np.sin(warp, out=warp)
        fib *= stroma_w
        fib *= np.float32(0.2 / 255.0)
        grain += fib

    # stain optical densities: low-resolution map upsampled bilinearly (soft region borders)
    od_low = od_tissue[labels] * np.where(tissue, wobble, 1.0)[..., None]
    if od_shift is not None:
        od_low = np.maximum(od_low + np.where(tissue[..., None], od_shift, 0.0), 0.0)
    od_full = _resize_u8(np.clip(od_low * _OD_SCALE + 0.5, 0, 255).astype(np.uint8), (wp, hp))
    od_full = od_full[:h, :w]
    out = np.empty((h, w, 3), dtype=np.uint8)
    for c in range(3):
        od = od_full[..., c].astype(np.float32)
        od *= np.float32(1.0 / _OD_SCALE)
        od *= grain
        od += hmap * np.float32(od_nuc[c])
        np.negative(od, out=od)
        np.exp(od, out=od)
        od *= 255.0
        od += 0.5
        out[..., c] = od.astype(np.uint8)
    return out


def _pyramid(rgb: np.ndarray) -> list[np.ndarray]:
    """Level 0 plus 2x box-downsampled levels while the longest side stays >= 512."""
    levels = [rgb]
    cur = rgb
    while True:
        h, w = cur.shape[:2]
        nh, nw = -(-h // 2), -(-w // 2)
        if max(nh, nw) < 512:
            break
        ph, pw = nh * 2 - h, nw * 2 - w
        src = np.pad(cur, ((0, ph), (0, pw), (0, 0)), mode="edge") if (ph or pw) else cur
        acc = src[0::2, 0::2].astype(np.uint16)
        acc += src[1::2, 0::2]
        acc += src[0::2, 1::2]
        acc += src[1::2, 1::2]
        acc += 2
        acc >>= 2
        cur = acc.astype(np.uint8)
        levels.append(cur)
    return levels


def _write_pyramid_tiff(path: Path, rgb: np.ndarray, mpp: float, quality: int) -> None:
    import tifffile

    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tw:
        for i, lvl in enumerate(_pyramid(rgb)):
            tw.write(
                lvl,
                tile=(256, 256),
                compression="jpeg",
                compressionargs={"level": int(quality)},
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(1e4 / (mpp * 2**i), 1e4 / (mpp * 2**i)),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
