"""Calibration of outcome predictions on held-out patients.

- **Grade probabilities**: the reliability diagram (mean predicted probability vs observed
  frequency per probability bin) and the expected calibration error, top-label (confidence of
  the predicted class vs whether it was right) and per class (one-vs-rest). Bins as
  scikit-learn's ``calibration_curve`` makes them (``uniform``: equal-width, right-closed;
  ``quantile``: equal-count); ``ECE = sum_b n_b / N |observed_b - predicted_b|``.
- **Survival**: predicted survival at a horizon (each fold's discrete-time survival function
  read at the horizon with :func:`histoviz.evaluation.survival.survival_probability`) against
  the Kaplan-Meier estimate at the horizon (lifelines) in groups of predicted risk (deciles by
  default): a calibrated model's points lie on the diagonal.
- **Conformal coverage per subgroup** (true class, event status, fold) from the held-out sets
  and intervals the runner stores (``covered``, ``set_size``, ``risk_lo``, ``width``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind

__all__ = [
    "bin_ends",
    "coverage_by_group",
    "expected_calibration_error",
    "grade_calibration",
    "reliability_curve",
    "survival_at_horizon",
    "survival_calibration",
]

RELIABILITY_COLUMNS = ("view", "bin", "predicted", "observed", "count", "lower", "upper")


def _bin_ids(prob: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.percentile(prob, np.linspace(0, 100, n_bins + 1))
    else:
        raise DataError(f"calibration bins: strategy must be 'uniform' or 'quantile', got {strategy!r}")
    return np.searchsorted(edges[1:-1], prob)  # right-closed bins, as scikit-learn


def reliability_curve(y: np.ndarray, prob: np.ndarray, *, n_bins: int = 10, strategy: str = "uniform"
                      ) -> pd.DataFrame:
    """Observed frequency of ``y == 1`` against the mean predicted probability per bin.

    Parameters
    ----------
    y
        0/1 outcomes.
    prob
        Predicted probabilities of ``y == 1`` in ``[0, 1]``.
    n_bins, strategy
        As scikit-learn's ``calibration_curve`` (empty bins are left out).

    Returns
    -------
    DataFrame ``bin, predicted, observed, count, lower, upper`` (``lower``/``upper``: the
    Wilson 95% interval of the observed frequency).
    """
    y = np.asarray(y, np.float64)
    p = np.asarray(prob, np.float64)
    ok = np.isfinite(y) & np.isfinite(p)
    y, p = y[ok], p[ok]
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise DataError("reliability curve: probabilities must lie in [0, 1]")
    ids = _bin_ids(p, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins)
    pred = np.bincount(ids, weights=p, minlength=n_bins)
    obs = np.bincount(ids, weights=y, minlength=n_bins)
    keep = count > 0
    k = np.flatnonzero(keep)
    n, f = count[keep].astype(np.float64), obs[keep] / count[keep]
    z = 1.959963984540054
    centre = (f + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(f * (1 - f) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return pd.DataFrame({"bin": k, "predicted": pred[keep] / n, "observed": f, "count": count[keep],
                         "lower": centre - half, "upper": centre + half})


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, *, n_bins: int = 10, strategy: str = "uniform"
                               ) -> float:
    """``sum_b n_b / N |observed_b - predicted_b|`` over the bins of :func:`reliability_curve`
    (NaN without data)."""
    c = reliability_curve(y, prob, n_bins=n_bins, strategy=strategy)
    if c.empty:
        return float("nan")
    w = c["count"].to_numpy(np.float64)
    return float(np.sum(w * np.abs(c["observed"] - c["predicted"])) / w.sum())


def _classes(heldout: pd.DataFrame) -> list[str]:
    return [c[2:] for c in heldout.columns if c.startswith("p_")]


def grade_calibration(heldout: pd.DataFrame, *, n_bins: int = 10, strategy: str = "uniform"
                      ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Reliability curves and ECE of a classification block's held-out probabilities (all
    folds pooled: each fold's model predicts its own held-out patients).

    Parameters
    ----------
    heldout
        ``heldout/<block>.parquet`` of a classification block (``y_true``, ``p_<class>``).

    Returns
    -------
    ``(curves, summary)``: curves with :data:`RELIABILITY_COLUMNS` (``view`` is
    ``top-label`` or ``class <c>``); summary ``ece`` (top-label), ``ece_per_class``
    ``{class: ece}``, ``ece_classwise`` (their mean), ``n``, ``n_bins``, ``strategy``.
    """
    classes = _classes(heldout)
    if not classes or "y_true" not in heldout.columns:
        raise DataError("grade calibration needs held-out class probabilities (p_<class> columns) and y_true")
    h = heldout[heldout["y_true"].notna()]
    p = h[[f"p_{c}" for c in classes]].to_numpy(np.float64)
    truth = h["y_true"].astype(str).to_numpy()
    pred = np.asarray(classes, dtype=object)[np.argmax(p, axis=1)] if len(p) else np.array([], dtype=object)
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (pred == truth).astype(np.float64)
    parts = [reliability_curve(correct, conf, n_bins=n_bins, strategy=strategy).assign(view="top-label")]
    per_class = {}
    for j, c in enumerate(classes):
        yc = (truth == str(c)).astype(np.float64)
        parts.append(reliability_curve(yc, p[:, j], n_bins=n_bins, strategy=strategy).assign(view=f"class {c}"))
        per_class[str(c)] = expected_calibration_error(yc, p[:, j], n_bins=n_bins, strategy=strategy)
    curves = pd.concat(parts, ignore_index=True)[list(RELIABILITY_COLUMNS)]
    summary = {"ece": expected_calibration_error(correct, conf, n_bins=n_bins, strategy=strategy),
               "ece_per_class": per_class,
               "ece_classwise": float(np.nanmean(list(per_class.values()))) if per_class else float("nan"),
               "n": int(len(h)), "n_bins": int(n_bins), "strategy": strategy, "accuracy": float(correct.mean())
               if len(correct) else float("nan")}
    return curves, summary


def bin_ends(heldout: pd.DataFrame) -> np.ndarray:
    """``(n, B)`` ends of each patient's fold bins (the ``end_k`` columns of a survival block's
    held-out table).

    Raises
    ------
    DataError
        The table records no bin ends (a run trained before they were recorded: retrain it).
    """
    cols = sorted((c for c in heldout.columns if c.startswith("end_") and c[4:].isdigit()), key=lambda c: int(c[4:]))
    if not cols:
        raise DataError("the held-out survival table records no time-bin ends (end_0 ...); retrain the run to "
                        "calibrate its survival predictions at a horizon")
    return heldout[cols].to_numpy(np.float64)


def survival_at_horizon(heldout: pd.DataFrame, horizon: float) -> np.ndarray:
    """Each held-out patient's predicted ``P(T > horizon)`` from its fold's survival function
    (``S_k`` columns, bins ending at ``end_k``; NaN past the last finite bin end)."""
    from histoviz.evaluation.survival import survival_probability

    s_cols = sorted((c for c in heldout.columns if c.startswith("S_") and c[2:].isdigit()), key=lambda c: int(c[2:]))
    if not s_cols:
        raise DataError("the held-out survival table has no survival function (S_0 ...)")
    s = heldout[s_cols].to_numpy(np.float64)
    ends = bin_ends(heldout)
    out = np.full(len(heldout), np.nan)
    keys = [tuple(np.round(r, 12)) for r in ends]  # patients of one fold share their bins
    for key in dict.fromkeys(keys):
        rows = np.flatnonzero([k == key for k in keys])
        edges = np.concatenate([[0.0], np.asarray(key, np.float64)])
        out[rows] = survival_probability(s[rows], edges, float(horizon))
    return out


def survival_calibration(heldout: pd.DataFrame, horizon: float, *, n_groups: int = 10, alpha: float = 0.05
                         ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predicted survival at ``horizon`` vs Kaplan-Meier in groups of predicted risk.

    Patients are ranked by predicted ``P(T > horizon)`` (ties by table order) and cut into
    ``n_groups`` groups of (nearly) equal size, group 1 the highest risk; in each the mean
    prediction is set against lifelines' Kaplan-Meier estimate at ``horizon`` with its
    ``1 - alpha`` confidence interval.

    Returns
    -------
    ``(table, summary)``: table ``group, n, events, predicted, observed, lower, upper``;
    summary ``horizon, n, n_groups, mean_abs_error`` (patient-weighted mean of
    ``|predicted - observed|``), ``n_undefined`` (patients whose fold's bins end before the
    horizon, left out).
    """
    from lifelines import KaplanMeierFitter

    need = {"time", "event"}
    if not need <= set(heldout.columns):
        raise DataError("survival calibration needs time and event in the held-out table")
    pred = survival_at_horizon(heldout, horizon)
    ok = np.isfinite(pred) & heldout["time"].notna().to_numpy()
    h = heldout.loc[ok, ["time", "event"]].astype(float).reset_index(drop=True)
    p = pred[ok]
    n = len(p)
    cols = ["group", "n", "events", "predicted", "observed", "lower", "upper"]
    if n < n_groups:
        return pd.DataFrame(columns=cols), {"horizon": float(horizon), "n": n, "n_groups": 0,
                                            "mean_abs_error": float("nan"), "n_undefined": int((~ok).sum())}
    order = np.argsort(p, kind="stable")  # lowest predicted survival (highest risk) first
    group = np.empty(n, np.int64)
    group[order] = np.arange(n) * n_groups // n
    rows = []
    for g in range(n_groups):
        sel = group == g
        kmf = KaplanMeierFitter(alpha=alpha).fit(h["time"][sel], h["event"][sel])
        obs = float(kmf.survival_function_at_times(horizon).iloc[0])
        ci = kmf.confidence_interval_survival_function_
        at = ci.index.to_numpy(float) <= horizon
        lo, hi = (ci.iloc[:, 0].to_numpy(float)[at][-1], ci.iloc[:, 1].to_numpy(float)[at][-1]) if at.any() \
            else (1.0, 1.0)
        rows.append({"group": g + 1, "n": int(sel.sum()), "events": int(h["event"][sel].sum()),
                     "predicted": float(p[sel].mean()), "observed": obs, "lower": float(lo), "upper": float(hi)})
    table = pd.DataFrame(rows, columns=cols)
    err = float(np.sum(table["n"] * np.abs(table["predicted"] - table["observed"])) / table["n"].sum())
    return table, {"horizon": float(horizon), "n": n, "n_groups": n_groups, "mean_abs_error": err,
                   "n_undefined": int((~ok).sum())}


def coverage_by_group(heldout: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Conformal coverage and set size / interval width of held-out patients per subgroup.

    Classification: per true class and per fold (``covered``, ``set_size``). Survival: per
    event status (patients with an event: the interval holds their bin; censored patients:
    the interval allows surviving past their censoring bin, ``risk_lo <= -bin``) and per fold.

    Returns
    -------
    DataFrame ``by, group, n, coverage, size, size_metric`` (``by``: ``class``, ``event``,
    ``fold``); empty when the run was not calibrated.
    """
    cols = ["by", "group", "n", "coverage", "size", "size_metric"]
    if "covered" not in heldout.columns:
        return pd.DataFrame(columns=cols)
    h = heldout.copy()
    rows = []
    if kind == TaskKind.CLASSIFICATION:
        size_col, size_metric = "set_size", "set_size"
        h["_cov"] = h["covered"].astype(float)
        bys = [("class", "y_true"), ("fold", "fold")]
    else:
        size_col, size_metric = "width", "interval_width"
        ev = h["event"].astype(float)
        consistent = (h["risk_lo"] <= -h["bin"].astype(float) + 1e-9).astype(float) if {"risk_lo", "bin"} <= set(
            h.columns) else np.nan
        h["_cov"] = np.where(ev == 1, h["covered"].astype(float), consistent)
        h["_event"] = np.where(ev == 1, "event (coverage)", "censored (consistent)")
        bys = [("event", "_event"), ("fold", "fold")]
    for by, col in bys:
        if col not in h.columns:
            continue
        for g, d in h.groupby(col, sort=True):
            rows.append({"by": by, "group": str(g), "n": int(d["_cov"].notna().sum()),
                         "coverage": float(d["_cov"].mean()), "size": float(d[size_col].mean())
                         if size_col in d.columns else np.nan, "size_metric": size_metric})
    return pd.DataFrame(rows, columns=cols)
