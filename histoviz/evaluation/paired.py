"""Paired comparison of two runs cross-validated on the same patients and folds.

Two models scored on the same held-out patients are compared **pairwise**: per target and per
fold, ``A - B``. What :func:`compare_paired` reports, for one task (a modality or an outcome):

- ``difference``: the mean over targets of the per-target difference averaged over folds
  (regression); the mean over folds of the per-fold difference (outcomes: AUC, c-index);
- the **confidence interval** of the verdict: the Nadeau-Bengio corrected resampled t interval
  of the per-fold differences (:mod:`histoviz.evaluation.resampled`). Every fold refits both
  models, so the folds' spread carries the variance of training as well as that of the test
  patients, and the correction accounts for the folds sharing training patients. Use repeated
  folds (``evaluation.repeats``) for a tighter interval: with 5 folds it has 4 degrees of
  freedom;
- a **patient bootstrap** interval (secondary, ``boot_low`` / ``boot_high``): the models held
  fixed, only the held-out patients resampled, so it leaves the training variance out and is
  never the verdict. Regression: each replicate resamples the held-out patients within every
  fold (the same patients for both runs), recomputes every target's correlation from the
  held-out tables, averages over folds, then resamples the targets. Outcomes: the held-out
  patients are resampled within every fold and the metric is recomputed per fold and averaged.
  Percentile interval;
- the **fold win rate**: the fraction of folds in which A's mean beats B's (ties count half);
- a paired **Wilcoxon signed-rank** test (``scipy.stats.wilcoxon``), **exploratory**: over
  targets (regression: fold-averaged per-target differences; targets are correlated, so its p is
  optimistic) or over folds (outcomes: folds share training patients, and 5 folds cannot give
  p < 0.0625);
- the **verdict**: ``"within noise"`` when the corrected interval includes 0, else which run is
  better (the bootstrap interval decides only when there are fewer than two folds).

Runs with different target sets are compared on the targets both predict (``notes`` says so).
Folds are the unit; with a ``repeat`` column (repeated fold splits) the unit is
``(repeat, fold)``. Runs whose folds hold different patients are refused.

The resampling never materialises the resampled tables: a replicate is a vector of patient
counts (multinomial), and every metric here is computed with those counts as frequency weights,
which equals the metric of the resampled table exactly (tests check it against
:func:`~histoviz.evaluation.metrics.columnwise_pearson`, lifelines and scikit-learn on
explicitly resampled data).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.evaluation.metrics import PRIMARY_METRIC
from histoviz.task_kinds import TaskKind

__all__ = [
    "BOOTSTRAP_METRICS",
    "PairedComparison",
    "compare_paired",
    "unit_columns",
    "weighted_auc",
    "weighted_c_index",
    "weighted_class_metric",
    "weighted_pearson",
    "weighted_spearman",
]

#: metrics with a patient bootstrap, per task kind
BOOTSTRAP_METRICS: dict[str, tuple[str, ...]] = {
    TaskKind.REGRESSION: ("pearson", "spearman"),
    TaskKind.CLASSIFICATION: ("auc_macro", "auc_micro", "balanced_accuracy", "accuracy"),
    TaskKind.SURVIVAL: ("c_index",),
}
_CHUNK_CELLS = 20_000_000  # replicate x patient x target cells per bootstrap chunk


def unit_columns(df: pd.DataFrame) -> list[str]:
    """``["repeat", "fold"]`` when the table has repeated fold splits, else ``["fold"]``."""
    return ["repeat", "fold"] if "repeat" in df.columns else ["fold"]


# ------------------------------------------------------------------------------------------------
# weighted metrics: frequency weights (bootstrap counts) == the metric of the resampled data
# ------------------------------------------------------------------------------------------------
def _weighted_corr(w: np.ndarray, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None, min_n: int) -> np.ndarray:
    """Pearson per column with frequency weights ``w`` ``(B, n)`` -> ``(B, m)``."""
    w = np.asarray(w, np.float64)
    if mask is None:
        n = w.sum(axis=1)[:, None]
        sx, sy = w @ x, w @ y
        sxx, syy, sxy = w @ (x * x), w @ (y * y), w @ (x * y)
        ax = np.broadcast_to(np.abs(x).max(axis=0, initial=0.0), sx.shape)
        ay = np.broadcast_to(np.abs(y).max(axis=0, initial=0.0), sy.shape)
    else:
        mf = mask.astype(np.float64)
        x0, y0 = np.where(mask, x, 0.0), np.where(mask, y, 0.0)
        n = w @ mf
        sx, sy = w @ x0, w @ y0
        sxx, syy, sxy = w @ (x0 * x0), w @ (y0 * y0), w @ (x0 * y0)
        ax = np.broadcast_to(np.abs(x0).max(axis=0, initial=0.0), sx.shape)
        ay = np.broadcast_to(np.abs(y0).max(axis=0, initial=0.0), sy.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        cxx = sxx - sx * sx / n
        cyy = syy - sy * sy / n
        cxy = sxy - sx * sy / n
        r = cxy / np.sqrt(cxx * cyy)
    ok = (n >= max(min_n, 2)) & (cxx > 1e-24 * np.maximum(ax, 1e-300) ** 2 * n) \
        & (cyy > 1e-24 * np.maximum(ay, 1e-300) ** 2 * n)
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def weighted_pearson(weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, *, min_n: int = 3) -> np.ndarray:
    """Per-target Pearson of ``(n, m)`` tables for each row of frequency weights ``(B, n)``.

    Equals :func:`~histoviz.evaluation.metrics.columnwise_pearson` of the table with row ``i``
    repeated ``weights[b, i]`` times (pairs with a ``NaN`` are dropped per column).

    Returns
    -------
    ``(B, m)`` float64.
    """
    x, y = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    mask = np.isfinite(x) & np.isfinite(y)
    return _weighted_corr(w, x, y, None if mask.all() else mask, min_n)


def _weighted_ranks(w: np.ndarray, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of each column of ``a`` in the data resampled by ``w`` ``(B, n)``
    -> ``(B, n, m)``; entries outside ``mask`` get rank 0 (they carry no weight)."""
    n, m = a.shape
    filled = np.where(mask, a, np.inf)
    order = np.argsort(filled, axis=0, kind="mergesort")  # (n, m)
    s = np.take_along_axis(filled, order, axis=0)
    new = np.ones((n, m), bool)
    new[1:] = s[1:] != s[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n)[:, None], 0), axis=0)  # first row of the tie group
    last = np.where(np.r_[new[1:], np.ones((1, m), bool)], np.arange(n)[:, None], n)
    end = np.minimum.accumulate(last[::-1], axis=0)[::-1]  # last row of the tie group
    ws = w[:, order] * np.take_along_axis(mask, order, axis=0)[None]  # (B, n, m) weights in sorted order
    cum = np.cumsum(ws, axis=1)
    cols = np.arange(m)[None, :]
    below = cum[:, start, cols] - ws[:, start, cols]  # weight strictly below the group
    equal = cum[:, end, cols] - below
    r_sorted = below + (equal + 1.0) / 2.0
    out = np.empty_like(r_sorted)
    np.put_along_axis(out, np.broadcast_to(order, r_sorted.shape), r_sorted, axis=1)
    return np.where(mask[None], out, 0.0)


def weighted_spearman(weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, *, min_n: int = 3) -> np.ndarray:
    """Per-target Spearman (Pearson of average ranks) of the resampled tables, ``(B, m)``.

    Equals :func:`~histoviz.evaluation.metrics.columnwise_spearman` of the explicitly
    resampled table (ties, duplicated rows and ``NaN`` pairs included).
    """
    x, y = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    mask = np.isfinite(x) & np.isfinite(y)
    rx, ry = _weighted_ranks(w, x, mask), _weighted_ranks(w, y, mask)
    wm = w[:, :, None] * mask[None]
    n = wm.sum(axis=1)
    sx, sy = (wm * rx).sum(axis=1), (wm * ry).sum(axis=1)
    sxx, syy, sxy = (wm * rx * rx).sum(axis=1), (wm * ry * ry).sum(axis=1), (wm * rx * ry).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cxx, cyy = sxx - sx * sx / n, syy - sy * sy / n
        r = (sxy - sx * sy / n) / np.sqrt(cxx * cyy)
    ok = (n >= max(min_n, 2)) & (cxx > 1e-24 * np.maximum(rx.max(axis=1), 1e-300) ** 2 * n) \
        & (cyy > 1e-24 * np.maximum(ry.max(axis=1), 1e-300) ** 2 * n)
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def _pair_ratio(w: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``(w num w) / (w den w)`` per row of ``w`` (NaN where the denominator is 0)."""
    a = np.einsum("bi,ij,bj->b", w, num, w)
    b = np.einsum("bi,ij,bj->b", w, den, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / b, np.nan)


def weighted_auc(weights: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC (``P(score_pos > score_neg)``, ties 1/2) for each row of frequency weights.

    Equals ``sklearn.metrics.roc_auc_score`` of the resampled data; NaN when a replicate has
    no positive or no negative.
    """
    w = np.atleast_2d(np.asarray(weights, np.float64))
    pos = np.asarray(positive, bool)
    s = np.asarray(score, np.float64)
    pair = pos[:, None] & ~pos[None, :]
    gt = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
    return _pair_ratio(w, np.where(pair, gt, 0.0), pair.astype(np.float64))


def weighted_c_index(weights: np.ndarray, time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Harrell's c-index (higher risk = earlier event) for each row of frequency weights.

    Pairs, ties and censoring follow lifelines' ``concordance_index`` (what
    :func:`histoviz.evaluation.survival.concordance_index` wraps): a pair is comparable when
    the earlier time is an event, or at equal times when exactly one is an event; tied risks
    count 1/2. Copies of one patient are never comparable with each other.
    """
    w = np.atleast_2d(np.asarray(weights, np.float64))
    t = np.asarray(time, np.float64)
    e = np.asarray(event, np.float64) > 0
    r = np.asarray(risk, np.float64)
    ti, tj = t[:, None], t[None, :]
    ei, ej = e[:, None], e[None, :]
    # ordered pairs (i first): i's event is observed strictly before j's time, or at the same
    # time i has the event and j is censored (lifelines: the censored one outlives)
    first = (ei & (ti < tj)) | ((ti == tj) & ei & ~ej)
    conc = np.where(first, (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :]), 0.0)
    return _pair_ratio(w, conc, first.astype(np.float64))


def weighted_class_metric(weights: np.ndarray, codes: np.ndarray, proba: np.ndarray, metric: str) -> np.ndarray:
    """``auc_macro | auc_micro | balanced_accuracy | accuracy`` of class codes ``(n,)`` and
    probabilities ``(n, K)`` for each row of frequency weights, as
    :func:`~histoviz.evaluation.classification.classification_metrics` computes them."""
    w = np.atleast_2d(np.asarray(weights, np.float64))
    y = np.asarray(codes, np.int64)
    p = np.asarray(proba, np.float64)
    k = p.shape[1]
    if metric == "auc_macro":
        per = []
        for j in range(k):
            pos = y == j
            if pos.all() or not pos.any():
                continue
            per.append(weighted_auc(w, pos, p[:, j]))
        if not per:
            return np.full(len(w), np.nan)
        with np.errstate(invalid="ignore"):
            return np.nanmean(np.stack(per), axis=0) if len(per) > 1 else per[0]
    if metric == "auc_micro":
        onehot = np.zeros((len(y), k), bool)
        onehot[np.arange(len(y)), y] = True
        wf = np.repeat(w, k, axis=1)  # cell (i, c) carries patient i's weight
        return weighted_auc(wf, onehot.ravel(), p.ravel())
    pred = np.argmax(p, axis=1)
    right = (pred == y).astype(np.float64)
    if metric == "accuracy":
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ right) / w.sum(axis=1)
    if metric == "balanced_accuracy":
        recalls = []
        for j in range(k):
            sel = (y == j).astype(np.float64)
            tot = w @ sel
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls.append(np.where(tot > 0, (w @ (sel * right)) / tot, np.nan))
        rec = np.stack(recalls)
        present = np.isfinite(rec).sum(axis=0)
        with np.errstate(invalid="ignore"):
            out = np.nanmean(rec, axis=0)
        return np.where(present > 1, out, np.nan)  # one class only: undefined, as histoviz reports it
    raise DataError(f"no patient bootstrap for classification metric {metric!r}; "
                    f"use one of {', '.join(BOOTSTRAP_METRICS[TaskKind.CLASSIFICATION])}")


# ------------------------------------------------------------------------------------------------
# the comparison
# ------------------------------------------------------------------------------------------------
@dataclass
class PairedComparison:
    """A paired comparison of runs ``a`` and ``b`` on one task (see the module docstring).

    Attributes
    ----------
    run_a, run_b
        Run labels.
    task, kind, metric
        The block (``gene``, ``grade``), its task kind and the metric compared.
    mean_a, mean_b, difference
        Means (over targets of fold-averaged values; outcomes: over folds) and ``a - b``.
    ci_low, ci_high, confidence, interval_method
        The verdict's interval (the corrected resampled t interval of the per-fold differences;
        NaN when it cannot be computed) and a phrase naming it.
    corrected_p, df, test_train_ratio
        Two-sided p of the corrected resampled t test, its degrees of freedom and the
        ``n_test / n_train`` ratio of its correction.
    boot_low, boot_high, n_boot, boot_method
        Patient-bootstrap percentile interval (models held fixed: test-set variance only),
        replicates, and what was resampled.
    win_rate, wins, n_units, unit
        Fraction of folds (ties 1/2) in which ``a`` beats ``b``; ``unit`` is ``fold`` or
        ``repeat x fold``.
    wilcoxon_statistic, wilcoxon_p, wilcoxon_n, wilcoxon_over
        ``scipy.stats.wilcoxon`` of the paired differences over ``targets`` or ``folds``
        (exploratory; see the module docstring).
    n_targets, only_a, only_b
        Targets compared (both runs predict them) and those only one run has.
    verdict
        ``"within noise"``, ``"<run> better"`` or ``"undetermined"``.
    notes
        Plain sentences about anything a reader must know (different targets, no held-out
        predictions).
    per_unit, per_target
        Tables behind the numbers (per fold; per target, fold-averaged).
    """

    run_a: str
    run_b: str
    task: str
    kind: str
    metric: str
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    confidence: float = 0.95
    n_boot: int = 0
    interval_method: str = ""
    corrected_p: float = float("nan")
    df: int = 0
    test_train_ratio: float = float("nan")
    boot_low: float = float("nan")
    boot_high: float = float("nan")
    boot_method: str = ""
    win_rate: float = float("nan")
    wins: float = 0.0
    n_units: int = 0
    unit: str = "fold"
    wilcoxon_statistic: float = float("nan")
    wilcoxon_p: float = float("nan")
    wilcoxon_n: int = 0
    wilcoxon_over: str = "targets"
    n_targets: int = 0
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    verdict: str = "undetermined"
    notes: list[str] = field(default_factory=list)
    per_unit: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_target: pd.DataFrame = field(default_factory=pd.DataFrame)

    def row(self) -> dict[str, Any]:
        """The headline numbers as one flat dict (a table row; JSON-able)."""
        keys = ("run_a", "run_b", "task", "kind", "metric", "n_targets", "n_units", "mean_a", "mean_b",
                "difference", "ci_low", "ci_high", "confidence", "interval_method", "corrected_p", "df",
                "test_train_ratio", "boot_low", "boot_high", "n_boot", "boot_method", "win_rate",
                "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_n", "wilcoxon_over", "verdict")
        return {k: getattr(self, k) for k in keys}

    def lines(self) -> list[str]:
        """Plain-text report (``histoviz compare``)."""
        what = "per target, averaged over folds" if self.kind == TaskKind.REGRESSION else "per fold, averaged"
        head = (f"{self.task} ({self.kind}): {self.metric} {what}; {self.n_units} {self.unit}s"
                + (f", {self.n_targets} targets" if self.kind == TaskKind.REGRESSION else ""))
        w = max(len(self.run_a), len(self.run_b))
        out = [head, f"  {self.run_a:<{w}}  {_f(self.mean_a)}", f"  {self.run_b:<{w}}  {_f(self.mean_b)}"]
        ci = (f"{self.confidence:.0%} CI [{_f(self.ci_low, True)}, {_f(self.ci_high, True)}]"
              if np.isfinite(self.ci_low) else "no interval")
        out.append(f"  {self.run_a} - {self.run_b} = {_f(self.difference, True)}  {ci}"
                   + (f"  ({self.interval_method}" + (f"; p = {self.corrected_p:.3g}" if np.isfinite(self.corrected_p)
                                                      else "") + ")" if self.interval_method else ""))
        if np.isfinite(self.boot_low):
            out.append(f"  patient bootstrap, models held fixed (test-set variance only; not the verdict): "
                       f"{self.confidence:.0%} CI [{_f(self.boot_low, True)}, {_f(self.boot_high, True)}] "
                       f"({self.boot_method}, {self.n_boot} resamples)")
        out.append(f"  fold win rate: {self.run_a} better in {self.wins:g} of {self.n_units} {self.unit}s "
                   f"({_f(self.win_rate)})")
        if np.isfinite(self.wilcoxon_p):
            why = ("targets are correlated, p is optimistic" if self.wilcoxon_over == "targets"
                   else "folds share training patients")
            out.append(f"  Wilcoxon signed-rank over {self.wilcoxon_n} {self.wilcoxon_over} (exploratory: {why}): "
                       f"W = {self.wilcoxon_statistic:g}, p = {self.wilcoxon_p:.3g}")
        out.append(f"  verdict: {self.verdict}" + (" (from the corrected interval)" if "corrected" in self.interval_method
                                                   else ""))
        out += [f"  note: {n}" for n in self.notes]
        return out


def _f(v: float, sign: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:+.3f}" if sign else f"{v:.3f}"


def _open(run: Any) -> Any:
    from histoviz.io.rundir import RunDir

    return run if isinstance(run, RunDir) else RunDir(run)


def _labels(ra: Any, rb: Any) -> tuple[str, str]:
    a, b = ra.name, rb.name
    if a == b:
        a, b = ra.path.name, rb.path.name
    if a == b:
        a, b = str(ra.path), str(rb.path)
    return a, b


def compare_paired(
    run_a: str | os.PathLike | Any,
    run_b: str | os.PathLike | Any,
    *,
    metric: str | None = None,
    task: str | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    labels: tuple[str, str] | None = None,
) -> list[PairedComparison]:
    """Paired comparison of two runs, one :class:`PairedComparison` per task both runs predict.

    Parameters
    ----------
    run_a, run_b
        Run directories (or :class:`~histoviz.io.rundir.RunDir`).
    metric
        ``pearson`` / ``spearman`` (regression), ``auc_macro`` / ``auc_micro`` /
        ``balanced_accuracy`` / ``accuracy`` (classification), ``c_index`` (survival);
        ``None``: each task kind's primary metric.
    task
        One block (``gene``, ``grade``, ...); ``None``: every block both runs predict whose
        kind ``metric`` applies to.
    n_boot
        Bootstrap replicates (0: no interval).
    confidence
        Interval level.
    seed
        Seed of the resampling.
    labels
        Names of the two runs in the result (default: the runs' names, or their folders when
        the names are equal).

    Raises
    ------
    DataError
        No shared task, a metric that does not fit the task, or folds that hold different
        patients in the two runs.
    """
    ra, rb = _open(run_a), _open(run_b)
    la, lb = labels if labels is not None else _labels(ra, rb)
    ma, mb = ra.metrics(), rb.metrics()
    kinds_a = _kinds(ra, ma)
    kinds_b = _kinds(rb, mb)
    shared = [t for t in kinds_a if t in kinds_b]
    if task is not None:
        if task not in kinds_a or task not in kinds_b:
            have = sorted(set(kinds_a) & set(kinds_b))
            raise DataError(f"task {task!r} is not predicted by both runs ({la}: {sorted(kinds_a)}; "
                            f"{lb}: {sorted(kinds_b)}); shared: {have or 'none'}")
        shared = [task]
    if metric is not None:
        fits = [t for t in shared if metric in BOOTSTRAP_METRICS.get(kinds_a[t], ())]
        if not fits:
            known = ", ".join(f"{k}: {'/'.join(v)}" for k, v in BOOTSTRAP_METRICS.items())
            raise DataError(f"metric {metric!r} does not apply to {', '.join(f'{t} ({kinds_a[t]})' for t in shared)}"
                            f"; metrics per task kind: {known}")
        shared = fits
    if not shared:
        raise DataError(f"{la} and {lb} share no task to compare ({la}: {sorted(kinds_a)}; {lb}: {sorted(kinds_b)})")
    out = []
    for t in shared:
        kind = kinds_a[t]
        if kinds_b[t] != kind:
            raise DataError(f"task {t!r} is {kind} in {la} but {kinds_b[t]} in {lb}")
        if metric is None and kind not in PRIMARY_METRIC:
            raise DataError(f"task {t!r} has unknown kind {kind!r}; known: {', '.join(PRIMARY_METRIC)}")
        met = metric or PRIMARY_METRIC[kind]
        args = (ra, rb, la, lb, ma, mb, t, met)
        kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
        out.append(_regression(*args, **kw) if kind == TaskKind.REGRESSION else _outcome(*args, kind=kind, **kw))
    return out


def _kinds(run: Any, m: pd.DataFrame) -> dict[str, str]:
    blocks = run.blocks
    if not blocks:
        blocks = dict(zip(m["task"].astype(str), m["kind"].astype(str))) if "kind" in m.columns else {}
    return {str(b): str(k) for b, k in blocks.items()}


def _rows(m: pd.DataFrame, task: str, metric: str, target: str | None = None) -> pd.DataFrame:
    sel = ((m["task"].astype(str) == task) & (m["metric"].astype(str) == metric)
           & (m["axis"].astype(str) == "per-target") & (m["subset"].astype(str) == "all"))
    if target is not None:
        sel &= m["target"].astype(str) == target
    d = m[sel].copy()
    d["target"] = d["target"].astype(str)
    return d


def _check_units(ma: pd.DataFrame, mb: pd.DataFrame, la: str, lb: str) -> list[str]:
    ua, ub = unit_columns(ma), unit_columns(mb)
    if ua != ub:
        raise DataError(f"{la} has {'repeated ' if 'repeat' in ua else ''}folds {ua}, {lb} has {ub}: "
                        "a paired comparison needs the same fold splits")
    sa = set(map(tuple, ma[ua].astype(int).to_numpy().tolist()))
    sb = set(map(tuple, mb[ub].astype(int).to_numpy().tolist()))
    if sa != sb:
        raise DataError(f"{la} and {lb} were scored on different folds ({sorted(sa)} vs {sorted(sb)}); "
                        "a paired comparison needs the same fold splits (same cohort, seed and n_folds)")
    return ua


def _unit_name(rows: pd.DataFrame, units: list[str]) -> str:
    """``"repeat x fold"`` with repeated fold splits, else ``"fold"``."""
    return "repeat x fold" if "repeat" in units and rows["repeat"].nunique() > 1 else "fold"


def _finish(pc: PairedComparison, per_unit: pd.DataFrame, units: list[str], boot: np.ndarray | None,
            method: str) -> PairedComparison:
    from histoviz.evaluation.resampled import corrected_resampled_t

    unit_diff = per_unit["difference"].to_numpy(np.float64)
    d = unit_diff[np.isfinite(unit_diff)]
    pc.n_units = int(len(unit_diff))
    pc.wins = float((d > 0).sum() + 0.5 * (d == 0).sum())
    pc.win_rate = pc.wins / len(d) if len(d) else float("nan")
    if boot is not None and np.isfinite(boot).sum() >= 20:
        lo, hi = np.nanpercentile(boot, [50 * (1 - pc.confidence), 100 - 50 * (1 - pc.confidence)])
        pc.boot_low, pc.boot_high = float(lo), float(hi)
        pc.n_boot = int(np.isfinite(boot).sum())
        pc.boot_method = method
    n_test = per_unit["n_patients"].to_numpy(np.float64)
    # training patients of a fold: the rest of its repeat's cross-validated patients
    n_all = (per_unit.groupby("repeat")["n_patients"].transform("sum").to_numpy(np.float64) if "repeat" in units
             else np.full(len(per_unit), n_test.sum()))
    if len(d) >= 2 and (n_all - n_test > 0).all():
        ci = corrected_resampled_t(unit_diff, n_test=n_test, n_train=n_all - n_test, confidence=pc.confidence)
        pc.ci_low, pc.ci_high, pc.corrected_p, pc.df = ci.low, ci.high, ci.p, ci.df
        pc.test_train_ratio = ci.ratio
        pc.interval_method = ci.method.replace(" folds", f" {pc.unit}s")
    elif np.isfinite(pc.boot_low):
        pc.ci_low, pc.ci_high, pc.interval_method = pc.boot_low, pc.boot_high, f"{method} (fewer than 2 folds)"
    if np.isfinite(pc.ci_low):
        if pc.ci_low <= 0 <= pc.ci_high:
            pc.verdict = "within noise"
        else:
            pc.verdict = f"{pc.run_a if pc.ci_low > 0 else pc.run_b} better"
    return pc


def _wilcoxon(d: np.ndarray) -> tuple[float, float, int]:
    from scipy.stats import wilcoxon

    d = np.asarray(d, np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2 or not np.any(d != 0):
        return float("nan"), float("nan"), int(len(d))
    res = wilcoxon(d)
    return float(res.statistic), float(res.pvalue), int(len(d))


def _groups(h: pd.DataFrame, units: list[str]) -> dict[tuple[int, ...], pd.DataFrame]:
    out = {}
    for k, g in h.groupby(units, sort=True):
        out[tuple(int(v) for v in (k if isinstance(k, tuple) else (k,)))] = g
    return out


def _multinomial(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


# ---- regression --------------------------------------------------------------------------------
def _wide(h: pd.DataFrame, patients: Sequence[str], targets: Sequence[str], col: str) -> np.ndarray:
    pi = pd.Index(patients).get_indexer(h["patient_id"].astype(str))
    ti = pd.Index(targets).get_indexer(h["target"].astype(str))
    keep = (pi >= 0) & (ti >= 0)
    out = np.full((len(patients), len(targets)), np.nan)
    out[pi[keep], ti[keep]] = h[col].to_numpy(np.float64)[keep]
    return out


def _regression(ra: Any, rb: Any, la: str, lb: str, ma: pd.DataFrame, mb: pd.DataFrame, task: str, metric: str, *,
                n_boot: int, confidence: float, seed: int) -> PairedComparison:
    a, b = _rows(ma, task, metric), _rows(mb, task, metric)
    if a.empty or b.empty:
        raise DataError(f"{task}: no per-target {metric} rows in {la if a.empty else lb}")
    units = _check_units(a, b, la, lb)
    ta, tb = set(a["target"]), set(b["target"])
    common = sorted(ta & tb)
    if not common:
        raise DataError(f"{task}: {la} and {lb} share no target (e.g. {sorted(ta)[:3]} vs {sorted(tb)[:3]})")
    notes = []
    only_a, only_b = sorted(ta - tb), sorted(tb - ta)
    if only_a or only_b:
        notes.append(f"compared on the {len(common)} {task} targets both runs predict "
                     f"({len(only_a)} only in {la}, {len(only_b)} only in {lb})")
    key = [*units, "target"]
    j = a[[*key, "value"]].merge(b[[*key, "value"]], on=key, suffixes=("_a", "_b"))
    j["difference"] = j["value_a"] - j["value_b"]
    per_target = j.groupby("target", sort=True).agg(value_a=("value_a", "mean"), value_b=("value_b", "mean"),
                                                   difference=("difference", "mean"),
                                                   n_folds=("difference", "count")).reset_index()
    per_unit = j.groupby(units, sort=True).agg(mean_a=("value_a", "mean"), mean_b=("value_b", "mean"),
                                               n_targets=("target", "size")).reset_index()
    n_test = a.groupby(units, sort=True)["n"].max().reset_index(drop=True) if "n" in a.columns else np.nan
    per_unit.insert(len(units), "n_patients", np.asarray(n_test, np.float64))
    per_unit["difference"] = per_unit["mean_a"] - per_unit["mean_b"]
    pc = PairedComparison(la, lb, task, TaskKind.REGRESSION, metric, float(per_target["value_a"].mean()),
                          float(per_target["value_b"].mean()), float(per_target["difference"].mean()),
                          confidence=confidence, n_targets=len(common), only_a=only_a, only_b=only_b, notes=notes,
                          unit=_unit_name(a, units), wilcoxon_over="targets")
    pc.wilcoxon_statistic, pc.wilcoxon_p, pc.wilcoxon_n = _wilcoxon(per_target["difference"].to_numpy())
    rng = np.random.default_rng(seed)
    boot, method = None, ""
    ha, hb = (ra.heldout(task), rb.heldout(task)) if n_boot > 0 else (None, None)
    if n_boot > 0 and (ha is None or hb is None or ha.empty or hb.empty):
        missing = [lab for lab, h in ((la, ha), (lb, hb)) if h is None or h.empty]
        notes.append(f"{', '.join(missing)} has no held-out predictions for {task}: the patient bootstrap "
                     "resamples targets only (held-out patients not resampled)")
        d = per_target["difference"].to_numpy()
        d = d[np.isfinite(d)]
        boot = np.array([rng.choice(d, len(d)).mean() for _ in range(n_boot)]) if len(d) else None
        method = "bootstrap over targets"
    elif n_boot > 0:
        boot, n_pat = _regression_boot(ha, hb, la, lb, task, metric, units, common, per_unit, n_boot, rng)
        per_unit["n_patients"] = n_pat
        method = "bootstrap over held-out patients within folds and over targets"
    pc.per_unit, pc.per_target = per_unit, per_target
    return _finish(pc, per_unit, units, boot, method)


def _regression_boot(ha: pd.DataFrame, hb: pd.DataFrame, la: str, lb: str, task: str, metric: str, units: list[str],
                     targets: list[str], per_unit: pd.DataFrame, n_boot: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    corr = weighted_pearson if metric == "pearson" else weighted_spearman
    if "task" in ha.columns:
        ha = ha[ha["task"].astype(str) == task]
    if "task" in hb.columns:
        hb = hb[hb["task"].astype(str) == task]
    m = len(targets)
    total = np.zeros((n_boot, m))
    count = np.zeros((n_boot, m))
    n_pat = []
    ga, gb = _groups(ha, units), _groups(hb, units)
    for u in per_unit[units].itertuples(index=False):
        k = tuple(int(v) for v in u)
        if k not in ga or k not in gb:
            raise DataError(f"{task}: fold {'/'.join(map(str, k))} has no held-out predictions in {la if k not in ga else lb}")
        pa, pb = set(ga[k]["patient_id"].astype(str)), set(gb[k]["patient_id"].astype(str))
        if pa != pb:
            raise DataError(f"{task}: fold {'/'.join(map(str, k))} holds different held-out patients in {la} and {lb} "
                            f"({len(pa ^ pb)} differ); a paired comparison needs the same fold splits")
        pats = sorted(pa)
        n_pat.append(len(pats))
        ya, pa_ = _wide(ga[k], pats, targets, "y_true"), _wide(ga[k], pats, targets, "y_pred")
        yb, pb_ = _wide(gb[k], pats, targets, "y_true"), _wide(gb[k], pats, targets, "y_pred")
        step = max(1, _CHUNK_CELLS // max(1, len(pats) * m * (1 if metric == "pearson" else 4)))
        for s in range(0, n_boot, step):
            w = _multinomial(rng, len(pats), min(step, n_boot - s))
            d = corr(w, ya, pa_) - corr(w, yb, pb_)
            ok = np.isfinite(d)
            total[s:s + len(w)] += np.where(ok, d, 0.0)
            count[s:s + len(w)] += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        d = total / count  # fold-averaged per-target difference of each replicate
    ok = np.isfinite(d)
    out = np.empty(n_boot)
    step = max(1, _CHUNK_CELLS // max(1, m))
    for s in range(0, n_boot, step):
        c = _multinomial(rng, m, min(step, n_boot - s)) * ok[s:s + step]  # resample targets
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s:s + len(c)] = (c * np.where(ok[s:s + step], d[s:s + step], 0.0)).sum(axis=1) / c.sum(axis=1)
    return out, n_pat


# ---- outcomes ----------------------------------------------------------------------------------
def _outcome(ra: Any, rb: Any, la: str, lb: str, ma: pd.DataFrame, mb: pd.DataFrame, task: str, metric: str, *,
             kind: str, n_boot: int, confidence: float, seed: int) -> PairedComparison:
    target = "risk" if kind == TaskKind.SURVIVAL else "all"
    a, b = _rows(ma, task, metric, target), _rows(mb, task, metric, target)
    if a.empty or b.empty:
        raise DataError(f"{task}: no {metric} rows in {la if a.empty else lb} "
                        f"(metrics of a {kind} task: {', '.join(BOOTSTRAP_METRICS[kind])})")
    units = _check_units(a, b, la, lb)
    j = a[[*units, "value", "n"]].merge(b[[*units, "value"]], on=units, suffixes=("_a", "_b")).sort_values(units)
    j = j.rename(columns={"value_a": "mean_a", "value_b": "mean_b", "n": "n_patients"})
    j["difference"] = j["mean_a"] - j["mean_b"]
    per_unit = j[[*units, "n_patients", "mean_a", "mean_b", "difference"]].reset_index(drop=True)
    pc = PairedComparison(la, lb, task, kind, metric, float(j["mean_a"].mean()), float(j["mean_b"].mean()),
                          float(j["difference"].mean()), confidence=confidence, n_targets=1,
                          unit=_unit_name(a, units), wilcoxon_over="folds",
                          per_unit=per_unit)
    pc.wilcoxon_statistic, pc.wilcoxon_p, pc.wilcoxon_n = _wilcoxon(j["difference"].to_numpy())
    boot = None
    if n_boot > 0:
        ha, hb = ra.heldout(task), rb.heldout(task)
        if ha is None or hb is None or ha.empty or hb.empty:
            missing = [lab for lab, h in ((la, ha), (lb, hb)) if h is None or h.empty]
            pc.notes.append(f"{', '.join(missing)} has no held-out predictions for {task}: no patient "
                                    "bootstrap")
        elif metric not in BOOTSTRAP_METRICS[kind]:
            pc.notes.append(f"no patient bootstrap for {metric}; bootstrapped metrics: "
                            f"{', '.join(BOOTSTRAP_METRICS[kind])}")
        else:
            boot = _outcome_boot(ha, hb, la, lb, task, kind, metric, units, per_unit, n_boot,
                                 np.random.default_rng(seed))
    return _finish(pc, per_unit, units, boot,
                   "bootstrap over held-out patients within folds (metric recomputed per fold)")


def _outcome_metric(kind: str, metric: str, w: np.ndarray, h: pd.DataFrame) -> np.ndarray:
    if kind == TaskKind.SURVIVAL:
        return weighted_c_index(w, h["time"].to_numpy(), h["risk"].to_numpy(), h["event"].to_numpy())
    classes = [c[2:] for c in h.columns if c.startswith("p_")]
    codes = pd.Index(classes).get_indexer(h["y_true"].astype(str))
    if (codes < 0).any():
        raise DataError(f"held-out classes {sorted(set(h['y_true'].astype(str)) - set(classes))} have no "
                        "probability column")
    return weighted_class_metric(w, codes, h[[f"p_{c}" for c in classes]].to_numpy(np.float64), metric)


def _outcome_boot(ha: pd.DataFrame, hb: pd.DataFrame, la: str, lb: str, task: str, kind: str, metric: str,
                  units: list[str], per_unit: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    total = np.zeros(n_boot)
    count = np.zeros(n_boot)
    ga, gb = _groups(ha, units), _groups(hb, units)
    for u in per_unit[units].itertuples(index=False):
        k = tuple(int(v) for v in u)
        if k not in ga or k not in gb:
            raise DataError(f"{task}: fold {'/'.join(map(str, k))} has no held-out predictions in {la if k not in ga else lb}")
        xa = ga[k].assign(patient_id=ga[k]["patient_id"].astype(str)).set_index("patient_id")
        xb = gb[k].assign(patient_id=gb[k]["patient_id"].astype(str)).set_index("patient_id")
        if set(xa.index) != set(xb.index):
            raise DataError(f"{task}: fold {'/'.join(map(str, k))} holds different held-out patients in {la} and {lb} "
                            f"({len(set(xa.index) ^ set(xb.index))} differ); a paired comparison needs the same "
                            "fold splits")
        xb = xb.loc[xa.index]
        w = _multinomial(rng, len(xa), n_boot)
        d = _outcome_metric(kind, metric, w, xa) - _outcome_metric(kind, metric, w, xb)
        ok = np.isfinite(d)
        total += np.where(ok, d, 0.0)
        count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count == len(per_unit), total / np.maximum(count, 1), np.nan)
