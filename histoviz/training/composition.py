"""Composition recovery of a cell-type model against ground truth (synthetic cohorts).

CPNN learns per-patch composition weights without ever seeing a composition label; on the
synthetic cohort the true per-tile composition is known (:func:`histoviz.data.synthetic.tile_composition`),
so ``histoviz evaluate`` can say how well the weights recover it, against the supervised
ceiling: a ridge regression from the same patch features to the true composition, trained on the
fold's training patients (the best a linear read-out of these features can do with labels).

For each fold's checkpoint, on that fold's held-out slides: per cell type, the Pearson
correlation across patches of the predicted and true weight, and the mean total-variation
distance ``0.5 * sum_k |w_k - t_k|`` per patch (0: identical mixtures, 1: disjoint); the
weights' mean per cell type beside the true mean shows a pull toward uniform.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

__all__ = ["composition_recovery", "format_composition", "has_composition_truth"]


def _cohort_root(run: Any) -> Path | None:
    cohort = (run.config.get("data") or {}).get("cohort")
    if not cohort:
        return None
    root = Path(cohort).parent
    return root if (root / "manifest.json").exists() and (root / "truth").is_dir() else None


def has_composition_truth(run_dir: str | os.PathLike) -> bool:
    """Whether a run was trained on a synthetic cohort with composition truth and writes
    cell-type weights."""
    from histoviz.io.rundir import RunDir

    run = RunDir(run_dir)
    return _cohort_root(run) is not None and "cell_type" in run.capabilities.get("outputs", ())


def composition_recovery(run_dir: str | os.PathLike, *, max_patches: int = 20000, seed: int = 0) -> pd.DataFrame:
    """Per fold and cell type: Pearson r and mean / true-mean weight of the model and of the
    supervised ridge ceiling, plus the mean total-variation distance of each.

    Returns
    -------
    Long table ``fold, estimator (model name | "supervised ridge"), cell_type, metric
    (pearson | mean_weight | true_mean | tv_distance), value, n_patches``; ``cell_type`` is
    ``"all"`` for the TV distance.

    Raises
    ------
    DataError
        The run was not trained on a synthetic cohort with truth, or its model has no weights.
    """
    from sklearn.linear_model import Ridge

    from histoviz.data.cohort import read_cohort
    from histoviz.data.synthetic import CELL_TYPES, tile_composition
    from histoviz.io.featurebag import FeatureBag
    from histoviz.io.rundir import RunDir
    from histoviz.models.checkpoint import load_checkpoint

    run = RunDir(run_dir)
    root = _cohort_root(run)
    if root is None:
        raise DataError(f"{run.path}: composition truth exists only for synthetic cohorts (truth/ beside cohort.csv)")
    feats = Path(run.config["data"]["features"])
    cohort = read_cohort(root / "cohort.csv")
    by_patient = cohort.groupby("patient_id")["slide_id"].apply(list).to_dict()
    splits = run.splits()
    if splits is None:
        raise DataError(f"{run.path}: no splits.parquet; retrain the run")
    rng = np.random.default_rng(seed)
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def patches(pids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ts = [], []
        for p in pids:
            for sid in by_patient.get(str(p), []):
                if sid not in cache:
                    bag = FeatureBag.from_h5(feats / f"{sid}.h5")
                    cache[sid] = (bag.features, tile_composition(root, sid, bag.coords, bag.tile_size_level0))
                xs.append(cache[sid][0])
                ts.append(cache[sid][1])
        return np.concatenate(xs), np.concatenate(ts)

    rows = []
    for name in run.checkpoint_names():
        if name == "final":
            continue
        fold = int(name[4:])
        model = load_checkpoint(run.checkpoint(name)).model
        sp = splits[splits["fold"] == fold]
        test = sp[sp["split"] == "test"]["patient_id"].astype(str).tolist()
        train = sp[sp["split"] != "test"]["patient_id"].astype(str).tolist()
        w_all, t_all = [], []
        for p in test:
            for sid in by_patient.get(p, []):
                bag = FeatureBag.from_h5(feats / f"{sid}.h5")
                w = model.predict_patches(bag.features).cell_type_weights
                if w is None:
                    raise DataError(f"{run.path}: model {model.name!r} writes no cell-type weights")
                w_all.append(w.reindex(columns=list(CELL_TYPES)).fillna(0.0).to_numpy())
                t_all.append(tile_composition(root, sid, bag.coords, bag.tile_size_level0))
        w, t = np.concatenate(w_all), np.concatenate(t_all)
        ok = t.sum(1) > 0  # tiles with tissue
        w, t = w[ok], t[ok]
        x_tr, t_tr = patches(train)
        keep = t_tr.sum(1) > 0
        x_tr, t_tr = x_tr[keep], t_tr[keep]
        if len(x_tr) > max_patches:
            sel = rng.choice(len(x_tr), max_patches, replace=False)
            x_tr, t_tr = x_tr[sel], t_tr[sel]
        x_te = np.concatenate([FeatureBag.from_h5(feats / f"{sid}.h5").features
                               for p in test for sid in by_patient.get(p, [])])[ok]
        mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
        ridge = Ridge(alpha=1.0).fit((x_tr - mu) / sd, t_tr)
        s = np.clip(ridge.predict((x_te - mu) / sd), 0, None)
        s = s / np.maximum(s.sum(1, keepdims=True), 1e-12)
        for est, pred in ((str(model.name), w), ("supervised ridge", s)):
            for k, ct in enumerate(CELL_TYPES):
                r = np.corrcoef(pred[:, k], t[:, k])[0, 1] if pred[:, k].std() > 0 and t[:, k].std() > 0 else np.nan
                rows += [{"fold": fold, "estimator": est, "cell_type": ct, "metric": "pearson", "value": float(r)},
                         {"fold": fold, "estimator": est, "cell_type": ct, "metric": "mean_weight",
                          "value": float(pred[:, k].mean())},
                         {"fold": fold, "estimator": est, "cell_type": ct, "metric": "true_mean",
                          "value": float(t[:, k].mean())}]
            rows.append({"fold": fold, "estimator": est, "cell_type": "all", "metric": "tv_distance",
                         "value": float(0.5 * np.abs(pred - t).sum(1).mean())})
        for r_ in rows:
            r_.setdefault("n_patches", int(len(t)))
    return pd.DataFrame(rows)


def format_composition(df: pd.DataFrame) -> str:
    """Mean over folds: per cell type r (model vs ridge ceiling), mean weight vs truth, TV distance."""
    g = df.groupby(["estimator", "cell_type", "metric"], sort=False)["value"].mean().unstack("metric")
    return g.round(3).to_string()
