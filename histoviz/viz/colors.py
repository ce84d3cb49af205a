"""Colormaps, category palettes, colour bars and legends for prediction maps (no Qt).

Continuous colormap names are matplotlib names that napari also knows, so a front end can pass
the same name to napari, plotly (via :func:`colormap_lut`) or an exported image.

Examples
--------
>>> colormap_lut("gray", 3)[:, 0].round(2).tolist()
[0.0, 0.5, 1.0]
>>> apply_colormap(np.array([0.0, 1.0, np.nan]), "gray", (0.0, 1.0))[:, 3].tolist()
[255, 255, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CONTINUOUS_COLORMAPS",
    "apply_colormap",
    "category_colors",
    "colorbar_image",
    "colormap_lut",
    "label_color_dict",
    "legend_entries",
]

#: Colormaps offered by the front ends (names valid in matplotlib and napari).
CONTINUOUS_COLORMAPS: tuple[str, ...] = (
    "inferno", "magma", "viridis", "plasma", "turbo", "gray", "twilight", "PiYG",
)

# Colour-blind-friendly categorical palette (Okabe-Ito, then tab10 extras).
_PALETTE = np.array(
    [
        (0.902, 0.624, 0.000),  # orange
        (0.337, 0.706, 0.914),  # sky blue
        (0.000, 0.620, 0.451),  # bluish green
        (0.941, 0.894, 0.259),  # yellow
        (0.000, 0.447, 0.698),  # blue
        (0.835, 0.369, 0.000),  # vermillion
        (0.800, 0.475, 0.655),  # reddish purple
        (0.498, 0.498, 0.498),  # grey
        (0.580, 0.404, 0.741),  # purple
        (0.549, 0.337, 0.294),  # brown
        (0.737, 0.741, 0.133),  # olive
        (0.090, 0.745, 0.812),  # cyan
    ]
)


def colormap_lut(name: str, n: int = 256) -> np.ndarray:
    """``(n, 4)`` float RGBA lookup table of a matplotlib colormap."""
    import matplotlib as mpl

    try:
        cmap = mpl.colormaps[name]
    except KeyError:
        raise ValueError(
            f"unknown colormap {name!r}; try one of {', '.join(CONTINUOUS_COLORMAPS)}"
        ) from None
    return np.asarray(cmap(np.linspace(0.0, 1.0, int(n))), dtype=np.float64)


def apply_colormap(
    values: np.ndarray, name: str, contrast_limits: Sequence[float], *, n: int = 256
) -> np.ndarray:
    """Map float values to RGBA uint8 (``NaN`` -> fully transparent), clipping to the limits."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(contrast_limits[0]), float(contrast_limits[1])
    span = hi - lo if hi > lo else 1.0
    t = np.clip((v - lo) / span, 0.0, 1.0)
    ok = np.isfinite(v)
    idx = np.rint(np.where(ok, t, 0.0) * (n - 1)).astype(np.int64)
    rgba = np.rint(colormap_lut(name, n)[idx] * 255).astype(np.uint8)
    rgba[~ok] = 0
    return rgba


def category_colors(n: int) -> np.ndarray:
    """``(n, 4)`` float RGBA colours for ``n`` categories (distinct, colour-blind friendly)."""
    n = int(n)
    if n <= len(_PALETTE):
        rgb = _PALETTE[:n]
    else:
        import colorsys

        rgb = np.array([colorsys.hsv_to_rgb(i / n, 0.65, 0.9) for i in range(n)])
    return np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1) if len(rgb) else np.zeros((0, 4))


def label_color_dict(n: int) -> dict[int | None, tuple[float, float, float, float]]:
    """Label -> RGBA for labels ``1..n`` (category ``k`` is label ``k + 1``); 0 is transparent."""
    cols = category_colors(n)
    out: dict[int | None, tuple[float, float, float, float]] = {
        0: (0.0, 0.0, 0.0, 0.0),
        None: (0.0, 0.0, 0.0, 0.0),
    }
    for k in range(n):
        out[k + 1] = tuple(float(c) for c in cols[k])  # type: ignore[assignment]
    return out


def legend_entries(categories: Sequence[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """``[(category, (r, g, b) 0-255)]`` matching :func:`label_color_dict`."""
    cols = category_colors(len(categories))
    return [
        (str(c), tuple(int(round(v * 255)) for v in cols[k][:3]))  # type: ignore[misc]
        for k, c in enumerate(categories)
    ]


def colorbar_image(name: str, width: int = 256, height: int = 14) -> np.ndarray:
    """A horizontal colour bar, ``(height, width, 3)`` uint8, low values on the left."""
    lut = colormap_lut(name, max(2, int(width)))
    row = np.rint(lut[:, :3] * 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(row[None], (int(height), row.shape[0], 3)))
