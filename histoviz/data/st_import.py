"""``histoviz st-import``: Space Ranger folders and HEST-1k files as histoviz spot files.

The written file is the layout :func:`histoviz.data.spatial.load_spot_sample` reads (see
:mod:`histoviz.data.spatial`): raw counts in ``X``, spot centres in level-0 slide pixels in
``obsm["spatial"]`` and ``uns["spatial_meta"]`` (sample and patient ids, slide path, spot
diameter in slide pixels, microns per pixel and where that came from).

- :func:`import_spaceranger`: ``filtered_feature_bc_matrix.h5`` + ``spatial/`` read through
  scanpy (``read_10x_h5`` / ``read_visium``, offline); positions matched to barcodes; gene
  symbols as names (from ``features.tsv`` when the matrix only has Ensembl ids); the slide
  is ``--slide`` (full resolution, positions as they are) or the folder's hi-res image (low-res
  when the hi-res one is blank), with positions and diameter scaled by its scale factor
  (recorded as ``image_scale``, so a viewer can put the spots back on the full-resolution image);
- :func:`import_hest`: a HEST-1k sample (``st/<id>.h5ad``, ``wsis/<id>.tif``,
  ``metadata/<id>.json`` with ``pixel_size_um_estimated`` and ``spot_diameter`` in um), or any
  AnnData with ``obsm["spatial"]`` given the slide and the spot diameter.

Bad input is one :class:`~histoviz.errors.DataError` line naming the file: barcodes without
positions, a scalefactors file without ``spot_diameter_fullres``, spots outside the slide.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz.data.spatial import VISIUM_SPOT_UM, check_inside, read_spot_h5ad
from histoviz.errors import DataError

__all__ = ["import_hest", "import_spaceranger"]

log = logging.getLogger(__name__)


def _check_numbers(src: Path, mpp: float | None, spot_diameter_um: float | None = None) -> None:
    """Refuse an --mpp or spot diameter that cannot be one (NaN, <= 0, implausible), naming the input."""
    from histoviz.io.mpp import check_mpp_value

    try:
        if mpp is not None:
            check_mpp_value(mpp, "--mpp")
    except ValueError as e:
        raise DataError(f"{src}: {e}") from None
    if spot_diameter_um is not None and not (np.isfinite(spot_diameter_um) and 1.0 <= spot_diameter_um <= 1000.0):
        raise DataError(f"{src}: --spot-diameter-um must be a number of microns in [1, 1000] (55 for Visium), "
                        f"got {spot_diameter_um!r}")


def _positions(folder: Path) -> tuple[pd.DataFrame, Path]:
    sp_dir = folder / "spatial"
    for name, header in (("tissue_positions.csv", 0), ("tissue_positions_list.csv", None)):
        f = sp_dir / name
        if f.exists():
            try:
                df = pd.read_csv(f, header=header)
            except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
                raise DataError(f"{f}: unreadable ({e})") from e
            if df.shape[1] < 6:
                raise DataError(f"{f}: expected 6 columns (barcode, in_tissue, array_row, array_col, pxl_row, pxl_col)")
            df = df.iloc[:, :6]
            df.columns = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row", "pxl_col"]
            return df.set_index("barcode"), f
    raise DataError(f"{sp_dir}: no tissue_positions.csv or tissue_positions_list.csv; not a Space Ranger folder")


def _scalefactors(folder: Path) -> tuple[dict[str, float], Path]:
    f = folder / "spatial" / "scalefactors_json.json"
    if not f.exists():
        raise DataError(f"{f}: missing; a Space Ranger folder needs spatial/scalefactors_json.json")
    try:
        sf = json.loads(f.read_text())
    except ValueError as e:
        raise DataError(f"{f}: not valid JSON ({e})") from e
    if not isinstance(sf, Mapping) or not sf.get("spot_diameter_fullres"):
        raise DataError(f"{f}: spot_diameter_fullres is missing; cannot size the spots (re-run Space Ranger or add it)")
    return {k: float(v) for k, v in sf.items() if isinstance(v, (int, float))}, f


def import_spaceranger(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    slide: str | os.PathLike | None = None,
    sample_id: str | None = None,
    patient_id: str | None = None,
    mpp: float | None = None,
    count_file: str = "filtered_feature_bc_matrix.h5",
) -> Path:
    """Write a Space Ranger folder as a HEST-style ``.h5ad`` (see the module docstring).

    Parameters
    ----------
    folder
        Space Ranger ``outs/`` folder.
    out
        Output ``.h5ad`` (written atomically).
    slide
        The full-resolution image the positions refer to (default: ``spatial/tissue_hires_image.png``,
        or the low-res image when that one is blank, with positions scaled to it).
    sample_id, patient_id
        Identifiers (default: the folder name; the patient defaults to the sample).
    mpp
        Microns per pixel of the slide when it does not record one (default: from the spot
        diameter, 55 um).
    count_file
        Counts inside the folder.

    Returns
    -------
    The written path.

    Raises
    ------
    DataError
        Missing files, a scalefactors file without ``spot_diameter_fullres``, barcodes of the
        count matrix that match no position, spots outside the slide.
    """
    import scanpy as sc
    import scipy.sparse as sp

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (expected Space Ranger output)")
    _check_numbers(folder, mpp)
    counts_path = folder / count_file
    if not counts_path.exists():
        raise DataError(f"{counts_path}: count matrix not found; give the Space Ranger outs/ folder (or name the "
                        "matrix with --count-file)")
    pos, pos_file = _positions(folder)
    sf, _ = _scalefactors(folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = sc.read_10x_h5(counts_path)
    except Exception as e:  # h5py / scanpy raise several types on foreign files
        raise DataError(f"{counts_path}: not a readable 10x HDF5 matrix ({type(e).__name__}: {e})") from e
    a.var_names_make_unique()
    barcodes = pd.Index(a.obs_names.astype(str))
    missing = barcodes.difference(pos.index)
    if len(missing):
        raise DataError(f"{counts_path}: {len(missing)} of {len(barcodes)} barcodes match no row of {pos_file} (e.g. "
                        f"{missing[0]}); the matrix and the positions come from different runs")
    with warnings.catch_warnings():  # scanpy's own Visium reader (deprecated in favour of squidpy)
        warnings.simplefilter("ignore")
        a = sc.read_visium(folder, count_file=count_file, load_images=False)
    _use_gene_symbols(a, folder)
    a.var_names_make_unique()
    sid = sample_id or folder.name
    p = pos.loc[a.obs_names.astype(str)]
    xy = np.stack([p["pxl_col"].to_numpy(np.float64), p["pxl_row"].to_numpy(np.float64)], axis=1)
    diameter = float(sf["spot_diameter_fullres"])
    out = Path(out)
    image_scale = 1.0
    if slide is None:
        img, image_scale = _tissue_image(folder, sf)
        slide_path, xy, diameter = img.resolve(), xy * image_scale, diameter * image_scale
    else:
        slide_path = Path(slide).resolve()
        if not slide_path.exists():
            raise DataError(f"{slide_path}: slide not found")
    from histoviz.io import open_slide

    with open_slide(slide_path) as r:
        dims = tuple(int(v) for v in r.dimensions)
        slide_mpp = r.mpp
    check_inside(xy, list(map(str, a.obs_names)), dims, pos_file)
    if mpp is not None:
        res, src = float(mpp), "given"
    elif slide_mpp:
        res, src = float(slide_mpp), "slide"
    else:
        res, src = VISIUM_SPOT_UM / diameter, f"spot diameter ({VISIUM_SPOT_UM:g} um Visium spot)"
    x = a.X.tocsr().astype(np.float32) if sp.issparse(a.X) else sp.csr_matrix(np.asarray(a.X, np.float32))
    import anndata

    obs = pd.DataFrame({"in_tissue": p["in_tissue"].to_numpy(np.int64), "array_row": p["array_row"].to_numpy(np.int64),
                        "array_col": p["array_col"].to_numpy(np.int64)}, index=pd.Index(a.obs_names.astype(str)))
    var = a.var.copy()
    var.index = var.index.astype(str)
    var = var[[c for c in var.columns if var[c].dtype != object or var[c].map(type).eq(str).all()]]
    res_adata = anndata.AnnData(X=x, obs=obs, var=var)
    res_adata.obsm["spatial"] = xy
    try:
        rel = os.path.relpath(slide_path, out.resolve().parent)
    except ValueError:  # another drive on Windows
        rel = str(slide_path)
    return _write(res_adata, out, {"sample_id": sid, "patient_id": patient_id or sid, "slide_path": rel,
                                   "spot_diameter_px": diameter, "mpp": res, "mpp_source": src,
                                   "image_scale": image_scale, "source": str(folder.resolve())}, sid, diameter)


def _use_gene_symbols(a: Any, folder: Path) -> None:
    """Gene symbols as ``var_names`` (Ensembl ids stay in ``var["gene_ids"]``): the matrix's own
    feature names, or, where those are ids, the names of ``features.tsv(.gz)`` in the folder's
    ``filtered_feature_bc_matrix/`` (Space Ranger's MEX output) when it is there."""
    ids = a.var["gene_ids"].astype(str) if "gene_ids" in a.var else pd.Series(a.var_names.astype(str), index=a.var_names)
    for name in ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv"):
        f = folder / "filtered_feature_bc_matrix" / name
        if not f.exists():
            continue
        try:
            tab = pd.read_csv(f, sep="\t", header=None, dtype=str, usecols=[0, 1])
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
            log.warning("%s: unreadable (%s); keeping the matrix's gene names", f, e)
            return
        symbols = dict(zip(tab[0], tab[1]))
        got = [symbols.get(i) or v for i, v in zip(ids.to_numpy(), a.var_names.astype(str))]
        if "gene_ids" not in a.var:
            a.var["gene_ids"] = ids.to_numpy()
        a.var_names = pd.Index(got, dtype=str)
        log.info("%s: gene symbols for %d of %d features", f, sum(i in symbols for i in ids), len(ids))
        return


def _tissue_image(folder: Path, sf: Mapping[str, float]) -> tuple[Path, float]:
    """The Space Ranger image standing in for the slide: hi-res, else low-res when the hi-res one
    is missing or blank (a constant image, as in stripped test data)."""
    from PIL import Image

    for name, key in (("tissue_hires_image.png", "tissue_hires_scalef"), ("tissue_lowres_image.png", "tissue_lowres_scalef")):
        f = folder / "spatial" / name
        if not f.exists() or key not in sf:
            continue
        try:
            with Image.open(f) as im:
                im.thumbnail((256, 256))
                arr = np.asarray(im.convert("RGB"), np.float32)
        except (OSError, SyntaxError, ValueError) as e:  # PIL: unidentified, truncated or broken image
            raise DataError(f"{f}: not a readable image ({type(e).__name__}: {str(e)[:120]}); copy the Space "
                            "Ranger folder again, or pass the full-resolution slide with --slide") from None
        if arr.std() < 1.0:
            log.warning("%s: the image is blank; trying the next one", f)
            continue
        return f, float(sf[key])
    raise DataError(f"{folder}/spatial: no usable tissue_hires_image.png / tissue_lowres_image.png with its scale "
                    "factor; pass the full-resolution slide with --slide")


def _write(a: Any, out: Path, meta: dict[str, Any], sid: str, diameter: float) -> Path:
    from histoviz._atomic import atomic_path, refuse_input_as_output, require_space
    from histoviz.io.predictions import h5ad_nbytes

    refuse_input_as_output(out, meta["source"], out.resolve().parent / meta["slide_path"])
    require_space(out, h5ad_nbytes(a))

    a.uns["spatial_meta"] = meta
    a.uns["spatial"] = {sid: {"scalefactors": {"spot_diameter_fullres": diameter, "tissue_hires_scalef": 1.0}}}
    with atomic_path(out, suffix=".h5ad") as tmp:
        a.write_h5ad(tmp)
    return out


def import_hest(
    h5ad: str | os.PathLike,
    out: str | os.PathLike,
    *,
    slide: str | os.PathLike | None = None,
    sample_id: str | None = None,
    patient_id: str | None = None,
    mpp: float | None = None,
    spot_diameter_um: float | None = None,
) -> Path:
    """Write a HEST-1k spot AnnData (or any AnnData with ``obsm["spatial"]`` in slide pixels) as a
    histoviz spot file.

    Parameters
    ----------
    h5ad
        The AnnData (HEST: ``<root>/st/<id>.h5ad``).
    out
        Output ``.h5ad``.
    slide
        The slide the positions refer to (HEST: ``<root>/wsis/<id>.tif`` when omitted).
    sample_id, patient_id
        Identifiers (default: the file name).
    mpp
        Microns per slide pixel (HEST: ``pixel_size_um_estimated`` of ``<root>/metadata/<id>.json``,
        else the slide's own).
    spot_diameter_um
        Spot diameter in um (HEST metadata ``spot_diameter``, else 55 um, a Visium spot).

    Raises
    ------
    DataError
        No positions, slide or resolution found; spots outside the slide.
    """
    import anndata as ad
    import scipy.sparse as sp

    from histoviz.io import open_slide

    src = Path(h5ad)
    _check_numbers(src, mpp, spot_diameter_um)
    a, xy = read_spot_h5ad(src)
    root = src.parent.parent
    meta_file = root / "metadata" / f"{src.stem}.json"
    hmeta: dict[str, Any] = {}
    if meta_file.exists():
        try:
            hmeta = json.loads(meta_file.read_text())
        except ValueError as e:
            raise DataError(f"{meta_file}: not valid JSON ({e})") from e
    if slide is None:
        found = [p for p in (root / "wsis").glob(f"{src.stem}.*")] if (root / "wsis").is_dir() else []
        if not found:
            raise DataError(f"{src}: no slide given and no HEST wsis/{src.stem}.* beside it; pass --slide")
        slide = found[0]
    slide_path = Path(slide).resolve()
    if not slide_path.exists():
        raise DataError(f"{slide_path}: slide not found")
    with open_slide(slide_path) as r:
        dims = tuple(int(v) for v in r.dimensions)
        slide_mpp = r.mpp
    check_inside(xy, list(map(str, a.obs_names)), dims, src)
    res, srcm = (float(mpp), "given") if mpp else (None, "")
    if res is None and hmeta.get("pixel_size_um_estimated"):
        res, srcm = float(hmeta["pixel_size_um_estimated"]), f"{meta_file.name} pixel_size_um_estimated"
    if res is None and slide_mpp:
        res, srcm = float(slide_mpp), "slide"
    if res is None:
        raise DataError(f"{src}: the slide's resolution is unknown (no --mpp, no HEST metadata, none in {slide_path.name})")
    d_um = float(spot_diameter_um or hmeta.get("spot_diameter") or VISIUM_SPOT_UM)
    x = a.X.tocsr().astype(np.float32) if sp.issparse(a.X) else sp.csr_matrix(np.asarray(a.X, np.float32))
    obs = pd.DataFrame(index=pd.Index(a.obs_names.astype(str)))
    for c in ("in_tissue", "array_row", "array_col"):
        if c in a.obs:
            obs[c] = a.obs[c].to_numpy()
    b = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(a.var_names.astype(str))))
    b.obsm["spatial"] = xy
    out = Path(out)
    sid = sample_id or src.stem
    try:
        rel = os.path.relpath(slide_path, out.resolve().parent)
    except ValueError:
        rel = str(slide_path)
    return _write(b, out, {"sample_id": sid, "patient_id": patient_id or str(hmeta.get("patient") or sid),
                           "slide_path": rel, "spot_diameter_px": d_um / res, "mpp": res, "mpp_source": srcm,
                           "source": str(src.resolve())}, sid, d_um / res)
