"""Summaries of run directories and the cross-run comparison table (``histoviz evaluate``).

Input: the long metric table of a run (``metrics.parquet``: ``model, fold, task, kind, target,
metric, value, n, axis, subset``). Output: one row per ``model, task, metric, subset, axis`` with
the mean and standard deviation **over folds** of the per-fold mean over targets.

Every number says what it is:

- ``subset`` names the targets averaged: ``all``; ``top{k}_{criterion}`` = the ``k`` targets
  with the highest training-fold variance / mean (on the unstandardised scale, selected
  without test data; ``targets.parquet``); ``best{k}_predicted`` = the ``k`` targets with the
  highest held-out Pearson (the papers' view, **optimistic**: selected on the test
  correlations; ``selection`` says so); ``<column>=<value>`` = a patient subgroup (conformal
  coverage per group);
- ``axis`` is ``per-target`` (one value per target across the held-out patients of a fold,
  then averaged over targets; for outcomes the target is a class or ``all``),
  ``per-patient`` (across targets within a patient) or ``pooled`` (held-out patients of
  **all folds pooled**, one value, no std);
- ``mean`` / ``std`` are the mean and SD (ddof 1) over folds; ``n_folds`` folds; ``n_targets``
  targets per fold. An SD over folds describes spread, not uncertainty of the mean: paired
  comparisons with an interval are :mod:`histoviz.evaluation.paired`.

Output columns: :data:`SUMMARY_COLUMNS`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.evaluation.metrics import OPTIMISTIC_LABEL
from histoviz.task_kinds import TaskKind

__all__ = [
    "MAIN_METRICS",
    "SUMMARY_COLUMNS",
    "compare_runs",
    "format_table",
    "main_rows",
    "summarise_metrics",
    "summarise_run",
]

SUMMARY_COLUMNS = (
    "model", "task", "kind", "metric", "subset", "axis", "selection", "n_targets", "n_folds",
    "mean", "std", "n_undefined",
)

#: metrics shown by default per task kind (``histoviz evaluate``, the demo, the dashboard)
MAIN_METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.REGRESSION: ("pearson", "spearman", "coverage", "interval_width"),
    TaskKind.CLASSIFICATION: ("auc_macro", "auc_micro", "balanced_accuracy", "coverage", "set_size"),
    TaskKind.SURVIVAL: ("c_index", "c_index_uno", "logrank_p", "coverage", "lower_bound", "interval_width"),
}
_KEYS = ["model", "task", "kind", "metric", "axis", "subset"]


def _fold_stats(df: pd.DataFrame, *, subset: str | None = None, selection: str = "none") -> pd.DataFrame:
    """Mean over targets per fold, then mean / std over folds."""
    if df.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    d = df.copy()
    if subset is not None:
        d["subset"] = subset
    for c in _KEYS:
        d[c] = d[c].astype(str)
    per_fold = d.groupby([*_KEYS, "fold"], sort=False)["value"].agg(
        fold_mean="mean", n_targets="size", n_defined="count").reset_index()
    per_fold["n_undefined"] = per_fold["n_targets"] - per_fold["n_defined"]
    out = per_fold.groupby(_KEYS, sort=False).agg(
        mean=("fold_mean", "mean"), std=("fold_mean", lambda s: s.std(ddof=1) if len(s) > 1 else np.nan),
        n_folds=("fold_mean", "size"), n_targets=("n_targets", "mean"), n_undefined=("n_undefined", "sum"),
    ).reset_index()
    out["selection"] = selection
    return out[list(SUMMARY_COLUMNS)]


def _select(df: pd.DataFrame, k: int, key: pd.Series) -> pd.DataFrame:
    """Rows of the ``k`` targets with the largest ``key`` within each (model, task, fold)."""
    d = df.assign(_key=key.fillna(-np.inf).to_numpy()).sort_values(["_key", "target"], ascending=[False, True],
                                                                      kind="mergesort")
    top = d.drop_duplicates(["model", "task", "fold", "target"]).groupby(["model", "task", "fold"], sort=False).head(k)
    keep = top[["model", "task", "fold", "target"]]
    return df.merge(keep, on=["model", "task", "fold", "target"], how="inner")


def summarise_metrics(
    metrics: pd.DataFrame,
    *,
    targets: pd.DataFrame | None = None,
    predictions: pd.DataFrame | None = None,
    topk: Sequence[int] = (50, 500),
    criteria: Sequence[str] = ("variance", "mean"),
    best_predicted: bool = True,
    panels: dict[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Summary table of one or more runs' long metrics (see the module docstring).

    Parameters
    ----------
    metrics
        Long metric rows (``metrics.parquet`` of one or more runs).
    targets
        Training-fold target statistics (``targets.parquet``) for the top-k subsets.
    predictions
        Regression held-out predictions (``predictions.parquet``) for the pooled rows.
    topk, criteria
        Top-k subsets (listed only when ``k`` is smaller than the task's number of targets).
    best_predicted
        Also list the optimistic ``best{k}_predicted`` rows.
    panels
        ``name -> genes``: rows ``panel:<name>`` over the panel's targets of each task that has
        any (``selection`` says how many of the panel's genes were found and which are missing).
    """
    if metrics is None or metrics.empty:
        raise DataError("no metrics to summarise")
    m = metrics.copy()
    for c in _KEYS:
        m[c] = m[c].astype(str)
    parts = [_fold_stats(m)]
    reg = m[(m["kind"] == TaskKind.REGRESSION) & (m["axis"] == "per-target") & (m["subset"] == "all")
            & m["metric"].isin(["pearson", "spearman"])]
    if not reg.empty:
        n_t = reg[reg["metric"] == "pearson"].groupby(["task", "fold"]).size().groupby("task").min()
        for k in topk:
            small = [t for t, n in n_t.items() if k < n]
            if not small:
                continue
            sub = reg[reg["task"].isin(small)]
            if targets is not None and not targets.empty:
                tt = targets.copy()
                tt["task"] = tt["task"].astype(str)
                tt["model"] = tt["model"].astype(str)
                tt["target"] = tt["target"].astype(str)
                for crit in criteria:
                    col = "train_var" if crit == "variance" else "train_mean"
                    if col not in tt.columns:
                        continue
                    merged = sub.merge(tt[["model", "task", "fold", "target", col]], on=["model", "task", "fold", "target"],
                                       how="left")
                    chosen = _select(merged, k, merged[col])
                    parts.append(_fold_stats(chosen.drop(columns=[col]), subset=f"top{k}_{crit}",
                                             selection=f"training-fold {crit} (unstandardised scale)"))
            if best_predicted:
                pe = sub[sub["metric"] == "pearson"][["model", "task", "fold", "target", "value"]].rename(
                    columns={"value": "_r"})
                merged = sub.merge(pe, on=["model", "task", "fold", "target"], how="left")
                chosen = _select(merged, k, merged["_r"])
                parts.append(_fold_stats(chosen.drop(columns=["_r"]), subset=f"best{k}_predicted",
                                         selection=OPTIMISTIC_LABEL))
    for name, genes in (panels or {}).items():
        want = [str(g) for g in genes]
        for _task, g in reg.groupby("task", sort=False):
            have = set(g["target"])
            found = [x for x in want if x in have]
            if not found:
                continue
            missing = [x for x in want if x not in have]
            sel = f"named panel: {len(found)}/{len(want)} genes found" + (
                f"; missing {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}" if missing else "")
            parts.append(_fold_stats(g[g["target"].isin(found)], subset=f"panel:{name}", selection=sel))
    if predictions is not None and not predictions.empty:
        parts.append(_pooled(predictions))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True)[list(SUMMARY_COLUMNS)]


def _pooled(predictions: pd.DataFrame) -> pd.DataFrame:
    from histoviz.evaluation.metrics import columnwise_pearson, columnwise_spearman

    col = "task" if "task" in predictions.columns else "modality"
    rows = []
    for (model, task), g in predictions.groupby(["model", col], observed=True, sort=False):
        yt = g.pivot_table(index="patient_id", columns="target", values="y_true", observed=True)
        yp = g.pivot_table(index="patient_id", columns="target", values="y_pred", observed=True)
        yp = yp.loc[yt.index, yt.columns]
        for metric, fn in (("pearson", columnwise_pearson), ("spearman", columnwise_spearman)):
            r = fn(yt.to_numpy(), yp.to_numpy())
            rows.append({
                "model": str(model), "task": str(task), "kind": TaskKind.REGRESSION.value, "metric": metric, "subset": "all",
                "axis": "pooled", "selection": "none (held-out patients of all folds pooled)",
                "n_targets": float(yt.shape[1]), "n_folds": int(g["fold"].nunique()),
                "mean": float(np.nanmean(r)) if np.isfinite(r).any() else np.nan, "std": np.nan,
                "n_undefined": int(np.isnan(r).sum()),
            })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def summarise_run(
    run_dir: str | os.PathLike,
    *,
    topk: Sequence[int] = (50, 500),
    criteria: Sequence[str] = ("variance", "mean"),
    best_predicted: bool = True,
    panels: dict[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """:func:`summarise_metrics` of one run directory (read through :class:`RunDir`)."""
    from histoviz.io.rundir import RunDir

    r = RunDir(run_dir)
    return summarise_metrics(r.metrics(), targets=r.targets(), predictions=r.predictions(), topk=topk,
                             criteria=criteria, best_predicted=best_predicted, panels=panels)


def compare_runs(
    run_dirs: Sequence[str | os.PathLike],
    *,
    topk: Sequence[int] = (50, 500),
    criteria: Sequence[str] = ("variance", "mean"),
    best_predicted: bool = True,
    panels: dict[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """One comparison table over several run directories (rows grouped by task / metric / subset).

    Raises
    ------
    DataError
        A folder that is not a finished run.
    """
    if not run_dirs:
        raise DataError("no run directories given")
    tables = [summarise_run(d, topk=topk, criteria=criteria, best_predicted=best_predicted, panels=panels)
              for d in run_dirs]
    df = pd.concat(tables, ignore_index=True)
    subset_order = {s: i for i, s in enumerate(pd.unique(df["subset"]))}
    axis_order = {"per-target": 0, "pooled": 1, "per-patient": 2}
    kind_order = {k.value: i for i, k in enumerate(TaskKind)}
    metric_order = {m: i for k in MAIN_METRICS.values() for i, m in enumerate(k)}
    df = df.assign(_k=df["kind"].map(kind_order).fillna(9), _s=df["subset"].map(subset_order),
                   _a=df["axis"].map(axis_order).fillna(9), _m=df["metric"].map(metric_order).fillna(99))
    df = df.sort_values(["_k", "task", "_a", "_s", "_m", "metric", "mean"],
                        ascending=[True, True, True, True, True, True, False], kind="mergesort")
    return df.drop(columns=["_k", "_s", "_a", "_m"]).reset_index(drop=True)


def main_rows(df: pd.DataFrame, *, topk: Sequence[int] = ()) -> pd.DataFrame:
    """The rows shown by default: each kind's main metrics on ``all`` targets (per-target axis),
    the centred per-patient correlation, and for each given ``k`` the top-k subset by training
    variance beside the (flagged, optimistic) best-k-predicted view."""
    keep = np.zeros(len(df), dtype=bool)
    for kind, mets in MAIN_METRICS.items():
        keep |= ((df["kind"] == kind) & df["metric"].isin(mets) & (df["axis"] == "per-target")
                 & (df["subset"] == "all")).to_numpy()
    keep |= ((df["metric"] == "pearson_centered") & (df["axis"] == "per-patient")).to_numpy()
    for k in topk:
        keep |= (df["subset"].isin([f"top{k}_variance", f"best{k}_predicted"]) & (df["metric"] == "pearson")).to_numpy()
    keep |= (df["subset"].astype(str).str.startswith("panel:") & (df["metric"] == "pearson")).to_numpy()
    return df[keep]


def _pm(m: float, s: float, metric: str) -> str:
    if not np.isfinite(m):
        return "n/a"
    if metric.endswith("_p"):
        txt = f"{m:.2g}"
        return txt + (f" ± {s:.2g}" if np.isfinite(s) else "")
    return f"{m:.3f}" + (f" ± {s:.3f}" if np.isfinite(s) else "")


def format_table(df: pd.DataFrame) -> str:
    """Plain-text table: one row per ``task, subset, axis, model``, metrics as ``mean ± SD``
    over folds."""
    if df.empty:
        return "(no rows)"
    d = df.copy()
    d["cell"] = [_pm(a, b, m) for a, b, m in zip(d["mean"], d["std"], d["metric"])]
    idx = ["task", "subset", "axis", "model"]
    wide = d.pivot_table(index=idx, columns="metric", values="cell", aggfunc="first", sort=False)
    order = [m for k in MAIN_METRICS.values() for m in k]
    cols = sorted(wide.columns, key=lambda c: (order.index(c) if c in order else 99, c))
    wide = wide[cols].fillna("")
    nt = d.groupby(idx, sort=False)["n_targets"].max().round(0).astype(int)
    wide.insert(0, "targets", nt.reindex(wide.index).to_numpy())
    lines = [wide.reset_index().to_string(index=False)]
    if (df["selection"] == OPTIMISTIC_LABEL).any():
        lines.append(f"best<k>_predicted rows: {OPTIMISTIC_LABEL}.")
    lines.append("mean ± SD over folds of the per-fold value (per-target: across held-out patients, averaged "
                 "over targets or classes; pooled: all folds' held-out patients together; per-patient: across "
                 "targets within a patient; coverage / set_size / interval_width: split-conformal on a "
                 "calibration split of the training patients; survival: a lower bound of survival time in the "
                 "data's unit, calibrated with censored patients too, its coverage censoring-weighted and its "
                 "width the distance from the bound to the horizon).")
    return "\n".join(lines)
