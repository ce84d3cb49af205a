"""Omics tables as people download them, matched to a cohort's patients.

Layouts (the orientation is read from the ids, never assumed):

- **Xena** matrices: targets x samples, first column the target id, 15-character sample
  barcodes (``TCGA-A1-A0SB-01``) as column names; optionally gzipped;
- **cBioPortal** ``data_mrna_seq_v2_rsem.txt`` (``Hugo_Symbol``, ``Entrez_Gene_Id``, then
  samples), ``data_rppa.txt`` (``Composite.Element.REF``, then samples), miRNA tables;
- **plain** samples x targets or targets x samples CSV/TSV/parquet, and ``.h5ad`` (either axis).

Rules, stated once (and in the import report):

- *orientation*: the axis whose ids are samples or patients of the cohort (TCGA barcodes by their
  first 12 characters, other ids directly or through the clinical sample table) holds the samples;
  when neither does, :class:`~histoviz.errors.DataError` shows both axes' ids and the cohort's;
- *leading text columns* of a targets x samples table (``Hugo_Symbol``, ``Entrez_Gene_Id``,
  descriptions) are annotation: the first of ``Hugo_Symbol``, ``Composite.Element.REF``, or the
  first column names the target; rows without a name are dropped;
- *duplicate target names* (e.g. one symbol for two Entrez ids) are collapsed to their **mean**;
- *samples -> patients*: samples of sample types not kept (default: tumour) are dropped; of a
  patient's kept samples the one its slides come from is used (else the lowest sample type code,
  e.g. primary 01 before metastasis 06), its aliquots and vials averaged;
- *value scale*, for the experiment configs: ``log`` (any negative value, or all values <= 100:
  already log-scaled or standardised, used as they are), ``counts`` (non-negative integers above
  100: total-count normalised, then ``log10(1 + x)``) or ``linear`` (RSEM, TPM, FPKM, RPM:
  ``log10(1 + x)``).
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.data.tcga import SAMPLE_TYPES, parse_barcode
from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["IdMatcher", "OmicsImport", "guess_modality", "import_omics_table", "value_scale"]

log = logging.getLogger(__name__)

_NAME_COLUMNS = ("Hugo_Symbol", "Composite.Element.REF", "gene", "Gene", "gene_symbol", "symbol", "miRNA_ID",
                 "mirna", "name", "Name", "sample", "id", "ID")
_ANNOTATION = {"Entrez_Gene_Id", "Entrez", "entrez", "Description", "description", "Gene_ID", "gene_id",
               "Cytoband", "Locus ID"}


@dataclass
class IdMatcher:
    """Which cohort patient an id (sample barcode, patient id, sample id) belongs to.

    Parameters
    ----------
    patients
        Patient ids of the cohort (slides kept).
    samples
        ``sample_id -> patient_id`` (cBioPortal sample table, slide mapping table).
    """

    patients: Collection[str]
    samples: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patients = set(map(str, self.patients))

    def patient_of(self, sid: str) -> str | None:
        """The cohort patient of ``sid`` or ``None``."""
        s = str(sid).strip()
        if s in self.patients:
            return s
        b = parse_barcode(s)
        if b is not None and b.patient in self.patients:
            return b.patient
        p = self.samples.get(s)
        return p if p in self.patients else None

    def count(self, ids: Any) -> int:
        """How many of ``ids`` belong to a cohort patient."""
        return sum(self.patient_of(i) is not None for i in ids)


@dataclass
class OmicsImport:
    """One modality matched to the cohort.

    Attributes
    ----------
    modality
        Its name (``gene``, ``protein``, ``mirna``, ...).
    adata
        obs = patients (``obs["sample_id"]`` the sample used), var = targets, float32.
    info
        What was read and decided: file, layout, orientation, targets, duplicates collapsed,
        rows without a name, samples matched / dropped with reasons, value scale.
    """

    modality: str
    adata: ad.AnnData
    info: dict[str, Any]


def guess_modality(path: str | os.PathLike) -> str:
    """``gene`` / ``protein`` / ``mirna`` from a downloaded file's name (else its stem)."""
    n = Path(path).name.lower()
    if "rppa" in n or "protein" in n:
        return "protein"
    if "mirna" in n or "mir_" in n or "microrna" in n:
        return "mirna"
    if any(k in n for k in ("mrna", "rsem", "hiseqv2", "rnaseq", "rna_seq", "expression", "gene", "fpkm", "tpm")):
        return "gene"
    stem = n.split(".")[0]
    return stem.removeprefix("data_") or "omics"


def value_scale(x: np.ndarray) -> str:
    """``log``, ``counts`` or ``linear`` (see the module docstring)."""
    v = np.asarray(x, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() < 0 or v.max() <= 100:
        return "log"
    return "counts" if np.allclose(v, np.round(v)) else "linear"


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _text_header(path: Path) -> tuple[list[str], int, str]:
    opener: Callable[..., Any] = gzip.open if path.name.endswith(".gz") else open
    skip = 0
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
            for line in fh:
                if line.startswith("#") or not line.strip():
                    skip += 1
                    continue
                sep = "\t" if "\t" in line else ","
                return [h.strip().strip('"') for h in line.rstrip("\r\n").split(sep)], skip, sep
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read the omics table ({type(e).__name__}: {e})") from e
    raise DataError(f"{path}: empty omics table")


def _frame(path: Path) -> tuple[pd.DataFrame, str]:
    """The table as a frame with string column names (ids not yet interpreted) and its layout."""
    suf = path.name.lower()
    if suf.endswith(".parquet"):
        try:
            df = pd.read_parquet(path)
        except Exception as e:
            raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from e
        if not isinstance(df.index, pd.RangeIndex):
            df = df.reset_index()
        df.columns = [str(c) for c in df.columns]
        return df, "parquet"
    header, skip, sep = _text_header(path)
    try:
        df = pd.read_csv(path, sep=sep, skiprows=skip, low_memory=False,
                         na_values=["NA", "NaN", "nan", "", "null", "NULL", "[Not Available]"])
    except Exception as e:
        raise DataError(f"{path}: cannot read the omics table ({type(e).__name__}: {e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    layout = ("cbioportal" if header[:1] in (["Hugo_Symbol"], ["Composite.Element.REF"], ["Entrez_Gene_Id"])
              else "table")
    return df, layout


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(pd.to_numeric, errors="coerce").astype(np.float64)


def _targets_by_samples(df: pd.DataFrame, m: IdMatcher, info: dict[str, Any]) -> pd.DataFrame:
    """Rows = targets, columns = samples -> samples x targets."""
    from histoviz.data.tcga import parse_barcode as pb

    sample_cols = [c for c in df.columns if m.patient_of(c) is not None or pb(c) is not None]
    lead = [c for c in df.columns if c not in sample_cols]
    name = next((c for c in _NAME_COLUMNS if c in lead), lead[0] if lead else None)
    if name is None:
        raise DataError(f"{info['file']}: no column names the targets (expected e.g. Hugo_Symbol before the sample "
                        "columns)")
    names = df[name].astype("string").str.strip()
    if name == "Hugo_Symbol" and "Entrez_Gene_Id" in df.columns:
        info["target_rule"] = "Hugo_Symbol (rows without a symbol dropped)"
    blank = names.isna() | names.isin(["", "NA", "nan"])
    info["rows_without_name"] = int(blank.sum())
    info["annotation_columns"] = [c for c in lead if c != name]
    info["target_column"] = name
    body = _numeric(df.loc[~blank, sample_cols])
    body.index = names[~blank].astype(str).to_numpy()
    return body.T


def _samples_by_targets(df: pd.DataFrame, info: dict[str, Any]) -> pd.DataFrame:
    first = df.columns[0]
    body = df.drop(columns=first)
    text = [c for c in body.columns if not pd.api.types.is_numeric_dtype(body[c])
            and pd.to_numeric(body[c], errors="coerce").notna().mean() < 0.5]
    info["annotation_columns"] = text
    info["target_column"] = "(column names)"
    out = _numeric(body.drop(columns=text))
    out.index = df[first].astype(str).str.strip().to_numpy()
    return out


def _orient(df: pd.DataFrame, m: IdMatcher, path: Path, info: dict[str, Any]) -> pd.DataFrame:
    col_hits = m.count(df.columns)
    row_ids = df.iloc[:, 0].astype(str).tolist() if df.shape[1] else []
    row_hits = m.count(row_ids)
    if col_hits == 0 and row_hits == 0:
        tcga_cols = sum(parse_barcode(c) is not None for c in df.columns)
        tcga_rows = sum(parse_barcode(r) is not None for r in row_ids[:2000])
        ex_p = sorted(m.patients)[:3]
        if tcga_cols or tcga_rows:
            axis = "columns" if tcga_cols >= tcga_rows else "rows"
            raise DataError(f"{path}: its {axis} are TCGA samples, but none belongs to the {len(m.patients)} "
                            f"patients with slides (e.g. {ex_p}); is it the same project and were those slides kept?")
        raise DataError(f"{path}: neither its columns (e.g. {list(df.columns[1:4])}) nor its rows (e.g. "
                        f"{row_ids[:3]}) are samples or patients of the cohort (e.g. {ex_p}); give a table whose "
                        "sample ids are the slides' barcodes or patient ids, or map them with a clinical sample "
                        "file (SAMPLE_ID, PATIENT_ID) or --slide-map")
    if col_hits >= row_hits:
        info["orientation"] = "targets x samples"
        return _targets_by_samples(df, m, info)
    info["orientation"] = "samples x targets"
    return _samples_by_targets(df, info)


def _read_h5ad(path: Path, m: IdMatcher, info: dict[str, Any]) -> pd.DataFrame:
    import anndata as ad
    import scipy.sparse as sp

    try:
        a = ad.read_h5ad(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable .h5ad file ({type(e).__name__}: {e})") from e
    x = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    obs_ids = list(a.obs_names)
    for c in ("sample_id", "patient_id"):
        if c in a.obs.columns and m.count(a.obs[c].astype(str)) > m.count(obs_ids):
            obs_ids = a.obs[c].astype(str).tolist()
    if m.count(obs_ids) >= max(1, m.count(a.var_names)):
        info["orientation"] = "samples x targets (obs = samples)"
        return pd.DataFrame(x, index=obs_ids, columns=a.var_names.astype(str))
    if m.count(a.var_names):
        info["orientation"] = "targets x samples (var = samples)"
        return pd.DataFrame(x.T, index=a.var_names.astype(str), columns=a.obs_names.astype(str))
    raise DataError(f"{path}: neither its obs names (e.g. {obs_ids[:3]}) nor its var names (e.g. "
                    f"{list(a.var_names[:3])}) are samples or patients of the cohort (e.g. {sorted(m.patients)[:3]}); "
                    "give a table whose sample ids are the slides' barcodes or patient ids")


# ------------------------------------------------------------------------------------------------
# samples -> patients
# ------------------------------------------------------------------------------------------------
def _to_patients(mat: pd.DataFrame, m: IdMatcher, keep_types: Collection[str],
                 slide_samples: Mapping[str, Collection[str]], info: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    dropped: dict[str, list[str]] = {}
    groups: dict[str, list[tuple[str, str]]] = {}  # patient -> [(sample15 or id, column id)]
    for sid in mat.index:
        b = parse_barcode(sid)
        if b is not None and b.sample_type and b.sample_type not in keep_types:
            why = f"sample type {b.sample_type} ({SAMPLE_TYPES.get(b.sample_type, 'other')}) not kept"
            dropped.setdefault(why, []).append(sid)
            continue
        pid = m.patient_of(sid)
        if pid is None:
            dropped.setdefault("patient has no kept slide", []).append(sid)
            continue
        groups.setdefault(pid, []).append((b.sample if b is not None and b.sample else sid, sid))
    rows, used, notes = [], [], []
    for pid in sorted(groups):
        cands = groups[pid]
        samples = sorted({s for s, _ in cands})
        pick = next((s for s in samples if s in slide_samples.get(pid, ())), samples[0])
        cols = [c for s, c in cands if s == pick]
        if len(samples) > 1:
            notes.append(f"{pid}: samples {samples}; used {pick}")
            for s in samples:
                if s != pick:
                    dropped.setdefault("another sample of the patient was used", []).append(s)
        if len(cols) > 1:
            notes.append(f"{pid}: {len(cols)} aliquots of {pick} averaged")
        with np.errstate(all="ignore"):
            rows.append(np.nanmean(mat.loc[cols].to_numpy(np.float64), axis=0) if len(cols) > 1
                        else mat.loc[cols[0]].to_numpy(np.float64))
        used.append(pick)
    info["samples_in_table"] = int(len(mat))
    info["patients_matched"] = len(rows)
    info["samples_dropped"] = {k: {"n": len(v), "e.g.": v[:5]} for k, v in dropped.items()}
    info["sample_choices"] = notes[:50]
    out = pd.DataFrame(np.vstack(rows) if rows else np.zeros((0, mat.shape[1])), index=sorted(groups),
                       columns=mat.columns)
    return out, used


def import_omics_table(
    path: str | os.PathLike,
    matcher: IdMatcher,
    *,
    modality: str | None = None,
    keep_sample_types: Collection[str] = tuple(f"{i:02d}" for i in range(1, 10)),
    slide_samples: Mapping[str, Collection[str]] | None = None,
) -> OmicsImport:
    """Read one downloaded omics table and match it to the cohort (rules: the module docstring).

    Parameters
    ----------
    path
        The table (TSV/CSV/TXT, optionally ``.gz``; parquet; h5ad).
    matcher
        The cohort's patients (and known sample ids).
    modality
        Its name (default: from the file name, :func:`guess_modality`).
    keep_sample_types
        TCGA sample type codes kept (default: tumour, 01-09).
    slide_samples
        ``patient -> sample ids`` of the kept slides (which sample to prefer).

    Raises
    ------
    DataError
        Unreadable table, ids that match neither axis, no sample of a kept patient, non-numeric values.
    """
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: omics table not found")
    mod = modality or guess_modality(path)
    info: dict[str, Any] = {"file": str(path), "modality": mod}
    if path.suffix.lower() == ".h5ad":
        info["layout"] = "h5ad"
        mat = _read_h5ad(path, matcher, info)
    else:
        df, info["layout"] = _frame(path)
        if df.shape[1] < 2:
            raise DataError(f"{path}: one column only; expected a tab- or comma-separated table")
        mat = _orient(df, matcher, path, info)
    mat.columns = [str(c) for c in mat.columns]
    all_nan = mat.isna().all(axis=0)
    if all_nan.all():
        raise DataError(f"{path}: no numeric values in the table")
    n_dup = int(pd.Index(mat.columns).duplicated().sum())
    if n_dup:
        mat = mat.T.groupby(level=0, sort=False).mean().T
    info["duplicate_targets_collapsed"] = n_dup
    info["duplicate_rule"] = "mean of the rows with the same name"
    per, used = _to_patients(mat, matcher, set(keep_sample_types), slide_samples or {}, info)
    if per.empty:
        why = "; ".join(f"{k}: {v['n']}" for k, v in info["samples_dropped"].items())
        raise DataError(f"{path}: none of its {len(mat)} samples belongs to a kept patient ({why}); check "
                        "--sample-types and that the table belongs to these slides")
    empty = per.columns[per.isna().all(axis=0)]
    if len(empty):
        per = per.drop(columns=empty)
        info["targets_all_missing_dropped"] = int(len(empty))
    x = per.to_numpy(np.float32)
    if np.isinf(x).any():
        raise DataError(f"{path}: infinite values in the table")
    info["targets"] = int(x.shape[1])
    info["missing_values"] = int(np.isnan(x).sum())
    info["scale"] = value_scale(x)
    a = ad.AnnData(X=x, obs=pd.DataFrame({"sample_id": used}, index=pd.Index(per.index.astype(str), name="patient_id")),
                   var=pd.DataFrame(index=pd.Index(per.columns.astype(str), name="target")))
    log.info("%s: %s, %d patients x %d targets (%s)", path, info["orientation"], a.n_obs, a.n_vars, info["scale"])
    return OmicsImport(mod, a, info)
