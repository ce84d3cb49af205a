"""Layer-data helpers shared by the reader, the sample data and the widget (napari-side only).

Everything computed lives in :mod:`histoviz.viz`; this module turns it into napari layer
arguments and reads back what a slide layer says about its slide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari.layers

    from histoviz.io.slide import SlideReader
    from histoviz.viz.maps import MapValues, PatchLayout

__all__ = [
    "META_KEY",
    "ROLE_CATEGORICAL",
    "ROLE_CONTINUOUS",
    "ROLE_PINNED",
    "ROLE_SELECTION",
    "SlideInfo",
    "layout_metadata",
    "map_layer_data",
    "slide_info",
    "slide_info_from_reader",
    "slide_layer_data",
]

#: key of the dict that histoviz puts in ``layer.metadata``
META_KEY = "histoviz"
ROLE_SLIDE = "slide"
ROLE_CONTINUOUS = "map"
ROLE_CATEGORICAL = "categories"
ROLE_SELECTION = "selection"
ROLE_PINNED = "pinned"
UM = "micrometer"


@dataclass(frozen=True)
class SlideInfo:
    """What the viewer knows about a slide layer."""

    name: str
    slide_id: str | None
    dimensions: tuple[int, int]
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: tuple[Any, ...] | None
    path: str | None
    mpp: float | None


def slide_layer_data(
    reader: SlideReader, *, predictions: str | None = None
) -> tuple[list[Any], dict[str, Any], str]:
    """Layer data tuple of a slide: lazy multiscale RGB in micrometres (pixels without mpp)."""
    from histoviz.io.pyramid import display_levels

    levels = display_levels(reader)
    mpp = reader.mpp
    meta = {
        "role": ROLE_SLIDE,
        "slide_id": reader.slide_id,
        "path": str(reader.path) if reader.path else None,
        "dimensions": tuple(int(v) for v in reader.dimensions),
        "mpp": mpp,
        "predictions": predictions,
    }
    kwargs: dict[str, Any] = {
        "name": reader.slide_id,
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "metadata": {META_KEY: meta},
    }
    if mpp:
        kwargs["scale"] = (mpp, mpp)
        kwargs["units"] = (UM, UM)
    return levels, kwargs, "image"


def slide_info(layer: napari.layers.Layer) -> SlideInfo:
    """Slide facts of an image layer (histoviz metadata when present, else its shape)."""
    meta = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    dims = meta.get("dimensions") or (shape[-1], shape[-2])
    try:
        units = tuple(layer.units)
    except AttributeError:  # pragma: no cover - older napari
        units = None
    return SlideInfo(
        name=layer.name,
        slide_id=meta.get("slide_id"),
        dimensions=(int(dims[0]), int(dims[1])),
        scale=(float(layer.scale[-2]), float(layer.scale[-1])),
        translate=(float(layer.translate[-2]), float(layer.translate[-1])),
        units=units[-2:] if units else None,
        path=meta.get("path"),
        mpp=meta.get("mpp"),
    )


def slide_info_from_reader(reader: SlideReader) -> SlideInfo:
    """The :class:`SlideInfo` of the layer that :func:`slide_layer_data` makes for ``reader``."""
    mpp = reader.mpp
    return SlideInfo(
        name=reader.slide_id,
        slide_id=reader.slide_id,
        dimensions=(int(reader.dimensions[0]), int(reader.dimensions[1])),
        scale=(mpp, mpp) if mpp else (1.0, 1.0),
        translate=(0.0, 0.0),
        units=(UM, UM) if mpp else None,
        path=str(reader.path) if reader.path else None,
        mpp=mpp,
    )


def layout_metadata(layout: PatchLayout, adata_info: dict[str, Any]) -> dict[str, Any]:
    """What a map layer must carry so that a writer can rebuild per-patch values from it."""
    return {
        "coords": layout.coords,
        "tile_size_level0": int(layout.tile_size_level0),
        "cell_size": int(layout.cell_size),
        "slide_id": str(adata_info.get("slide_id", "")),
        "slide_dimensions": adata_info.get("slide_dimensions"),
        "mpp": adata_info.get("mpp"),
    }


def map_layer_data(
    layout: PatchLayout,
    mv: MapValues,
    info: SlideInfo | None,
    *,
    role: str,
    adata_info: dict[str, Any],
    name: str | None = None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """Layer data tuple of one map: an Image (continuous) or Labels (categorical) raster."""
    from napari.utils.colormaps import DirectLabelColormap

    from histoviz.viz.colors import label_color_dict

    scale = info.scale if info else (1.0, 1.0)
    translate = info.translate if info else (0.0, 0.0)
    pl = layout.placement(scale, translate)
    meta = {
        "role": role,
        "map": str(mv.spec),
        "label": mv.label,
        "categories": list(mv.categories),
        "layout": layout_metadata(layout, adata_info),
    }
    kwargs: dict[str, Any] = {
        "name": name or f"map: {mv.label}",
        "scale": pl.scale,
        "translate": pl.translate,
        "metadata": {META_KEY: meta},
    }
    if info is not None and info.units:
        kwargs["units"] = info.units
    if mv.categorical:
        kwargs["colormap"] = DirectLabelColormap(color_dict=label_color_dict(len(mv.categories)))
        kwargs["opacity"] = 0.6
        return layout.label_raster(mv.values), kwargs, "labels"
    kwargs.update(
        colormap=mv.colormap,
        contrast_limits=mv.contrast_limits,
        opacity=0.75,
        interpolation2d="nearest",
        blending="translucent",
    )
    return layout.raster(mv.values), kwargs, "image"
