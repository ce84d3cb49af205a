"""Summaries of run directories and the cross-run comparison table (``histoviz evaluate``).

Every number in these tables says what it is:

- ``subset`` names the targets averaged: ``all``; ``top{k}_{criterion}`` = the ``k`` targets
  with the highest training-fold variance / mean (selected without test data);
  ``best{k}_predicted`` = the ``k`` targets with the highest held-out Pearson (the papers'
  view, **optimistic**: selected on the test correlations; ``selection`` says so);
  ``per_patient`` / ``per_patient_centered`` = correlation across targets within a patient
  (centred: training means subtracted first);
- ``axis`` is ``per-target`` (correlation across held-out patients, one per target, then
  averaged over targets), ``per-patient`` (across targets) or ``pooled`` (per target across
  the held-out patients of **all folds pooled**, then averaged over targets);
- ``pearson_mean`` / ``pearson_std`` are the mean and standard deviation **over folds** of the
  per-fold mean (pooled rows have one value and no std).

Output columns: ``model, modality, subset, axis, selection, n_targets, n_folds,
pearson_mean, pearson_std, spearman_mean, spearman_std, n_undefined``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.evaluation.metrics import OPTIMISTIC_LABEL

__all__ = ["SUMMARY_COLUMNS", "compare_runs", "format_table", "summarise_metrics", "summarise_run"]

SUMMARY_COLUMNS = (
    "model", "modality", "subset", "axis", "selection", "n_targets", "n_folds",
    "pearson_mean", "pearson_std", "spearman_mean", "spearman_std", "n_undefined",
)


def _fold_stats(df: pd.DataFrame, subset: str, axis: str, selection: str) -> list[dict]:
    rows = []
    for (model, mod), g in df.groupby(["model", "modality"], observed=True, sort=False):
        per_fold = g.groupby("fold", observed=True).agg(
            p=("pearson", "mean"), s=("spearman", "mean"), n=("pearson", "size"), nd=("pearson", "count")
        )
        if per_fold.empty:
            continue
        rows.append({
            "model": str(model), "modality": str(mod), "subset": subset, "axis": axis, "selection": selection,
            "n_targets": float(per_fold["n"].mean()), "n_folds": int(len(per_fold)),
            "pearson_mean": float(per_fold["p"].mean()),
            "pearson_std": float(per_fold["p"].std(ddof=1)) if len(per_fold) > 1 else np.nan,
            "spearman_mean": float(per_fold["s"].mean()),
            "spearman_std": float(per_fold["s"].std(ddof=1)) if len(per_fold) > 1 else np.nan,
            "n_undefined": int((per_fold["n"] - per_fold["nd"]).sum()),
        })
    return rows


def _select(df: pd.DataFrame, k: int, column: str, *, ascending: bool = False) -> pd.DataFrame:
    """Rows of the ``k`` best ``column`` values within each (model, modality, fold)."""
    key = df[column].fillna(-np.inf) if not ascending else df[column].fillna(np.inf)
    d = df.assign(_key=key).sort_values(["_key", "target"], ascending=[ascending, True], kind="mergesort")
    return d.groupby(["model", "modality", "fold"], observed=True, sort=False).head(k).drop(columns="_key")


def summarise_metrics(
    metrics: pd.DataFrame,
    *,
    patient_metrics: pd.DataFrame | None = None,
    predictions: pd.DataFrame | None = None,
    topk: Sequence[int] = (50, 500),
    criteria: Sequence[str] = ("variance", "mean"),
    best_predicted: bool = True,
) -> pd.DataFrame:
    """Summary table of one or more runs' ``metrics.parquet`` (see the module docstring).

    Top-k subsets are listed only when ``k`` is smaller than the modality's number of
    targets (otherwise they equal ``all``).
    """
    if metrics.empty:
        raise DataError("no metrics to summarise")
    rows = _fold_stats(metrics, "all", "per-target", "none")
    n_t = metrics.groupby(["modality", "fold"], observed=True).size().groupby("modality", observed=True).min()
    for k in topk:
        small = [m for m, n in n_t.items() if k < n]
        if not small:
            continue
        sub = metrics[metrics["modality"].isin(small)]
        for crit in criteria:
            col = "train_var" if crit == "variance" else "train_mean"
            if col not in sub.columns:
                continue
            rows += _fold_stats(_select(sub, k, col), f"top{k}_{crit}", "per-target", f"training-fold {crit}")
        if best_predicted:
            rows += _fold_stats(_select(sub, k, "pearson"), f"best{k}_predicted", "per-target", OPTIMISTIC_LABEL)
    if patient_metrics is not None and not patient_metrics.empty:
        pm = patient_metrics.assign(target=patient_metrics["patient_id"])
        rows += _fold_stats(pm, "per_patient", "per-patient", "none")
        if "pearson_centered" in pm.columns:
            pc = pm.assign(pearson=pm["pearson_centered"], spearman=np.nan)
            rows += _fold_stats(pc, "per_patient_centered", "per-patient", "training means subtracted")
    if predictions is not None and not predictions.empty:
        rows += _pooled(predictions)
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return out


def _pooled(predictions: pd.DataFrame) -> list[dict]:
    from histoviz.evaluation.metrics import columnwise_pearson, columnwise_spearman

    rows = []
    for (model, mod), g in predictions.groupby(["model", "modality"], observed=True, sort=False):
        yt = g.pivot_table(index="patient_id", columns="target", values="y_true", observed=True)
        yp = g.pivot_table(index="patient_id", columns="target", values="y_pred", observed=True)
        yp = yp.loc[yt.index, yt.columns]
        p = columnwise_pearson(yt.to_numpy(), yp.to_numpy())
        s = columnwise_spearman(yt.to_numpy(), yp.to_numpy())
        rows.append({
            "model": str(model), "modality": str(mod), "subset": "all", "axis": "pooled",
            "selection": "none (held-out patients of all folds pooled)", "n_targets": float(yt.shape[1]),
            "n_folds": int(g["fold"].nunique()), "pearson_mean": float(np.nanmean(p)) if np.isfinite(p).any() else np.nan,
            "pearson_std": np.nan, "spearman_mean": float(np.nanmean(s)) if np.isfinite(s).any() else np.nan,
            "spearman_std": np.nan, "n_undefined": int(np.isnan(p).sum()),
        })
    return rows


def _read_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    mp = run_dir / "metrics.parquet"
    if not mp.exists():
        raise DataError(f"{run_dir}: no metrics.parquet (not a finished histoviz run directory)")
    metrics = pd.read_parquet(mp)
    pm = run_dir / "patient_metrics.parquet"
    pr = run_dir / "predictions.parquet"
    return (metrics, pd.read_parquet(pm) if pm.exists() else None, pd.read_parquet(pr) if pr.exists() else None)


def summarise_run(
    run_dir: str | os.PathLike,
    *,
    topk: Sequence[int] = (50, 500),
    criteria: Sequence[str] = ("variance", "mean"),
    best_predicted: bool = True,
) -> pd.DataFrame:
    """:func:`summarise_metrics` of one run directory."""
    m, pm, pr = _read_run(Path(run_dir))
    return summarise_metrics(m, patient_metrics=pm, predictions=pr, topk=topk, criteria=criteria,
                             best_predicted=best_predicted)


def compare_runs(
    run_dirs: Sequence[str | os.PathLike],
    *,
    topk: Sequence[int] = (50, 500),
    criteria: Sequence[str] = ("variance", "mean"),
    best_predicted: bool = True,
) -> pd.DataFrame:
    """One comparison table over several run directories (rows grouped by modality/subset).

    Raises
    ------
    DataError
        A folder that is not a finished run.
    """
    if not run_dirs:
        raise DataError("no run directories given")
    tables = [summarise_run(d, topk=topk, criteria=criteria, best_predicted=best_predicted) for d in run_dirs]
    df = pd.concat(tables, ignore_index=True)
    order = {s: i for i, s in enumerate(pd.unique(df["subset"]))}
    axis_order = {"per-target": 0, "pooled": 1, "per-patient": 2}
    df = df.assign(_s=df["subset"].map(order), _a=df["axis"].map(axis_order))
    df = df.sort_values(["modality", "_a", "_s", "pearson_mean"], ascending=[True, True, True, False], kind="mergesort")
    return df.drop(columns=["_s", "_a"]).reset_index(drop=True)


def format_table(df: pd.DataFrame) -> str:
    """Plain-text table: Pearson / Spearman as ``mean +- std`` over folds."""
    def pm(m: float, s: float) -> str:
        if not np.isfinite(m):
            return "n/a"
        return f"{m:.3f}" + (f" ± {s:.3f}" if np.isfinite(s) else "")

    t = pd.DataFrame({
        "modality": df["modality"],
        "subset": df["subset"],
        "axis": df["axis"],
        "model": df["model"],
        "targets": df["n_targets"].round(0).astype(int),
        "pearson": [pm(a, b) for a, b in zip(df["pearson_mean"], df["pearson_std"])],
        "spearman": [pm(a, b) for a, b in zip(df["spearman_mean"], df["spearman_std"])],
    })
    lines = [t.to_string(index=False)]
    if (df["selection"] == OPTIMISTIC_LABEL).any():
        lines.append(f"best<k>_predicted rows: {OPTIMISTIC_LABEL}.")
    lines.append("per-target: correlation across held-out patients within a fold, mean over targets, "
                 "then mean ± std over folds; pooled: all folds' held-out patients together; "
                 "per-patient: across targets within a patient.")
    return "\n".join(lines)
