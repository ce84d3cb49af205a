"""CMRCNet and BLEEP: contrastive image-expression embeddings, prediction by top-k retrieval.

After Liu et al., "Spatial Transcriptomics Expression Prediction from Histopathology Based on
Cross-Modal Mask Reconstruction and Contrastive Learning" (digest:
``../shared/papers/digest-cmrcnet.md``), implemented from the paper:

- **projection heads** (paper Fig. 1c): ``p = Linear(in, d)(x); h = Dropout(Linear(d, d)(GELU(p)));
  out = LayerNorm(h + p)``; the expression vector goes straight into its head (the head is the
  gene encoder); the image embedding is the head applied to the mean of the image tokens;
- **soft-target contrastive loss** (BLEEP): logits ``F_gene F_img^T / tau``; targets
  ``softmax((F_img F_img^T + F_gene F_gene^T) / 2 * tau)`` row-wise; cross-entropy with soft
  labels in both directions, averaged; ``tau = 1``; no L2 normalisation in training;
- **cross-modal mask reconstruction** (training only): image tokens projected to ``d``; a
  fraction ``mask_rate`` of their elements ("feature pixels") set to zero; expression tokens from
  a self-normalising network (``Linear(G, n_gene_tokens * d) -> SELU -> AlphaDropout(0.25)``);
  a 4-head cross-attention (queries: masked image tokens; keys / values: expression tokens)
  replaces the image tokens; then ``n_blocks`` fusion blocks, each a pre-norm Transformer block
  (8-head self-attention, MLP 4x) followed by a residual cross-attention whose values come from
  both the image and the expression side (``O = V_img + softmax(Q K^T / sqrt(d_h)) V_gene``); the
  token mean ``F_r`` is compared with the unmasked image embedding ``F_img`` by MSE (or cosine);
- **total loss** ``log(1 + L_c) + log(1 + L_r)``;
- **inference**: the image embedding of a query spot is compared (cosine) with the expression
  embeddings of all training spots; the prediction is the unweighted mean expression of the
  ``top_k`` most similar ones (CMRCNet-50 / CMRCNet-500).

``reconstruction=False`` is **BLEEP** (Xie et al., NeurIPS 2023; the paper's "contrastive only"
row): the same heads, loss and retrieval without the reconstruction branch.

**Image side.** By default it starts from **frozen patch features** (any registered encoder).
With ``image_encoder="<registered encoder>"`` it is trained on the spot patches themselves, as
in the paper: the encoder (pretrained weights from the registry, or random with
``image_pretrained=False``, the paper's from-scratch setting) is fine-tuned with the heads, its
last ``train_blocks`` blocks trainable, patches flipped and rotated (``augment``); the model then
trains and predicts on pixels (``fit_spots(patches, block)``, ``predict_spots(patches)``; see
:mod:`histoviz.models.spot._image` and :mod:`histoviz.data.spot_patches`), saves the fine-tuned
encoder in its checkpoint and predicts from that encoder's features.

Deviations (stated, not hidden): the image tokens come from a learned linear map of the
encoder's pooled feature vector into ``n_image_tokens`` tokens plus position embeddings (the
paper uses its ViT's 50 tokens), whether the encoder is frozen or trained. ``mask_rate`` is the fraction **zeroed** (the public code's flag keeps
that fraction; the two agree at 0.5). The reconstruction target is not detached (as in the
paper's code). ``training.lr_schedule: cosine`` decays the learning rate over ``epochs`` (to lr / 100;
the paper's code: to 1e-5 from 1e-4); early stopping on the validation loss still applies. The
EMA copy of the paper's code is updated but never used there, so it is not kept here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from histoviz.errors import ConfigError
from histoviz.models._torch import TorchSlideModel, feature_stats
from histoviz.models.registry import register_model
from histoviz.models.spot._base import SpotModel
from histoviz.task_kinds import TaskKind

__all__ = ["CMRCNetRegressor", "soft_contrastive_loss"]


def soft_contrastive_loss(img: Any, gene: Any, temperature: float = 1.0) -> Any:
    """BLEEP / CMRCNet soft-target contrastive loss of a batch, one value per spot ``(B,)``.

    ``logits = gene @ img.T / tau``; ``targets = softmax((img img^T + gene gene^T) / 2 * tau)``;
    the spot-to-image and image-to-spot soft cross-entropies are averaged.
    """
    import torch

    logits = gene @ img.T / temperature
    sim = (img @ img.T + gene @ gene.T) / 2.0 * temperature
    targets = torch.softmax(sim, dim=-1)
    spots = -(targets * torch.log_softmax(logits, dim=-1)).sum(1)
    images = -(targets.T * torch.log_softmax(logits.T, dim=-1)).sum(1)
    return (spots + images) / 2.0


def _net(arch: Mapping[str, Any]) -> Any:
    import torch
    from torch import nn

    if arch.get("image_encoder"):  # a trained image encoder in front (weights from a checkpoint)
        from histoviz.models.spot._image import ImageSideNet

        return ImageSideNet(arch, _net)
    d = int(arch["dim"])

    class ProjectionHead(nn.Module):
        def __init__(self, n_in: int) -> None:
            super().__init__()
            self.proj = nn.Linear(n_in, d)
            self.fc = nn.Linear(d, d)
            self.drop = nn.Dropout(arch["dropout"])
            self.norm = nn.LayerNorm(d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = self.proj(x)
            return self.norm(self.drop(self.fc(nn.functional.gelu(p))) + p)

    class ResidualCrossAttention(nn.Module):
        """``O = V_img + softmax(Q K^T / sqrt(d_h)) V_gene`` per head (no output projection)."""

        def __init__(self, heads: int) -> None:
            super().__init__()
            self.h = heads
            self.q = nn.Linear(d, d)
            self.k = nn.Linear(d, d)
            self.v_img = nn.Linear(d, d)
            self.v_gene = nn.Linear(d, d)
            self.drop = nn.Dropout(0.25)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            m = y.shape[1]
            q = self.drop(torch.relu(self.q(x)))
            k = self.drop(torch.relu(self.k(y)))
            v1 = self.v_img(q).view(b, n, self.h, -1).transpose(1, 2)
            v2 = self.v_gene(k).view(b, m, self.h, -1).transpose(1, 2)
            qh = q.view(b, n, self.h, -1).transpose(1, 2)
            kh = k.view(b, m, self.h, -1).transpose(1, 2)
            att = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1]), dim=-1)
            return (v1 + att @ v2).transpose(1, 2).reshape(b, n, d)

    class FusionBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, arch["fusion_heads"], dropout=0.0, batch_first=True)
            self.drop = nn.Dropout(arch["dropout"])
            self.n2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(arch["dropout"]),
                                     nn.Linear(4 * d, d), nn.Dropout(arch["dropout"]))
            self.cross = ResidualCrossAttention(arch["fusion_heads"])

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            h = self.n1(x)
            x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
            x = x + self.mlp(self.n2(x))
            return x + self.cross(x, y)

    class CMRCNetNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            t = int(arch["n_image_tokens"])
            self.t = t
            self.tokens = nn.Linear(arch["in_dim"], t * d)
            self.pos = nn.Parameter(torch.zeros(1, t, d))
            nn.init.trunc_normal_(self.pos, std=0.02)
            self.image_head = ProjectionHead(d)
            self.gene_head = ProjectionHead(arch["n_genes"])
            if arch["reconstruction"]:
                g = int(arch["n_gene_tokens"])
                self.g = g
                self.image_to_recon = nn.Linear(d, d)
                self.snn = nn.Sequential(nn.Linear(arch["n_genes"], g * d), nn.SELU(), nn.AlphaDropout(0.25))
                self.cross0 = nn.MultiheadAttention(d, arch["cross_heads"], batch_first=True)
                n = int(arch["n_blocks"])
                if arch["share_fusion_weights"] and n > 0:
                    shared = FusionBlock()
                    self.blocks = nn.ModuleList([shared] * n)
                else:
                    self.blocks = nn.ModuleList([FusionBlock() for _ in range(n)])

        def image_tokens(self, x: torch.Tensor) -> torch.Tensor:
            return self.tokens(x).view(x.shape[0], self.t, d) + self.pos

        def image_embedding(self, x: torch.Tensor) -> torch.Tensor:
            return self.image_head(self.image_tokens(x).mean(dim=1))

        def gene_embedding(self, y: torch.Tensor) -> torch.Tensor:
            return self.gene_head(y)

        def losses(self, x: torch.Tensor, y: torch.Tensor, *, mask_rate: float,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
            tok = self.image_tokens(x)
            f_img = self.image_head(tok.mean(dim=1))
            f_gene = self.gene_head(y)
            lc = soft_contrastive_loss(f_img, f_gene, arch["temperature"]).mean()
            out = {"contrastive": lc, "total": torch.log1p(lc)}
            if not arch["reconstruction"]:
                return out
            z = self.image_to_recon(tok)
            if mask_rate > 0:
                keep = torch.rand(z.shape, device=z.device, generator=generator) >= mask_rate
                z = z * keep
            gt = self.snn(y).view(y.shape[0], self.g, d)
            z = self.cross0(z, gt, gt, need_weights=False)[0]
            for blk in self.blocks:
                z = blk(z, gt)
            f_r = z.mean(dim=1)
            if arch["recon_loss"] == "mse":
                lr = torch.mean((f_r - f_img) ** 2)
            else:
                lr = (1.0 - nn.functional.cosine_similarity(f_r, f_img, dim=1)).mean()
            out["reconstruction"] = lr
            out["total"] = out["total"] + torch.log1p(lr)
            return out

    return CMRCNetNet()


@register_model("bleep", reconstruction=False,
                description="BLEEP: contrastive image/expression embeddings, top-k retrieval (spots)")
@register_model("cmrcnet", description="CMRCNet: contrastive + cross-modal mask reconstruction, top-k retrieval (spots)")
class CMRCNetRegressor(SpotModel, TorchSlideModel):
    """Spot expression by retrieval in a learned image-expression space (see the module docstring).

    Parameters
    ----------
    dim
        Width of the shared space, the tokens and the fusion blocks (paper: 256).
    n_image_tokens
        Tokens made from one frozen feature vector.
    n_gene_tokens
        Expression tokens of the self-normalising network (paper: 8).
    reconstruction
        The mask-reconstruction branch (``False``: BLEEP).
    mask_rate
        Fraction of image-token elements zeroed (paper: 0.5; ablations 0.3 / 0.7).
    recon_loss
        ``"mse"`` (paper) or ``"cosine"``.
    n_blocks
        Fusion blocks in series (paper: 2).
    share_fusion_weights
        One module repeated ``n_blocks`` times (the public code) instead of distinct blocks.
    cross_heads, fusion_heads
        Heads of the first cross-attention (4) and of the fusion blocks (8).
    temperature
        ``tau`` of the contrastive loss (1.0).
    dropout
        Projection-head and block dropout (0.1).
    top_k
        Training spots averaged at inference (CMRCNet-50; 500 for CMRCNet-500).
    image_encoder
        ``None`` (default): the image side starts from frozen patch features. A registered
        encoder name (``histoviz encoders``; on CPU ``tiny-test`` or ``efficientnet-lite0``):
        the image side is that encoder trained on the spot patches (``fit_spots`` then takes
        images, see the module docstring).
    image_pretrained, image_weights
        Start the encoder from the registry's pretrained weights (or this file); ``False``:
        random weights (the paper's ViT trained from scratch).
    train_blocks
        Last blocks of the encoder that train, with every layer after them (``-1``: all of it;
        ``0``: frozen, only the heads train).
    augment
        Random flips and 90 degree rotations of the training patches (paper).
    image_size
        Pixels the encoder sees (patches are resized on the device; ``None``: the encoder's
        own input size). Smaller is faster on CPU.
    image_lr
        Learning rate of the encoder's trainable layers (``None``: ``lr``).
    **loop
        Loop settings (:class:`~histoviz.nn.settings.LoopSettings`; paper: AdamW, lr 1e-4,
        weight decay 1e-3, batch 64, 60 epochs; its code: ``lr_schedule="cosine"``).
    """

    loop_defaults = {"epochs": 60, "lr": 1e-4, "weight_decay": 1e-3, "batch_size": 64, "patience": 10,
                     "max_patches": 0}

    def __init__(
        self,
        *,
        dim: int = 256,
        n_image_tokens: int = 16,
        n_gene_tokens: int = 8,
        reconstruction: bool = True,
        mask_rate: float = 0.5,
        recon_loss: str = "mse",
        n_blocks: int = 2,
        share_fusion_weights: bool = False,
        cross_heads: int = 4,
        fusion_heads: int = 8,
        temperature: float = 1.0,
        dropout: float = 0.1,
        top_k: int = 50,
        image_encoder: str | None = None,
        image_pretrained: bool = True,
        image_weights: str | None = None,
        train_blocks: int = 2,
        augment: bool = True,
        image_size: int | None = None,
        image_lr: float | None = None,
        **loop: Any,
    ) -> None:
        super().__init__(**loop)
        if not 0.0 <= float(mask_rate) < 1.0:
            raise ConfigError(f"mask_rate must be in [0, 1), got {mask_rate}")
        if recon_loss not in ("mse", "cosine"):
            raise ConfigError(f"recon_loss must be 'mse' or 'cosine', got {recon_loss!r}")
        if cross_heads < 1 or fusion_heads < 1 or dim % cross_heads or dim % fusion_heads:
            raise ConfigError(f"dim={dim} must be divisible by cross_heads={cross_heads} and fusion_heads={fusion_heads}")
        if int(top_k) < 1 or int(n_blocks) < 0 or int(n_image_tokens) < 1 or int(n_gene_tokens) < 1:
            raise ConfigError("top_k, n_image_tokens and n_gene_tokens must be >= 1 and n_blocks >= 0")
        if image_encoder is not None:
            _check_image_side(image_encoder, train_blocks, image_size, image_lr)
        self.dim = dim
        self.n_image_tokens = n_image_tokens
        self.n_gene_tokens = n_gene_tokens
        self.reconstruction = reconstruction
        self.mask_rate = mask_rate
        self.recon_loss = recon_loss
        self.n_blocks = n_blocks
        self.share_fusion_weights = share_fusion_weights
        self.cross_heads = cross_heads
        self.fusion_heads = fusion_heads
        self.temperature = temperature
        self.dropout = dropout
        self.top_k = top_k
        self.image_encoder = image_encoder
        self.image_pretrained = image_pretrained
        self.image_weights = image_weights
        self.train_blocks = train_blocks
        self.augment = augment
        self.image_size = image_size
        self.image_lr = image_lr

    _make_net = staticmethod(_net)

    @property
    def uses_patches(self) -> bool:
        """Whether the image side trains on spot patches (``image_encoder`` set): ``fit_spots``
        then takes images; ``predict_spots`` takes images or this model's own encoder features."""
        return bool(self.image_encoder)

    def _arch(self, in_dim: int, n_genes: int) -> dict[str, Any]:
        arch = {"in_dim": int(in_dim), "n_genes": int(n_genes), "dim": int(self.dim),
                "n_image_tokens": int(self.n_image_tokens), "n_gene_tokens": int(self.n_gene_tokens),
                "reconstruction": bool(self.reconstruction), "recon_loss": self.recon_loss,
                "n_blocks": int(self.n_blocks), "share_fusion_weights": bool(self.share_fusion_weights),
                "cross_heads": int(self.cross_heads), "fusion_heads": int(self.fusion_heads),
                "temperature": float(self.temperature), "dropout": float(self.dropout)}
        if self.uses_patches:
            arch.update({"image_encoder": str(self.image_encoder), "image_pretrained": bool(self.image_pretrained),
                         "image_weights": self.image_weights, "train_blocks": int(self.train_blocks),
                         "image_size": None if self.image_size is None else int(self.image_size)})
        return arch

    # -- fit ---------------------------------------------------------------------------------------
    def fit_spots(self, x: Any, block: Any, *, val: tuple[Any, Any] | None = None) -> CMRCNetRegressor:
        """Fit on spot features, or on spot patches when ``image_encoder`` is set.

        Parameters
        ----------
        x
            ``(n_spots, D)`` frozen features; with ``image_encoder``: the spots' images, a
            ``uint8 (n, 3, H, W)`` (or ``(n, H, W, 3)``) array or a
            :class:`~histoviz.data.spot_patches.SpotPatches` (read on demand).
        block
            :class:`~histoviz.data.targets.TargetBlock` (rows = spots).
        val
            ``(features or patches, block)`` of validation spots from the training samples.

        Returns
        -------
        self
        """
        if not self.uses_patches:
            return super().fit_spots(x, block, val=val)
        from histoviz.data.spot_patches import as_patches
        from histoviz.errors import DataError

        px = as_patches(x, "training spot patches")
        if len(block.values) != len(px):
            raise DataError(f"{block.modality}: {len(block.values)} target rows for {len(px)} spot patches")
        if not block.present.any():
            raise DataError(f"{block.modality}: no training spot has expression")
        self.modalities_ = [block.modality]
        self.targets_ = {block.modality: list(block.targets)}
        self.kinds_ = {block.modality: TaskKind.REGRESSION}
        v = None
        if val is not None and len(val[0]):
            vp = val[1].present
            if vp.any():
                vx = as_patches(val[0], "validation spot patches")
                v = (vx.subset(np.flatnonzero(vp)), np.asarray(val[1].values, np.float32)[vp])
        pres = block.present
        self._fit_patches(px if pres.all() else px.subset(np.flatnonzero(pres)),
                          np.asarray(block.values, np.float32)[pres], v)
        return self

    def _patch_context(self, net: Any) -> Any:
        """CPU threads for encoder work: ``num_threads``, else 1 for a small encoder (< 2M
        parameters: thread start-up and contention cost more than they save, as for small
        frozen-feature batches), else torch's default."""
        import contextlib

        from histoviz.models._torch import torch_threads

        if self._device().type != "cpu":
            return contextlib.nullcontext()
        n = self.loop.num_threads
        if n <= 0 and sum(p.numel() for p in net.encoder.parameters()) < 2_000_000:
            n = 1
        return torch_threads(n) if n > 0 else contextlib.nullcontext()

    def _fit(self, bags: Any, targets: Any, val: Any) -> None:
        if self.uses_patches:
            from histoviz.errors import DataError

            raise DataError(f"{self.name or 'cmrcnet'} with image_encoder={self.image_encoder!r} trains its image "
                            "encoder on spot patches, not on feature bags: call fit_spots(patches, block) with "
                            "uint8 (n, 3, H, W) images or SpotPatches, or train it from a data.spots config "
                            "(histoviz train)")
        super()._fit(bags, targets, val)

    def _fit_patches(self, px: Any, y: np.ndarray, val: tuple[Any, np.ndarray] | None) -> None:

        from histoviz.models.spot._image import ImageSideNet
        from histoviz.nn.loop import seed_everything

        seed_everything(self.loop.seed)
        dev = self._device()
        ya = y if val is None else np.concatenate([y, val[1]])
        self.gene_mean_, self.gene_std_ = feature_stats([ya])
        self.arch_ = self._arch(0, y.shape[1])
        net = ImageSideNet(self.arch_, _net, pretrained=True, seed=self.loop.seed)
        self.arch_["in_dim"] = int(net.encoder.embed_dim)
        net.to(dev)
        with self._patch_context(net):
            self._train_image_side(net, px, y, val)

    def _train_image_side(self, net: Any, px: Any, y: np.ndarray, val: tuple[Any, np.ndarray] | None) -> None:
        import torch

        from histoviz.models.spot._image import augment_d4, encode, trainable_counts, weights_digest
        from histoviz.nn.loop import train_module

        dev = self._device()
        base_weights = str(net.encoder.weights_source)
        ya = y if val is None else np.concatenate([y, val[1]])
        bs = self.loop.batch_size
        # standardisation: the initial encoder's features on (at most 2048) training patches
        sub = np.unique(np.linspace(0, len(px) - 1, min(len(px), 2048)).round().astype(np.int64))
        f0 = encode(net, px, sub, batch_size=bs, device=dev, standardise=False)
        self.feature_mean_, self.feature_std_ = feature_stats([f0])
        net.feature_mean.copy_(torch.from_numpy(self.feature_mean_))
        net.feature_std.copy_(torch.from_numpy(self.feature_std_))
        yt = torch.from_numpy((y - self.gene_mean_) / self.gene_std_).to(dev)
        mask_rate, augment = float(self.mask_rate), bool(self.augment)

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
            imgs = torch.from_numpy(px.read(idx)).to(dev)
            if augment:
                imgs = augment_d4(imgs, rng.integers(0, 8, len(idx)))
            parts = net.losses(net.features(imgs), yt[torch.from_numpy(np.asarray(idx)).to(dev)], mask_rate=mask_rate)
            return parts["total"], {k: float(v.detach()) for k, v in parts.items()}

        validate = None
        if val is not None:
            vpx, vy = val[0], torch.from_numpy((val[1] - self.gene_mean_) / self.gene_std_).to(dev)
            gen = torch.Generator(device=dev)

            def validate() -> dict[str, float]:
                gen.manual_seed(self.loop.seed + 1)
                tot, n = {"total": 0.0}, 0
                for s in range(0, len(vpx), bs):
                    rows = np.arange(s, min(s + bs, len(vpx)))
                    imgs = torch.from_numpy(vpx.read(rows)).to(dev)
                    p = net.losses(net.features(imgs), vy[s:s + bs], mask_rate=mask_rate, generator=gen)
                    for k, v in p.items():
                        tot[k] = tot.get(k, 0.0) + float(v) * len(rows)
                    n += len(rows)
                return {k: v / max(n, 1) for k, v in tot.items()}

        params = None
        if self.image_lr is not None:
            params = [{"params": list(net.head.parameters())},
                      {"params": [p for p in net.encoder.parameters() if p.requires_grad], "lr": float(self.image_lr)}]
        info = train_module(net, len(px), step, settings=self.loop, validate=validate, parameters=params,
                            desc=f"{'cmrcnet' if self.reconstruction else 'bleep'} (image side on patches)")
        self.module_ = net
        self.embed_dim_ = int(net.encoder.embed_dim)
        digest = weights_digest(net.encoder)
        label = f"{self.image_encoder}+{self.name or ('cmrcnet' if self.reconstruction else 'bleep')}-ft-{digest}"
        self.arch_["encoder_label"] = net.encoder.name = label
        self.arch_["encoder_weights"] = net.encoder.weights_source = (
            f"fine-tuned ({digest}) from {base_weights}")
        info.update(trainable_counts(net))
        info.update({"image_encoder": str(self.image_encoder), "augment": augment, "train_blocks": int(self.train_blocks)})
        self.fit_info_ = info
        self.values_ = ya.astype(np.float32)
        self._keys = None

    def _fit_spots(self, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None) -> None:
        import torch

        from histoviz.nn.loop import seed_everything, train_module

        seed_everything(self.loop.seed)
        dev = self._device()
        self.feature_mean_, self.feature_std_ = feature_stats([x])
        ya = y if val is None else np.concatenate([y, val[1]])
        self.gene_mean_, self.gene_std_ = feature_stats([ya])
        self.arch_ = self._arch(x.shape[1], y.shape[1])
        net = _net(self.arch_).to(dev)
        self.module_ = net
        xt, yt = self._inputs(x, y)
        mask_rate = float(self.mask_rate)

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
            ii = torch.from_numpy(np.asarray(idx)).to(dev)
            parts = net.losses(xt[ii], yt[ii], mask_rate=mask_rate)
            return parts["total"], {k: float(v.detach()) for k, v in parts.items()}

        validate = None
        if val is not None:
            xv, yv = self._inputs(*val)
            gen = torch.Generator(device=dev)

            def validate() -> dict[str, float]:
                gen.manual_seed(self.loop.seed + 1)
                tot, n = {"total": 0.0}, 0
                bs = self.loop.batch_size
                for s in range(0, len(xv), bs):
                    p = net.losses(xv[s:s + bs], yv[s:s + bs], mask_rate=mask_rate, generator=gen)
                    w = min(bs, len(xv) - s)
                    for k, v in p.items():
                        tot[k] = tot.get(k, 0.0) + float(v) * w
                    n += w
                return {k: v / max(n, 1) for k, v in tot.items()}

        info = train_module(net, len(xt), step, settings=self.loop, validate=validate,
                            desc="cmrcnet" if self.reconstruction else "bleep")
        self.fit_info_ = info
        self.values_ = ya.astype(np.float32)
        self._keys = None

    def _inputs(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        import torch

        dev = self._device()
        xs = (np.asarray(x, np.float32) - self.feature_mean_) / self.feature_std_
        ys = (np.asarray(y, np.float32) - self.gene_mean_) / self.gene_std_
        return torch.from_numpy(xs).to(dev), torch.from_numpy(ys).to(dev)

    def training_losses(self, x: np.ndarray, y: np.ndarray, *, mask_rate: float | None = None,
                        seed: int = 0) -> dict[str, float]:
        """The loss terms of a fitted model on ``(x, y)`` (eval mode, fixed mask ``seed``)."""
        import torch

        self._check_fitted()
        xt, yt = self._inputs(x, y)
        gen = torch.Generator(device=self._device())
        gen.manual_seed(seed)
        self.module_.eval()
        with torch.no_grad():
            p = self.module_.losses(xt, yt, mask_rate=self.mask_rate if mask_rate is None else mask_rate,
                                    generator=gen)
        return {k: float(v) for k, v in p.items()}

    # -- predict -----------------------------------------------------------------------------------
    def predict_spots(self, x: Any) -> np.ndarray:
        """``(n_spots, n_targets)`` predictions for spot features, or (``image_encoder`` set) for
        spot patches or this model's own encoder features (:meth:`encode_patches`)."""
        from histoviz.data.spot_patches import is_patch_source

        if self.uses_patches and is_patch_source(x):
            self._check_fitted()
            x = self.encode_patches(x)
        return super().predict_spots(x)

    def encode_patches(self, patches: Any) -> np.ndarray:
        """``(n, embed_dim)`` features of spot patches from the fine-tuned encoder (what
        ``histoviz predict`` computes when it embeds a slide with :meth:`patch_encoder`)."""
        from histoviz.data.spot_patches import as_patches
        from histoviz.errors import DataError
        from histoviz.models.spot._image import encode

        self._check_fitted()
        if not self.uses_patches:
            raise DataError(f"{self.name or 'cmrcnet'} predicts from frozen features; it has no image encoder")
        px = as_patches(patches)
        with self._patch_context(self.module_):
            return encode(self.module_, px, np.arange(len(px)), batch_size=max(self.loop.batch_size, 64),
                          device=self._device(), standardise=False)

    def patch_encoder(self) -> Any:
        """The fine-tuned patch encoder (a :class:`~histoviz.features.encoders.PatchEncoder` whose
        ``name`` says it was fine-tuned, with a digest of its weights), or ``None`` for a model
        on frozen features."""
        if not self.uses_patches or not self.is_fitted:
            return None
        return self.module_.encoder

    def image_side(self) -> dict[str, Any]:
        """Provenance of a fine-tuned image side for checkpoints (``{}`` on frozen features)."""
        if not self.uses_patches or not self.is_fitted:
            return {}
        a = self.arch_
        return {"encoder": a["encoder_label"], "encoder_weights": a["encoder_weights"], "embed_dim": int(a["in_dim"]),
                "base_encoder": a["image_encoder"], "pretrained": bool(a["image_pretrained"]),
                "weights": a.get("image_weights"), "train_blocks": int(a["train_blocks"]),
                "image_size": a.get("image_size"), "augment": bool(self.augment)}

    def embed_images(self, x: np.ndarray) -> np.ndarray:
        """``(n, dim)`` image embeddings of spot features (the query side of retrieval)."""
        import torch

        xs = (np.asarray(x, np.float32) - self.feature_mean_) / self.feature_std_
        self.module_.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(xs), 4096):
                out.append(self.module_.image_embedding(torch.from_numpy(xs[s:s + 4096]).to(self._device())).cpu())
        return torch.cat(out).numpy()

    def keys(self) -> np.ndarray:
        """``(M, dim)`` expression embeddings of the training spots (the retrieval database)."""
        import torch

        if getattr(self, "_keys", None) is None:
            ys = (self.values_ - self.gene_mean_) / self.gene_std_
            self.module_.eval()
            out = []
            with torch.no_grad():
                for s in range(0, len(ys), 4096):
                    out.append(self.module_.gene_embedding(torch.from_numpy(ys[s:s + 4096]).to(self._device())).cpu())
            self._keys = torch.cat(out).numpy()
        return self._keys

    def _predict_spots(self, x: np.ndarray) -> np.ndarray:
        from histoviz.models.spot._retrieval import topk_mean

        return topk_mean(self.embed_images(x), self.keys(), self.values_, int(self.top_k), metric="cosine",
                         device=self._device())

    # -- state -------------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = TorchSlideModel._state(self)
        arrays.update({"gene_mean": self.gene_mean_, "gene_std": self.gene_std_, "values": self.values_})
        return meta, arrays

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        TorchSlideModel._load_state(self, meta, arrays)
        self.gene_mean_ = np.asarray(arrays["gene_mean"], np.float32)
        self.gene_std_ = np.asarray(arrays["gene_std"], np.float32)
        self.values_ = np.asarray(arrays["values"], np.float32)
        self._keys = None


def _check_image_side(name: Any, train_blocks: Any, image_size: Any, image_lr: Any) -> None:
    from histoviz.features.encoders import encoder_info

    if not isinstance(name, str) or not name:
        raise ConfigError(f"image_encoder must be a registered encoder name or null, got {name!r}")
    info = encoder_info(name)  # EncoderError listing the choices
    if info.weights == "none":
        raise ConfigError(f"image_encoder {name!r} has no weights to train (hand-crafted); pick a neural encoder "
                          "(histoviz encoders), e.g. efficientnet-lite0, or leave image_encoder unset for frozen "
                          "features")
    if isinstance(train_blocks, bool) or not isinstance(train_blocks, int) or train_blocks < -1:
        raise ConfigError(f"train_blocks must be an integer >= -1 (-1: the whole encoder), got {train_blocks!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16):
        raise ConfigError(f"image_size must be an integer >= 16 or null, got {image_size!r}")
    if image_lr is not None and not float(image_lr) > 0:
        raise ConfigError(f"image_lr must be > 0 or null, got {image_lr!r}")
