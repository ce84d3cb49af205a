"""Model building blocks and the estimator contract of every registered model (fast, CPU)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from histoviz.data.omics import OmicsSpec, TargetBlock, TargetPreprocessor, load_omics
from histoviz.errors import ConfigError, DataError
from histoviz.models import check_bags, create_model
from histoviz.models.slide.cpnn import build_prototypes, load_reference
from histoviz.nn.abmil import GatedABMIL
from histoviz.nn.losses import info_nce, masked_mse, nb_nll

# ------------------------------------------------------------------------------------------------
# a toy cohort whose expression follows per-patch cell-type weights
# ------------------------------------------------------------------------------------------------
N_TYPES, N_GENES, D = 3, 30, 8


def make_toy(tmp_path: Path, n: int = 36, seed: int = 0, prototypes: np.ndarray | None = None,
             genes: list[str] | None = None, ref_path: Path | None = None) -> dict:
    rng = np.random.default_rng(seed)
    c = N_TYPES if prototypes is None else prototypes.shape[0]
    if prototypes is None:
        t = rng.gamma(0.6, 1.0, size=(c, N_GENES)) + 0.02
        prototypes = t / t.sum(1, keepdims=True)
    g = prototypes.shape[1]
    genes = genes or [f"G{i}" for i in range(g)]
    a = rng.normal(0, 1.5, size=(D, c))
    bags, weights, mix = [], [], []
    for _ in range(n):
        k = rng.integers(8, 20)
        centre = rng.normal(0, 1.0, size=D)
        x = centre + rng.normal(0, 0.7, size=(k, D))
        logits = x @ a
        w = np.exp(logits - logits.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        bags.append(x.astype(np.float32))
        weights.append(w)
        mix.append(w.mean(0))
    mix = np.stack(mix)
    frac = mix @ prototypes
    lib = rng.integers(20_000, 60_000, size=n)
    counts = rng.negative_binomial(20, 20 / (20 + frac * lib[:, None])).astype(float)
    pats = [f"P{i:02d}" for i in range(n)]
    gpath = tmp_path / f"gene{seed}.h5ad"
    ad.AnnData(X=counts.astype(np.float32), obs=pd.DataFrame(index=pats), var=pd.DataFrame(index=genes)).write_h5ad(gpath)
    prot = mix @ rng.normal(size=(c, 4)) + rng.normal(0, 0.05, size=(n, 4))
    keep = np.ones(n, bool)
    keep[::5] = False  # some patients miss protein
    ppath = tmp_path / f"protein{seed}.h5ad"
    ad.AnnData(X=prot[keep].astype(np.float32), obs=pd.DataFrame(index=np.array(pats)[keep]),
               var=pd.DataFrame(index=[f"PR{j}" for j in range(4)])).write_h5ad(ppath)
    if ref_path is None:
        ref_path = tmp_path / f"ref{seed}.h5ad"
        cells = np.repeat(np.arange(c), 40)
        sc = rng.poisson(prototypes[cells] * rng.uniform(500, 1500, size=(len(cells), 1)))
        ad.AnnData(X=sc.astype(np.float32), obs=pd.DataFrame({"cell_type": [f"T{k}" for k in cells]},
                                                            index=[f"c{i}" for i in range(len(cells))]),
                   var=pd.DataFrame(index=genes)).write_h5ad(ref_path)
    specs = {"gene": OmicsSpec(path=str(gpath), normalize="total", transform="log10p1", standardize=True),
             "protein": OmicsSpec(path=str(ppath), standardize=True)}
    om = load_omics(pats, specs)
    blocks = {}
    for m in specs:
        prep = TargetPreprocessor(specs[m]).fit(om[m].values, om[m].targets)
        blocks[m] = prep.block(om[m])
    return {"bags": bags, "blocks": blocks, "weights": weights, "reference": str(ref_path), "mix": mix,
            "gene_path": str(gpath)}


def _split(toy: dict, rows: np.ndarray) -> tuple[list, dict]:
    return [toy["bags"][i] for i in rows], {m: b.subset(rows) for m, b in toy["blocks"].items()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"))


FAST = {"epochs": 8, "batch_size": 8, "seed": 0, "device": "cpu"}
PARAMS = {"multiomics": {**FAST, "embed_dim": 16, "attn_dim": 8, "hidden": 16}, "cpnn": {**FAST, "hidden": 16}}


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['hiden'\]"):
        create_model("multiomics", hiden=3)
    with pytest.raises(ConfigError, match="mode"):
        create_model("multiomics", mode="both")


def test_bad_bags_are_rejected(toy):
    with pytest.raises(DataError, match="empty feature bag"):
        check_bags([np.zeros((3, 4)), np.zeros((0, 4))])
    with pytest.raises(DataError, match=r"different feature dimensions \[4, 5\]"):
        check_bags([np.zeros((3, 4)), np.zeros((3, 5))])
    m = create_model("ridge").fit(toy["bags"][:20], {k: b.subset(np.arange(20)) for k, b in toy["blocks"].items()})
    with pytest.raises(DataError, match="trained on 8"):
        m.predict([np.zeros((5, 9), np.float32)])
    with pytest.raises(DataError, match="not fitted"):
        create_model("ridge").predict(toy["bags"][:2])


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
def test_abmil_attention_masking_and_permutation():
    torch.manual_seed(0)
    pool = GatedABMIL(6, 8, 4, dropout=0.0).eval()
    x = torch.randn(2, 7, 6)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    z, a, _ = pool(x, mask)
    assert torch.allclose(a.sum(1), torch.ones(2))
    assert (a[1, 4:] == 0).all()
    # padding content is ignored
    x2 = x.clone()
    x2[1, 4:] = 1e3
    assert torch.allclose(pool(x2, mask)[0], z)
    # permutation invariance
    perm = torch.randperm(7)
    zp, _, _ = pool(x[:1, perm], mask[:1])
    assert torch.allclose(zp, z[:1], atol=1e-6)


def test_masked_mse_matches_hand_computation_and_ignores_absent_rows():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 2.0], [float("nan"), 1e6], [1.0, 0.0]])
    present = torch.tensor([True, False, True])
    loss = masked_mse(pred, target, present, reduction="sum")
    assert float(loss) == pytest.approx((1.0 + 0.0 + 4.0 + 1.0) / 3)
    assert float(masked_mse(pred, target, present, reduction="mean")) == pytest.approx((0.5 + 2.5) / 3)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[1] == 0).all()  # the absent patient gets no gradient
    p2 = torch.zeros(2, 3, requires_grad=True)
    none = masked_mse(p2, torch.full((2, 3), float("nan")), torch.tensor([False, False]))
    none.backward()
    assert float(none) == 0.0 and (p2.grad == 0).all()


def test_nb_nll_equals_scipy():
    rng = np.random.default_rng(0)
    k = rng.integers(0, 500, size=(4, 6)).astype(float)
    mu = rng.uniform(0.1, 400, size=(4, 6))
    theta = rng.uniform(0.5, 30, size=6)
    ours = float(nb_nll(torch.tensor(k), torch.tensor(mu), torch.tensor(theta), eps=0.0))
    ref = -stats.nbinom.logpmf(k, theta[None, :], theta[None, :] / (theta[None, :] + mu)).sum(1).mean()
    assert ours == pytest.approx(ref, rel=1e-9)


def test_info_nce_prefers_aligned_pairs_and_is_symmetric():
    torch.manual_seed(0)
    a = torch.randn(16, 8)
    aligned = info_nce(a, a + 0.01 * torch.randn(16, 8))
    shuffled = info_nce(a, a[torch.randperm(16)])
    assert float(aligned) < 0.05 < float(shuffled)
    b = torch.randn(16, 8)
    assert float(info_nce(a, b)) == pytest.approx(float(info_nce(b, a)), rel=1e-6)


def test_masked_loss_ignores_missing_modalities_in_training(toy):
    """Garbage in the target rows of patients without protein must not change the model."""
    rows = np.arange(24)
    bags, blocks = _split(toy, rows)
    prot = blocks["protein"]
    assert (~prot.present).sum() >= 4

    def fit(values: np.ndarray, present: np.ndarray) -> np.ndarray:
        b = dict(blocks)
        b["protein"] = TargetBlock("protein", prot.targets, values, present)
        m = create_model("multiomics", **{**PARAMS["multiomics"], "epochs": 5})
        m.fit(bags, b)
        return m.predict(toy["bags"][24:])["protein"]

    clean = prot.values.copy()
    clean[~prot.present] = 0.0
    garbage = prot.values.copy()
    garbage[~prot.present] = 1e3
    p_clean = fit(clean, prot.present)
    p_garbage = fit(garbage, prot.present)
    np.testing.assert_array_equal(p_clean, p_garbage)
    # sensitivity check: if those rows counted, the garbage would move the predictions
    p_counted = fit(garbage, np.ones_like(prot.present))
    assert np.abs(p_counted - p_clean).max() > 1.0


# ------------------------------------------------------------------------------------------------
# CPNN with a real labelled reference
# ------------------------------------------------------------------------------------------------
def test_prototypes_from_pbmc68k_reference():
    ref = load_reference("scanpy:pbmc68k_reduced")
    proto = build_prototypes(ref, label_key="bulk_labels", use_raw=True, log1p_input=True)
    assert proto.shape == (10, 765)
    np.testing.assert_allclose(proto.sum(1), 1.0)
    assert (proto.to_numpy() >= 0).all()
    # a marker check: monocytes carry the most LYZ / S100A9 share
    for g in ("LYZ", "S100A9"):
        if g in proto.columns:
            assert proto[g].idxmax() in ("CD14+ Monocyte", "Dendritic")
    with pytest.raises(DataError, match="negative values"):
        build_prototypes(ref, label_key="bulk_labels")  # X is scaled data
    with pytest.raises(DataError, match="obs\\['cell_type'\\]"):
        build_prototypes(ref)


def test_cpnn_recovers_patch_weights_with_pbmc_prototypes(tmp_path):
    ref = load_reference("scanpy:pbmc68k_reduced")
    proto = build_prototypes(ref, label_key="bulk_labels", use_raw=True, log1p_input=True)
    types = ["CD14+ Monocyte", "CD19+ B", "CD8+ Cytotoxic T"]
    p = proto.loc[types]
    genes = list(p.columns[np.argsort(-p.to_numpy().std(0))[:150]])  # informative genes
    t = p[genes].to_numpy()
    t = t / t.sum(1, keepdims=True)
    sub = ref[ref.obs["bulk_labels"].isin(types)].copy()
    ref_path = tmp_path / "pbmc3.h5ad"
    raw = sub.raw.to_adata()
    raw.obs["bulk_labels"] = sub.obs["bulk_labels"].astype(str).to_numpy()
    raw.write_h5ad(ref_path)
    toy = make_toy(tmp_path, n=60, seed=3, prototypes=t, genes=genes, ref_path=ref_path)
    m = create_model("cpnn", reference=str(ref_path), label_key="bulk_labels", reference_log1p=True,
                     hidden=32, epochs=60, batch_size=8, seed=0, device="cpu", lambda_proto=1e3)
    tr = np.arange(48)
    m.fit([toy["bags"][i] for i in tr], {"gene": toy["blocks"]["gene"].subset(tr)})
    assert m.cell_types_ == sorted(types)
    order = [types.index(c) for c in m.cell_types_]
    est, true = [], []
    for i in range(48, 60):
        est.append(m.predict_patches(toy["bags"][i]).cell_type_weights.to_numpy())
        true.append(toy["weights"][i][:, order])
    est, true = np.concatenate(est), np.concatenate(true)
    r = [stats.pearsonr(est[:, k], true[:, k])[0] for k in range(3)]
    assert min(r) > 0.6, r
    # the refined prototypes stay close to the reference (the lambda_proto penalty)
    drift = np.abs(m.prototype_table() - m.prototype_table(initial=True)).to_numpy().sum(1)
    assert drift.max() < 0.25


def test_cpnn_accepts_a_prototype_table(toy, tmp_path):
    ref = ad.read_h5ad(toy["reference"])
    proto = build_prototypes(ref)
    path = tmp_path / "prototypes.csv"
    (proto * 7.0).to_csv(path)  # scale does not matter: rows are renormalised
    tr = np.arange(24)
    a = create_model("cpnn", reference=toy["reference"], **PARAMS["cpnn"]).fit(*_split(toy, tr))
    b = create_model("cpnn", reference=str(path), **PARAMS["cpnn"]).fit(*_split(toy, tr))
    np.testing.assert_allclose(b.prototype_table(initial=True), a.prototype_table(initial=True), atol=1e-6)
    np.testing.assert_allclose(b.predict(toy["bags"][24:])["gene"], a.predict(toy["bags"][24:])["gene"], atol=1e-4)
    (proto * -1).to_csv(path)
    with pytest.raises(DataError, match="non-negative"):
        create_model("cpnn", reference=str(path), **PARAMS["cpnn"]).fit(*_split(toy, tr))
