"""Clinical tables as people download them, turned into one outcome row per patient.

Formats (detected from the columns; ``format=`` forces one):

- **cBioPortal** ``data_clinical_patient.txt`` / ``data_clinical_sample.txt``: tab-separated,
  ``#`` header lines (display names, descriptions, types, priorities) above the column row;
  ``PATIENT_ID`` (and ``SAMPLE_ID``); survival pairs ``OS_MONTHS``/``OS_STATUS``,
  ``DFS_*``, ``PFS_*``, ``DSS_*`` with statuses like ``1:DECEASED`` / ``0:LIVING``;
- **GDC** clinical TSV (``clinical.tsv`` of a cart, with or without the ``cases.`` /
  ``demographic.`` / ``diagnoses.`` prefixes of newer exports): ``case_submitter_id``,
  ``vital_status``, ``days_to_death``, ``days_to_last_follow_up``, ``tumor_grade``; several rows
  per case (one per treatment or diagnosis) collapse to one;
- **any CSV/TSV** with the patient, time, event and grade columns named by the caller.

Rules, stated once (and in the import report):

- **time** is converted to months (days / 30.4375, years x 12); cBioPortal ``*_MONTHS`` columns
  are months and GDC ``days_to_*`` days by definition; a plain table must declare its unit;
- **event**: ``n:WORD`` statuses take the number; words meaning an event (``DECEASED``,
  ``DEAD``, ``Recurred/Progressed``, ``PROGRESSION``, ...) are 1, words meaning censoring
  (``LIVING``, ``ALIVE``, ``DiseaseFree``, ``CENSORED``, ...) 0, as do ``0``/``1``; other
  strings are an error that lists them (``event_values`` names more);
- **grade**: ``G1``..``G4``, ``Grade 2``, ``Grade II``, ``II`` and ``2`` map to the class
  ``"2"``; ``GX`` (cannot be assessed) and missing-value tokens are missing; anything else, or a
  class outside the declared ones, is *unknown*: listed with its count, never guessed;
- a patient with several rows keeps their common value; rows that disagree on an outcome are an
  error naming the patients.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz.data.tcga import parse_barcode
from histoviz.errors import ConfigError, DataError

__all__ = [
    "ClinicalData",
    "ClinicalOptions",
    "TIME_UNITS",
    "grade_label",
    "parse_status",
    "read_clinical",
    "read_clinical_file",
]

#: Months per unit (outputs are in months).
TIME_UNITS = {"days": 1 / 30.4375, "weeks": 7 / 30.4375, "months": 1.0, "years": 12.0}

MISSING = {"", "na", "nan", "n/a", "none", "null", "'--", "--", "-", "not reported", "not available", "unknown",
           "[not available]", "[not applicable]", "[unknown]", "[not evaluated]", "[discrepancy]",
           "[not reported]", "not applicable"}
_EVENT_WORDS = {"deceased": 1, "dead": 1, "died": 1, "recurred/progressed": 1, "recurred": 1, "progressed": 1,
                "progression": 1, "recurrence": 1, "dead with tumor": 1, "event": 1, "true": 1, "yes": 1,
                "living": 0, "alive": 0, "diseasefree": 0, "disease free": 0, "censored": 0, "censor": 0,
                "alive or dead tumor free": 0, "false": 0, "no": 0}
_PAIRS = ("OS", "DFS", "PFS", "DSS")
_GRADE_COLUMNS = ("GRADE", "HISTOLOGICAL_GRADE", "TUMOR_GRADE", "NEOPLASM_HISTOLOGIC_GRADE", "tumor_grade")
_ROMAN = {"I": "1", "II": "2", "III": "3", "IV": "4"}


@dataclass(frozen=True)
class ClinicalOptions:
    """How to read the clinical tables.

    Parameters
    ----------
    patient_column, time_column, event_column, grade_column
        Column names of a plain table (cBioPortal and GDC tables need none).
    time_unit
        ``days``, ``weeks``, ``months`` or ``years`` of ``time_column`` (required with it).
    event_values
        Extra status strings and their meaning, ``{"Deceased?": 1}``.
    grade_classes
        Declared grade classes (default ``1, 2, 3, 4``).
    grade_map
        Extra grade strings and their class, ``{"High grade": "3"}``.
    survival
        Which pair becomes ``time``/``event``: ``os`` (default), ``dfs``, ``pfs``, ``dss``.
    """

    patient_column: str | None = None
    time_column: str | None = None
    event_column: str | None = None
    grade_column: str | None = None
    time_unit: str | None = None
    event_values: Mapping[str, int] = field(default_factory=dict)
    grade_classes: tuple[str, ...] = ("1", "2", "3", "4")
    grade_map: Mapping[str, str] = field(default_factory=dict)
    survival: str = "os"

    def __post_init__(self) -> None:
        if self.time_unit is not None and self.time_unit not in TIME_UNITS:
            raise ConfigError(f"--time-unit {self.time_unit!r}: use one of {list(TIME_UNITS)}")
        if self.survival.upper() not in _PAIRS:
            raise ConfigError(f"--survival {self.survival!r}: use one of {[p.lower() for p in _PAIRS]}")
        bad = {k: v for k, v in self.event_values.items() if v not in (0, 1)}
        if bad:
            raise ConfigError(f"--event-values {bad}: each status means 1 (event) or 0 (censored)")
        if len(set(self.grade_classes)) != len(self.grade_classes) or len(self.grade_classes) < 2:
            raise ConfigError(f"--grade-classes {list(self.grade_classes)}: give >= 2 distinct classes")


@dataclass
class ClinicalData:
    """Outcomes per patient and what the reading found.

    Attributes
    ----------
    patients
        Index ``patient_id``; ``time``, ``event`` (the chosen pair, months), ``grade`` and every
        survival pair found (``os_time``, ``os_event``, ``pfs_time``, ...).
    samples
        ``sample_id -> patient_id`` from cBioPortal sample files (empty when none).
    sources
        One entry per file: format, rows, patients, the columns used and their unit.
    grades
        ``{"unknown": {value: count}, "not_assessed": n, "missing": n, "rule": ...}``.
    time_unit
        Unit of every ``*time`` column (``months``).
    """

    patients: pd.DataFrame
    samples: pd.DataFrame
    sources: list[dict[str, Any]]
    grades: dict[str, Any]
    time_unit: str = "months"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip().lower() in MISSING


def parse_status(value: Any, extra: Mapping[str, int] | None = None) -> int | None:
    """1 (event), 0 (censored), ``None`` (missing); raises :class:`ValueError` when not understood."""
    if _missing(value):
        return None
    s = str(value).strip()
    if extra and s in extra:
        return int(extra[s])
    m = re.match(r"^\s*([01])\s*:", s)
    if m:
        return int(m.group(1))
    low = s.lower()
    if low in ("0", "1", "0.0", "1.0"):
        return int(float(low))
    if low in _EVENT_WORDS:
        return _EVENT_WORDS[low]
    raise ValueError(s)


def grade_label(value: Any, classes: Sequence[str], extra: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """``(class, status)`` of a grade string; status ``ok``, ``missing``, ``not_assessed`` or ``unknown``.

    >>> grade_label("G2", ["1", "2", "3"]), grade_label("Grade III", ["1", "2", "3"])
    (('2', 'ok'), ('3', 'ok'))
    >>> grade_label("GX", ["1", "2", "3"]), grade_label("High Grade", ["1", "2", "3"])
    ((None, 'not_assessed'), (None, 'unknown'))
    """
    if _missing(value):
        return None, "missing"
    s = str(value).strip()
    if extra and s in extra:
        lab = str(extra[s])
        return (lab, "ok") if lab in classes else (None, "unknown")
    up = re.sub(r"\s+", " ", s.upper())
    if up in ("GX", "GRADE X", "X"):
        return None, "not_assessed"
    m = (re.fullmatch(r"(?:G|GRADE ?)([1-4])", up) or re.fullmatch(r"([1-4])(?:\.0)?", up))
    lab = m.group(1) if m else None
    if lab is None:
        m = re.fullmatch(r"(?:GRADE )?(I|II|III|IV)", up)
        lab = _ROMAN[m.group(1)] if m else None
    if lab is None:
        lab = s if s in classes else None
    if lab is None or lab not in classes:
        return None, "unknown"
    return lab, "ok"


def read_clinical_file(path: str | os.PathLike) -> pd.DataFrame:
    """A clinical table as strings (``#`` lines skipped; tab- or comma-separated by content).

    Raises
    ------
    DataError
        Missing or unreadable file, or no columns.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: clinical table not found")
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = next((ln for ln in fh if not ln.startswith("#") and ln.strip()), "")
        sep = "\t" if "\t" in first or path.suffix.lower() in (".tsv", ".txt") else ","
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, comment="#", encoding="utf-8-sig",
                         skip_blank_lines=True)
    except Exception as e:
        raise DataError(f"{path}: cannot read the clinical table ({type(e).__name__}: {e})") from e
    if df.shape[1] < 2:
        raise DataError(f"{path}: one column only; expected a tab- or comma-separated table with a header row")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _find(df: pd.DataFrame, names: Sequence[str]) -> str | None:
    """A column by exact name, then by the part after a ``prefix.`` (GDC exports)."""
    for n in names:
        if n in df.columns:
            return n
    for n in names:
        hit = [c for c in df.columns if c.split(".")[-1] == n]
        if hit:
            return hit[0]
    return None


def _detect(df: pd.DataFrame) -> str:
    if "PATIENT_ID" in df.columns:
        return "cbioportal-sample" if "SAMPLE_ID" in df.columns else "cbioportal"
    if _find(df, ["vital_status"]) and _find(df, ["case_submitter_id", "submitter_id"]):
        return "gdc"
    return "table"


def _patient_key(v: str) -> str:
    b = parse_barcode(v)
    return b.patient if b is not None else str(v).strip()


def _times(df: pd.DataFrame, col: str, path: Path, factor: float) -> pd.Series:
    raw = df[col]
    miss = raw.map(_missing)
    num = pd.to_numeric(raw.where(~miss), errors="coerce")
    bad = raw[~miss & num.isna()]
    if len(bad):
        raise DataError(f"{path}: column {col!r} holds values that are not numbers ({sorted(set(bad))[:5]}); "
                        "survival times must be numbers")
    return num * factor


def _status(df: pd.DataFrame, col: str, path: Path, extra: Mapping[str, int]) -> pd.Series:
    out, bad = [], set()
    for v in df[col]:
        try:
            out.append(parse_status(v, extra))
        except ValueError:
            bad.add(str(v))
            out.append(None)
    if bad:
        raise DataError(f"{path}: column {col!r} has status value(s) {sorted(bad)[:6]} that are not understood; "
                        f"say what they mean, e.g. --event-values '{sorted(bad)[0]}=1' (1 = event, 0 = censored)")
    return pd.Series(out, index=df.index, dtype="float64")


def _one_table(df: pd.DataFrame, path: Path, opt: ClinicalOptions, fmt: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-row outcomes of one file: patient_id, <pair>_time, <pair>_event, grade_raw (+ sample_id)."""
    info: dict[str, Any] = {"file": str(path), "format": fmt, "rows": int(len(df))}
    out = pd.DataFrame(index=df.index)
    if fmt.startswith("cbioportal"):
        pcol = "PATIENT_ID"
        for pair in _PAIRS:
            t, s = f"{pair}_MONTHS", f"{pair}_STATUS"
            if t in df.columns and s in df.columns:
                out[f"{pair.lower()}_time"] = _times(df, t, path, 1.0)
                out[f"{pair.lower()}_event"] = _status(df, s, path, opt.event_values)
                info.setdefault("survival", {})[pair.lower()] = [t, s, "months"]
        if "SAMPLE_ID" in df.columns:
            out["sample_id"] = df["SAMPLE_ID"].str.strip()
    elif fmt == "gdc":
        pcol = _find(df, ["case_submitter_id", "submitter_id"])
        vs = _find(df, ["vital_status"])
        dd, fu = _find(df, ["days_to_death"]), _find(df, ["days_to_last_follow_up"])
        if dd is None and fu is None:
            raise DataError(f"{path}: a GDC clinical table without days_to_death or days_to_last_follow_up; "
                            "export the clinical TSV with them")
        ev = _status(df, vs, path, opt.event_values)
        d_death = _times(df, dd, path, TIME_UNITS["days"]) if dd else pd.Series(np.nan, index=df.index)
        d_fu = _times(df, fu, path, TIME_UNITS["days"]) if fu else pd.Series(np.nan, index=df.index)
        out["os_event"] = ev
        out["os_time"] = np.where(ev == 1, d_death, d_fu)
        info["survival"] = {"os": [f"{vs}: {dd} / {fu}", vs, "days"]}
    else:
        pcol = opt.patient_column or _find(df, ["patient_id", "PATIENT_ID", "patient", "case_submitter_id"])
        if pcol is None or pcol not in df.columns:
            raise DataError(f"{path}: name the patient column with --patient-column (columns: {list(df.columns)[:12]})")
        if bool(opt.time_column) != bool(opt.event_column):
            raise ConfigError("--time-column and --event-column go together (survival needs both)")
        if opt.time_column:
            for c in (opt.time_column, opt.event_column):
                if c not in df.columns:
                    raise DataError(f"{path}: no column {c!r} (columns: {list(df.columns)[:12]})")
            if opt.time_unit is None:
                raise DataError(f"{path}: the unit of the time column {opt.time_column!r} is not declared; pass "
                                "--time-unit days|weeks|months|years")
            pair = opt.survival.lower()
            out[f"{pair}_time"] = _times(df, opt.time_column, path, TIME_UNITS[opt.time_unit])
            out[f"{pair}_event"] = _status(df, opt.event_column, path, opt.event_values)
            info["survival"] = {pair: [opt.time_column, opt.event_column, opt.time_unit]}
    gcol = opt.grade_column or _find(df, list(_GRADE_COLUMNS))
    if opt.grade_column and opt.grade_column not in df.columns:
        raise DataError(f"{path}: no column {opt.grade_column!r} (columns: {list(df.columns)[:12]})")
    if gcol is not None:
        out["grade_raw"] = df[gcol].astype(str)
        info["grade"] = gcol
    raw_pid = df[pcol].astype(str).str.strip()
    keep = ~raw_pid.map(_missing)
    out["patient_id"] = raw_pid.map(_patient_key)
    out = out[keep]
    info["patient_column"] = pcol
    info["patients"] = int(out["patient_id"].nunique())
    return out, info


def _collapse(rows: pd.DataFrame, opt: ClinicalOptions) -> pd.DataFrame:
    """One row per patient; conflicting non-missing values are an error naming the patients (grades
    compare by the class they map to, so ``G2`` and ``Grade 2`` agree)."""
    cols = [c for c in rows.columns if c not in ("patient_id", "sample_id", "_src")]
    out = {}
    for col in cols:
        s = rows[["patient_id", col, "_src"]].dropna(subset=[col])
        s = s[s[col].map(lambda v: not _missing(v))]
        if s.empty:
            out[col] = pd.Series(dtype=object)
            continue
        if col.endswith(("_time", "_event")):
            key = s[col].round(4)
        elif col == "grade_raw":
            key = s[col].map(lambda v: grade_label(v, opt.grade_classes, opt.grade_map)[0] or str(v).strip().upper())
        else:
            key = s[col].str.strip().str.upper()
        n = key.groupby(s["patient_id"]).nunique()
        bad = n[n > 1].index.tolist()
        if bad:
            ex = s[s["patient_id"] == bad[0]]
            vals = sorted({str(v) for v in ex[col]})
            files = sorted(set(ex["_src"]))
            raise DataError(f"{', '.join(files)}: patient(s) {bad[:5]} have conflicting {col.replace('_', ' ')} "
                            f"values ({' vs '.join(vals[:3])}); keep one row per patient, or fix the rows that "
                            "disagree")
        out[col] = s.groupby("patient_id")[col].first()
    df = pd.DataFrame(out)
    df.index.name = "patient_id"
    return df.reindex(sorted(set(rows["patient_id"])))


def read_clinical(
    paths: Sequence[str | os.PathLike],
    options: ClinicalOptions | None = None,
    *,
    format: str = "auto",
) -> ClinicalData:
    """Read and merge clinical tables (see the module docstring for formats and rules).

    Raises
    ------
    DataError
        Unreadable files, status strings not understood, a time unit not declared, patients
        with conflicting outcomes, no patient column (each one line naming the file and fix).
    """
    opt = options or ClinicalOptions()
    parts, sources, samples = [], [], []
    for p in paths:
        path = Path(p)
        df = read_clinical_file(path)
        fmt = _detect(df) if format == "auto" else format
        rows, info = _one_table(df, path, opt, fmt)
        if "sample_id" in rows.columns:
            samples.append(rows[["sample_id", "patient_id"]])
        rows["_src"] = str(path)
        parts.append(rows)
        sources.append(info)
    if not parts:
        return ClinicalData(pd.DataFrame(index=pd.Index([], name="patient_id")), pd.DataFrame(columns=[
            "sample_id", "patient_id"]), [], {"unknown": {}, "not_assessed": 0, "missing": 0})
    rows = pd.concat(parts, ignore_index=True)
    per = _collapse(rows, opt)
    chosen = opt.survival.lower()
    pairs = [p.lower() for p in _PAIRS if f"{p.lower()}_time" in per.columns]
    if pairs:
        pick = chosen if chosen in pairs else pairs[0]
        per["time"] = pd.to_numeric(per[f"{pick}_time"], errors="coerce")
        per["event"] = pd.to_numeric(per[f"{pick}_event"], errors="coerce")
        for s in sources:
            s["time_event_from"] = pick
    grades: dict[str, Any] = {"unknown": {}, "not_assessed": 0, "missing": 0, "classes": list(opt.grade_classes),
                              "rule": "G1..G4 / Grade 1..4 / Grade I..IV / 1..4 -> class; GX -> not assessed; "
                                      "anything else -> unknown (listed, left empty)"}
    if "grade_raw" in per.columns:
        labels = []
        for v in per["grade_raw"]:
            lab, status = grade_label(v, opt.grade_classes, opt.grade_map)
            labels.append(lab)
            if status == "unknown":
                grades["unknown"][str(v).strip()] = grades["unknown"].get(str(v).strip(), 0) + 1
            elif status in ("not_assessed", "missing"):
                grades[status] += 1
        per["grade"] = labels
        per = per.drop(columns="grade_raw")
    for c in [c for c in per.columns if c.endswith("_event") or c == "event"]:
        per[c] = pd.to_numeric(per[c], errors="coerce")
    smp = (pd.concat(samples).drop_duplicates("sample_id") if samples
           else pd.DataFrame(columns=["sample_id", "patient_id"]))
    return ClinicalData(per, smp.reset_index(drop=True), sources, grades)
