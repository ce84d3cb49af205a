"""Harness of the bad-input and fault tests (``tests/test_faults.py``, ``tests/gui/test_faults_napari.py``).

A case runs one ``histoviz`` command on a copy of its inputs (a "world" folder) and checks what a
user would: the exit code, a single stderr line naming the file and what to do, no traceback, and
that nothing in the world but the command's own output was written, replaced or removed.

Small file systems: :func:`tmpfs` mounts a size-limited tmpfs and :func:`read_only` a read-only
bind mount (root only, as in CI); without them the tests that need them skip with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# what changed in a folder
# ------------------------------------------------------------------------------------------------
def snapshot(world: Path) -> dict[str, str]:
    """``relative path -> digest`` of every file (links by target, folders as such) under ``world``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(world):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(world))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                try:
                    out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
                except PermissionError:
                    out[rel] = f"unreadable:{p.stat().st_size}"
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Paths added, removed or rewritten."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def outside(paths: set[str], allowed: tuple[str, ...]) -> set[str]:
    """Changed paths that lie outside every allowed output (a path or a folder prefix)."""
    return {p for p in paths if not any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed)}


@contextlib.contextmanager
def _chdir(d: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(d)
    try:
        yield
    finally:
        os.chdir(old)


# ------------------------------------------------------------------------------------------------
# a case and how it runs
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input or fault.

    ``argv(world)`` builds the command line; the single stderr line must contain ``names`` (the
    file, relative to the world) and match the regex ``fix`` (what to do); ``allowed`` lists the
    world paths the command may create (its output). ``setup(world)`` makes the bad input.
    """

    id: str
    argv: Callable[[Path], list[str]]
    names: str
    fix: str
    rc: int = 1
    setup: Callable[[Path], Any] | None = None
    allowed: tuple[str, ...] = ()
    subprocess: bool = False  # a crash (exit code) or the process's own privileges matter
    wrap: tuple[str, ...] = ()  # command prefix for a subprocess case (e.g. dropped privileges)
    warn: str = ""  # for rc 0: a warning line that must be shown
    needs: tuple[str, ...] = field(default=())  # "tmpfs", "read_only", "setpriv"


def run_case(case: Case, world: Path, capsys: Any, caplog: Any) -> tuple[int, str]:
    """Run ``case`` in ``world`` (cwd) and check the outcome; returns ``(rc, stderr)``."""
    if case.setup is not None:
        case.setup(world)
    before = snapshot(world)
    argv = [str(a) for a in case.argv(world)]
    with _chdir(world):
        if case.subprocess:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
            p = subprocess.run([*case.wrap, sys.executable, "-m", "histoviz.cli", *argv], capture_output=True,
                               text=True, env=env, timeout=600)
            rc, err = p.returncode, p.stderr
        else:
            from histoviz.cli import main

            caplog.clear()
            capsys.readouterr()
            rc = main(argv)
            err = capsys.readouterr().err
            logged = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR", "CRITICAL")]
            assert not any(r.exc_info for r in logged), [r.getMessage() for r in logged]
            # as the command line shows them: log lines as they happen, the error last
            err = "".join(f"{r.levelname} {r.name}: {r.getMessage()}\n" for r in logged) + err
    after = snapshot(world)
    assert rc == case.rc, (case.id, rc, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if case.rc != 0:
        errors = [ln for ln in lines if ": error: " in ln]
        assert len(errors) == 1 and errors[0] == lines[-1], (case.id, err)
        line = errors[0]
        assert line.startswith(f"histoviz {argv[0]}: error: "), line
    else:
        assert case.warn, "a case that succeeds must say what it warns about"
        warned = [ln for ln in lines if "warning" in ln.lower()]
        assert len(warned) == 1, (case.id, err)
        line = warned[0]
        assert re.search(case.warn, line), (case.id, line)
    assert case.names in line, (case.id, line)
    assert re.search(case.fix, line), (case.id, line)
    extra = outside(changed(before, after), case.allowed)
    assert not extra, (case.id, sorted(extra))
    return rc, err


# ------------------------------------------------------------------------------------------------
# small and read-only file systems (root only)
# ------------------------------------------------------------------------------------------------
def _mount(args: list[str]) -> str | None:
    p = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if p.returncode == 0 else (p.stderr.strip() or f"mount exited with {p.returncode}")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"64k"``) mounted at ``where``; skips when it cannot be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root (mount -t tmpfs); CI runs as root")
    why = _mount(["-t", "tmpfs", "-o", f"size={size}", f"histoviz-{uuid.uuid4().hex[:6]}", str(where)])
    if why:
        pytest.skip(f"cannot mount a tmpfs here: {why}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def read_only(src: Path, where: Path) -> Iterator[Path]:
    """``src`` bind-mounted read-only at ``where``; skips when it cannot be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root; CI runs as root")
    why = _mount(["--bind", str(src), str(where)])
    if why:
        pytest.skip(f"cannot bind-mount here: {why}")
    try:
        why = _mount(["-o", "remount,ro,bind", str(where)])
        if why:
            pytest.skip(f"cannot remount read-only here: {why}")
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def without_file_permissions() -> tuple[str, ...]:
    """A command prefix that runs without root's power to read any file, or skip."""
    import shutil

    if os.geteuid() != 0:
        return ()  # an ordinary user is already bound by permissions
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop root's file-permission override")
    caps = "-dac_override,-dac_read_search"
    return ("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}")


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------
N_PATIENTS = 30
EMBED = {"encoder": "morphology", "tile_size": 224, "mpp": 0.5}


def tissue_image(side: int = 896, seed: int = 0) -> np.ndarray:
    """An RGB image: white glass around an H&E-coloured square of 3/4 of the side (896 px: 3 x 3
    tiles of 224 px)."""
    rng = np.random.default_rng(seed)
    img = np.full((side, side, 3), 243, np.uint8)
    img += rng.integers(0, 6, img.shape, dtype=np.uint8)
    m = side // 8
    n = side - 2 * m
    t = slice(m, m + n)
    img[t, t, 0] = rng.integers(170, 230, (n, n))
    img[t, t, 1] = rng.integers(60, 130, (n, n))
    img[t, t, 2] = rng.integers(150, 210, (n, n))
    return img


def fake_cohort(root: Path, *, n: int = N_PATIENTS, dim: int = 51, seed: int = 0) -> tuple[Path, Path]:
    """A cohort table (``n`` patients, one slide each; grade, time, event) and morphology-like
    feature bags with the recipe ``EMBED`` records (so ``predict --slide`` accepts a run on them)."""
    import pandas as pd

    from histoviz.features.recipe import make_recipe
    from histoviz.io import FeatureBag

    rng = np.random.default_rng(seed)
    feats = root / "features"
    feats.mkdir(parents=True, exist_ok=True)
    recipe = json.dumps(make_recipe("morphology", {"tile_size": 224, "mpp": 0.5}, weights="none"), sort_keys=True)
    rows = []
    for i in range(n):
        sid = f"S{i:03d}"
        k = int(rng.integers(4, 9))
        coords = np.stack([np.arange(k) * 448, np.zeros(k, int)], 1).astype(np.int64)
        grade = 1 + i % 3
        x = rng.normal(size=(k, dim)).astype(np.float32) + grade
        FeatureBag(coords, x, {"slide_id": sid, "encoder": "morphology", "tile_size": 224, "mpp": 0.5,
                               "tile_size_level0": 448, "recipe": recipe}).to_h5(feats / f"{sid}.h5")
        rows.append({"slide_id": sid, "patient_id": f"P{i:03d}", "path": f"slides/{sid}.tif", "grade": grade,
                     "time": float(rng.uniform(5, 60)), "event": int(rng.random() < 0.9)})
    table = root / "cohort.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table, feats


def outcome_config(table: Path, feats: Path, **over: Any) -> dict[str, Any]:
    """A tiny joint grade + survival config (2 folds, 2 epochs, conformal on a calibration split)."""
    cfg = {
        "name": "tiny", "seed": 0,
        "data": {"cohort": str(table), "features": str(feats), "embed": dict(EMBED),
                 "outcomes": {"grade": {"column": "grade", "classes": [1, 2, 3]},
                              "survival": {"time": "time", "event": "event", "n_bins": 2}}},
        "model": {"name": "abmil-grade-survival", "params": {"embed_dim": 8, "attn_dim": 4, "hidden": 8}},
        "training": {"epochs": 2, "batch_size": 8, "final_model": True},
        "evaluation": {"n_folds": 2, "calibration_fraction": 0.4, "conformal": {"alpha": 0.25}},
    }
    for k, v in over.items():
        d = cfg
        *path, last = k.split(".")
        for p in path:
            d = d[p]
        d[last] = v
    return cfg


def write_yaml(path: Path, obj: Any) -> Path:
    """``obj`` as YAML at ``path``."""
    import yaml

    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def build_inputs(root: Path) -> Path:
    """``root`` with a slide (``slide.tif``), a cohort of bags (``cohort.csv``, ``features/``), a
    trained joint grade + survival run (``run/``) and a copy whose weights are NaN (``nan_run/``)."""
    import shutil

    from conftest import write_pyramid_tiff
    from safetensors.numpy import load_file, save_file

    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    table, feats = fake_cohort(root)
    write_pyramid_tiff(root / "slide.tif", tissue_image())
    cfg = write_yaml(root / "tiny.yaml", outcome_config(table, feats))
    run_experiment(load_config(cfg), root / "run")
    shutil.copytree(root / "run", root / "nan_run")
    for f in (root / "nan_run" / "checkpoints").glob("*/model.safetensors"):
        t = load_file(f)
        save_file({k: np.full_like(v, np.nan) if k.startswith("model.") and v.dtype.kind == "f" else v
                   for k, v in t.items()}, f)
    return root


def dicom_header(path: Path, *, cols: int, rows: int, frames: int, frame: int = 256) -> Path:
    """A DICOM whole-slide header (no pixel data) claiming ``cols x rows`` px in ``frames`` frames."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.Rows = ds.Columns = frame
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = cols, rows
    ds.NumberOfFrames = frames
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation, ds.PlanarConfiguration = 7, 0, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
