"""Repeated random splits of a survival cohort: does the conformal survival bound cover, and how
informative is it next to a shuffled-label control?

The patients are shuffled into a training part and the rest, ``n_fits`` times; the time bins
and the model are fitted on the training part; then, ``splits_per_fit`` times, the rest is shuffled
into calibration and test parts (conformal coverage is a statement over such draws, given the
fitted model). The bound is calibrated on the calibration part with censored patients too (:mod:`histoviz.evaluation.survival_conformal`,
through :meth:`histoviz.tasks.SurvivalTask.calibrate`), and the test part gives:

- ``coverage``: the censoring-weighted coverage of ``T ^ tau`` (what a run reports);
- ``coverage_true``: the fraction of test patients whose true survival time (when the data know
  it, e.g. a synthetic cohort's ``truth/patients.csv``) is at least the bound;
- ``lower_bound`` (mean, time unit), ``width`` (``tau - L``), ``n_eff`` (effective calibration
  size) and ``coverage_sd`` (the spread :func:`~histoviz.evaluation.survival_conformal.coverage_sd`
  predicts from it); per group when ``groups`` are given;

for the model and, with ``control=True``, for the same model fitted on shuffled (time, event)
pairs. :func:`survival_split_check` returns one row per split, model and group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

__all__ = ["survival_split_check"]


def survival_split_check(
    bags: Sequence[np.ndarray],
    time: np.ndarray,
    event: np.ndarray,
    *,
    model: str = "pca-cox",
    params: dict[str, Any] | None = None,
    n_fits: int = 10,
    splits_per_fit: int = 20,
    alpha: float = 0.1,
    fractions: tuple[float, float] = (0.5, 0.25),
    n_bins: int = 4,
    true_time: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    control: bool = True,
    seed: int = 0,
    time_unit: str = "months",
) -> pd.DataFrame:
    """Coverage and informativeness of the conformal survival bound over random splits.

    Parameters
    ----------
    bags
        One feature bag per patient (a one-patch bag for tabular covariates).
    time, event
        Observed times and events (1 = event).
    model, params
        Registered survival model and its parameters.
    n_fits, splits_per_fit
        Model fits (training parts) and calibration / test splits of the rest per fit:
        ``n_fits x splits_per_fit`` random splits in all.
    alpha
        Miscoverage.
    fractions
        Training and calibration shares (the rest is the test part).
    n_bins
        Time bins of the model (fitted on each split's training part).
    true_time
        Uncensored survival times, when known (synthetic data).
    groups
        A subgroup label per patient: coverage rows per group too.
    control
        Also fit the model on shuffled labels.
    seed
        Seed of the splits.

    Returns
    -------
    ``fit, split, model, group, n_test, coverage, coverage_true, lower_bound, width, tau, n_cal,
    n_events, n_eff, coverage_sd``.
    """
    from histoviz.data.outcomes import SurvivalBins, SurvivalBlock
    from histoviz.models import create_model
    from histoviz.tasks import ConformalSettings, TaskKind, get_task

    t = np.asarray(time, np.float64)
    e = np.asarray(event, np.int64)
    n = len(t)
    if len(bags) != n or len(e) != n:
        raise DataError(f"survival check: {len(bags)} bags, {n} times, {len(e)} events")
    n_tr, n_cal = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    if n - n_tr - n_cal < 5:
        raise DataError(f"survival check: {n} patients leave {n - n_tr - n_cal} for testing")
    cs = ConformalSettings(alpha=alpha)
    task = get_task(TaskKind.SURVIVAL)
    full = SurvivalBlock("survival", t, e, np.ones(n, bool), time_unit=time_unit)
    g_all = None if groups is None else np.asarray(groups, dtype=object)
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    for f in range(n_fits):
        perm = rng.permutation(n)
        tr, rest = perm[:n_tr], perm[n_tr:]
        blk = SurvivalBins(n_bins, time_unit).fit(full.subset(tr)).block(full)
        fitted = []
        for label, train_blk in [("model", blk.subset(tr))] + (
                [("shuffled", blk.subset(tr[rng.permutation(len(tr))]))] if control else []):
            m = create_model(model, **(params or {}))
            m.fit([bags[i] for i in tr], {"survival": train_blk})
            fitted.append((label, np.asarray(m.predict([bags[i] for i in rest])["survival"])))
        for j in range(splits_per_fit):
            k = f * splits_per_fit + j
            order = rng.permutation(len(rest))
            ci, ti = order[:n_cal], order[n_cal:]
            cal, te = rest[ci], rest[ti]
            for label, p_rest in fitted:
                rows += _split_rows(task, cs, blk, p_rest[ci], p_rest[ti], tr, cal, te, alpha, true_time, g_all,
                                    {"fit": f, "split": k, "model": label})
    return pd.DataFrame(rows)


def _split_rows(task: Any, cs: Any, blk: Any, p_cal: np.ndarray, p_te: np.ndarray, tr: np.ndarray, cal: np.ndarray,
                te: np.ndarray, alpha: float, true_time: np.ndarray | None, g_all: np.ndarray | None,
                keys: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    info = task.calibrate(blk.subset(cal), p_cal, cs, reference=blk.subset(np.r_[tr, cal]),
                          where=f"split {keys['split']}")
    info = {**info, "alpha": alpha}
    reg = task.regions(p_te, info["qhat"], cs, info=info)
    sel_groups = [("all", np.ones(len(te), bool))]
    if g_all is not None:
        sel_groups += [(str(g), g_all[te] == g) for g in dict.fromkeys(g_all[te].tolist())]
    for gname, sel in sel_groups:
        idx = te[sel]
        sub = {kk: v[sel] for kk, v in reg.items()}
        cov = task.coverage(blk.subset(idx), p_te[sel], sub, cs, info=info)
        val = dict(zip(cov["metric"], cov["value"]))
        truth = np.nan
        if true_time is not None:
            truth = float((np.asarray(true_time, np.float64)[idx] >= sub["lo"] - 1e-9).mean())
        rows.append({**keys, "group": gname, "n_test": int(sel.sum()),
                     "coverage": val.get("coverage", np.nan), "coverage_true": truth,
                     "lower_bound": val.get("lower_bound", np.nan),
                     "width": val.get("interval_width", np.nan), "tau": info["tau"],
                     "n_cal": info["n_cal"], "n_events": info["n_events"], "n_eff": info["n_eff"],
                     "coverage_sd": info["coverage_sd"]})
    return rows
