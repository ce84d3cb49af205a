"""Spot-level spatial transcriptomics: import, validation, spot patches, normalisation, gene sets.

Two inputs are accepted:

- a **Space Ranger** output folder (``filtered_feature_bc_matrix.h5`` + ``spatial/`` with
  ``tissue_positions_list.csv`` or ``tissue_positions.csv``, ``scalefactors_json.json`` and the
  tissue images), read with ``scanpy.read_visium`` (offline);
- a **HEST-style AnnData** (``.h5ad``): counts in ``X`` (spots x genes), ``obsm["spatial"]``
  spot centres in level-0 pixels of the slide, and where the slide is.

:func:`histoviz.data.st_import.import_spaceranger` (and ``import_hest`` for HEST-1k files) turn
the inputs into the one spot file every other part of histoviz reads (``histoviz st-import``)::

    X                      raw counts (spots x genes, CSR float32)
    obs                    in_tissue, array_row, array_col (barcodes as obs_names)
    obsm["spatial"]        spot centres (x, y) in level-0 pixels of the slide
    uns["spatial_meta"]    sample_id, patient_id, slide_path (relative to the file or absolute),
                           spot_diameter_px (level-0 px), mpp (um per level-0 px), mpp_source,
                           source
    uns["spatial"]         scanpy's layout (scalefactors relative to the slide, a low-res image)

Without ``slide=`` the Space Ranger hi-res image is the slide (the low-res one when the hi-res
image is missing or blank): positions and the spot diameter are scaled by its scale factor, and
its resolution comes from the spot diameter (a Visium
spot is 55 um across) unless ``mpp=`` is given.

:func:`load_spot_sample` reads such a file (the synthetic cohort's ``spatial/*.h5ad`` too) and
checks it: spot diameter present, slide found, every spot inside the slide. Bad input is a
one-line :class:`~histoviz.errors.DataError` naming the file.

Spot patches (:class:`PatchSpec`) are cut around each spot centre: at the spot diameter, or at a
fixed physical size at a target resolution (HEST: 112 um at 0.5 um/px = 224 px).
Expression is total-count normalised per spot (to ``target_sum``; a per-spot operation, no
statistic shared between spots) and ``log1p`` transformed. Gene sets (HVG, HEG, markers) are
chosen by :func:`select_genes` on **training** spots only.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import ConfigError, DataError

if TYPE_CHECKING:
    import anndata as ad

    from histoviz.tiling.grid import TileGrid

__all__ = [
    "VISIUM_SPOT_UM",
    "GeneSets",
    "PatchSpec",
    "SpotSample",
    "SpotsSpec",
    "align_genes",
    "embed_spot_sample",
    "load_spot_sample",
    "normalize_log1p",
    "read_spot_h5ad",
    "select_genes",
    "spot_grid",
]

log = logging.getLogger(__name__)

#: diameter of a Visium spot in micrometres (10x Genomics)
VISIUM_SPOT_UM = 55.0


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchSpec:
    """How a spot's image patch is cut.

    Attributes
    ----------
    size_um
        Side of the patch in micrometres (HEST: 112); ``None``: the spot diameter.
    mpp
        Target resolution of a fixed-size patch (HEST: 0.5 um/px); the patch is
        ``round(size_um / mpp)`` pixels.
    tile_px
        Output pixels of a spot-diameter patch (``size_um=None``).
    """

    size_um: float | None = 112.0
    mpp: float = 0.5
    tile_px: int = 224

    def __post_init__(self) -> None:
        if self.size_um is not None and not self.size_um > 0:
            raise ConfigError(f"patch size_um must be > 0 (or null for the spot diameter), got {self.size_um}")
        if not self.mpp > 0:
            raise ConfigError(f"patch mpp must be > 0, got {self.mpp}")
        if int(self.tile_px) < 8:
            raise ConfigError(f"patch tile_px must be >= 8, got {self.tile_px}")

    def sizes(self, sample: SpotSample) -> tuple[int, int, float]:
        """``(tile_px, tile_size_level0, mpp)`` of this sample's patches."""
        if self.size_um is None:
            ts0 = max(1, int(round(sample.spot_diameter_px)))
            return int(self.tile_px), ts0, sample.spot_diameter_px * sample.mpp / int(self.tile_px)
        tile = max(8, int(round(self.size_um / self.mpp)))
        ts0 = max(1, int(round(self.size_um / sample.mpp)))
        return tile, ts0, float(self.mpp)

    def describe(self) -> str:
        """``"112 um at 0.5 um/px (224 px)"`` or ``"spot diameter (224 px)"``."""
        if self.size_um is None:
            return f"spot diameter ({self.tile_px} px)"
        return f"{self.size_um:g} um at {self.mpp:g} um/px ({int(round(self.size_um / self.mpp))} px)"


@dataclass(frozen=True)
class SpotsSpec:
    """``data.spots`` of an experiment config: the spatial samples and their preprocessing.

    Attributes
    ----------
    samples
        HEST-style ``.h5ad`` files, or folders whose ``*.h5ad`` are all samples.
    features
        Root folder of spot feature bags: ``<features>/<encoder>/<sample_id>.h5`` (embedded
        when missing or made with another patch size).
    encoder, pretrained, weights, batch_size, device
        The patch encoder (histoviz encoder registry) and how it runs.
    patch
        :class:`PatchSpec` (``{size_um, mpp, tile_px}``).
    target_sum
        Total-count normalisation target per spot (then ``log1p``).
    n_genes
        Targets: the ``n_genes`` most variable genes of the training spots (plus the HEG and
        marker sets), chosen per fold on training samples only.
    markers
        Marker genes evaluated as their own set (those present in the data).
    patient_key
        ``uns["spatial_meta"]`` key or ``obs`` column holding the patient; samples of one
        patient are held out together.
    in_tissue_only
        Drop spots with ``obs["in_tissue"] == 0``.
    patch_cache_mb
        Memory for decoded spot patches of models that train their image encoder on the
        patches (:class:`~histoviz.data.spot_patches.SpotPatchStore`; 0: read them from the
        slides every time).
    """

    samples: tuple[str, ...] = ()
    features: str = ""
    encoder: str = "morphology"
    pretrained: bool = True
    weights: str | None = None
    batch_size: int = 64
    device: str = "auto"
    patch: PatchSpec = field(default_factory=PatchSpec)
    target_sum: float = 1e4
    n_genes: int = 1000
    markers: tuple[str, ...] = ()
    patient_key: str | None = "patient_id"
    in_tissue_only: bool = True
    patch_cache_mb: int = 512

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "data.spots", base: Path | None = None) -> SpotsSpec:
        """Strictly validated spec (unknown keys are errors); paths resolved against ``base``."""
        from histoviz.strict import build_strict, strict_keys

        kw = strict_keys(cls, d, where, expected="a mapping (samples, features, encoder, patch, ...)")
        samples = kw.get("samples", ())
        if isinstance(samples, (str, os.PathLike)):
            samples = [samples]
        if not samples:
            raise ConfigError(f"{where}.samples: required (HEST-style .h5ad files or a folder of them)")
        kw["samples"] = tuple(_resolve(s, base) for s in samples)
        if not kw.get("features"):
            raise ConfigError(f"{where}.features: required (root folder of spot feature bags)")
        kw["features"] = _resolve(kw["features"], base)
        if kw.get("weights"):
            kw["weights"] = _resolve(kw["weights"], base)
        p = kw.get("patch")
        if p is None or isinstance(p, PatchSpec):
            kw["patch"] = p or PatchSpec()
        else:
            kw["patch"] = build_strict(PatchSpec, p, f"{where}.patch", expected="{size_um, mpp, tile_px}")
        kw["markers"] = tuple(str(m) for m in (kw.get("markers") or ()))
        for k, typ in (("target_sum", (int, float)), ("n_genes", int), ("batch_size", int)):
            if k in kw and (isinstance(kw[k], bool) or not isinstance(kw[k], typ) or kw[k] <= 0):
                raise ConfigError(f"{where}.{k}: expected a positive number, got {kw[k]!r}")
        if "patch_cache_mb" in kw and (isinstance(kw["patch_cache_mb"], bool) or not isinstance(kw["patch_cache_mb"], int)
                                       or kw["patch_cache_mb"] < 0):
            raise ConfigError(f"{where}.patch_cache_mb: expected an integer >= 0, got {kw['patch_cache_mb']!r}")
        for k in ("pretrained", "in_tissue_only"):
            if k in kw and not isinstance(kw[k], bool):
                raise ConfigError(f"{where}.{k}: expected true or false, got {kw[k]!r}")
        return cls(**kw)

    def sample_files(self) -> list[Path]:
        """The ``.h5ad`` files named by ``samples`` (folders expanded, sorted).

        Raises
        ------
        DataError
            A path that does not exist, or a folder without ``.h5ad`` files.
        """
        out: list[Path] = []
        for s in self.samples:
            p = Path(s)
            if p.is_dir():
                found = sorted(p.glob("*.h5ad"))
                if not found:
                    raise DataError(f"{p}: no .h5ad spot files in this folder (import Space Ranger output with "
                                    "histoviz st-import)")
                out += found
            elif p.is_file():
                out.append(p)
            else:
                raise DataError(f"{p}: spot file or folder not found")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain form (for the resolved config)."""
        d = asdict(self)
        d["samples"], d["markers"] = list(self.samples), list(self.markers)
        return d


def _resolve(p: Any, base: Path | None) -> str:
    q = Path(os.path.expanduser(str(p)))
    if q.is_absolute() or base is None:
        return str(q)
    return str((base / q).resolve())


# ------------------------------------------------------------------------------------------------
# one sample
# ------------------------------------------------------------------------------------------------
@dataclass
class SpotSample:
    """The spots of one sample (one slide section).

    Attributes
    ----------
    sample_id, patient_id
        Identifiers (the patient defaults to the sample).
    counts
        ``(n_spots, n_genes)`` raw counts (scipy CSR, float32).
    genes, barcodes
        Column and row names.
    centres
        ``(n_spots, 2)`` spot centres ``(x, y)`` in level-0 pixels of the slide.
    spot_diameter_px
        Spot diameter in level-0 pixels.
    mpp
        Microns per level-0 pixel of the slide.
    slide_path
        The slide (absolute path).
    path
        The file the sample was read from.
    """

    sample_id: str
    patient_id: str
    counts: Any
    genes: list[str]
    barcodes: list[str]
    centres: np.ndarray
    spot_diameter_px: float
    mpp: float
    slide_path: str
    path: str = ""
    slide_dimensions: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.barcodes)

    def library(self) -> np.ndarray:
        """Total counts per spot (over all genes of the file)."""
        return np.asarray(self.counts.sum(axis=1)).ravel().astype(np.float64)

    def expression(self, genes: Sequence[str], *, target_sum: float = 1e4) -> np.ndarray:
        """``(n_spots, len(genes))`` float32 ``log1p`` of counts normalised to ``target_sum``
        per spot (totals over all genes of the file)."""
        idx = pd.Index(self.genes).get_indexer(list(genes))
        if (idx < 0).any():
            missing = [g for g, i in zip(genes, idx) if i < 0][:3]
            raise DataError(f"{self.path or self.sample_id}: genes {missing} are not in this sample")
        return normalize_log1p(self.counts, target_sum=target_sum, columns=idx, library=self.library())


def normalize_log1p(counts: Any, *, target_sum: float = 1e4, columns: np.ndarray | None = None,
                    library: np.ndarray | None = None) -> np.ndarray:
    """``log1p(counts / library * target_sum)`` per spot, dense float32.

    Each spot is scaled by its own total (``library``, default: the row sums over all columns),
    so no statistic is shared between spots or samples. Spots without counts stay 0.
    """
    import scipy.sparse as sp

    lib = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64) if library is None else np.asarray(library)
    x = counts[:, columns] if columns is not None else counts
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    scale = np.where(lib > 0, float(target_sum) / np.maximum(lib, 1e-12), 0.0)
    return np.log1p(np.asarray(x, np.float64) * scale[:, None]).astype(np.float32)


def _spot_diameter(a: ad.AnnData, path: Path) -> float:
    meta = a.uns.get("spatial_meta") or {}
    if "spot_diameter_px" in meta:
        return float(meta["spot_diameter_px"])
    for lib in (a.uns.get("spatial") or {}).values():
        sf = (lib or {}).get("scalefactors") or {}
        if "spot_diameter_fullres" in sf:
            return float(sf["spot_diameter_fullres"])
    raise DataError(f"{path}: the spot diameter is missing (no uns['spatial_meta']['spot_diameter_px'] and no "
                    "scalefactors spot_diameter_fullres); import Space Ranger output with histoviz st-import")


def read_spot_h5ad(path: str | os.PathLike) -> tuple[ad.AnnData, np.ndarray]:
    """Read a HEST-style spot file: the AnnData and its spot centres (``obsm["spatial"]``, the
    first two columns, level-0 slide pixels).

    Raises
    ------
    DataError
        No such file, not a readable ``.h5ad``, no ``obsm["spatial"]`` or positions that are not
        finite ``(n_spots, 2)`` pixels (each names the file).
    """
    import anndata as ad

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: spot file not found")
    try:
        a = ad.read_h5ad(p)
    except Exception as e:  # anndata raises several types for foreign files
        raise DataError(f"{p}: not a readable .h5ad file ({type(e).__name__}: {e})") from e
    if "spatial" not in a.obsm:
        raise DataError(f"{p}: obsm['spatial'] (spot centres in slide pixels) is missing")
    xy = np.asarray(a.obsm["spatial"], np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2 or not np.isfinite(xy[:, :2]).all():
        raise DataError(f"{p}: obsm['spatial'] must be finite (n_spots, 2) slide pixels, got shape {xy.shape}")
    return a, xy[:, :2]


def load_spot_sample(
    path: str | os.PathLike,
    *,
    slide: str | os.PathLike | None = None,
    patient_key: str | None = "patient_id",
    in_tissue_only: bool = True,
    check_slide: bool = True,
) -> SpotSample:
    """Read and check one HEST-style spot file.

    Parameters
    ----------
    path
        ``.h5ad`` with counts, ``obsm["spatial"]`` and the spot diameter.
    slide
        The slide (default: ``uns["spatial_meta"]["slide_path"]``, relative to the file).
    patient_key
        Where the patient id is (``uns["spatial_meta"]`` key or a constant ``obs`` column).
    in_tissue_only
        Keep only spots with ``obs["in_tissue"] != 0`` (when the column exists).
    check_slide
        Open the slide and check that every spot lies inside it.

    Raises
    ------
    DataError
        Unreadable file, no spot positions, no spot diameter, slide not found, spots outside the
        slide, negative or non-finite counts.
    """
    import scipy.sparse as sp

    p = Path(path)
    a, xy = read_spot_h5ad(p)
    diameter = _spot_diameter(a, p)
    if not diameter > 0:
        raise DataError(f"{p}: spot diameter {diameter} px; it must be > 0")
    meta = dict(a.uns.get("spatial_meta") or {})
    sid = str(meta.get("sample_id") or meta.get("slide_id") or p.stem)
    slide_path = slide or meta.get("slide_path")
    if not slide_path:
        raise DataError(f"{p}: no slide (uns['spatial_meta']['slide_path'] is missing); pass the slide")
    sp_path = Path(str(slide_path))
    if not sp_path.is_absolute():
        sp_path = (p.parent / sp_path).resolve()
    if not sp_path.exists():
        raise DataError(f"{p}: its slide {sp_path} was not found; move it back or re-import with --slide")
    pid = sid
    if patient_key:
        if patient_key in meta and meta[patient_key] not in (None, ""):
            pid = str(meta[patient_key])
        elif patient_key in a.obs and a.obs[patient_key].nunique() == 1:
            pid = str(a.obs[patient_key].iloc[0])
    x = a.X if not sp.issparse(a.X) else a.X.tocsr()
    x = sp.csr_matrix(np.asarray(x, np.float32)) if not sp.issparse(x) else x.astype(np.float32)
    if x.nnz and (not np.isfinite(x.data).all() or (x.data < 0).any()):
        raise DataError(f"{p}: X must hold raw counts (finite, >= 0); found negative or non-finite values")
    keep = np.ones(a.n_obs, bool)
    if in_tissue_only and "in_tissue" in a.obs:
        keep = a.obs["in_tissue"].to_numpy().astype(bool)
        if not keep.any():
            raise DataError(f"{p}: no spot has in_tissue = 1")
    mpp = meta.get("mpp")
    dims = None
    if check_slide:
        from histoviz.io import open_slide

        with open_slide(sp_path) as r:
            dims = tuple(int(v) for v in r.dimensions)
            if mpp is None:
                mpp = r.mpp
        check_inside(xy, list(map(str, a.obs_names)), dims, p)
    if mpp is None or not float(mpp) > 0:
        mpp = VISIUM_SPOT_UM / diameter
        log.info("%s: no resolution recorded; %.3f um/px from the spot diameter (%g um Visium spot)",
                 p, mpp, VISIUM_SPOT_UM)
    return SpotSample(
        sample_id=sid, patient_id=pid, counts=x[keep], genes=[str(g) for g in a.var_names],
        barcodes=[str(b) for b in np.asarray(a.obs_names)[keep]], centres=xy[keep], spot_diameter_px=diameter,
        mpp=float(mpp), slide_path=str(sp_path), path=str(p), slide_dimensions=dims,
    )


def check_inside(xy: np.ndarray, barcodes: Sequence[str], dims: tuple[int, int], where: Path) -> None:
    """:class:`DataError` naming ``where`` when a spot centre lies outside the slide."""
    w, h = dims
    out = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= w) | (xy[:, 1] >= h)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise DataError(
            f"{where}: {int(out.sum())} of {len(xy)} spots lie outside the slide ({w} x {h} px), e.g. {barcodes[i]} at "
            f"({xy[i, 0]:.0f}, {xy[i, 1]:.0f}); the positions are in another pixel frame than the slide "
            "(give the full-resolution image the positions refer to, or re-import with --slide)"
        )


def align_genes(samples: Sequence[SpotSample]) -> list[str]:
    """Genes shared by every sample (in the first sample's order).

    Genes missing from some samples are dropped with a warning naming how many per sample.

    Raises
    ------
    DataError
        No gene is shared (naming two samples' first genes, e.g. symbols vs Ensembl ids).
    """
    if not samples:
        raise DataError("no spot samples")
    common = set(samples[0].genes)
    for s in samples[1:]:
        common &= set(s.genes)
    genes = [g for g in dict.fromkeys(samples[0].genes) if g in common]
    if not genes:
        a, b = samples[0], next((s for s in samples[1:] if s.genes), samples[0])
        raise DataError(
            f"no gene is shared by all {len(samples)} samples ({a.path or a.sample_id}: {len(a.genes)} genes, e.g. "
            f"{a.genes[:2]}; {b.path or b.sample_id}: {len(b.genes)} genes, e.g. {b.genes[:2]}); use the same gene "
            "naming (symbols or Ensembl ids) in every sample"
        )
    dropped = {s.path or s.sample_id: len(set(s.genes)) - len(genes) for s in samples if len(set(s.genes)) > len(genes)}
    if dropped:
        log.warning("genes differ between samples: keeping the %d shared by all; dropped %s", len(genes),
                    ", ".join(f"{k}: {v}" for k, v in dropped.items()))
    return genes


# ------------------------------------------------------------------------------------------------
# spot patches
# ------------------------------------------------------------------------------------------------
def spot_grid(sample: SpotSample, patch: PatchSpec, *, dimensions: tuple[int, int] | None = None) -> TileGrid:
    """A :class:`~histoviz.tiling.grid.TileGrid` of one patch per spot, centred on the spot.

    Corners are ``round(centre - size / 2)`` in level-0 pixels (patches reaching past the slide
    edge read white there); the grid keeps the spots' order.
    """
    from histoviz.tiling.grid import TileGrid

    tile, ts0, mpp = patch.sizes(sample)
    coords = np.round(np.asarray(sample.centres, np.float64) - ts0 / 2.0).astype(np.int64)
    dims = dimensions or sample.slide_dimensions or (int(coords[:, 0].max() + ts0), int(coords[:, 1].max() + ts0))
    return TileGrid(coords, tile, ts0, ts0, mpp, sample.mpp, tuple(int(v) for v in dims),
                    np.ones(len(coords), np.float32))


def embed_spot_sample(
    sample: SpotSample,
    encoder: Any,
    out: str | os.PathLike,
    patch: PatchSpec,
    *,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = False,
) -> Path:
    """Embed one patch per spot into ``out`` (a feature bag; rows in the sample's spot order).

    The bag's attributes add ``sample_id``, ``spot_diameter_px`` and ``n_spots``; a finished
    bag made with the same encoder and patch size is reused.
    """
    from histoviz.features.embed import embed_slide
    from histoviz.io import open_slide
    from histoviz.io.featurebag import is_complete_bag

    out = Path(out)
    tile, ts0, mpp = patch.sizes(sample)
    name = encoder if isinstance(encoder, str) else encoder.name
    if is_complete_bag(out, encoder=name, tile_size=tile, mpp=mpp) and _bag_rows(out) == len(sample):
        return out
    with open_slide(sample.slide_path) as r:
        if sample.mpp and not r.mpp:
            r.with_mpp(sample.mpp)
        grid = spot_grid(sample, patch, dimensions=tuple(int(v) for v in r.dimensions))
        embed_slide(r, encoder, grid, out=out, batch_size=batch_size, device=device, progress=progress)
    import h5py

    with h5py.File(out, "r+") as f:
        f.attrs["sample_id"] = sample.sample_id
        f.attrs["spot_diameter_px"] = float(sample.spot_diameter_px)
        f.attrs["n_spots"] = len(sample)
    return out


def _bag_rows(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["coords"].shape[0])


# ------------------------------------------------------------------------------------------------
# gene sets (training samples only)
# ------------------------------------------------------------------------------------------------
@dataclass
class GeneSets:
    """Targets and evaluation gene sets of one fold, chosen on its training spots.

    Attributes
    ----------
    targets
        Genes the models predict: the ``n_genes`` top HVG, then the HEG and markers not yet in.
    sets
        ``name -> genes`` (``hvg50``, ``heg50``, ``markers``).
    hvg_rank, mean, var
        Per-target training statistics (HVG rank, 0 = most variable; mean and variance of
        the normalised ``log1p`` expression over training spots).
    """

    targets: list[str]
    sets: dict[str, list[str]]
    hvg_rank: np.ndarray
    mean: np.ndarray
    var: np.ndarray


def select_genes(
    train_expr: np.ndarray,
    genes: Sequence[str],
    batches: np.ndarray | None = None,
    *,
    n_genes: int = 1000,
    n_hvg: int = 50,
    n_heg: int = 50,
    markers: Sequence[str] = (),
) -> GeneSets:
    """HVG (scanpy ``seurat`` flavour, per training sample when several), HEG (highest mean) and
    marker sets from **training** spots.

    Parameters
    ----------
    train_expr
        ``(n_spots, n_genes)`` normalised ``log1p`` expression of the training spots only (dense
        or scipy sparse).
    genes
        Column names.
    batches
        Training sample of each spot (HVG ranked by the number of samples in which a gene is
        highly variable, then by normalised dispersion, as scanpy does with ``batch_key``).
    n_genes, n_hvg, n_heg
        Sizes of the target list and of the HVG / HEG evaluation sets.
    markers
        Marker genes (those in ``genes`` form the ``markers`` set).

    Raises
    ------
    DataError
        Fewer than 2 genes expressed in the training spots.
    """
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    x = train_expr.tocsc().astype(np.float32) if sp.issparse(train_expr) else np.asarray(train_expr, np.float32)
    genes = [str(g) for g in genes]
    expressed = np.asarray((x > 0).sum(axis=0)).ravel() > 0
    if expressed.sum() < 2:
        raise DataError(f"fewer than 2 of {len(genes)} genes are expressed in the training spots")
    cols = np.flatnonzero(expressed)
    xs = x[:, cols].tocsr() if sp.issparse(x) else x[:, cols]
    a = ad.AnnData(X=xs, var=pd.DataFrame(index=pd.Index([genes[i] for i in cols])))
    key = None
    if batches is not None and len(set(np.asarray(batches).tolist())) > 1:
        a.obs["batch"] = pd.Categorical(np.asarray(batches).astype(str))
        key = "batch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sc.pp.highly_variable_genes(a, flavor="seurat", batch_key=key, inplace=False,
                                          n_top_genes=min(len(cols), max(n_genes, n_hvg)))
    res = res if isinstance(res, pd.DataFrame) else pd.DataFrame(res)
    res.index = a.var_names
    disp = res["dispersions_norm"].to_numpy(np.float64)
    disp = np.where(np.isfinite(disp), disp, -np.inf)
    nb = res["highly_variable_nbatches"].to_numpy() if "highly_variable_nbatches" in res else np.zeros(len(res))
    order = np.lexsort((np.arange(len(res)), -disp, -nb))
    ranked = [a.var_names[i] for i in order]
    mean_all = pd.Series(np.asarray(x.mean(axis=0)).ravel(), index=genes)
    heg = list(mean_all.sort_values(ascending=False, kind="mergesort").index[:n_heg])
    mk = [m for m in dict.fromkeys(map(str, markers)) if m in set(genes)]
    missing = [m for m in markers if m not in set(genes)]
    if missing:
        log.warning("marker genes not in the data: %s", ", ".join(missing[:10]))
    targets = list(dict.fromkeys(ranked[:n_genes] + heg + mk))
    idx = pd.Index(genes).get_indexer(targets)
    xt = x[:, idx].toarray() if sp.issparse(x) else x[:, idx]
    xt = np.asarray(xt, np.float64)
    rank = {g: r for r, g in enumerate(ranked)}
    sets = {f"hvg{n_hvg}": ranked[:n_hvg], f"heg{n_heg}": heg}
    if mk:
        sets["markers"] = mk
    return GeneSets(
        targets=targets, sets=sets,
        hvg_rank=np.array([rank.get(g, len(ranked)) for g in targets], np.int64),
        mean=np.asarray(xt.mean(axis=0), np.float64), var=np.asarray(xt.var(axis=0), np.float64),
    )
