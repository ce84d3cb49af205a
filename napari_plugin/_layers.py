"""Layer-data helpers shared by the reader, the sample data and the widget (napari-side only).

Everything computed lives in :mod:`histoviz.viz`; this module turns it into napari layer
arguments and reads back what a slide layer says about its slide.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari.layers

    from histoviz.io.slide import SlideReader
    from histoviz.viz.maps import MapValues, PatchLayout

__all__ = [
    "META_KEY",
    "ROLE_COMPARE",
    "ROLE_CATEGORICAL",
    "ROLE_CONTINUOUS",
    "ROLE_CONTOUR",
    "ROLE_PINNED",
    "ROLE_REGIONS",
    "ROLE_SELECTION",
    "ROLE_SLIDE",
    "SlideInfo",
    "esc",
    "heatmap_layer_data",
    "label_features",
    "layer_meta",
    "layout_metadata",
    "make_read_only",
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
ROLE_COMPARE = "compare"
ROLE_CONTOUR = "contour"
ROLE_REGIONS = "regions"
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


def esc(text: Any) -> str:
    """``text`` for a Qt rich-text label: ``<``, ``>`` and ``&`` escaped, quotes kept as they are."""
    import html

    return html.escape(str(text), quote=False)


def layer_meta(layer: Any) -> dict[str, Any]:
    """The histoviz metadata dict of a layer (empty for layers histoviz did not make)."""
    md = getattr(layer, "metadata", None)
    if isinstance(md, dict):
        v = md.get(META_KEY)
        if isinstance(v, dict):
            return v
    return {}


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
        "mpp_source": reader.meta.mpp_source if mpp else None,
        "mpp_sources": {str(k): float(v) for k, v in reader.meta.mpp_sources.items()},
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


def label_features(mv: MapValues) -> Any:
    """napari ``features`` of a category map: napari's status bar then names the class under the
    cursor (label ``k + 1`` is category ``k``; label 0, no patch, has no class)."""
    import pandas as pd

    name = mv.spec.kind if not mv.simulated else f"simulated {mv.spec.kind}"
    return pd.DataFrame({"index": np.arange(len(mv.categories) + 1),
                         name: ["(no patch)", *[str(c) for c in mv.categories]]})


_READ_ONLY: weakref.WeakSet[Any] = weakref.WeakSet()


def make_read_only(layer: napari.layers.Layer) -> None:
    """Keep a category map from being painted: napari re-enables editing whenever the data of a
    Labels layer is replaced, so editing is switched off again on each change."""
    if not hasattr(layer, "editable"):
        return
    layer.editable = False
    if layer in _READ_ONLY:
        return
    ref = weakref.ref(layer)

    def keep(event: Any = None) -> None:
        la = ref()
        if la is not None and la.editable:
            la.editable = False

    layer.events.editable.connect(keep)
    _READ_ONLY.add(layer)


def heatmap_layer_data(path: str) -> tuple[list[Any], dict[str, Any], str]:
    """Layer data tuple of a heatmap OME-TIFF written by histoviz, placed over its slide.

    Level 0 covers the slide at the stated integer downsample ``d``; scale and translate come
    from :func:`histoviz.viz.export.heatmap_placement` (in micrometres when the file has
    physical sizes), so the heatmap lands on the slide opened by the histoviz reader.
    """
    from napari.utils.colormaps import DirectLabelColormap

    from histoviz.viz.colors import label_color_dict
    from histoviz.viz.export import heatmap_info, heatmap_levels, heatmap_placement

    meta = heatmap_info(path)
    if meta is None:
        raise ValueError(f"{path}: not a histoviz heatmap")
    levels = heatmap_levels(path)
    scale, translate = heatmap_placement(meta)
    name = str(meta.get("map") or Path(path).name)
    kwargs: dict[str, Any] = {
        "name": f"heatmap: {name}",
        "scale": scale,
        "translate": translate,
        "multiscale": len(levels) > 1,
        "metadata": {META_KEY: {"role": ROLE_PINNED, "heatmap": dict(meta), "path": str(path)}},
    }
    if meta.get("mpp"):
        kwargs["units"] = (UM, UM)
    data: list[Any] = levels if len(levels) > 1 else levels[0]
    cats = meta.get("categories") or []
    if cats:
        import pandas as pd

        kwargs["colormap"] = DirectLabelColormap(color_dict=label_color_dict(len(cats)))
        kwargs["features"] = pd.DataFrame({"index": np.arange(len(cats) + 1), "class": ["(no patch)", *cats]})
        kwargs["opacity"] = 0.6
        return data, kwargs, "labels"
    from histoviz.viz.maps import display_range

    rng = display_range(np.asarray(levels[-1][:], dtype=np.float64))
    kwargs.update(colormap="viridis", contrast_limits=rng.limits, opacity=0.75, blending="translucent")
    return data, kwargs, "image"


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
        kwargs["features"] = label_features(mv)
        return layout.label_raster(mv.values), kwargs, "labels"
    kwargs.update(
        colormap=mv.colormap,
        contrast_limits=mv.contrast_limits,
        opacity=0.75,
        interpolation2d="nearest",
        blending="translucent",
    )
    return layout.raster(mv.values), kwargs, "image"
