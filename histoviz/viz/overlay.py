"""Static overlays: a prediction map drawn over the slide thumbnail (PNG for reports, README,
the CLI and the dashboard). No Qt, no Streamlit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from histoviz._atomic import atomic_path

if TYPE_CHECKING:
    import anndata as ad

    from histoviz.io.slide import SlideReader
    from histoviz.viz.maps import MapSpec

__all__ = ["render_overlay", "save_overlay"]


def render_overlay(
    reader: SlideReader,
    adata: ad.AnnData,
    spec: MapSpec | str,
    *,
    max_size: int = 1024,
    opacity: float = 0.6,
    colormap: str | None = None,
) -> tuple[np.ndarray, dict]:
    """Blend one prediction map over the slide's thumbnail.

    Parameters
    ----------
    reader
        The slide the predictions belong to.
    adata
        Prediction AnnData (:mod:`histoviz.io.predictions` contract).
    spec
        Which map, e.g. ``"gene:MKI67"``, ``"risk"``, ``"dominant_cell_type"``.
    max_size
        Longest side of the thumbnail in pixels.
    opacity
        Opacity of the map where it has values.
    colormap
        Override the map's default colormap (continuous maps).

    Returns
    -------
    ``(rgb, info)``: the blended ``(H, W, 3)`` uint8 image and a dict with the map's label,
    colormap, contrast limits, categories (with colours) and the thumbnail scale.
    """
    from histoviz.viz.colors import apply_colormap, category_colors
    from histoviz.viz.maps import PatchLayout, map_values

    mv = map_values(adata, spec)
    layout = PatchLayout.from_adata(adata)
    thumb = reader.get_thumbnail(max_size)
    h, w = thumb.shape[:2]
    sx = reader.dimensions[0] / w  # level-0 px per thumbnail px
    sy = reader.dimensions[1] / h
    xs = (np.arange(w) + 0.5) * sx
    ys = (np.arange(h) + 0.5) * sy
    cols = np.floor((xs - layout.origin[0]) / layout.cell_size).astype(np.int64)
    rows = np.floor((ys - layout.origin[1]) / layout.cell_size).astype(np.int64)
    okc = (cols >= 0) & (cols < layout.shape[1])
    okr = (rows >= 0) & (rows < layout.shape[0])
    idx = np.full((h, w), -1, np.int64)
    idx[np.ix_(okr, okc)] = layout.lookup[np.ix_(rows[okr], cols[okc])]
    has = idx >= 0
    info: dict = {"label": mv.label, "scale": (sx, sy)}
    if mv.categorical:
        pal = np.rint(category_colors(len(mv.categories))[:, :3] * 255).astype(np.uint8)
        codes = np.where(has, mv.values[np.maximum(idx, 0)], -1)
        has &= codes >= 0
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[has] = pal[codes[has]]
        info["categories"] = {c: tuple(int(v) for v in pal[k]) for k, c in enumerate(mv.categories)}
    else:
        cmap = colormap or mv.colormap
        vals = np.where(has, mv.values[np.maximum(idx, 0)], np.nan)
        rgba = apply_colormap(vals, cmap, mv.contrast_limits)
        has &= rgba[..., 3] > 0
        rgb = rgba[..., :3]
        info.update(colormap=cmap, contrast_limits=tuple(float(v) for v in mv.contrast_limits))
    out = thumb.astype(np.float32).copy()
    out[has] = (1 - opacity) * out[has] + opacity * rgb[has].astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), info


def save_overlay(
    reader: SlideReader,
    adata: ad.AnnData,
    spec: MapSpec | str,
    path: str | os.PathLike,
    **kwargs,
) -> Path:
    """:func:`render_overlay` plus a title and a colour bar or legend, written as PNG."""
    from PIL import Image, ImageDraw

    from histoviz.viz.colors import colorbar_image

    img, info = render_overlay(reader, adata, spec, **kwargs)
    h, w = img.shape[:2]
    pad = 46 if "colormap" in info else 22 + 16 * len(info.get("categories", {}))
    canvas = Image.new("RGB", (max(w, 260), h + pad), "white")
    canvas.paste(Image.fromarray(img), (0, 0))
    d = ImageDraw.Draw(canvas)
    d.text((4, h + 4), f"{reader.slide_id}: {info['label']}", fill="black")
    if "colormap" in info:
        bar = colorbar_image(info["colormap"], width=200, height=12)
        canvas.paste(Image.fromarray(bar), (4, h + 20))
        lo, hi = info["contrast_limits"]
        d.text((210, h + 20), f"{lo:.3g} .. {hi:.3g}", fill="black")
    else:
        for k, (name, col) in enumerate(info.get("categories", {}).items()):
            y = h + 20 + 16 * k
            d.rectangle((4, y, 16, y + 12), fill=col)
            d.text((22, y), str(name), fill="black")
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
