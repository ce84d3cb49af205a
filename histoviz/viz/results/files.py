"""Checked reading of the tables a user drops under the results root: :func:`check_csv` finds
a truncated or short last row (pandas would fill it with NaN silently); :func:`read_csv_checked`
leaves such rows out and says so. (Whether a model or a slide is synthetic:
:mod:`histoviz.provenance`.)"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pandas as pd

from histoviz.errors import DataError

__all__ = ["check_csv", "read_csv_checked", "short_rows"]


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
