"""Survival statistics: c-index (Harrell, Uno), Kaplan-Meier curves, log-rank, risk groups.

Every function follows one sign convention: a **higher risk means an earlier event**.
Kaplan-Meier and log-rank are lifelines' (``KaplanMeierFitter``, ``multivariate_logrank_test``);
Harrell's c-index is lifelines' ``concordance_index``; Uno's c-index (inverse probability of
censoring weights, for heavy censoring) is computed here and checked against scikit-survival's
``concordance_index_ipcw`` in the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

__all__ = [
    "KM_COLUMNS",
    "concordance_index",
    "km_curves",
    "km_risk_groups",
    "logrank",
    "risk_groups",
    "survival_probability",
    "uno_concordance_index",
]

KM_COLUMNS = ("group", "time", "survival", "ci_lower", "ci_upper", "at_risk", "n", "censored")


def concordance_index(time: np.ndarray, risk: np.ndarray, event: np.ndarray | None = None) -> float:
    """Harrell's C-index where a **higher risk means a shorter survival time**.

    A thin wrapper around ``lifelines.utils.concordance_index`` (which expects scores that
    grow with survival time) so every histoviz model reports risks with one sign.

    Parameters
    ----------
    time
        Observed times.
    risk
        Predicted risk scores (higher = earlier event).
    event
        1 if the event was observed, 0 if censored (default: all observed).

    Returns
    -------
    C-index in ``[0, 1]``; 0.5 is random ordering.
    """
    from lifelines.utils import concordance_index as _ci

    time = np.asarray(time, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    ev = np.ones_like(time) if event is None else np.asarray(event, dtype=np.float64)
    return float(_ci(time, -risk, ev))


def _km_censoring(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate ``G`` of the censoring survival function (censoring = event 0)."""
    t = np.asarray(time, np.float64)
    c = 1 - np.asarray(event, np.int64)
    ut = np.unique(t)
    g = np.ones(len(ut))
    s = 1.0
    for i, u in enumerate(ut):
        at_risk = np.sum(t >= u)
        d = np.sum((t == u) & (c == 1))
        if at_risk > 0:
            s *= 1.0 - d / at_risk
        g[i] = s
    return ut, g


def uno_concordance_index(
    time: np.ndarray,
    risk: np.ndarray,
    event: np.ndarray,
    *,
    train_time: np.ndarray | None = None,
    train_event: np.ndarray | None = None,
    tau: float | None = None,
) -> float:
    """Uno's C-index: Harrell's pairs weighted by ``1 / G(t_i)^2`` (inverse probability of
    censoring), consistent under heavy censoring.

    Parameters
    ----------
    time, risk, event
        Test times, predicted risks (higher = earlier event) and events.
    train_time, train_event
        Where the censoring distribution ``G`` is estimated (default: the test data).
    tau
        Truncation time (default: the largest test time with ``G > 0``).

    Returns
    -------
    C-index in ``[0, 1]``; ties in risk count 1/2 (as scikit-survival).
    """
    t = np.asarray(time, np.float64)
    r = np.asarray(risk, np.float64)
    e = np.asarray(event, np.int64)
    tt = t if train_time is None else np.asarray(train_time, np.float64)
    te = e if train_event is None else np.asarray(train_event, np.int64)
    ut, g = _km_censoring(tt, te)

    def g_at(x: np.ndarray) -> np.ndarray:  # G(x-) : left limit, as the IPCW estimator uses
        idx = np.searchsorted(ut, x, side="left") - 1
        return np.where(idx >= 0, g[np.clip(idx, 0, len(g) - 1)], 1.0)

    if tau is None:
        tau = float(t.max())
    gi = g_at(t)
    num = 0.0
    den = 0.0
    for i in np.flatnonzero((e == 1) & (t < tau)):
        if gi[i] <= 0:
            continue
        w = 1.0 / gi[i] ** 2
        comp = t > t[i]
        if not comp.any():
            continue
        conc = (r[i] > r[comp]).sum() + 0.5 * (r[i] == r[comp]).sum()
        num += w * conc
        den += w * comp.sum()
    return float(num / den) if den > 0 else float("nan")


def risk_groups(risk: np.ndarray, *, n_groups: int = 2, cutoffs: Sequence[float] | None = None) -> np.ndarray:
    """Split predicted risks into ``low`` / ``high`` (median) or tertiles ``low/mid/high``.

    Parameters
    ----------
    risk
        Predicted risks.
    n_groups
        2 (median split) or 3 (tertiles).
    cutoffs
        Thresholds to use instead of quantiles of ``risk`` (e.g. fitted on training patients).

    Returns
    -------
    ``(n,)`` object array of group names.
    """
    r = np.asarray(risk, np.float64)
    if n_groups not in (2, 3):
        raise DataError(f"risk groups: n_groups must be 2 or 3, got {n_groups}")
    cut = np.quantile(r, np.arange(1, n_groups) / n_groups) if cutoffs is None else np.asarray(cutoffs)
    names = ("low", "high") if n_groups == 2 else ("low", "mid", "high")
    idx = np.searchsorted(cut, r, side="right")
    return np.asarray(names, dtype=object)[idx]


def _survival_frame(df: pd.DataFrame, group: str | None, time: str, event: str,
                    unit: str | None) -> pd.DataFrame:
    need = [time, event] + ([group] if group else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"the cohort table lacks column(s) {missing} needed for survival curves")
    d = df
    if unit and unit in d.columns:
        d = d.drop_duplicates(subset=unit, keep="first")
    cols = need
    d = d[cols].copy()
    d[time] = pd.to_numeric(d[time], errors="coerce")
    d[event] = pd.to_numeric(d[event], errors="coerce")
    d = d.dropna(subset=cols)
    if d.empty:
        raise DataError("no rows with time, event" + (f" and {group}" if group else "") + " to analyse")
    if (d[time] < 0).any():
        raise DataError(f"column {time!r} has negative survival times")
    d[event] = (d[event] != 0).astype(int)
    if group:
        d["_group"] = d[group].map(_group_label)
    else:
        d["_group"] = "all"
    return d


def _group_label(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _group_order(labels: Iterable[str]) -> list[str]:
    labs = list(dict.fromkeys(labels))
    try:
        return sorted(labs, key=float)
    except ValueError:
        return sorted(labs)


def km_curves(
    df: pd.DataFrame,
    group: str | None = "grade",
    *,
    time: str = "time",
    event: str = "event",
    unit: str | None = "patient_id",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Kaplan-Meier survival curves per group (lifelines ``KaplanMeierFitter``).

    Parameters
    ----------
    df
        Cohort table (:func:`histoviz.data.cohort.read_cohort`).
    group
        Column to stratify by (``None``: one curve, group ``"all"``).
    time, event
        Survival time and event indicator (1 = event, 0 = censored) columns.
    unit
        Count each value of this column once (first row), so a patient with several slides
        is one subject; ``None`` uses every row.
    alpha
        The confidence bands are ``1 - alpha``.

    Returns
    -------
    DataFrame with :data:`KM_COLUMNS`: one row per group and time point of lifelines'
    timeline (starting at 0), ``survival`` = ``survival_function_``, the confidence band,
    subjects at risk, the group size ``n`` and the number censored at that time (for censor ticks). Groups are ordered numerically when they can be.
    """
    from lifelines import KaplanMeierFitter

    d = _survival_frame(df, group, time, event, unit)
    frames = []
    for g in _group_order(d["_group"]):
        sub = d[d["_group"] == g]
        kmf = KaplanMeierFitter(alpha=alpha)
        kmf.fit(sub[time].to_numpy(dtype=float), sub[event].to_numpy(), label=str(g))
        sf = kmf.survival_function_.iloc[:, 0]
        ci = kmf.confidence_interval_survival_function_
        at_risk = kmf.event_table["at_risk"].reindex(sf.index)
        censored = kmf.event_table["censored"].reindex(sf.index).fillna(0)
        frames.append(pd.DataFrame({
            "group": str(g),
            "time": sf.index.to_numpy(dtype=float),
            "survival": sf.to_numpy(dtype=float),
            "ci_lower": ci.iloc[:, 0].to_numpy(dtype=float),
            "ci_upper": ci.iloc[:, 1].to_numpy(dtype=float),
            "at_risk": at_risk.to_numpy(dtype=float),
            "n": len(sub),
            "censored": censored.to_numpy(dtype=float),
        }))
    return pd.concat(frames, ignore_index=True)[list(KM_COLUMNS)]


def logrank(
    df: pd.DataFrame,
    group: str = "grade",
    *,
    time: str = "time",
    event: str = "event",
    unit: str | None = "patient_id",
) -> dict[str, float]:
    """Log-rank test across the groups of ``group`` (lifelines ``multivariate_logrank_test``).

    Returns
    -------
    dict with ``p_value``, ``test_statistic``, ``degrees_of_freedom``, ``n_groups`` and
    ``n`` (subjects). Fewer than two groups gives NaN statistics.
    """
    from lifelines.statistics import multivariate_logrank_test

    d = _survival_frame(df, group, time, event, unit)
    k = int(d["_group"].nunique())
    out = {"p_value": float("nan"), "test_statistic": float("nan"),
           "degrees_of_freedom": float(max(k - 1, 0)), "n_groups": float(k), "n": float(len(d))}
    if k < 2:
        return out
    res = multivariate_logrank_test(d[time].to_numpy(dtype=float), d["_group"].to_numpy(),
                                    d[event].to_numpy())
    out["p_value"] = float(res.p_value)
    out["test_statistic"] = float(res.test_statistic)
    return out


def survival_probability(
    surv: np.ndarray,
    edges: np.ndarray,
    horizon: float | np.ndarray,
    *,
    last_end: float | np.ndarray | None = None,
) -> np.ndarray:
    """Predicted probability of surviving past ``horizon`` from a discrete-time survival function.

    The survival models predict ``S_k`` = P(T > end of time bin ``k``) for bins fitted on each
    fold's training patients (``edges``: ``0``, the inner edges, ``inf``). Between two bin
    ends the hazard is taken as constant (piecewise exponential: ``log S`` is linear in time),
    with ``S(0) = 1``. The open last bin has no end: a horizon past the last inner edge is
    NaN unless ``last_end`` says where ``S_{B-1}`` is reached (e.g. the largest training time,
    where the Cox baselines evaluate it).

    Parameters
    ----------
    surv
        ``(..., B)`` survival probabilities at the bin ends (held-out ``S_0 .. S_{B-1}``, or one
        patch's values in a prediction file).
    edges
        ``(B + 1,)`` bin edges, or ``(..., B + 1)`` per row (each fold has its own bins).
    horizon
        Time (in the unit of the edges); a scalar or broadcastable to ``surv[..., 0]``.
    last_end
        Time at which the last bin ends (scalar or per row); default: open (NaN past it).

    Returns
    -------
    ``surv.shape[:-1]`` float64 array in ``[0, 1]``; NaN where ``horizon`` is past the known
    range, negative, or the row has a NaN.

    Examples
    --------
    >>> import numpy as np
    >>> edges = np.array([0.0, 10.0, 20.0, np.inf])
    >>> float(survival_probability(np.array([0.8, 0.64, 0.5]), edges, 10.0))
    0.8
    >>> round(float(survival_probability(np.array([0.8, 0.64, 0.5]), edges, 5.0)), 4)
    0.8944
    """
    s = np.asarray(surv, np.float64)
    if s.ndim == 0 or s.shape[-1] < 1:
        raise DataError(f"survival_probability: surv must have a bin axis, got shape {s.shape}")
    nb = s.shape[-1]
    e = np.asarray(edges, np.float64)
    if e.shape[-1] != nb + 1:
        raise DataError(f"survival_probability: {nb} bins need {nb + 1} edges, got {e.shape[-1]}")
    ends = np.broadcast_to(e[..., 1:], s.shape).copy()  # where S_k is reached
    if last_end is not None:
        ends[..., -1] = np.broadcast_to(np.asarray(last_end, np.float64), s.shape[:-1])
    # knots: (0, 1), (end_0, S_0), ..., (end_{B-1}, S_{B-1}); log-linear between them
    t_k = np.concatenate([np.zeros(s.shape[:-1] + (1,)), ends], axis=-1)
    with np.errstate(divide="ignore"):
        log_s = np.log(np.clip(np.concatenate([np.ones(s.shape[:-1] + (1,)), s], axis=-1), 0.0, 1.0))
    h = np.broadcast_to(np.asarray(horizon, np.float64), s.shape[:-1])
    # the knot interval holding h: t_k[j] <= h <= t_k[j + 1]
    j = (t_k[..., 1:] < h[..., None]).sum(axis=-1)
    j = np.minimum(j, nb - 1)
    idx = j[..., None]
    t0, t1 = np.take_along_axis(t_k, idx, -1)[..., 0], np.take_along_axis(t_k, idx + 1, -1)[..., 0]
    l0, l1 = np.take_along_axis(log_s, idx, -1)[..., 0], np.take_along_axis(log_s, idx + 1, -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(np.where(t1 > t0, (h - t0) / (t1 - t0), 1.0), 0.0, 1.0)
        mid = np.exp(l0 + frac * (l1 - l0))  # NaN only where a log S is -inf and frac is 0 or 1
        out = np.where(frac <= 0, np.exp(l0), np.where(frac >= 1, np.exp(l1), mid))
    bad = ~np.isfinite(h) | (h < 0) | (h > t1) | ~np.isfinite(t1) | np.isnan(s).any(axis=-1)
    return np.where(bad, np.nan, out)


def km_risk_groups(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    *,
    n_groups: int = 2,
    alpha: float = 0.05,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Kaplan-Meier curves and the log-rank test of groups of predicted risk.

    Parameters
    ----------
    time, event, risk
        Held-out times, events and predicted risks (one per patient).
    n_groups
        2 (median split) or 3 (tertiles) of the predicted risk.
    alpha
        Confidence level of the bands.

    Returns
    -------
    ``(curves, test)``: :func:`km_curves` output with groups ``low``/``(mid)``/``high`` and
    :func:`logrank` of the same groups.
    """
    df = pd.DataFrame({"time": np.asarray(time, float), "event": np.asarray(event, int),
                       "risk_group": risk_groups(risk, n_groups=n_groups)})
    order = {"low": 0, "mid": 1, "high": 2}
    curves = km_curves(df, "risk_group", unit=None, alpha=alpha)
    curves = curves.sort_values(["group", "time"], key=lambda c: c.map(order) if c.name == "group" else c,
                                kind="mergesort").reset_index(drop=True)
    return curves, logrank(df, "risk_group", unit=None)
