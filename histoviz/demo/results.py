"""What a demo run produced, and its results file (``<out>/results.json``).

The README's demo tables are generated from a committed copy of that file
(``docs/results/demo.json``, by ``docs/gen_readme.py``), so every number the README quotes is
one a run printed. The file holds: the printed report (``log``, one string per line, output
folder written as ``demo_out``), the tables behind it as records (``tables``: one list of flat
dicts per step), the headline numbers (``numbers``), each run's shipped config and overrides
(``runs``), and the histoviz version.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_SCHEMA", "DemoResult", "jsonable"]

#: Bumped when the layout of ``results.json`` changes (the README renderer checks it).
RESULTS_SCHEMA = 1


def jsonable(x: Any) -> Any:
    """Plain JSON values: NaN and infinities as ``None``, numpy scalars and arrays as Python,
    paths and other objects as strings, mappings and sequences recursively."""
    import numpy as np

    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


@dataclass
class DemoResult:
    """What the demo produced (paths, tables, headline numbers and the printed report)."""

    out_dir: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def records(self, name: str, df: Any, columns: list[str] | None = None) -> None:
        """Keep a table (a DataFrame, or a list of dicts) as JSON records under ``tables[name]``."""
        rows = df.to_dict("records") if hasattr(df, "to_dict") else list(df)
        if columns is not None:
            rows = [{k: r.get(k) for k in columns} for r in rows]
        self.tables.setdefault(name, []).extend(jsonable(rows))

    def to_dict(self) -> dict[str, Any]:
        """The results file's content (see the module docstring)."""
        from histoviz._version import __version__

        return self._public(jsonable({"schema": RESULTS_SCHEMA, "histoviz_version": __version__, "log": self.log,
                                      "tables": self.tables, "numbers": self.numbers, "runs": self.runs}))

    def _public(self, x: Any) -> Any:
        """``x`` with this machine's absolute folders in strings replaced by ``demo_out`` (the
        output folder) and ``~`` (the home folder)."""
        if isinstance(x, dict):
            return {k: self._public(v) for k, v in x.items()}
        if isinstance(x, list):
            return [self._public(v) for v in x]
        if isinstance(x, str):
            for old, new in ((str(Path(self.out_dir).resolve()), "demo_out"), (str(Path.home()), "~")):
                x = x.replace(old, new)
        return x

    def write(self, path: str | os.PathLike | None = None) -> Path:
        """Write the results file atomically (default ``<out_dir>/results.json``)."""
        from histoviz._atomic import atomic_write_text

        p = Path(path) if path is not None else self.out_dir / "results.json"
        return atomic_write_text(p, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
