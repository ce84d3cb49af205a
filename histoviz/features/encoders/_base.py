"""Patch encoder base classes: preprocessing on the device, then the network.

Every encoder takes a ``uint8`` tensor ``(B, 3, H, W)`` (or an already normalised float
tensor) and returns ``(B, embed_dim)`` float32 features. Resizing, cropping and
normalisation follow the encoder's published preprocessing and run on the device with the
forward pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PatchEncoder", "TimmEncoder"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------------
# base class
# ------------------------------------------------------------------------------------------------
class PatchEncoder(nn.Module):
    """Base class: preprocessing on device + ``forward_features``.

    Attributes
    ----------
    name, embed_dim, input_size, mean, std, weights_source
        As given; ``weights_source`` is the file the weights came from (or ``random``).
    resize_size, interpolation
        The published preprocessing: the tile's shorter side is resized to ``resize_size``
        (``interpolation``: ``bilinear`` or ``bicubic``, antialiased), then the centre
        ``input_size`` square is cropped (torchvision ``Resize`` + ``CenterCrop``).
    precision
        ``fp32``, ``bf16`` or ``int8`` (set by :func:`~histoviz.features.encoders.apply_precision`).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        input_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        name: str = "encoder",
        resize_size: int | None = None,
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        self.name = name
        self.embed_dim = int(embed_dim)
        self.input_size = int(input_size)
        self.resize_size = int(resize_size or input_size)
        self.interpolation = interpolation
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.weights_source = "random"
        self.precision = "fp32"
        self.compute_dtype = torch.float32
        #: key prefixes of a published file that the encoder does not use (heads, other towers)
        self.unused_keys: tuple[str, ...] = ()
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype."""
        for p in self.parameters():
            return p.dtype
        return torch.float32

    def weights_module(self) -> nn.Module:
        """The module whose ``state_dict`` is the published weights file's layout."""
        return self

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> normalised float ``(B, 3, input_size, input_size)``."""
        x = x.float()
        h, w = x.shape[-2:]
        r = self.resize_size
        if min(h, w) != r:
            size = (r, max(1, round(w * r / h))) if h <= w else (max(1, round(h * r / w)), r)
            x = torch.nn.functional.interpolate(x, size=size, mode=self.interpolation,
                                                antialias=True, align_corners=False)
            if self.interpolation == "bicubic":
                x = x.clamp(0.0, 255.0)  # bicubic overshoots; the published pipelines work in uint8
        c = self.input_size
        h, w = x.shape[-2:]
        if (h, w) != (c, c):
            top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
            x = x[..., top : top + c, left : left + c]
        return (x - self._mean) / self._std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float images -> ``(B, embed_dim)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch; uint8 input is preprocessed first; float32 out."""
        if x.dtype == torch.uint8:
            x = self.preprocess(x)
        if self.compute_dtype != torch.float32 and x.dtype != self.compute_dtype:
            x = x.to(self.compute_dtype)
        return self.forward_features(x).float()

    def transform(self, tile: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` array -> uint8 ``(3, H, W)`` tensor accepted by ``forward``."""
        return torch.from_numpy(np.ascontiguousarray(np.asarray(tile).transpose(2, 0, 1)))


# ------------------------------------------------------------------------------------------------
# timm encoders
# ------------------------------------------------------------------------------------------------
class TimmEncoder(PatchEncoder):
    """A timm architecture without its classifier (``num_classes=0``)."""

    def __init__(
        self,
        arch: str,
        *,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        input_size: int | None = None,
        truncate_after: str | None = None,
        resize_size: int | None = None,
        interpolation: str = "bilinear",
        **timm_kwargs: Any,
    ) -> None:
        import timm

        model = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
        cfg = timm.data.resolve_model_data_config(model)
        dim = model.num_features
        #: tensors of a published file the encoder does not use (classifier heads, cut layers)
        self_unused = ["head.", "fc.", "classifier."]
        if truncate_after is not None:  # CLAM-style truncated ResNet: stop after layer3
            names = [n for n, _ in model.named_children()]
            keep = names[: names.index(truncate_after) + 1]
            for n in names[len(keep) :]:
                if n not in ("global_pool",):
                    setattr(model, n, nn.Identity())
                    self_unused.append(f"{n}.")
            dim = model.feature_info[[f["module"] for f in model.feature_info].index(truncate_after)]["num_chs"]
        super().__init__(
            embed_dim=dim,
            input_size=input_size or cfg["input_size"][-1],
            mean=mean or tuple(cfg["mean"]),
            std=std or tuple(cfg["std"]),
            resize_size=resize_size,
            interpolation=interpolation,
        )
        self.arch = arch
        self.model = model
        self._truncated = truncate_after is not None
        self.unused_keys = tuple(self_unused)

    def weights_module(self) -> nn.Module:
        """The timm model (its ``state_dict`` is the published file's layout)."""
        return self.model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features."""
        if self._truncated:
            m = self.model
            x = m.act1(m.bn1(m.conv1(x)))
            x = m.maxpool(x)
            x = m.layer3(m.layer2(m.layer1(x)))
            return x.mean(dim=(2, 3))
        return self.model(x)


