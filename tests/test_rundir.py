"""The run directory has one owner: published whole, an interrupted train leaves the previous
run intact and resumes, two writers are refused; a new model plugs in without touching a
shared file (registration, training, evaluation, prediction and the output registry)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _model_fixtures import outcome_cohort

from histoviz.errors import DataError
from histoviz.training.config import load_config
from histoviz.training.runner import run_experiment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return outcome_cohort(tmp_path_factory)


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()}


_KILL_AFTER_FOLD_0 = """
import sys
from histoviz.cli import main
from histoviz.io.rundir import RunWriter

save = RunWriter.save_piece


def save_then_wait(self, key, tables, info):
    save(self, key, tables, info)
    if key == "0":
        print("fold 0 saved", flush=True)
        sys.stdin.read()  # until killed


RunWriter.save_piece = save_then_wait
sys.exit(main(["train", sys.argv[1], "--out", sys.argv[2], "--no-progress"]))
"""


def test_interrupted_train_leaves_the_previous_run_and_resumes(cohort, tmp_path):
    out = tmp_path / "run"
    base = cohort.config("first", "abmil-grade", outcomes=("grade",), params={"embed_dim": 32, "hidden": 32},
                         epochs=30)
    run_experiment(load_config(base), out)
    before = _snapshot(out)
    first = json.loads((out / "run.json").read_text())

    second = {**base, "name": "second", "seed": 1, "training": {**base["training"], "epochs": 40}}
    cfg_path = tmp_path / "second.yaml"
    cfg_path.write_text(yaml.safe_dump(second))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # `histoviz train` in a child that stops at a known point: right after fold 0 is saved it says so
    # and waits; the parent kills it there (no polling, no sleep)
    proc = subprocess.Popen([sys.executable, "-c", _KILL_AFTER_FOLD_0, str(cfg_path), str(out)], env=env,
                            start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in iter(proc.stdout.readline, ""):  # blocks until the child says so, or ends
        if line == "fold 0 saved\n":
            break
    else:
        pytest.fail(f"the training process ended (exit {proc.wait()}) before fold 0 was saved")
    partial = out.with_name("run.partial")
    assert (partial / "folds" / "0" / "done").exists() and not (partial / "folds" / "1" / "done").exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # the previous run is untouched, byte for byte
    assert _snapshot(out) == before
    assert json.loads((out / "run.json").read_text()) == first
    assert partial.exists() and out.with_name("run.lock").exists()  # a stale lock of a dead process
    fold0 = (partial / "checkpoints" / "fold0" / "model.safetensors").stat().st_mtime_ns

    # the same command again: takes over the stale lock, keeps fold 0, publishes the new run whole
    res = run_experiment(load_config(second), out)
    assert json.loads((out / "run.json").read_text())["name"] == "second"
    assert (out / "checkpoints" / "fold0" / "model.safetensors").stat().st_mtime_ns == fold0
    assert not partial.exists() and not out.with_name("run.lock").exists()
    assert sorted(res.metrics["fold"].unique()) == [0, 1, 2, 3]
    # a fresh, uninterrupted run of the same config gives the same fold-0 numbers
    fresh = run_experiment(load_config(second), tmp_path / "fresh")
    a = res.metrics[res.metrics["fold"] == 0].reset_index(drop=True)
    b = fresh.metrics[fresh.metrics["fold"] == 0].reset_index(drop=True)
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), atol=1e-6)


def test_a_second_writer_is_refused_and_other_configs_never_mix(cohort, tmp_path):
    from histoviz.io.rundir import RunWriter

    out = tmp_path / "run"
    lock = out.with_name("run.lock")
    lock.write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(DataError, match=r"another histoviz train \(pid \d+\) is writing this run"):
        run_experiment(load_config(cohort.config("x", "pca-outcomes")), out)
    lock.unlink()
    # a partial run of another config is discarded, never mixed into this one
    w = RunWriter(out, "other-fingerprint")
    w.open()
    w.save_piece("0", {}, {"info": {}})
    w.release()
    res = run_experiment(load_config(cohort.config("x", "pca-outcomes")), out)
    assert sorted(res.metrics["fold"].unique()) == [0, 1, 2, 3]
    assert "other-fingerprint" not in (out / "run.json").read_text()


def test_a_new_model_touches_no_shared_file(cohort, tmp_path):
    """A toy model and a toy output, declared in this test only, go through training,
    evaluation, prediction and the map registry."""
    import pandas as pd

    from histoviz.evaluation.compare import compare_runs
    from histoviz.io.featurebag import FeatureBag
    from histoviz.models import PatchMaps, SlideModel, register_model
    from histoviz.models.registry import _MODELS
    from histoviz.outputs import _OUTPUTS, OutputSpec, register_output
    from histoviz.predict import predict_bag
    from histoviz.viz.maps import available_maps, map_values

    register_output(OutputSpec("toy_score", "Toy score", store="obs", colormap="magma", unit="a.u."))

    @register_model("toy-linear", description="softmax of one feature times a per-class slope")
    class ToyLinear(SlideModel):
        tasks = ("classification",)

        def __init__(self, *, feature: int = 0) -> None:
            self.feature = feature

        def _logits(self, v: np.ndarray) -> np.ndarray:
            return np.outer(v, self.slope_)

        def _fit(self, bags, targets, val) -> None:
            b = targets["grade"]
            v = np.array([x[:, self.feature].mean() for x in bags])
            k = len(b.classes)
            self.center_ = float(v.mean())
            self.slope_ = np.linspace(-1, 1, k) * np.sign(np.corrcoef(v[b.present], b.codes[b.present])[0, 1] or 1)
            self.classes_ = list(b.classes)

        def _proba(self, v: np.ndarray) -> np.ndarray:
            z = self._logits(v - self.center_)
            e = np.exp(z - z.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

        def _predict(self, bags):
            return {"grade": self._proba(np.array([x[:, self.feature].mean() for x in bags]))}

        def _predict_patches(self, bag):
            per = bag[:, self.feature]
            return PatchMaps(patch={"grade": self._proba(per)}, slide={"grade": self._predict([bag])["grade"][0]},
                             targets={"grade": self.classes_}, extra={"toy_score": per.astype(np.float32)})

        def _state(self):
            return {"center": self.center_, "classes": self.classes_}, {"slope": self.slope_}

        def _load_state(self, meta, arrays):
            self.center_, self.classes_, self.slope_ = meta["center"], meta["classes"], np.asarray(arrays["slope"])

    try:
        cfg = cohort.config("toy", "toy-linear", outcomes=("grade",))
        res = run_experiment(load_config(cfg), tmp_path / "toy")
        table = compare_runs([tmp_path / "toy"], topk=())
        assert {"auc_macro", "coverage", "set_size"} <= set(table["metric"])
        a = predict_bag(FeatureBag.from_h5(cohort.features / "S001.h5"), tmp_path / "toy", fold=0)
        assert "toy_score" in a.obs and "toy_score" in available_maps(a)
        mv = map_values(a, "toy_score")
        assert mv.colormap == "magma" and mv.unit == "a.u."
        assert "grade_proba" in available_maps(a) and "grade_set_size" in a.obs
        assert isinstance(res.heldout["grade"], pd.DataFrame)
    finally:
        _MODELS.pop("toy-linear", None)
        _OUTPUTS.pop("toy_score", None)
