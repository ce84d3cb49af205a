"""The cohort explorer: genes across patients, measured beside predicted, and two groups compared.

What a cBioPortal user expects, over one run's held-out predictions (every patient predicted by
the fold model that did not train on them):

- :func:`gene_universe`: the genes to query (completion);
- :func:`patient_matrix`: patients x genes of measured (``y_true``) or predicted (``y_pred``)
  values, on the scale the run fitted (training-fold standardised); :func:`cluster_order`
  orders patients and genes by average-linkage clustering on correlation distance;
- :func:`clinical_columns` / :func:`apply_filters`: filters on any cohort column (ranges for
  numbers, values for categories);
- :func:`define_groups`: predicted-high vs predicted-low for a gene (median of the filtered
  patients), or two values of a clinical column;
- :func:`compare_groups`: Kaplan-Meier curves and the log-rank test (lifelines) of the two
  groups, and :func:`differential_expression`: Welch's t-test per gene on the predicted values,
  p-values adjusted by Benjamini-Hochberg.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

__all__ = [
    "GroupComparison",
    "apply_filters",
    "clinical_columns",
    "cluster_order",
    "compare_groups",
    "define_groups",
    "differential_expression",
    "gene_universe",
    "patient_matrix",
    "patient_table",
]

#: Cohort columns that are identifiers, not attributes to filter on.
ID_COLUMNS = ("slide_id", "patient_id", "path")
_MAX_CATEGORIES = 30


def first_repeat(heldout: pd.DataFrame, n_folds: int | None) -> pd.DataFrame:
    """The held-out rows of the first repeat (each patient once); fold ids run on across repeats."""
    if n_folds and "fold" in heldout.columns:
        return heldout[heldout["fold"] < n_folds]
    return heldout


def gene_universe(heldout: pd.DataFrame) -> list[str]:
    """The genes a run predicts (its held-out targets), sorted."""
    return sorted(str(t) for t in pd.unique(heldout["target"].astype(str)))


def patient_matrix(heldout: pd.DataFrame, genes: Sequence[str] | None = None, *, value: str = "y_pred",
                   patients: Sequence[str] | None = None, n_folds: int | None = None) -> pd.DataFrame:
    """Patients x genes of one held-out column.

    Parameters
    ----------
    heldout
        A regression block's held-out table (``patient_id, target, y_true, y_pred, fold``).
    genes
        Columns to keep, in this order (default: all).
    value
        ``y_pred`` (predicted) or ``y_true`` (measured).
    patients
        Rows to keep, in this order (default: all, sorted).
    n_folds
        Folds per repeat: only the first repeat is used (each patient once).
    """
    if value not in ("y_pred", "y_true"):
        raise DataError(f"patient_matrix: value must be y_pred or y_true, got {value!r}")
    h = first_repeat(heldout, n_folds)
    h = h.assign(patient_id=h["patient_id"].astype(str), target=h["target"].astype(str))
    if genes is not None:
        h = h[h["target"].isin([str(g) for g in genes])]
    m = h.pivot_table(index="patient_id", columns="target", values=value, aggfunc="mean", observed=True)
    m.columns = m.columns.astype(str)
    if genes is not None:
        m = m.reindex(columns=[str(g) for g in genes if str(g) in set(m.columns)])
    m = m.reindex(index=[str(p) for p in patients]) if patients is not None else m.sort_index()
    m.index.name, m.columns.name = "patient_id", None
    return m


def _order(x: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import pdist

    if len(x) < 3:
        return np.arange(len(x))
    d = np.nan_to_num(pdist(x, metric="correlation"), nan=1.0)  # constant rows: as far as uncorrelated
    return leaves_list(linkage(np.clip(d, 0.0, 2.0), method="average"))


def cluster_order(matrix: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Patients and genes ordered by average-linkage hierarchical clustering on correlation
    distance (missing values as the gene's mean); fewer than three of either keep their order."""
    x = matrix.to_numpy(np.float64)
    if x.size == 0:
        return list(matrix.index), list(matrix.columns)
    with warnings.catch_warnings():  # an all-missing gene: mean of an empty slice
        warnings.simplefilter("ignore", RuntimeWarning)
        col_mean = np.where(np.isfinite(x).any(axis=0), np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0), 0.0)
    x = np.where(np.isfinite(x), x, col_mean)
    rows = _order(x) if x.shape[1] > 1 else np.argsort(x[:, 0], kind="stable")
    cols = _order(x.T) if x.shape[0] > 1 else np.arange(x.shape[1])
    return [matrix.index[i] for i in rows], [matrix.columns[j] for j in cols]


def patient_table(cohort: pd.DataFrame) -> pd.DataFrame:
    """One row per patient (the first slide's values; ``n_slides`` added), indexed by patient."""
    d = cohort.copy()
    d["patient_id"] = d["patient_id"].astype(str)
    n = d.groupby("patient_id").size()
    first = d.drop_duplicates("patient_id").set_index("patient_id")
    first["n_slides"] = n.reindex(first.index).to_numpy()
    return first.drop(columns=[c for c in ("slide_id", "path") if c in first.columns])


def clinical_columns(patients: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The attributes one can filter on: ``column -> {"kind": "numeric", "min", "max"}`` or
    ``{"kind": "categorical", "values": [...]}`` (at most 30 values; identifiers and
    constant columns left out)."""
    out: dict[str, dict[str, Any]] = {}
    for col in patients.columns:
        if col in ID_COLUMNS:
            continue
        s = patients[col]
        num = pd.to_numeric(s, errors="coerce")
        vals = s.dropna().unique()
        if len(vals) < 2:
            continue
        if num.notna().sum() == s.notna().sum() and len(vals) > 12:
            out[str(col)] = {"kind": "numeric", "min": float(num.min()), "max": float(num.max())}
        elif len(vals) <= _MAX_CATEGORIES:
            out[str(col)] = {"kind": "categorical", "values": sorted((str(v) for v in vals),
                                                                      key=lambda v: (_num_key(v), v))}
    return out


def _num_key(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("inf")


def apply_filters(patients: pd.DataFrame, filters: Mapping[str, Any]) -> pd.DataFrame:
    """Patients that pass every filter: ``column -> (low, high)`` (numbers, inclusive) or
    ``column -> [values]`` (categories, compared as text); an empty filter keeps everyone."""
    keep = np.ones(len(patients), bool)
    for col, f in filters.items():
        if col not in patients.columns or f is None:
            continue
        if isinstance(f, tuple) and len(f) == 2:
            v = pd.to_numeric(patients[col], errors="coerce").to_numpy(float)
            keep &= (v >= float(f[0])) & (v <= float(f[1]))
        elif len(f):
            keep &= patients[col].map(lambda x: str(int(x)) if isinstance(x, float) and x.is_integer()
                                      else str(x)).isin([str(v) for v in f]).to_numpy()
    return patients[keep]


def define_groups(patients: Sequence[str], *, predicted: pd.DataFrame | None = None, gene: str | None = None,
                  clinical: pd.DataFrame | None = None, column: str | None = None,
                  values: tuple[Any, Any] | None = None) -> tuple[pd.Series, str]:
    """Two groups of patients.

    Either predicted-high vs predicted-low for ``gene`` (above / at-or-below the median of the
    given patients' predicted values: ``predicted`` is :func:`patient_matrix` of ``y_pred``), or
    two values of a clinical ``column`` (``values = (A, B)``).

    Returns
    -------
    ``(groups, description)``: a Series patient -> ``"A: ..."``/``"B: ..."`` (patients in
    neither are left out) and a sentence saying how the groups were made.
    """
    pats = [str(p) for p in patients]
    if gene is not None:
        if predicted is None or gene not in predicted.columns:
            raise DataError(f"{gene}: no predicted values for it in this run")
        v = predicted.reindex(pats)[gene]
        v = v[v.notna()]
        if len(v) < 4:
            raise DataError(f"{gene}: fewer than 4 patients with a prediction; widen the filters")
        med = float(v.median())
        g = pd.Series(np.where(v > med, f"high {gene}", f"low {gene}"), index=v.index)
        return g, (f"predicted {gene} above (high) or at-or-below (low) its median {med:.3g} over the "
                   f"{len(v)} patients shown")
    if column is not None and clinical is not None and values is not None:
        a, b = (str(x) for x in values)
        if a == b:
            raise DataError(f"{column}: pick two different values")
        s = clinical.reindex(pats)[column].map(lambda x: str(int(x)) if isinstance(x, float) and x.is_integer()
                                               else str(x))
        s = s[s.isin([a, b])]
        return s.map({a: f"{column} {a}", b: f"{column} {b}"}), f"{column} = {a} vs {column} = {b}"
    raise DataError("define the groups by a gene or by a clinical column and two of its values")


def differential_expression(predicted: pd.DataFrame, groups: pd.Series, *, min_n: int = 3) -> pd.DataFrame:
    """Welch's t-test per gene of the predicted values between the two groups, with
    Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``).

    Returns
    -------
    DataFrame ``gene, mean_<A>, mean_<B>, difference (A - B), t, p, q, n_<A>, n_<B>`` sorted by
    ``p``; genes with fewer than ``min_n`` patients in a group or no variance get NaN and are
    left out of the adjustment.
    """
    from scipy import stats

    labels = list(dict.fromkeys(sorted(groups.unique())))
    if len(labels) != 2:
        raise DataError(f"two groups needed, got {len(labels)}")
    a, b = labels
    x = predicted.reindex(groups.index)
    xa, xb = x[groups == a].to_numpy(np.float64), x[groups == b].to_numpy(np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():  # constant or empty genes: NaN, said below
        warnings.simplefilter("ignore", RuntimeWarning)
        t, p = stats.ttest_ind(xa, xb, equal_var=False, nan_policy="omit", axis=0)
        ma, mb = np.nanmean(xa, axis=0), np.nanmean(xb, axis=0)
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    na, nb = np.isfinite(xa).sum(axis=0), np.isfinite(xb).sum(axis=0)
    bad = (na < min_n) | (nb < min_n) | ~np.isfinite(p)
    p = np.where(bad, np.nan, p)
    t = np.where(bad, np.nan, t)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    out = pd.DataFrame({"gene": list(predicted.columns), f"mean {a}": ma, f"mean {b}": mb, "difference": ma - mb,
                        "t": t, "p": p, "q": q, f"n {a}": na, f"n {b}": nb})
    return out.sort_values(["p", "gene"], na_position="last", kind="mergesort").reset_index(drop=True)


@dataclass
class GroupComparison:
    """Two groups of patients compared: survival and predicted expression."""

    groups: pd.Series
    description: str
    curves: pd.DataFrame | None
    logrank: dict[str, float] | None
    expression: pd.DataFrame
    sizes: pd.DataFrame


def compare_groups(groups: pd.Series, description: str, patients: pd.DataFrame, predicted: pd.DataFrame, *,
                   time: str = "time", event: str = "event") -> GroupComparison:
    """Kaplan-Meier curves and log-rank test of the two groups (lifelines, through
    :func:`histoviz.evaluation.survival.km_curves` / :func:`~histoviz.evaluation.survival.logrank`;
    ``None`` when the cohort has no survival) and :func:`differential_expression` of the predicted
    genes."""
    from histoviz.evaluation.survival import km_curves, logrank

    d = patients.reindex(groups.index).assign(group=groups.to_numpy())
    sizes = d.groupby("group").size().rename("patients").reset_index()
    curves = test = None
    if {time, event} <= set(d.columns) and pd.to_numeric(d[time], errors="coerce").notna().sum() >= 2:
        dd = d.reset_index()
        if "event" in dd.columns:
            ev = pd.to_numeric(dd[event], errors="coerce")
            sizes = sizes.merge(dd.assign(_e=ev).groupby("group")["_e"].sum().rename("events").reset_index(), on="group")
        curves = km_curves(dd, "group", time=time, event=event, unit=None)
        test = logrank(dd, "group", time=time, event=event, unit=None)
    de = differential_expression(predicted, groups)
    return GroupComparison(groups, description, curves, test, de, sizes)
