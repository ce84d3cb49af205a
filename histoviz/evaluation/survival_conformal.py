"""Conformal survival bounds in the data's time unit, calibrated with censored patients too.

A censored patient's survival time is not observed, so split conformal cannot score it directly;
calibrating on the patients with an event only (what PathGen does) over-represents short
survivors. Following Candès, Lei and Ren (2023, *JRSSB* 85:24, "Conformalized survival
analysis"), the bound is for the survival time truncated at a horizon ``tau``,
``T ^ tau = min(T, tau)``, which is observed for every patient whose censoring time ``C`` is at
least ``tau``. Under independent censoring (``C`` independent of ``T`` and of the slide) those
patients are a random sample of all patients, so split conformal on them is valid for ``T ^ tau``.
``C`` is known for a censored patient (``C = time``) and for anyone followed past ``tau``, but not
for a patient with an event before ``tau``; such a patient belongs to the sample with probability
``P(C >= tau | C > T) = G(tau-) / G(T)`` (``G``: the Kaplan-Meier estimate of the censoring
survival function on the fold's training patients), the imputation of Sesia and Svetnik (2024,
"Doubly robust conformalized survival analysis with right-censored data"), used here as a
deterministic weight. Calibration weights are therefore:

============================================= ===============================
calibration patient                           weight ``w`` (score on ``T ^ tau``)
============================================= ===============================
followed past ``tau`` (event or not)          1 (``T ^ tau = tau``)
event at ``T < tau``                          ``G(tau-) / G(T)`` (``T ^ tau = T``)
censored before ``tau``                       0 (``C < tau``: not in the sample)
============================================= ===============================

The model's survival curve (``S_k`` at the end of each time bin) gives a centre ``m(x)``, its
own ``alpha``-quantile of the survival time (where ``S(t | x) = 1 - alpha``, the cumulative
hazard ``-log S`` interpolated linearly between bin ends and extended past the last one with its
last slope), the conditional quantile that Candès et al. conformalise. The score is
``log m(x) - log(T ^ tau)`` (large when a patient dies sooner than predicted) and the threshold ``q`` the weighted split-conformal quantile (the test patient
counting with weight 1, Tibshirani et al. 2019): the smallest ``s`` with
``sum_{s_i <= s} w_i >= (1 - alpha)(sum_i w_i + 1)``. The prediction is the **lower predictive
bound** ``L = min(m e^-q, tau)``: the patient survives at least ``L`` with probability
``1 - alpha``; as an interval for ``T ^ tau`` it is ``[L, tau]``, ``tau`` meaning "beyond the
horizon" (censored data cannot bound survival from above past the follow-up, and a two-sided
interval for an individual survival time is nearly as wide as the horizon for any model:
exponential-like times spread over two orders of magnitude). Its width ``tau - L`` shrinks as the
bound becomes informative: a model that knows nothing gets the same, marginal, bound for every
patient. ``tau`` is the last finite edge of the fold's time bins (fitted on training patients:
the 3/4 quantile of their event times with 4 bins).

Held-out coverage uses the same weights: ``sum w_i covered_i / sum w_i`` over the test patients
whose ``T ^ tau`` is known, an unbiased estimate of ``P(T ^ tau >= L) = P(T >= L)``.

How many calibration patients: given the calibration set, the coverage a split-conformal
interval attains is Beta distributed with standard deviation about ``sqrt(alpha (1 - alpha) /
(n + 2))`` (Angelopoulos and Bates 2021, section 3.2); with weights, ``n`` is the effective size
``(sum w)^2 / sum w^2``. :func:`coverage_sd` and :func:`calibration_size_for` say it in numbers:
at ``alpha = 0.1``, a coverage that varies by at most 0.03 (one SD) between calibration draws
needs about 98 effective calibration patients; 0.05 needs 34.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from histoviz.errors import DataError
from histoviz.evaluation.survival import censoring_km

__all__ = [
    "SurvivalCalibration",
    "calibrate_survival",
    "calibration_size_for",
    "coverage_sd",
    "quantile_time",
    "sample_weights",
    "survival_horizon",
    "survival_intervals",
    "weighted_conformal_quantile",
    "weighted_coverage",
]

_FLOOR = 1e-3  # times are floored at this fraction of tau before the log


def survival_horizon(edges: np.ndarray) -> float:
    """``tau``: the last finite inner edge of the time bins (``edges[-2]``)."""
    e = np.asarray(edges, np.float64)
    if e.ndim != 1 or len(e) < 3 or not np.isfinite(e[-2]) or e[-2] <= 0:
        raise DataError(f"survival intervals need time bins with a positive last finite edge, got {e.tolist()}")
    return float(e[-2])


def quantile_time(surv: np.ndarray, edges: np.ndarray, level: float) -> np.ndarray:
    """The time at which discrete-time survival curves fall to ``1 - level``.

    ``surv[..., k]`` is survival at the end of bin ``k`` (``edges[k + 1]``; the open last bin is
    not used); the cumulative hazard ``-log S`` is interpolated linearly from 0 at time 0 through
    the bin ends and extended past the last finite one with its last slope (under proportional
    hazards with a constant hazard this is exact).

    Returns
    -------
    ``(...)`` times in the unit of ``edges`` (floored at a small positive value).
    """
    e = np.asarray(edges, np.float64)
    x = np.r_[0.0, e[1:-1]]
    s = np.clip(np.asarray(surv, np.float64)[..., : len(x) - 1], 1e-12, 1.0)
    h = np.concatenate([np.zeros(s.shape[:-1] + (1,)), np.maximum.accumulate(-np.log(s), axis=-1)], axis=-1)
    target = -np.log1p(-level)
    k = np.clip((h < target).sum(axis=-1), 1, len(x) - 1)  # the segment [x_{k-1}, x_k] reaching the target
    h0 = np.take_along_axis(h, (k - 1)[..., None], axis=-1)[..., 0]
    h1 = np.take_along_axis(h, k[..., None], axis=-1)[..., 0]
    slope = np.maximum((h1 - h0) / (x[k] - x[k - 1]), 1e-12)
    return np.maximum(x[k - 1] + (target - h0) / slope, _FLOOR * x[-1])


def _g(km: tuple[np.ndarray, np.ndarray], x: np.ndarray, *, left: bool) -> np.ndarray:
    ut, g = (np.asarray(a, np.float64) for a in km)
    idx = np.searchsorted(ut, np.asarray(x, np.float64), side="left" if left else "right") - 1
    return np.where(idx >= 0, g[np.clip(idx, 0, len(g) - 1)], 1.0)


def sample_weights(time: np.ndarray, event: np.ndarray, tau: float,
                   km: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Weight of each patient in the sample whose ``T ^ tau`` is known (module docstring table)."""
    t = np.asarray(time, np.float64)
    ev = np.asarray(event, np.int64) > 0
    w = np.zeros(len(t))
    w[t >= tau] = 1.0
    early = ev & (t < tau)
    if early.any():
        g_tau = float(_g(km, np.array([tau]), left=True)[0])
        g_t = _g(km, t[early], left=False)
        w[early] = np.where(g_t > 0, np.minimum(g_tau / np.maximum(g_t, 1e-300), 1.0), 0.0)
    return w


def weighted_conformal_quantile(scores: np.ndarray, weights: np.ndarray, alpha: float, *,
                                where: str = "calibration split") -> float:
    """Smallest ``s`` with ``sum_{s_i <= s} w_i >= (1 - alpha)(sum w + 1)`` (the test point has
    weight 1); equals the usual ``ceil((n + 1)(1 - alpha))``-th score when every weight is 1.

    Raises
    ------
    DataError
        Too little calibration weight for a finite threshold (``sum w < (1 - alpha) / alpha``).
    """
    s = np.asarray(scores, np.float64)
    w = np.asarray(weights, np.float64)
    ok = np.isfinite(s) & (w > 0)
    s, w = s[ok], w[ok]
    need = (1.0 - alpha) / alpha
    if w.sum() < need - 1e-9:
        raise DataError(f"{where}: calibration weight {w.sum():.1f} (patients whose survival up to the horizon is "
                        f"known, censoring-weighted); alpha={alpha:g} needs at least {math.ceil(need - 1e-9)} "
                        "(raise evaluation.calibration_fraction, use fewer folds or more patients, or a larger alpha)")
    order = np.argsort(s, kind="mergesort")
    cum = np.cumsum(w[order])
    k = int(np.searchsorted(cum, (1.0 - alpha) * (w.sum() + 1.0) - 1e-9, side="left"))
    return float(s[order][min(k, len(s) - 1)])


def _truncated(time: np.ndarray, tau: float) -> np.ndarray:
    return np.clip(np.asarray(time, np.float64), _FLOOR * tau, tau)


@dataclass(frozen=True)
class SurvivalCalibration:
    """A calibrated survival interval: threshold ``qhat`` (log scale), horizon ``tau``, the bin
    edges the centre is computed with, the censoring estimate, and the calibration sizes."""

    qhat: float
    alpha: float
    tau: float
    edges: tuple[float, ...]
    km_time: tuple[float, ...]
    km_g: tuple[float, ...]
    n_cal: int
    n_events: int
    n_eff: float
    weight: float

    def to_dict(self) -> dict:
        """JSON-able (``inf`` edge as ``None``)."""
        return {"qhat": self.qhat, "tau": self.tau, "edges": [e if np.isfinite(e) else None for e in self.edges],
                "censoring_km": {"time": list(self.km_time), "G": list(self.km_g)}, "n_cal": self.n_cal,
                "n_events": self.n_events, "n_eff": self.n_eff, "cal_weight": self.weight,
                "coverage_sd": coverage_sd(self.alpha, self.n_eff)}


def calibrate_survival(time: np.ndarray, event: np.ndarray, surv: np.ndarray, edges: np.ndarray, alpha: float, *,
                       train_time: np.ndarray, train_event: np.ndarray,
                       where: str = "calibration split") -> SurvivalCalibration:
    """Threshold of the survival interval from calibration patients (module docstring).

    Parameters
    ----------
    time, event, surv
        Calibration patients' times, events and predicted survival curves ``(n, B)``.
    edges
        The fold's bin edges (``tau = edges[-2]``).
    alpha
        Miscoverage.
    train_time, train_event
        The fold's training patients (calibration included), for the censoring estimate.
    """
    e = np.asarray(edges, np.float64)
    tau = survival_horizon(e)
    km = censoring_km(train_time, train_event)
    w = sample_weights(time, event, tau, km)
    m = quantile_time(surv, e, alpha)
    s = np.log(m) - np.log(_truncated(time, tau))
    q = weighted_conformal_quantile(s, w, alpha, where=where)
    n_eff = float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300))
    return SurvivalCalibration(q, float(alpha), tau, tuple(float(x) for x in e), tuple(float(x) for x in km[0]),
                               tuple(float(x) for x in km[1]), int(len(time)), int(np.sum(np.asarray(event) > 0)),
                               n_eff, float(w.sum()))


def survival_intervals(surv: np.ndarray, edges: np.ndarray, qhat: float | np.ndarray, alpha: float,
                       tau: float | None = None) -> dict[str, np.ndarray]:
    """``centre`` (the model's ``alpha``-quantile time), ``lo`` (the lower predictive bound), ``hi = tau`` (beyond the
    horizon), ``width = tau - lo`` and ``uncertainty = width / tau`` of predicted curves
    ``(n, B)`` for threshold(s) ``qhat``."""
    e = np.asarray(edges, np.float64)
    tau = survival_horizon(e) if tau is None else float(tau)
    m = quantile_time(surv, e, alpha)
    q = np.asarray(qhat, np.float64)
    lo = np.minimum(m * np.exp(-q), tau)
    hi = np.full_like(lo, tau)
    return {"centre": m, "lo": lo, "hi": hi, "width": hi - lo, "uncertainty": (hi - lo) / tau}


def weighted_coverage(time: np.ndarray, event: np.ndarray, lo: np.ndarray, hi: np.ndarray, tau: float,
                      km: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per patient: whether ``T ^ tau`` lies in ``[lo, hi]`` (NaN when it is not known) and the
    patient's weight; ``sum w covered / sum w`` estimates the coverage."""
    t = np.asarray(time, np.float64)
    w = sample_weights(t, event, tau, km)
    tt = np.minimum(t, tau)
    cov = ((tt >= np.asarray(lo) - 1e-9) & (tt <= np.asarray(hi) + 1e-9)).astype(np.float64)
    return np.where(w > 0, cov, np.nan), w


def coverage_sd(alpha: float, n: int | float) -> float:
    """SD of the coverage a split-conformal interval attains over calibration draws of ``n``
    (effective) patients: ``sqrt(alpha (1 - alpha) / (n + 2))`` (the Beta law's, to first order)."""
    return float(math.sqrt(alpha * (1.0 - alpha) / (max(float(n), 0.0) + 2.0)))


def calibration_size_for(alpha: float, sd: float) -> int:
    """Calibration patients (effective) for a coverage SD of at most ``sd`` at ``alpha``.

    >>> calibration_size_for(0.1, 0.03), calibration_size_for(0.1, 0.05)
    (98, 34)
    """
    return int(math.ceil(alpha * (1.0 - alpha) / sd ** 2 - 2.0 - 1e-9))
