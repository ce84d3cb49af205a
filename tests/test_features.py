"""Encoders (registry contract, weights loading) and embed_slide (order, reproducibility, HDF5)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from histoviz.errors import EncoderError, MissingWeightsError
from histoviz.features import create_encoder, embed_slide, list_encoders, register_encoder
from histoviz.features.encoders import EncoderInfo, find_weights
from histoviz.io import FeatureBag, open_slide
from histoviz.tiling import TilingConfig, make_tile_grid
from histoviz.tiling.dataset import read_tile

LIGHT = ["morphology", "tiny-test", "efficientnet-lite0", "resnet50-trunc", "ctranspath", "uni"]
HEAVY = ["uni2-h", "h-optimus-0", "gigapath"]


def test_registry_lists_and_rejects():
    names = {i.name for i in list_encoders()}
    assert set(LIGHT + HEAVY) <= names
    with pytest.raises(EncoderError, match="unknown encoder 'nope'; available: .*morphology"):
        create_encoder("nope")
    with pytest.raises(KeyError, match="already registered"):
        register_encoder(EncoderInfo("morphology", 1, "", "none"))(lambda **k: None)


@pytest.mark.parametrize("name", LIGHT)
def test_encoder_contract(name):
    enc = create_encoder(name, pretrained=name in ("morphology", "efficientnet-lite0", "tiny-test"))
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        y = enc(x)
    assert y.shape == (2, enc.embed_dim)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert enc.embed_dim == next(i.embed_dim for i in list_encoders() if i.name == name)
    assert not enc.training


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY)
def test_heavy_encoder_architectures(name):
    enc = create_encoder(name, pretrained=False)
    with torch.inference_mode():
        y = enc(torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8))
    assert y.shape == (1, enc.embed_dim) and torch.isfinite(y).all()


def test_missing_weights_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HISTOVIZ_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="'uni' needs pretrained weights.*MahmoodLab/UNI/pytorch_model.bin"):
        create_encoder("uni")
    with pytest.raises(MissingWeightsError, match="nothere.bin does not exist"):
        create_encoder("uni", weights=tmp_path / "nothere.bin")


def test_weights_from_hf_cache_layout(monkeypatch, tmp_path):
    """resnet50-trunc finds timm/resnet50.tv_in1k in an offline HF cache and uses those weights."""
    from safetensors.torch import save_file

    src = create_encoder("resnet50-trunc", pretrained=False)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    snap = tmp_path / "hub" / "models--timm--resnet50.tv_in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = create_encoder("resnet50-trunc")
    assert "abc123" in enc.weights_source
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.allclose(enc(x), src(x), atol=1e-5)
        assert not torch.allclose(enc(x), create_encoder("resnet50-trunc", pretrained=False)(x), atol=1e-3)


def test_wrong_weights_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    save_file({"foo": torch.zeros(3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(MissingWeightsError, match="does not fit encoder 'resnet50-trunc'"):
        create_encoder("resnet50-trunc", weights=tmp_path / "bad.safetensors")
    p = tmp_path / "info.json"
    p.write_text("{}")
    assert find_weights(list_encoders()[0], p) == p


def test_efficientnet_pretrained_weights_load():
    enc = create_encoder("efficientnet-lite0")
    rnd = create_encoder("efficientnet-lite0", pretrained=False)
    assert "imagenet" in enc.weights_source
    sd, sr = enc.net.state_dict(), rnd.net.state_dict()
    assert not torch.equal(sd["_conv_stem.weight"], sr["_conv_stem.weight"])
    # ImageNet BN running stats are not the init values
    assert not torch.allclose(sd["_bn0.running_var"], torch.ones_like(sd["_bn0.running_var"]))


def test_morphology_features_follow_stain():
    """Haematoxylin statistics rise with nuclear density; eosin-only tiles stay low."""
    rng = np.random.default_rng(0)
    pink = np.zeros((224, 224, 3), np.uint8) + np.array([235, 160, 200], np.uint8)
    tiles = []
    for n_nuclei in (0, 40, 160):
        t = pink.copy()
        for _ in range(n_nuclei):
            cx, cy = rng.integers(6, 218, 2)
            yy, xx = np.ogrid[:224, :224]
            t[(xx - cx) ** 2 + (yy - cy) ** 2 < 25] = (70, 40, 130)
        tiles.append(t)
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)
    enc = create_encoder("morphology")
    with torch.inference_mode():
        f = enc(x).numpy()
    h_mean, nuc_frac = f[:, 7], f[:, 31]  # HED means start at 7; thresholds at 30..32
    assert h_mean[0] < h_mean[1] < h_mean[2]
    assert nuc_frac[0] == 0 and nuc_frac[1] < nuc_frac[2]
    assert f.shape[1] == enc.embed_dim == 51


def test_embed_slide_matches_direct_forward(svs_path, tmp_path):
    r = open_slide(svs_path)
    grid = make_tile_grid(r, TilingConfig(mpp=1.0))
    enc = create_encoder("tiny-test")
    bag = embed_slide(r, enc, grid, batch_size=7)
    tiles = np.stack([read_tile(r, grid, i) for i in range(len(grid))])
    with torch.inference_mode():
        want = enc(torch.from_numpy(tiles).permute(0, 3, 1, 2)).numpy()
    assert np.allclose(bag.features, want, atol=1e-5)
    assert np.array_equal(bag.coords, grid.coords)
    # streamed to disk with two loader workers: same rows in the same order
    p = embed_slide(r, enc, grid, batch_size=5, num_workers=2, out=tmp_path / "b.h5")
    b2 = FeatureBag.from_h5(p)
    assert np.allclose(b2.features, bag.features, atol=1e-6)
    with h5py.File(p) as f:
        for k in ("slide_id", "encoder", "embed_dim", "tile_size", "mpp", "tile_size_level0", "histoviz_version"):
            assert k in f.attrs
        assert f.attrs["encoder"] == "tiny-test" and f.attrs["tile_size_level0"] == round(224 / 0.499)
        assert f.attrs["embed_dim"] == 64 and f.attrs["mpp"] == 1.0


def test_embed_is_reproducible(layout_slide):
    p, _, _ = layout_slide
    a = embed_slide(open_slide(p), "morphology")
    b = embed_slide(open_slide(p), "morphology")
    assert np.array_equal(a.features, b.features) and len(a) == 16


def test_embed_interrupted_leaves_nothing(layout_slide, tmp_path):
    p, _, _ = layout_slide

    class Boom(torch.nn.Module):
        name, embed_dim, weights_source = "boom", 4, "none"
        calls = 0

        def forward(self, x):
            Boom.calls += 1
            if Boom.calls == 2:
                raise KeyboardInterrupt
            return torch.zeros(len(x), 4)

    with pytest.raises(KeyboardInterrupt):
        embed_slide(open_slide(p), Boom(), batch_size=4, out=tmp_path / "layout.h5")
    assert list(tmp_path.iterdir()) == []
