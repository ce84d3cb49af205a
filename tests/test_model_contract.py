"""The estimator contract of every registered model, on toy data of every task it serves.

Adding a model means one entry in :data:`PARAMS` (its fast hyper-parameters); the test fails
while a registered model has none. What is checked of a model follows from the capabilities it
declares at registration, never from its name: for the task kinds it serves, ``fit`` returns
self; predictions have each task's shape and range and are finite; per-patch predictions exist
for every patch and the slide-level values equal ``predict``; every declared extra output is
there (attention sums to 1, cell-type weights are a composition); the model survives a
safetensors checkpoint (no pickle) with identical predictions; ``score`` is finite (undefined for
a constant control). A model added in a module of its own, outside the package, trains in a run,
predicts a slide and is listed by the CLI and shown by the dashboard with no other file edited
(:func:`test_a_model_in_a_new_module_needs_no_other_file`).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_models_units import make_toy

from histoviz.data.outcomes import ClassBlock, SurvivalBins, SurvivalBlock
from histoviz.models import create_model, list_models, model_info
from histoviz.models.checkpoint import FittedPipeline, load_checkpoint, save_checkpoint
from histoviz.task_kinds import TaskKind

FAST = {"epochs": 8, "batch_size": 8, "seed": 0, "device": "cpu"}
# PathGen groups over the toy genes G0..G29 (two genes shared between neighbouring groups)
PATHGEN_GROUPS = {f"group{k}": [f"G{j}" for j in range(6 * k, 6 * k + 8)] for k in range(4)}
PARAMS = {
    "multiomics": {**FAST, "embed_dim": 16, "attn_dim": 8, "hidden": 16},
    "multiomics-stl": {**FAST, "embed_dim": 16, "attn_dim": 8, "hidden": 16},
    "multiomics-tangle": {**FAST, "embed_dim": 16, "attn_dim": 8, "hidden": 16, "contrastive_epochs": 3},
    "meanpool-mlp": {**FAST, "hidden": 16},
    "cpnn": {**FAST, "hidden": 16},
    "ridge": {},
    "knn": {"n_neighbors": 3},
    "abmil-grade": {**FAST, "embed_dim": 16, "attn_dim": 8, "hidden": 16},
    "abmil-survival": {**FAST, "embed_dim": 16, "attn_dim": 8, "hidden": 16},
    "abmil-grade-survival": {**FAST, "embed_dim": 16, "attn_dim": 8, "hidden": 16},
    "pca-logistic": {"n_components": 4},
    "pca-cox": {"cox_components": 2},
    "pca-outcomes": {"n_components": 4, "cox_components": 2},
    "pathgen": {**FAST, "gene_groups": PATHGEN_GROUPS, "timesteps": 20, "diffusion_epochs": 4, "diffusion_dim": 16,
                "diffusion_heads": 2, "diffusion_blocks": 1, "dim": 16, "tf_heads": 2},
    # spot models: a bag is one unit (its patches mean-pooled), each patch a spot of its own
    "cmrcnet": {**FAST, "dim": 16, "n_image_tokens": 2, "n_gene_tokens": 2, "cross_heads": 2, "fusion_heads": 2,
                "top_k": 5},
    "bleep": {**FAST, "dim": 16, "n_image_tokens": 2, "cross_heads": 2, "fusion_heads": 2, "top_k": 5},
    "cpnn-spot": {**FAST, "hidden": 16},
    "knn-spot": {"n_neighbors": 5, "n_components": 4},
    "spot-mean": {},  # the spot runner's mean control
}


def outcome_blocks(toy: dict, seed: int = 0) -> dict:
    """Grade (3 classes) and censored survival that follow the toy bags' first cell type."""
    rng = np.random.default_rng(seed)
    x = toy["mix"][:, 0]
    n = len(x)
    grade = np.digitize(x + rng.normal(0, 0.05, n), np.quantile(x, [1 / 3, 2 / 3]))
    t_event = rng.exponential(10 * np.exp(-3 * (x - x.mean())))
    t_cens = rng.exponential(15, n)
    time = np.minimum(t_event, t_cens) + 0.01
    event = (t_event <= t_cens).astype(int)
    surv = SurvivalBlock("survival", time, event, np.ones(n, bool))
    bins = SurvivalBins(4).fit(surv)
    return {"grade": ClassBlock("grade", ["G1", "G2", "G3"], grade), "survival": bins.block(surv)}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    t = make_toy(tmp_path_factory.mktemp("toy_contract"))
    t["blocks"] = {**t["blocks"], **outcome_blocks(t)}
    return t


def test_every_registered_model_is_covered():
    assert {i.name for i in list_models(controls=True)} == set(PARAMS)


def _targets_for(name: str, toy: dict) -> dict:
    """The toy blocks of the kinds the model serves; at most ``regression_blocks`` expression
    blocks (the first ones: gene before protein)."""
    caps = model_info(name).caps
    blocks = {k: b for k, b in toy["blocks"].items() if b.kind in caps.tasks}
    if caps.regression_blocks is not None:
        reg = [k for k, b in blocks.items() if b.kind == TaskKind.REGRESSION]
        for k in reg[caps.regression_blocks:]:
            blocks.pop(k)
    return blocks


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_model_contract(name, toy, tmp_path):
    check_contract(name, PARAMS[name], toy, tmp_path)


def check_contract(name: str, params: dict, toy: dict, tmp_path) -> None:
    """Fit, predict, per-patch maps, declared outputs, checkpoint round trip and score of ``name``."""
    caps = model_info(name).caps
    params = dict(params)
    if caps.needs_reference:
        params["reference"] = toy["reference"]
    m = create_model(name, **params)
    blocks = _targets_for(name, toy)
    tr, va, te = np.arange(0, 18), np.arange(18, 24), np.arange(24, 36)
    bags = [toy["bags"][i] for i in tr]
    val = ([toy["bags"][i] for i in va], {k: b.subset(va) for k, b in blocks.items()})
    assert m.fit(bags, {k: b.subset(tr) for k, b in blocks.items()}, val=val) is m
    test_bags = [toy["bags"][i] for i in te]
    pred = m.predict(test_bags)
    assert sorted(pred) == sorted(blocks)
    for b, blk in blocks.items():
        p = pred[b]
        assert np.isfinite(p).all(), b
        if blk.kind == "regression":
            assert p.shape == (len(te), len(m.targets_[b]))
        elif blk.kind == "classification":
            assert p.shape == (len(te), len(blk.classes))
            np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
        else:
            assert p.shape == (len(te), blk.n_bins)
            assert ((p >= 0) & (p <= 1)).all() and (np.diff(p, axis=1) <= 1e-9).all()  # a survival function
    maps = m.predict_patches(test_bags[0])
    n_patch = len(test_bags[0])
    for b in blocks:
        assert maps.patch[b].shape[0] == n_patch
        assert maps.kinds[b] == blocks[b].kind
        np.testing.assert_allclose(maps.slide[b], pred[b][0], rtol=1e-4, atol=1e-5)
    assert set(caps.outputs) <= set(maps.extra), (caps.outputs, sorted(maps.extra))  # declared = delivered
    if "attention" in caps.outputs:
        assert maps.attention.sum() == pytest.approx(1.0, abs=1e-5)
    if "cell_type" in caps.outputs:
        np.testing.assert_allclose(maps.cell_type_weights.sum(1), 1.0, atol=1e-5)
    if "coattention" in caps.outputs:  # each gene group's attention sums to 1 over the slide
        np.testing.assert_allclose(np.asarray(maps.extra["coattention"]).sum(0), 1.0, atol=1e-5)
    if caps.additive:  # the mean of the patch maps is the slide prediction
        for b in blocks:
            np.testing.assert_allclose(maps.patch[b].mean(0), pred[b][0], rtol=1e-5, atol=1e-6)  # float32 models round
    save_checkpoint(FittedPipeline(m, {}, {"encoder": "toy"}), tmp_path / "ck")
    assert not any(p.suffix in (".pkl", ".pt", ".pickle") for p in (tmp_path / "ck").iterdir())
    back = load_checkpoint(tmp_path / "ck").model
    pred2 = back.predict(test_bags)
    for b in blocks:
        np.testing.assert_allclose(pred2[b], pred[b], rtol=1e-5, atol=1e-6)
    score = m.score(test_bags, {k: b.subset(te) for k, b in blocks.items()})
    if caps.control == "mean":  # a constant prediction has no correlation
        assert np.isnan(score)
    else:
        assert np.isfinite(score)


def test_a_model_refuses_tasks_it_does_not_serve(toy):
    from histoviz.errors import DataError

    with pytest.raises(DataError, match="serves \\['regression'\\] tasks, not classification"):
        create_model("ridge").fit(toy["bags"][:20], {"grade": toy["blocks"]["grade"].subset(np.arange(20))})


# ------------------------------------------------------------------------------------------------
# a new model in a module of its own: nothing else is edited
# ------------------------------------------------------------------------------------------------
TOY_MODULE = '''
"""A model written by someone else: mean-pooled features -> one linear layer per block."""

from __future__ import annotations

import numpy as np

from histoviz.models import PatchMaps, register_model
from histoviz.models._torch import TorchSlideModel, feature_stats


def _net(arch):
    import torch

    return torch.nn.ModuleDict({k: torch.nn.Linear(arch["in_dim"], d) for k, d in arch["out_dims"].items()})


@register_model("toy-meanlinear", additive=True, description="trial: mean-pool + linear, trained with the loop")
class ToyMeanLinear(TorchSlideModel):
    """Mean-pool + linear."""

    def __init__(self, *, ridge: float = 0.0, **loop):
        super().__init__(**loop)
        self.ridge = ridge

    _make_net = staticmethod(_net)

    def _x(self, bags):
        import torch

        return torch.from_numpy(np.stack([(np.asarray(b, np.float32) - self.feature_mean_) / self.feature_std_
                                          for b in bags]))

    def _fit(self, bags, targets, val):
        import torch

        from histoviz.nn.loop import seed_everything, train_module

        seed_everything(self.loop.seed)
        self.feature_mean_, self.feature_std_ = feature_stats(bags)
        self.arch_ = {"in_dim": self.embed_dim_, "out_dims": {m: len(b.targets) for m, b in targets.items()}}
        net = self.module_ = _net(self.arch_)
        x = self._x([np.asarray(b).mean(0, keepdims=True) for b in bags])[:, 0]
        y = {m: torch.from_numpy(np.nan_to_num(b.values).astype(np.float32)) for m, b in targets.items()}
        p = {m: torch.from_numpy(b.present) for m, b in targets.items()}

        def step(idx, rng):
            i = torch.from_numpy(idx)
            return sum(((net[m](x[i]) - y[m][i]) ** 2)[p[m][i]].mean() for m in targets), {}

        self.fit_info_ = train_module(net, len(bags), step, settings=self.loop)

    def _predict(self, bags):
        return {m: np.stack([self._predict_patches(b).slide[m] for b in bags]) for m in self.modalities_}

    def _predict_patches(self, bag):
        import torch

        with torch.no_grad():
            x = self._x([bag])[0]
            patch = {m: self.module_[m](x).numpy().astype(np.float64) for m in self.modalities_}
        return PatchMaps(patch=patch, slide={m: v.mean(0) for m, v in patch.items()},
                         targets={m: list(self.targets_[m]) for m in self.modalities_})
'''


@pytest.fixture
def toy_module(tmp_path):
    """Import :data:`TOY_MODULE` from a file outside the package; unregister it afterwards."""
    import importlib.util

    from histoviz.models.registry import _MODELS

    path = tmp_path / "someone_elses_model.py"
    path.write_text(TOY_MODULE)
    spec = importlib.util.spec_from_file_location("someone_elses_model", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        _MODELS.pop("toy-meanlinear", None)


def _toy_cohort(toy: dict, root) -> dict:
    """The toy bags as feature-bag files with a cohort table, and its gene table."""
    import pandas as pd

    from histoviz.io.featurebag import FeatureBag

    feats = root / "features"
    rows = []
    for i, bag in enumerate(toy["bags"]):
        sid = f"S{i:02d}"
        coords = np.stack([np.arange(len(bag)) * 224, np.zeros(len(bag))], 1)
        FeatureBag(coords, bag, {"slide_id": sid, "encoder": "toy", "embed_dim": bag.shape[1], "tile_size": 224,
                                 "mpp": 0.5, "tile_size_level0": 224}).to_h5(feats / f"{sid}.h5")
        rows.append({"slide_id": sid, "patient_id": f"P{i:02d}", "path": f"{sid}.tif"})
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    return {"cohort": str(root / "cohort.csv"), "features": str(feats),
            "omics": {"gene": {"path": toy["gene_path"], "normalize": "total", "transform": "log10p1",
                               "standardize": True}}}


def test_a_model_in_a_new_module_needs_no_other_file(toy_module, toy, tmp_path, capsys, monkeypatch):
    import json

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from histoviz.cli import main
    from histoviz.dashboard import APP
    from histoviz.io.featurebag import FeatureBag
    from histoviz.io.rundir import RunDir
    from histoviz.predict import predict_bag
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    # the contract every registered model meets
    assert "toy-meanlinear" not in PARAMS
    check_contract("toy-meanlinear", FAST, toy, tmp_path)

    # listed: the registry and `histoviz models`
    assert "toy-meanlinear" in {i.name for i in list_models(task="regression", level="slide")}
    assert main(["models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("toy-meanlinear"))
    assert "regression" in line and "mean-pool + linear" in line

    # trains in a cross-validated run from a config, with the config's loop settings
    runs = tmp_path / "results" / "runs"
    cfg = load_config({"name": "toy", "data": _toy_cohort(toy, tmp_path),
                       "model": {"name": "toy-meanlinear", "params": {"ridge": 0.1}},
                       "training": {"epochs": 40, "lr": 0.02, "device": "cpu", "final_model": False,
                                    "val_fraction": 0.0},
                       "evaluation": {"n_folds": 3, "topk": [5]}})
    res = run_experiment(cfg, runs / "toy")
    pear = res.per_target("pearson").groupby("target")["value"].mean()
    assert pear.mean() > 0.3, pear.describe()  # the genes follow the mean composition, a linear map of the mean feature
    run = RunDir(runs / "toy")
    assert run.info["capabilities"]["additive"] and run.info["loop"]["toy"] == cfg.training.loop_settings().as_dict()

    # predicts a slide from the run's checkpoint: the patch maps average to the slide prediction
    bag = FeatureBag.from_h5(tmp_path / "features" / "S30.h5")
    a = predict_bag(bag, runs / "toy", fold=0)
    assert a.n_obs == len(bag) and a.n_vars == len(res.per_target()["target"].unique())
    slide = np.asarray(a.uns["slide_prediction"]["gene"]["values"], float)
    np.testing.assert_allclose(np.asarray(a.X).mean(0), slide, rtol=1e-4, atol=1e-5)

    # shown on the dashboard's Models page
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HISTOVIZ_RESULTS_ROOT", str(tmp_path / "results"))
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("views/models.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "model" in d.value.columns and "run" in d.value.columns)
    assert "toy-meanlinear" in set(table["model"]), json.dumps(table.to_dict())
