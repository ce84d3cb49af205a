"""The training loop's settings are declared once and reach every model of a run whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_spatial_data import _toy_data

from histoviz.errors import ConfigError
from histoviz.models import create_model, list_models
from histoviz.nn.settings import LOOP_FIELDS, LoopSettings
from histoviz.training.config import load_config
from histoviz.training.prepare import build_model

SPOT_PARAMS = {"dim": 16, "n_image_tokens": 2, "n_gene_tokens": 2, "cross_heads": 2, "fusion_heads": 2, "top_k": 5}


def _spot_config(**training):
    return load_config({
        "name": "cmrcnet",
        "data": {"spots": {"samples": ".", "features": ".", "n_genes": 15, "markers": ["G3"]}},
        "model": {"name": "cmrcnet", "params": SPOT_PARAMS},
        "training": {"epochs": 6, "device": "cpu", "val_fraction": 0.25, "final_model": False, **training},
        "evaluation": {"spots": {"n_hvg": 5, "n_heg": 5, "top_k": [5], "controls": ["mean"],
                                 "compare": [{"name": "bleep", "params": {k: v for k, v in SPOT_PARAMS.items()
                                                                           if k != "n_gene_tokens"}}]}},
    })


def test_cmrcnet_and_bleep_of_one_config_record_the_same_loop_settings(tmp_path, monkeypatch):
    from histoviz.io.rundir import RunDir
    from histoviz.training.spots import run_spot_experiment

    monkeypatch.chdir(tmp_path)
    # the two settings the spot runner used to drop for every model but the main one
    cfg = _spot_config(lr_schedule="cosine", max_patches=7, lr=3e-3, patience=4)
    run_spot_experiment(cfg, tmp_path / "run", data=_toy_data())
    run = RunDir(tmp_path / "run")
    loop = run.info["loop"]
    assert set(loop) == {"cmrcnet", "bleep"}  # the models that train with the loop (spot-mean does not)
    assert loop["cmrcnet"] == loop["bleep"] == cfg.training.loop_settings().as_dict()
    assert loop["bleep"]["lr_schedule"] == "cosine" and loop["bleep"]["max_patches"] == 7
    per_fold = json.loads((tmp_path / "run" / "selection.json").read_text())["folds"]
    assert all(f["loop"]["bleep"] == f["loop"]["cmrcnet"] for f in per_fold)
    assert run.info["capabilities"]["level"] == "spot" and run.info["capabilities"]["trains_with_loop"]


def test_the_schedule_reaches_bleep_training():
    """Not only recorded: BLEEP's learning rate follows the config's cosine schedule."""
    from histoviz.training.spots import fit_spot_model, prepare_fold

    data = _toy_data()
    prep = prepare_fold(_spot_config(), data, [0, 1, 2])
    lrs = {}
    for schedule in ("none", "cosine"):
        cfg = _spot_config(lr_schedule=schedule, lr=1e-3, epochs=6, patience=100)
        m = fit_spot_model(cfg, data, prep, "bleep", {}, seed=0)
        lrs[schedule] = [h.get("lr", cfg.training.lr) for h in m.fit_info()["history"]]
    assert np.allclose(lrs["none"], 1e-3)
    cos = np.asarray(lrs["cosine"])
    assert len(cos) == 6 and (np.diff(cos) < 0).all()
    # torch's CosineAnnealingLR to lr/100 over the epochs
    expected = [1e-5 + (1e-3 - 1e-5) * (1 + np.cos(np.pi * (e + 1) / 6)) / 2 for e in range(6)]
    np.testing.assert_allclose(cos, expected, rtol=1e-6)


def test_every_model_that_trains_with_the_loop_gets_the_config_settings_whole():
    cfg = load_config({"data": {"cohort": "c.csv", "features": "f", "omics": {"gene": {"path": "g.h5ad"}}},
                       "seed": 3, "model": {"name": "multiomics"},
                       "training": {"epochs": 7, "lr_schedule": "plateau", "max_patches": 11, "patience": 2}})
    want = cfg.training.loop_settings()
    assert want.seed == 3  # training.seed defaults to the experiment seed
    loop_models = [i.name for i in list_models(controls=True) if i.caps.trains_with_loop]
    assert len(loop_models) >= 6
    for name in loop_models:
        m = build_model(cfg, name, {})
        assert m.loop == want, name
        assert {k: m.get_params()[k] for k in LOOP_FIELDS} == want.as_dict()  # what a checkpoint stores
    for i in list_models(controls=True):
        if not i.caps.trains_with_loop:
            assert not {*LOOP_FIELDS, "loop"} & i.params, i.name  # no model takes some of them only


def test_a_model_keeps_its_own_defaults_until_a_config_replaces_them():
    m = create_model("cmrcnet")
    assert (m.loop.epochs, m.loop.lr, m.loop.batch_size) == (60, 1e-4, 64)  # the paper's
    m = create_model("cmrcnet", loop=LoopSettings(epochs=3), lr=0.5)
    assert m.loop == LoopSettings(epochs=3, lr=0.5)


@pytest.mark.parametrize(("kw", "match"), [
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"lr_schedule": "step"}, "lr_schedule must be none, plateau or cosine"),
    ({"batch_size": 2.5}, "batch_size must be an integer, got 2.5"),
    ({"lr": -1.0}, r"lr must be > 0, got -1.0"),
    ({"epoch": 3}, r"unknown parameter\(s\) \['epoch'\]"),
])
def test_bad_loop_settings_are_config_errors_naming_the_setting(kw, match):
    with pytest.raises(ConfigError, match=match):
        create_model("multiomics", **kw)


def test_a_loop_setting_with_one_compared_model_is_refused(tmp_path):
    cfg = _spot_config()
    from histoviz.training.prepare import model_kwargs

    with pytest.raises(ConfigError, match=r"evaluation.spots.compare: \['epochs'\] belong under training"):
        model_kwargs(cfg, "bleep", {"epochs": 3}, where="evaluation.spots.compare")
