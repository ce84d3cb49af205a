"""Pathology foundation models as their authors publish them.

Each entry of :data:`PUBLISHED` holds the facts of one model card: the library and
architecture that build it, the construction arguments, the preprocessing (input size, resize
and crop, interpolation, mean/std), how the tile embedding is pooled from the tokens, where
the weights file is published and its licence. The builders below construct exactly that
(``tests/test_foundation_encoders.py`` compares every tensor name and shape with a
construction made from the model cards' own words), and load a downloaded file only after
checking that it fits (:func:`~histoviz.features.encoders.check_weights`).

Nothing is downloaded: the file is looked for at ``--weights``, in ``$HISTOVIZ_WEIGHTS_DIR``
and in an offline Hugging Face cache (:meth:`EncoderInfo.weights_locations`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from histoviz.errors import MissingWeightsError
from histoviz.features.encoders._base import IMAGENET_MEAN, IMAGENET_STD, PatchEncoder, TimmEncoder
from histoviz.features.encoders._files import require_weights
from histoviz.features.encoders._registry import EncoderInfo, register_encoder
from histoviz.features.encoders._weights import load_weights

__all__ = ["PUBLISHED", "ConchVisionTower", "FoundationViT", "HFVisionEncoder", "Published"]

_NC_ND = "CC-BY-NC-ND 4.0 (non-commercial academic research; gated on Hugging Face)"


@dataclass(frozen=True)
class Published:
    """The published facts of one foundation model (see the module docstring).

    ``pooling``: ``"cls"`` (the class token after the final norm) or ``"cls+mean"`` (the class
    token concatenated with the mean of the patch tokens, class and register tokens excluded).
    ``library``: ``timm`` (``timm.create_model(arch, **kwargs)``), ``transformers``
    (``transformers.<arch>(<arch minus Model>Config(**kwargs))``) or ``timm+torch`` (a timm
    trunk with an attention-pooling head, see :class:`ConchVisionTower`).
    """

    info: EncoderInfo
    library: str
    arch: str
    kwargs: dict[str, Any]
    input_size: int = 224
    resize_size: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pooling: str = "cls"
    unused_keys: tuple[str, ...] = field(default=())


def _timm_layers(kw: dict[str, Any]) -> dict[str, Any]:
    """Model-card layer names (``"SwiGLUPacked"``, ``"SiLU"``) -> the classes timm expects."""
    out = dict(kw)
    if out.get("mlp_layer") == "SwiGLUPacked":
        from timm.layers import SwiGLUPacked

        out["mlp_layer"] = SwiGLUPacked
    if out.get("act_layer") == "SiLU":
        out["act_layer"] = nn.SiLU
    return out


class FoundationViT(TimmEncoder):
    """A timm ViT built with a model card's arguments, pooled as the card says."""

    def __init__(self, spec: Published, **overrides: Any) -> None:
        kw = _timm_layers({**spec.kwargs, **overrides})
        kw.pop("num_classes", None)  # TimmEncoder builds without a classifier
        super().__init__(spec.arch, mean=spec.mean, std=spec.std, input_size=spec.input_size,
                         resize_size=spec.resize_size, interpolation=spec.interpolation, **kw)
        self.pooling = spec.pooling
        if spec.pooling == "cls+mean":
            self.embed_dim = 2 * self.model.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Class token, or class token ++ mean of the patch tokens (registers excluded)."""
        out = self.model(x)
        if self.pooling == "cls":
            return out if out.ndim == 2 else out[:, 0]
        patches = out[:, self.model.num_prefix_tokens:]
        return torch.cat([out[:, 0], patches.mean(1)], dim=-1)


class HFVisionEncoder(PatchEncoder):
    """A Hugging Face ``transformers`` vision backbone (``Dinov2Model``...), class token out."""

    def __init__(self, spec: Published, **overrides: Any) -> None:
        try:
            import transformers
        except ImportError:
            raise MissingWeightsError(
                f"encoder {spec.info.name!r} is built by the transformers library, which is not "
                "installed: pip install transformers (or histoviz[foundation])") from None
        cfg_cls = getattr(transformers, spec.arch.removesuffix("Model") + "Config")
        model = getattr(transformers, spec.arch)(cfg_cls(**{**spec.kwargs, **overrides}))
        super().__init__(embed_dim=int(model.config.hidden_size), input_size=spec.input_size,
                         mean=spec.mean, std=spec.std, resize_size=spec.resize_size,
                         interpolation=spec.interpolation)
        self.model = model
        self.unused_keys = spec.unused_keys

    def weights_module(self) -> nn.Module:
        """The transformers model (the published ``model.safetensors`` layout)."""
        return self.model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``last_hidden_state[:, 0]``: the class token after the final layer norm."""
        return self.model(pixel_values=x).last_hidden_state[:, 0]


class _AttentionalPooler(nn.Module):
    """Learned queries attending to the trunk's tokens (the CoCa attentional pooler)."""

    def __init__(self, d_model: int, context_dim: int, n_head: int, n_queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim,
                                          batch_first=True)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.attn(q, kv, kv, need_weights=False)[0]


class ConchVisionTower(PatchEncoder):
    """CONCH's image tower: a timm ViT trunk, an attentional pooler and a layer norm.

    The embedding is the contrastive pooler's single query after its layer norm (the
    ``encode_image(..., proj_contrast=False, normalize=False)`` features).
    """

    def __init__(self, spec: Published, **overrides: Any) -> None:
        from timm.models.vision_transformer import VisionTransformer

        kw = {**spec.kwargs, **overrides}
        pool = kw.pop("pooler")
        trunk = VisionTransformer(**kw)
        super().__init__(embed_dim=pool["d_model"], input_size=spec.input_size, mean=spec.mean,
                         std=spec.std, resize_size=spec.resize_size, interpolation=spec.interpolation)
        self.trunk = trunk
        self.attn_pool_contrast = _AttentionalPooler(**pool)
        self.ln_contrast = nn.LayerNorm(pool["d_model"])
        self.unused_keys = spec.unused_keys

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised contrastive embedding."""
        tokens = self.trunk.forward_features(x)
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


def _hf(repo: str) -> str:
    return f"https://huggingface.co/{repo}"


# The facts below are the model cards' (URLs in ``source``); tests/test_foundation_encoders.py
# keeps its own copy, taken from the same cards, and compares the constructions.
PUBLISHED: dict[str, Published] = {p.info.name: p for p in [
    Published(
        EncoderInfo("uni", 1024, "UNI ViT-L/16 (Mahmood lab)", "local", "MahmoodLab/UNI",
                    "pytorch_model.bin", licence=_NC_ND, source=_hf("MahmoodLab/UNI"),
                    architecture="timm vit_large_patch16_224"),
        "timm", "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0,
         "dynamic_img_size": True}),
    Published(
        EncoderInfo("uni2-h", 1536, "UNI2-h ViT-H/14 with 8 registers (Mahmood lab)", "local",
                    "MahmoodLab/UNI2-h", "pytorch_model.bin", licence=_NC_ND,
                    source=_hf("MahmoodLab/UNI2-h"), architecture="timm vit_giant_patch14_224"),
        "timm", "vit_giant_patch14_224",
        {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
         "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True,
         "mlp_layer": "SwiGLUPacked", "act_layer": "SiLU", "reg_tokens": 8,
         "dynamic_img_size": True}),
    *[Published(
        EncoderInfo(f"h-optimus-{v}", 1536, f"H-optimus-{v} ViT-g/14 with 4 registers (Bioptimus)",
                    "local", f"bioptimus/H-optimus-{v}", "pytorch_model.bin",
                    alt_filenames=("model.safetensors",), licence=lic,
                    source=_hf(f"bioptimus/H-optimus-{v}"),
                    architecture="timm vit_giant_patch14_reg4_dinov2"),
        "timm", "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False, "num_classes": 0,
         "global_pool": "token"},
        mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517))
      for v, lic in ((0, "Apache-2.0"),
                     (1, "gated on Hugging Face; read the terms on its model card before use"))],
    Published(
        EncoderInfo("gigapath", 1536, "Prov-GigaPath tile encoder ViT-g/16 (Microsoft, Providence)",
                    "local", "prov-gigapath/prov-gigapath", "pytorch_model.bin",
                    licence="Apache-2.0 (research use; gated on Hugging Face)",
                    source=_hf("prov-gigapath/prov-gigapath"),
                    architecture="timm vit_giant_patch14_dinov2 with 16-px patches"),
        "timm", "vit_giant_patch14_dinov2",
        {"img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536, "depth": 40,
         "num_heads": 24, "init_values": 1e-5, "mlp_ratio": 5.33334, "num_classes": 0,
         "global_pool": "token"},
        resize_size=256, interpolation="bicubic"),
    Published(
        EncoderInfo("virchow", 2560, "Virchow ViT-H/14 (Paige), class token + mean patch token",
                    "local", "paige-ai/Virchow", "pytorch_model.bin",
                    alt_filenames=("model.safetensors",),
                    licence="Apache-2.0 with the card's additional terms (no clinical use; gated)",
                    source=_hf("paige-ai/Virchow"), architecture="timm vit_huge_patch14_224"),
        "timm", "vit_huge_patch14_224",
        {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "mlp_ratio": 5.3375,
         "global_pool": "", "dynamic_img_size": True, "mlp_layer": "SwiGLUPacked",
         "act_layer": "SiLU"},
        interpolation="bicubic", pooling="cls+mean"),
    Published(
        EncoderInfo("virchow2", 2560,
                    "Virchow2 ViT-H/14 with 4 registers (Paige), class token + mean patch token",
                    "local", "paige-ai/Virchow2", "pytorch_model.bin",
                    alt_filenames=("model.safetensors",), licence=_NC_ND,
                    source=_hf("paige-ai/Virchow2"), architecture="timm vit_huge_patch14_224"),
        "timm", "vit_huge_patch14_224",
        {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4,
         "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True,
         "mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"},
        interpolation="bicubic", pooling="cls+mean"),
    Published(
        EncoderInfo("phikon-v2", 1024, "Phikon-v2 ViT-L/16 DINOv2 (Owkin)", "local",
                    "owkin/phikon-v2", "model.safetensors", licence="Owkin non-commercial licence",
                    source=_hf("owkin/phikon-v2"), architecture="transformers Dinov2Model",
                    requires="transformers"),
        "transformers", "Dinov2Model",
        {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4,
         "patch_size": 16, "image_size": 224, "layerscale_value": 1e-5, "layer_norm_eps": 1e-6,
         "qkv_bias": True, "use_swiglu_ffn": False}),
    Published(
        EncoderInfo("conch", 512, "CONCH v1 image tower ViT-B/16 at 448 px (Mahmood lab)", "local",
                    "MahmoodLab/CONCH", "pytorch_model.bin", licence=_NC_ND,
                    source=_hf("MahmoodLab/CONCH"),
                    architecture="timm VisionTransformer trunk + attentional pooler (torch)"),
        "timm+torch", "VisionTransformer",
        {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4, "img_size": 448,
         "patch_size": 16, "num_classes": 0, "dynamic_img_size": True,
         "pooler": {"d_model": 512, "context_dim": 768, "n_head": 8, "n_queries": 1}},
        input_size=448, interpolation="bicubic",
        unused_keys=("attn_pool_caption.", "ln_caption.", "proj_contrast")),
]}

_CLASSES = {"timm": FoundationViT, "transformers": HFVisionEncoder, "timm+torch": ConchVisionTower}


def _builder(spec: Published):  # noqa: ANN202 - a registry builder
    def build(pretrained: bool = True, weights: str | os.PathLike | None = None,
              **overrides: Any) -> PatchEncoder:
        """Build ``spec``; ``overrides`` change construction arguments (tests: ``depth=1``)."""
        path = require_weights(spec.info, weights) if pretrained else None  # fail before building
        enc = _CLASSES[spec.library](spec, **overrides)
        if path is not None:
            load_weights(enc, path, spec.info.name)
        return enc

    return build


for _spec in PUBLISHED.values():
    register_encoder(_spec.info)(_builder(_spec))
