"""npe2 reader: whole-slide images (through :func:`histoviz.io.open_slide`) and prediction files.

- A slide (SVS, NDPI, MRXS, SCN, BIF, TIFF, OME-TIFF, ...) opens as one lazy multiscale RGB
  layer in micrometres (pixels when the file has no resolution).
- A heatmap OME-TIFF exported by histoviz opens placed over its slide (scale and translate from
  its downsample and physical size).
- A histoviz prediction ``.h5ad`` opens its slide (``uns["histoviz"]["slide_path"]``, when the
  file is still there) and the first map; the "Prediction maps" widget then picks the
  predictions up from the slide layer.

As napari expects, the reader returns ``None`` for files it cannot read (so another reader can
try) instead of raising.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_plugin._layers import (
    ROLE_CATEGORICAL,
    ROLE_CONTINUOUS,
    heatmap_layer_data,
    map_layer_data,
    slide_info_from_reader,
    slide_layer_data,
)

__all__ = ["get_reader", "read_heatmap", "read_predictions_file", "read_slide"]

logger = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]


def _single(path: str | os.PathLike | list[Any]) -> str | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return str(path)


def _is_prediction_file(path: str) -> bool:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return "uns" in f and "histoviz" in f["uns"]
    except (OSError, ValueError):
        return False


def _is_heatmap(path: str) -> bool:
    from histoviz.viz.export import heatmap_info

    return heatmap_info(path) is not None


def read_heatmap(path: str | list[str]) -> list[LayerData]:
    """Open a histoviz heatmap OME-TIFF placed over its slide (see ``heatmap_layer_data``)."""
    p = _single(path)
    return [] if p is None else [heatmap_layer_data(p)]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader function for ``path``, or ``None`` when histoviz cannot open it."""
    p = _single(path)
    if p is None or not (Path(p).is_file() or os.path.islink(p)):  # a broken link is explained below
        return None
    if p.lower().endswith(".h5ad"):
        from napari_plugin._spots import spot_reader  # spot files and per-spot predictions: circles

        return spot_reader(p) or (read_predictions_file if _is_prediction_file(p) else None)
    if p.lower().endswith((".ome.tif", ".ome.tiff")) and _is_heatmap(p):
        return read_heatmap
    from histoviz.errors import HistovizError
    from histoviz.io import open_slide
    from histoviz.io.open import SLIDE_SUFFIXES

    try:
        open_slide(p).close()
    except (HistovizError, OSError, ValueError) as e:
        if Path(p).suffix.lower() in SLIDE_SUFFIXES:
            # a file named as a slide: say why in napari's notifications (one line), then decline
            import warnings

            warnings.warn(f"histoviz cannot open {e}", UserWarning, stacklevel=2)
        else:
            logger.info("histoviz cannot open %s: %s", p, e)
        return None
    return read_slide


def read_slide(path: str | list[str]) -> list[LayerData]:
    """Open a slide as one lazy multiscale image layer (in um when the mpp is known)."""
    from histoviz.io import open_slide

    p = _single(path)
    if p is None:
        return []
    reader = open_slide(p)
    return [slide_layer_data(reader)]


def read_predictions_file(path: str | list[str], *, first_map: str | None = None) -> list[LayerData]:
    """Open a prediction ``.h5ad``: its slide (when found) and its most useful map
    (:func:`histoviz.viz.maps.default_map`, or ``first_map``)."""
    from histoviz.io import open_slide
    from histoviz.io.predictions import read_predictions
    from histoviz.viz.maps import PatchLayout, available_maps, default_map, map_values

    p = _single(path)
    if p is None:
        return []
    adata = read_predictions(p)
    info = dict(adata.uns["histoviz"])
    layers: list[LayerData] = []
    sinfo = None
    slide_path = info.get("slide_path")
    if slide_path and Path(str(slide_path)).is_file():
        reader = open_slide(str(slide_path))
        layers.append(slide_layer_data(reader, predictions=str(Path(p).resolve())))
        sinfo = slide_info_from_reader(reader)
    else:
        logger.warning("%s: its slide %r is not on this machine; showing the maps in pixels",
                       p, slide_path)
    maps = available_maps(adata)
    spec = None
    if first_map is not None:
        kind, _, key = first_map.partition(":")
        if key in maps.get(kind, []) or (not key and kind in maps):
            spec = first_map
    if spec is None and maps:
        spec = str(default_map(adata))
    if spec is not None:
        layout = PatchLayout.from_adata(adata)
        mv = map_values(adata, spec)
        role = ROLE_CATEGORICAL if mv.categorical else ROLE_CONTINUOUS
        data, kwargs, ltype = map_layer_data(layout, mv, sinfo, role=role, adata_info=info)
        kwargs["metadata"]["histoviz"]["predictions"] = str(Path(p).resolve())
        layers.append((data, kwargs, ltype))
    return layers
