"""The pages' per-target tables, aggregated lazily from each run's metric table.

- :func:`per_target_scores`: each regression target's metric averaged over folds, per run
  (a pyarrow group-by over the filtered, projected rows: a 2-million-row table costs its
  Arrow buffers, not Python objects);
- :func:`targets_table`: one row per target, one column per run (search, gene panels);
- :func:`pooled_by_run`: the pooled Pearson of held-out points per run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from histoviz.task_kinds import TaskKind
from histoviz.viz.results.runs import RunData

__all__ = ["per_target_scores", "pooled_by_run", "targets_table"]

SCORE_COLUMNS = ["run", "task", "target", "mean", "std", "n_folds", "n"]


def per_target_scores(runs: Sequence[RunData], metric: str = "pearson") -> pd.DataFrame:
    """Per-target ``metric`` of every regression block of every run, averaged over folds.

    Returns
    -------
    DataFrame ``run, task, target, mean, std, n_folds, n`` (``std`` over folds, ddof 1;
    ``n_folds`` folds with a defined value; ``n`` = mean held-out patients per fold).
    """
    parts = []
    for r in runs:
        reg = [b for b, k in r.blocks.items() if k == TaskKind.REGRESSION]
        if not reg:
            continue
        aggs = [("value", "mean"), ("value", "std"), ("value", "count")]
        if "n" in r.table.columns:
            aggs.append(("n", "mean"))
        d = r.table.aggregate(["task", "target"], aggs, metric=metric, axis="per-target", subset="all",
                              kind=TaskKind.REGRESSION, task=reg)
        if d.empty:
            continue
        d = d.rename(columns={"value_mean": "mean", "value_std": "std", "value_count": "n_folds", "n_mean": "n"})
        if "n" not in d.columns:
            d["n"] = np.nan
        d.insert(0, "run", r.label)
        d["task"] = d["task"].astype(str)
        d["target"] = d["target"].astype(str)
        parts.append(d[SCORE_COLUMNS])
    if not parts:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out["n_folds"] = out["n_folds"].astype(np.int64)
    return out


def targets_table(scores: pd.DataFrame, *, query: str = "", targets: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per ``(task, target)``, one column per run (its fold-averaged score).

    Parameters
    ----------
    scores
        :func:`per_target_scores`.
    query
        Case-insensitive substring(s) of the target name (commas for several).
    targets
        Keep only these targets (a gene panel), in any order.
    """
    s = scores
    if targets is not None:
        keep = {str(t).upper() for t in targets}
        s = s[s["target"].astype(str).str.upper().isin(keep)]
    terms = [t.strip().lower() for t in str(query).split(",") if t.strip()]
    if terms:
        low = s["target"].astype(str).str.lower()
        hit = np.zeros(len(s), bool)
        for t in terms:
            hit |= low.str.contains(t, regex=False).to_numpy()
        s = s[hit]
    if s.empty:
        return pd.DataFrame(columns=["task", "target"])
    runs = list(dict.fromkeys(s["run"]))
    w = s.set_index(["task", "target", "run"])["mean"].unstack("run")
    w = w.reindex(columns=runs).reset_index()
    w.columns.name = None
    vals = w[runs].to_numpy(np.float64)
    if len(runs) > 1:
        with np.errstate(invalid="ignore"):
            best = np.where(np.isfinite(vals).any(axis=1), np.nanargmax(np.where(np.isfinite(vals), vals, -np.inf),
                                                                        axis=1), -1)
        w["best"] = [runs[i] if i >= 0 else "" for i in best]
    order = np.argsort(-np.nan_to_num(np.nanmax(np.where(np.isfinite(vals), vals, -np.inf), axis=1), neginf=-9),
                       kind="stable")
    return w.iloc[order].reset_index(drop=True)


def pooled_by_run(points: pd.DataFrame) -> pd.DataFrame:
    """Pooled Pearson of held-out ``y_true`` vs ``y_pred`` per run (all folds together).

    Returns
    -------
    DataFrame ``run, pooled_pearson, n, folds, per_fold`` (``n`` finite pairs; ``per_fold``
    held-out patients per fold; ``pooled_pearson`` NaN below 3 pairs).
    """
    rows = []
    for run, g in points.groupby("run", sort=False):
        ok = np.isfinite(g["y_true"].to_numpy(float)) & np.isfinite(g["y_pred"].to_numpy(float))
        yt, yp = g["y_true"].to_numpy(float)[ok], g["y_pred"].to_numpy(float)[ok]
        r = float(np.corrcoef(yt, yp)[0, 1]) if ok.sum() > 2 and yt.std() > 0 and yp.std() > 0 else np.nan
        folds = int(g["fold"].nunique())
        rows.append({"run": run, "pooled_pearson": r, "n": int(ok.sum()), "folds": folds,
                     "per_fold": len(g) / max(folds, 1)})
    return pd.DataFrame(rows, columns=["run", "pooled_pearson", "n", "folds", "per_fold"])
