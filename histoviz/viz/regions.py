"""Regions of a slide: what the model predicts inside each, and how two regions differ.

A :class:`Region` is one or more polygons in level-0 pixels (``(x, y)``, holes allowed), as a
pathologist draws them in napari or QuPath. A patch belongs to a region when its centre lies
inside. For every continuous map of a prediction file (expression on the training data's
scale, cell-type weights, grade probabilities, survival, risk...):

- :func:`region_table`: per region, the mean over its patches with a bootstrap interval
  (resampling patches), the standard deviation and the number of patches;
- :func:`compare_regions`: the difference of two regions' means with a bootstrap interval
  (each region's patches resampled on their own).

Neighbouring patches are correlated (they share tissue), so an interval over patches is
narrower than one over independent samples would be: read it as "these regions differ on this
slide", not as a statement about patients.

QuPath: :func:`read_qupath_geojson` reads annotations (Polygon / MultiPolygon features,
``name`` and ``classification``), :func:`write_qupath_geojson` writes them back.

Examples
--------
>>> import numpy as np
>>> from histoviz.io.predictions import make_prediction_adata
>>> xy = np.array([[x, 0] for x in range(0, 2240, 224)])
>>> a = make_prediction_adata(xy, slide_id="S", tile_size_level0=224, obs={"risk": np.arange(10.0)})
>>> left = Region.box("left", 0, 0, 1120, 224)
>>> right = Region.box("right", 1120, 0, 2240, 224)
>>> t = region_table(a, [left, right], maps=["risk"])
>>> t[["region", "n_patches", "mean"]].values.tolist()
[['left', 5, 2.0], ['right', 5, 7.0]]
>>> c = compare_regions(a, right, left, maps=["risk"])
>>> float(c["difference"].iloc[0]), bool(c["ci_low"].iloc[0] > 0)
(5.0, True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

    from histoviz.viz.maps import PredictionMaps

__all__ = [
    "MAX_GEOJSON_BYTES",
    "Region",
    "compare_regions",
    "patches_in_region",
    "read_qupath_geojson",
    "region_table",
    "write_qupath_geojson",
    "write_region_table",
]

#: GeoJSON files larger than this are refused before parsing (a slide's annotations are KB-MB).
MAX_GEOJSON_BYTES = 100_000_000
#: Most polygon vertices read from one GeoJSON file.
MAX_VERTICES = 5_000_000


@dataclass(frozen=True)
class Region:
    """A named region: polygons in level-0 pixels, each a tuple of rings (outer first, then holes).

    Attributes
    ----------
    name
        Region name (QuPath's annotation name, else its class).
    polygons
        ``((outer, hole, ...), ...)``, each ring ``(K, 2)`` float ``(x, y)``.
    classification
        QuPath class (``"Tumor"``, ``"Stroma"``) or ``None``.
    color
        RGB 0-255 of the class, or ``None``.
    """

    name: str
    polygons: tuple[tuple[np.ndarray, ...], ...]
    classification: str | None = None
    color: tuple[int, int, int] | None = None

    @classmethod
    def box(cls, name: str, x0: float, y0: float, x1: float, y1: float, **kw: Any) -> Region:
        """A rectangle from level-0 corners."""
        ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
        return cls(name, ((ring,),), **kw)

    @classmethod
    def polygon(cls, name: str, xy: Any, **kw: Any) -> Region:
        """One polygon from ``(K, 2)`` level-0 ``(x, y)`` vertices."""
        ring = np.asarray(xy, dtype=np.float64)
        if ring.ndim != 2 or ring.shape[1] != 2 or len(ring) < 3:
            raise DataError(f"region {name!r}: a polygon needs at least 3 (x, y) vertices, got shape {ring.shape}")
        return cls(name, ((ring,),), **kw)

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Which level-0 points ``(N, 2)`` lie inside (in an outer ring and in none of its holes)."""
        from matplotlib.path import Path as MplPath

        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        inside = np.zeros(len(pts), dtype=bool)
        for rings in self.polygons:
            part = MplPath(rings[0]).contains_points(pts)
            for hole in rings[1:]:
                part &= ~MplPath(hole).contains_points(pts)
            inside |= part
        return inside


def _maps(adata: ad.AnnData | PredictionMaps) -> PredictionMaps:
    from histoviz.viz.maps import PredictionMaps

    return adata if isinstance(adata, PredictionMaps) else PredictionMaps(adata)


def patches_in_region(adata: ad.AnnData | PredictionMaps, region: Region) -> np.ndarray:
    """Indices of the patches whose centre (``obsm["spatial"]``) lies inside ``region``."""
    pm = _maps(adata)
    return np.flatnonzero(region.contains(np.asarray(pm.adata.obsm["spatial"], dtype=np.float64)))


def _continuous(pm: PredictionMaps, maps: Sequence[str] | None) -> tuple[list[Any], np.ndarray]:
    """MapValues of the continuous maps asked for (default: every one in the file) and their
    values stacked ``(patches, maps)``."""
    from histoviz.viz.maps import map_values

    if maps is None:
        specs = [f"{k}:{key}" if key else k for k, keys in pm.available.items() for key in keys]
    else:
        specs = list(maps)
    mvs = [mv for mv in (map_values(pm, s) for s in specs) if not mv.categorical]
    if not mvs:
        raise DataError("none of the maps asked for is continuous (category maps have no mean)")
    return mvs, np.column_stack([np.asarray(mv.values, np.float64) for mv in mvs])


def _boot_means(v: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, maps)`` means over patches resampled with replacement (NaNs skipped)."""
    n = len(v)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    ok = np.isfinite(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.where(ok, v, 0.0)) / (w @ ok.astype(np.float64))


def _check_boot(n_boot: int, ci: float) -> None:
    if int(n_boot) < 100:
        raise DataError(f"n_boot must be >= 100 for a bootstrap interval, got {n_boot}")
    if not 0.5 <= float(ci) < 1.0:
        raise DataError(f"ci must be in [0.5, 1), got {ci}")


def region_table(
    adata: ad.AnnData | PredictionMaps,
    regions: Sequence[Region],
    *,
    maps: Sequence[str] | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per region and map: patch-averaged prediction with a bootstrap interval.

    Parameters
    ----------
    adata
        Predictions of one slide.
    regions
        Regions in level-0 pixels.
    maps
        Map specs (``"gene:MKI67"``, ``"cell_type:tumour"``, ``"risk"``...); default every
        continuous map of the file, omics on the training data's scale.
    n_boot, ci, seed
        Bootstrap resamples of the patches, interval level, random seed.

    Returns
    -------
    Long table ``region, map, label, unit, n_patches, mean, sd, ci_low, ci_high`` (NaN
    statistics for a region without patches).
    """
    _check_boot(n_boot, ci)
    pm = _maps(adata)
    mvs, values = _continuous(pm, maps)
    rng = np.random.default_rng(seed)
    q = (100 * (1 - ci) / 2, 100 * (1 + ci) / 2)
    rows = []
    for reg in regions:
        idx = patches_in_region(pm, reg)
        v = values[idx]
        if len(idx):
            with np.errstate(invalid="ignore"):
                mean, sd = np.nanmean(v, axis=0), np.nanstd(v, axis=0, ddof=1) if len(idx) > 1 else np.full(v.shape[1], np.nan)
            lo, hi = np.nanpercentile(_boot_means(v, n_boot, rng), q, axis=0)
        else:
            mean = sd = lo = hi = np.full(len(mvs), np.nan)
        for j, mv in enumerate(mvs):
            rows.append({"region": reg.name, "map": str(mv.spec), "label": mv.label, "unit": mv.unit,
                         "n_patches": int(len(idx)), "mean": float(mean[j]), "sd": float(sd[j]),
                         "ci_low": float(lo[j]), "ci_high": float(hi[j])})
    return pd.DataFrame(rows)


def compare_regions(
    adata: ad.AnnData | PredictionMaps,
    a: Region,
    b: Region,
    *,
    maps: Sequence[str] | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Difference of two regions' patch-averaged predictions (``a - b``), per map, with a
    bootstrap interval (the patches of each region resampled independently).

    Returns
    -------
    ``map, label, unit, region_a, region_b, n_a, n_b, mean_a, mean_b, difference, ci_low,
    ci_high, excludes_zero``.

    Raises
    ------
    DataError
        A region holds fewer than 2 patches.
    """
    _check_boot(n_boot, ci)
    pm = _maps(adata)
    mvs, values = _continuous(pm, maps)
    ia, ib = patches_in_region(pm, a), patches_in_region(pm, b)
    for reg, idx in ((a, ia), (b, ib)):
        if len(idx) < 2:
            raise DataError(f"region {reg.name!r} covers {len(idx)} patch(es); draw it over at least 2 patches")
    rng = np.random.default_rng(seed)
    va, vb = values[ia], values[ib]
    diff = _boot_means(va, n_boot, rng) - _boot_means(vb, n_boot, rng)
    q = (100 * (1 - ci) / 2, 100 * (1 + ci) / 2)
    lo, hi = np.nanpercentile(diff, q, axis=0)
    ma, mb = np.nanmean(va, axis=0), np.nanmean(vb, axis=0)
    return pd.DataFrame({
        "map": [str(mv.spec) for mv in mvs], "label": [mv.label for mv in mvs], "unit": [mv.unit for mv in mvs],
        "region_a": a.name, "region_b": b.name, "n_a": len(ia), "n_b": len(ib),
        "mean_a": ma, "mean_b": mb, "difference": ma - mb, "ci_low": lo, "ci_high": hi,
        "excludes_zero": (lo > 0) | (hi < 0),
    })


def write_region_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a region table (or comparison) as CSV, atomically."""
    from histoviz._atomic import atomic_path

    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


# ------------------------------------------------------------------------------------------------
# QuPath GeoJSON
# ------------------------------------------------------------------------------------------------
def _ring(coords: Any, where: str) -> np.ndarray:
    r = np.asarray(coords, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 2 or len(r) < 3 or not np.all(np.isfinite(r[:, :2])):
        raise DataError(f"{where}: a polygon ring needs at least 3 finite (x, y) points")
    return r[:, :2]


def read_qupath_geojson(path: str | os.PathLike) -> list[Region]:
    """Regions from a GeoJSON file of QuPath annotations (a FeatureCollection, a Feature or a
    list of Features), in level-0 pixels as QuPath writes them.

    Polygons and MultiPolygons become regions (holes kept); other geometries (points, lines,
    QuPath detections' cells) are skipped. Names come from ``properties.name``, else the
    class, else ``"region k"``.

    Raises
    ------
    DataError
        Unreadable or oversized file, not GeoJSON, or no polygon in it (one line naming the file).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise DataError(f"{p}: cannot read the annotations ({e.strerror or e})") from None
    if size > MAX_GEOJSON_BYTES:
        raise DataError(f"{p}: {size / 1e6:.0f} MB is more than the {MAX_GEOJSON_BYTES / 1e6:.0f} MB of annotations "
                        "read at once; export only the annotations (not detections) from QuPath")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{p}: not a GeoJSON file ({type(e).__name__}: {e})") from None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features") or []
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    elif isinstance(doc, list):
        feats = doc
    else:
        raise DataError(f"{p}: not a GeoJSON FeatureCollection or Feature list")
    out: list[Region] = []
    vertices = 0
    for k, f in enumerate(feats):
        if not isinstance(f, dict):
            continue
        geom = f.get("geometry") or {}
        props = f.get("properties") or {}
        if props.get("objectType") == "detection":
            continue
        gtype = geom.get("type")
        if gtype == "Polygon":
            polys = [geom.get("coordinates") or []]
        elif gtype == "MultiPolygon":
            polys = geom.get("coordinates") or []
        else:
            continue
        where = f"{p}, feature {k}"
        try:
            parts = tuple(tuple(_ring(r, where) for r in poly) for poly in polys if poly)
        except (TypeError, ValueError):
            raise DataError(f"{where}: polygon coordinates are not numbers") from None
        vertices += sum(len(r) for poly in parts for r in poly)
        if vertices > MAX_VERTICES:
            raise DataError(f"{p}: more than {MAX_VERTICES} polygon vertices; simplify the annotations in QuPath")
        if not parts:
            continue
        cls = props.get("classification") or {}
        cname = cls.get("name") if isinstance(cls, dict) else None
        color = cls.get("color") if isinstance(cls, dict) else None
        col = tuple(int(c) for c in color[:3]) if isinstance(color, list) and len(color) >= 3 else None
        name = str(props.get("name") or cname or f"region {len(out) + 1}")
        out.append(Region(name, parts, classification=str(cname) if cname else None, color=col))
    if not out:
        raise DataError(f"{p}: no polygon annotation in this file (QuPath: select annotations, File > Export "
                        "objects as GeoJSON)")
    return out


def write_qupath_geojson(regions: Sequence[Region], path: str | os.PathLike) -> Path:
    """Write regions as QuPath annotations (GeoJSON FeatureCollection, level-0 pixels), atomically."""
    from histoviz._atomic import atomic_write_text

    feats = []
    for k, reg in enumerate(regions):
        polys = [[np.vstack([r, r[:1]]).round(3).tolist() for r in poly] for poly in reg.polygons]
        geom = ({"type": "Polygon", "coordinates": polys[0]} if len(polys) == 1
                else {"type": "MultiPolygon", "coordinates": polys})
        props: dict[str, Any] = {"objectType": "annotation", "name": reg.name}
        if reg.classification:
            props["classification"] = {"name": reg.classification, "color": list(reg.color or (255, 200, 0))}
        feats.append({"type": "Feature", "id": f"histoviz-region-{k}", "geometry": geom, "properties": props})
    return atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": feats}))
