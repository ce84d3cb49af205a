"""Gated attention-based MIL pooling (Ilse et al. 2018), as used by TANGLE's slide encoder.

Patch features ``x_i`` go through a pre-attention MLP ``h_i = MLP(x_i)``; gated attention
scores ``A_i = w^T (tanh(V h_i) * sigmoid(U h_i))`` are soft-maxed over the patches of a
slide (padding masked out) and the slide embedding is ``z = sum_i a_i h_i``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GatedABMIL", "MeanPool"]


class GatedABMIL(nn.Module):
    """Gated ABMIL pooling.

    Parameters
    ----------
    in_dim
        Patch feature dimension ``D``.
    embed_dim
        Width ``E`` of the patch embeddings ``h_i`` and of the slide embedding.
    attn_dim
        Hidden width ``H`` of the attention branches.
    dropout
        Dropout in the pre-attention MLP and the attention branches.
    n_layers
        Number of ``Linear -> LayerNorm -> GELU -> Dropout`` blocks before attention.
    uniform_init
        Zero-initialise the attention output layer so training starts from uniform
        attention (mean pooling of the patch embeddings).
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.25,
        n_layers: int = 1,
        *,
        uniform_init: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(max(1, n_layers)):
            layers += [nn.Linear(d, embed_dim), nn.LayerNorm(embed_dim), nn.GELU(), nn.Dropout(dropout)]
            d = embed_dim
        self.pre = nn.Sequential(*layers)
        self.attn_a = nn.Sequential(nn.Linear(embed_dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attn_b = nn.Sequential(nn.Linear(embed_dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.attn_c = nn.Linear(attn_dim, 1)
        if uniform_init:  # start as mean pooling; attention departs from uniform only if it helps
            nn.init.zeros_(self.attn_c.weight)
            nn.init.zeros_(self.attn_c.bias)
        self.embed_dim = embed_dim

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D) -> (..., E)`` patch embeddings ``h_i``."""
        return self.pre(x)

    def attention(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax attention ``(B, N)`` over the patches of each bag (padding gets 0)."""
        logits = self.attn_c(self.attn_a(h) * self.attn_b(h)).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (B, N, D)``, ``mask (B, N)`` -> ``(z (B, E), attention (B, N), h (B, N, E))``."""
        h = self.embed_patches(x)
        a = self.attention(h, mask)
        z = torch.einsum("bn,bne->be", a, h)
        return z, a, h


class MeanPool(nn.Module):
    """Mean of (linearly embedded) patch features; same interface as :class:`GatedABMIL`.

    With ``embed_dim=None`` the features pass through unchanged (the mean-pool MLP baseline
    then sees exactly the mean-pooled features).
    """

    def __init__(self, in_dim: int, embed_dim: int | None = None, dropout: float = 0.0, **_: object) -> None:
        super().__init__()
        self.pre = nn.Identity() if embed_dim is None else nn.Sequential(nn.Linear(in_dim, embed_dim), nn.GELU(), nn.Dropout(dropout))
        self.embed_dim = in_dim if embed_dim is None else embed_dim

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D) -> (..., E)``."""
        return self.pre(x)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Uniform attention over the unmasked patches."""
        h = self.embed_patches(x)
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        a = mask.float() / mask.float().sum(dim=1, keepdim=True).clamp(min=1.0)
        z = torch.einsum("bn,bne->be", a, h)
        return z, a, h
