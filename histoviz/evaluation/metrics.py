"""Evaluation metrics shared by every model family.

All correlations are computed **per target across samples** (one value per gene, protein,
miRNA or pathway: "across held-out patients") unless a function says otherwise;
:func:`per_sample_correlation` is the per-patient view (one value per patient, across
targets). Nothing here pools samples from different folds silently: callers pass one fold's
held-out predictions, or say ``pooled`` explicitly in what they report.

Conventions
-----------
- Missing values (``NaN``) in ``y_true`` are dropped pairwise, per column.
- A correlation is ``NaN`` when fewer than ``min_n`` pairs remain or either side is constant
  (scipy would warn and return ``NaN`` too); summaries use ``nanmean`` and report how many
  targets were undefined.
- Spearman = Pearson of average ranks (ties get the mean rank), as ``scipy.stats.spearmanr``.

Target selection for top-k summaries (:func:`select_topk`) takes **training** values only;
the optimistic "k best predicted" view (:func:`topk_best_predicted`) selects on the very
correlations it reports and is labelled as such wherever it is shown.

Examples
--------
>>> import numpy as np
>>> y = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0]])
>>> per_target_correlation(y, y)["pearson"].round(3).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from histoviz.task_kinds import TaskKind

__all__ = [
    "OPTIMISTIC_LABEL",
    "PRIMARY_METRIC",
    "columnwise_pearson",
    "columnwise_spearman",
    "per_sample_correlation",
    "per_target_correlation",
    "rankdata_columns",
    "select_topk",
    "summarise_over_folds",
    "topk_best_predicted",
]

OPTIMISTIC_LABEL = "best-predicted (optimistic: selected on test correlation)"
"""Label used for every summary over the k best-predicted targets (the papers' view)."""

PRIMARY_METRIC = {TaskKind.REGRESSION: "pearson", TaskKind.CLASSIFICATION: "auc_macro", TaskKind.SURVIVAL: "c_index"}
"""The headline metric of each task kind (``Task.primary`` in :mod:`histoviz.tasks` reads it)."""


def _as_2d(a: np.ndarray | Sequence) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"expected a (samples, targets) array, got shape {a.shape}")
    return a


def _pearson_dense(x: np.ndarray, y: np.ndarray, min_n: int) -> np.ndarray:
    """Pearson per column of two complete (no NaN) matrices."""
    n = x.shape[0]
    out = np.full(x.shape[1], np.nan)
    if n < max(min_n, 2):
        return out
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    sxx = np.einsum("ij,ij->j", xc, xc)
    syy = np.einsum("ij,ij->j", yc, yc)
    sxy = np.einsum("ij,ij->j", xc, yc)
    scale_x = np.maximum(np.abs(x).max(axis=0), 1e-300) ** 2 * n
    scale_y = np.maximum(np.abs(y).max(axis=0), 1e-300) ** 2 * n
    ok = (sxx > 1e-24 * scale_x) & (syy > 1e-24 * scale_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    out[ok] = np.clip(r[ok], -1.0, 1.0)
    return out


def columnwise_pearson(y_true: np.ndarray, y_pred: np.ndarray, *, min_n: int = 3) -> np.ndarray:
    """Pearson correlation of each column of ``y_true`` with the same column of ``y_pred``.

    Parameters
    ----------
    y_true, y_pred
        ``(n_samples, n_targets)`` arrays (1-D arrays are one target). ``NaN`` entries are
        dropped pairwise per column.
    min_n
        Minimum number of complete pairs for a defined correlation.

    Returns
    -------
    ``(n_targets,)`` float64; ``NaN`` where undefined (too few pairs, constant column).
    """
    x, y = _as_2d(y_true), _as_2d(y_pred)
    if x.shape != y.shape:
        raise ValueError(f"y_true {x.shape} and y_pred {y.shape} differ in shape")
    bad = np.isnan(x) | np.isnan(y)
    if not bad.any():
        return _pearson_dense(x, y, min_n)
    out = np.full(x.shape[1], np.nan)
    # columns sharing one missingness pattern (whole missing patients) go together
    patterns: dict[bytes, list[int]] = {}
    for j in range(x.shape[1]):
        patterns.setdefault(np.packbits(bad[:, j]).tobytes(), []).append(j)
    for cols in patterns.values():
        keep = ~bad[:, cols[0]]
        out[cols] = _pearson_dense(x[keep][:, cols], y[keep][:, cols], min_n)
    return out


def rankdata_columns(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of each column; ``NaN`` stays ``NaN``."""
    from scipy.stats import rankdata

    a = _as_2d(a)
    if not np.isnan(a).any():
        return rankdata(a, axis=0, method="average")
    out = np.full(a.shape, np.nan)
    for j in range(a.shape[1]):
        ok = ~np.isnan(a[:, j])
        out[ok, j] = rankdata(a[ok, j], method="average")
    return out


def columnwise_spearman(y_true: np.ndarray, y_pred: np.ndarray, *, min_n: int = 3) -> np.ndarray:
    """Spearman correlation per column (Pearson of average ranks; NaN pairs dropped first)."""
    x, y = _as_2d(y_true), _as_2d(y_pred)
    if x.shape != y.shape:
        raise ValueError(f"y_true {x.shape} and y_pred {y.shape} differ in shape")
    bad = np.isnan(x) | np.isnan(y)
    if not bad.any():
        return _pearson_dense(rankdata_columns(x), rankdata_columns(y), min_n)
    out = np.full(x.shape[1], np.nan)
    patterns: dict[bytes, list[int]] = {}
    for j in range(x.shape[1]):
        patterns.setdefault(np.packbits(bad[:, j]).tobytes(), []).append(j)
    for cols in patterns.values():
        keep = ~bad[:, cols[0]]
        xs, ys = x[keep][:, cols], y[keep][:, cols]
        if len(xs) == 0:
            continue
        out[cols] = _pearson_dense(rankdata_columns(xs), rankdata_columns(ys), min_n)
    return out


def per_target_correlation(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    targets: Sequence[str] | None = None,
    min_n: int = 3,
) -> pd.DataFrame:
    """Per-target Pearson and Spearman correlation across samples.

    Parameters
    ----------
    y_true, y_pred
        ``(n_samples, n_targets)``; ``NaN`` in either is dropped pairwise per target.
    targets
        Target names (default ``t0, t1, ...``).
    min_n
        Minimum number of samples for a defined correlation.

    Returns
    -------
    DataFrame with columns ``target, pearson, spearman, n`` (``n`` = samples used).
    """
    x, y = _as_2d(y_true), _as_2d(y_pred)
    if targets is None:
        targets = [f"t{j}" for j in range(x.shape[1])]
    if len(targets) != x.shape[1]:
        raise ValueError(f"{len(targets)} target names for {x.shape[1]} columns")
    n = (~(np.isnan(x) | np.isnan(y))).sum(axis=0)
    return pd.DataFrame(
        {
            "target": [str(t) for t in targets],
            "pearson": columnwise_pearson(x, y, min_n=min_n),
            "spearman": columnwise_spearman(x, y, min_n=min_n),
            "n": n.astype(np.int64),
        }
    )


def per_sample_correlation(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    samples: Sequence[str] | None = None,
    center: np.ndarray | None = None,
    min_n: int = 3,
) -> pd.DataFrame:
    """Per-sample (per-patient) correlation across targets.

    The paper's patient-level view correlates a patient's predicted and measured profile
    across targets; that number is dominated by differences between target means (a model
    that predicts the training mean for everyone scores high). Pass ``center`` (the
    per-target **training** mean) to also get the centred version, which only rewards
    getting the patient's deviation from the average right.

    Parameters
    ----------
    y_true, y_pred
        ``(n_samples, n_targets)``.
    samples
        Sample names (default ``s0, s1, ...``).
    center
        ``(n_targets,)`` values subtracted from both sides for ``pearson_centered``.
    min_n
        Minimum number of targets for a defined correlation.

    Returns
    -------
    DataFrame with ``sample, pearson, spearman, n_targets`` (+ ``pearson_centered`` when
    ``center`` is given).
    """
    x, y = _as_2d(y_true), _as_2d(y_pred)
    if samples is None:
        samples = [f"s{i}" for i in range(x.shape[0])]
    df = pd.DataFrame(
        {
            "sample": [str(s) for s in samples],
            "pearson": columnwise_pearson(x.T, y.T, min_n=min_n),
            "spearman": columnwise_spearman(x.T, y.T, min_n=min_n),
            "n_targets": (~(np.isnan(x) | np.isnan(y))).sum(axis=1).astype(np.int64),
        }
    )
    if center is not None:
        c = np.asarray(center, dtype=np.float64)[None, :]
        df["pearson_centered"] = columnwise_pearson((x - c).T, (y - c).T, min_n=min_n)
    return df


def select_topk(
    train_values: np.ndarray,
    k: int,
    *,
    criterion: str = "variance",
    targets: Sequence[str] | None = None,
) -> np.ndarray:
    """Indices (or names) of the ``k`` targets with the largest mean or variance.

    Call it with **training** values only; it never sees predictions or test data, so a
    top-k summary built on it is an honest one (unlike :func:`topk_best_predicted`).

    Parameters
    ----------
    train_values
        ``(n_train_samples, n_targets)``; ``NaN`` ignored.
    k
        Number of targets (all of them if fewer).
    criterion
        ``"variance"`` (highly variable targets) or ``"mean"`` (highly expressed).
    targets
        When given, return names instead of indices.

    Returns
    -------
    Indices sorted by decreasing criterion (ties broken by index), or the names.
    """
    x = _as_2d(train_values)
    if criterion == "variance":
        score = np.nanvar(x, axis=0) if len(x) > 1 else np.zeros(x.shape[1])
    elif criterion == "mean":
        score = np.nanmean(x, axis=0)
    else:
        raise ValueError(f"unknown top-k criterion {criterion!r}; use 'variance' or 'mean'")
    score = np.where(np.isnan(score), -np.inf, score)
    order = np.lexsort((np.arange(len(score)), -score))[: int(k)]
    if targets is not None:
        return np.asarray([targets[i] for i in order])
    return order


def topk_best_predicted(correlations: pd.Series | np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` targets with the highest correlation: the papers' "top-k" view.

    This selects targets **on the test correlations themselves** and is therefore
    optimistic (label it with :data:`OPTIMISTIC_LABEL`). Undefined (``NaN``) correlations
    are never selected.
    """
    r = np.asarray(correlations, dtype=np.float64)
    r = np.where(np.isnan(r), -np.inf, r)
    order = np.lexsort((np.arange(len(r)), -r))
    order = order[np.isfinite(r[order])]
    return order[: int(k)]


def summarise_over_folds(values: pd.DataFrame, *, by: Sequence[str], value: str) -> pd.DataFrame:
    """Mean over targets within each fold, then mean and std over folds.

    Parameters
    ----------
    values
        Long table with a ``fold`` column, the ``by`` columns and ``value``.
    by
        Grouping columns (e.g. ``["model", "modality"]``).
    value
        Column to summarise (e.g. ``"pearson"``).

    Returns
    -------
    DataFrame with ``by`` + ``mean, std, n_folds, n_targets, n_undefined`` where ``std`` is
    across folds (ddof=1; ``NaN`` with one fold) and ``n_targets`` is the mean number of
    targets per fold.
    """
    by = list(by)
    per_fold = (
        values.groupby([*by, "fold"], observed=True)[value]
        .agg(fold_mean="mean", n_targets="size", n_defined="count")
        .reset_index()
    )
    per_fold["n_undefined"] = per_fold["n_targets"] - per_fold["n_defined"]
    out = (
        per_fold.groupby(by, observed=True)
        .agg(
            mean=("fold_mean", "mean"),
            std=("fold_mean", "std"),
            n_folds=("fold_mean", "size"),
            n_targets=("n_targets", "mean"),
            n_undefined=("n_undefined", "sum"),
        )
        .reset_index()
    )
    return out
