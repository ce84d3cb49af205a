"""Survival statistics: c-index (Harrell, Uno), Kaplan-Meier curves, log-rank, risk groups.

Every function follows one sign convention: a **higher risk means an earlier event**.
Kaplan-Meier and log-rank are lifelines' (``KaplanMeierFitter``, ``multivariate_logrank_test``);
Harrell's c-index is lifelines' ``concordance_index``; Uno's c-index (inverse probability of
censoring weights, for heavy censoring) is computed here, truncated at the largest training
follow-up time as scikit-survival requires, and checked against scikit-survival's
``concordance_index_ipcw`` (with that ``tau``) in the tests.

Discrete-time models (MCAT / PathGen, the ABMIL survival head, the Cox baseline on bins) predict
the survival function ``S_k`` at the end of each time bin; :func:`survival_probability` reads it
at any horizon in the training data's time unit, :func:`median_survival` where it crosses 0.5 and
:func:`default_horizons` chooses horizons a clinician reads (1, 3, 5 years, or the bin ends).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

__all__ = [
    "KM_COLUMNS",
    "censoring_km",
    "concordance_index",
    "km_curves",
    "km_risk_groups",
    "default_horizons",
    "logrank",
    "median_survival",
    "percentile_of",
    "risk_groups",
    "survival_probability",
    "uno_concordance_index",
    "uno_truncation",
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


def censoring_km(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate ``G`` of the censoring survival function, as scikit-survival's
    ``CensoringDistributionEstimator``: at each unique time ``u``, the number at risk of being
    censored is ``#(t >= u)`` minus the events at ``u`` (an event at the same time happens
    first). Returns ``(unique times, G at each time)`` (right-continuous)."""
    t = np.asarray(time, np.float64)
    ev = np.asarray(event, np.int64) > 0
    ut, inv = np.unique(t, return_inverse=True)
    n_events = np.bincount(inv, weights=ev, minlength=len(ut))
    n_cens = np.bincount(inv, weights=~ev, minlength=len(ut))
    n_at_risk = len(t) - np.r_[0, np.cumsum(np.bincount(inv, minlength=len(ut)))[:-1]] - n_events
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(n_cens > 0, n_cens / np.maximum(n_at_risk, 1e-300), 0.0)
    return ut, np.cumprod(1.0 - ratio)


def uno_truncation(time: np.ndarray, tau: float | None = None) -> float:
    """The truncation time of Uno's c-index: ``tau`` capped at the largest follow-up time of
    the data the censoring distribution is estimated from (beyond it ``G`` is unknown), or that
    largest time when ``tau`` is ``None``."""
    t_max = float(np.max(np.asarray(time, np.float64)))
    return t_max if tau is None else min(float(tau), t_max)


def uno_concordance_index(
    time: np.ndarray,
    risk: np.ndarray,
    event: np.ndarray,
    *,
    train_time: np.ndarray | None = None,
    train_event: np.ndarray | None = None,
    tau: float | None = None,
    tied_tol: float = 1e-8,
) -> float:
    """Uno's C-index: Harrell's comparable pairs weighted by ``1 / G(t_i)^2`` (inverse
    probability of censoring), consistent under heavy censoring, truncated at ``tau``.

    Equals scikit-survival's ``concordance_index_ipcw(train, test, risk, tau=tau)`` (pairs,
    tied times and risks, the censoring estimate; tested). Only patients with an event before
    ``tau`` count as the earlier member of a pair; they are compared with every patient
    observed later (and, at a tied time, with the censored ones).

    Parameters
    ----------
    time, risk, event
        Test times, predicted risks (higher = earlier event) and events.
    train_time, train_event
        Where the censoring distribution ``G`` is estimated (default: the test data).
    tau
        Truncation time. Default, and upper limit: the largest follow-up time of the data ``G``
        comes from (:func:`uno_truncation`); beyond it ``G`` cannot be estimated (scikit-survival
        refuses such times).
    tied_tol
        Risks closer than this are tied (count 1/2).

    Returns
    -------
    C-index in ``[0, 1]`` (NaN without a comparable pair).
    """
    t = np.asarray(time, np.float64)
    r = np.asarray(risk, np.float64)
    e = np.asarray(event, np.int64) > 0
    tt = t if train_time is None else np.asarray(train_time, np.float64)
    te = e if train_event is None else np.asarray(train_event, np.int64) > 0
    tau = uno_truncation(tt, tau)
    ut, g = censoring_km(tt, te)
    idx = np.searchsorted(ut, t, side="right") - 1  # G at t (right-continuous); 1 before the first time
    gi = np.where(idx >= 0, g[np.clip(idx, 0, len(g) - 1)], 1.0)
    num = den = 0.0
    for i in np.flatnonzero(e & (t < tau) & (gi > 0)):
        comp = (t > t[i]) | ((t == t[i]) & ~e)
        if not comp.any():
            continue
        w = 1.0 / gi[i] ** 2
        diff = r[i] - r[comp]
        ties = np.abs(diff) <= tied_tol
        num += w * (float((diff[~ties] > 0).sum()) + 0.5 * float(ties.sum()))
        den += w * float(comp.sum())
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


# ------------------------------------------------------------------------------------------------
# the survival function of a discrete-time model, in time units
# ------------------------------------------------------------------------------------------------
def _knots(surv: np.ndarray, edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Times ``0, e_1 .. e_{B-1}`` (the finite bin ends) and ``S`` there: ``1, S_0 .. S_{B-2}``."""
    s = np.asarray(surv, np.float64)
    e = np.asarray(edges, np.float64).reshape(-1)
    if s.ndim == 0 or s.shape[-1] + 1 != len(e):
        raise DataError(f"survival function with {s.shape[-1] if s.ndim else 0} bins needs "
                        f"{(s.shape[-1] if s.ndim else 0) + 1} bin edges, got {len(e)}")
    finite = e[np.isfinite(e) & (e < np.finfo(np.float64).max / 2)]
    if len(e) < 2 or e[0] != 0 or np.any(np.diff(e) < 0):
        raise DataError(f"bin edges must start at 0 and increase, got {e.tolist()}")
    t = np.concatenate([[0.0], finite[1:]]) if finite[0] == 0 else np.concatenate([[0.0], finite])
    t = t[: s.shape[-1]]  # the last bin is open: S_{B-1} is at infinity, not on the time axis
    sv = np.concatenate([np.ones(s.shape[:-1] + (1,)), s[..., : len(t) - 1]], axis=-1)
    return t, sv


def survival_probability(surv: np.ndarray, edges: Sequence[float], horizons: Any) -> np.ndarray:
    """``P(T > t)`` at horizons ``t`` from a discrete-time survival function.

    The model gives ``S_k``, the probability of surviving past the end of bin ``k``
    (``edges[k + 1]``). Between bin ends the survival function is interpolated linearly (constant
    event density within a bin, as pycox's ``interpolate``), from ``S(0) = 1``. At a bin end the
    value is the model's own ``S_k``. Beyond the last finite bin end (the last bin is open) the
    model says nothing: NaN.

    Parameters
    ----------
    surv
        ``(..., B)`` survival at the end of each of ``B`` bins (non-increasing along the last axis).
    edges
        ``(B + 1,)`` bin edges in the training data's time unit (``edges[0] = 0``, the last one
        ``inf`` or a huge number).
    horizons
        A time or an array of times (same unit, >= 0).

    Returns
    -------
    ``(..., H)`` probabilities (``(...,)`` for a scalar horizon).

    Examples
    --------
    >>> import numpy as np
    >>> edges = [0, 12, 36, 60, np.inf]
    >>> survival_probability(np.array([0.9, 0.6, 0.4, 0.3]), edges, [12, 24, 60, 80]).round(3).tolist()
    [0.9, 0.75, 0.4, nan]
    """
    t, sv = _knots(surv, edges)
    h = np.asarray(horizons, np.float64)
    if np.any(~np.isfinite(h)) or np.any(h < 0):
        raise DataError(f"survival horizons must be finite times >= 0, got {np.atleast_1d(h).tolist()}")
    flat = np.atleast_1d(h).reshape(-1)
    j = np.clip(np.searchsorted(t, flat, side="right") - 1, 0, len(t) - 1)
    nxt = np.minimum(j + 1, len(t) - 1)
    span = t[nxt] - t[j]
    frac = np.where(span > 0, (flat - t[j]) / np.where(span > 0, span, 1.0), 0.0)
    out = sv[..., j] + (sv[..., nxt] - sv[..., j]) * frac
    out = np.where(flat > t[-1], np.nan, out)
    return out.reshape(sv.shape[:-1] + h.shape)


def median_survival(surv: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Predicted median survival time: where :func:`survival_probability` first reaches 0.5.

    NaN where the survival function stays above 0.5 up to the last finite bin end (the median
    is then later than that, and not defined by the model).

    Examples
    --------
    >>> import numpy as np
    >>> float(median_survival(np.array([0.9, 0.6, 0.4, 0.3]), [0, 12, 36, 60, np.inf]))
    48.0
    """
    t, sv = _knots(surv, edges)
    below = sv <= 0.5
    first = np.argmax(below, axis=-1)
    ok = below.any(axis=-1) & (first > 0)
    k = np.maximum(first, 1)
    s0 = np.take_along_axis(sv, (k - 1)[..., None], -1)[..., 0]
    s1 = np.take_along_axis(sv, k[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(s0 > s1, (s0 - 0.5) / (s0 - s1), 0.0)
    out = t[k - 1] + frac * (t[k] - t[k - 1])
    return np.where(ok, out, np.nan)


_PER_YEAR = {"day": 365.25, "days": 365.25, "week": 52.1775, "weeks": 52.1775, "month": 12.0,
             "months": 12.0, "year": 1.0, "years": 1.0}


def default_horizons(edges: Sequence[float], time_unit: str = "months") -> tuple[np.ndarray, list[str]]:
    """Horizons to read a survival function at, and their labels.

    1, 3 and 5 years (or 1, 2, 3 / 5, 10 years: those inside the model's range) when the time
    unit converts to years and at least two of them lie within the last finite bin end; else the
    finite bin ends themselves.

    Returns
    -------
    ``(times in the training unit, labels)``, e.g. ``([12, 36, 60], ["1 year", "3 years", "5 years"])``.
    """
    e = np.asarray(edges, np.float64)
    finite = e[np.isfinite(e) & (e > 0) & (e < np.finfo(np.float64).max / 2)]
    if not finite.size:
        return np.array([]), []
    last = float(finite.max())
    per_year = _PER_YEAR.get(str(time_unit).strip().lower())
    if per_year is not None:
        for years in ((1, 3, 5), (1, 2, 3), (5, 10), (1, 2), (0.5, 1)):
            t = np.array([y * per_year for y in years], np.float64)
            if (t <= last + 1e-9).sum() >= 2:
                keep = [y for y, v in zip(years, t) if v <= last + 1e-9]
                times = np.array([y * per_year for y in keep], np.float64)
                labels = [f"{y:g} year" + ("" if y == 1 else "s") for y in keep]
                return times, labels
    return finite, [f"{v:.3g} {time_unit}" for v in finite]


def percentile_of(values: Any, reference: Any) -> np.ndarray:
    """Mid-rank percentile (0-100) of each value among ``reference`` (NaNs ignored).

    ``reference`` may be a sample (e.g. a cohort's held-out risks) or an evenly spaced quantile
    grid of one; a value equal to reference points counts half of them.

    Examples
    --------
    >>> percentile_of([1.0, 2.5, 10.0], [1.0, 2.0, 3.0, 4.0]).tolist()
    [12.5, 50.0, 100.0]
    """
    ref = np.sort(np.asarray(reference, np.float64).reshape(-1))
    ref = ref[np.isfinite(ref)]
    v = np.asarray(values, np.float64)
    if not ref.size:
        return np.full(v.shape, np.nan)
    lo = np.searchsorted(ref, v, side="left")
    hi = np.searchsorted(ref, v, side="right")
    out = 100.0 * (lo + hi) / (2.0 * ref.size)
    return np.where(np.isfinite(v), out, np.nan)
