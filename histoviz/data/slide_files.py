"""Slides in a folder tree, and which patient (and sample) each belongs to.

:func:`find_slides` walks any folder tree, including the GDC download layout (one folder per
file UUID holding ``TCGA-XX-XXXX-01Z-00-DX1.<UUID>.svs`` and a ``logs/`` folder); a folder of
``.dcm`` files is one DICOM slide. :func:`identify_slides` names each slide's patient, from
(first that applies):

1. a mapping table (``slide_map``): a GDC sample sheet (``File Name``, ``Case ID``,
   ``Sample ID``) or any CSV/TSV with a slide column (``file``, ``filename``, ``slide_id``,
   ``path``) and ``patient_id`` (optionally ``sample_id``);
2. a TCGA barcode at the start of the file name (:mod:`histoviz.data.tcga`: patient = first 12
   characters, sample type, slide type);
3. a regular expression on the file name (``patient_regex``; the group ``patient``, or the first
   group).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from histoviz.data.tcga import parse_barcode
from histoviz.errors import ConfigError, DataError

__all__ = ["SLIDE_COLUMNS", "find_slides", "identify_slides", "read_slide_map"]

#: Columns of the table :func:`identify_slides` returns.
SLIDE_COLUMNS = ("slide_id", "patient_id", "sample_id", "sample_type", "tissue", "slide_type", "slide_kind",
                 "path", "id_source")

_SKIP_DIRS = {"logs", "__pycache__", "thumbnails"}
_PARTIAL = (".partial", ".part", ".tmp", ".crdownload", ".download")


def _wsi_suffix(name: str) -> bool:
    from histoviz.io.open import IMAGE_SUFFIXES, SLIDE_SUFFIXES

    low = name.lower()
    return any(low.endswith(s) for s in SLIDE_SUFFIXES - IMAGE_SUFFIXES - {".dcm"})


def find_slides(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Every whole-slide image under ``roots`` (files, or folders of a DICOM series), sorted.

    Hidden files and folders, ``logs/`` folders, partial downloads and MIRAX companion folders
    are skipped; PNG/JPEG images are not whole-slide images and are not listed.

    Raises
    ------
    DataError
        A root that does not exist, or no slide under any root.
    """
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    found: list[Path] = []
    for r in roots:
        root = Path(r)
        if not root.exists():
            raise DataError(f"{root}: slide folder not found")
        if root.is_file():
            found.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            d = Path(dirpath)
            stems = {Path(f).stem for f in filenames if f.lower().endswith(".mrxs")}
            dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n.lower() not in _SKIP_DIRS
                                 and n not in stems)
            dcm = [f for f in filenames if f.lower().endswith(".dcm")]
            if dcm:
                found.append(d)
            for f in sorted(filenames):
                if f.startswith(".") or f.lower().endswith(_PARTIAL):
                    continue
                if _wsi_suffix(f):
                    found.append(d / f)
    if not found:
        raise DataError(f"{', '.join(map(str, roots))}: no whole-slide images (.svs, .tif, .ndpi, .mrxs, .scn, "
                        "DICOM folders, ...) in this folder tree; point --slides at the folder that holds the "
                        "downloaded slides")
    return sorted(dict.fromkeys(found))


def read_slide_map(path: str | os.PathLike) -> pd.DataFrame:
    """A slide -> patient table: ``key`` (file name, stem or slide id), ``patient_id``, ``sample_id``.

    Accepts a GDC sample sheet (``File Name``, ``Case ID``, ``Sample ID``) or a CSV/TSV with a slide
    column (``file``, ``filename``, ``file_name``, ``slide``, ``slide_id``, ``path``) and
    ``patient_id`` (or ``patient``, ``case_id``, ``case_submitter_id``).

    Raises
    ------
    DataError
        Unreadable table, no slide or patient column, a slide listed twice with different patients.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: slide mapping table not found")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, comment=None)
    except Exception as e:
        raise DataError(f"{path}: cannot read the slide mapping table ({type(e).__name__}: {e})") from e
    cols = {c.strip().lower().replace(" ", "_"): c for c in df.columns}
    key = next((cols[c] for c in ("file_name", "filename", "file", "slide", "slide_id", "path") if c in cols), None)
    pat = next((cols[c] for c in ("patient_id", "patient", "case_submitter_id", "case_id", "submitter_id")
                if c in cols), None)
    if key is None or pat is None:
        raise DataError(f"{path}: the slide mapping table needs a slide column (file, filename, slide_id or path) "
                        f"and a patient column (patient_id or GDC's Case ID); it has {list(df.columns)}")
    samp = next((cols[c] for c in ("sample_id", "sample") if c in cols), None)
    out = pd.DataFrame({"key": df[key].map(lambda s: Path(str(s).strip()).name), "patient_id": df[pat].str.strip()})
    out["sample_id"] = df[samp].str.strip() if samp else ""
    # a GDC sample sheet lists several cases / samples as "a, b" for pooled files: keep the first
    for c in ("patient_id", "sample_id"):
        out[c] = out[c].str.split(",").str[0].str.strip()
    out = out[(out["key"] != "") & (out["patient_id"] != "")]
    clash = out.groupby("key")["patient_id"].nunique()
    if (clash > 1).any():
        raise DataError(f"{path}: slide(s) {clash[clash > 1].index[:5].tolist()} map to more than one patient; "
                        "give each slide one patient")
    return out.drop_duplicates("key").reset_index(drop=True)


def _regex(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"--patient-regex {pattern!r}: not a valid regular expression ({e})") from None
    if rx.groups == 0:
        raise ConfigError(f"--patient-regex {pattern!r}: needs a group for the patient, e.g. '^(P\\d+)_' or "
                          "'(?P<patient>P\\d+)'")
    return rx


def identify_slides(
    paths: Iterable[str | os.PathLike],
    *,
    slide_map: pd.DataFrame | None = None,
    patient_regex: str | None = None,
    source: str = "slides",
) -> pd.DataFrame:
    """One row per slide file with its ids (columns :data:`SLIDE_COLUMNS`).

    ``slide_id`` is the TCGA slide barcode (``TCGA-A1-A0SB-01Z-00-DX1``) or the file name up to its
    first dot; ``id_source`` says where the patient came from (``map``, ``tcga``, ``regex``).

    Raises
    ------
    DataError
        Slides whose patient none of the rules can tell (with an example and the fix).
    """
    from histoviz.io.open import slide_id_from_path

    rx = _regex(patient_regex)
    lut: dict[str, tuple[str, str]] = {}
    if slide_map is not None:
        for k, p, s in slide_map[["key", "patient_id", "sample_id"]].itertuples(index=False):
            lut[k] = (p, s)
    rows, unknown = [], []
    for p in paths:
        p = Path(p)
        name = p.name
        bc = parse_barcode(name)
        sid = bc.text if bc is not None and bc.slide else slide_id_from_path(p)
        row = {"slide_id": sid, "patient_id": "", "sample_id": "", "sample_type": "", "tissue": "",
               "slide_type": "", "slide_kind": "", "path": str(p), "id_source": ""}
        if bc is not None:
            row.update(sample_type=bc.sample_type or "", tissue=bc.tissue or "", slide_type=bc.slide_type or "",
                       slide_kind=bc.slide_kind or "")
        hit = next((lut[k] for k in (name, Path(name).stem, sid) if k in lut), None)
        if hit is not None:
            row.update(patient_id=hit[0], sample_id=hit[1] or (bc.sample if bc and bc.sample else ""),
                       id_source="map")
        elif bc is not None:
            row.update(patient_id=bc.patient, sample_id=bc.sample or "", id_source="tcga")
        elif rx is not None and (m := rx.search(name)) is not None:
            gd = m.groupdict()
            row.update(patient_id=gd.get("patient") or m.group(1), sample_id=gd.get("sample") or "",
                       id_source="regex")
            if gd.get("slide"):
                row["slide_id"] = gd["slide"]
        else:
            unknown.append(name)
        rows.append(row)
    if unknown:
        how = []
        if slide_map is None:
            how.append("--slide-map TABLE (a GDC sample sheet, or columns file, patient_id)")
        how.append("--patient-regex with a group for the patient" + (" that matches them" if rx is not None else ""))
        raise DataError(f"{source}: cannot tell the patient of {len(unknown)} slide(s) (e.g. {unknown[:3]}): "
                        f"not TCGA barcodes{' nor in the mapping table' if slide_map is not None else ''}; "
                        f"give {' or '.join(how)}")
    return pd.DataFrame(rows, columns=list(SLIDE_COLUMNS))
