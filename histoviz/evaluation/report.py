"""Outcome views of run directories: confusion matrices, Kaplan-Meier of predicted risk groups,
pooled c-index and conformal coverage (``histoviz evaluate``, the dashboard's outcome page);
for PathGen runs also the settings side by side and the synthesis quality
(:mod:`histoviz.evaluation.pathgen`).

Held-out patients of all folds are pooled here, and every function says so in what it returns:
risk groups are assigned **within each fold** (by that fold's median or tertiles of predicted
risk, so no fold's scale leaks into another's), then pooled for one Kaplan-Meier plot and one
log-rank test; the confusion matrix adds the folds' held-out patients.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from histoviz.task_kinds import OUTCOME_KINDS, TaskKind

__all__ = ["confusion_pooled", "km_by_risk", "outcome_blocks", "outcome_report", "survival_bound_summary"]


def outcome_blocks(run: Any) -> dict[str, str]:
    """``block -> kind`` of a run's classification and survival blocks."""
    return {b: k for b, k in run.blocks.items() if k in OUTCOME_KINDS}


def confusion_pooled(heldout: pd.DataFrame) -> pd.DataFrame:
    """Confusion matrix (rows true, columns predicted) of a classification block's held-out
    table, all folds pooled."""
    from histoviz.evaluation.classification import confusion_table

    classes = [c[2:] for c in heldout.columns if c.startswith("p_")]
    return confusion_table(heldout["y_true"].astype(str), heldout["y_pred"].astype(str), classes)


def km_by_risk(heldout: pd.DataFrame, *, n_groups: int = 2, alpha: float = 0.05) -> tuple[pd.DataFrame, dict[str, float]]:
    """Kaplan-Meier curves and log-rank test of predicted-risk groups (assigned within each fold).

    Parameters
    ----------
    heldout
        A survival block's held-out table (``fold, time, event, risk``).
    n_groups
        2 (median) or 3 (tertiles).
    alpha
        Confidence level of the bands.
    """
    from histoviz.evaluation.survival import km_curves, logrank, risk_groups

    parts = []
    for _, g in heldout.groupby("fold", sort=True):
        parts.append(pd.DataFrame({"time": g["time"].to_numpy(float), "event": g["event"].to_numpy(int),
                                   "risk_group": risk_groups(g["risk"].to_numpy(float), n_groups=n_groups)}))
    df = pd.concat(parts, ignore_index=True)
    order = {"low": 0, "mid": 1, "high": 2}
    curves = km_curves(df, "risk_group", unit=None, alpha=alpha)
    curves = curves.assign(_o=curves["group"].map(order)).sort_values(["_o", "time"], kind="mergesort")
    return curves.drop(columns="_o").reset_index(drop=True), logrank(df, "risk_group", unit=None)


def outcome_report(run_dirs: Sequence[str | os.PathLike], *, n_groups: int = 2) -> list[str]:
    """Plain-text lines: per run and outcome block, the pooled confusion matrix or the log-rank
    test of risk groups with their sizes and event counts."""
    from histoviz.evaluation.survival import concordance_index
    from histoviz.io.rundir import RunDir

    lines: list[str] = []
    for d in run_dirs:
        run = RunDir(d)
        for b, kind in outcome_blocks(run).items():
            h = run.heldout(b)
            if h is None or h.empty:
                continue
            if kind == TaskKind.CLASSIFICATION:
                cm = confusion_pooled(h)
                lines.append(f"{run.name} / {b}: confusion matrix, held-out patients of {h['fold'].nunique()} folds "
                             f"pooled (rows true, columns predicted)")
                lines += ["  " + ln for ln in cm.to_string().splitlines()]
            else:
                curves, test = km_by_risk(h, n_groups=n_groups)
                sizes = curves.groupby("group", sort=False)["n"].first().to_dict()
                c = concordance_index(h["time"], h["risk"], h["event"])
                lines.append(f"{run.name} / {b}: risk groups by within-fold {'median' if n_groups == 2 else 'tertiles'} "
                             f"({', '.join(f'{k} n={v}' for k, v in sizes.items())}), pooled log-rank "
                             f"p = {test['p_value']:.3g}; pooled c-index {c:.3f} (risks of different folds' models)")
                lines += _survival_bound_lines(run, b)
    from histoviz.evaluation.pathgen import pathgen_report

    lines += pathgen_report(run_dirs)
    return lines


def survival_bound_summary(run: Any, block: str) -> dict[str, float] | None:
    """Calibration sizes of a run's conformal survival bounds (``conformal.json``), per fold
    averaged: ``n_cal``, ``n_events``, ``n_eff`` (effective size after the censoring weights),
    ``coverage_sd`` (the spread of the attained coverage over calibration draws that size gives),
    ``alpha``, ``tau`` and ``needed`` (effective calibration patients for a coverage SD of 0.03).
    ``None`` for runs without time-unit survival bounds."""
    import numpy as np

    from histoviz.evaluation.survival_conformal import calibration_size_for

    conf = run.json("conformal.json") if (run.path / "conformal.json").exists() else {}
    entries = [f[block] for f in conf.values() if isinstance(f, dict) and isinstance(f.get(block), dict)
               and "n_eff" in f[block]]
    if not entries:
        return None
    alpha = float(entries[0].get("alpha", 0.1))
    out = {k: float(np.mean([e[k] for e in entries])) for k in ("n_cal", "n_events", "n_eff", "coverage_sd", "tau")}
    return {**out, "alpha": alpha, "needed": float(calibration_size_for(alpha, 0.03)), "n_folds": float(len(entries))}


def _survival_bound_lines(run: Any, block: str) -> list[str]:
    s = survival_bound_summary(run, block)
    if s is None:
        return []
    return [f"  survival lower bound (alpha {s['alpha']:g}, horizon tau {s['tau']:.3g}): calibrated per fold on "
            f"{s['n_cal']:.0f} patients ({s['n_events']:.0f} events; effective {s['n_eff']:.0f} after censoring "
            f"weights); attained coverage varies by SD ~{s['coverage_sd']:.3f} between calibration draws; an SD of "
            f"0.03 needs ~{s['needed']:.0f} effective calibration patients"]
