"""Outcome tables of the Outcomes page, from each run's (small) outcome metric rows.

:func:`fold_values` / :func:`fold_summary` (c-index, AUC per fold and over folds),
:func:`auc_per_class`, :func:`coverage_table` (conformal coverage and set size / interval width
overall and per recorded subgroup), :func:`risk_group_sizes` (patients, events, censored per
Kaplan-Meier risk group).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from histoviz.viz.results.runs import RunData

__all__ = ["auc_per_class", "coverage_table", "fold_summary", "fold_values", "risk_group_sizes"]


def fold_values(runs: Sequence[RunData], metric: str, *, kind: str | None = None) -> pd.DataFrame:
    """Per-fold value of a single-valued outcome metric (``c_index``, ``auc_macro``, ...).

    Returns
    -------
    DataFrame ``run, task, fold, value, n``.
    """
    parts = []
    for r in runs:
        m = r.metrics
        sel = m[(m["metric"] == metric) & (m["axis"] == "per-target") & (m["subset"] == "all")
                & m["target"].isin(["all", "risk"])]
        if kind is not None and "kind" in sel.columns:
            sel = sel[sel["kind"] == kind]
        if not sel.empty:
            parts.append(sel.assign(run=r.label)[["run", "task", "fold", "value", "n"]])
    if not parts:
        return pd.DataFrame(columns=["run", "task", "fold", "value", "n"])
    return pd.concat(parts, ignore_index=True)


def fold_summary(values: pd.DataFrame, name: str) -> pd.DataFrame:
    """Mean and std over folds of :func:`fold_values` per run and task.

    Returns
    -------
    DataFrame ``run, task, <name>_mean, <name>_std, folds`` (std ddof=1; NaN with one fold).
    """
    out = values.groupby(["run", "task"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"mean": f"{name}_mean", "std": f"{name}_std", "count": "folds"})


def risk_group_sizes(curves: pd.DataFrame) -> pd.DataFrame:
    """Patients, censored and events per predicted-risk group of a Kaplan-Meier table
    (:func:`histoviz.evaluation.report.km_by_risk`)."""
    sizes = curves.groupby("group", sort=False).agg(patients=("n", "first"), censored=("censored", "sum")).reset_index()
    sizes["events"] = sizes["patients"] - sizes["censored"]
    return sizes.astype({"censored": int, "events": int})


def auc_per_class(run: RunData, block: str) -> pd.DataFrame:
    """One-vs-rest AUC per class of a classification block: mean and std over folds, held-out
    patients of the class per fold. Columns ``class, auc_mean, auc_std, n_folds, n_per_fold``."""
    m = run.metrics
    sel = m[(m["task"] == block) & (m["metric"] == "auc") & (m["axis"] == "per-target") & (m["subset"] == "all")]
    if sel.empty:
        return pd.DataFrame(columns=["class", "auc_mean", "auc_std", "n_folds", "n_per_fold"])
    g = sel.groupby("target", sort=False)
    out = pd.DataFrame({"class": list(g.groups), "auc_mean": g["value"].mean().to_numpy(),
                        "auc_std": g["value"].std().to_numpy(), "n_folds": g["value"].count().to_numpy(),
                        "n_per_fold": g["n"].mean().to_numpy()})
    return out


def coverage_table(run: RunData, block: str) -> pd.DataFrame:
    """Conformal coverage and set size / interval width, overall and per subgroup.

    Returns
    -------
    DataFrame ``subset, coverage, coverage_std, size, size_metric, target_coverage, n_folds,
    n_patients`` (``subset`` is ``all`` or ``<column>=<value>``; means and std over folds;
    ``n_patients`` summed over folds; ``target_coverage`` = 1 - alpha).
    """
    m = run.metrics
    sel = m[(m["task"] == block) & (m["axis"] == "per-target")
            & m["metric"].isin(["coverage", "set_size", "interval_width"])]
    cols = ["subset", "coverage", "coverage_std", "size", "size_metric", "target_coverage", "n_folds", "n_patients"]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for subset, g in sel.groupby("subset", sort=False):
        cov = g[g["metric"] == "coverage"].groupby("fold")
        size_metric = "set_size" if (g["metric"] == "set_size").any() else "interval_width"
        size = g[g["metric"] == size_metric].groupby("fold")["value"].mean()
        per_fold = cov["value"].mean()
        rows.append({"subset": str(subset), "coverage": float(per_fold.mean()) if len(per_fold) else np.nan,
                     "coverage_std": float(per_fold.std()) if len(per_fold) > 1 else np.nan,
                     "size": float(size.mean()) if len(size) else np.nan, "size_metric": size_metric,
                     "target_coverage": 1.0 - run.alpha, "n_folds": int(len(per_fold)),
                     "n_patients": int(cov["n"].max().sum()) if len(per_fold) else 0})
    out = pd.DataFrame(rows, columns=cols)
    out["_o"] = (out["subset"] != "all").astype(int)
    return out.sort_values(["_o", "subset"], kind="mergesort").drop(columns="_o").reset_index(drop=True)
