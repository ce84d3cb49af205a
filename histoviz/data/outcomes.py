"""Patient outcomes from the cohort table: grade (classes) and censored survival.

The cohort table (:func:`histoviz.data.cohort.read_cohort`) may carry ``grade``, ``time`` and
``event`` columns (names configurable). :func:`load_outcomes` turns them into one value per
patient, validated, as blocks the models and tasks understand:

- :class:`ClassBlock` (classification): ``codes`` into ``classes`` (``-1`` = no label);
- :class:`SurvivalBlock` (survival): ``time`` (> 0), ``event`` (1 = event, 0 = censored) and,
  once a fold's :class:`SurvivalBins` are fitted on its training patients, the discrete time
  ``bins`` of MCAT: quartiles of the *uncensored* training times, the outer edges widened to 0
  and infinity so every patient falls in a bin (MCAT widens them to the min / max over all
  patients, which assigns the same bins without looking at test times).

Every problem is a :class:`~histoviz.errors.DataError` of one line naming the file, the column
and what to do: times <= 0 or missing, events other than 0/1, grades outside the declared
classes, slides of one patient that disagree, a missing column.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import ConfigError, DataError
from histoviz.task_kinds import OUTCOME_KINDS, TaskKind

__all__ = [
    "ClassBlock",
    "GradeEncoder",
    "OutcomeSpec",
    "SurvivalBins",
    "SurvivalBlock",
    "load_outcomes",
]

@dataclass(frozen=True)
class OutcomeSpec:
    """Where an outcome is in the cohort table.

    Parameters
    ----------
    kind
        ``"classification"`` or ``"survival"`` (default from the name: ``grade`` ->
        classification, ``survival`` -> survival).
    column
        Label column (classification).
    classes
        Declared classes in order (classification); default: the sorted values present.
    time, event
        Columns of a survival outcome (time > 0, event 0/1).
    n_bins
        Discrete time bins (survival; MCAT and PathGen: 4).
    time_unit
        Unit of ``time`` for labels (default months).
    allow_missing
        Patients without a value are kept without a label (masked in the loss and metrics)
        instead of an error.
    """

    kind: TaskKind | str = ""
    column: str = "grade"
    classes: tuple[str, ...] | None = None
    time: str = "time"
    event: str = "event"
    n_bins: int = 4
    time_unit: str = "months"
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if self.kind not in OUTCOME_KINDS:
            raise ConfigError(f"outcome kind must be one of {[k.value for k in OUTCOME_KINDS]}, got {self.kind!r}")
        object.__setattr__(self, "kind", TaskKind(self.kind))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(_label(c) for c in self.classes))
            if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
                raise ConfigError(f"classes must be >= 2 distinct values, got {list(self.classes)}")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ConfigError(f"n_bins must be an integer >= 2, got {self.n_bins!r}")

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any] | None, *, where: str = "outcomes") -> OutcomeSpec:
        """Build from a config mapping; unknown keys raise :class:`ConfigError`."""
        from histoviz.strict import build_strict, strict_keys

        d = strict_keys(cls, d, f"{where}.{name}")
        if "kind" not in d:
            d["kind"] = {"grade": TaskKind.CLASSIFICATION, "survival": TaskKind.SURVIVAL}.get(name, "")
            if not d["kind"]:
                raise ConfigError(f"{where}.{name}: say kind: classification or kind: survival")
        if "column" not in d and d["kind"] == TaskKind.CLASSIFICATION:
            d["column"] = name
        if d.get("classes") is not None:
            c = d["classes"]
            d["classes"] = tuple(c) if isinstance(c, (list, tuple)) else (c,)
        return build_strict(cls, d, f"{where}.{name}")

    def columns(self) -> list[str]:
        """Cohort columns this outcome reads."""
        return [self.column] if self.kind == TaskKind.CLASSIFICATION else [self.time, self.event]


def _label(v: Any) -> str:
    """Canonical class label: integers as ``"2"`` (not ``"2.0"``), strings stripped."""
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


# ------------------------------------------------------------------------------------------------
# blocks
# ------------------------------------------------------------------------------------------------
@dataclass
class ClassBlock:
    """Class labels of a set of patients.

    Attributes
    ----------
    name
        Block (task) name, e.g. ``"grade"``.
    classes
        Class names; ``codes`` index into them.
    codes
        ``(n,)`` int64, ``-1`` where a patient has no label.
    present
        ``(n,)`` bool, ``codes >= 0``.
    """

    name: str
    classes: list[str]
    codes: np.ndarray
    present: np.ndarray = field(default=None)  # type: ignore[assignment]
    kind: TaskKind = TaskKind.CLASSIFICATION

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.present is None:
            self.present = self.codes >= 0
        self.present = np.asarray(self.present, dtype=bool) & (self.codes >= 0)
        if self.codes.ndim != 1:
            raise DataError(f"{self.name}: class codes must be 1-D")
        if (self.codes >= len(self.classes)).any():
            raise DataError(f"{self.name}: class code out of range for {len(self.classes)} classes")

    @property
    def targets(self) -> list[str]:
        """Class names (the targets of the task)."""
        return list(self.classes)

    def onehot(self) -> np.ndarray:
        """``(n, K)`` float one-hot (zeros for rows without a label)."""
        out = np.zeros((len(self.codes), len(self.classes)))
        ok = self.present
        out[np.flatnonzero(ok), self.codes[ok]] = 1.0
        return out

    def subset(self, rows: np.ndarray) -> ClassBlock:
        """Rows (patients) ``rows``."""
        rows = np.asarray(rows)
        return ClassBlock(self.name, self.classes, self.codes[rows], self.present[rows])

    def permuted(self, perm: np.ndarray) -> ClassBlock:
        """Labels reassigned by ``perm`` (shuffled-label control)."""
        return self.subset(perm)

    def __len__(self) -> int:
        return len(self.codes)


@dataclass
class SurvivalBlock:
    """Censored survival of a set of patients.

    Attributes
    ----------
    name
        Block (task) name, e.g. ``"survival"``.
    time
        ``(n,)`` float > 0 (NaN where missing).
    event
        ``(n,)`` int64 1 = event, 0 = censored (-1 where missing).
    present
        ``(n,)`` bool.
    edges
        ``(n_bins + 1,)`` bin edges (``edges[0] = 0``, ``edges[-1] = inf``) or ``None``.
    bins
        ``(n,)`` int64 bin index ``0..n_bins-1`` (-1 when missing or before binning).
    time_unit
        Unit of ``time``.
    """

    name: str
    time: np.ndarray
    event: np.ndarray
    present: np.ndarray
    edges: np.ndarray | None = None
    bins: np.ndarray | None = None
    time_unit: str = "months"
    n_bins: int = 4
    kind: TaskKind = TaskKind.SURVIVAL

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=np.float64)
        self.event = np.asarray(self.event, dtype=np.int64)
        self.present = np.asarray(self.present, dtype=bool)
        if self.edges is not None:
            self.edges = np.asarray(self.edges, dtype=np.float64)
            self.n_bins = len(self.edges) - 1
            if self.bins is None:
                self.bins = assign_bins(self.time, self.edges)
                self.bins[~self.present] = -1
        if self.bins is None:
            self.bins = np.full(len(self.time), -1, dtype=np.int64)
        self.bins = np.asarray(self.bins, dtype=np.int64)

    @property
    def targets(self) -> list[str]:
        """The one target of a survival task."""
        return ["risk"]

    def with_edges(self, edges: np.ndarray) -> SurvivalBlock:
        """The same patients with bins from ``edges``."""
        return SurvivalBlock(self.name, self.time, self.event, self.present, np.asarray(edges), None,
                             self.time_unit, len(edges) - 1)

    def subset(self, rows: np.ndarray) -> SurvivalBlock:
        """Rows (patients) ``rows``."""
        rows = np.asarray(rows)
        return SurvivalBlock(self.name, self.time[rows], self.event[rows], self.present[rows], self.edges,
                             self.bins[rows], self.time_unit, self.n_bins)

    def permuted(self, perm: np.ndarray) -> SurvivalBlock:
        """(time, event) pairs reassigned by ``perm`` (shuffled-label control)."""
        return self.subset(perm)

    def __len__(self) -> int:
        return len(self.time)


def assign_bins(time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time: ``edges[k] <= t < edges[k+1]`` (NaN -> -1)."""
    t = np.asarray(time, np.float64)
    inner = np.asarray(edges, np.float64)[1:-1]
    b = np.searchsorted(inner, np.nan_to_num(t, nan=0.0), side="right").astype(np.int64)
    b[~np.isfinite(t)] = -1
    return b


# ------------------------------------------------------------------------------------------------
# fold-fitted preprocessors (saved with every checkpoint)
# ------------------------------------------------------------------------------------------------
class GradeEncoder:
    """The classes of a classification task (fixed by the config or the whole table).

    The class list is not learned from the fold (a label set is not a statistic of the
    targets); it is kept with the checkpoint so predictions are named.
    """

    kind = TaskKind.CLASSIFICATION

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes_ = [str(c) for c in classes]

    def block(self, blk: ClassBlock) -> ClassBlock:
        """Identity (the block already uses these classes)."""
        return blk

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON metadata and arrays."""
        return {"type": "classes", "classes": list(self.classes_)}, {}

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> GradeEncoder:
        """Inverse of :meth:`to_state`."""
        return cls(meta["classes"])


class SurvivalBins:
    """Discrete time bins fitted on a fold's training patients (MCAT's quartiles).

    Parameters
    ----------
    n_bins
        Number of bins.

    Attributes
    ----------
    edges_
        ``(n_bins + 1,)``: ``0``, the ``1/n .. (n-1)/n`` quantiles of the uncensored
        training times, ``inf``.
    """

    kind = TaskKind.SURVIVAL

    def __init__(self, n_bins: int = 4, time_unit: str = "months") -> None:
        self.n_bins = int(n_bins)
        self.time_unit = time_unit

    def fit(self, blk: SurvivalBlock) -> SurvivalBins:
        """Quantiles of the uncensored training times (all times when fewer than ``n_bins``
        patients had an event).

        Raises
        ------
        DataError
            No training patient with a survival label.
        """
        ok = blk.present & np.isfinite(blk.time)
        if not ok.any():
            raise DataError(f"{blk.name}: no training patient has a survival time")
        t = blk.time[ok & (blk.event == 1)]
        if len(t) < self.n_bins:
            t = blk.time[ok]
        q = np.quantile(t, np.arange(1, self.n_bins) / self.n_bins)
        q = np.maximum.accumulate(q)
        self.edges_ = np.concatenate([[0.0], q, [np.inf]])
        return self

    def block(self, blk: SurvivalBlock) -> SurvivalBlock:
        """``blk`` with this fold's bins."""
        return blk.with_edges(self.edges_)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON metadata and arrays (edges; ``inf`` is written as a large number)."""
        e = np.where(np.isfinite(self.edges_), self.edges_, np.finfo(np.float64).max)
        return {"type": "survival_bins", "n_bins": self.n_bins, "time_unit": self.time_unit}, {"edges": e}

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> SurvivalBins:
        """Inverse of :meth:`to_state`."""
        b = cls(int(meta["n_bins"]), meta.get("time_unit", "months"))
        e = np.asarray(arrays["edges"], np.float64)
        b.edges_ = np.where(e >= np.finfo(np.float64).max / 2, np.inf, e)
        return b

    def bin_labels(self) -> list[str]:
        """Readable bin names (``"0-12.3"``, ..., ``">=40.1"``)."""
        e = self.edges_
        out = [f"{e[k]:.3g}-{e[k + 1]:.3g}" for k in range(len(e) - 2)]
        return [*out, f">={e[-2]:.3g}"]


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
def _per_patient(cohort: pd.DataFrame, patients: Sequence[str], col: str, src: str) -> pd.Series:
    g = cohort.groupby("patient_id", sort=False)[col]
    nun = g.nunique(dropna=True)
    bad = [str(p) for p, n in nun.items() if n > 1]
    if bad:
        raise DataError(f"{src}: column {col!r} differs between slides of patient(s) {bad[:5]}; "
                        "give each patient one value")
    first = g.agg(lambda s: s.dropna().iloc[0] if s.notna().any() else np.nan)
    return first.reindex([str(p) for p in patients])


def load_outcomes(
    cohort: pd.DataFrame,
    patients: Sequence[str],
    specs: Mapping[str, OutcomeSpec],
    *,
    source: str | os.PathLike = "cohort table",
) -> dict[str, ClassBlock | SurvivalBlock]:
    """One validated block per outcome, rows in ``patients`` order.

    Parameters
    ----------
    cohort
        Cohort table (one row per slide, ``patient_id`` column).
    patients
        Patient order of the experiment.
    specs
        ``name -> OutcomeSpec``.
    source
        File name used in error messages.

    Raises
    ------
    DataError
        Missing columns, times <= 0 or missing, events not 0/1, grades outside the declared
        classes, per-patient disagreement (one line naming the file and column).
    """
    src = str(source)
    cohort = cohort.assign(patient_id=cohort["patient_id"].astype(str))
    out: dict[str, ClassBlock | SurvivalBlock] = {}
    for name, spec in specs.items():
        missing_cols = [c for c in spec.columns() if c not in cohort.columns]
        if missing_cols:
            raise DataError(
                f"{src}: no column(s) {missing_cols} for outcome {name!r} (columns: {list(cohort.columns)}); "
                f"add them or set data.outcomes.{name} to the right column names"
            )
        if spec.kind == TaskKind.CLASSIFICATION:
            out[name] = _classes(cohort, patients, name, spec, src)
        else:
            out[name] = _survival(cohort, patients, name, spec, src)
    return out


def _some(ids: Sequence[str]) -> str:
    ids = [str(i) for i in ids]
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _classes(cohort: pd.DataFrame, patients: Sequence[str], name: str, spec: OutcomeSpec, src: str) -> ClassBlock:
    col = spec.column
    s = _per_patient(cohort, patients, col, src)
    labels = [None if pd.isna(v) else _label(v) for v in s.to_numpy()]
    missing = [p for p, v in zip(patients, labels) if v is None]
    if missing and not spec.allow_missing:
        raise DataError(f"{src}: column {col!r} is empty for patient(s) {_some(missing)}; fill it, drop "
                        f"those patients or set data.outcomes.{name}.allow_missing: true")
    if spec.classes is not None:
        classes = list(spec.classes)
        bad = sorted({v for v in labels if v is not None and v not in classes})
        if bad:
            raise DataError(f"{src}: column {col!r} has value(s) {bad} outside the declared classes {classes}; "
                            f"fix the table or add them to data.outcomes.{name}.classes")
    else:
        vals = sorted({v for v in labels if v is not None}, key=_sort_key)
        classes = vals
    if len(classes) < 2:
        raise DataError(f"{src}: column {col!r} has {len(classes)} class(es) {classes}; a classifier needs >= 2")
    present = sorted({v for v in labels if v is not None}, key=_sort_key)
    if len(present) < 2:
        raise DataError(f"{src}: column {col!r} has {len(present)} class(es) {present} among the patients (declared "
                        f"{classes}); a classifier needs >= 2 present: check the column or the cohort")
    lut = {c: i for i, c in enumerate(classes)}
    codes = np.array([lut[v] if v is not None else -1 for v in labels], dtype=np.int64)
    return ClassBlock(name, classes, codes)


def _sort_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _survival(cohort: pd.DataFrame, patients: Sequence[str], name: str, spec: OutcomeSpec, src: str) -> SurvivalBlock:
    t_raw = _per_patient(cohort, patients, spec.time, src)
    e_raw = _per_patient(cohort, patients, spec.event, src)
    t = pd.to_numeric(t_raw, errors="coerce").to_numpy(dtype=np.float64)
    non_numeric = [p for p, v, x in zip(patients, t_raw.to_numpy(), t) if not pd.isna(v) and not np.isfinite(x)]
    if non_numeric:
        raise DataError(f"{src}: column {spec.time!r} is not a number for patient(s) {_some(non_numeric)}; "
                        "survival times must be positive numbers")
    missing = [p for p, x in zip(patients, t) if not np.isfinite(x)]
    if missing and not spec.allow_missing:
        raise DataError(f"{src}: column {spec.time!r} is missing for patient(s) {_some(missing)}; survival "
                        f"times must be positive numbers (fill them, drop the patients or set "
                        f"data.outcomes.{name}.allow_missing: true)")
    nonpos = [p for p, x in zip(patients, t) if np.isfinite(x) and x <= 0]
    if nonpos:
        raise DataError(f"{src}: column {spec.time!r} is <= 0 for patient(s) {_some(nonpos)}; survival times "
                        "must be > 0 (time from diagnosis to event or last follow-up)")
    e = pd.to_numeric(e_raw, errors="coerce").to_numpy(dtype=np.float64)
    ev_raw = e_raw.to_numpy()
    bad_e = [p for p, v, x, tt in zip(patients, ev_raw, e, t)
             if (pd.isna(v) and np.isfinite(tt)) or (not pd.isna(v) and x not in (0.0, 1.0))]
    if bad_e:
        seen = sorted({str(v) for p, v in zip(patients, ev_raw) if p in set(bad_e)})
        raise DataError(f"{src}: column {spec.event!r} must be 0 (censored) or 1 (event); patient(s) "
                        f"{_some(bad_e)} have {seen}")
    present = np.isfinite(t) & np.isfinite(e)
    ev = np.where(present, np.nan_to_num(e), -1).astype(np.int64)
    if present.any() and not (ev == 1).any():
        raise DataError(f"{src}: column {spec.event!r} is 0 (censored) for every patient, so there is no event "
                        "to learn or score survival from; check the column (1 = event, 0 = censored) or drop "
                        f"data.outcomes.{name}")
    return SurvivalBlock(name, t, ev, present, time_unit=spec.time_unit, n_bins=spec.n_bins)
