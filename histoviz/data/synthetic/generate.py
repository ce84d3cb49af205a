"""Writing a synthetic cohort: the cohort-level tables (outcomes, gene groups, derived omics
layers, the scRNA-style reference) and :func:`make_synthetic_cohort`, plus
:func:`simulated_labels_for_tiles` for real tiles. The package docstring
(:mod:`histoviz.data.synthetic`) describes the generator; import from the package.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz._atomic import atomic_path, atomic_write_text
from histoviz._version import __version__
from histoviz.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd

__all__ = ["make_synthetic_cohort", "simulated_labels_for_tiles"]

from histoviz.data.synthetic.cohort import (
    SyntheticCohort,
    SyntheticConfig,
    _cohort_from_root,
    _read_manifest,
    load_synthetic_cohort,
)
from histoviz.data.synthetic.mechanisms import mix_shared
from histoviz.data.synthetic.render import (
    _CELLS_PER_MM2,
    _TISSUE_RGB,
    _TISSUE_TO_CELL,
    CELL_TYPES,
    FORMAT_VERSION,
    MODALITIES,
    TISSUE_TYPES,
    _rng,
)
from histoviz.data.synthetic.slide import (
    _gene_model,
    _GeneModel,
    _make_slide,
    _nb,
    _SlidePlan,
    _theta,
)

logger = logging.getLogger(__name__)

# PROGENy's 14 pathway names, each driven by one cell-type programme here (None: pure noise).
_PATHWAYS: tuple[tuple[str, str | None], ...] = (
    ("Androgen", None),
    ("EGFR", "epithelial"),
    ("Estrogen", "epithelial"),
    ("Hypoxia", "tumour"),
    ("JAK-STAT", "lymphocyte"),
    ("MAPK", "tumour"),
    ("NFkB", "macrophage"),
    ("p53", None),
    ("PI3K", "tumour"),
    ("TGFb", "fibroblast"),
    ("TNFa", "macrophage"),
    ("Trail", "lymphocyte"),
    ("VEGF", "endothelial"),
    ("WNT", None),
)
_REFERENCE_PROPORTIONS = np.array([0.25, 0.20, 0.22, 0.13, 0.12, 0.08])
_BASE_HAZARD = 1.0 / 120.0  # per month at the lowest tumour fraction and grade 1

# ----------------------------------------------------------------------------------------------
# cohort-level tables
# ----------------------------------------------------------------------------------------------
def _offset(cfg: SyntheticConfig) -> tuple[int, ...]:
    """Extra stream index of the cohort-wide per-patient draws (none without ``index_offset``)."""
    return (cfg.index_offset,) if cfg.index_offset else ()


def _plan(cfg: SyntheticConfig) -> tuple[list[_SlidePlan], list[str], dict[str, list[int]]]:
    rng = _rng(cfg.seed, "plan", *_offset(cfg))
    n_p = cfg.n_patients
    off = cfg.index_offset
    pids = [f"P{off + i + 1:03d}" for i in range(n_p)]
    two = set(rng.choice(n_p, size=cfg.n_multi_slide_patients, replace=False).tolist())
    lo, hi = cfg.tumour_fraction_range
    tlo, thi = cfg.tissue_fraction_range
    plans: list[_SlidePlan] = []
    by_patient: dict[str, list[int]] = {}
    for p, pid in enumerate(pids):
        prng = _rng(cfg.seed, "patient", off + p)
        tf = float(prng.uniform(lo, hi))
        bias = np.array([0.3, -0.2, 0.0, -0.8 + 1.2 * tf]) + prng.normal(0, 0.8, 4)
        for _ in range(2 if p in two else 1):
            i = len(plans)
            srng = _rng(cfg.seed, "slide-plan", off + i)
            plans.append(
                _SlidePlan(
                    index=off + i,
                    slide_id=f"S{off + i + 1:03d}",
                    patient_id=pid,
                    tissue_fraction=float(srng.uniform(tlo, thi)),
                    tumour_fraction=float(np.clip(tf + srng.normal(0, 0.03), 0.0, 0.95)),
                    type_bias=bias + srng.normal(0, 0.1, 4),
                    spatial=False,
                )
            )
            by_patient.setdefault(pid, []).append(i)
    n_sp = int(round(cfg.spatial_fraction * len(plans)))
    if cfg.spatial_fraction > 0:
        n_sp = max(n_sp, 1)
    for i in rng.choice(len(plans), size=n_sp, replace=False).tolist():
        plans[i].spatial = True
    return plans, pids, by_patient


def _outcomes(cfg: SyntheticConfig, tumour_fraction: np.ndarray,
              hidden: np.ndarray | None = None, focal: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Grade and censored survival from the measured tumour fraction (and the hidden factor), or
    from the focal latent when ``focal_share`` is on."""
    rng = _rng(cfg.seed, "outcomes", *_offset(cfg))
    lo, hi = cfg.tumour_fraction_range
    x = (tumour_fraction - lo) / max(hi - lo, 1e-6) if focal is None else np.asarray(focal, np.float64)
    h = np.zeros_like(x) if hidden is None else cfg.hidden_factor * np.asarray(hidden, np.float64)
    latent = x + rng.normal(0.0, 0.12, x.shape) + 0.15 * h
    grade = 1 + np.digitize(latent, [0.25, 0.5, 0.75])
    log_h = math.log(_BASE_HAZARD) + 2.5 * x + 0.25 * (grade - 1) + 0.8 * h
    hazard = np.exp(log_h)
    t_event = rng.exponential(1.0 / hazard)
    target = cfg.censoring_fraction
    if target > 0:
        lo_c, hi_c = -20.0, 20.0  # log censoring hazard; mean P(censored) is increasing in it
        for _ in range(200):
            mid = (lo_c + hi_c) / 2
            hc = math.exp(mid)
            if np.mean(hc / (hc + hazard)) < target:
                lo_c = mid
            else:
                hi_c = mid
        t_cens = rng.exponential(1.0 / math.exp((lo_c + hi_c) / 2), x.shape)
    else:
        rng.exponential(1.0, x.shape)
        t_cens = np.full(x.shape, np.inf)
    event = (t_event <= t_cens).astype(np.int64)
    time = np.maximum(np.round(np.minimum(t_event, t_cens), 3), 0.001)
    return {
        "grade": grade.astype(np.int64),
        "grade_latent": latent,
        "log_hazard": log_h,
        "event_time": t_event,
        "censor_time": t_cens,
        "time": time,
        "event": event,
    }


def _gene_groups_and_hidden(
    cfg: SyntheticConfig, genes: _GeneModel, n_p: int
) -> tuple[dict[str, list[str]] | None, np.ndarray | None, np.ndarray | None]:
    """Gene groups, the hidden factor per patient and its multiplier of the bulk means
    (``None``s when the options are off; own random streams, so nothing else changes)."""
    if not cfg.gene_groups:
        return None, None, None
    from histoviz.data.gene_groups import synthetic_gene_groups

    groups = synthetic_gene_groups(genes.names, _rng(cfg.seed, "gene-groups"))
    if cfg.hidden_factor <= 0:
        return groups, None, None
    hrng = _rng(cfg.seed, "hidden", *_offset(cfg))
    hidden = hrng.standard_normal(n_p)
    log_mult = np.zeros((n_p, len(genes.names)))
    pos = {g: j for j, g in enumerate(genes.names)}
    for name, sign in (("Oncogenes", 1.0), ("Tumor Suppressor Genes", -1.0)):
        idx = np.array([pos[g] for g in groups[name]], np.int64)
        w = hrng.uniform(0.5, 1.5, idx.size)
        log_mult[:, idx] += sign * 0.5 * cfg.hidden_factor * hidden[:, None] * w[None, :]
    return groups, hidden, np.exp(log_mult)


def _derived_layers(
    cfg: SyntheticConfig, genes: _GeneModel, mu: np.ndarray, xi: np.ndarray | None = None
) -> dict[str, tuple[np.ndarray, dict[str, list]]]:
    """Protein, miRNA and pathway values (patients x targets) and their var columns."""
    cpm = mu / mu.sum(axis=1, keepdims=True) * 1e6
    ref = genes.prototypes.mean(axis=0)
    centre = np.log1p(ref / ref.sum() * 1e6)
    z = np.log1p(cpm) - centre[None, :]
    prog = np.stack([z[:, genes.top_genes[ct]].mean(axis=1) for ct in CELL_TYPES], axis=1)
    cell_of_gene = np.argmax(np.log(genes.prototypes), axis=0)
    sig_idx = np.flatnonzero(genes.signal)
    n_p = mu.shape[0]
    noise = cfg.noise
    out: dict[str, tuple[np.ndarray, dict[str, list]]] = {}

    # protein: RPPA-like, centred log scale
    rng = _rng(cfg.seed, "protein")
    n = cfg.n_proteins
    n_sig = min(int(round(0.8 * n)), n)
    vals = np.empty((n_p, n))
    names, signal, source, program = [], [], [], []
    for j in range(n):
        if j < n_sig:
            g = int(sig_idx[j % sig_idx.size])
            c = int(cell_of_gene[g])
            a = rng.uniform(0.6, 1.2)
            shared = a * z[:, g] + 0.4 * prog[:, c]
            vals[:, j] = mix_shared(cfg, shared, xi, "protein", j) + noise * rng.standard_normal(n_p)
            names.append(
                f"{genes.names[g]}_prot" if j < sig_idx.size else f"{genes.names[g]}_prot{j}"
            )
            signal.append(True)
            source.append(genes.names[g])
            program.append(CELL_TYPES[c])
        else:
            vals[:, j] = rng.standard_normal(n_p)
            names.append(f"PROT{j + 1:03d}")
            signal.append(False)
            source.append("")
            program.append("")
    out["protein"] = (
        vals,
        {"name": names, "signal": signal, "source_gene": source, "program": program},
    )

    # miRNA: log2(RPM+1)-like, half of the signal miRNAs anti-correlated with their programme
    rng = _rng(cfg.seed, "mirna")
    n = cfg.n_mirna
    n_sig = min(int(round(0.7 * n)), n)
    vals = np.empty((n_p, n))
    names, signal, program, sign = [], [], [], []
    for j in range(n):
        base = rng.uniform(3.0, 9.0)
        if j < n_sig:
            c = j % len(CELL_TYPES)
            s = -1.0 if (j // len(CELL_TYPES)) % 2 == 0 else 1.0
            a = rng.uniform(0.8, 1.5)
            vals[:, j] = base + mix_shared(cfg, s * a * prog[:, c], xi, "mirna", j) + noise * rng.standard_normal(n_p)
            signal.append(True)
            program.append(CELL_TYPES[c])
            sign.append(int(s))
        else:
            vals[:, j] = base + 0.8 * rng.standard_normal(n_p)
            signal.append(False)
            program.append("")
            sign.append(0)
        names.append(f"hsa-miR-S{j + 1:03d}")
    out["mirna"] = (
        np.clip(vals, 0.0, None),
        {"name": names, "signal": signal, "program": program, "sign": sign},
    )

    # pathway: programme genes + a few random signal genes
    rng = _rng(cfg.seed, "pathway")
    n = cfg.n_pathways
    vals = np.empty((n_p, n))
    names, signal, program = [], [], []
    for j in range(n):
        if j < len(_PATHWAYS):
            name, ct = _PATHWAYS[j]
        else:
            name = f"PW{j + 1:03d}"
            ct = None if j % 5 == 0 else CELL_TYPES[j % len(CELL_TYPES)]
        if ct is None:
            vals[:, j] = 0.5 * rng.standard_normal(n_p)
        else:
            extra = rng.choice(sig_idx, size=min(3, sig_idx.size), replace=False)
            gidx = np.concatenate([genes.top_genes[ct], extra])
            wts = rng.uniform(0.5, 1.5, gidx.size)
            vals[:, j] = (z[:, gidx] * wts).sum(
                axis=1
            ) / wts.sum() + 0.5 * noise * rng.standard_normal(n_p)
        names.append(name)
        signal.append(ct is not None)
        program.append(ct or "")
    out["pathway"] = (vals, {"name": names, "signal": signal, "program": program})
    return out


def _write_h5ad(path: Path, adata: anndata.AnnData) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def _write_csv(path: Path, df: pd.DataFrame, **kw: Any) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, float_format="%.6g", lineterminator="\n", **kw)


def make_synthetic_cohort(
    out_dir: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    progress: bool = False,
    n_jobs: int | None = None,
    **overrides: Any,
) -> SyntheticCohort:
    """Generate a synthetic cohort with ground truth under ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder (created). If it already holds a complete cohort made with the same
        configuration, nothing is written and that cohort is returned.
    config
        Generator settings (default: ``SyntheticConfig()``).
    progress
        Show a tqdm progress bar over slides.
    n_jobs
        Slides rendered in parallel threads (default: up to 8, one per CPU). The output does
        not depend on it.
    **overrides
        Fields of :class:`SyntheticConfig` replacing those of ``config``, e.g.
        ``n_slides=6, slide_size=(1024, 1024)``.

    Returns
    -------
    The :class:`SyntheticCohort` describing the files.

    Raises
    ------
    ConfigError
        Unknown or invalid settings, or ``out_dir`` holds a cohort made with a different
        configuration.

    Notes
    -----
    Layout::

        cohort.csv                 slide_id, patient_id, path (relative), time, event, grade
        manifest.json              config, names, file list (written last: completion marker)
        slides/<slide_id>.tif      pyramidal JPEG-tiled TIFF (OpenSlide and tifffile)
        omics/gene.h5ad, gene.tsv  bulk counts (patients x genes) and a Xena-style copy
        omics/{protein,mirna,pathway}.h5ad
        reference_sc.h5ad          scRNA-style reference, obs["cell_type"]
        spatial/<slide_id>.h5ad    Visium-like spots (a fraction of slides)
        truth/<slide_id>.npz       label map and constants for tile_truth
        truth/prototypes.csv, tissue_to_cell.csv, tissue_types.csv, patients.csv
    """
    from concurrent.futures import ThreadPoolExecutor

    import anndata
    import pandas as pd

    cfg = config if config is not None else SyntheticConfig()
    if not isinstance(cfg, SyntheticConfig):
        raise ConfigError(f"config must be a SyntheticConfig, got {type(cfg).__name__}")
    if overrides:
        known = {f.name for f in fields(SyntheticConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown SyntheticConfig fields {unknown}; known: {sorted(known)}")
        cfg = replace(cfg, **overrides)

    root = Path(out_dir)
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        existing = _read_manifest(root)
        # a setting added after that cohort was made reads as its default (defaults reproduce it)
        old = {**SyntheticConfig().to_dict(), **existing.get("config", {})}
        new = cfg.to_dict()
        if existing.get("format_version") != FORMAT_VERSION or old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"{root}: already holds a synthetic cohort made with a different configuration "
                f"(differs in {diff or ['format_version']}); use an empty folder or delete this one"
            )
        missing = [f for f in existing.get("files", []) if not (root / f).exists()]
        if not missing:
            logger.info("%s: synthetic cohort already complete; nothing to do", root)
            return load_synthetic_cohort(root)
        logger.warning("%s: %d files missing; regenerating the cohort", root, len(missing))
        manifest_path.unlink()

    from histoviz._atomic import make_output_dir

    make_output_dir(root)
    for sub in ("slides", "truth", "omics", "spatial"):
        (root / sub).mkdir(exist_ok=True)

    genes = _gene_model(cfg)
    plans, pids, by_patient = _plan(cfg)
    logger.info(
        "generating %d slides (%d patients, %dx%d px) under %s",
        len(plans),
        len(pids),
        cfg.slide_size[0],
        cfg.slide_size[1],
        root,
    )
    workers = n_jobs if n_jobs is not None else min(8, os.cpu_count() or 1)
    workers = max(1, min(int(workers), len(plans)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plans), desc="synthetic slides", unit="slide")

    from histoviz.data.synthetic.mechanisms import bulk_mean, patient_latents, reference_prototypes

    latents = patient_latents(cfg, len(pids))
    pindex = {p: k for k, p in enumerate(pids)}

    def job(plan: _SlidePlan) -> dict[str, Any]:
        lat = {k: float(v[pindex[plan.patient_id]]) for k, v in latents.items()}
        res = _make_slide(root, cfg, genes, plan, lat)
        if bar is not None:
            bar.update(1)
        return res

    try:
        if workers == 1:
            summaries = [job(p) for p in plans]
        else:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                summaries = list(ex.map(job, plans))
    finally:
        if bar is not None:
            bar.close()

    # --- patients: composition, tumour fraction, outcomes -------------------------------------
    n_p = len(pids)
    cells = np.zeros((n_p, len(CELL_TYPES)))
    tissue_px = np.zeros(n_p)
    tumour_px = np.zeros(n_p)
    for p, pid in enumerate(pids):
        for i in by_patient[pid]:
            cells[p] += summaries[i]["cells"]
            tissue_px[p] += summaries[i]["tissue_area_px"]
            tumour_px[p] += summaries[i]["tumour_area_px"]
    tumour_fraction = tumour_px / np.maximum(tissue_px, 1e-9)
    groups, hidden, hidden_mult = _gene_groups_and_hidden(cfg, genes, n_p)
    outcomes = _outcomes(cfg, tumour_fraction, hidden, latents.get("focal"))

    # --- bulk RNA -------------------------------------------------------------------------------
    brng = _rng(cfg.seed, "bulk", *_offset(cfg))
    mu_true = bulk_mean(cfg, cells, genes.prototypes, genes.signal, latents.get("psi"))
    if mu_true is None:
        mu_true = cells @ genes.prototypes
    library = np.exp(brng.normal(0.0, 0.2, n_p))
    patient_noise = np.ones_like(mu_true)
    patient_noise[:, ~genes.signal] = np.exp(
        brng.normal(0.0, 0.7, (n_p, int((~genes.signal).sum())))
    )
    if hidden_mult is not None:
        patient_noise = patient_noise * hidden_mult
    counts = _nb(brng, mu_true * patient_noise * library[:, None], _theta(cfg))
    gene_var = pd.DataFrame(
        {
            "signal": genes.signal,
            "marker_of": pd.Categorical(genes.marker_of),
            "theta": np.full(len(genes.names), _theta(cfg) if cfg.noise > 0 else np.inf),
        },
        index=pd.Index(genes.names, name="gene"),
    )
    obs = pd.DataFrame(index=pd.Index(pids, name="patient_id"))
    gene_ad = anndata.AnnData(X=counts.astype(np.float32), obs=obs.copy(), var=gene_var)
    lib = counts.sum(axis=1, keepdims=True)
    gene_ad.obs["library_size"] = lib[:, 0]
    gene_ad.layers["log1p_cpm"] = np.log1p(counts / np.maximum(lib, 1) * 1e6).astype(np.float32)
    gene_ad.uns["synthetic"] = {"units": "counts", "generator": "histoviz.data.synthetic"}
    _write_h5ad(root / "omics" / "gene.h5ad", gene_ad)
    xena = pd.DataFrame(
        counts.T.astype(np.int64), index=pd.Index(genes.names, name="gene"), columns=pids
    )
    with atomic_path(root / "omics" / "gene.tsv") as tmp:
        xena.to_csv(tmp, sep="\t", lineterminator="\n")

    # --- derived layers -------------------------------------------------------------------------
    present: dict[str, np.ndarray] = {"gene": np.ones(n_p, dtype=bool)}
    n_missing = int(round(cfg.missing_fraction * n_p))
    n_missing = min(n_missing, n_p - 1)
    for mod, (vals, var_cols) in _derived_layers(cfg, genes, mu_true, latents.get("xi")).items():
        mrng = _rng(cfg.seed, "missing", MODALITIES.index(mod), *_offset(cfg))
        keep = np.ones(n_p, dtype=bool)
        if n_missing:
            keep[mrng.choice(n_p, size=n_missing, replace=False)] = False
        present[mod] = keep
        var = pd.DataFrame(
            {k: v for k, v in var_cols.items() if k != "name"},
            index=pd.Index(var_cols["name"], name="target"),
        )
        for col in var.columns:
            if var[col].dtype == object:
                var[col] = pd.Categorical(var[col])
        ad_mod = anndata.AnnData(
            X=vals[keep].astype(np.float32),
            obs=pd.DataFrame(
                index=pd.Index([p for p, k in zip(pids, keep) if k], name="patient_id")
            ),
            var=var,
        )
        _write_h5ad(root / "omics" / f"{mod}.h5ad", ad_mod)

    # --- scRNA reference ------------------------------------------------------------------------
    rrng = _rng(cfg.seed, "reference")
    n_ref = cfg.n_cells_reference
    props = _REFERENCE_PROPORTIONS / _REFERENCE_PROPORTIONS.sum()
    per_type = np.maximum(np.floor(props * n_ref).astype(int), 1)
    per_type[0] += n_ref - per_type.sum()
    ctype = np.repeat(np.arange(len(CELL_TYPES)), per_type)
    batch = rrng.integers(0, 2, n_ref)
    batch_scale = np.exp(rrng.normal(0.0, 0.15, (2, len(genes.names))))
    size_factor = np.exp(rrng.normal(0.0, 0.35, n_ref))
    mu_sc = reference_prototypes(cfg, genes.prototypes)[ctype] * batch_scale[batch] * size_factor[:, None]
    sc_counts = _nb(rrng, mu_sc, 3.0).astype(np.float32)
    ref_obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(
                [CELL_TYPES[c] for c in ctype], categories=list(CELL_TYPES)
            ),
            "batch": pd.Categorical([f"B{b + 1}" for b in batch], categories=["B1", "B2"]),
        },
        index=pd.Index([f"cell{i:05d}" for i in range(n_ref)], name="cell"),
    )
    ref_ad = anndata.AnnData(
        X=sc_counts,
        obs=ref_obs,
        var=pd.DataFrame({"signal": genes.signal}, index=pd.Index(genes.names, name="gene")),
    )
    ref_ad.layers["counts"] = sc_counts.copy()
    _write_h5ad(root / "reference_sc.h5ad", ref_ad)

    # --- truth tables ----------------------------------------------------------------------------
    _write_csv(
        root / "truth" / "prototypes.csv",
        pd.DataFrame(
            genes.prototypes, index=pd.Index(CELL_TYPES, name="cell_type"), columns=genes.names
        ),
    )
    _write_csv(
        root / "truth" / "tissue_to_cell.csv",
        pd.DataFrame(
            _TISSUE_TO_CELL,
            index=pd.Index(TISSUE_TYPES, name="tissue_type"),
            columns=list(CELL_TYPES),
        ),
    )
    _write_csv(
        root / "truth" / "tissue_types.csv",
        pd.DataFrame(
            {
                "cells_per_mm2": _CELLS_PER_MM2,
                "cells_per_px2": _CELLS_PER_MM2 * (cfg.mpp / 1000.0) ** 2,
                "r": _TISSUE_RGB[:, 0].astype(int),
                "g": _TISSUE_RGB[:, 1].astype(int),
                "b": _TISSUE_RGB[:, 2].astype(int),
            },
            index=pd.Index(TISSUE_TYPES, name="tissue_type"),
        ),
    )
    n_cells = cells.sum(axis=1)
    pat = pd.DataFrame(
        {
            "patient_id": pids,
            "n_slides": [len(by_patient[p]) for p in pids],
            "slide_ids": [";".join(plans[i].slide_id for i in by_patient[p]) for p in pids],
            "tumour_fraction": tumour_fraction,
            "tissue_area_mm2": tissue_px * (cfg.mpp / 1000.0) ** 2,
            "n_cells": n_cells,
            **{
                f"frac_{ct}": cells[:, k] / np.maximum(n_cells, 1e-9)
                for k, ct in enumerate(CELL_TYPES)
            },
            "library_factor": library,
            **({"hidden_factor": hidden} if hidden is not None else {}),
            **({"focal_latent": latents["focal"]} if "focal" in latents else {}),
            **({"visible_factor": latents["psi"]} if "psi" in latents else {}),
            **({"modality_factor": latents["xi"]} if "xi" in latents else {}),
            "grade": outcomes["grade"],
            "grade_latent": outcomes["grade_latent"],
            "log_hazard": outcomes["log_hazard"],
            "event_time": outcomes["event_time"],
            "censor_time": outcomes["censor_time"],
            "time": outcomes["time"],
            "event": outcomes["event"],
            **{f"has_{m}": present[m].astype(np.int64) for m in MODALITIES},
        }
    )
    _write_csv(root / "truth" / "patients.csv", pat, index=False)

    # --- cohort table ----------------------------------------------------------------------------
    pidx = {p: k for k, p in enumerate(pids)}
    rows = []
    for plan in plans:
        k = pidx[plan.patient_id]
        rows.append(
            {
                "slide_id": plan.slide_id,
                "patient_id": plan.patient_id,
                "path": f"slides/{plan.slide_id}.tif",
                "time": float(outcomes["time"][k]),
                "event": int(outcomes["event"][k]),
                "grade": int(outcomes["grade"][k]),
            }
        )
    _write_csv(root / "cohort.csv", pd.DataFrame(rows), index=False)

    # --- manifest (last) --------------------------------------------------------------------------
    slide_ids = [p.slide_id for p in plans]
    spatial_ids = [p.slide_id for p in plans if p.spatial]
    files = (
        ["cohort.csv", "reference_sc.h5ad", "omics/gene.tsv"]
        + [f"omics/{m}.h5ad" for m in MODALITIES]
        + [f"slides/{s}.tif" for s in slide_ids]
        + [f"truth/{s}.npz" for s in slide_ids]
        + [f"spatial/{s}.h5ad" for s in spatial_ids]
        + [f"truth/{n}.csv" for n in ("prototypes", "tissue_to_cell", "tissue_types", "patients")]
        + (["gene_groups.csv"] if groups is not None else [])
    )
    if groups is not None:
        from histoviz.data.gene_groups import write_gene_groups

        write_gene_groups(groups, root / "gene_groups.csv")
    manifest = {
        "generator": "histoviz.data.synthetic",
        "format_version": FORMAT_VERSION,
        "histoviz_version": __version__,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "tissue_types": list(TISSUE_TYPES),
        "cell_types": list(CELL_TYPES),
        "modalities": list(MODALITIES),
        "genes": genes.names,
        "slides": slide_ids,
        "patients": pids,
        "spatial_slides": spatial_ids,
        "files": sorted(files),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    logger.info("synthetic cohort written to %s", root)
    return _cohort_from_root(root, cfg, slide_ids, spatial_ids)


# ----------------------------------------------------------------------------------------------
# data kind 3: real tiles, simulated labels
# ----------------------------------------------------------------------------------------------
def simulated_labels_for_tiles(
    tiles_rgb: np.ndarray,
    n_genes: int = 20,
    seed: int = 0,
    *,
    noise: float = 0.5,
    noise_gene_fraction: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate expression labels that follow the haematoxylin density of real H&E tiles.

    Each tile's haematoxylin density is the mean positive haematoxylin channel of
    :func:`skimage.color.rgb2hed`. Signal genes are monotone functions of it (linear,
    softplus or tanh, with either sign) plus Gaussian noise; the last
    ``round(noise_gene_fraction * n_genes)`` genes are pure noise. The density is standardised
    over the tiles passed, so call it once with all tiles of a data set.

    Parameters
    ----------
    tiles_rgb
        ``(N, h, w, 3)`` uint8 tiles.
    n_genes
        Number of simulated genes.
    seed
        Seed of the gene functions and the noise.
    noise
        Standard deviation of the noise relative to the unit-variance signal.
    noise_gene_fraction
        Fraction of pure-noise genes (placed last).

    Returns
    -------
    labels
        ``(N, n_genes)`` float32.
    hematoxylin_density
        ``(N,)`` float32 raw (unstandardised) density.
    """
    from skimage.color import rgb2hed

    tiles = np.asarray(tiles_rgb)
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise DataError(f"tiles_rgb must be (N, h, w, 3) RGB; got shape {tiles.shape}")
    if tiles.dtype != np.uint8:
        raise DataError(f"tiles_rgb must be uint8; got {tiles.dtype}")
    if n_genes < 1:
        raise ConfigError(f"n_genes must be >= 1, got {n_genes}")
    n = tiles.shape[0]
    if n == 0:
        return np.zeros((0, n_genes), np.float32), np.zeros(0, np.float32)
    hd = np.empty(n, dtype=np.float64)
    for i in range(n):
        hd[i] = np.clip(rgb2hed(tiles[i])[..., 0], 0.0, None).mean()
    sd = hd.std()
    zs = (hd - hd.mean()) / sd if sd > 0 else np.zeros_like(hd)
    rng = _rng(seed, "tile-labels")
    n_noise = min(int(round(noise_gene_fraction * n_genes)), n_genes)
    labels = np.empty((n, n_genes), dtype=np.float64)
    for g in range(n_genes):
        sign = 1.0 if rng.random() < 0.7 else -1.0
        offset = rng.uniform(1.0, 4.0)
        kind = g % 3
        eps = rng.standard_normal(n)
        if g >= n_genes - n_noise:
            labels[:, g] = offset + eps
            continue
        if kind == 0:
            f = zs
        elif kind == 1:
            f = np.logaddexp(0.0, 2.0 * zs) - np.log(2.0)
        else:
            f = np.tanh(zs)
        f_sd = f.std()
        f = (f - f.mean()) / f_sd if f_sd > 0 else f * 0
        labels[:, g] = offset + sign * f + noise * eps
    return labels.astype(np.float32), hd.astype(np.float32)
