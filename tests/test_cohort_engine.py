"""Cohort runs: recipes (nothing silently reused or mixed), locks, kills and resumes, staging,
reports, progress, GPU resource plumbing, one-line CLI errors."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoviz.data.cohort import read_cohort
from histoviz.errors import ConfigError
from histoviz.features.cohort import embed_cohort
from histoviz.io import FeatureBag
from tests.conftest import make_layout_image, write_pyramid_tiff

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    rows = []
    for i in range(6):
        img, _ = make_layout_image(1344, 1120, seed=i)
        write_pyramid_tiff(d / f"s{i}.tif", img)
        rows.append((f"s{i}", f"p{i}", str(d / f"s{i}.tif")))
    p = d / "cohort.csv"
    pd.DataFrame(rows, columns=["slide_id", "patient_id", "path"]).to_csv(p, index=False)
    return p


@pytest.fixture(scope="module")
def reference(slides, tmp_path_factory):
    """Bags of a plain single-process run."""
    out = tmp_path_factory.mktemp("ref")
    res = embed_cohort(read_cohort(slides), out, encoder="morphology", workers=0, progress=False)
    assert res.counts()["done"] == 6
    return out


def _same_bags(a: Path, b: Path, ids) -> None:
    for sid in ids:
        fa, fb = FeatureBag.from_h5(a / f"{sid}.h5"), FeatureBag.from_h5(b / f"{sid}.h5")
        assert np.array_equal(fa.coords, fb.coords), sid
        assert np.array_equal(fa.features, fb.features), sid  # bitwise
        assert fa.attrs["recipe"] == fb.attrs["recipe"]


def _no_leftovers(out: Path) -> None:
    left = [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".lock"))]
    assert left == [], left


# ------------------------------------------------------------------------------------------
# recipes: reuse only what was made the same way (issue 10 items 10-11)
# ------------------------------------------------------------------------------------------
def test_rerun_with_other_recipe_is_refused_with_differences(slides, reference, tmp_path):
    import shutil

    out = tmp_path / "f"
    shutil.copytree(reference, out)
    cohort = read_cohort(slides)
    before = (out / "embed_config.json").read_text()
    res = embed_cohort(cohort, out, encoder="morphology", workers=0, progress=False)
    assert res.counts() == {"done": 0, "skipped": 6, "failed": 0}
    cases = [
        ({"encoder": "tiny-test"}, "encoder: 'tiny-test' vs 'morphology'"),
        ({"tiling": {"min_tissue_fraction": 0.3}}, "min_tissue_fraction: 0.3 vs 0.5"),
        ({"tiling": {"overlap": 0.5}}, "overlap: 0.5 vs 0.0"),
        ({"tiling": {"mask_method": "combined"}}, "mask_method: 'combined' vs 'robust'"),
    ]
    for kw, want in cases:
        with pytest.raises(ConfigError, match=f"holds bags made another way.*{want}.*--overwrite"):
            embed_cohort(cohort, out, **{"encoder": "morphology", **kw}, workers=0, progress=False)
    assert (out / "embed_config.json").read_text() == before  # not rewritten on refusal
    # a bag made another way inside a folder whose config agrees (e.g. a single-slide run)
    (out / "embed_config.json").unlink()
    bag = FeatureBag.from_h5(out / "s2.h5")
    rec = json.loads(bag.attrs["recipe"])
    bag.attrs["recipe"] = json.dumps({**rec, "mask_mpp": 4.0})
    bag.to_h5(out / "s2.h5")
    with pytest.raises(ConfigError, match="s2.*mask_mpp: 8.0 vs 4.0"):
        embed_cohort(cohort, out, encoder="morphology", workers=0, progress=False)
    res = embed_cohort(cohort, out, encoder="morphology", workers=0, progress=False, overwrite=True)
    assert res.counts()["done"] == 1 and res.counts()["skipped"] == 5
    _same_bags(reference, out, [f"s{i}" for i in range(6)])


def test_weights_digest_and_legacy_bags(slides, tmp_path):
    import torch
    from safetensors.torch import save_file

    from histoviz.features import create_encoder

    cohort = read_cohort(slides).iloc[:1]
    out = tmp_path / "w"
    embed_cohort(cohort, out, encoder="tiny-test", workers=0, progress=False)
    enc = create_encoder("tiny-test", seed=3)
    save_file({k: v.contiguous() for k, v in enc.model.state_dict().items()}, str(tmp_path / "w3.safetensors"))
    with pytest.raises(ConfigError, match=r"weights: sha256:[0-9a-f]+\.\. vs 'random:seed=0'"):
        embed_cohort(cohort, out, encoder="tiny-test", workers=0, progress=False,
                     encoder_kwargs={"weights": str(tmp_path / "w3.safetensors")})
    # a bag of an older histoviz (no recipe recorded) is not silently reused
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    b = FeatureBag.from_h5(out / "s0.h5")
    b.attrs.pop("recipe")
    b.to_h5(legacy / "s0.h5")
    with pytest.raises(ConfigError, match="not recorded.*cannot be checked"):
        embed_cohort(cohort, legacy, encoder="tiny-test", workers=0, progress=False)
    del torch


def test_recipe_api_for_predict(reference):
    from histoviz.features.recipe import compare_recipes, embedding_recipe, make_recipe

    rec = embedding_recipe(reference / "s0.h5")
    assert rec == embedding_recipe(FeatureBag.from_h5(reference / "s0.h5"))
    assert rec["encoder"] == "morphology" and rec["mpp"] == 0.5 and rec["tile_size"] == 224
    model = make_recipe("morphology", {"mpp": 1.0})
    assert compare_recipes(model, rec, keys=("encoder", "mpp", "tile_size")) == ["mpp: 1.0 vs 0.5"]
    assert compare_recipes(make_recipe("morphology"), rec) == []
    clam = {"encoder": "resnet50-trunc", "tile_size": 256}  # a CLAM bag: no recipe, no mpp
    diffs = compare_recipes(make_recipe("resnet50-trunc"), embedding_recipe(clam), keys=("tile_size", "mpp"))
    assert diffs == ["tile_size: 224 vs 256", "mpp: not recorded (a bag made by histoviz < 0.2 or "
                     "another tool), so they cannot be checked"]


# ------------------------------------------------------------------------------------------
# locks, concurrent writers, kills, stale temp files (issue 12 part 7, issue 10 item 13)
# ------------------------------------------------------------------------------------------
def test_slide_locked_by_a_live_process_is_left_to_it(slides, tmp_path):
    from histoviz.features.locks import SlideLock

    out = tmp_path / "l"
    out.mkdir()
    holder = SlideLock(out, "s1")
    assert holder.acquire()
    cohort = read_cohort(slides).iloc[:3]
    res = embed_cohort(cohort, out, encoder="morphology", workers=0, progress=False)
    st = {s.slide_id: s for s in res.slides}
    assert st["s1"].status == "busy" and f"process {os.getpid()}" in st["s1"].note
    assert not (out / "s1.h5").exists() and st["s0"].status == st["s2"].status == "done"
    holder.release()
    res = embed_cohort(cohort, out, encoder="morphology", workers=0, progress=False)
    assert res.counts() == {"done": 1, "skipped": 2, "failed": 0}
    _no_leftovers(out)


def test_lock_of_a_dead_process_is_recovered_and_said(slides, tmp_path, capsys):
    out = tmp_path / "dead"
    out.mkdir()
    code = ("from histoviz.features.locks import SlideLock; import os; "
            f"l = SlideLock({str(out)!r}, 's0'); assert l.acquire(); print(os.getpid(), flush=True); os._exit(9)")
    dead_pid = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, check=False).stdout.strip()
    assert (out / ".s0.lock").exists()
    res = embed_cohort(read_cohort(slides).iloc[:1], out, encoder="morphology", workers=0, progress=False)
    st = res.slides[0]
    assert st.status == "done"
    assert f"recovered the lock .s0.lock left by process {dead_pid}" in st.note and "is gone" in st.note
    assert "recovered the lock" in res.summary()
    _no_leftovers(out)


def _cli(out: Path, slides: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "histoviz.cli", "embed", str(slides), "--out", str(out),
                             "--encoder", "morphology", "--no-progress", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.mark.slow
def test_two_processes_on_one_folder_embed_each_slide_once(slides, reference, tmp_path):
    out = tmp_path / "two"
    procs = [_cli(out, slides, "--workers", "0") for _ in range(2)]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    done = {}
    for rep in sorted((out / "reports").glob("embed-*.json")):
        for s in json.loads(rep.read_text())["slides"]:
            done.setdefault(s["slide_id"], []).append(s["status"])
    assert sorted(done) == [f"s{i}" for i in range(6)]
    for sid, sts in done.items():
        assert sts.count("done") == 1 and set(sts) <= {"done", "skipped", "busy"}, (sid, sts)
    _same_bags(reference, out, done)
    _no_leftovers(out)


def _kill_after_first_bag(proc: subprocess.Popen, out: Path, kill) -> None:
    t0 = time.time()
    while not list(out.glob("s*.h5")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 240
        time.sleep(0.05)
    kill(proc)
    proc.communicate(timeout=60)


@pytest.mark.slow
def test_sigkill_of_process_group_then_rerun_is_bitwise_equal(slides, reference, tmp_path):
    out = tmp_path / "killed"
    p = _cli(out, slides, "--workers", "0")
    _kill_after_first_bag(p, out, lambda pr: os.killpg(pr.pid, signal.SIGKILL))
    assert len(list(out.glob("s*.h5"))) < 6
    p = _cli(out, slides, "--workers", "0")
    p.communicate(timeout=300)
    assert p.returncode == 0
    _same_bags(reference, out, [f"s{i}" for i in range(6)])
    _no_leftovers(out)


@pytest.mark.slow
def test_sigkill_of_one_dask_worker_then_rerun_is_bitwise_equal(slides, reference, tmp_path):
    import psutil

    out = tmp_path / "worker"
    p = _cli(out, slides, "--workers", "2")

    def kill_a_worker(proc):
        kids = [c for c in psutil.Process(proc.pid).children(recursive=True)
                if "dask" in " ".join(c.cmdline()) or "multiprocessing" in " ".join(c.cmdline())]
        victim = max(kids, key=lambda c: c.memory_info().rss)  # a worker holds torch: the biggest
        victim.send_signal(signal.SIGKILL)

    _kill_after_first_bag(p, out, kill_a_worker)
    p = _cli(out, slides, "--workers", "2")
    p.communicate(timeout=300)
    assert p.returncode == 0
    _same_bags(reference, out, [f"s{i}" for i in range(6)])
    _no_leftovers(out)


def test_single_slide_run_cleans_temp_files_of_killed_runs(slides, tmp_path):
    from histoviz.cli import main

    out = tmp_path / "one"
    out.mkdir()
    code = (f"from histoviz._atomic import atomic_path; import os; c = atomic_path({str(out / 's0.h5')!r}); "
            "t = c.__enter__(); t.write_bytes(b'x' * 100); os._exit(9)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False)
    assert len(list(out.glob(".s0.*.tmp"))) == 1
    path = read_cohort(slides)["path"][0]
    assert main(["embed", path, "--out", str(out), "--encoder", "morphology", "--no-progress"]) == 0
    _no_leftovers(out)


# ------------------------------------------------------------------------------------------
# staging, reports, progress, GPU resource plumbing
# ------------------------------------------------------------------------------------------
def test_staging_through_a_local_cache(slides, reference, tmp_path, monkeypatch):
    import errno
    import shutil

    from histoviz.features import staging

    cohort = read_cohort(slides).iloc[:2]
    cache = tmp_path / "cache"
    res = embed_cohort(cohort, tmp_path / "st", encoder="morphology", workers=0, progress=False,
                       stage_dir=cache)
    assert res.counts()["done"] == 2 and all(s.seconds_stage > 0 for s in res.slides)
    _same_bags(reference, tmp_path / "st", ["s0", "s1"])
    assert list(cache.iterdir()) == []  # copies removed when done
    # no space: refused before copying, the slide reported, nothing in the cache
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    res = embed_cohort(cohort, tmp_path / "nospace", encoder="morphology", workers=0, progress=False,
                       stage_dir=cache)
    assert res.counts()["failed"] == 2
    assert "cache: not enough space to stage s0.tif" in res.slides[0].error
    assert list(cache.iterdir()) == []
    monkeypatch.undo()
    # space runs out during the copy: the partial copy is removed
    real = shutil.copy2

    def full(src, dst, **kw):
        Path(dst).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(staging.shutil, "copy2", full)
    res = embed_cohort(cohort.iloc[:1], tmp_path / "enospc", encoder="morphology", workers=0,
                       progress=False, stage_dir=cache)
    assert "ran out of space while staging s0.tif" in res.slides[0].error
    assert list(cache.iterdir()) == []
    del real


def test_run_report_and_progress_line(slides, tmp_path):
    from histoviz.features.report import STAGES, ProgressLine

    cohort = pd.concat([read_cohort(slides).iloc[:2],
                        pd.DataFrame([{"slide_id": "gone", "patient_id": "x", "path": str(tmp_path / "gone.tif")}])])
    buf = io.StringIO()
    line = ProgressLine(0, stream=buf)
    res = embed_cohort(cohort, tmp_path / "r", encoder="morphology", workers=0, progress=line)
    assert line.events >= 2 and "slides 2/2" in buf.getvalue() and "tiles/s" in buf.getvalue()
    doc = json.loads((tmp_path / "r" / "embed_report.json").read_text())
    assert doc["totals"]["done"] == 2 and doc["totals"]["failed"] == 1 and doc["totals"]["tiles"] == 32
    by = {s["slide_id"]: s for s in doc["slides"]}
    for k in STAGES[1:]:
        assert by["s0"][f"seconds_{k}"] > 0, k
    assert by["gone"]["error"].endswith("gone.tif: slide file not found")
    assert doc["run"]["recipe"]["encoder"] == "morphology" and doc["run"]["host"]
    md = (tmp_path / "r" / "embed_report.md").read_text()
    assert "| s0 | done | 16 |" in md and "## Errors" in md and "gone.tif" in md
    assert res.report == tmp_path / "r" / "reports" / f"embed-{doc['run']['run_id']}.md"
    assert res.report.read_text() == md


@pytest.mark.slow
def test_gpus_spread_slides_with_dask_resources_cpu_plumbing(slides, reference, tmp_path):
    from histoviz.features.report import ProgressLine

    line = ProgressLine(0, stream=io.StringIO())
    res = embed_cohort(read_cohort(slides), tmp_path / "g", encoder="morphology", gpus=[0, 1],
                       device="cpu", progress=line)
    assert res.counts()["done"] == 6
    used = {s.worker.split("(GPU ")[1].rstrip(")") for s in res.slides}
    assert used == {"0", "1"}
    assert line.events > 0  # tile progress arrived from the workers through the scheduler
    _same_bags(reference, tmp_path / "g", [f"s{i}" for i in range(6)])


@pytest.mark.gpu
def test_gpus_run_on_their_devices(slides, tmp_path):  # not run here: no GPU on this machine
    import torch

    gpus = list(range(min(2, torch.cuda.device_count())))
    res = embed_cohort(read_cohort(slides), tmp_path / "gpu", encoder="morphology", gpus=gpus, progress=False)
    assert res.counts()["done"] == 6
    assert {s.device for s in res.slides} == {f"cuda:{g}" for g in gpus}
    assert {s.decode for s in res.slides} == {"device"}


# ------------------------------------------------------------------------------------------
# one-line errors (issue 10 item 17, engine part)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "want"), [
    (["--mpp", "nan"], "mpp must be a finite number"),
    (["--mpp", "inf"], "mpp must be a finite number"),
    (["--mpp-override", "1e6"], "mpp_override = 1e+06 um/px is outside the plausible range"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--device", "tpu9"], "--device 'tpu9' is not a device name"),
    (["--device", "cuda"], "--device cuda: no CUDA GPU is usable on this machine"),
    (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler tcp://127.0.0.1:9: cannot reach a dask scheduler"),
])
def test_cli_bad_values_are_one_line_errors(slides, tmp_path, capsys, args, want):
    import torch

    from histoviz.cli import main

    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc = main(["embed", str(slides), "--out", str(tmp_path / "o"), "--encoder", "morphology",
               "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 1 and want in err and len(err.strip().splitlines()) == 1, err


def test_encoders_says_what_a_weights_file_is(tmp_path, monkeypatch, capsys):
    import torch
    from safetensors.torch import save_file

    from histoviz.cli import main

    monkeypatch.setenv("HISTOVIZ_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    torch.save({"w": torch.zeros(2)}, tmp_path / "uni.bin")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "ctranspath.safetensors"))
    (tmp_path / "gigapath.safetensors").write_bytes(b"not really")
    assert main(["encoders", "--json"]) == 0
    rows = {r["name"]: r["weights"] for r in json.loads(capsys.readouterr().out)}
    assert rows["uni"].startswith("found, unverified") and "torch pickle" in rows["uni"]
    assert "available" not in rows["uni"]
    assert rows["ctranspath"].startswith("available") and "safetensors, 1 tensors" in rows["ctranspath"]
    assert rows["gigapath"].startswith("unusable") and "not a safetensors file" in rows["gigapath"]
