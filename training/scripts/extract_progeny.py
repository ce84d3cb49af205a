"""Extract PROGENy's human model (top N genes per pathway) from Debian's ``r-bioc-progeny``.

PROGENy (Schubert et al. 2018, Holland et al. 2020; Apache-2.0) ships its model as R lazy-load
data (``data/Rdata.rdb`` + ``Rdata.rdx``) inside the Bioconductor package. This script reads
that database with the pure-Python ``rdata`` package (no R needed) and writes a decoupler-style
network CSV (``source, target, weight, p_value``) keeping, per pathway, the ``--top`` genes
with the smallest p-value (what ``progeny::getModel(top=N)`` and ``decoupler``'s
``get_progeny(top=N)`` keep).

Usage (run once by a maintainer; the CSV is committed, nothing is downloaded at run time)::

    apt-get download r-bioc-progeny                # Debian bookworm: 1.20.0+ds-1
    dpkg-deb -x r-bioc-progeny_*_all.deb progeny_deb
    python training/scripts/extract_progeny.py progeny_deb \
        --out sample_data/progeny_human_top100.csv --top 100
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import lzma
import struct
import sys
import warnings
import zlib
from pathlib import Path

import pandas as pd


def _find_data_dir(root: Path) -> Path:
    hits = sorted(root.rglob("progeny/data/Rdata.rdx"))
    if not hits:
        sys.exit(f"{root}: no progeny/data/Rdata.rdx below this folder (extract the .deb first)")
    return hits[0].parent


def _decompress(blob: bytes) -> bytes:
    """One object of an R lazy-load database: 4-byte length, then (typed) compressed data."""
    (n,) = struct.unpack(">I", blob[:4])
    kind = blob[4:5]
    if kind == b"2":
        out = bz2.decompress(blob[5:])
    elif kind == b"Z":
        out = lzma.decompress(blob[5:])
    elif kind == b"0":
        out = blob[5:]
    else:  # zlib without a type byte (R's default "compress=TRUE")
        out = zlib.decompress(blob[4:])
    if len(out) != n:
        raise ValueError(f"decompressed {len(out)} bytes, expected {n}")
    return out


def read_lazyload(data_dir: Path, name: str) -> object:
    """Read object ``name`` from ``data_dir/Rdata.rdb`` with the ``rdata`` package."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that the index has no RDS header
        index = rdata.conversion.convert(
            rdata.parser.parse_data(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
        )
        variables = {str(k): v for k, v in index["variables"].items()}
        if name not in variables:
            sys.exit(f"{data_dir}: no object {name!r}; have {sorted(variables)}")
        start, length = (int(x) for x in variables[name])
        with open(data_dir / "Rdata.rdb", "rb") as fh:
            fh.seek(start)
            blob = fh.read(length)
        return rdata.conversion.convert(rdata.parser.parse_data(_decompress(blob), expand_altrep=True))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, help="folder where the .deb was extracted (dpkg-deb -x)")
    p.add_argument("--out", type=Path, default=Path("sample_data/progeny_human_top100.csv"))
    p.add_argument("--top", type=int, default=100, help="genes per pathway (smallest p-value)")
    p.add_argument("--organism", choices=["human", "mouse"], default="human")
    a = p.parse_args(argv)
    data_dir = _find_data_dir(a.root)
    model = read_lazyload(data_dir, f"model_{a.organism}_full")
    if not isinstance(model, pd.DataFrame) or not {"gene", "pathway", "weight", "p.value"} <= set(
        map(str, model.columns)
    ):
        sys.exit(f"unexpected PROGENy model layout: {type(model).__name__}")
    model.columns = [str(c) for c in model.columns]
    df = pd.DataFrame(
        {
            "source": model["pathway"].astype(str),
            "target": model["gene"].astype(str),
            "weight": model["weight"].astype(float),
            "p_value": model["p.value"].astype(float),
        }
    )
    top = (
        df.sort_values(["source", "p_value", "target"], kind="mergesort")
        .groupby("source", sort=True)
        .head(a.top)
        .reset_index(drop=True)
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    top.to_csv(a.out, index=False, float_format="%.6g")
    print(f"{len(top)} rows ({top['source'].nunique()} pathways x {a.top} genes) -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
