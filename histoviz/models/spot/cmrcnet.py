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

Deviations (stated, not hidden): the image side starts from **frozen patch features** (any
registered encoder), not a ViT-B/32 trained from scratch; its tokens come from a learned linear
map of the feature vector into ``n_image_tokens`` tokens plus position embeddings (the paper
has the ViT's 50 tokens). ``mask_rate`` is the fraction **zeroed** (the public code's flag keeps
that fraction; the two agree at 0.5). The reconstruction target is not detached (as in the
paper's code). No cosine learning-rate schedule; early stopping on the validation loss instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from histoviz.errors import ConfigError
from histoviz.models._torch import TorchSlideModel, feature_stats
from histoviz.models.base import register_model
from histoviz.models.spot._base import SpotModel

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
    epochs, lr, weight_decay, batch_size, patience, grad_clip, seed, device, num_threads
        Optimisation (paper: AdamW, lr 1e-4, weight decay 1e-3, batch 64, 60 epochs).
    """

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
        epochs: int = 60,
        lr: float = 1e-4,
        weight_decay: float = 1e-3,
        batch_size: int = 64,
        patience: int = 10,
        grad_clip: float = 1.0,
        seed: int = 0,
        device: str = "auto",
        num_threads: int = 0,
    ) -> None:
        if not 0.0 <= float(mask_rate) < 1.0:
            raise ConfigError(f"mask_rate must be in [0, 1), got {mask_rate}")
        if recon_loss not in ("mse", "cosine"):
            raise ConfigError(f"recon_loss must be 'mse' or 'cosine', got {recon_loss!r}")
        if cross_heads < 1 or fusion_heads < 1 or dim % cross_heads or dim % fusion_heads:
            raise ConfigError(f"dim={dim} must be divisible by cross_heads={cross_heads} and fusion_heads={fusion_heads}")
        if int(top_k) < 1 or int(n_blocks) < 0 or int(n_image_tokens) < 1 or int(n_gene_tokens) < 1:
            raise ConfigError("top_k, n_image_tokens and n_gene_tokens must be >= 1 and n_blocks >= 0")
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
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.grad_clip = grad_clip
        self.seed = seed
        self.device = device
        self.num_threads = num_threads
        self.max_patches = 0

    _make_net = staticmethod(_net)

    # -- fit ---------------------------------------------------------------------------------------
    def _fit_spots(self, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None) -> None:
        import torch

        from histoviz.nn.loop import seed_everything, train_module

        seed_everything(self.seed)
        dev = self._device()
        self.feature_mean_, self.feature_std_ = feature_stats([x])
        ya = y if val is None else np.concatenate([y, val[1]])
        self.gene_mean_, self.gene_std_ = feature_stats([ya])
        self.arch_ = {"in_dim": int(x.shape[1]), "n_genes": int(y.shape[1]), "dim": int(self.dim),
                      "n_image_tokens": int(self.n_image_tokens), "n_gene_tokens": int(self.n_gene_tokens),
                      "reconstruction": bool(self.reconstruction), "recon_loss": self.recon_loss,
                      "n_blocks": int(self.n_blocks), "share_fusion_weights": bool(self.share_fusion_weights),
                      "cross_heads": int(self.cross_heads), "fusion_heads": int(self.fusion_heads),
                      "temperature": float(self.temperature), "dropout": float(self.dropout)}
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
                gen.manual_seed(self.seed + 1)
                tot, n = {"total": 0.0}, 0
                bs = int(self.batch_size)
                for s in range(0, len(xv), bs):
                    p = net.losses(xv[s:s + bs], yv[s:s + bs], mask_rate=mask_rate, generator=gen)
                    w = min(bs, len(xv) - s)
                    for k, v in p.items():
                        tot[k] = tot.get(k, 0.0) + float(v) * w
                    n += w
                return {k: v / max(n, 1) for k, v in tot.items()}

        info = train_module(net, len(xt), step, settings=self._settings(), validate=validate,
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
