"""Atomic file output: write to a temporary sibling, then rename over the final name.

Temporary names record the writer (``.<stem>.p<pid>h<host>_<random><suffix>.tmp``), so a
later run can tell the leftovers of a killed process from files another live process is
still writing (:func:`clean_stale_temps`). Final files get the permissions the umask gives
(``0o666 & ~umask``), as a plain ``open(path, "w")`` would, not the 0600 of ``mkstemp``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "clean_stale_temps",
    "default_file_mode",
    "pid_alive",
    "writer_tag",
]

_UMASK_LOCK = threading.Lock()
_TAG_RE = re.compile(r"\.p(\d+)h([0-9a-f]{6})_[^/]*\.tmp$")


def _host_hash() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFF:06x}"


def writer_tag() -> str:
    """``p<pid>h<host hash>``: identifies this process in temporary and lock file names."""
    return f"p{os.getpid()}h{_host_hash()}"


def _umask() -> int:
    try:  # Linux >= 4.7: read without changing it (thread-safe)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def default_file_mode() -> int:
    """Permission bits a new file gets under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched, so a
    final name never holds a half-written file. The final file's mode follows the umask.

    Parameters
    ----------
    path
        Final file name.
    suffix
        Extension the temporary name carries before ``.tmp`` (default: that of ``path``);
        writers that pick a format from the extension need it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else final.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.{writer_tag()}_", suffix=f"{sfx}.tmp",
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the final path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def clean_stale_temps(
    folder: str | os.PathLike, *, stem: str | None = None, owned: bool = False
) -> list[Path]:
    """Remove temporary files that :func:`atomic_path` writers left behind when killed.

    A temporary file is stale when the process that made it (named in its file name) is no
    longer running on this machine. Files of live writers, and files of writers on other
    machines, are kept unless ``owned`` is true.

    Parameters
    ----------
    folder
        Folder to clean (not recursive).
    stem
        Only temporary files of this final name's stem (e.g. a slide id).
    owned
        The caller holds the lock for ``stem``, so nobody else can be writing it: every
        temporary file of ``stem`` is removed, including those of older histoviz versions
        (``.<stem>.<random>.tmp``) and of writers on other machines.

    Returns
    -------
    The removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if stem is not None:
        mine = re.compile(rf"^\.{re.escape(stem)}\.(p\d+h[0-9a-f]{{6}}_|[A-Za-z0-9_]+\.)")
    here = _host_hash()
    removed = []
    for p in folder.iterdir():
        if not (p.name.startswith(".") and p.name.endswith(".tmp")):
            continue
        if stem is not None and not mine.match(p.name):
            continue
        m = _TAG_RE.search(p.name)
        if owned and stem is not None:
            stale = True
        elif m is None:
            stale = False  # unknown writer: only removed by the lock holder
        else:
            stale = m.group(2) == here and not pid_alive(int(m.group(1)))
        if stale:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed
