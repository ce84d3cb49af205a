"""Gene panels: PAM50 ships in ``sample_data/gene_panels``; pasted lists; which panel genes
the runs' targets have (a previous symbol counts)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from histoviz.errors import DataError

__all__ = ["gene_panel", "list_panels", "match_panel", "parse_gene_list"]


def list_panels() -> list[str]:
    """Names of the gene panels shipped in ``sample_data/gene_panels`` (``pam50``)."""
    from histoviz.datasets import resource_dir

    d = resource_dir()
    if d is None or not (d / "gene_panels").is_dir():
        return []
    return sorted(p.stem for p in (d / "gene_panels").glob("*.csv"))


def gene_panel(name: str) -> pd.DataFrame:
    """A shipped gene panel: ``symbol, aliases`` (aliases: previous symbols, ``;``-separated).

    Raises
    ------
    DataError
        No such panel (lists those shipped).
    """
    from histoviz.datasets import resource_dir

    d = resource_dir()
    p = d / "gene_panels" / f"{name}.csv" if d is not None else None
    if p is None or not p.is_file():
        raise DataError(f"no gene panel {name!r}; shipped: {list_panels() or 'none (sample_data/ is not here)'}")
    df = pd.read_csv(p, comment="#", dtype=str, keep_default_na=False)
    return df[["symbol", "aliases"]]


def parse_gene_list(text: str) -> list[str]:
    """Gene symbols from pasted text (commas, semicolons, spaces or new lines), in order, once."""
    import re

    return list(dict.fromkeys(t for t in re.split(r"[\s,;]+", str(text)) if t))


def match_panel(panel: Sequence[str] | pd.DataFrame, targets: Iterable[str]) -> tuple[list[str], list[str]]:
    """Which panel genes the targets have (case-insensitive; a previous symbol counts).

    Returns
    -------
    ``(found, unknown)``: ``found`` are the targets' own names, ``unknown`` the panel symbols
    no target matches.
    """
    have = {str(t).upper(): str(t) for t in targets}
    if isinstance(panel, pd.DataFrame):
        items = [(str(s), [a for a in str(al).split(";") if a]) for s, al in zip(panel["symbol"], panel["aliases"])]
    else:
        items = [(str(s), []) for s in panel]
    found, unknown = [], []
    for sym, aliases in items:
        hit = next((have[n.upper()] for n in (sym, *aliases) if n.upper() in have), None)
        (found.append(hit) if hit is not None else unknown.append(sym))
    return list(dict.fromkeys(found)), unknown
