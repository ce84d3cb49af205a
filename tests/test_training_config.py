"""Experiment configs: strict keys, overrides, shipped configs, errors before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from histoviz.errors import ConfigError
from histoviz.models import model_info
from histoviz.nn.settings import LOOP_FIELDS
from histoviz.training.config import apply_overrides, config_to_dict, load_config
from histoviz.training.prepare import model_kwargs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "training" / "configs").glob("*.yaml"))


def _base(**kw) -> dict:
    d = {
        "name": "t",
        "data": {"cohort": "c.csv", "features": "f", "omics": {"gene": {"path": "g.h5ad"}}},
        "model": {"name": "multiomics", "params": {"embed_dim": 32}},
    }
    d.update(kw)
    return d


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path, base_dir=ROOT)
    if cfg.data.spots is not None:  # spot experiments (st_*.yaml): samples instead of a cohort
        assert Path(cfg.data.spots.samples[0]).is_absolute() and cfg.data.spots.samples[0].endswith("data/synth/spatial")
    else:
        assert Path(cfg.data.cohort).is_absolute()
        assert cfg.data.cohort.endswith(("data/synth/cohort.csv", "data/outcomes/cohort.csv", "data/pathgen/cohort.csv",
                                         "data/power/cohort.csv"))
    # the model gets every loop setting of the config, whole, exactly when it trains with the loop
    kw = model_kwargs(cfg)
    loop = {k: kw[k] for k in LOOP_FIELDS if k in kw}
    if model_info(cfg.model.name).caps.trains_with_loop:
        assert loop == cfg.training.loop_settings().as_dict()
        assert kw["seed"] == cfg.training.seed == cfg.seed  # training.seed defaults to the top-level seed
    else:
        assert loop == {}
    assert {k: v for k, v in kw.items() if k not in LOOP_FIELDS} == cfg.model.params


def test_at_least_the_issue_configs_exist():
    assert {"multiomics.yaml", "cpnn.yaml", "ridge.yaml", "grade.yaml", "survival.yaml",
            "outcome_baselines.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"trainig": {}}, r"config: unknown key\(s\) \['trainig'\]"),
        ({"training": {"epoch": 3}}, r"training: unknown key\(s\) \['epoch'\]"),
        ({"evaluation": {"n_fold": 3}}, r"evaluation: unknown key\(s\) \['n_fold'\]"),
        ({"model": {"name": "multiomics", "params": {"hiden": 3}}}, r"unknown parameter\(s\) \['hiden'\]"),
        ({"model": {"name": "multiomics", "params": {"epochs": 3}}}, "belong under training"),
        ({"model": {"name": "transformer"}}, "unknown model 'transformer'"),
        ({"training": {"epochs": 0}}, "training.epochs: must be >= 1"),
        ({"training": {"epochs": "ten"}}, "training.epochs: expected an integer"),
        ({"evaluation": {"n_folds": 1}}, "n_folds: must be >= 2"),
        ({"evaluation": {"topk_criteria": ["pearson"]}}, "topk_criteria"),
    ],
)
def test_config_errors_name_the_key(patch, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_base(**patch))


def test_nested_omics_and_data_errors():
    d = _base()
    d["data"]["omics"]["gene"]["transfrom"] = "log10p1"
    with pytest.raises(ConfigError, match=r"data.omics.gene: unknown key\(s\) \['transfrom'\]"):
        load_config(d)
    d = _base()
    d["data"]["targets"] = ["protein"]
    with pytest.raises(ConfigError, match="data.targets"):
        load_config(d)
    d = _base()
    d["data"]["colort"] = "x"
    with pytest.raises(ConfigError, match=r"data: unknown key\(s\) \['colort'\]"):
        load_config(d)


def test_overrides_and_number_coercion(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_base()) + "training:\n  lr: 1e-3\n")
    cfg = load_config(p, overrides=["training.epochs=7", "model.params.dropout=0.5", "name=renamed",
                                    "data.omics.gene.transform=log10p1"], base_dir=tmp_path)
    assert cfg.training.epochs == 7 and cfg.training.lr == pytest.approx(1e-3)
    assert cfg.model.params == {"embed_dim": 32, "dropout": 0.5}
    assert cfg.name == "renamed"
    assert cfg.data.omics["gene"].transform == "log10p1"
    assert cfg.data.cohort == str(tmp_path / "c.csv")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, ["training.epochs"])
    # the resolved config is plain YAML and loads back to the same config
    again = load_config(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg))))
    assert again == cfg
