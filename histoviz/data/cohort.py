"""The cohort table: ``slide_id, patient_id, path`` (+ optional ``time, event, grade, fold``)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from histoviz.errors import DataError

__all__ = ["REQUIRED_COLUMNS", "read_cohort", "cohort_from_paths"]

REQUIRED_COLUMNS = ("slide_id", "patient_id", "path")


def read_cohort(path: str | os.PathLike, *, check_files: bool = False) -> pd.DataFrame:
    """Read and validate a cohort table (CSV, TSV or parquet).

    Relative slide paths are resolved against the table's folder. ``patient_id`` defaults to
    ``slide_id`` when the column is absent (one slide per patient).

    Raises
    ------
    DataError
        Missing columns, duplicate slide ids, empty table, or (``check_files``) missing slides.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: cohort table not found")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".txt") else ",")
    except Exception as e:
        raise DataError(f"{path}: cannot read cohort table ({type(e).__name__}: {e}); give a CSV, TSV or parquet "
                        "table with columns slide_id, patient_id, path") from e
    if "patient_id" not in df.columns and "slide_id" in df.columns:
        df["patient_id"] = df["slide_id"]
        df.attrs["patient_id_from_slide_id"] = True  # training refuses this unless told (see training.data)
    if "slide_id" not in df.columns and "path" in df.columns:
        df["slide_id"] = [Path(p).name.split(".")[0] for p in df["path"]]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: cohort table lacks column(s) {missing}; need {list(REQUIRED_COLUMNS)}")
    if df.empty:
        raise DataError(f"{path}: cohort table has no rows")
    blank = df["patient_id"].isna() | (df["patient_id"].astype(str).str.strip() == "")
    df.attrs["slides_without_patient"] = df["slide_id"][blank].astype(str).tolist()  # refused by training
    df["slide_id"] = df["slide_id"].astype(str)
    df["patient_id"] = df["patient_id"].astype(str)
    dup = df["slide_id"][df["slide_id"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path}: duplicate slide_id(s) {dup[:5]}; give each slide one row with its own id")
    df["path"] = [str(p if Path(p).is_absolute() else (path.parent / p)) for p in df["path"].astype(str)]
    if check_files:
        absent = [p for p in df["path"] if not Path(p).exists()]
        if absent:
            raise DataError(f"{path}: {len(absent)} slide file(s) not found, e.g. {absent[:3]}")
    return df.reset_index(drop=True)


def cohort_from_paths(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """A cohort table for loose slide files (one patient per slide)."""
    from histoviz.io.open import slide_id_from_path

    ids = [slide_id_from_path(p) for p in paths]
    return pd.DataFrame({"slide_id": ids, "patient_id": ids, "path": [str(p) for p in paths]})
