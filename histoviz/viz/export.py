"""Export prediction maps: QuPath GeoJSON detections and pyramidal OME-TIFF heatmaps.

- :func:`write_geojson` writes one QuPath *detection* per patch: a square polygon in level-0
  pixels with ``properties.measurements`` (one entry per exported map) and, for a categorical
  map, ``properties.classification``. QuPath imports it with File > Import objects
  (or drag and drop) on the same slide; :func:`read_geojson` reads it back.
- :func:`write_ome_tiff_heatmap` writes one map as a tiled, pyramidal OME-TIFF that covers the
  whole slide: pixel ``(i, j)`` of level 0 covers level-0 slide pixels
  ``[j * d, (j + 1) * d) x [i * d, (i + 1) * d)`` for the integer downsample ``d`` recorded in
  the metadata, and ``PhysicalSizeX = mpp * d`` so the heatmap has the slide's physical size.
  By default ``d = 1`` (level 0 has exactly the slide's pixel size and pixel count, so QuPath
  and napari overlay it on the slide as they would another scan of it), or the smallest power
  of two that keeps level 0 under :data:`MAX_HEATMAP_PIXELS` for very large slides; every
  further level halves the previous one (as slide pyramids do).
  :func:`heatmap_info` and :func:`heatmap_levels` read it back (metadata; lazy levels), and
  :func:`heatmap_placement` gives the scale and translate that put it on the slide in a
  viewer that centres pixels on integer coordinates (napari).

Both writers are atomic (temporary file, then rename).
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz._atomic import atomic_path
from histoviz._version import __version__
from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

    from histoviz.viz.maps import MapSpec

__all__ = [
    "MAX_HEATMAP_PIXELS",
    "default_heatmap_downsample",
    "heatmap_info",
    "heatmap_levels",
    "heatmap_placement",
    "read_geojson",
    "read_ome_tiff_heatmap",
    "write_geojson",
    "write_ome_tiff_heatmap",
]

logger = logging.getLogger(__name__)

_UUID_NS = uuid.UUID("6f1c3c1e-7d2b-4f7e-9a51-5b1f0f6a1c00")


def _resolve_maps(adata: ad.AnnData, maps: Sequence[MapSpec | str] | None) -> list[Any]:
    from histoviz.viz.maps import MapSpec, PredictionMaps, available_maps, map_values

    pm = PredictionMaps(adata)
    if maps is None:
        specs = [
            MapSpec(kind, key or None)
            for kind, keys in available_maps(pm).items()
            for key in keys
            if kind not in ("dominant_type", "grade_class")
        ]
    else:
        specs = [MapSpec.parse(m) for m in maps]
    return [map_values(pm, s) for s in specs]


def write_geojson(
    adata: ad.AnnData,
    path: str | os.PathLike,
    *,
    maps: Sequence[MapSpec | str] | None = None,
    measurements: Mapping[str, np.ndarray] | None = None,
    classification: tuple[np.ndarray, Sequence[str]] | None = None,
) -> Path:
    """Write patches as QuPath detections with their predicted values.

    Parameters
    ----------
    adata
        Predictions for one slide (:mod:`histoviz.io.predictions` contract).
    path
        Output ``.geojson`` file.
    maps
        Maps to export (:class:`~histoviz.viz.maps.MapSpec` or ``"gene:CD3E"``-style strings).
        Continuous maps become measurements named by their label (``"gene CD3E"``,
        ``"risk"``, ``"P(grade = G3)"``); at most one categorical map (``"dominant_type"``,
        ``"grade_class"``) becomes the detection's classification. Default: every
        continuous map in the file.
    measurements
        Extra measurements ``name -> (N,)`` values.
    classification
        ``(codes, categories)``: per-patch category codes (``-1`` = none) to use as the
        classification instead of a categorical map.

    Returns
    -------
    The path written. A FeatureCollection with one Feature per patch:
    ``geometry`` a closed square Polygon in level-0 pixels, ``properties`` =
    ``{"objectType": "detection", "name": obs_name, "measurements": {...},
    "classification": {"name", "color"}}``. NaN values are left out of ``measurements``.
    """
    from histoviz.viz.colors import legend_entries
    from histoviz.viz.maps import PatchLayout

    layout = PatchLayout.from_adata(adata)
    resolved = _resolve_maps(adata, maps)
    cats = [m for m in resolved if m.categorical]
    if len(cats) + (classification is not None) > 1:
        raise DataError("only one categorical map can be the classification of a detection")
    cols: dict[str, np.ndarray] = {m.label: m.measurement() for m in resolved if not m.categorical}
    for k, v in (measurements or {}).items():
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        if len(arr) != len(layout):
            raise DataError(f"measurement {k!r} has {len(arr)} values for {len(layout)} patches")
        cols[str(k)] = arr
    names = list(cols)
    mat = np.column_stack([cols[k] for k in names]) if names else np.zeros((len(layout), 0))
    cls_names = cls_colors = None
    if classification is not None:
        codes, categories = classification
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        categories = [str(c) for c in categories]
        if len(codes) != len(layout) or (codes.size and codes.max() >= len(categories)):
            raise DataError(f"classification needs {len(layout)} codes below {len(categories)}")
        lut = np.array([*categories, None], dtype=object)
        cls_names = lut[np.where(codes >= 0, codes, len(categories))]
        cls_colors = {c: list(rgb) for c, rgb in legend_entries(categories)}
    elif cats:
        cats_map = cats[0]
        cls_names = cats_map.category_names()
        cls_colors = {c: list(rgb) for c, rgb in legend_entries(cats_map.categories)}
    info = adata.uns.get("histoviz", {})
    ts = layout.tile_size_level0
    obs_names = [str(n) for n in adata.obs_names]

    def features() -> Iterator[str]:
        for i in range(len(layout)):
            x, y = (int(v) for v in layout.coords[i])
            ring = [[x, y], [x + ts, y], [x + ts, y + ts], [x, y + ts], [x, y]]
            meas = {names[j]: float(mat[i, j]) for j in range(len(names)) if math.isfinite(mat[i, j])}
            props: dict[str, Any] = {"objectType": "detection", "name": obs_names[i],
                                     "measurements": meas}
            if cls_names is not None and cls_names[i] is not None:
                props["classification"] = {"name": cls_names[i], "color": cls_colors[cls_names[i]]}
            feat = {
                "type": "Feature",
                "id": str(uuid.uuid5(_UUID_NS, f"{info.get('slide_id', '')}/{obs_names[i]}")),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": props,
            }
            yield json.dumps(feat, separators=(",", ":"))

    header = {
        "slide_id": str(info.get("slide_id", "")),
        "tile_size_level0": int(ts),
        "units": "level-0 pixels",
        "histoviz_version": __version__,
    }
    with atomic_path(path, suffix=".geojson") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{"type":"FeatureCollection","histoviz":')
        fh.write(json.dumps(header, separators=(",", ":")))
        fh.write(',"features":[\n')
        for k, s in enumerate(features()):
            if k:
                fh.write(",\n")
            fh.write(s)
        fh.write("\n]}\n")
    logger.info("wrote %d detections with %d measurements to %s", len(layout), len(names), path)
    return Path(path)


def read_geojson(path: str | os.PathLike) -> pd.DataFrame:
    """Read detections written by :func:`write_geojson` (or exported by QuPath).

    Returns
    -------
    DataFrame, one row per feature: ``name``, ``x``, ``y``, ``width``, ``height`` (the
    polygon's level-0 bounding box), ``classification`` (None when absent) and one column per
    measurement (NaN where a feature lacks it). Accepts QuPath's dict or list-of-pairs
    measurements and a bare list of features.
    """
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: GeoJSON file not found")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not valid JSON ({e})") from e
    feats = doc.get("features") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    if not isinstance(feats, list):
        raise DataError(f"{p}: not a GeoJSON FeatureCollection")
    rows = []
    for k, f in enumerate(feats):
        try:
            geom = f["geometry"]
            ring = geom["coordinates"][0] if geom["type"] == "Polygon" else geom["coordinates"][0][0]
            pts = np.asarray(ring, dtype=np.float64)
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise DataError(f"{p}: feature {k} has no polygon geometry ({e})") from e
        props = f.get("properties") or {}
        meas = props.get("measurements") or {}
        if isinstance(meas, list):
            meas = {m["name"]: m.get("value") for m in meas if isinstance(m, dict) and "name" in m}
        cl = props.get("classification")
        row = {
            "name": props.get("name"),
            "x": pts[:, 0].min(),
            "y": pts[:, 1].min(),
            "width": pts[:, 0].max() - pts[:, 0].min(),
            "height": pts[:, 1].max() - pts[:, 1].min(),
            "classification": cl.get("name") if isinstance(cl, dict) else cl,
        }
        for name, v in meas.items():
            row[str(name)] = np.nan if v is None else float(v)
        rows.append(row)
    base = ["name", "x", "y", "width", "height", "classification"]
    return pd.DataFrame(rows, columns=None if rows else base)


# ------------------------------------------------------------------------------------------------
# OME-TIFF heatmaps
# ------------------------------------------------------------------------------------------------
#: Largest level 0 (pixels) :func:`write_ome_tiff_heatmap` writes by default (8192 x 8192).
MAX_HEATMAP_PIXELS = 8192 * 8192


def default_heatmap_downsample(width: int, height: int, max_pixels: int = MAX_HEATMAP_PIXELS) -> int:
    """The default integer downsample of a heatmap of a ``width x height`` slide.

    ``1`` (the slide's own size) unless that exceeds ``max_pixels``; then the smallest power of
    two that keeps level 0 within it.

    Examples
    --------
    >>> default_heatmap_downsample(2220, 2967), default_heatmap_downsample(100_000, 80_000)
    (1, 16)
    """
    d = 1
    while -(-int(width) // d) * -(-int(height) // d) > max_pixels:
        d *= 2
    return d


def _exact_edges(layout: Any, d: int) -> bool:
    ox, oy = layout.origin
    if not (float(ox).is_integer() and float(oy).is_integer()):
        return False
    return int(layout.cell_size) % d == 0 and int(ox) % d == 0 and int(oy) % d == 0


def write_ome_tiff_heatmap(
    adata: ad.AnnData,
    path: str | os.PathLike,
    values: np.ndarray | MapSpec | str,
    *,
    downsample: int | None = None,
    name: str | None = None,
    categories: Sequence[str] | None = None,
    tile: int = 256,
    compression: str = "zlib",
) -> Path:
    """Write one per-patch map as a pyramidal OME-TIFF aligned to the slide.

    Parameters
    ----------
    adata
        Predictions for one slide; ``uns["histoviz"]`` gives ``slide_dimensions`` (else the
        patch extent is used) and ``mpp`` (else no physical size is written).
    path
        Output file (``.ome.tif``).
    values
        ``(N,)`` per-patch values, or a map (:class:`~histoviz.viz.maps.MapSpec` / string).
        Categorical maps are written as uint16 labels (0 = no patch, ``k + 1`` = category ``k``,
        names in the metadata); continuous ones as float32 with NaN where there is no patch.
    downsample
        Integer level-0 pixels per heatmap pixel. Default
        (:func:`default_heatmap_downsample`): ``1``, a level 0 with exactly the slide's
        dimensions, unless that exceeds :data:`MAX_HEATMAP_PIXELS` pixels. Patch edges fall on
        heatmap pixel edges when ``d`` divides the patch lattice (``exact_patch_edges`` in the
        metadata); otherwise each heatmap pixel shows the patch under its centre.
    name
        Image name (default: the map's label).
    categories
        With an array of ``values``: the values are integer category codes (``-1`` = none) of
        these categories, written as labels.
    tile
        TIFF tile size.
    compression
        TIFF compression (``"zlib"``, ``"zstd"``, ``"none"``...).

    Returns
    -------
    The path written. Level 0 is ``ceil(W / d) x ceil(H / d)`` with ``PhysicalSizeX/Y = mpp *
    d`` um; each further level (a SubIFD) halves the previous one, rounding up, until it fits in
    one tile, with TIFF resolution tags of its own. The OME ``Description`` holds JSON with
    ``downsample``, ``level_downsamples``, ``slide_dimensions``, ``slide_id``, ``mpp``, ``map``,
    ``unit``, ``categories`` and ``exact_patch_edges``.
    """
    import tifffile

    from histoviz.viz.maps import MapSpec, MapValues, PatchLayout, map_values

    layout = PatchLayout.from_adata(adata)
    label = name
    unit = ""
    if isinstance(values, (str, MapSpec)):
        mv: MapValues = map_values(adata, values)
        label = label or mv.label
        unit = mv.unit
        categories = None
        if mv.categorical:
            categories = mv.categories
            per_patch = np.where(mv.values >= 0, mv.values + 1, 0).astype(np.uint16)
        else:
            per_patch = mv.values.astype(np.float32)
    elif categories is not None:
        codes = np.asarray(values).reshape(-1)
        categories = tuple(str(c) for c in categories)
        if codes.size and (np.nanmax(codes) >= len(categories)):
            raise DataError(f"category codes go up to {int(np.nanmax(codes))} for {len(categories)} categories")
        per_patch = np.where(codes >= 0, codes + 1, 0).astype(np.uint16)
    else:
        per_patch = np.asarray(values, dtype=np.float32).reshape(-1)
    if len(per_patch) != len(layout):
        raise DataError(f"{len(per_patch)} values for {len(layout)} patches")
    label = label or "map"
    categorical = per_patch.dtype == np.uint16
    dtype = np.uint16 if categorical else np.float32
    fill = 0 if categorical else np.nan

    info = adata.uns.get("histoviz", {})
    dims = info.get("slide_dimensions")
    if dims is not None:
        W, H = (int(v) for v in np.asarray(dims).reshape(-1)[:2])
    else:
        x1, y1 = layout.coords.max(axis=0) + layout.tile_size_level0
        W, H = int(x1), int(y1)
    mpp = info.get("mpp")
    try:
        mpp = float(mpp) if mpp is not None and float(mpp) > 0 else None
    except (TypeError, ValueError):
        mpp = None
    if downsample is not None and (isinstance(downsample, bool) or int(downsample) != downsample
                                   or int(downsample) < 1):
        raise DataError(f"downsample must be an integer >= 1, got {downsample!r}")
    d = int(downsample) if downsample is not None else default_heatmap_downsample(W, H)
    w0, h0 = -(-W // d), -(-H // d)

    lut_vals = np.concatenate([per_patch.astype(dtype), np.array([fill], dtype=dtype)])
    lookup = np.where(layout.lookup >= 0, layout.lookup, len(per_patch))
    rows_n, cols_n = layout.shape
    ox, oy = layout.origin
    cell = float(layout.cell_size)

    def cells(start: int, n: int, f: float, origin: float, limit: int) -> np.ndarray:
        centres = (np.arange(start, start + n, dtype=np.float64) + 0.5) * f
        c = np.floor((centres - origin) / cell).astype(np.int64)
        return np.where((c >= 0) & (c < limit), c, -1)

    def tiles(w: int, h: int, f: float) -> Iterator[np.ndarray]:
        for ty in range(0, h, tile):
            r = cells(ty, tile, f, oy, rows_n)
            for tx in range(0, w, tile):
                c = cells(tx, tile, f, ox, cols_n)
                idx = np.full((tile, tile), len(per_patch), dtype=np.int64)
                ok_r, ok_c = r >= 0, c >= 0
                if ok_r.any() and ok_c.any():
                    sub = lookup[np.ix_(r[ok_r], c[ok_c])]
                    idx[np.ix_(ok_r, ok_c)] = sub
                yield lut_vals[idx]

    sizes = [(w0, h0)]
    while max(sizes[-1]) > tile:
        pw, ph = sizes[-1]
        sizes.append((max(1, -(-pw // 2)), max(1, -(-ph // 2))))
    meta_json = {
        "histoviz_version": __version__,
        "slide_id": str(info.get("slide_id", "")),
        "slide_dimensions": [W, H],
        "mpp": mpp,
        "downsample": d,
        "level_downsamples": [d * 2**k for k in range(len(sizes))],
        "tile_size_level0": int(layout.tile_size_level0),
        "map": label,
        "unit": unit,
        "categories": list(categories or ()),
        "fill": "0" if categorical else "NaN",
        "exact_patch_edges": _exact_edges(layout, d),
        "simulated": bool(info.get("simulated", False)),
    }
    metadata: dict[str, Any] = {"axes": "YX", "Name": label, "Description": json.dumps(meta_json),
                                "Channel": {"Name": [label]}}
    if mpp:
        metadata.update(PhysicalSizeX=mpp * d, PhysicalSizeXUnit="µm",
                        PhysicalSizeY=mpp * d, PhysicalSizeYUnit="µm")
    comp = None if compression in (None, "none") else compression
    with atomic_path(path, suffix=".ome.tif") as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
        for lvl, (w, h) in enumerate(sizes):
            f = d * 2**lvl
            kw: dict[str, Any] = {}
            if mpp:
                kw = {"resolution": (1e4 / (mpp * f), 1e4 / (mpp * f)), "resolutionunit": "CENTIMETER"}
            if lvl == 0:
                tw.write(tiles(w, h, f), shape=(h, w), dtype=dtype, tile=(tile, tile),
                         compression=comp, subifds=len(sizes) - 1, metadata=metadata,
                         photometric="minisblack", **kw)
            else:
                tw.write(tiles(w, h, f), shape=(h, w), dtype=dtype, tile=(tile, tile),
                         compression=comp, subfiletype=1, metadata=None,
                         photometric="minisblack", **kw)
    logger.info("wrote %s heatmap %dx%d (downsample %d, %d levels) to %s",
                label, w0, h0, d, len(sizes), path)
    return Path(path)


def read_ome_tiff_heatmap(path: str | os.PathLike, level: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a heatmap written by :func:`write_ome_tiff_heatmap`: ``(array, metadata dict)``."""
    import re

    import tifffile

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: heatmap file not found")
    with tifffile.TiffFile(p) as tf:
        series = tf.series[0]
        if not 0 <= level < len(series.levels):
            raise DataError(f"{p}: level {level} out of range 0..{len(series.levels) - 1}")
        arr = series.levels[level].asarray()
        ome = tf.ome_metadata or ""
    meta: dict[str, Any] = {}
    m = re.search(r"<Description>(.*?)</Description>", ome, flags=re.S)
    if m:
        import html

        try:
            meta = json.loads(html.unescape(m.group(1)))
        except json.JSONDecodeError:
            meta = {}
    m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
    meta["physical_size_x"] = float(m.group(1)) if m else None
    meta["n_levels"] = len(series.levels)
    return arr, meta


def heatmap_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """Metadata of a heatmap written by :func:`write_ome_tiff_heatmap`, or ``None`` for any other file.

    Reads the TIFF header only. The dict is the JSON of the OME ``Description`` plus
    ``physical_size_x`` (um), ``shape`` of level 0 and ``level_shapes``.
    """
    import html
    import re

    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(p) as tf:
            ome = tf.ome_metadata or ""
            if "histoviz_version" not in ome:
                return None
            series = tf.series[0]
            shapes = [tuple(int(v) for v in lv.shape) for lv in series.levels]
    except (OSError, ValueError, IndexError, tifffile.TiffFileError):
        return None
    m = re.search(r"<Description>(.*?)</Description>", ome, flags=re.S)
    try:
        meta = json.loads(html.unescape(m.group(1))) if m else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or "downsample" not in meta:
        return None
    m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
    meta["physical_size_x"] = float(m.group(1)) if m else None
    meta["shape"] = shapes[0]
    meta["level_shapes"] = shapes
    return meta


def heatmap_levels(path: str | os.PathLike) -> list[Any]:
    """The pyramid levels of a heatmap as lazy arrays (zarr, read tile by tile), level 0 first."""
    import tifffile
    import zarr

    store = tifffile.imread(Path(path), aszarr=True)
    g = zarr.open(store, mode="r")
    if hasattr(g, "shape"):  # a single level
        return [g]
    return [g[k] for k in sorted(g.keys(), key=int)]


def heatmap_placement(
    meta: Mapping[str, Any], slide_scale: Sequence[float] | None = None
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Scale and translate ``(y, x)`` that put a heatmap's level 0 over its slide.

    Parameters
    ----------
    meta
        :func:`heatmap_info` of the heatmap.
    slide_scale
        World size of one level-0 slide pixel (default ``(mpp, mpp)`` from the metadata, or
        ``(1, 1)`` when it has none).

    Notes
    -----
    Viewers that centre data pixel ``i`` at ``translate + scale * i`` (napari) put a slide's
    level-0 pixel ``x`` at ``s * x``; heatmap pixel ``j`` covers level-0 ``[j d, (j + 1) d)``, whose
    centre is level-0 ``(j + 0.5) d - 0.5``, hence ``scale = s d`` and ``translate = s (d - 1) / 2``.
    """
    d = float(meta["downsample"])
    if slide_scale is None:
        mpp = meta.get("mpp")
        slide_scale = (float(mpp), float(mpp)) if mpp else (1.0, 1.0)
    sy, sx = (float(v) for v in slide_scale[-2:])
    return (sy * d, sx * d), (sy * (d - 1) / 2.0, sx * (d - 1) / 2.0)
