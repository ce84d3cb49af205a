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

from histoviz.errors import StorageError

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "check_writable",
    "clean_stale_temps",
    "default_file_mode",
    "format_bytes",
    "make_output_dir",
    "pid_alive",
    "refuse_input_as_output",
    "require_space",
    "storage_error",
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


#: errno values that say a place cannot take an output, and how to say it
_STORAGE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted"}
#: of those, the ones only a write can raise (a reader's EACCES must not be blamed on the output)
_WRITE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _errno_of(e: BaseException) -> int | None:
    n = getattr(e, "errno", None)
    if n is None:  # HDF5 reports a failed write inside the message of a RuntimeError
        m = re.search(r"errno = (\d+)", str(e))
        n = int(m.group(1)) if m else None
    return n


def format_bytes(n: float) -> str:
    """``n`` bytes as KB, MB or GB (binary units), for messages."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.0f} KB"


def _free(path: Path) -> str:
    import shutil

    for p in (path, *path.parents):
        try:
            return f"{format_bytes(shutil.disk_usage(p).free)} free"
        except OSError:
            continue
    return "free space unknown"


def storage_error(path: str | os.PathLike, e: BaseException, *, flag: str = "--out",
                  write_only: bool = False) -> StorageError | None:
    """The one-line :class:`~histoviz.errors.StorageError` for an ``OSError`` (or an HDF5 write
    error) that says ``path`` cannot take an output (no space, quota, read-only, permissions),
    naming what to do; ``None`` for any other error. ``write_only``: only the errors a write
    alone raises (no space, quota, read-only)."""
    n = _errno_of(e)
    if n not in (_WRITE_ONLY if write_only else _STORAGE):
        return None
    p = Path(path)
    if n in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"{p}: cannot write: {_STORAGE[n]} ({_free(p.parent)}); free some space or "
                            f"choose another {flag}, then rerun the same command (finished work is kept)", str(p))
    if n == errno.EROFS:
        fix = f"choose a writable {flag}"
    else:
        fix = f"check the folder's owner and permissions, or choose another {flag}"
    return StorageError(f"{p}: cannot write: {_STORAGE[n]}; {fix}", str(p))


@contextlib.contextmanager
def _storage_errors(path: Path, *, flag: str = "--out", write_only: bool = False) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        err = storage_error(path, e, flag=flag, write_only=write_only)
        if err is None:
            raise
        raise err from e


def make_output_dir(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents), or say in one line why it cannot be.

    Raises
    ------
    StorageError
        ``path`` (or a folder on its way) is a file, or the place is read-only, full or not
        writable by this user.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise StorageError(f"{p}: exists and is a file, not a folder; give a folder for {flag} "
                           "(histoviz never replaces a file with a folder)")
    try:
        with _storage_errors(p, flag=flag):
            p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StorageError(f"{p}: a part of this path is a file, not a folder; give a folder for "
                           f"{flag}") from None
    return p


def require_space(path: str | os.PathLike, nbytes: int, *, what: str = "the output",
                  flag: str = "--out") -> None:
    """Refuse to start writing ``path`` when its disk has less than ``nbytes`` free.

    HDF5 cannot recover from a write that fails for lack of space (it crashes the process at a
    later close), so HDF5 outputs are checked before their first byte.

    Raises
    ------
    StorageError
        Too little free space, naming both sizes and what to do.
    """
    import shutil

    p = Path(path)
    folder = next((d for d in p.parents if d.exists()), Path.cwd())
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < nbytes:
        raise StorageError(f"{p}: cannot write: {what} needs about {format_bytes(nbytes)} and {folder} has "
                           f"{format_bytes(free)} free; free some space or choose another {flag}, then rerun the "
                           "same command (finished work is kept)", str(p))


def refuse_input_as_output(out: str | os.PathLike, *inputs: str | os.PathLike | None,
                           flag: str = "--out") -> None:
    """Refuse an output path that names one of the inputs (it would be replaced by the output).

    Raises
    ------
    StorageError
        ``out`` and an input are the same file.
    """
    o = Path(out)
    for i in inputs:
        if i is None or not Path(i).exists() or not o.exists():
            continue
        try:
            same = os.path.samefile(o, i)
        except OSError:
            same = False
        if same:
            raise StorageError(f"{o}: is an input of this command and would be replaced by its output; "
                               f"give another {flag}")


def check_writable(folder: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Create ``folder`` when needed and prove a file can be made in it, before long work.

    Raises
    ------
    StorageError
        As :func:`make_output_dir`, or no file can be created there.
    """
    d = make_output_dir(folder, flag=flag)
    with _storage_errors(d, flag=flag):
        fd, tmp = tempfile.mkstemp(prefix=f".probe.{writer_tag()}_", suffix=".tmp", dir=d)
    os.close(fd)
    os.unlink(tmp)
    return d


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
    if final.is_dir():
        raise StorageError(f"{final}: is a folder; give a file name for the output (histoviz never "
                           "replaces a folder with a file)")
    make_output_dir(final.parent)
    sfx = suffix if suffix is not None else final.suffix
    with _storage_errors(final):
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.{writer_tag()}_", suffix=f"{sfx}.tmp",
                                   dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _storage_errors(final, write_only=True):
            yield tmp_path
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, default_file_mode())
        with _storage_errors(final):
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
