"""Checked reading of the tables a user drops under the results root, and what a prediction
or slide says about synthetic data.

- :func:`check_csv` finds a truncated or short last row (pandas would fill it with NaN
  silently); :func:`read_csv_checked` leaves such rows out and says so.
- :func:`trained_on_synthetic`, :func:`is_synthetic_slide`: whether a model or a slide comes
  from a histoviz synthetic cohort.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from histoviz.errors import DataError

__all__ = ["check_csv", "is_synthetic_slide", "read_csv_checked", "short_rows", "trained_on_synthetic"]


def short_rows(path: Path, max_bytes: int) -> tuple[list[int], int, bool, int]:
    """Row indices (0-based, as pandas numbers data rows) with fewer fields than the header,
    the header's field count, whether the file ends without a newline, and the row count
    (-1 when only the last line was checked)."""
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    size = path.stat().st_size
    with path.open("r", newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, [])
        n = len(header)
        if size > max_bytes:
            f.seek(max(0, size - 65536))
            tail = [r for r in csv.reader(f.read().splitlines()[-1:], delimiter=sep) if r]
            short = [-1] if tail and len(tail[-1]) < n else []
            count = -1
        else:
            rows = [r for r in reader if r]
            short = [i for i, r in enumerate(rows) if len(r) < n]
            count = len(rows)
    no_newline = False
    if size:
        with path.open("rb") as fb:
            fb.seek(size - 1)
            no_newline = fb.read(1) not in (b"\n", b"\r")
    return short, n, no_newline, count


def check_csv(path: str | os.PathLike, *, max_bytes: int = 64 << 20) -> str | None:
    """A warning when a CSV / TSV has rows with fewer fields than its header (a truncated
    file's half row, which pandas fills with NaN silently), else ``None``.

    Files larger than ``max_bytes`` are checked only at their last line.
    """
    p = Path(path)
    try:
        short, n, no_newline, count = short_rows(p, max_bytes)
    except OSError as e:
        return f"{p}: unreadable ({e})"
    if not short:
        return None
    where = ", ".join("the last row" if i < 0 or i == count - 1 else f"row {i + 1}" for i in short[:5])
    cut = " and the file ends without a newline: it looks truncated" if no_newline else ""
    return (f"{p}: {len(short)} row(s) have fewer fields than the header's {n} ({where}){cut}; "
            "they are left out (rewrite the file to show them)")


def read_csv_checked(path: str | os.PathLike, **kwargs: Any) -> tuple[pd.DataFrame, str | None]:
    """``pd.read_csv`` without the rows :func:`check_csv` finds short, and its warning.

    Raises
    ------
    DataError
        The file cannot be read at all (names it).
    """
    p = Path(path)
    sep = "\t" if p.suffix.lower() in (".tsv", ".txt") else ","
    try:
        df = pd.read_csv(p, sep=sep, **kwargs)
        short = short_rows(p, 64 << 20)[0]
    except Exception as e:
        raise DataError(f"{p}: cannot read the table ({type(e).__name__}: {e})") from e
    if not short:
        return df, None
    drop = [len(df) - 1 if i < 0 else i for i in short]
    return df.drop(index=df.index[[i for i in drop if 0 <= i < len(df)]]).reset_index(drop=True), check_csv(p)


def trained_on_synthetic(info: Mapping[str, Any]) -> bool | None:
    """Whether a prediction's model was trained on a histoviz synthetic cohort.

    Reads ``uns["histoviz"]``: a ``provenance`` / ``trained_on`` entry when present, else the
    run config's ``data.cohort`` (a cohort folder with a synthetic ``manifest.json``).
    ``None`` when it cannot tell.
    """
    for key in ("provenance", "trained_on"):
        v = info.get(key)
        if isinstance(v, Mapping) and "synthetic" in v:
            return bool(v["synthetic"])
    cfg = info.get("config")
    if isinstance(cfg, str):
        import json

        try:
            cfg = json.loads(cfg)
        except ValueError:
            cfg = None
    cohort = ((cfg or {}).get("data") or {}).get("cohort") if isinstance(cfg, Mapping) else None
    if not cohort:
        return None
    return _synthetic_folder(Path(str(cohort)).parent)


def is_synthetic_slide(path: str | os.PathLike) -> bool | None:
    """Whether a slide file belongs to a histoviz synthetic cohort (``<cohort>/slides/x.tif``
    next to the cohort's ``manifest.json``); ``None`` when it cannot tell."""
    p = Path(path)
    return _synthetic_folder(p.parent.parent) if p.parent.name == "slides" else False


def _synthetic_folder(d: Path) -> bool | None:
    import json

    m = d / "manifest.json"
    if not m.is_file():
        return None if not d.is_dir() else False
    try:
        data = json.loads(m.read_text())
    except (OSError, ValueError):
        return None
    return isinstance(data, dict) and data.get("generator") == "histoviz.data.synthetic"
