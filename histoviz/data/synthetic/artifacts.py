"""Slide artefacts for the synthetic generator: pen marks, debris, air bubbles, faint tissue.

Real slides carry things tissue detection must not mistake for tissue (marker ink drawn on the
glass, dust and debris, the rims of air bubbles) and tissue it must not miss (faintly stained
regions). :func:`paint_artifacts` paints them onto a rendered slide and returns where they
are, at the resolution of the label map, so masks can be scored against truth.

The painting draws from its own random stream: a slide rendered without artefacts is
unchanged, and turning artefacts on changes nothing else of the cohort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ARTIFACT_CODES", "ArtifactMaps", "paint_artifacts"]

#: codes of the ``artifact`` truth map
ARTIFACT_CODES = {"none": 0, "ink": 1, "debris": 2, "bubble": 3}

# optical density per unit of ink (RGB), as seen through the glass
_INK_OD = {
    "blue": np.array([1.55, 0.95, 0.18]),
    "green": np.array([1.25, 0.35, 0.95]),
    "black": np.array([1.9, 1.85, 1.75]),
}
_DEBRIS_OD = (np.array([0.9, 1.05, 1.3]), np.array([1.2, 1.2, 1.15]), np.array([1.6, 1.6, 1.6]))


@dataclass
class ArtifactMaps:
    """Where the artefacts are, on the label grid (``label_downsample`` level-0 px per cell).

    Attributes
    ----------
    artifact
        uint8 map of :data:`ARTIFACT_CODES` (a cell counts when half of it is covered).
    faint
        bool map of the tissue rendered faint.
    """

    artifact: np.ndarray
    faint: np.ndarray


def _stroke(rng: np.random.Generator, hl: int, wl: int, width: float) -> np.ndarray:
    """Coverage (0..1) of one smooth pen stroke on an ``(hl, wl)`` grid."""
    from scipy.ndimage import distance_transform_edt

    n_ctrl = int(rng.integers(3, 6))
    pts = np.stack([rng.uniform(0.05, 0.95, n_ctrl) * wl, rng.uniform(0.05, 0.95, n_ctrl) * hl], 1)
    t = np.linspace(0.0, 1.0, 40 * n_ctrl)
    # Catmull-Rom-like smoothing through the control points: piecewise-linear then smoothed
    seg = np.interp(t * (n_ctrl - 1), np.arange(n_ctrl), np.arange(n_ctrl))
    i0 = np.minimum(seg.astype(int), n_ctrl - 2)
    f = (seg - i0)[:, None]
    path = pts[i0] * (1 - f) + pts[i0 + 1] * f
    k = 9
    ker = np.ones(k) / k
    path = np.stack([np.convolve(np.pad(path[:, j], k // 2, mode="edge"), ker, "valid")
                     for j in range(2)], 1)
    line = np.zeros((hl, wl), bool)
    xs = np.clip(np.round(path[:, 0]).astype(int), 0, wl - 1)
    ys = np.clip(np.round(path[:, 1]).astype(int), 0, hl - 1)
    # densify between consecutive samples
    for (x0, y0), (x1, y1) in zip(zip(xs[:-1], ys[:-1]), zip(xs[1:], ys[1:])):
        n = max(abs(x1 - x0), abs(y1 - y0)) + 1
        line[np.linspace(y0, y1, n).round().astype(int), np.linspace(x0, x1, n).round().astype(int)] = True
    d = distance_transform_edt(~line)
    half = width / 2.0
    return np.clip((half + 0.75 - d) / 1.5, 0.0, 1.0)


def _blob(rng: np.random.Generator, shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    """Coverage of an irregular blob of radius ``r`` (label cells)."""
    hl, wl = shape
    yy, xx = np.ogrid[:hl, :wl]
    ang = np.arctan2(yy - cy, xx - cx)
    wob = 1.0 + sum(rng.uniform(0, 0.25) * np.cos(k * ang + rng.uniform(0, 2 * math.pi))
                    for k in (2, 3, 5))
    d = np.hypot(yy - cy, xx - cx) / (r * wob)
    return np.clip((1.0 - d) * r / 1.0 + 0.5, 0.0, 1.0)


def paint_artifacts(
    rng: np.random.Generator,
    rgb: np.ndarray,
    labels: np.ndarray,
    label_downsample: int,
    mpp: float,
    *,
    pen_marks: int = 0,
    debris: int = 0,
    bubbles: int = 0,
    faint_fraction: float = 0.0,
) -> tuple[np.ndarray, ArtifactMaps]:
    """Paint artefacts onto a rendered slide.

    Parameters
    ----------
    rng
        Random generator of the artefacts (a stream of its own).
    rgb
        ``(h, w, 3)`` uint8 slide; modified in place and returned.
    labels
        Tissue-type label map of the slide (0 = glass), ``label_downsample`` px per cell.
    label_downsample
        Level-0 pixels per label cell.
    mpp
        Microns per level-0 pixel (sizes are physical).
    pen_marks
        Number of marker strokes (cycling blue, green, black), drawn across tissue and glass.
    debris
        Number of debris particles (dark grey or brown, 15-150 um), mostly on the glass.
    bubbles
        Number of air-bubble rims (dark thin rings, 100-300 um across).
    faint_fraction
        Fraction of the tissue area rendered with a quarter to a half of its stain.

    Returns
    -------
    The painted ``rgb`` and the :class:`ArtifactMaps` truth.
    """
    h, w = rgb.shape[:2]
    hl, wl = labels.shape
    ds = int(label_downsample)
    cell_um = ds * mpp
    tissue = labels > 0
    # per-cell optical-density factor for faint tissue, and added OD per channel for artefacts
    scale = np.ones((hl, wl), np.float32)
    faint = np.zeros((hl, wl), bool)
    if faint_fraction > 0 and tissue.any():
        from scipy.ndimage import gaussian_filter

        field = gaussian_filter(rng.standard_normal((hl, wl)), max(2.0, 60.0 / cell_um))
        cut = np.quantile(field[tissue], 1.0 - faint_fraction)
        faint = tissue & (field >= cut)
        scale[faint] = rng.uniform(0.3, 0.45)
    add = np.zeros((hl, wl, 3), np.float32)
    code = np.zeros((hl, wl), np.uint8)
    colours = ("blue", "green", "black")
    for i in range(int(pen_marks)):
        width = rng.uniform(30.0, 70.0) / cell_um  # 30-70 um marker line on these small slides
        cov = _stroke(rng, hl, wl, max(width, 2.0)) * rng.uniform(0.75, 1.0)
        add += cov[..., None] * _INK_OD[colours[i % 3]][None, None, :].astype(np.float32)
        code[cov >= 0.5] = ARTIFACT_CODES["ink"]
    for _ in range(int(debris)):
        r = rng.uniform(8.0, 75.0) / cell_um
        # debris lies on the glass 80% of the time
        for _try in range(20):
            cy, cx = rng.uniform(0, hl), rng.uniform(0, wl)
            if not tissue[int(cy), int(cx)] or rng.random() < 0.2:
                break
        cov = _blob(rng, (hl, wl), cy, cx, max(r, 1.0))
        od = _DEBRIS_OD[int(rng.integers(0, len(_DEBRIS_OD)))] * rng.uniform(0.6, 1.0)
        add += cov[..., None] * od[None, None, :].astype(np.float32)
        code[(cov >= 0.5) & (code == 0)] = ARTIFACT_CODES["debris"]
    yy, xx = np.ogrid[:hl, :wl]
    for _ in range(int(bubbles)):
        r = rng.uniform(50.0, 150.0) / cell_um
        cy, cx = rng.uniform(r, max(r + 1, hl - r)), rng.uniform(r, max(r + 1, wl - r))
        d = np.hypot(yy - cy, xx - cx)
        rim = np.clip(1.0 - np.abs(d - r) / max(5.0 / cell_um, 0.8), 0.0, 1.0)
        add += rim[..., None] * np.array([1.1, 1.1, 1.05], np.float32)[None, None, :]
        code[(rim >= 0.5) & (code == 0)] = ARTIFACT_CODES["bubble"]
    if not faint.any() and not add.any():
        return rgb, ArtifactMaps(code, faint)

    from PIL import Image

    def up(a: np.ndarray) -> np.ndarray:  # label grid -> level-0 pixels, bilinear
        return np.asarray(Image.fromarray(np.ascontiguousarray(a, np.float32)).resize(
            (wl * ds, hl * ds), Image.Resampling.BILINEAR))[:h, :w]

    scale_full = up(scale)
    lut = (-np.log((np.arange(256, dtype=np.float32) + 0.5) / 256.0)).astype(np.float32)
    for c in range(3):
        add_c = up(add[..., c])
        for r0 in range(0, h, 1024):  # row blocks: bounded temporaries on large slides
            r1 = min(h, r0 + 1024)
            od = lut[rgb[r0:r1, :, c]]
            od *= scale_full[r0:r1]
            od += add_c[r0:r1]
            rgb[r0:r1, :, c] = np.clip(np.rint(256.0 * np.exp(-od) - 0.5), 0, 255).astype(np.uint8)
    return rgb, ArtifactMaps(code, faint)
