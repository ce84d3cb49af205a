"""The per-slide prediction ``.h5ad`` contract (DESIGN.md "Predictions").

One observation per patch:

- ``obs_names`` = ``f"{slide_id}:{i}"``; ``obs["slide_id"]``; ``obs["x"], obs["y"]`` level-0
  top-left corners; ``obsm["spatial"]`` = level-0 patch centres ``(x, y)``;
- ``X`` = predicted expression (``var_names`` = genes), may have zero columns;
- optional maps, each declared in the output registry (:mod:`histoviz.outputs`):
  ``obsm["cell_type_weights"]`` (DataFrame, columns = cell types), ``obsm["grade_proba"]``
  (DataFrame, columns = grades), ``obs["grade_pred"]``, ``obs["grade_set_size"]``,
  ``obs["risk"]``, ``obs["risk_width"]``, ``obs["attention"]``, ``obsm["coattention"]``
  (DataFrame, one column per gene group), ``obsm["pred_<modality>"]``, ...;
  :func:`undeclared_keys` lists what a file holds that no output declares;
- ``uns["histoviz"]`` = {slide_id, slide_path, slide_dimensions, mpp, tile_size,
  tile_size_level0, model, encoder, config, version};
- ``uns["spatial"][slide_id]`` (:func:`add_slide_image`): the slide's thumbnail as Space Ranger
  imports carry it (``images/hires``, ``images/lowres``, ``scalefactors`` with
  ``tissue_hires_scalef``, ``tissue_lowres_scalef`` and ``spot_diameter_fullres`` = the patch
  side in level-0 px), so ``scanpy.pl.spatial`` and squidpy draw any map over the tissue.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz._atomic import atomic_path, require_space
from histoviz._version import __version__
from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

__all__ = [
    "FRAME_KEYS",
    "add_slide_image",
    "h5ad_nbytes",
    "undeclared_keys",
    "make_prediction_adata",
    "read_predictions",
    "validate_predictions",
    "write_predictions",
]

FRAME_KEYS = ("cell_type_weights", "grade_proba", "coattention")
REQUIRED_UNS = ("slide_id", "tile_size_level0")


def make_prediction_adata(
    coords: np.ndarray,
    *,
    slide_id: str,
    tile_size_level0: int,
    expression: np.ndarray | None = None,
    genes: list[str] | None = None,
    obs: Mapping[str, np.ndarray] | None = None,
    obsm: Mapping[str, pd.DataFrame | np.ndarray] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """Assemble a prediction AnnData for one slide.

    Parameters
    ----------
    coords
        ``(N, 2)`` level-0 top-left corners of the patches.
    slide_id
        Slide identifier; becomes the prefix of ``obs_names``.
    tile_size_level0
        Patch side in level-0 pixels (to place maps on the slide).
    expression, genes
        ``(N, G)`` predicted expression per patch and the gene names.
    obs
        Per-patch scalars (``risk``, ``attention``, ``grade_pred``, ...).
    obsm
        Per-patch matrices; DataFrames keep their column names (``cell_type_weights``,
        ``grade_proba``, ``coattention``).
    meta
        Extra provenance stored in ``uns["histoviz"]`` (slide_path, slide_dimensions, mpp,
        tile_size, model, encoder, config).

    Returns
    -------
    AnnData with the keys listed in this module's docstring.
    """
    import anndata as ad

    coords = np.asarray(coords, dtype=np.int64)
    n = len(coords)
    if expression is None:
        expression = np.zeros((n, 0), np.float32)
        genes = []
    expression = np.asarray(expression, np.float32)
    if expression.shape[0] != n:
        raise DataError(f"expression has {expression.shape[0]} rows for {n} patches")
    genes = list(genes) if genes is not None else [f"gene_{i}" for i in range(expression.shape[1])]
    names = [f"{slide_id}:{i}" for i in range(n)]
    obs_df = pd.DataFrame(
        {"slide_id": pd.Categorical([slide_id] * n), "x": coords[:, 0], "y": coords[:, 1]},
        index=names,
    )
    for k, v in (obs or {}).items():
        obs_df[k] = v if isinstance(v, pd.Categorical) else np.asarray(v)
    a = ad.AnnData(X=expression, obs=obs_df, var=pd.DataFrame(index=pd.Index(genes, dtype=str)))
    a.obsm["spatial"] = coords.astype(np.float64) + tile_size_level0 / 2.0
    for k, v in (obsm or {}).items():
        if isinstance(v, pd.DataFrame):
            v = v.copy()
            v.index = names
            v.columns = [str(c) for c in v.columns]
        a.obsm[k] = v
    info = {"slide_id": slide_id, "tile_size_level0": int(tile_size_level0), "version": __version__}
    for k, v in (meta or {}).items():
        if v is None:
            continue
        info[k] = json.dumps(v) if isinstance(v, dict) else v
    a.uns["histoviz"] = info
    return a


def add_slide_image(adata: ad.AnnData, reader: Any, *, hires: int = 2000, lowres: int = 600) -> ad.AnnData:
    """Put the slide's thumbnail into ``uns["spatial"][slide_id]`` as Space Ranger imports do.

    ``obsm["spatial"]`` (level-0 patch centres) times ``tissue_hires_scalef`` lands on the
    ``hires`` image; ``spot_diameter_fullres`` is the patch side in level-0 pixels.

    Parameters
    ----------
    adata
        A prediction AnnData of the slide ``reader`` reads.
    reader
        The open :class:`~histoviz.io.slide.SlideReader`.
    hires, lowres
        Longest side of the two images (Space Ranger: 2000 and 600; 0 leaves ``uns["spatial"]`` out).

    Returns
    -------
    ``adata`` (changed in place).
    """
    if hires <= 0:
        return adata
    sid = str(adata.uns.get("histoviz", {}).get("slide_id") or reader.slide_id)
    width = float(reader.dimensions[0])
    hi = np.ascontiguousarray(reader.get_thumbnail(hires)[..., :3], dtype=np.uint8)
    lo = np.ascontiguousarray(reader.get_thumbnail(lowres)[..., :3], dtype=np.uint8)
    tile = float(adata.uns.get("histoviz", {}).get("tile_size_level0") or 1.0)
    adata.uns["spatial"] = {sid: {
        "images": {"hires": hi, "lowres": lo},
        "scalefactors": {"tissue_hires_scalef": hi.shape[1] / width, "tissue_lowres_scalef": lo.shape[1] / width,
                         "spot_diameter_fullres": tile},
        "metadata": {"source": "histoviz slide thumbnail", "slide_path": str(reader.path or "")},
    }}
    return adata


def validate_predictions(adata: ad.AnnData, *, source: str = "<predictions>") -> ad.AnnData:
    """Check the contract; raise :class:`DataError` naming ``source`` and the missing key."""
    if "spatial" not in adata.obsm:
        raise DataError(f"{source}: obsm['spatial'] (patch centres) is missing")
    sp = np.asarray(adata.obsm["spatial"])
    if sp.ndim != 2 or sp.shape[1] != 2:
        raise DataError(f"{source}: obsm['spatial'] must be (N, 2), got {sp.shape}")
    info = adata.uns.get("histoviz")
    if not isinstance(info, Mapping):
        raise DataError(f"{source}: uns['histoviz'] provenance is missing; not a histoviz prediction")
    for k in REQUIRED_UNS:
        if k not in info:
            raise DataError(f"{source}: uns['histoviz'][{k!r}] is missing")
    return adata


def undeclared_keys(adata: ad.AnnData) -> list[str]:
    """``obs`` / ``obsm`` keys of a prediction AnnData that no registered output declares."""
    from histoviz.outputs import list_outputs

    outs = list_outputs()
    obs_keys = {o.anndata_key for o in outs if o.store in ("obs", "obs_category")}
    obsm_keys = {o.anndata_key for o in outs if o.store == "obsm"}
    prefixes = tuple(o.anndata_key for o in outs if o.store == "obsm_prefix")
    bad = [f"obs[{c!r}]" for c in adata.obs.columns if c not in obs_keys and c not in ("x", "y", "slide_id")]
    bad += [f"obsm[{k!r}]" for k in adata.obsm.keys()
            if k != "spatial" and k not in obsm_keys and not str(k).startswith(prefixes)]
    return bad


def write_predictions(adata: ad.AnnData, path: str | os.PathLike) -> Path:
    """Validate and write ``adata`` atomically as ``.h5ad`` (undeclared maps are logged: viewers
    show numeric obs columns as generic values, but nothing else of them)."""
    validate_predictions(adata, source=str(path))
    bad = undeclared_keys(adata)
    if bad:
        import logging

        logging.getLogger(__name__).info("%s: keys no output declares: %s", path, ", ".join(bad))
    require_space(path, h5ad_nbytes(adata))
    with atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


def h5ad_nbytes(adata: ad.AnnData) -> int:
    """About how many bytes ``adata`` takes as an uncompressed ``.h5ad``: its matrices and tables,
    with a margin and 1 MB of HDF5 structure (a generous bound, for a free-space check)."""
    import scipy.sparse as sp

    def size(x: Any) -> int:
        if x is None:
            return 0
        if sp.issparse(x):
            return sum(int(getattr(x, k).nbytes) for k in ("data", "indices", "indptr") if hasattr(x, k))
        if isinstance(x, pd.DataFrame):
            return int(x.memory_usage(deep=True, index=True).sum())
        return int(getattr(np.asarray(x) if not hasattr(x, "nbytes") else x, "nbytes", 0))

    n = size(adata.X) + size(adata.obs) + size(adata.var)
    for m in (adata.obsm, adata.varm, adata.layers, adata.obsp):
        n += sum(size(v) for v in m.values())
    return int(n * 1.25) + (1 << 20)


def read_predictions(path: str | os.PathLike) -> ad.AnnData:
    """Read and validate a prediction ``.h5ad`` (no pickles involved)."""
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: prediction file not found")
    try:
        a = ad.read_h5ad(path)
    except Exception as e:  # anndata raises several types for non-h5ad files
        raise DataError(f"{path}: not a readable .h5ad file ({type(e).__name__}: {e})") from e
    return validate_predictions(a, source=str(path))
