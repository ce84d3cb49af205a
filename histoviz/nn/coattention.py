"""Genomic-guided co-attention (MCAT) and PathGen's co-attention grade + survival network.

After Chen et al., "Multimodal co-attention transformer for survival prediction in gigapixel
whole slide images" (MCAT, ICCV 2021) and PathGen's MCAT_GR (digest: ``../shared/papers/
digest-pathgen.md`` §2.3), scaled down for CPUs:

- :class:`GroupEncoders`: one self-normalising network (SNN: ``Linear -> ELU ->
  AlphaDropout``, Klambauer et al.) per gene group, from the group's genes (gathered from the
  concatenated gene-group vector, so a gene in two groups feeds both) to one token;
- :class:`CoAttention`: gene-group tokens are the queries, patch embeddings the keys and values,
  ``A = softmax_patches(Q K^T / sqrt(d))``: a ``groups x patches`` matrix per head whose rows sum
  to 1 over the slide's patches (padding excluded), and ``A V`` is one co-attended token per
  group;
- :class:`GatedTokenPool`: gated attention pooling (Ilse et al.) over a set of tokens;
- :class:`GeneGroupMCAT`: patches -> ``Linear + ReLU``; co-attention of the group tokens over
  the patches; a transformer over the co-attended tokens (path branch) and one over the group
  tokens (omic branch), each gated-pooled; ``[h_path; h_omic]`` -> MLP -> discrete-time hazard
  logits (survival); a *separate* gated pooling of the path tokens -> grade logits (PathGen:
  grading does better without the omic branch, and separate pools decouple the two tasks).

``group_mask`` drops gene groups from a forward pass (their tokens leave the co-attention
set, the transformers and the pools): the network's answer without those groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["CoAttention", "GatedTokenPool", "GeneGroupMCAT", "GroupDecoders", "GroupEncoders", "snn_block"]


def snn_block(d_in: int, d_out: int, dropout: float = 0.25) -> nn.Sequential:
    """``Linear -> ELU -> AlphaDropout`` (MCAT's SNN layer)."""
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ELU(), nn.AlphaDropout(dropout))


class GroupEncoders(nn.Module):
    """One SNN per gene group: ``(B, n_genes)`` concatenated vector -> ``(B, G, dim)`` tokens.

    Parameters
    ----------
    group_index
        Per group, indices of its genes in the concatenated vector.
    dim
        Token width.
    layers
        SNN layers per group (MCAT: 4 at width 1024-2048; PathGen's encoders likewise).
    dropout
        AlphaDropout rate.
    """

    def __init__(self, group_index: Sequence[Sequence[int]], dim: int, *, layers: int = 2,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.n_groups = len(group_index)
        for g, idx in enumerate(group_index):
            self.register_buffer(f"idx{g}", torch.as_tensor(list(idx), dtype=torch.long), persistent=False)
        self.nets = nn.ModuleList()
        for idx in group_index:
            blocks, d = [], len(idx)
            for _ in range(max(1, layers)):
                blocks.append(snn_block(d, dim, dropout))
                d = dim
            self.nets.append(nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_genes) -> (B, G, dim)``."""
        toks = [net(x.index_select(1, getattr(self, f"idx{g}"))) for g, net in enumerate(self.nets)]
        return torch.stack(toks, dim=1)


class GroupDecoders(nn.Module):
    """One MLP per gene group: ``(B, G, dim)`` tokens -> ``(B, n_genes)``; a gene in several
    groups gets the mean of their outputs. The last layers start at zero (output 0)."""

    def __init__(self, group_index: Sequence[Sequence[int]], n_genes: int, dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_genes = int(n_genes)
        for g, idx in enumerate(group_index):
            self.register_buffer(f"idx{g}", torch.as_tensor(list(idx), dtype=torch.long), persistent=False)
        counts = torch.zeros(self.n_genes)
        for idx in group_index:
            counts.index_add_(0, torch.as_tensor(list(idx), dtype=torch.long), torch.ones(len(idx)))
        self.register_buffer("counts", counts.clamp(min=1.0), persistent=False)
        self.nets = nn.ModuleList()
        for idx in group_index:
            last = nn.Linear(dim, len(idx))
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.nets.append(nn.Sequential(nn.Linear(dim, dim), nn.ELU(), nn.Dropout(dropout), last))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, G, dim) -> (B, n_genes)``."""
        out = tokens.new_zeros(tokens.shape[0], self.n_genes)
        for g, net in enumerate(self.nets):
            out.index_add_(1, getattr(self, f"idx{g}"), net(tokens[:, g]))
        return out / self.counts


class CoAttention(nn.Module):
    """Gene-group tokens (queries) attend to patch embeddings (keys and values).

    Parameters
    ----------
    dim
        Width of tokens and patch embeddings.
    heads
        Attention heads (MCAT: 1; PathGen's denoiser: 8).
    dropout
        Dropout on the attention weights (training only).
    """

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.dh = dim, heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dh).transpose(1, 2)

    def kv(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, H, N, dh)`` of patch embeddings ``(B, N, dim)`` (computed once per
        slide when the same patches are attended to many times, as in diffusion sampling)."""
        return self._split(self.k(ctx)), self._split(self.v(ctx))

    def attend(self, tokens: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens (B, G, dim)`` over precomputed ``k, v`` -> ``(out (B, G, dim), A (B, H, G, N))``;
        ``mask (B, N)`` True for real patches."""
        q = self._split(self.q(tokens))
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.dh)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        a = torch.softmax(logits, dim=-1)
        out = self.drop(a) @ v
        b, h, g, dh = out.shape
        return self.o(out.transpose(1, 2).reshape(b, g, h * dh)), a

    def forward(self, tokens: torch.Tensor, ctx: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(co-attended tokens (B, G, dim), weights (B, G, N))`` (weights averaged over heads;
        each group's row sums to 1 over the unmasked patches)."""
        k, v = self.kv(ctx)
        out, a = self.attend(tokens, k, v, mask)
        return out, a.mean(dim=1)


class GatedTokenPool(nn.Module):
    """Gated attention pooling over tokens: ``softmax_i(w^T (tanh(V h_i) * sigmoid(U h_i)))``."""

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = hidden or dim
        self.a = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.b = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.c = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``h (B, G, dim)``, ``keep (B, G)`` -> ``(pooled (B, dim), weights (B, G))``."""
        logits = self.c(self.a(h) * self.b(h)).squeeze(-1)
        if keep is not None:
            logits = logits.masked_fill(~keep, float("-inf"))
        w = torch.softmax(logits, dim=-1)
        return torch.einsum("bg,bgd->bd", w, h), w


def _encoder(dim: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=max(1, layers), enable_nested_tensor=False)


class GeneGroupMCAT(nn.Module):
    """MCAT with PathGen's separate grade branch (see the module docstring).

    Parameters
    ----------
    in_dim
        Patch feature dimension.
    group_index
        Per gene group, indices of its genes in the concatenated vector.
    dim
        Width of tokens (MCAT: 256; PathGen: 1024).
    heads
        Co-attention heads (MCAT_GR: 1).
    tf_heads, layers
        Heads and layers of the path and omic transformers (MCAT_GR: 8, 2).
    snn_layers
        SNN layers per gene group.
    dropout
        Dropout (MCAT: 0.25).
    n_classes, n_bins
        Grade classes and survival time bins (``0``: no such head).
    """

    def __init__(self, in_dim: int, group_index: Sequence[Sequence[int]], *, dim: int = 64, heads: int = 1,
                 tf_heads: int = 4, layers: int = 1, snn_layers: int = 2, dropout: float = 0.25,
                 n_classes: int = 0, n_bins: int = 0) -> None:
        super().__init__()
        self.n_groups = len(group_index)
        self.path_fc = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.genes = GroupEncoders(group_index, dim, layers=snn_layers, dropout=dropout)
        self.coattn = CoAttention(dim, heads)
        self.path_tf = _encoder(dim, tf_heads, layers, dropout)
        self.omic_tf = _encoder(dim, tf_heads, layers, dropout)
        self.path_pool = GatedTokenPool(dim, dropout=dropout)
        self.omic_pool = GatedTokenPool(dim, dropout=dropout)
        self.grade_pool = GatedTokenPool(dim, dropout=dropout)

        def rho() -> nn.Sequential:
            return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))

        self.path_rho, self.omic_rho, self.grade_rho = rho(), rho(), rho()
        self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.survival_head = nn.Linear(dim, n_bins) if n_bins else None
        self.grade_head = nn.Linear(dim, n_classes) if n_classes else None

    def _keep(self, group_mask: torch.Tensor | None, b: int, device: torch.device) -> torch.Tensor | None:
        if group_mask is None:
            return None
        keep = torch.as_tensor(group_mask, dtype=torch.bool, device=device)
        keep = keep.expand(b, self.n_groups) if keep.dim() == 1 else keep
        if not bool(keep.any(dim=1).all()):
            raise ValueError("group_mask drops every gene group")
        return keep

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, genes: torch.Tensor,
                group_mask: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``x (B, N, D)`` patches, ``mask (B, N)``, ``genes (B, n_genes)``, ``group_mask (G,)`` or
        ``(B, G)`` (True = use the group) -> ``({"grade": (B, K), "survival": (B, bins)} logits,
        co-attention (B, G, N))``."""
        h = self.path_fc(x)
        g = self.genes(genes)
        keep = self._keep(group_mask, x.shape[0], x.device)
        pad = None if keep is None else ~keep
        co, a = self.coattn(g, h, mask)
        p = self.path_tf(co, src_key_padding_mask=pad)
        o = self.omic_tf(g, src_key_padding_mask=pad)
        hp, _ = self.path_pool(p, keep)
        ho, _ = self.omic_pool(o, keep)
        out: dict[str, torch.Tensor] = {}
        if self.survival_head is not None:
            out["survival"] = self.survival_head(self.fuse(torch.cat([self.path_rho(hp), self.omic_rho(ho)], -1)))
        if self.grade_head is not None:
            hg, _ = self.grade_pool(p, keep)
            out["grade"] = self.grade_head(self.grade_rho(hg))
        return out, a
