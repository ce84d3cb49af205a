"""Fill the README's generated blocks from the committed results in ``docs/results/``.

A generated block is everything between two marker lines::

    <!-- generated:KEY -->
    ...                      (written by this script; never edit by hand)
    <!-- /generated:KEY -->

``KEY`` is ``NAME`` or ``NAME.PART``. The block's text is rendered from
``docs/results/NAME.json`` by ``docs/renderers/NAME.py``: its function ``render(data)`` for the
key ``NAME``, ``render_PART(data)`` for ``NAME.PART`` (``-`` in ``PART`` read as ``_``). A
renderer returns Markdown; it may use :func:`md_table` and :func:`pm` from this module
(``from gen_readme import md_table, pm``).

    python docs/gen_readme.py                                  # rewrite README.md's blocks
    python docs/gen_readme.py --check                          # exit 1 when a block is stale
    python docs/gen_readme.py --take demo=demo_out/results.json   # copy a run's results, rewrite

``--take NAME=FILE`` copies a results file written by a run (``make demo`` writes
``demo_out/results.json``) to ``docs/results/NAME.json``, so the numbers in the README are the
ones that run produced; ``tests/test_readme.py`` fails when the README and the committed
results disagree.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
_OPEN = re.compile(r"^<!-- generated:([A-Za-z0-9_][A-Za-z0-9_.-]*) -->$")
_CLOSE = re.compile(r"^<!-- /generated:([A-Za-z0-9_][A-Za-z0-9_.-]*) -->$")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)?$")

__all__ = ["GenerateError", "blocks", "check", "generate", "md_table", "pm", "render_block", "take"]


class GenerateError(Exception):
    """A README block, results file or renderer that cannot be used (the message says which)."""


# ----------------------------------------------------------------------------------------------
# helpers for renderers
# ----------------------------------------------------------------------------------------------
def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (cells as given, ``None`` as an empty cell)."""
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|")

    out = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(out)


def pm(mean: float | None, sd: float | None = None, digits: int = 3) -> str:
    """``0.482 ± 0.022`` (``undefined`` for a missing or NaN mean; no ``±`` part without ``sd``)."""
    if mean is None or mean != mean:
        return "undefined"
    if sd is None or sd != sd:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


# ----------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------
def blocks(text: str, where: str = "README.md") -> list[tuple[str, int, int]]:
    """``(key, first line, last line)`` of each block's body (0-based line numbers; the body is
    ``lines[first:last]``, between the marker lines).

    Raises
    ------
    GenerateError
        A block without its closing marker, a closing marker without its opening one, or a block
        inside another.
    """
    out: list[tuple[str, int, int]] = []
    open_key: str | None = None
    start = 0
    for i, line in enumerate(text.splitlines()):
        m, c = _OPEN.match(line.strip()), _CLOSE.match(line.strip())
        if m:
            if open_key is not None:
                raise GenerateError(f"{where}:{i + 1}: block {m.group(1)!r} opens inside block {open_key!r}")
            open_key, start = m.group(1), i + 1
        elif c:
            if c.group(1) != open_key:
                raise GenerateError(f"{where}:{i + 1}: closing marker for {c.group(1)!r} without its opening marker")
            out.append((open_key, start, i))
            open_key = None
    if open_key is not None:
        raise GenerateError(f"{where}:{start}: block {open_key!r} is never closed (<!-- /generated:{open_key} -->)")
    return out


def _renderer(name: str, renderers: Path) -> ModuleType:
    if "gen_readme" not in sys.modules:  # renderers: ``from gen_readme import md_table, pm``
        helpers = ModuleType("gen_readme")
        helpers.__dict__.update({k: globals()[k] for k in __all__})
        sys.modules["gen_readme"] = helpers
    path = renderers / f"{name}.py"
    if not path.is_file():
        raise GenerateError(f"{path}: no renderer for results {name!r}; write one with a render(data) function")
    spec = importlib.util.spec_from_file_location(f"_readme_renderer_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load_results(path: Path) -> Any:
    if not path.is_file():
        raise GenerateError(f"{path}: results file not found; run what produces it, then "
                            f"python docs/gen_readme.py --take {path.stem}=<its results.json>")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise GenerateError(f"{path}: not readable JSON ({e})") from None


def render_block(key: str, *, results: Path = DOCS / "results", renderers: Path = DOCS / "renderers",
                 _cache: dict[str, Any] | None = None) -> str:
    """The text of block ``key`` rendered from ``results/NAME.json`` (no trailing newline)."""
    if not _KEY.match(key):
        raise GenerateError(f"block key {key!r}: expected NAME or NAME.PART (letters, digits, _ and -)")
    name, _, part = key.partition(".")
    cache = _cache if _cache is not None else {}
    if name not in cache:
        cache[name] = (_load_results(results / f"{name}.json"), _renderer(name, renderers))
    data, mod = cache[name]
    fn_name = f"render_{part.replace('-', '_')}" if part else "render"
    fn: Callable[[Any], str] | None = getattr(mod, fn_name, None)
    if fn is None:
        raise GenerateError(f"{renderers / (name + '.py')}: no function {fn_name}(data) for block {key!r}")
    try:
        text = fn(data)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise GenerateError(f"block {key!r}: {results / (name + '.json')} lacks what {fn_name} reads "
                            f"({type(e).__name__}: {e}); rerun what produces it") from None
    return str(text).strip("\n")


def generate(text: str, *, results: Path = DOCS / "results", renderers: Path = DOCS / "renderers",
             where: str = "README.md") -> str:
    """``text`` with every generated block re-rendered (everything outside blocks unchanged)."""
    lines = text.splitlines()
    cache: dict[str, Any] = {}
    out: list[str] = []
    pos = 0
    for key, first, last in blocks(text, where):
        out += lines[pos:first]
        body = render_block(key, results=results, renderers=renderers, _cache=cache)
        out += body.splitlines() if body else []
        pos = last
    out += lines[pos:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def check(readme: Path = ROOT / "README.md", *, results: Path = DOCS / "results",
          renderers: Path = DOCS / "renderers") -> list[str]:
    """Differences between ``readme``'s blocks and what the committed results render to
    (a unified diff per stale block; empty when the README is current)."""
    text = readme.read_text()
    new = generate(text, results=results, renderers=renderers, where=str(readme))
    if new == text:
        return []
    old_b = {k: text.splitlines()[a:b] for k, a, b in blocks(text, str(readme))}
    new_b = {k: new.splitlines()[a:b] for k, a, b in blocks(new, str(readme))}
    return ["\n".join(difflib.unified_diff(old_b[k], new_b[k], f"README.md [{k}]", f"rendered [{k}]", lineterm=""))
            for k in old_b if old_b[k] != new_b.get(k)]


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def take(name: str, src: Path, *, results: Path = DOCS / "results") -> Path:
    """Copy a run's results file to ``results/NAME.json`` (validated JSON, written atomically)."""
    if not _KEY.match(name) or "." in name:
        raise GenerateError(f"--take {name}=...: NAME must be letters, digits, _ and -")
    data = _load_results(Path(src))
    results.mkdir(parents=True, exist_ok=True)
    dst = results / f"{name}.json"
    _write(dst, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--check", action="store_true", help="exit 1 when a block differs from its results")
    p.add_argument("--take", action="append", default=[], metavar="NAME=FILE",
                   help="copy FILE to docs/results/NAME.json first (repeatable)")
    a = p.parse_args(argv)
    try:
        for spec in a.take:
            name, sep, src = spec.partition("=")
            if not sep:
                raise GenerateError(f"--take {spec!r}: expected NAME=FILE")
            print(f"{src} -> {take(name, Path(src))}")
        if a.check:
            stale = check(a.readme)
            for d in stale:
                print(d)
            if stale:
                print(f"{len(stale)} generated block(s) of {a.readme} differ from docs/results; "
                      "run python docs/gen_readme.py", file=sys.stderr)
            return 1 if stale else 0
        text = a.readme.read_text()
        new = generate(text, where=str(a.readme))
        if new != text:
            _write(a.readme, new)
        print(f"{a.readme}: {len(blocks(new))} generated block(s), {'updated' if new != text else 'unchanged'}")
        return 0
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
