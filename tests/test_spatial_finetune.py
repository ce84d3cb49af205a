"""CMRCNet / BLEEP with the image side trained on the spot patches (``image_encoder=...``).

Fast: which encoder weights train, the safetensors round trip, the flips / rotations, the
patch store (the embedding's pixels, memory bounded), bad parameters. Slow: the spot runner on
synthetic spatial samples (leave-one-sample-out), the trained-on-patches model against the
shuffled control and the frozen-feature variant (paired per held-out sample), and
``histoviz predict`` at spots and on a tile grid with the fine-tuned encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histoviz.data.omics import TargetBlock
from histoviz.errors import ConfigError, DataError
from histoviz.models import create_model

ROOT = Path(__file__).resolve().parents[1]
TINY = {"dim": 16, "n_image_tokens": 2, "n_gene_tokens": 2, "cross_heads": 2, "fusion_heads": 2, "device": "cpu",
        "batch_size": 32, "top_k": 10, "image_encoder": "tiny-test", "image_size": 32}


def _images(n: int = 160, g: int = 10, seed: int = 0):
    """Patches whose colour (a latent z in [0, 1]^3) drives the expression linearly."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(size=(n, 3))
    img = (z[:, None, None, :] * 200 + 20 + rng.integers(0, 30, (n, 32, 32, 3))).clip(0, 255).astype(np.uint8)
    y = (z @ rng.normal(size=(3, g)) + 0.1 * rng.normal(size=(n, g))).astype(np.float32)
    return img, TargetBlock("gene", [f"G{j}" for j in range(g)], y, np.ones(n, bool))


def test_the_last_blocks_of_the_encoder_train_and_the_checkpoint_round_trips(tmp_path):
    from histoviz.features.encoders import create_encoder
    from histoviz.models.checkpoint import FittedPipeline, load_checkpoint, save_checkpoint
    from histoviz.models.spot._image import weights_digest

    img, blk = _images()
    before = {k: v.clone() for k, v in create_encoder("tiny-test").state_dict().items()}  # the registry's weights
    m = create_model("cmrcnet", **TINY, epochs=3, train_blocks=2)
    tr, va = np.arange(120), np.arange(120, 140)
    m.fit_spots(img[tr], blk.subset(tr), val=(img[va], blk.subset(va)))
    after = m.patch_encoder().state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # test_vit has 6 blocks: the last two and the final norm train, the rest is untouched
    assert changed and all(k.startswith(("model.blocks.4.", "model.blocks.5.", "model.norm.")) for k in changed), changed
    assert any(k.startswith("model.blocks.4.") for k in changed) and any(k.startswith("model.norm.") for k in changed)
    assert not any(k.startswith(("model.blocks.3.", "model.patch_embed.", "model.pos_embed", "model.cls_token"))
                   for k in changed)
    info = m.fit_info()
    assert info["encoder_blocks"] == 6 and info["encoder_trainable_params"] > 0
    assert info["encoder_trainable_params"] + info["encoder_frozen_params"] == sum(v.numel() for v in before.values())
    te = np.arange(140, 160)
    pred = m.predict_spots(img[te])  # from pixels
    np.testing.assert_array_equal(m.predict_spots(m.encode_patches(img[te])), pred)  # = from its own features
    assert m.patch_encoder().name == f"tiny-test+cmrcnet-ft-{weights_digest(m.patch_encoder())}"
    save_checkpoint(FittedPipeline(m, {}, {"encoder": m.patch_encoder().name}), tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["model.json", "model.safetensors"]
    from safetensors.numpy import load_file

    saved = load_file(str(tmp_path / "ck" / "model.safetensors"))
    np.testing.assert_array_equal(saved["model.module.encoder.model.blocks.5.mlp.fc1.weight"],
                                  after["model.blocks.5.mlp.fc1.weight"].numpy())
    back = load_checkpoint(tmp_path / "ck").model
    np.testing.assert_array_equal(back.predict_spots(img[te]), pred)  # identical predictions
    assert back.patch_encoder().name == m.patch_encoder().name
    assert weights_digest(back.patch_encoder()) == weights_digest(m.patch_encoder())
    # the slide-level API on the model's own features: one-patch bags = spots
    feats = m.encode_patches(img[te])
    np.testing.assert_allclose(back.predict([f[None] for f in feats])["gene"], pred, rtol=1e-6, atol=1e-6)


def test_train_blocks_zero_freezes_the_encoder_and_minus_one_trains_all_of_it():
    from histoviz.features.encoders import create_encoder

    img, blk = _images(n=64)
    before = create_encoder("tiny-test").state_dict()
    frozen = create_model("cmrcnet", **TINY, epochs=2, train_blocks=0, augment=False).fit_spots(img, blk)
    assert all(torch.equal(before[k], v) for k, v in frozen.patch_encoder().state_dict().items())
    assert frozen.fit_info()["encoder_trainable_params"] == 0
    full = create_model("bleep", **{k: v for k, v in TINY.items() if k != "n_gene_tokens"}, epochs=2,
                        train_blocks=-1).fit_spots(img, blk)
    assert full.fit_info()["encoder_frozen_params"] == 0
    changed = [k for k, v in full.patch_encoder().state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("model.patch_embed.") for k in changed) and "model.pos_embed" in changed
    assert full.patch_encoder().name.startswith("tiny-test+bleep-ft-")


def test_encoder_blocks_are_found_for_vit_and_efficientnet():
    from histoviz.features.encoders import create_encoder
    from histoviz.models.spot._image import encoder_units

    stem, blocks, tail, own = encoder_units(create_encoder("tiny-test"))
    assert len(blocks) == 6 and [type(m).__name__ for m in tail] == ["LayerNorm"] and len(own) == 2  # cls, pos
    stem, blocks, tail, own = encoder_units(create_encoder("efficientnet-lite0", pretrained=False))
    assert len(blocks) == 16 and len(stem) == 2 and [type(m).__name__ for m in tail][:2] == [
        "Conv2dStaticSamePadding", "BatchNorm2d"]


def test_frozen_layers_keep_their_batch_norm_statistics_while_the_rest_trains():
    from histoviz.models.spot._image import ImageSideNet, encoder_units

    arch = {"image_encoder": "efficientnet-lite0", "image_pretrained": False, "train_blocks": 1, "image_size": 32,
            "in_dim": 0, "n_genes": 4, "dim": 16, "n_image_tokens": 2, "n_gene_tokens": 2, "reconstruction": False,
            "recon_loss": "mse", "n_blocks": 0, "share_fusion_weights": False, "cross_heads": 2, "fusion_heads": 2,
            "temperature": 1.0, "dropout": 0.1}
    from histoviz.models.spot.cmrcnet import _net

    net = ImageSideNet(arch, _net).train()
    stem, blocks, tail, _ = encoder_units(net.encoder)
    assert not any(m.training for b in blocks[:-1] for m in b.modules()) and not any(m.training for m in stem)
    assert blocks[-1].training and tail[0].training
    bn0 = stem[1].running_mean.clone()
    with torch.no_grad():
        net.features(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8))
    torch.testing.assert_close(stem[1].running_mean, bn0)  # frozen stem: statistics unchanged
    assert not any(p.requires_grad for p in blocks[-2].parameters())
    assert all(p.requires_grad for p in blocks[-1].parameters())


def test_augmentation_gives_the_eight_symmetries_of_the_square():
    from histoviz.models.spot._image import augment_d4

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(1, 2 * 3, 4, 4)[:, :3].repeat(8, 1, 1, 1)
    out = augment_d4(x, np.arange(8)).numpy()
    a = x[0].numpy()
    want = [np.rot90(a, k, axes=(1, 2)) for k in range(4)]
    want += [w[:, :, ::-1] for w in want]
    for k in range(8):
        np.testing.assert_array_equal(out[k], want[k])
    assert len({o.tobytes() for o in out}) == 8  # all distinct
    assert all(sorted(o.ravel().tolist()) == sorted(a.ravel().tolist()) for o in out)  # pixels permuted only


def test_patch_store_reads_the_embedding_pixels_and_bounds_its_memory(tmp_path):
    from histoviz.data.spatial import PatchSpec, load_spot_sample, spot_grid
    from histoviz.data.spot_patches import SpotPatchStore
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.io import open_slide
    from histoviz.tiling.dataset import read_tile

    c = make_synthetic_cohort(tmp_path / "syn", n_slides=2, seed=1, slide_size=(768, 768), spatial_fraction=1.0,
                              progress=False)
    samples = [load_spot_sample(p) for _, p in sorted(c.spatial.items())]
    patch = PatchSpec(size_um=112, mpp=1.0)
    store = SpotPatchStore(samples, patch, cache_bytes=3 * 3 * 112 * 112)  # room for three patches
    rows = np.arange(min(5, len(samples[1])))[::-1]
    got = store.read(1, rows)
    with open_slide(samples[1].slide_path) as r:
        grid = spot_grid(samples[1], patch, dimensions=r.dimensions)
        want = np.stack([read_tile(r, grid, int(i)).transpose(2, 0, 1) for i in rows])
    np.testing.assert_array_equal(got, want)
    assert store._cached <= store.cache_bytes and len(store._cache) == 3 and store.reads == len(rows)
    store.read(1, rows[-3:])  # the last three are cached
    assert store.reads == len(rows)
    store.read(1, rows[:1])  # evicted: read again
    assert store.reads == len(rows) + 1
    view = store.view([(1, rows[:2]), (0, np.array([0]))])
    assert len(view) == 3 and view.shape == (3, 3, 112, 112)
    np.testing.assert_array_equal(view.read([2, 0])[1], got[0])
    np.testing.assert_array_equal(view.subset([1]).read([0])[0], got[1])
    store.close()


def test_bad_image_side_parameters_are_one_line_errors():
    with pytest.raises(ConfigError, match="morphology.*no weights to train"):
        create_model("cmrcnet", image_encoder="morphology")
    with pytest.raises(ConfigError, match="unknown encoder 'nope'; available: .*tiny-test"):
        create_model("cmrcnet", image_encoder="nope")
    with pytest.raises(ConfigError, match="train_blocks"):
        create_model("cmrcnet", image_encoder="tiny-test", train_blocks=-2)
    img, blk = _images(n=20)
    m = create_model("cmrcnet", **TINY, epochs=1)
    with pytest.raises(DataError, match="needs images"):
        m.fit_spots(np.zeros((20, 8), np.float32), blk)
    with pytest.raises(DataError, match="trains its image encoder on spot patches, not on feature bags"):
        m.fit([np.zeros((1, 8), np.float32)] * 20, {"gene": blk})
    with pytest.raises(DataError, match="uint8"):
        m.fit_spots(img.astype(np.float32), blk)


# ------------------------------------------------------------------------------------------------
# the spot runner on synthetic spatial samples (slow)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ft_run(tmp_path_factory):
    from histoviz.cli import main
    from histoviz.data.synthetic import make_synthetic_cohort

    d = tmp_path_factory.mktemp("ftrun")
    cohort = make_synthetic_cohort(d / "syn", n_slides=6, seed=3, slide_size=(1536, 1536), spatial_fraction=1.0,
                                   progress=False)
    # tiny-test (a random ViT, the CPU-fast registered encoder) on 64 px patches (112 um at 1.75 um/px);
    # the frozen variant reads the same encoder's features of the same patches
    sets = [f"data.spots.samples={d / 'syn' / 'spatial'}", f"data.spots.features={d / 'feat'}",
            "data.spots.encoder=tiny-test", "data.spots.patch={size_um: 112, mpp: 1.75}",
            "model.params.image_encoder=tiny-test", "model.params.image_size=64", "model.params.image_lr=null",
            "model.params.dim=32", "model.params.n_image_tokens=4", "model.params.n_gene_tokens=4",
            "model.params.cross_heads=4", "model.params.fusion_heads=4", "training.epochs=15",
            "evaluation.spots.compare=[{name: cmrcnet, label: cmrcnet-frozen, params: {dim: 32, n_image_tokens: 4, "
            "n_gene_tokens: 4, cross_heads: 4, fusion_heads: 4}}]", "evaluation.spots.top_k=[20]"]
    args = ["train", str(ROOT / "training" / "configs" / "st_cmrcnet_finetune.yaml"), "--out", str(d / "run"),
            "--no-progress"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    return {"dir": d, "run": d / "run", "cohort": cohort}


def _per_sample(run: Path, metric: str = "pearson", subset: str = "hvg50"):
    from histoviz.evaluation.spots import per_sample
    from histoviz.io.rundir import RunDir

    ps = per_sample(RunDir(run).metrics(), metric)
    return ps[ps["subset"] == subset].pivot_table(index="fold", columns="model", values="value", dropna=False)


@pytest.mark.slow
def test_trained_on_patches_beats_the_shuffled_control_and_is_compared_with_frozen_features(ft_run, capsys):
    r = _per_sample(ft_run["run"])
    assert len(r) == 6  # every sample held out once
    ft, shuffled, frozen = r["cmrcnet-finetune-20"], r["cmrcnet-finetune-shuffled-20"], r["cmrcnet-frozen-20"]
    margin = ft - shuffled
    assert margin.mean() > 0.15 and (margin > 0).sum() >= 5, margin.to_dict()  # measured: see the README
    assert ft.mean() > 0.2
    diff = ft - frozen  # paired per held-out sample; reported whichever way it falls
    with capsys.disabled():
        print(f"\n[finetune] HVG-50 Pearson: trained on patches {ft.mean():.3f} +- {ft.std():.3f}, frozen features "
              f"{frozen.mean():.3f} +- {frozen.std():.3f}, shuffled {shuffled.mean():.3f}; paired (trained - frozen) "
              f"{diff.mean():+.3f} +- {diff.std():.3f} ({int((diff > 0).sum())}/6 better); vs shuffled "
              f"{margin.mean():+.3f} +- {margin.std():.3f}")
    assert np.isfinite(diff).all()


@pytest.mark.slow
def test_checkpoints_carry_each_folds_fine_tuned_encoder(ft_run):
    import json

    from safetensors.numpy import load_file

    ck = ft_run["run"] / "checkpoints"
    docs = {k: json.loads((ck / k / "model.json").read_text()) for k in ("fold0", "fold1")}
    names = {k: d["features"]["encoder"] for k, d in docs.items()}
    assert all(n.startswith("tiny-test+cmrcnet-ft-") for n in names.values()) and names["fold0"] != names["fold1"]
    assert docs["fold0"]["features"]["embed"]["finetuned"]["base_encoder"] == "tiny-test"
    w0, w1 = (load_file(str(ck / k / "model.safetensors")) for k in ("fold0", "fold1"))
    key = "model.module.encoder.model.blocks.5.attn.qkv.weight"
    assert key in w0 and not np.array_equal(w0[key], w1[key])
    assert not any(p.suffix in (".pkl", ".pt", ".pickle") for p in ck.rglob("*"))


@pytest.mark.slow
def test_predict_embeds_with_the_fine_tuned_encoder_at_spots_and_on_a_tile_grid(ft_run, tmp_path):
    from histoviz.cli import main
    from histoviz.io.predictions import read_predictions
    from histoviz.io.rundir import RunDir
    from histoviz.predict import predict_spots

    cohort = ft_run["cohort"]
    sid = sorted(cohort.spatial)[2]
    out = tmp_path / "spots.h5ad"
    assert main(["predict", "--model", str(ft_run["run"]), "--spots", str(cohort.spatial[sid]), "--out", str(out),
                 "--no-progress"]) == 0
    a = read_predictions(out)
    assert a.uns["histoviz"]["encoder"].startswith("tiny-test+cmrcnet-ft-")
    run = RunDir(ft_run["run"])
    held = run.heldout("gene")
    h = held[(held["sample_id"].astype(str) == sid) & (held["model"].astype(str) == run.info["main_labels"][0])]
    for g in list(dict.fromkeys(h["target"].astype(str)))[:3]:  # the fold that held it out, pixel for pixel
        np.testing.assert_allclose(a[:, g].X.ravel(), h[h["target"].astype(str) == g]["y_pred"].to_numpy(),
                                   rtol=1e-5, atol=1e-5)
    tiles = tmp_path / "tiles.h5ad"
    assert main(["predict", "--model", str(ft_run["run"]), "--slide", str(cohort.slides[sid]), "--out", str(tiles),
                 "--no-progress"]) == 0
    b = read_predictions(tiles)
    assert b.uns["histoviz"]["tile_size_level0"] == 224 and b.n_vars == a.n_vars and np.isfinite(b.X).all()
    assert b.uns["histoviz"]["encoder"].startswith("tiny-test+cmrcnet-ft-")
    with pytest.raises(DataError, match="fine-tuned its own image encoder"):
        predict_spots(cohort.spatial[sid], ft_run["run"], fold="ensemble")
