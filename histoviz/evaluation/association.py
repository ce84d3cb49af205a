"""Survival association of predicted targets (the multi-omics paper's AGR3 / FOXM1 / miR-190b view).

For every predicted target of a run, held-out patients are split into high and low by the
median of the predicted value **within each fold** (each patient's prediction comes from the
model that did not see it; medians of different folds' models are not mixed), the groups are
pooled, and a log-rank test compares their survival. p-values are adjusted for the number of
targets tested with Benjamini-Hochberg (scipy's ``false_discovery_control``). The same test on
the *measured* values of the held-out patients is reported beside it, so a predicted target's
association can be read against the association the measurement itself has.

Gene panels: :func:`read_panel` reads a named panel shipped with histoviz (``pam50``) or a
user's file (one symbol per line, or comma-separated) and says which genes are unknown.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from histoviz.errors import DataError

__all__ = ["read_panel", "survival_association"]


def read_panel(name_or_path: str | os.PathLike) -> tuple[str, list[str]]:
    """A gene panel: ``"pam50"`` (shipped in ``sample_data/gene_panels``) or a text / CSV file.

    Returns
    -------
    ``(name, genes)`` in file order, duplicates removed.

    Raises
    ------
    DataError
        Unknown panel name or unreadable / empty file.
    """
    from histoviz.datasets import resource_dir

    s = str(name_or_path)
    p = Path(s)
    if not p.exists():
        res = resource_dir()
        cand = res / "gene_panels" / f"{s.lower()}.txt" if res is not None else None
        if cand is None or not cand.exists():
            have = sorted(q.stem for q in (res / "gene_panels").glob("*.txt")) if res is not None else []
            raise DataError(f"gene panel {s!r}: no such file or shipped panel (shipped: {have})")
        p, s = cand, s.lower()
    lines = [ln.split("#", 1)[0] for ln in p.read_text().splitlines()]
    text = "\n".join(lines).replace(",", "\n").replace("\t", "\n")
    genes = list(dict.fromkeys(g.strip() for g in text.splitlines() if g.strip()))
    if not genes:
        raise DataError(f"{p}: the gene panel is empty")
    return (p.stem if s == str(p) else s), genes


def _groups(heldout: pd.DataFrame, value: str) -> pd.Series:
    """High / low by the within-fold median of ``value`` (ties at the median go low)."""
    med = heldout.groupby("fold")[value].transform("median")
    return pd.Series(np.where(heldout[value] > med, "high", "low"), index=heldout.index)


def survival_association(
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    targets: Sequence[str] | None = None,
    min_per_group: int = 5,
) -> pd.DataFrame:
    """Log-rank tests of median splits of each predicted (and measured) target.

    Parameters
    ----------
    predictions
        Held-out regression predictions (``fold, patient_id, task, target, y_true, y_pred``:
        :meth:`histoviz.io.rundir.RunDir.predictions`).
    outcomes
        One row per patient: ``patient_id, time, event``.
    targets
        Only these targets (default: all).
    min_per_group
        Smallest group size for a test (else the target is skipped).

    Returns
    -------
    One row per (task, target): ``n, events, p_predicted, q_predicted (BH), hr_direction
    (high-risk group: "high" or "low" predicted value), p_measured, q_measured``, sorted by
    ``q_predicted``.
    """
    from lifelines.statistics import logrank_test
    from scipy.stats import false_discovery_control

    o = outcomes[["patient_id", "time", "event"]].drop_duplicates("patient_id").copy()
    o["patient_id"] = o["patient_id"].astype(str)
    pr = predictions.copy()
    pr["patient_id"] = pr["patient_id"].astype(str)
    col = "task" if "task" in pr.columns else "modality"
    if targets is not None:
        pr = pr[pr["target"].astype(str).isin([str(t) for t in targets])]
    pr = pr.merge(o, on="patient_id", how="inner")
    pr = pr[np.isfinite(pr["time"].astype(float)) & pr["event"].notna()]
    if pr.empty:
        raise DataError("no held-out patient has both a prediction and a survival time")
    rows = []
    for (task, target), g in pr.groupby([col, "target"], observed=True, sort=False):
        row: dict[str, object] = {"task": str(task), "target": str(target), "n": len(g), "events": int(g["event"].sum())}
        for what, v in (("predicted", "y_pred"), ("measured", "y_true")):
            gg = g[np.isfinite(g[v].astype(float))]
            grp = _groups(gg, v)
            hi, lo = gg[grp == "high"], gg[grp == "low"]
            if min(len(hi), len(lo)) < min_per_group:
                row[f"p_{what}"] = np.nan
                continue
            t = logrank_test(hi["time"], lo["time"], hi["event"], lo["event"])
            row[f"p_{what}"] = float(t.p_value)
            if what == "predicted":
                # which group does worse: compare observed / expected events via the event rate
                rate_hi = hi["event"].sum() / hi["time"].sum()
                rate_lo = lo["event"].sum() / lo["time"].sum()
                row["worse_group"] = "high" if rate_hi > rate_lo else "low"
        rows.append(row)
    df = pd.DataFrame(rows)
    for what in ("predicted", "measured"):
        p = df[f"p_{what}"].to_numpy(float)
        q = np.full(len(p), np.nan)
        ok = np.isfinite(p)
        if ok.any():
            q[ok] = false_discovery_control(p[ok], method="bh")
        df[f"q_{what}"] = q
    cols = ["task", "target", "n", "events", "p_predicted", "q_predicted", "worse_group", "p_measured", "q_measured"]
    return df.reindex(columns=cols).sort_values(["q_predicted", "p_predicted"], na_position="last").reset_index(drop=True)
