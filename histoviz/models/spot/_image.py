"""The image side of CMRCNet / BLEEP trained on spot patches (``image_encoder=...``).

The paper trains its image encoder (a ViT-B/32, from scratch) together with the projection
heads on the spot patches. Here the encoder is any registered patch encoder
(:mod:`histoviz.features.encoders`), loaded with its pretrained weights (or random ones) and
fine-tuned:

- **which layers train**: the encoder's blocks are found generically (the largest
  ``ModuleList`` / ``Sequential`` of its network: a ViT's ``blocks``, EfficientNet's
  ``_blocks``, Swin's ``layers``; for networks without one, their top-level layers); the last
  ``train_blocks`` of them train, with every layer after them (final norm, conv head);
  ``train_blocks=-1`` trains everything (stem, position embeddings included); ``0`` freezes the
  encoder (the image side then differs from frozen features only by augmentation). Frozen
  layers stay in eval mode (batch-norm statistics and dropout fixed) while the rest trains.
- **augmentation** (paper: random horizontal and vertical flips and 90 degree rotations): each
  patch gets one of the 8 flips / rotations of the square, uniformly, drawn from the fit
  loop's seeded generator.
- the encoder's pooled output (what it gives as a frozen feature) is standardised with
  statistics of the *initial* encoder on training patches and enters the same token map and
  projection head as frozen features; so a fine-tuned model predicts from its own encoder's
  features, and ``histoviz predict`` embeds slides with that encoder (saved in the checkpoint).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from histoviz.errors import ConfigError

__all__ = ["ImageSideNet", "augment_d4", "build_image_encoder", "encoder_units", "weights_digest"]


def _n_params(m: Any) -> int:
    return sum(p.numel() for p in m.parameters())


def encoder_units(encoder: Any) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """``(stem, blocks, tail, own)`` of a patch encoder's network.

    ``blocks`` are the children of its largest block container; ``stem`` / ``tail`` the
    parameterised layers before / after it; ``own`` the parameters held directly by the network
    (a ViT's class token and position embeddings; they belong to the stem).
    """
    inner = encoder
    while True:
        kids = [m for m in inner.children() if _n_params(m)]
        if len(kids) == 1 and not _is_container(kids[0]) and not list(inner.parameters(recurse=False)):
            inner = kids[0]
            continue
        break
    named = [m for m in inner.children() if _n_params(m)]
    own = list(inner.parameters(recurse=False))
    conts = [(i, m) for i, m in enumerate(named) if _is_container(m) and len(m) >= 2]
    if conts:
        i, c = max(conts, key=lambda t: _n_params(t[1]))
        return named[:i], [b for b in c.children()], named[i + 1:], own
    return [], named, [], own


def _is_container(m: Any) -> bool:
    from torch import nn

    return isinstance(m, (nn.ModuleList, nn.Sequential))


def build_image_encoder(name: str, *, pretrained: bool = True, weights: str | None = None,
                        image_size: int | None = None, seed: int = 0) -> Any:
    """A registered encoder for fine-tuning (``image_size`` overrides its input size).

    Raises
    ------
    ConfigError
        An encoder without trainable weights (``morphology``).
    EncoderError, MissingWeightsError
        Unknown encoder, pretrained weights not on this machine.
    """
    from histoviz.features.encoders import create_encoder

    kw: dict[str, Any] = {"pretrained": bool(pretrained)}
    if weights:
        kw["weights"] = weights
    if not pretrained:
        kw["seed"] = int(seed)
    enc = create_encoder(name, **kw)
    if not _n_params(enc):
        raise ConfigError(f"image_encoder {name!r} has no weights to train (it is hand-crafted); pick a neural "
                          "encoder (histoviz encoders), e.g. efficientnet-lite0, or leave image_encoder unset to "
                          "use frozen features")
    if image_size:
        enc.input_size = int(image_size)
    return enc


def weights_digest(module: Any) -> str:
    """Short SHA-1 of a module's state (names, shapes and values)."""
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        a = v.detach().cpu().contiguous().numpy()
        h.update(k.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:10]


def augment_d4(x: Any, ops: np.ndarray) -> Any:
    """Apply dihedral op ``ops[i]`` (0-7: rotation by ``(op % 4) * 90`` degrees, then a
    horizontal flip when ``op >= 4``) to square image ``x[i]`` of a ``(B, C, H, W)`` tensor."""
    import torch

    out = x.clone()
    for op in np.unique(ops):
        sel = torch.from_numpy(np.flatnonzero(ops == op)).to(x.device)
        t = torch.rot90(x[sel], int(op) % 4, dims=(2, 3))
        if op >= 4:
            t = torch.flip(t, dims=(3,))
        out[sel] = t
    return out


def ImageSideNet(arch: Mapping[str, Any], head: Callable[[Mapping[str, Any]], Any], *,  # noqa: N802
                 pretrained: bool = False, seed: int = 0) -> Any:
    """The module of a CMRCNet / BLEEP with a trainable image encoder.

    ``encoder`` (the patch encoder, fine-tuned), ``head`` (the CMRCNet / BLEEP network on the
    standardised encoder features, built by the model's own ``head(arch)``: this module stays
    below the model files), buffers ``feature_mean`` / ``feature_std``. Built with the
    registry's pretrained weights for training (``pretrained=True``) and as an empty shell
    (random weights, loaded from a checkpoint) otherwise.
    """
    import torch
    from torch import nn

    enc = build_image_encoder(arch["image_encoder"], pretrained=pretrained and bool(arch["image_pretrained"]),
                              weights=arch.get("image_weights") if pretrained else None,
                              image_size=arch.get("image_size"), seed=seed)
    if arch.get("encoder_label"):
        enc.name = str(arch["encoder_label"])
        enc.weights_source = str(arch.get("encoder_weights") or enc.weights_source)

    class _ImageSide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = enc
            d = int(enc.embed_dim)
            self.head = head({**arch, "in_dim": d, "image_encoder": None})
            self.register_buffer("feature_mean", torch.zeros(d))
            self.register_buffer("feature_std", torch.ones(d))
            stem, blocks, tail, _ = encoder_units(enc)
            n, nb = int(arch["train_blocks"]), len(blocks)
            for p in enc.parameters():
                p.requires_grad_(n != 0 and (n < 0 or n >= nb))  # everything trains, or nothing yet
            if 0 < n < nb:  # the last n blocks and every layer after them
                for m in [*blocks[nb - n:], *tail]:
                    for p in m.parameters():
                        p.requires_grad_(True)
            #: layers kept in eval mode while the rest trains (batch-norm statistics, dropout)
            if n == 0:
                self._frozen = [enc]
            elif n < 0 or n >= nb:
                self._frozen = []
            else:
                self._frozen = [*stem, *blocks[:nb - n]]
            self.n_blocks = len(blocks)

        def train(self, mode: bool = True) -> Any:
            super().train(mode)
            if mode:
                for m in self._frozen:
                    m.eval()
            return self

        # the head's API on standardised features (predict, keys, losses)
        def image_embedding(self, x: torch.Tensor) -> torch.Tensor:
            return self.head.image_embedding(x)

        def gene_embedding(self, y: torch.Tensor) -> torch.Tensor:
            return self.head.gene_embedding(y)

        def losses(self, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor]:
            return self.head.losses(x, y, **kw)

        def features(self, images: torch.Tensor) -> torch.Tensor:
            """Standardised encoder features of uint8 ``(B, 3, H, W)`` images."""
            return (self.encoder(images).float() - self.feature_mean) / self.feature_std

    return _ImageSide()


def trainable_counts(net: Any) -> dict[str, int]:
    """Trainable and frozen parameter counts of the encoder of an :func:`ImageSideNet`."""
    tr = sum(p.numel() for p in net.encoder.parameters() if p.requires_grad)
    return {"encoder_trainable_params": int(tr), "encoder_frozen_params": int(_n_params(net.encoder) - tr),
            "encoder_blocks": int(net.n_blocks)}


def encode(net: Any, patches: Any, rows: Sequence[int] | np.ndarray, *, batch_size: int, device: Any,
           standardise: bool = True) -> np.ndarray:
    """``(len(rows), D)`` float32 encoder features of ``patches`` rows (eval mode, no grad)."""
    import torch

    net.eval()
    rows = np.asarray(rows, np.int64)
    out = []
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            x = torch.from_numpy(patches.read(rows[s:s + batch_size])).to(device)
            f = net.features(x) if standardise else net.encoder(x).float()
            out.append(f.cpu().numpy().astype(np.float32))
    if not out:
        return np.zeros((0, int(net.feature_mean.shape[0])), np.float32)
    return np.concatenate(out)
