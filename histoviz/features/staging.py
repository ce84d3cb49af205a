"""Stage slides from slow (network) storage to a local cache before reading them.

A slide is copied whole (with its companion files: an MRXS's data folder, a DICOM series
folder) under a temporary name and renamed when complete, so the cache never holds a
half-copied slide under a final name; the copy is removed when the slide is done. Free space
is checked first, and a copy that runs out of space is removed and reported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from histoviz._atomic import writer_tag
from histoviz.errors import StorageError

__all__ = ["slide_files", "staged_slide"]

_MARGIN = 64 * 2**20  # keep this much free beyond the copy


def slide_files(path: str | os.PathLike) -> list[Path]:
    """The file (or folder) of a slide plus its companions (MRXS: the folder of the same stem)."""
    p = Path(path)
    out = [p]
    if p.suffix.lower() == ".mrxs" and (p.parent / p.stem).is_dir():
        out.append(p.parent / p.stem)
    return out


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


@contextlib.contextmanager
def staged_slide(path: str | os.PathLike, cache_dir: str | os.PathLike, slide_id: str) -> Iterator[Path]:
    """Copy a slide into ``cache_dir`` for the duration of the block; yield the local path.

    Raises
    ------
    StorageError
        The cache folder cannot be created or lacks the space (checked before copying; a
        copy that still runs out of space is removed). The message names the folder and
        what is needed.
    """
    src = Path(path)
    cache = Path(cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{cache}: cannot create the staging folder ({e.strerror})") from None
    parts = slide_files(src)
    need = sum(_size(p) for p in parts)
    free = shutil.disk_usage(cache).free
    if free < need + _MARGIN:
        raise StorageError(
            f"{cache}: not enough space to stage {src.name} (needs {need / 2**20:.0f} MB + "
            f"{_MARGIN / 2**20:.0f} MB margin, {free / 2**20:.0f} MB free); free space, use "
            "another --stage-dir or read slides in place"
        )
    dest = cache / f"{slide_id}.{writer_tag()}"
    tmp = cache / f".{slide_id}.{writer_tag()}.staging.tmp"
    try:
        tmp.mkdir()
        for p in parts:
            if p.is_dir():
                shutil.copytree(p, tmp / p.name)
            else:
                shutil.copy2(p, tmp / p.name)
        os.replace(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(f"{cache}: ran out of space while staging {src.name} "
                               f"({need / 2**20:.0f} MB); the partial copy was removed") from None
        raise StorageError(f"{cache}: cannot stage {src} ({e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        yield dest / src.name
    finally:
        shutil.rmtree(dest, ignore_errors=True)
