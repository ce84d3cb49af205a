"""What a run was trained and evaluated on, as short content fingerprints.

Every run records (``config.yaml``, ``_run.identity``) three fingerprints so that runs are
compared only with runs of the same data and the same folds:

- **cohort**: the cohort table's patients, slides and outcome columns (``patient_id,
  slide_id, time, event, grade``; order, paths and other columns do not count), so the omics
  run and the outcome run of one table share it, and a table with other patients, other
  outcomes (the PathGen cohort re-uses the power cohort's slide ids) does not;
- **omics**: per modality, its targets, the patients that have it and the values;
- **split**: the patient -> fold assignment of every repeat.

Spot-level runs use the samples (ids, patients, spot counts, genes) as their cohort and the
leave-one-sample-out folds as their split. The same functions read a cohort table found on disk
(:func:`cohort_id`), so the dashboard can tell which table a run was trained on.

Examples
--------
>>> import pandas as pd
>>> t = pd.DataFrame({"slide_id": ["S2", "S1"], "patient_id": ["P2", "P1"], "path": ["a", "b"]})
>>> cohort_id(t) == cohort_id(t.iloc[::-1].assign(path=["x", "y"]))
True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["COHORT_COLUMNS", "IDENTITY_VERSION", "cohort_id", "cohort_identity", "cohort_name", "spot_identity",
           "split_id"]

IDENTITY_VERSION = 1
#: Columns of a cohort table that make its identity (those present).
COHORT_COLUMNS = ("patient_id", "slide_id", "time", "event", "grade")
_ID_LEN = 12


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x1f")
    return h.hexdigest()[:_ID_LEN]


def _canonical(v: Any) -> str:
    """One text per value: numbers as ``%.9g`` (``12`` == ``12.0``), missing as ``""``."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return f"{float(v):.9g}"
    s = str(v).strip()
    try:
        return f"{float(s):.9g}" if s.lower() not in ("nan", "inf", "-inf", "") else ("" if s.lower() == "nan" else s)
    except ValueError:
        return s


def cohort_id(table: pd.DataFrame) -> str:
    """Fingerprint of a cohort table: its rows of :data:`COHORT_COLUMNS` (those present), as a
    set (row order, paths and other columns do not count)."""
    cols = [c for c in COHORT_COLUMNS if c in table.columns]
    rows = sorted("\x1e".join(_canonical(v) for v in r) for r in table[cols].itertuples(index=False, name=None))
    return _digest(IDENTITY_VERSION, cols, rows)


def cohort_name(path: str | os.PathLike) -> str:
    """How a cohort table is named for people: its folder (``power/cohort.csv`` -> ``power``)
    when the file is called ``cohort``, else its stem."""
    p = Path(path)
    return p.parent.name if p.stem.lower() in ("cohort", "cohort_table", "slides") and p.parent.name else p.stem


def split_id(units: Sequence[str], folds: Sequence[np.ndarray]) -> str:
    """Fingerprint of a split: each unit's fold in every repeat (``folds[r][i]`` is unit ``i``'s
    fold in repeat ``r``), as a set of rows."""
    arr = [np.asarray(f).astype(np.int64).tolist() for f in folds]
    rows = sorted([str(u), *[int(f[i]) for f in arr]] for i, u in enumerate(units))
    return _digest(IDENTITY_VERSION, rows)


def _omics_id(targets: Sequence[str], units: Sequence[str], values: np.ndarray, present: np.ndarray) -> str:
    pres = np.asarray(present, bool)
    order = np.argsort(np.asarray(units, dtype=str)[pres], kind="stable")
    v = np.asarray(values, np.float64)[pres][order].astype(np.float32)
    v = np.where(np.isnan(v), np.float32(np.nan), v)  # one NaN bit pattern
    return _digest(IDENTITY_VERSION, [str(t) for t in targets], sorted(np.asarray(units, dtype=str)[pres].tolist()),
                   np.ascontiguousarray(v).tobytes())


def cohort_identity(
    cohort: str | os.PathLike | pd.DataFrame,
    patients: Sequence[str],
    folds: Sequence[np.ndarray],
    *,
    omics: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """What a slide-level run is trained and evaluated on (recorded in its ``config.yaml``).

    Parameters
    ----------
    cohort
        The cohort table (a path, read with :func:`histoviz.data.cohort.read_cohort`, or a
        DataFrame).
    patients
        The run's patients (the order of ``folds``).
    folds
        Per repeat, each patient's fold.
    omics
        ``modality -> object with targets, values, present`` (the loaded omics, aligned to
        ``patients``).
    name
        Display name of the cohort (default: :func:`cohort_name` of the table's path).

    Returns
    -------
    ``{"version", "cohort": {id, name, table, patients, slides}, "omics": {modality: id},
    "split": {id, folds, repeats, patients}}``.
    """
    if isinstance(cohort, pd.DataFrame):
        table, where = cohort, ""
    else:
        from histoviz.data.cohort import read_cohort

        table, where = read_cohort(cohort), str(Path(cohort).resolve())
    folds = [np.asarray(f) for f in folds]
    return {
        "version": IDENTITY_VERSION,
        "cohort": {"id": cohort_id(table), "name": name or (cohort_name(where) if where else "cohort"),
                   "table": where, "patients": int(table["patient_id"].nunique()) if "patient_id" in table else 0,
                   "slides": int(len(table))},
        "omics": {str(m): _omics_id(d.targets, patients, d.values, d.present) for m, d in (omics or {}).items()},
        "split": {"id": split_id(patients, folds), "folds": int(max(int(f.max()) for f in folds) + 1) if folds else 0,
                  "repeats": len(folds), "patients": len(patients)},
    }


def spot_identity(samples: Sequence[Any], genes: Sequence[str], test_folds: Sequence[np.ndarray], *,
                  name: str | None = None) -> dict[str, Any]:
    """What a spot-level run is trained and evaluated on: its samples (``sample_id``,
    ``patient_id``, number of spots), its genes and the leave-out folds (``test_folds[k]``:
    indices of the samples held out in fold ``k``)."""
    ids = [str(s.sample_id) for s in samples]
    rows = sorted([str(s.sample_id), str(getattr(s, "patient_id", s.sample_id)), int(np.shape(s.counts)[0])]
                  for s in samples)
    fold = np.full(len(ids), -1, np.int64)
    for k, idx in enumerate(test_folds):
        fold[np.asarray(idx, np.int64)] = k
    parents = {Path(str(getattr(s, "path", "") or "")).parent.name for s in samples} - {""}
    return {
        "version": IDENTITY_VERSION,
        "cohort": {"id": _digest(IDENTITY_VERSION, "spots", rows), "name": name or (parents.pop() if len(parents) == 1
                                                                                       else "spot samples"),
                   "table": "", "patients": len({r[1] for r in rows}), "slides": len(ids)},
        "omics": {"gene": _digest(IDENTITY_VERSION, [str(g) for g in genes])},
        "split": {"id": split_id(ids, [fold]), "folds": len(test_folds), "repeats": 1, "patients": len(ids)},
    }
