"""Atomic outputs: final files follow the umask; leftovers of dead writers are cleaned."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from histoviz._atomic import atomic_path, atomic_write_text, clean_stale_temps, writer_tag


@pytest.fixture
def umask():
    def set_(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_final_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    p = atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    # the same through writers that reopen the temporary file (h5py) and through the bag writer
    from histoviz.io import FeatureBag

    bag = FeatureBag(np.zeros((2, 2)), np.zeros((2, 3)), {"slide_id": "s"}).to_h5(tmp_path / "s.h5")
    assert stat.S_IMODE(bag.stat().st_mode) == 0o666 & ~mask
    # a plain open() under the same umask gives the same bits
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(plain.stat().st_mode) == stat.S_IMODE(p.stat().st_mode)


def test_failed_write_leaves_nothing(tmp_path):
    def write():
        with atomic_path(tmp_path / "x.h5") as tmp:
            tmp.write_bytes(b"half")
            assert writer_tag() in tmp.name
            raise RuntimeError

    with pytest.raises(RuntimeError):
        write()
    assert list(tmp_path.iterdir()) == []


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    # a writer that dies (SIGKILL-like: os._exit) inside atomic_path leaves its temp file
    code = (
        "import os, sys; from histoviz._atomic import atomic_path\n"
        f"cm = atomic_path({str(tmp_path / 's1.h5')!r}); t = cm.__enter__(); t.write_bytes(b'half')\n"
        "print(t.name, flush=True); os._exit(9)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    dead = tmp_path / out.stdout.strip()
    assert dead.exists()
    with atomic_path(tmp_path / "s2.h5") as live:  # this process: alive
        live.write_bytes(b"in progress")
        legacy = tmp_path / ".s3.abcd1234.h5.tmp"  # older histoviz: writer unknown
        legacy.write_bytes(b"?")
        removed = clean_stale_temps(tmp_path)
        assert removed == [dead] and live.exists() and legacy.exists()
        # a lock holder for s3 may remove every temp of s3, but not those of s2 or "s3x"
        other = tmp_path / ".s3x.abcd1234.h5.tmp"
        other.write_bytes(b"?")
        assert clean_stale_temps(tmp_path, stem="s3", owned=True) == [legacy]
        assert other.exists() and live.exists()
    assert (tmp_path / "s2.h5").read_bytes() == b"in progress"
