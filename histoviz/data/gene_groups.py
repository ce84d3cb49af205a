"""Gene groups: a user table gene -> group, matched against an expression table.

PathGen and MCAT read a patient's transcriptome as a few *gene groups* (one token per group).
The default for real cohorts is MCAT's six gene families, shipped as
``sample_data/gene_groups/mcat_signatures.csv`` (:func:`default_gene_groups`).

Table formats (CSV; TSV with a ``.tsv`` suffix):

- **wide** (MCAT's ``signatures.csv``): one column per group, its header the group name, gene
  symbols down the column, empty cells padding the shorter columns::

      Tumor Suppressor Genes,Oncogenes,...
      APC,ABL1,...
      ATM,,...

- **long**: two columns, one naming the gene (``gene``, ``symbol``, ``gene_symbol`` or
  ``hgnc_symbol``) and one the group (``group``, ``gene_group``, ``family`` or ``set``),
  one row per (gene, group) pair::

      gene,group
      APC,Tumor Suppressor Genes
      ABL1,Oncogenes

A gene may sit in several groups (MCAT's families overlap): it then feeds each of them, and a
warning says how many genes do. Symbols are matched to the expression table's targets exactly,
ignoring case and surrounding spaces (no prefix or regular-expression matching: ``ABL1`` never
matches ``ABL10``). :meth:`GeneGroups.summary` reports how many genes of each group matched (also
logged; a warning when a group matched fewer than half of its genes, as MCAT's table does on a
small expression panel); ``histoviz evaluate`` prints it for PathGen runs.

Bad input is a one-line :class:`~histoviz.errors.DataError` naming the file and what to do: an
unreadable or empty table, a group that lists no gene, no gene of the table in the expression
table, a group none of whose genes is in the expression table.

Examples
--------
>>> table = {"up": ["A", "B", "C"], "down": ["C", "D"]}
>>> g = match_gene_groups(table, ["a", "B", "C", "X"], source="example")
>>> g.genes, [list(map(int, i)) for i in g.index]
(['a', 'B', 'C'], [[0, 1, 2], [2]])
>>> g.summary()["matched"].tolist()
[3, 1]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

__all__ = [
    "MCAT_GROUPS",
    "GeneGroups",
    "default_gene_groups",
    "match_gene_groups",
    "read_gene_groups",
    "synthetic_gene_groups",
    "write_gene_groups",
]

log = logging.getLogger(__name__)

MCAT_GROUPS: tuple[str, ...] = (
    "Tumor Suppressor Genes",
    "Oncogenes",
    "Protein Kinases",
    "Cell Differentiation Markers",
    "Transcription Factors",
    "Cytokines and Growth Factors",
)
"""MCAT's six gene families, in MCAT's order."""

_GENE_COLS = ("gene", "symbol", "gene_symbol", "hgnc_symbol")
_GROUP_COLS = ("group", "gene_group", "family", "set")


def default_gene_groups() -> Path:
    """``sample_data/gene_groups/mcat_signatures.csv`` (MCAT's six gene families).

    Raises
    ------
    DataError
        The table is not in this installation (a wheel without ``sample_data``).
    """
    from histoviz.datasets import resource_dir

    d = resource_dir()
    p = d / "gene_groups" / "mcat_signatures.csv" if d is not None else None
    if p is None or not p.exists():
        raise DataError("the default gene-group table (sample_data/gene_groups/mcat_signatures.csv) is not in "
                        "this installation; give model.params.gene_groups: <your table.csv>")
    return p


def _clean(values: Any) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        s = str(v).strip()
        if s and s.upper() not in seen:
            seen.add(s.upper())
            out.append(s)
    return out


def read_gene_groups(source: str | os.PathLike | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Read a gene-group table (see the module docstring) as ``group -> genes`` (in table order,
    duplicates within a group dropped).

    Parameters
    ----------
    source
        A CSV / TSV path (wide or long layout), ``"mcat"`` for :func:`default_gene_groups`, or an
        in-memory mapping ``group -> genes``.

    Raises
    ------
    DataError
        Missing or unreadable file, no groups, a group that lists no gene.
    """
    if isinstance(source, Mapping):
        where = "gene-group mapping"
        raw = {str(k): _clean(v if not isinstance(v, str) else [v]) for k, v in source.items()}
    else:
        path = default_gene_groups() if str(source) == "mcat" else Path(source)
        where = str(path)
        if not path.exists():
            raise DataError(f"{path}: gene-group table not found (give a CSV with one column per group, or "
                            "gene,group rows)")
        try:
            df = pd.read_csv(path, sep="\t" if path.suffix.lower() in (".tsv", ".txt") else ",", dtype=str)
        except Exception as e:  # pandas raises several parser errors
            raise DataError(f"{path}: cannot read the gene-group table ({type(e).__name__}: {e})") from e
        raw = _from_frame(df, where)
    if not raw:
        raise DataError(f"{where}: no gene groups (expected one column per group, or gene,group rows)")
    empty = [g for g, genes in raw.items() if not genes]
    if empty:
        raise DataError(f"{where}: group(s) {empty} list no genes; remove them or fill them in")
    return raw


def _from_frame(df: pd.DataFrame, where: str) -> dict[str, list[str]]:
    cols = {str(c).strip().lower(): c for c in df.columns}
    gcol = next((cols[c] for c in _GENE_COLS if c in cols), None)
    scol = next((cols[c] for c in _GROUP_COLS if c in cols), None)
    if df.shape[1] == 2 and gcol is not None and scol is not None:  # long layout
        d = df[[gcol, scol]].copy()
        bad = d[scol].isna() & d[gcol].notna()
        if bad.any():
            raise DataError(f"{where}: {int(bad.sum())} row(s) have a gene but no group (e.g. "
                            f"{d.loc[bad, gcol].iloc[0]!r}); fill the {scol!r} column")
        out: dict[str, list[str]] = {}
        for grp, sub in d.dropna(subset=[scol]).groupby(scol, sort=False):
            out[str(grp).strip()] = _clean(sub[gcol].tolist())
        return out
    unnamed = [str(c) for c in df.columns if str(c).startswith("Unnamed:")]
    if unnamed:
        raise DataError(f"{where}: column(s) without a group name {unnamed}; every column header names a group")
    return {str(c).strip(): _clean(df[c].tolist()) for c in df.columns}


@dataclass
class GeneGroups:
    """Gene groups matched to an expression table.

    Attributes
    ----------
    names
        Group names (table order).
    genes
        The matched genes, each once (spelled as in the expression table), in order of first
        appearance over the groups: the columns of the concatenated gene-group vector.
    index
        Per group, ``int64`` indices into ``genes`` (a gene in two groups appears in both).
    in_table
        Per group, the number of genes the table lists.
    source
        Where the table came from (for messages).
    """

    names: list[str]
    genes: list[str]
    index: list[np.ndarray]
    in_table: list[int]
    source: str = "gene-group table"

    @property
    def sizes(self) -> list[int]:
        """Matched genes per group."""
        return [len(i) for i in self.index]

    def summary(self) -> pd.DataFrame:
        """``group, in_table, matched, fraction`` per group."""
        m = np.asarray(self.sizes)
        t = np.asarray(self.in_table)
        return pd.DataFrame({"group": self.names, "in_table": t, "matched": m,
                             "fraction": m / np.maximum(t, 1)})

    def describe(self) -> str:
        """One line: matched / listed genes of each group."""
        parts = [f"{n} {m}/{t}" for n, m, t in zip(self.names, self.sizes, self.in_table)]
        return f"{self.source}: genes matched per group: " + ", ".join(parts) + f" ({len(self.genes)} distinct)"

    def membership(self) -> pd.DataFrame:
        """Long ``gene, group`` table of the matched genes."""
        rows = [(self.genes[j], n) for n, idx in zip(self.names, self.index) for j in idx]
        return pd.DataFrame(rows, columns=["gene", "group"])

    def to_state(self) -> dict[str, Any]:
        """JSON-able form (for checkpoints)."""
        return {"names": list(self.names), "genes": list(self.genes),
                "index": [[int(j) for j in i] for i in self.index], "in_table": [int(t) for t in self.in_table],
                "source": self.source}

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> GeneGroups:
        """Inverse of :meth:`to_state`."""
        return cls(list(d["names"]), list(d["genes"]), [np.asarray(i, np.int64) for i in d["index"]],
                   [int(t) for t in d["in_table"]], str(d.get("source", "gene-group table")))


def match_gene_groups(
    table: str | os.PathLike | Mapping[str, Sequence[str]],
    genes: Sequence[str],
    *,
    source: str | None = None,
) -> GeneGroups:
    """Match a gene-group table to the genes of an expression table.

    Parameters
    ----------
    table
        Anything :func:`read_gene_groups` reads.
    genes
        Target names of the expression table (e.g. ``TargetBlock.targets``).
    source
        Name used in messages (default: the file name).

    Returns
    -------
    :class:`GeneGroups`; its :meth:`~GeneGroups.describe` is also logged.

    Raises
    ------
    DataError
        No gene of the table is in the expression table; a group none of whose genes is.
    """
    groups = read_gene_groups(table)
    where = source or ("gene-group mapping" if isinstance(table, Mapping) else str(table))
    lut: dict[str, int] = {}
    for j, g in enumerate(genes):
        lut.setdefault(str(g).strip().upper(), j)
    union: list[int] = []
    pos: dict[int, int] = {}
    index = []
    for gs in groups.values():
        idx = []
        for g in gs:
            j = lut.get(g.upper())
            if j is None:
                continue
            if j not in pos:
                pos[j] = len(union)
                union.append(j)
            idx.append(pos[j])
        index.append(np.asarray(idx, np.int64))
    if not union:
        ex = ", ".join(list(next(iter(groups.values())))[:3])
        ex_expr = ", ".join(str(g) for g in list(genes)[:3])
        raise DataError(f"{where}: none of its {sum(len(v) for v in groups.values())} genes is in the expression "
                        f"table ({len(genes)} genes, e.g. {ex_expr}; the table has e.g. {ex}); use the same gene "
                        "symbols in both or give a gene-group table for these genes")
    empty = [n for n, i in zip(groups, index) if len(i) == 0]
    if empty:
        raise DataError(f"{where}: group(s) {empty} have no gene in the expression table (0 of "
                        f"{[len(groups[n]) for n in empty]} matched); drop those groups from the table or check "
                        "their gene symbols")
    out = GeneGroups(list(groups), [str(genes[j]) for j in union], index, [len(v) for v in groups.values()], where)
    counts = np.bincount(np.concatenate(index), minlength=len(union))
    n_multi = int((counts > 1).sum())
    if n_multi:
        log.warning("%s: %d of %d matched genes sit in more than one group (allowed: each feeds every group it "
                    "is in)", where, n_multi, len(union))
    low = [n for n, m, t in zip(out.names, out.sizes, out.in_table) if m < 0.5 * t]
    if low:
        log.warning("%s; fewer than half of the genes of %s are in the expression table (check the gene symbols)",
                    out.describe(), low)
    else:
        log.info("%s", out.describe())
    return out


def write_gene_groups(groups: Mapping[str, Sequence[str]], path: str | os.PathLike) -> Path:
    """Write ``group -> genes`` as a wide (MCAT-layout) CSV, atomically."""
    from histoviz._atomic import atomic_path

    n = max((len(v) for v in groups.values()), default=0)
    df = pd.DataFrame({k: list(v) + [None] * (n - len(v)) for k, v in groups.items()})
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")
    return path


# known symbols of the synthetic cohort's marker genes and the MCAT family they belong to
_KNOWN = {
    "MYC": "Oncogenes", "ERBB2": "Oncogenes", "CCND1": "Oncogenes",
    "KDR": "Protein Kinases", "CSF1R": "Protein Kinases",
    "PTPRC": "Cell Differentiation Markers", "CD3E": "Cell Differentiation Markers",
    "CD2": "Cell Differentiation Markers", "MS4A1": "Cell Differentiation Markers",
    "CD8A": "Cell Differentiation Markers", "CD68": "Cell Differentiation Markers",
    "CD163": "Cell Differentiation Markers", "EPCAM": "Cell Differentiation Markers",
    "CDH1": "Tumor Suppressor Genes", "PECAM1": "Cell Differentiation Markers",
    "ENG": "Cell Differentiation Markers", "CDH5": "Cell Differentiation Markers",
}
# MCAT's group sizes (82, 328, 513, 452, 1536, 452) as shares
_MCAT_SHARE = np.array([82, 328, 513, 452, 1536, 452], np.float64) / 3363.0


def synthetic_gene_groups(genes: Sequence[str], rng: np.random.Generator, *, coverage: float = 0.85,
                          overlap: float = 0.05) -> dict[str, list[str]]:
    """Six MCAT-like groups over a synthetic gene list (for :mod:`histoviz.data.synthetic`).

    Known marker symbols go to their real family (``MYC`` -> oncogenes, ``CD68`` ->
    differentiation markers, ...); of the other genes a share ``coverage`` is assigned to a
    group with MCAT's group-size proportions, and a share ``overlap`` of the assigned genes to a
    second group (MCAT's families overlap too). Every group gets at least four genes.
    """
    k = len(MCAT_GROUPS)
    groups: dict[str, list[str]] = {g: [] for g in MCAT_GROUPS}
    for g in genes:
        fam = _KNOWN.get(str(g))
        u = rng.random()
        pick = int(rng.choice(k, p=_MCAT_SHARE))
        second = int(rng.choice(k, p=_MCAT_SHARE))
        o = rng.random()
        if fam is None and u >= coverage:
            continue
        first = MCAT_GROUPS.index(fam) if fam is not None else pick
        groups[MCAT_GROUPS[first]].append(str(g))
        if o < overlap and second != first:
            groups[MCAT_GROUPS[second]].append(str(g))
    spare = [str(g) for g in genes if not any(str(g) in v for v in groups.values())]
    for name in MCAT_GROUPS:
        while len(groups[name]) < 4 and spare:
            groups[name].append(spare.pop(0))
    return groups
