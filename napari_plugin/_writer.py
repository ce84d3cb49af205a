"""npe2 writers: save a histoviz map layer as QuPath GeoJSON or as a pyramidal OME-TIFF.

Only layers made by histoviz (reader, sample data or the "Prediction maps" widget) carry the
patch layout needed to turn the raster back into one value per patch; for any other layer the
writers return ``[]`` (napari then reports that nothing was written). They write what the
layer shows: patches hidden by the widget's threshold are written as "no value" (the widget's
own Export buttons always write every patch). The OME-TIFF has the slide's size and pixel size
(:func:`histoviz.viz.export.write_ome_tiff_heatmap`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from napari_plugin._layers import META_KEY

__all__ = ["write_geojson", "write_ome_tiff"]

logger = logging.getLogger(__name__)


def _patch_values(data: Any, attributes: dict[str, Any]) -> tuple[Any, np.ndarray, dict] | None:
    from histoviz.io.predictions import make_prediction_adata
    from histoviz.viz.maps import PatchLayout

    meta = (attributes.get("metadata") or {}).get(META_KEY) or {}
    lay = meta.get("layout")
    if not lay:
        logger.warning("layer %r was not made by histoviz: no patch layout to export",
                       attributes.get("name"))
        return None
    layout = PatchLayout.from_coords(np.asarray(lay["coords"]), int(lay["tile_size_level0"]),
                                     stride_level0=int(lay["cell_size"]))
    values = layout.values_from_raster(np.asarray(data))
    adata = make_prediction_adata(
        layout.coords,
        slide_id=str(lay.get("slide_id") or "slide"),
        tile_size_level0=layout.tile_size_level0,
        meta={"slide_dimensions": lay.get("slide_dimensions"), "mpp": lay.get("mpp"),
              "stride_level0": layout.cell_size},
    )
    return adata, values, meta


def write_geojson(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a map layer as QuPath detections (one per patch) with its values."""
    from histoviz.viz.export import write_geojson as _write

    got = _patch_values(data, attributes)
    if got is None:
        return []
    adata, values, meta = got
    label = str(meta.get("label") or attributes.get("name") or "value")
    cats = meta.get("categories") or []
    if cats:
        codes = np.asarray(values, dtype=np.int64) - 1  # labels k + 1 -> codes k, 0 -> -1
        _write(adata, path, classification=(codes, cats))
    else:
        _write(adata, path, measurements={label: np.asarray(values, dtype=np.float64)})
    return [path]


def write_ome_tiff(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a map layer as a pyramidal OME-TIFF aligned to its slide."""
    from histoviz.viz.export import write_ome_tiff_heatmap

    got = _patch_values(data, attributes)
    if got is None:
        return []
    adata, values, meta = got
    label = str(meta.get("label") or attributes.get("name") or "map")
    cats = meta.get("categories") or []
    if cats:
        codes = np.asarray(values, dtype=np.int64) - 1
        write_ome_tiff_heatmap(adata, path, codes, name=label, categories=cats)
    else:
        write_ome_tiff_heatmap(adata, path, np.asarray(values, np.float32), name=label)
    return [path]
