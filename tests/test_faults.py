"""Bad input and faults, as a hostile or unlucky user meets them: one table per area (slides and
embedding, cohort, training, model files, st-import, predict; napari in tests/gui).

Each case runs the ``histoviz`` command on a copy of its inputs and asserts the exit code, one
stderr line naming the file and what to do (no traceback), and that nothing but the command's
own output was written, replaced or removed (:mod:`_faults`). Full and read-only disks are real:
a small tmpfs and a read-only bind mount (root, as in CI; skipped with the reason elsewhere).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _faults import (
    ROOT,
    Case,
    dicom_header,
    outcome_config,
    read_only,
    run_case,
    tissue_image,
    tmpfs,
    without_file_permissions,
    write_yaml,
)

VISIUM = ROOT / "sample_data" / "real" / "visium_mini"


# ------------------------------------------------------------------------------------------------
# inputs, made once: a slide, a cohort of feature bags, a trained run and a run whose weights are NaN
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def world(fault_inputs, tmp_path):
    """A fresh copy of the inputs (the config's paths point into it)."""
    w = tmp_path / "world"
    shutil.copytree(fault_inputs, w, symlinks=True)
    cfg = outcome_config(w / "cohort.csv", w / "features")
    write_yaml(w / "tiny.yaml", cfg)
    (w / "notes.txt").write_text("a user's file\n")
    return w


def _run(case: Case, world: Path, capsys, caplog) -> tuple[int, str]:
    if "tmpfs" in case.needs:
        with tmpfs(world / "small", "64k"):
            return run_case(case, world, capsys, caplog)
    if "read_only" in case.needs:
        (world / "ro_src").mkdir()
        with read_only(world / "ro_src", world / "ro"):
            return run_case(case, world, capsys, caplog)
    return run_case(case, world, capsys, caplog)


def _cohort_variant(name: str, change) -> callable:
    """A setup writing ``<name>`` (the cohort table changed by ``change(df)``) and a config on it."""

    def setup(w: Path) -> None:
        import pandas as pd

        df = change(pd.read_csv(w / "cohort.csv"))
        df.to_csv(w / name, index=False)
        write_yaml(w / "variant.yaml", outcome_config(w / name, w / "features"))

    return setup


def _set(df, col, values):
    df[col] = values
    return df


def _two_slides_two_grades(df):
    df.loc[1, "patient_id"] = df.loc[0, "patient_id"]
    df.loc[0, "grade"], df.loc[1, "grade"] = 1, 2
    return df


EMBED = ["--encoder", "morphology", "--no-progress"]


# ------------------------------------------------------------------------------------------------
# slides and embedding
# ------------------------------------------------------------------------------------------------
def _links(w: Path) -> None:
    os.symlink("b.svs", w / "a.svs")
    os.symlink("a.svs", w / "b.svs")
    os.symlink("gone.svs", w / "dangling.svs")


def _locked(w: Path) -> None:
    shutil.copy(w / "slide.tif", w / "locked.tif")
    os.chmod(w / "locked.tif", 0)


SLIDES = [
    Case("symlink loop", lambda w: ["info", "a.svs"], "a.svs", "loop of symbolic links", setup=_links),
    Case("dangling link", lambda w: ["info", "dangling.svs"], "dangling.svs", "gone.svs, which does not exist",
         setup=_links),
    Case("unreadable file", lambda w: ["info", "locked.tif"], "locked.tif", "permission denied.*read access",
         setup=_locked, subprocess=True, needs=("setpriv",)),
    Case("dicom 10^7 x 10^7 px", lambda w: ["tile", "dcm/huge.dcm"], "huge.dcm", "more than any slide scan",
         setup=lambda w: dicom_header(w / "dcm" / "huge.dcm", cols=10**7, rows=10**7, frames=41667**2), subprocess=True),
    Case("dicom frames beyond the file", lambda w: ["info", "dcm"], "many.dcm", "claims 1000000000 frames",
         setup=lambda w: dicom_header(w / "dcm" / "many.dcm", cols=2048, rows=2048, frames=10**9)),
    Case("dicom frames missing", lambda w: ["info", "dcm/few.dcm"], "few.dcm", "256 frames.*holds 4",
         setup=lambda w: dicom_header(w / "dcm" / "few.dcm", cols=4096, rows=4096, frames=4)),
    Case("embed --out is a file", lambda w: ["embed", "slide.tif", "--out", "notes.txt", *EMBED], "notes.txt",
         "give a folder for --out"),
    Case("embed --out under a file", lambda w: ["embed", "slide.tif", "--out", "notes.txt/f", *EMBED],
         "notes.txt/f", "a part of this path is a file"),
    Case("tile --out is a file", lambda w: ["tile", "slide.tif", "--out", "notes.txt"], "notes.txt",
         "give a folder for --out"),
    Case("synth --out is a file", lambda w: ["synth", "--out", "notes.txt", "--slides", "2", "--size", "256"],
         "notes.txt", "give a folder for --out"),
    Case("demo --out is a file", lambda w: ["demo", "--out", "notes.txt", "--no-progress"], "notes.txt",
         "give a folder for --out"),
    Case("demo --out on a read-only disk", lambda w: ["demo", "--out", "ro/demo", "--no-progress"], "ro/demo",
         "read-only file system", needs=("read_only",)),
    Case("embed --scheduler unreachable", lambda w: ["embed", "slide.tif", "--out", "f", "--scheduler",
                                                     "tcp://127.0.0.1:1", *EMBED],
         "--scheduler tcp://127.0.0.1:1", "drop --scheduler"),
    Case("embed to a full disk", lambda w: ["embed", "slide.tif", "--out", "small/f", *EMBED], "small/f/slide.h5",
         "free some space.*rerun", needs=("tmpfs",), allowed=("small",)),
    Case("embed a cohort to a full disk", lambda w: ["embed", "cohort2.csv", "--out", "small/f", "--workers", "0",
                                                    *EMBED],
         "small/f/", "free some space.*rerun", needs=("tmpfs",), allowed=("small",),
         setup=lambda w: (w / "cohort2.csv").write_text("slide_id,patient_id,path\nA,P1,slide.tif\n")),
    Case("embed to a read-only disk", lambda w: ["embed", "slide.tif", "--out", "ro/f", *EMBED], "ro/f",
         "read-only file system; choose a writable --out", needs=("read_only",)),
]


@pytest.mark.parametrize("case", SLIDES, ids=[c.id for c in SLIDES])
def test_slides_and_embedding(case, world, capsys, caplog):
    if "setpriv" in case.needs:
        case = Case(**{**case.__dict__, "wrap": without_file_permissions()})
    _run(case, world, capsys, caplog)
    if "tmpfs" in case.needs:  # nothing half-written: no temporary file, no lock
        assert not [p for p in (world / "small").rglob(".*") if p.suffix in (".tmp", ".lock")]


def test_embed_without_cuda_refuses_gpus(world, capsys, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    run_case(Case("--gpus 0 without CUDA", lambda w: ["embed", "slide.tif", "--out", "f", "--gpus", "0", *EMBED],
                  "--gpus 0", "no CUDA GPU.*drop --gpus"), world, capsys, caplog)


_WRITE_ONTO_FULL_DISK = r"""
import sys, numpy as np
from histoviz.io.featurebag import FeatureBagWriter
FeatureBagWriter._check_space = lambda self, n: None  # as if another process filled the disk meanwhile
n = 20000
attrs = {"slide_id": "s", "encoder": "x", "tile_size": 1, "mpp": 1.0, "tile_size_level0": 1}
try:
    with FeatureBagWriter(sys.argv[1], np.zeros((n, 2), np.int64), 64, attrs) as w:
        for i in range(0, n, 64):
            w.write(i, np.ones((min(64, n - i), 64)))
except Exception as e:
    print(type(e).__name__, e, file=sys.stderr)
    sys.exit(1)
"""


def test_disk_filling_mid_write_is_one_error_not_a_crash(tmp_path):
    """HDF5 crashes the process (exit 139) when a write fails inside its close: the writer flushes
    each batch and, on failure, lets HDF5 release the file without writing again."""
    with tmpfs(tmp_path / "small", "64k") as small:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.run([sys.executable, "-c", _WRITE_ONTO_FULL_DISK, str(small / "s.h5")], env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
        assert p.stderr.startswith("StorageError ") and "s.h5: cannot write: no space left" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert list(small.iterdir()) == []  # the temporary file is gone, no half bag


def test_other_pixel_formats_read_as_their_pixels(tmp_path):
    """1-bit, white-is-zero, 16-bit, grey + alpha, palette and CMYK files give the pixels (and the
    tiles) of their 8-bit RGB or grey equivalent, instead of "truncated" or "no usable tissue"."""
    import tifffile
    from PIL import Image

    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid

    rgb = tissue_image()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    bw = grey < 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).convert("LA").save(tmp_path / "grey_alpha.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    tifffile.imwrite(tmp_path / "grey_alpha.tif", np.stack([grey, np.full_like(grey, 255)], -1),
                     photometric="minisblack", extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "white_is_zero.tif", 255 - grey, photometric="miniswhite")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=256)
    pal.save(tmp_path / "palette.tif")
    Image.fromarray(~bw).convert("1").save(tmp_path / "onebit.tif")
    want = {"grey_alpha.png": grey, "grey16.png": grey, "grey_alpha.tif": grey, "white_is_zero.tif": grey,
            "cmyk.tif": rgb, "palette.tif": np.asarray(pal.convert("RGB")), "onebit.tif": np.where(bw, 0, 255)}
    cfg = TilingConfig(mpp_override=0.5)
    n_rgb = len(make_tile_grid(open_slide(tmp_path / "rgb.png"), cfg))
    n_grey = len(make_tile_grid(open_slide(tmp_path / "grey.png"), cfg))
    assert n_rgb == n_grey >= 9, (n_rgb, n_grey)  # a grey scan is tiled as its colour original
    for name, ref in want.items():
        r = open_slide(tmp_path / name)
        px = r.read_region((0, 0), 0, r.dimensions).astype(int)
        ref3 = ref[..., None].repeat(3, 2) if ref.ndim == 2 else ref
        assert np.abs(px - ref3).max() <= 1, name
        if name != "onebit.tif":
            assert len(make_tile_grid(r, cfg)) == n_rgb, name


# ------------------------------------------------------------------------------------------------
# cohort
# ------------------------------------------------------------------------------------------------
COHORT = [
    Case("no patient_id column", lambda w: ["train", "variant.yaml", "--out", "r"], "no_patient.csv",
         "add a patient_id column.*one_patient_per_slide: true",
         setup=_cohort_variant("no_patient.csv", lambda d: d.drop(columns="patient_id"))),
    Case("blank patient ids", lambda w: ["train", "variant.yaml", "--out", "r"], "blank_patient.csv",
         "patient_id is empty for 2 slide.*fill it in",
         setup=_cohort_variant("blank_patient.csv", lambda d: _set(d, "patient_id", [None, ""] + list(d.patient_id[2:])))),
    Case("grades differ within a patient", lambda w: ["train", "variant.yaml", "--out", "r"], "conflict.csv",
         "differs between slides of patient.*one value", setup=_cohort_variant("conflict.csv", _two_slides_two_grades)),
    Case("empty table", lambda w: ["train", "variant.yaml", "--out", "r"], "empty.csv", "cannot read cohort table",
         setup=lambda w: ((w / "empty.csv").write_text(""),
                          write_yaml(w / "variant.yaml", outcome_config(w / "empty.csv", w / "features")))),
    Case("duplicate slide ids", lambda w: ["train", "variant.yaml", "--out", "r"], "dup.csv", "duplicate slide_id",
         setup=_cohort_variant("dup.csv", lambda d: _set(d, "slide_id", ["S000"] * 2 + list(d.slide_id[2:])))),
]


@pytest.mark.parametrize("case", COHORT, ids=[c.id for c in COHORT])
def test_cohort(case, world, capsys, caplog):
    _run(case, world, capsys, caplog)


def test_one_patient_per_slide_is_a_statement_the_user_makes(world):
    import pandas as pd

    from histoviz.training.config import load_config
    from histoviz.training.data import load_experiment_data

    pd.read_csv(world / "cohort.csv").drop(columns="patient_id").to_csv(world / "np.csv", index=False)
    cfg = outcome_config(world / "np.csv", world / "features")
    cfg["data"]["one_patient_per_slide"] = True
    data = load_experiment_data(load_config(write_yaml(world / "np.yaml", cfg)))
    assert len(data.patients) == 30 and data.patients[0] == "S000"  # each slide its own patient, as stated


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
TRAINING = [
    Case("every patient censored", lambda w: ["train", "variant.yaml", "--out", "r"], "censored.csv",
         "0 \\(censored\\) for every patient.*1 = event",
         setup=_cohort_variant("censored.csv", lambda d: _set(d, "event", 0))),
    Case("one grade class", lambda w: ["train", "variant.yaml", "--out", "r"], "one_grade.csv",
         "1 class.*needs >= 2", setup=_cohort_variant("one_grade.csv", lambda d: _set(d, "grade", 2))),
    Case("seed -5", lambda w: ["train", "tiny.yaml", "--out", "r", "--set", "seed=-5"], "tiny.yaml",
         r"seed: must be an integer in \[0, 2\*\*32\)"),
    Case("--out is a user's file", lambda w: ["train", "tiny.yaml", "--out", "notes.txt"], "notes.txt",
         "give a new folder for --out"),
    Case("--out is a user's folder", lambda w: ["train", "tiny.yaml", "--out", "features"], "features",
         "replaces only a run"),
    Case("bags made with another encoder", lambda w: ["train", "tiny.yaml", "--out", "r", "--set",
                                                      "data.embed.encoder=efficientnet-lite0"],
         "features", "encoder: 'efficientnet-lite0' vs 'morphology'.*data.embed"),
    Case("broken YAML", lambda w: ["train", "broken.yaml", "--out", "r"], "broken.yaml",
         r"line \d+, column \d+: .*fix the file", setup=lambda w: (w / "broken.yaml").write_text("name: x\ndata: {cohort: [\n")),
    Case("--out on a read-only disk", lambda w: ["train", "tiny.yaml", "--out", "ro/run"], "ro",
         "read-only file system", needs=("read_only",)),
]


@pytest.mark.parametrize("case", TRAINING, ids=[c.id for c in TRAINING])
def test_training(case, world, capsys, caplog):
    _run(case, world, capsys, caplog)


# ------------------------------------------------------------------------------------------------
# model files: encoder weights and checkpoints
# ------------------------------------------------------------------------------------------------
class Thing:
    """An object a pickle can hold and a tensors-only loader must refuse."""


def _weights(w: Path) -> None:
    import torch

    (w / "random.safetensors").write_bytes(np.random.default_rng(0).bytes(5000))
    (w / "empty.pth").write_bytes(b"")
    torch.save({"thing": Thing()}, w / "objects.pth")


def _damage(w: Path, name: str, data: bytes) -> None:
    (w / "run" / "checkpoints" / "final" / name).write_bytes(data)


EFFNET = ["--encoder", "efficientnet-lite0", "--no-progress"]
MODEL_FILES = [
    Case("random bytes as .safetensors", lambda w: ["embed", "slide.tif", "--out", "f", "--weights",
                                                    "random.safetensors", *EFFNET], "random.safetensors",
         "safetensors", setup=_weights),
    Case("zero-byte weights", lambda w: ["embed", "slide.tif", "--out", "f", "--weights", "empty.pth", *EFFNET],
         "empty.pth", "empty", setup=_weights),
    Case("pickled objects as weights", lambda w: ["embed", "slide.tif", "--out", "f", "--weights", "objects.pth",
                                                  *EFFNET], "objects.pth", "pickled objects", setup=_weights),
    Case("NaN checkpoint weights", lambda w: ["predict", "--model", "nan_run", "--features", "features/S001.h5",
                                              "--out", "p.h5ad"],
         "nan_run/checkpoints/final/model.safetensors", "NaN or infinite.*retrain.*another checkpoint"),
    Case("random bytes as a checkpoint", lambda w: ["predict", "--model", "run", "--features", "features/S001.h5",
                                                    "--out", "p.h5ad"], "final/model.safetensors",
         "not a readable safetensors file", setup=lambda w: _damage(w, "model.safetensors", b"\x00" * 100)),
    Case("broken model.json", lambda w: ["predict", "--model", "run", "--features", "features/S001.h5",
                                         "--out", "p.h5ad"], "final/model.json", "unreadable",
         setup=lambda w: _damage(w, "model.json", b"{not json")),
    Case("a folder that is not a run", lambda w: ["predict", "--model", "features", "--features",
                                                  "features/S001.h5", "--out", "p.h5ad"], "features",
         "not a finished histoviz run"),
]


@pytest.mark.parametrize("case", MODEL_FILES, ids=[c.id for c in MODEL_FILES])
def test_model_files(case, world, capsys, caplog):
    _, err = _run(case, world, capsys, caplog)
    assert "weights_only=False" not in err and "arbitrary code" not in err  # never advise unpickling


def test_encoders_lists_an_empty_weights_file_as_unusable(tmp_path, monkeypatch, capsys):
    from histoviz.cli import main

    (tmp_path / "ctranspath.pth").write_bytes(b"")
    monkeypatch.setenv("HISTOVIZ_WEIGHTS_DIR", str(tmp_path))
    assert main(["encoders", "--json"]) == 0
    rows = {r["name"]: r["weights"] for r in json.loads(capsys.readouterr().out)}
    assert rows["ctranspath"].startswith("unusable (") and "empty file" in rows["ctranspath"], rows["ctranspath"]


# ------------------------------------------------------------------------------------------------
# st-import
# ------------------------------------------------------------------------------------------------
def _visium(w: Path) -> None:
    shutil.copytree(VISIUM, w / "visium")


def _corrupt_hires(w: Path) -> None:
    _visium(w)
    png = w / "visium" / "spatial" / "tissue_hires_image.png"
    png.write_bytes(png.read_bytes()[:3000])


ST_IMPORT = [
    Case("--out is a folder", lambda w: ["st-import", "visium", "--out", "features"], "features",
         "is a folder; give a file name", setup=_visium),
    Case("--mpp nan", lambda w: ["st-import", "visium", "--out", "s.h5ad", "--mpp", "nan"], "visium",
         "--mpp must be a finite number > 0", setup=_visium),
    Case("corrupt tissue_hires_image.png", lambda w: ["st-import", "visium", "--out", "s.h5ad"],
         "visium/spatial/tissue_hires_image.png", "copy the Space Ranger folder again.*--slide", setup=_corrupt_hires),
    Case("--out on a read-only disk", lambda w: ["st-import", "visium", "--out", "ro/s.h5ad"], "ro/s.h5ad",
         "read-only file system", setup=_visium, needs=("read_only",)),
    Case("not a Space Ranger folder", lambda w: ["st-import", "features", "--out", "s.h5ad"], "features",
         "give the Space Ranger outs/ folder"),
]


@pytest.mark.parametrize("case", ST_IMPORT, ids=[c.id for c in ST_IMPORT])
def test_st_import(case, world, capsys, caplog):
    _run(case, world, capsys, caplog)


def test_st_import_out_may_not_name_its_source(world, capsys, caplog, monkeypatch):
    from histoviz.cli import main

    monkeypatch.chdir(world)
    _visium(world)
    assert main(["st-import", "visium", "--out", "s.h5ad"]) == 0
    run_case(Case("--out is the source", lambda w: ["st-import", "s.h5ad", "--out", "s.h5ad", "--mpp", "10",
                                                    "--slide", "visium/spatial/tissue_lowres_image.png"],
                  "s.h5ad", "is an input of this command.*give another --out"), world, capsys, caplog)


# ------------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------------
def _nan_bag(w: Path) -> None:
    from histoviz.io import FeatureBag

    b = FeatureBag.from_h5(w / "features" / "S001.h5")
    b.features[0, 3] = np.nan
    b.to_h5(w / "nan_bag.h5")


PREDICT = [
    Case("--device tpu9", lambda w: ["predict", "--model", "run", "--features", "features/S001.h5", "--out",
                                     "p.h5ad", "--device", "tpu9"], "--device 'tpu9'", "use auto, cpu, cuda"),
    Case("--out is the input", lambda w: ["predict", "--model", "run", "--features", "features/S001.h5", "--out",
                                          "features/S001.h5"], "features/S001.h5", "is an input"),
    Case("NaN features", lambda w: ["predict", "--model", "run", "--features", "nan_bag.h5", "--out", "p.h5ad"],
         "nan_bag.h5", "1 of .* NaN or infinite features.*embed the slide again", setup=_nan_bag),
    Case("a fold the run does not have", lambda w: ["predict", "--model", "run", "--fold", "7", "--features",
                                                     "features/S001.h5", "--out", "p.h5ad"], "fold7",
         "have \\['fold0', 'fold1', 'final'\\]"),
    Case("--out on a read-only disk", lambda w: ["predict", "--model", "run", "--features", "features/S001.h5",
                                                 "--out", "ro/p.h5ad"], "ro", "read-only file system",
         needs=("read_only",)),
    Case("--out on a full disk", lambda w: ["predict", "--model", "run", "--features", "features/S001.h5",
                                            "--out", "small/p.h5ad"], "small/p.h5ad", "needs about .* free; free some space",
         needs=("tmpfs",), allowed=("small",),
         setup=lambda w: (w / "small" / "filler").write_bytes(b"\0" * 60_000)),
    Case("a folder of bags to a user's file", lambda w: ["predict", "--model", "run", "--features", "features",
                                                         "--out", "notes.txt"], "notes.txt", "give a folder for --out"),
    Case("--mpp-override unlike the slide's", lambda w: ["predict", "--model", "run", "--slide", "slide.tif",
                                                         "--out", "p.h5ad", "--mpp-override", "0.45",
                                                         "--no-progress"],
         "slide.tif", "replaces the 0.5 um/px the slide records", rc=0, warn="--mpp-override 0.45 um/px",
         allowed=("p.h5ad",)),
]


@pytest.mark.parametrize("case", PREDICT, ids=[c.id for c in PREDICT])
def test_predict(case, world, capsys, caplog):
    _run(case, world, capsys, caplog)
    if case.rc == 0:
        from histoviz.io.predictions import read_predictions

        a = read_predictions(world / "p.h5ad")
        assert a.uns["histoviz"]["mpp"] == pytest.approx(0.45)  # the override the user asked for, said


# ------------------------------------------------------------------------------------------------
# set-up: the Makefile checks each system package
# ------------------------------------------------------------------------------------------------
def test_make_installs_each_missing_system_package(tmp_path):
    """`make`'s system step asks dpkg about every package, so one missing library is installed
    even when xvfb-run and chromium are present (apt-get replaced by a recorder)."""
    if not shutil.which("dpkg") or not shutil.which("make") or not shutil.which("xvfb-run"):
        pytest.skip("needs a Debian system with make and xvfb installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "apt.log"
    (fake / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    (fake / "apt-get").chmod(0o755)
    (fake / "id").write_text("#!/bin/sh\necho 0\n")
    (fake / "id").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    p = subprocess.run(["make", "-s", "-C", str(ROOT), "system-deps", "APT_PKGS=xvfb histoviz-not-a-package"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    calls = log.read_text().splitlines()
    assert any(c.startswith("install") and c.split()[-1] == "histoviz-not-a-package" and " xvfb" not in c
               for c in calls), calls
    log.unlink()
    p = subprocess.run(["make", "-s", "-C", str(ROOT), "system-deps", "APT_PKGS=xvfb"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert "system packages present" in p.stdout and not log.exists()


def test_wsidicomizer_conversion_runs_where_libturbojpeg_is_installed():
    """The DICOM conversion tests skip only when libturbojpeg0 is missing; `make` installs it."""
    if not shutil.which("dpkg"):
        pytest.skip("not a Debian system")
    if subprocess.run(["dpkg", "-s", "libturbojpeg0"], capture_output=True).returncode != 0:
        pytest.skip("libturbojpeg0 is not installed (make test installs it as root)")
    pytest.importorskip("wsidicomizer")
    from turbojpeg import TurboJPEG  # what wsidicomizer loads libturbojpeg through

    assert TurboJPEG() is not None
