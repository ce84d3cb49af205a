"""Per-slide lock files, so processes sharing one output folder never embed a slide twice.

A lock is ``<out>/.<slide_id>.lock`` held with ``flock``: the kernel releases it when its
process dies (a crash, ``kill -9``, a lost dask worker), so a dead process never blocks a
slide. The file records who holds it; a lock file found unlocked but still naming a holder
was left by a process that died, and taking it over is said in the slide's status.

``flock`` works between processes of one machine and on NFSv4; on file systems without
locking, give each process its own output folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from histoviz._atomic import default_file_mode, pid_alive

__all__ = ["SlideLock"]


class SlideLock:
    """Non-blocking exclusive lock of one slide's output.

    Use :meth:`acquire` (``True`` when this process now holds it), then :meth:`release`;
    after a failed acquire, :attr:`holder` describes the live holder. :attr:`recovered`
    describes the dead holder whose lock was taken over, if any.
    """

    def __init__(self, out_dir: str | os.PathLike, slide_id: str) -> None:
        self.path = Path(out_dir) / f".{slide_id}.lock"
        self._fd: int | None = None
        self.holder: dict[str, Any] = {}
        self.recovered = ""

    def acquire(self) -> bool:
        """Try to take the lock without waiting."""
        for _ in range(5):  # the file may be replaced between open and flock: retry
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, default_file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.holder = _read(fd)
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it
                os.close(fd)
                continue
            prev = _read(fd)
            if prev.get("pid"):
                where = prev.get("host", "?")
                alive = where == socket.gethostname() and pid_alive(int(prev["pid"]))
                state = "no longer holds it" if alive else "is gone"
                self.recovered = (f"recovered the lock {self.path.name} left by process "
                                  f"{prev['pid']} on {where} (started {prev.get('since', '?')}), "
                                  f"which {state}")
            me = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self._fd = fd
            return True
        return False

    def release(self) -> None:
        """Remove the lock file and let go (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still locked: a waiter sees a new inode and retries
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def describe_holder(self) -> str:
        """``process 123 on host (since ...)`` of the live holder after a failed acquire."""
        h = self.holder
        if not h:
            return "another process"
        return f"process {h.get('pid', '?')} on {h.get('host', '?')} (since {h.get('since', '?')})"

    def __enter__(self) -> SlideLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
