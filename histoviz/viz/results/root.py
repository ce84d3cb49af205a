"""The results root: every path the dashboard reads lies under one folder.

``histoviz dashboard ROOT`` sets it (``$HISTOVIZ_RESULTS_ROOT``), else the working directory.
:func:`resolve_under` refuses anything else with one message that does not say whether the
file exists: absolute paths elsewhere, ``..``, a NUL byte, and **symbolic links that lead out
of the root** (a file link, a folder link, a link to ``/etc/passwd``); links that stay inside
the root are followed. :func:`find_runs` and :func:`find_files` never list anything reached
through a link out of the root, and visit a folder reached twice (a link loop) once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from histoviz.errors import DataError

__all__ = [
    "RESULTS_ROOT_ENV",
    "OutsideRootError",
    "find_files",
    "find_runs",
    "is_inside",
    "resolve_under",
    "results_root",
    "root_relative",
]

#: Environment variable naming the results root (set by ``histoviz dashboard ROOT``).
RESULTS_ROOT_ENV = "HISTOVIZ_RESULTS_ROOT"
#: Folders never searched (inside runs, or never holding what the pages list).
_SKIP_DIRS = {"checkpoints", "heldout", "__pycache__", "node_modules"}


class OutsideRootError(DataError):
    """A path outside the results root (the message never says whether it exists)."""


def results_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$HISTOVIZ_RESULTS_ROOT`` (made absolute) or the working directory.

    Raises
    ------
    DataError
        The variable names something that is not a folder.
    """
    env = (os.environ if environ is None else environ).get(RESULTS_ROOT_ENV, "").strip()
    root = Path(os.path.abspath(env or os.getcwd()))
    if not root.is_dir():
        raise DataError(f"{RESULTS_ROOT_ENV}={env}: not a folder; point it at the results folder "
                        "(histoviz dashboard ROOT)")
    return root


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path``, with every symbolic link resolved, lies under ``root`` (resolved too)."""
    return _within(os.path.realpath(path), os.path.realpath(root))


def resolve_under(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` (relative to ``root``, or absolute) as an absolute path inside ``root``.

    Raises
    ------
    OutsideRootError
        ``path`` leaves ``root`` (absolute elsewhere, ``..``, a NUL byte, a symbolic link out
        of the root): one message for every such path, whether or not it exists.
    """
    r = os.path.normpath(os.path.abspath(root))
    text = str(path).strip()
    if "\x00" in text:
        raise OutsideRootError(_outside(text, r))
    p = text if os.path.isabs(text) else os.path.join(r, text)
    a = os.path.normpath(os.path.abspath(p))
    if not _within(a, r) or not is_inside(r, a):
        raise OutsideRootError(_outside(text, r))
    return Path(a)


def _outside(text: str, root: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return (f"{shown}: outside the results root {root}; the dashboard reads only files under it "
            "(start it with `histoviz dashboard ROOT` to choose another root)")


def root_relative(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """``path`` relative to ``root`` (``"."`` for the root itself), for display."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return "." if rel == "." else rel


def _walk(root: Path, max_depth: int) -> Iterable[tuple[Path, list[str], list[str]]]:
    """``os.walk`` that follows links only while they stay under ``root``, visits each real
    folder once and yields only files that resolve under ``root``."""
    base = len(root.parts)
    real_root = os.path.realpath(root)
    seen: set[str] = set()
    for d, dirs, files in os.walk(root, followlinks=True):
        p = Path(d)
        real = os.path.realpath(d)
        if real in seen or not _within(real, real_root):
            dirs[:] = []
            continue
        seen.add(real)
        depth = len(p.parts) - base
        dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x not in _SKIP_DIRS
                         and not x.endswith(".partial") and _within(os.path.realpath(p / x), real_root))
        if depth >= max_depth:
            dirs[:] = []
        yield p, dirs, [f for f in files if _within(os.path.realpath(p / f), real_root)]


def find_runs(root: str | os.PathLike, *, max_depth: int = 4, limit: int = 500) -> list[Path]:
    """Published run directories under ``root`` (``root`` included), whatever their folder is
    called, sorted; interrupted runs (``.partial``) and anything inside a run are not listed."""
    from histoviz.io.rundir import is_run_dir

    r = Path(root)
    if not r.is_dir():
        return []
    out: list[Path] = []
    for d, dirs, _ in _walk(r, max_depth):
        if is_run_dir(d):
            out.append(d)
            dirs[:] = []
            if len(out) >= limit:
                break
    return sorted(out)


def find_files(root: str | os.PathLike, suffixes: Sequence[str], *, names: Sequence[str] = (),
               max_depth: int = 4, limit: int = 2000) -> list[Path]:
    """Files under ``root`` whose name ends with one of ``suffixes`` (and, when ``names`` is
    given, whose stem starts with one of them), sorted; run folders are not entered."""
    from histoviz.io.rundir import is_run_dir

    r = Path(root)
    if not r.is_dir():
        return []
    out: list[Path] = []
    low = tuple(s.lower() for s in suffixes)
    for d, dirs, files in _walk(r, max_depth):
        if d != r and is_run_dir(d):
            dirs[:] = []
            continue
        for f in sorted(files):
            fl = f.lower()
            if fl.startswith(".") or not fl.endswith(low):
                continue
            if names and not any(fl.startswith(n.lower()) for n in names):
                continue
            out.append(d / f)
            if len(out) >= limit:
                return sorted(out)
    return sorted(out)
