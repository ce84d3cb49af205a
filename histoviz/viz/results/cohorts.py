"""Cohorts under the results root, their slides keyed by cohort and slide id, and the
prediction files of each slide.

Two cohorts may both have a slide called ``S001`` (the synthetic and the PathGen cohort of the
demo do); a slide is therefore named by ``(cohort, slide_id)`` and a prediction file belongs to
the slide *file* it recorded (``uns["histoviz"]["slide_path"]``: the same file, or the same path
relative to the root when the results were moved), never to a slide that merely shares its id.

- :func:`find_cohorts`: cohort tables (``cohort*.csv|tsv|parquet``) under the root, read and
  fingerprinted (:func:`histoviz.data.identity.cohort_id`, the id runs record);
- :func:`cohort_slides`: a cohort's slides with their files (only files under the root);
- :func:`prediction_header`: the provenance of a prediction file, read without loading it;
- :func:`predictions_for_slide`: which prediction files belong to a slide file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from histoviz.viz.results.root import find_files, is_inside, root_relative

__all__ = ["CohortTable", "cohort_slides", "find_cohorts", "prediction_header", "predictions_for_slide",
           "read_cohort_table", "slide_row"]

#: Stems of the files read as cohort tables.
COHORT_NAMES = ("cohort",)
COHORT_SUFFIXES = (".csv", ".tsv", ".parquet")


@dataclass
class CohortTable:
    """A cohort table under the results root.

    Attributes
    ----------
    path
        The table.
    name
        Its name for people (``power`` for ``power/cohort.csv``; disambiguated when two share one).
    id
        Its fingerprint (what runs trained on it record).
    table
        The rows (``read_cohort``: absolute slide paths), without rows a truncated CSV cut short.
    warning
        The truncated-CSV warning naming the file, or ``None``.
    """

    path: Path
    name: str
    id: str
    table: pd.DataFrame
    warning: str | None = None

    @property
    def label(self) -> str:
        """``power (200 patients, 240 slides)``."""
        return f"{self.name} ({self.table['patient_id'].nunique()} patients, {len(self.table)} slides)"


def read_cohort_table(path: str | os.PathLike) -> tuple[pd.DataFrame, str | None]:
    """:func:`histoviz.data.cohort.read_cohort` without the rows a truncated CSV cut short, and
    the warning that names the file (``None`` when whole).

    Raises
    ------
    DataError
        The table cannot be read (names it).
    """
    from histoviz.data.cohort import read_cohort
    from histoviz.viz.results.files import check_csv, short_rows

    p = Path(path)
    df = read_cohort(p)
    warning = check_csv(p) if p.suffix.lower() != ".parquet" else None
    if warning:
        short = short_rows(p, 64 << 20)[0]
        drop = [len(df) - 1 if i < 0 else i for i in short]
        df = df.drop(index=df.index[[i for i in drop if 0 <= i < len(df)]]).reset_index(drop=True)
    return df, warning


def find_cohorts(root: str | os.PathLike, *, paths: Sequence[str | os.PathLike] | None = None
                 ) -> tuple[list[CohortTable], list[str]]:
    """Cohort tables under ``root`` (or the given ``paths``), read and fingerprinted.

    Returns
    -------
    ``(cohorts, errors)``: tables sorted by name; one-line errors naming unreadable tables.
    """
    from histoviz.data.identity import cohort_id, cohort_name

    found = paths if paths is not None else find_files(root, COHORT_SUFFIXES, names=COHORT_NAMES)
    out, errors = [], []
    for p in found:
        try:
            df, warning = read_cohort_table(p)
        except Exception as e:  # one bad table must not hide the others
            errors.append(str(e) if "cohort" in str(e) or str(p) in str(e) else f"{p}: unreadable ({e})")
            continue
        out.append(CohortTable(Path(p), cohort_name(p), cohort_id(df), df, warning))
    names: dict[str, list[CohortTable]] = {}
    for c in out:
        names.setdefault(c.name, []).append(c)
    for same in names.values():
        if len(same) > 1:  # two tables with one name: show where each is
            for c in same:
                c.name = root_relative(root, c.path.parent) if c.path.parent != Path(root) else c.path.stem
    return sorted(out, key=lambda c: c.name), errors


def cohort_slides(cohort: CohortTable, root: str | os.PathLike) -> pd.DataFrame:
    """The cohort's slides: ``slide_id, patient_id, path, under_root`` (+ ``grade, time, event``
    when present); ``under_root`` is False for a file outside the root or missing (the pages
    do not open those)."""
    df = cohort.table
    cols = [c for c in ("slide_id", "patient_id", "path", "grade", "time", "event") if c in df.columns]
    out = df[cols].copy()
    out["under_root"] = [Path(p).is_file() and is_inside(root, p) for p in out["path"]]
    return out


def prediction_header(path: str | os.PathLike) -> dict[str, Any]:
    """``uns["histoviz"]`` scalars of a prediction file (``slide_id``, ``slide_path``,
    ``model``, ``run_dir``, ...), read with h5py without loading the file; ``{}`` when it is
    not a histoviz prediction file."""
    import h5py

    out: dict[str, Any] = {}
    try:
        with h5py.File(path, "r") as f:
            g = f.get("uns/histoviz")
            if not isinstance(g, h5py.Group):
                return {}
            for k, v in g.items():
                if isinstance(v, h5py.Dataset) and v.shape == ():
                    x = v[()]
                    out[str(k)] = x.decode() if isinstance(x, bytes) else (x.item() if hasattr(x, "item") else x)
    except (OSError, ValueError, KeyError):
        return {}
    return out


def _same_slide(recorded: str, slide: Path, root: Path) -> bool:
    if not recorded:
        return False
    try:
        if Path(recorded).exists() and os.path.samefile(recorded, slide):
            return True
    except OSError:
        pass
    rel = root_relative(root, slide).replace(os.sep, "/")
    return "/" in rel and recorded.replace(os.sep, "/").endswith("/" + rel)


def predictions_for_slide(slide: str | os.PathLike, headers: Iterable[tuple[str | os.PathLike, dict[str, Any]]],
                          root: str | os.PathLike) -> list[tuple[Path, bool]]:
    """Prediction files of ``slide`` among ``(path, prediction_header)`` pairs.

    A file belongs to the slide when the slide file it recorded is this one (the same file, or
    the same path relative to the root when the results were moved). Files that recorded no
    slide path match on the slide id only and are flagged.

    Returns
    -------
    ``[(path, exact)]``: ``exact`` is False for the slide-id-only matches.
    """
    s, r = Path(slide), Path(root)
    sid = s.name.split(".")[0]
    out = []
    for p, h in headers:
        rec = str(h.get("slide_path") or "")
        if rec:
            if _same_slide(rec, s, r):
                out.append((Path(p), True))
        elif str(h.get("slide_id", "")) == sid:
            out.append((Path(p), False))
    return out


def _quick_print(path: str | os.PathLike, chunk: int = 1 << 20) -> tuple[int, bytes, bytes]:
    """Size and the first and last MiB of a file (enough to tell copies of one slide apart from
    other slides without reading whole gigabyte files)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(chunk)
        f.seek(max(0, size - chunk))
        tail = f.read(chunk)
    return size, head, tail


def slide_row(table: pd.DataFrame, slide: str | os.PathLike) -> pd.Series | None:
    """The cohort-table row of a slide file: the same file, else a byte-identical copy (same
    size, same first and last MiB: the PathGen cohort re-uses the power cohort's slides as
    copies); ``None`` when the table holds neither."""
    s = os.path.realpath(slide)
    paths = [os.path.realpath(p) for p in table["path"].astype(str)]
    if s in paths:
        return table.iloc[paths.index(s)]
    try:
        size = os.path.getsize(s)
        mine = None
        for i, p in enumerate(paths):
            if os.path.isfile(p) and os.path.getsize(p) == size:
                mine = mine or _quick_print(s)
                if _quick_print(p) == mine:
                    return table.iloc[i]
    except OSError:
        return None
    return None
