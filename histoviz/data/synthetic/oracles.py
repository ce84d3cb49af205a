"""Oracles of the mechanism knobs (:mod:`histoviz.data.synthetic.mechanisms`): a simple model
given the planted quantity, so a sweep can first check that its knob works, before any method is
compared along it.

Each oracle takes a cohort (and, where it needs the pixels, its feature bags) and returns named
numbers; ``value`` is the one that should rise as the knob turns the mechanism on:

========== ================================================================= ======================
oracle     given                                                             ``value`` rises with
========== ================================================================= ======================
focal      the focal region (truth mask): grade AUC of logistic regression   the focality (share
           on the mean features of the focal patches minus that on the mean  falling from diffuse)
           of all patches
hidden     the tumour patches (truth labels): cross-validated R^2 of the     hidden_visibility
           hidden factor from their mean features (ridge)
composition the true cell composition and the written reference's           composition_signal,
           prototypes: mean per-gene Pearson of ``log(composition @          a matching reference
           prototypes)`` with the log bulk expression
modality   the true composition: cross-validated R^2 of the signal proteins   patients with the
           from it (ridge), on the patients who have the protein layer        modality
spots      the true spot composition: how much of the interface genes'      spot_interface
           (noise-free) log expression a linear map of it misses (1 - R^2),
           next to the spots of one sample (``n_spots``)
========== ================================================================= ======================

All fits are scikit-learn, cross-validated over patients (5 folds, fixed seed).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from histoviz.data.synthetic.cohort import SyntheticCohort

__all__ = ["ORACLES", "run_oracle"]


def _bags(cohort: SyntheticCohort, features: str | os.PathLike) -> dict[str, Any]:
    from histoviz.io.featurebag import FeatureBag

    out = {}
    for sid in cohort.slide_ids:
        p = Path(features) / f"{sid}.h5"
        if not p.exists():
            raise DataError(f"{p}: missing feature bag (the oracle needs the embedded cohort)")
        out[sid] = FeatureBag.from_h5(p)
    return out


def _centre_labels(truth: dict[str, Any], bag: Any, key: str) -> np.ndarray:
    """The truth map ``key`` (label grid) at each tile's centre."""
    ds = int(truth["downsample"])
    grid = np.asarray(truth[key])
    c = (np.asarray(bag.coords, np.float64) + bag.tile_size_level0 / 2.0) // ds
    i = np.clip(c[:, 1].astype(np.int64), 0, grid.shape[0] - 1)
    j = np.clip(c[:, 0].astype(np.int64), 0, grid.shape[1] - 1)
    return grid[i, j]


def _patient_pool(cohort: SyntheticCohort, bags: dict[str, Any], select: Callable[[str, Any], np.ndarray]
                  ) -> tuple[list[str], np.ndarray]:
    table = cohort.cohort_table()
    pats = list(dict.fromkeys(table["patient_id"].astype(str)))
    rows = []
    for p in pats:
        feats, sel = [], []
        for sid in table.loc[table["patient_id"].astype(str) == p, "slide_id"].astype(str):
            feats.append(np.asarray(bags[sid].features, np.float64))
            sel.append(select(sid, bags[sid]))
        f, s = np.concatenate(feats), np.concatenate(sel)
        rows.append(f[s].mean(axis=0) if s.any() else f.mean(axis=0))
    return pats, np.stack(rows)


def _cv_auc(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes, counts = np.unique(y, return_counts=True)
    k = int(min(5, counts.min()))
    if len(classes) < 2 or k < 2:
        return float("nan")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    p = cross_val_predict(model, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=0), method="predict_proba")
    if len(classes) == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=classes))


def _cv_r2(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, np.float64)
    y2 = y[:, None] if y.ndim == 1 else y
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    p = cross_val_predict(model, x, y2, cv=KFold(min(5, len(y2)), shuffle=True, random_state=0)).reshape(y2.shape)
    ss = ((y2 - y2.mean(axis=0)) ** 2).sum(axis=0)
    r2 = 1.0 - ((y2 - p) ** 2).sum(axis=0) / np.where(ss > 0, ss, np.nan)
    return float(np.nanmean(r2))


def focal_oracle(cohort: SyntheticCohort, features: str | os.PathLike | None = None) -> dict[str, float]:
    """Grade AUC from the focal patches' mean features vs all patches' (see the module table)."""
    if features is None or cohort.config.focal_share <= 0:
        raise DataError("the focal oracle needs a cohort made with focal_share > 0 and its feature bags")
    bags = _bags(cohort, features)
    grade = cohort.patients()["grade"]
    pats, focal = _patient_pool(cohort, bags, lambda s, b: _centre_labels(cohort.truth(s), b, "focal").astype(bool))
    _, allp = _patient_pool(cohort, bags, lambda s, b: np.ones(len(b.features), bool))
    y = grade.loc[pats].to_numpy()
    a_focal, a_all = _cv_auc(focal, y), _cv_auc(allp, y)
    return {"value": a_focal - a_all, "focal_pool_auc": a_focal, "mean_pool_auc": a_all}


def hidden_oracle(cohort: SyntheticCohort, features: str | os.PathLike | None = None) -> dict[str, float]:
    """R^2 of the hidden factor from the tumour patches' mean features (see the module table)."""
    if features is None or cohort.config.hidden_factor <= 0:
        raise DataError("the hidden oracle needs a cohort made with hidden_factor > 0 and its feature bags")
    bags = _bags(cohort, features)
    pats, tum = _patient_pool(cohort, bags, lambda s, b: _centre_labels(cohort.truth(s), b, "labels") == 1)
    h = cohort.patients()["hidden_factor"].loc[pats].to_numpy()
    r2 = _cv_r2(tum, h)
    return {"value": r2, "r2_hidden_from_tumour_patches": r2}


def _log_cpm(x: np.ndarray) -> np.ndarray:
    return np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12) * 1e4)


def composition_oracle(cohort: SyntheticCohort, features: str | os.PathLike | None = None) -> dict[str, float]:
    """Per-gene Pearson of the bulk with the composition x the written reference's prototypes."""
    from histoviz.data.synthetic.render import CELL_TYPES
    from histoviz.evaluation.metrics import columnwise_pearson

    pat = cohort.patients()
    gene = cohort.omics_adata("gene")
    ref = cohort.reference_adata()
    x = np.asarray(ref.X, np.float64)
    size = x.sum(axis=1, keepdims=True)
    x = x / np.maximum(size, 1e-12) * np.median(size)
    proto = np.stack([x[(ref.obs["cell_type"] == ct).to_numpy()].mean(axis=0) for ct in CELL_TYPES])
    frac = pat.loc[list(gene.obs_names), [f"frac_{ct}" for ct in CELL_TYPES]].to_numpy(np.float64)
    pred = _log_cpm(frac @ proto)
    obs = _log_cpm(np.asarray(gene.X, np.float64))
    sig = np.asarray(gene.var["signal"], bool)
    r = columnwise_pearson(obs[:, sig], pred[:, sig])
    return {"value": float(np.nanmean(r)), "pearson_bulk_vs_composition": float(np.nanmean(r))}


def modality_oracle(cohort: SyntheticCohort, features: str | os.PathLike | None = None,
                    modality: str = "protein") -> dict[str, float]:
    """R^2 of the signal targets of ``modality`` from the true composition, on its patients."""
    from histoviz.data.synthetic.render import CELL_TYPES

    pat = cohort.patients()
    ad = cohort.omics_adata(modality)
    frac = pat.loc[list(ad.obs_names), [f"frac_{ct}" for ct in CELL_TYPES]].to_numpy(np.float64)
    sig = np.asarray(ad.var["signal"], bool)
    r2 = _cv_r2(np.log(np.maximum(frac, 1e-4)), np.asarray(ad.X, np.float64)[:, sig])
    return {"value": r2, f"r2_{modality}_from_composition": r2, f"n_{modality}_patients": float(ad.n_obs)}


def spots_oracle(cohort: SyntheticCohort, features: str | os.PathLike | None = None) -> dict[str, float]:
    """What a linear map of the true spot composition misses of the interface genes."""
    from sklearn.linear_model import LinearRegression

    from histoviz.data.synthetic.mechanisms import interface_genes

    if not cohort.spatial:
        raise DataError("the spots oracle needs a cohort with spots (spatial_fraction > 0)")
    sig = np.asarray(cohort.omics_adata("gene").var["signal"], bool)
    genes = interface_genes(sig)
    comp, expr, n = [], [], []
    for sid in cohort.spatial:
        t = cohort.truth(sid)
        keep = np.asarray(t["spot_n_cells"]) > 0
        comp.append(np.asarray(t["spot_composition"])[keep])
        expr.append(np.log1p(np.asarray(t["spot_expression"])[keep][:, genes]
                             / np.asarray(t["spot_n_cells"])[keep, None]))
        n.append(int(keep.sum()))
    c, e = np.concatenate(comp), np.concatenate(expr)
    fit = LinearRegression().fit(c, e)
    ss = ((e - e.mean(axis=0)) ** 2).sum(axis=0)
    r2 = 1.0 - ((e - fit.predict(c)) ** 2).sum(axis=0) / np.where(ss > 0, ss, np.nan)
    miss = float(1.0 - np.nanmean(r2))
    return {"value": miss, "linear_miss_interface_genes": miss, "n_spots_per_sample": float(np.mean(n))}


#: oracle name -> function(cohort, features) -> {"value": ..., ...}
ORACLES: dict[str, Callable[..., dict[str, float]]] = {
    "focal": focal_oracle,
    "hidden": hidden_oracle,
    "composition": composition_oracle,
    "modality": modality_oracle,
    "spots": spots_oracle,
}


def run_oracle(name: str, cohort: SyntheticCohort, features: str | os.PathLike | None = None) -> dict[str, float]:
    """Run the oracle ``name`` on a cohort.

    Raises
    ------
    DataError
        Unknown oracle, or a cohort without what it needs.
    """
    if name not in ORACLES:
        raise DataError(f"unknown oracle {name!r}; known: {', '.join(ORACLES)}")
    out = ORACLES[name](cohort, features)
    return {k: float(v) for k, v in out.items()}
