"""Spot models: retrieval, the CMRCNet losses (contrastive and mask reconstruction), CPNN-spot,
kNN, spot evaluation metrics (fast, CPU, toy data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from histoviz.data.omics import TargetBlock
from histoviz.models import create_model
from histoviz.models.spot._retrieval import topk_indices, topk_mean

TINY = {"dim": 16, "n_image_tokens": 2, "n_gene_tokens": 2, "cross_heads": 2, "fusion_heads": 2, "device": "cpu"}


def _spots(n: int = 120, d: int = 8, g: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    x = (z @ rng.normal(size=(3, d)) + 0.2 * rng.normal(size=(n, d))).astype(np.float32)
    y = (z @ rng.normal(size=(3, g)) + 0.3 * rng.normal(size=(n, g))).astype(np.float32)
    return x, TargetBlock("gene", [f"G{j}" for j in range(g)], y, np.ones(n, bool))


def test_retrieval_returns_the_true_neighbours_on_a_toy_case():
    # 6 training spots on the unit circle; each query is a small rotation of spot i, so its two
    # nearest (cosine) spots are i, then the one it rotated towards
    ang = np.arange(6) * np.pi / 3
    keys = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    q_ang = ang + 0.2
    queries = np.stack([np.cos(q_ang), np.sin(q_ang)], axis=1) * 3.0  # scale must not matter for cosine
    idx, score = topk_indices(queries, keys, 2)
    assert idx.tolist() == [[i, (i + 1) % 6] for i in range(6)]
    np.testing.assert_allclose(score[:, 0], np.cos(0.2), rtol=1e-6)
    values = np.arange(12, dtype=np.float32).reshape(6, 2)
    pred = topk_mean(queries, keys, values, 2)
    np.testing.assert_allclose(pred, (values + np.roll(values, -1, axis=0)) / 2)
    assert topk_indices(queries, keys, 50)[0].shape == (6, 6)  # k capped at the training spots


def test_retrieval_equals_brute_force_numpy_in_small_chunks():
    rng = np.random.default_rng(3)
    keys, q, v = rng.normal(size=(500, 16)), rng.normal(size=(40, 16)), rng.normal(size=(500, 5))
    for metric in ("cosine", "euclidean", "dot"):
        idx, _ = topk_indices(q, keys, 7, metric=metric, max_bytes=4 * 500 * 3)  # 3 queries per chunk
        if metric == "cosine":
            s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (keys / np.linalg.norm(keys, axis=1, keepdims=True)).T
        elif metric == "dot":
            s = q @ keys.T
        else:
            s = -((q[:, None, :] - keys[None]) ** 2).sum(-1)
        want = np.argsort(-s, axis=1, kind="stable")[:, :7]
        assert [set(a) for a in idx] == [set(b) for b in want], metric
    np.testing.assert_allclose(topk_mean(q, keys, v, 7), v[np.argsort(-(
        (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (keys / np.linalg.norm(keys, axis=1, keepdims=True)).T),
        axis=1)[:, :7]].mean(1), rtol=1e-5, atol=1e-6)


def test_soft_contrastive_loss_matches_a_hand_computation():
    from histoviz.models.spot.cmrcnet import soft_contrastive_loss

    rng = np.random.default_rng(0)
    img, gene = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    tau = 0.7

    def softmax(a):
        e = np.exp(a - a.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    logits = gene @ img.T / tau
    target = softmax((img @ img.T + gene @ gene.T) / 2 * tau)
    spots = -(target * np.log(softmax(logits))).sum(1)
    images = -(target.T * np.log(softmax(logits.T))).sum(1)
    got = soft_contrastive_loss(torch.tensor(img), torch.tensor(gene), tau).numpy()
    np.testing.assert_allclose(got, (spots + images) / 2, rtol=1e-10)


def test_mask_rate_changes_the_loss_and_the_reconstruction_branch_learns():
    x, blk = _spots()
    m = create_model("cmrcnet", **TINY, epochs=2, seed=0).fit_spots(x, blk)
    l0 = m.training_losses(x, blk.values, mask_rate=0.0, seed=1)
    l5 = m.training_losses(x, blk.values, mask_rate=0.5, seed=1)
    assert l0["contrastive"] == pytest.approx(l5["contrastive"], rel=1e-6)  # the contrastive term ignores the mask
    assert abs(l0["reconstruction"] - l5["reconstruction"]) > 1e-4 * max(l0["reconstruction"], 1e-8)
    assert l0["total"] == pytest.approx(np.log1p(l0["contrastive"]) + np.log1p(l0["reconstruction"]), rel=1e-6)
    # gradients reach every part of the reconstruction branch (a dead branch would have none)
    net = m.module_
    net.train()
    xt, yt = m._inputs(x[:32], blk.values[:32])
    net.zero_grad()
    net.losses(xt, yt, mask_rate=0.5)["total"].backward()
    for name in ("snn", "cross0", "blocks", "image_to_recon"):
        g = [p.grad.abs().sum().item() for n, p in net.named_parameters() if n.startswith(name) and p.grad is not None]
        assert g and sum(g) > 0, name
    # BLEEP has no reconstruction branch at all
    b = create_model("bleep", **TINY, epochs=1).fit_spots(x, blk)
    lb = b.training_losses(x, blk.values)
    assert "reconstruction" not in lb and lb["total"] == pytest.approx(np.log1p(lb["contrastive"]), rel=1e-6)
    assert not any(n.startswith(("snn", "blocks")) for n, _ in b.module_.named_parameters())


def test_fusion_blocks_and_weight_sharing_are_configurable():
    x, blk = _spots(n=40)
    n_params = {}
    for n_blocks, share in ((0, False), (1, False), (3, False), (3, True)):
        m = create_model("cmrcnet", **TINY, epochs=1, n_blocks=n_blocks, share_fusion_weights=share).fit_spots(x, blk)
        n_params[(n_blocks, share)] = sum(p.numel() for p in m.module_.parameters())
    assert n_params[(0, False)] < n_params[(1, False)] < n_params[(3, False)]
    assert n_params[(3, True)] == n_params[(1, False)]  # one block repeated
    with pytest.raises(Exception, match="recon_loss"):
        create_model("cmrcnet", recon_loss="l1")


def test_cmrcnet_predicts_by_averaging_the_top_k_training_spots():
    x, blk = _spots()
    m = create_model("cmrcnet", **TINY, epochs=3, top_k=9).fit_spots(x[:100], blk.subset(np.arange(100)))
    q = m.embed_images(x[100:])
    k = m.keys()
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (k / np.linalg.norm(k, axis=1, keepdims=True)).T
    want = blk.values[:100][np.argsort(-s, axis=1)[:, :9]].mean(1)
    np.testing.assert_allclose(m.predict_spots(x[100:]), want, rtol=1e-5, atol=1e-5)
    assert m.values_.shape == (100, blk.values.shape[1])  # the retrieval database: every training spot


def test_cpnn_spot_weights_are_compositions_and_it_beats_the_mean_on_toy_data(tmp_path):
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    c, g, n = 3, 20, 300
    proto = rng.gamma(0.5, 1.0, size=(c, g)) + 0.01
    proto /= proto.sum(1, keepdims=True)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    logits = x @ rng.normal(0, 1.5, size=(6, c))
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    y = np.log1p(1e4 * (w @ proto) + rng.normal(0, 0.5, size=(n, g)).clip(0)).astype(np.float32)
    genes = [f"G{j}" for j in range(g)]
    cells = np.repeat(np.arange(c), 30)
    ref = ad.AnnData(rng.poisson(proto[cells] * 1000).astype(np.float32),
                     obs=pd.DataFrame({"cell_type": [f"T{k}" for k in cells]}, index=[f"c{i}" for i in range(len(cells))]),
                     var=pd.DataFrame(index=genes))
    ref.write_h5ad(tmp_path / "ref.h5ad")
    blk = TargetBlock("gene", genes, y, np.ones(n, bool))
    m = create_model("cpnn-spot", reference=str(tmp_path / "ref.h5ad"), hidden=32, epochs=40, device="cpu",
                     lambda_proto=10.0).fit_spots(x[:200], blk.subset(np.arange(200)))
    comp = m.composition(x[200:])
    np.testing.assert_allclose(comp.sum(1), 1.0, atol=1e-5)
    pred = m.predict_spots(x[200:])
    r = np.nanmean([stats.pearsonr(pred[:, j], y[200:, j])[0] for j in range(g)])
    mse, mse_mean = ((pred - y[200:]) ** 2).mean(), ((y[:200].mean(0) - y[200:]) ** 2).mean()
    assert r > 0.6 and mse < 0.6 * mse_mean, (r, mse, mse_mean)


def test_pcc_loss_is_minus_the_mean_pearson():
    from histoviz.models.spot.cpnn_spot import _pcc_loss

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    want = -np.mean([stats.pearsonr(a[:, j], b[:, j])[0] for j in range(4)])
    assert float(_pcc_loss(torch.tensor(a), torch.tensor(b))) == pytest.approx(want, rel=1e-6)
    assert float(_pcc_loss(torch.tensor(a), torch.tensor(2 * a + 1))) == pytest.approx(-1.0, abs=1e-6)


def test_knn_spot_is_the_mean_of_the_nearest_training_spots_after_pca():
    x, blk = _spots()
    m = create_model("knn-spot", n_neighbors=4, n_components=3, metric="euclidean").fit_spots(
        x[:100], blk.subset(np.arange(100)))
    xs = (x[:100] - x[:100].mean(0)) / x[:100].std(0)
    u, s_, vt = np.linalg.svd(xs - xs.mean(0), full_matrices=False)
    zt = xs @ vt[:3].T
    zq = ((x[100:] - x[:100].mean(0)) / x[:100].std(0)) @ vt[:3].T
    d = ((zq[:, None, :] - zt[None]) ** 2).sum(-1)
    want = blk.values[:100][np.argsort(d, axis=1)[:, :4]].mean(1)
    np.testing.assert_allclose(m.predict_spots(x[100:]), want, rtol=1e-4, atol=1e-4)


def test_spot_metrics_per_gene_sets_and_gene_gene_preservation():
    from histoviz.evaluation.spots import (
        gene_correlation_preservation,
        paired_differences,
        spot_metrics,
        spot_table,
    )

    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 6))
    p = y + rng.normal(0, 0.5, size=y.shape)
    p[:, 5] = 1.0  # a constant prediction
    genes = [f"g{j}" for j in range(6)]
    m = spot_metrics(y, p, genes, {"a": ["g0", "g1"], "b": ["g5", "gX"]})
    pe = m[(m.metric == "pearson") & (m.subset == "all")].set_index("target")["value"]
    for j in range(5):
        assert pe[f"g{j}"] == pytest.approx(stats.pearsonr(y[:, j], p[:, j])[0], rel=1e-9)
    assert np.isnan(pe["g5"])
    pt = m[m.axis == "per-target"]
    assert set(pt[pt.subset == "a"].target) == {"g0", "g1"} and set(pt[pt.subset == "b"].target) == {"g5"}
    assert set(m[m.axis == "gene-gene"].subset) == {"all", "a", "b"}
    ms = m[(m.metric == "mse") & (m.subset == "all")].set_index("target")["value"]
    np.testing.assert_allclose(ms.to_numpy(), ((y - p) ** 2).mean(0))
    gg = gene_correlation_preservation(y[:, :5], p[:, :5])
    iu = np.triu_indices(5, 1)
    assert gg == pytest.approx(stats.pearsonr(np.corrcoef(y[:, :5].T)[iu], np.corrcoef(p[:, :5].T)[iu])[0])
    # table and paired differences over two "samples" (folds)
    import pandas as pd

    rows = []
    for fold, shift in ((0, 0.0), (1, 0.3)):
        for model, noise in (("good", 0.3), ("bad", 3.0)):
            r = spot_metrics(y, y + np.random.default_rng(fold).normal(0, noise, y.shape) + shift, genes, {"a": genes[:3]})
            rows.append(r.assign(model=model, fold=fold))
    met = pd.concat(rows)
    t = spot_table(met).set_index(["model", "subset"])
    assert t.loc[("good", "a"), "mean"] > t.loc[("bad", "a"), "mean"] and t.loc[("good", "a"), "n_samples"] == 2
    d = paired_differences(met, reference="good")
    row = d[(d.model == "bad") & (d.subset == "a")].iloc[0]
    per = met[(met.metric == "pearson") & (met.subset == "a")].groupby(["model", "fold"])["value"].mean()
    diffs = [per[("bad", f)] - per[("good", f)] for f in (0, 1)]
    assert row.mean_diff == pytest.approx(np.mean(diffs)) and row.std_diff == pytest.approx(np.std(diffs, ddof=1))
    assert row.n_better == 0 and row.n_samples == 2


def test_cmrcnet_cosine_schedule_decays_the_learning_rate_over_the_epochs():
    x, blk = _spots()
    with pytest.raises(Exception, match="lr_schedule must be none, plateau or cosine"):
        create_model("cmrcnet", **TINY, lr_schedule="step")
    tr, va = np.arange(80), np.arange(80, 100)
    m = create_model("cmrcnet", **TINY, epochs=6, patience=50, lr=1e-3, lr_schedule="cosine")
    m.fit_spots(x[tr], blk.subset(tr), val=(x[va], blk.subset(va)))
    lrs = [h["lr"] for h in m.fit_info_["history"]]
    assert len(lrs) == 6 and all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decaying
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-6)  # cosine to lr / 100 at the last epoch
    plain = create_model("cmrcnet", **TINY, epochs=3, patience=50).fit_spots(x[tr], blk.subset(tr), val=(x[va], blk.subset(va)))
    assert all("lr" not in h for h in plain.fit_info_["history"])  # no schedule: the lr is untouched
