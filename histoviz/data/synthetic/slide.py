"""One slide of the synthetic cohort (:mod:`histoviz.data.synthetic`): the gene model (cell-type
prototypes with marker genes), and for each slide its label map rendered to a TIFF, its truth
(expected cell counts and expression per region) and, for spatial slides, Visium-like spots
with counts drawn from their local composition.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histoviz._atomic import atomic_path

__all__: list[str] = []  # helpers of histoviz.data.synthetic

from histoviz.data.synthetic.cohort import (
    SyntheticConfig,
    _cell_channels,
    _slide_totals,
)
from histoviz.data.synthetic.render import (
    _CELLS_PER_MM2,
    _TISSUE_TO_CELL,
    CELL_TYPES,
    TISSUE_TYPES,
    _rng,
    _write_pyramid_tiff,
    render_synthetic_slide,
)

logger = logging.getLogger(__name__)

_MARKERS: dict[str, tuple[str, ...]] = {
    "tumour": ("MKI67", "TOP2A", "MYC", "ERBB2", "CCND1"),
    "fibroblast": ("COL1A1", "COL1A2", "DCN", "LUM", "FAP"),
    "lymphocyte": ("PTPRC", "CD3E", "CD2", "MS4A1", "CD8A"),
    "macrophage": ("CD68", "CD163", "LYZ", "C1QA", "CSF1R"),
    "epithelial": ("EPCAM", "KRT8", "KRT18", "CDH1", "KRT5"),
    "endothelial": ("PECAM1", "VWF", "CDH5", "KDR", "ENG"),
}
_MARKER_FOLD = 25.0
_VISIUM_SPOT_UM = 55.0
_VISIUM_SPACING_UM = 100.0

# ----------------------------------------------------------------------------------------------
# genes and prototypes
# ----------------------------------------------------------------------------------------------
@dataclass
class _GeneModel:
    names: list[str]
    signal: np.ndarray  # (G,) bool
    marker_of: list[str]  # "" for non-markers
    prototypes: np.ndarray  # (C, G) mean counts per cell
    top_genes: dict[str, np.ndarray]  # most specific signal genes per cell type


def _gene_model(cfg: SyntheticConfig) -> _GeneModel:
    rng = _rng(cfg.seed, "genes")
    n_c, n_g = len(CELL_TYPES), cfg.n_genes
    n_noise = int(round(cfg.noise_gene_fraction * n_g))
    n_noise = min(n_noise, n_g - n_c)
    marker_order = [
        (_MARKERS[ct][i], ct)
        for i in range(len(next(iter(_MARKERS.values()))))
        for ct in CELL_TYPES
    ]
    n_mark = min(len(marker_order), n_g - n_noise)
    names = [m for m, _ in marker_order[:n_mark]]
    marker_of = [ct for _, ct in marker_order[:n_mark]]
    names += [f"G{j:04d}" for j in range(1, n_g - n_mark + 1)]
    marker_of += [""] * (n_g - n_mark)
    signal = np.ones(n_g, dtype=bool)
    rest = np.arange(n_mark, n_g)
    noise_idx = np.sort(rng.choice(rest, size=n_noise, replace=False)) if n_noise else rest[:0]
    signal[noise_idx] = False

    base = np.exp(rng.normal(0.0, 0.9, n_g))  # mean counts per cell
    proto = base[None, :] * np.exp(rng.normal(0.0, 1.0, (n_c, n_g)))
    for g in range(n_mark):
        proto[:, g] = base[g] * np.exp(rng.normal(0.0, 0.3, n_c))
        proto[CELL_TYPES.index(marker_of[g]), g] *= _MARKER_FOLD
    proto[:, ~signal] = base[None, ~signal]
    proto = np.round(proto, 6)

    logp = np.log(proto)
    top: dict[str, np.ndarray] = {}
    for c, ct in enumerate(CELL_TYPES):
        spec = logp[c] - np.log(np.delete(proto, c, axis=0).mean(axis=0))
        spec[~signal] = -np.inf
        top[ct] = np.argsort(-spec, kind="stable")[:8]
    return _GeneModel(names, signal, marker_of, proto, top)


# ----------------------------------------------------------------------------------------------
# one slide: render, write TIFF + truth (+ spots)
# ----------------------------------------------------------------------------------------------
@dataclass
class _SlidePlan:
    index: int
    slide_id: str
    patient_id: str
    tissue_fraction: float
    tumour_fraction: float
    type_bias: np.ndarray
    spatial: bool


def _truth_dict(cfg: SyntheticConfig, genes: _GeneModel, labels: np.ndarray, tf: float) -> dict:
    return {
        "labels": labels,
        "downsample": np.int64(cfg.label_downsample),
        "slide_size": np.asarray(cfg.slide_size, dtype=np.int64),
        "mpp": np.float64(cfg.mpp),
        "tissue_types": np.asarray(TISSUE_TYPES),
        "cell_types": np.asarray(CELL_TYPES),
        "gene_names": np.asarray(genes.names),
        "tissue_to_cell": _TISSUE_TO_CELL.copy(),
        "cells_per_px2": _CELLS_PER_MM2 * (cfg.mpp / 1000.0) ** 2,
        "prototypes": genes.prototypes,
        "tumour_fraction_target": np.float64(tf),
    }


def _spot_lattice(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hexagonal lattice of spot centres (level-0 px) with the whole spot inside the slide."""
    w, h = cfg.slide_size
    spacing = _VISIUM_SPACING_UM / cfg.mpp
    radius = _VISIUM_SPOT_UM / cfg.mpp / 2.0
    dy = spacing * math.sqrt(3) / 2
    ox, oy = rng.uniform(0, spacing / 2), rng.uniform(0, dy)
    rows = np.arange(int((h - 2 * radius - oy) // dy) + 1)
    cols = np.arange(int((w - 2 * radius - ox) // spacing) + 2)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    x = radius + ox + cc * spacing + (rr % 2) * spacing / 2
    y = radius + oy + rr * dy
    ok = (x + radius <= w) & (y + radius <= h)
    centres = np.stack([x[ok], y[ok]], axis=1)
    grid = np.stack([rr[ok], 2 * cc[ok] + (rr[ok] % 2)], axis=1)  # Visium-style array_row/col
    return centres, grid


def _disk_means(truth: Mapping[str, Any], centres: np.ndarray, radius: float) -> np.ndarray:
    """Mean of the per-cell channels over disks (Vogel-spiral point sampling)."""
    ch = _cell_channels(truth)
    ds = int(truth["downsample"])
    m = 400
    k = np.arange(m) + 0.5
    r = radius * np.sqrt(k / m)
    ang = k * math.pi * (3 - math.sqrt(5))
    px = centres[:, 0, None] + r * np.cos(ang)
    py = centres[:, 1, None] + r * np.sin(ang)
    j = np.clip((px // ds).astype(np.int64), 0, ch.shape[1] - 1)
    i = np.clip((py // ds).astype(np.int64), 0, ch.shape[0] - 1)
    return ch[i, j].mean(axis=1) / float(ds * ds)  # per level-0 px^2


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: float | np.ndarray) -> np.ndarray:
    """Negative-binomial counts with mean ``mu`` and inverse dispersion ``theta`` (inf: Poisson)."""
    theta = np.broadcast_to(np.asarray(theta, dtype=np.float64), mu.shape)
    finite = np.isfinite(theta)
    lam = mu.copy()
    if finite.any():
        g = rng.gamma(np.where(finite, theta, 1.0), 1.0 / np.where(finite, theta, 1.0))
        lam = np.where(finite, mu * g, mu)
    return rng.poisson(lam).astype(np.float64)


def _theta(cfg: SyntheticConfig) -> float:
    return 1.0 / cfg.noise**2 if cfg.noise > 0 else math.inf


def _make_slide(
    root: Path, cfg: SyntheticConfig, genes: _GeneModel, plan: _SlidePlan,
    latents: dict[str, float] | None = None,
) -> dict[str, Any]:
    from histoviz.data.synthetic.mechanisms import interface_multiplier, slide_shift

    rng = _rng(cfg.seed, "slide", plan.index)
    knob = slide_shift(cfg, plan.index, latents or {})
    rgb, labels = render_synthetic_slide(
        rng,
        cfg.slide_size,
        cfg.mpp,
        tissue_fraction=plan.tissue_fraction,
        tumour_fraction=plan.tumour_fraction,
        type_bias=plan.type_bias,
        region_scale_um=cfg.region_scale_um,
        label_downsample=cfg.label_downsample,
        od_shift=None if knob is None else knob[0],
    )
    art = None
    if cfg.has_artifacts:
        from histoviz.data.synthetic.artifacts import paint_artifacts

        rgb, art = paint_artifacts(
            _rng(cfg.seed, "artifacts", plan.index), rgb, labels, cfg.label_downsample, cfg.mpp,
            pen_marks=cfg.pen_marks, debris=cfg.debris, bubbles=cfg.bubbles,
            faint_fraction=cfg.faint_fraction,
        )
    _write_pyramid_tiff(root / "slides" / f"{plan.slide_id}.tif", rgb, cfg.mpp, cfg.jpeg_quality)
    truth = _truth_dict(cfg, genes, labels, plan.tumour_fraction)
    if art is not None:
        truth.update(artifact=art.artifact, faint=art.faint)
    if knob is not None:
        truth.update(knob[1])
    totals = _slide_totals(truth)
    k = len(CELL_TYPES)
    summary = {
        "cells": totals[:k],
        "tissue_area_px": float(totals[k]),
        "tumour_area_px": float(totals[k + 1]),
        "n_spots": 0,
    }
    if plan.spatial:
        srng = _rng(cfg.seed, "spots", plan.index)
        centres, grid = _spot_lattice(cfg, srng)
        radius = _VISIUM_SPOT_UM / cfg.mpp / 2.0
        means = _disk_means(truth, centres, radius)
        area = math.pi * radius**2
        spot_cells = means[:, :k] * area
        spot_tissue = means[:, k]
        n_cells = spot_cells.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            comp = np.where(n_cells[:, None] > 0, spot_cells / n_cells[:, None], 0.0)
        expr = spot_cells @ genes.prototypes
        mult = interface_multiplier(cfg, genes.signal, comp[:, CELL_TYPES.index("tumour")])
        if mult is not None:
            expr = expr * mult
        ambient = 0.5 * genes.prototypes.mean(axis=0)
        size_factor = np.exp(srng.normal(0.0, 0.25, len(centres)))
        counts = _nb(srng, (expr + ambient[None, :]) * size_factor[:, None], _theta(cfg))
        truth.update(
            spot_centres=centres,
            spot_composition=comp,
            spot_n_cells=n_cells,
            spot_expression=expr,
            spot_tissue_fraction=spot_tissue,
        )
        _write_spatial(root, cfg, genes, plan.slide_id, rgb, centres, grid, spot_tissue, counts,
                       patient_id=plan.patient_id)
        summary["n_spots"] = int(len(centres))
    with atomic_path(root / "truth" / f"{plan.slide_id}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **truth)
    return summary


def _write_spatial(
    root: Path,
    cfg: SyntheticConfig,
    genes: _GeneModel,
    slide_id: str,
    rgb: np.ndarray,
    centres: np.ndarray,
    grid: np.ndarray,
    spot_tissue: np.ndarray,
    counts: np.ndarray,
    *,
    patient_id: str = "",
) -> None:
    import anndata
    import pandas as pd

    obs = pd.DataFrame(
        {
            "in_tissue": (spot_tissue >= 0.25).astype(np.int64),
            "array_row": grid[:, 0].astype(np.int64),
            "array_col": grid[:, 1].astype(np.int64),
        },
        index=pd.Index([f"{slide_id}_spot{i:04d}" for i in range(len(centres))], name="spot"),
    )
    var = pd.DataFrame({"signal": genes.signal}, index=pd.Index(genes.names, name="gene"))
    step = max(1, int(math.ceil(max(rgb.shape[:2]) / 600)))
    lowres = np.ascontiguousarray(rgb[::step, ::step])
    diameter = _VISIUM_SPOT_UM / cfg.mpp
    adata = anndata.AnnData(X=counts.astype(np.float32), obs=obs, var=var)
    adata.obsm["spatial"] = centres.astype(np.float64)
    adata.uns["spatial_meta"] = {
        "slide_id": slide_id,
        "sample_id": slide_id,
        "patient_id": patient_id or slide_id,
        "slide_path": f"../slides/{slide_id}.tif",
        "spot_diameter_px": float(diameter),
        "spot_spacing_px": float(_VISIUM_SPACING_UM / cfg.mpp),
        "mpp": float(cfg.mpp),
    }
    adata.uns["spatial"] = {
        slide_id: {
            "images": {"lowres": lowres},
            "scalefactors": {
                "tissue_lowres_scalef": 1.0 / step,
                "spot_diameter_fullres": float(diameter),
            },
            "metadata": {"source": "histoviz.data.synthetic"},
        }
    }
    with atomic_path(root / "spatial" / f"{slide_id}.h5ad") as tmp:
        adata.write_h5ad(tmp)
