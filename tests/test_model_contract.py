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
            np.testing.assert_allclose(maps.patch[b].mean(0), pred[b][0], atol=1e-8)
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
