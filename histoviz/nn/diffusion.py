"""Denoising diffusion over gene-group vectors conditioned on a slide's patches (PathGen).

The diffusion (Ho et al. 2020; PathGen Eq. 1-7, digest §2.2), with steps indexed
``t = 0 .. T-1`` here (``t + 1`` in the papers):

- forward process ``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)`` with a linear
  ``beta`` schedule from ``1e-4`` to ``0.02`` over ``T = 1000`` steps (PathGen's code; a cosine
  schedule is available); closed form ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with
  ``abar_t = prod_{s<=t} (1 - beta_s)`` (:meth:`NoiseSchedule.q_sample`);
- the network predicts ``eps``; the loss is ``E ||eps - eps_theta(x_t, t)||^2`` with ``t``
  uniform (PathGen's paper; its code averages L1 and MSE);
- ancestral (DDPM) sampling from ``x_T ~ N(0, I)``: ``x_{t-1} = mu(x_t, x0_hat) + sigma_t z``
  with the posterior mean ``mu = c1_t x0_hat + c2_t x_t``, which equals the paper's
  ``(x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)`` when ``x0_hat`` is not clipped, and
  ``sigma_t^2 = beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t`` (Eq. 6; PathGen's code uses
  ``beta~_t`` itself as the standard deviation and clamps samples at 0; here the predicted
  ``x0`` is clipped to the data range instead, as DDPM does for images);
- DDIM (Song et al. 2021) on a subsequence of ``steps`` timesteps, deterministic with
  ``eta = 0``: a faster option, labelled as a deviation from PathGen.

:class:`GeneGroupDenoiser` is PathGen's denoiser, scaled down: one encoder per gene group turns
``x_t`` into group tokens; a sinusoidal embedding of ``t`` and a learned group embedding are
added; then ``blocks`` times (PathGen: 3) the tokens co-attend to the slide's patch embeddings
(:class:`~histoviz.nn.coattention.CoAttention`, ``heads`` heads) followed by a transformer layer
over the tokens; a residual from the group tokens; one decoder per group predicts its ``eps``.
PathGen's extra time -> gene attention is folded into the additive time embedding. Keys and
values of the patches are computed once per slide (:meth:`GeneGroupDenoiser.context`) and reused
by every sampling step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from histoviz.nn.coattention import CoAttention, GroupDecoders, GroupEncoders

__all__ = [
    "GeneGroupDenoiser",
    "NoiseSchedule",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "timestep_embedding",
]

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
RandnFn = Callable[[tuple[int, ...]], torch.Tensor]


class NoiseSchedule:
    """Variance schedule and the closed forms of the forward and posterior processes.

    Parameters
    ----------
    timesteps
        ``T`` (PathGen: 1000).
    beta_start, beta_end
        Ends of the linear schedule (PathGen's code: 1e-4, 0.02).
    kind
        ``"linear"`` or ``"cosine"`` (Nichol & Dhariwal 2021).

    Attributes
    ----------
    betas, alphas, alpha_bar, alpha_bar_prev, posterior_variance, posterior_c1, posterior_c2
        ``(T,)`` float64 numpy arrays (``alpha_bar_prev[0] = 1``).
    """

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 kind: str = "linear") -> None:
        if int(timesteps) < 2:
            raise ValueError(f"timesteps must be >= 2, got {timesteps}")
        self.timesteps = int(timesteps)
        if kind == "linear":
            if not 0 < beta_start < beta_end < 1:
                raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
            betas = np.linspace(beta_start, beta_end, self.timesteps, dtype=np.float64)
        elif kind == "cosine":
            s = 0.008
            f = np.cos((np.arange(self.timesteps + 1) / self.timesteps + s) / (1 + s) * math.pi / 2) ** 2
            betas = np.clip(1 - f[1:] / f[:-1], 0.0, 0.999)
        else:
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {kind!r}")
        self.kind = kind
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = np.cumprod(self.alphas)
        self.alpha_bar_prev = np.concatenate([[1.0], self.alpha_bar[:-1]])
        self.posterior_variance = betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        self.posterior_c1 = betas * np.sqrt(self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        self.posterior_c2 = (1.0 - self.alpha_bar_prev) * np.sqrt(self.alphas) / (1.0 - self.alpha_bar)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def _t(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        key = (name, str(like.device))
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(getattr(self, name), dtype=torch.float32, device=like.device)
        v = self._cache[key][t.long()]
        return v.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (``t`` one step index per row)."""
        ab = self._t("alpha_bar", t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
        ab = self._t("alpha_bar", t, x_t)
        return (x_t - (1.0 - ab).sqrt() * eps) / ab.sqrt()

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of ``q(x_{t-1} | x_t, x0)``: ``c1_t x0 + c2_t x_t``."""
        return self._t("posterior_c1", t, x_t) * x0 + self._t("posterior_c2", t, x_t) * x_t

    def mean_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``(x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)`` (Ho et al. Eq. 11)."""
        b = self._t("betas", t, x_t)
        return (x_t - b / (1.0 - self._t("alpha_bar", t, x_t)).sqrt() * eps) / self._t("alphas", t, x_t).sqrt()


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B,) -> (B, dim)`` (Vaswani et al.; cos then sin halves)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _clip(x: torch.Tensor, clip: tuple[float, float] | None) -> torch.Tensor:
    return x if clip is None else x.clamp(clip[0], clip[1])


@torch.no_grad()
def ddpm_sample(eps_fn: EpsFn, shape: tuple[int, ...], schedule: NoiseSchedule, randn: RandnFn, *,
                clip: tuple[float, float] | None = None) -> torch.Tensor:
    """Ancestral sampling over all ``T`` steps (PathGen's Algorithm 2 with the standard mean).

    Parameters
    ----------
    eps_fn
        ``eps_fn(x_t, t) -> eps_hat`` for the integer step ``t``.
    shape
        Shape of ``x`` (rows = samples).
    schedule
        The :class:`NoiseSchedule` the network was trained with.
    randn
        ``randn(shape) -> standard normal tensor`` (per-slide generators make samples
        reproducible whatever else is in the batch).
    clip
        Range the predicted ``x0`` is clipped to at every step (``None``: no clipping).
    """
    x = randn(shape)
    for t in range(schedule.timesteps - 1, -1, -1):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_fn(x, t)
        x0 = _clip(schedule.predict_x0(x, tt, eps), clip)
        mean = schedule.posterior_mean(x0, x, tt)
        if t > 0:
            x = mean + math.sqrt(schedule.posterior_variance[t]) * randn(shape)
        else:
            x = mean
    return x


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced step indices from ``T - 1`` down to ``0`` (distinct)."""
    steps = max(1, min(int(steps), int(timesteps)))
    ts = np.unique(np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int64))
    return [int(t) for t in ts[::-1]]


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, shape: tuple[int, ...], schedule: NoiseSchedule, randn: RandnFn, *,
                steps: int = 50, eta: float = 0.0, clip: tuple[float, float] | None = None) -> torch.Tensor:
    """DDIM sampling on :func:`ddim_timesteps` (``eta = 0``: deterministic given ``x_T``).

    ``x_{s} = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z`` with
    ``sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t / abar_s)``; the last step
    returns ``x0_hat``.
    """
    ts = ddim_timesteps(schedule.timesteps, steps)
    ab = schedule.alpha_bar
    x = randn(shape)
    for i, t in enumerate(ts):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_fn(x, t)
        x0 = _clip(schedule.predict_x0(x, tt, eps), clip)
        if clip is not None:  # the noise direction consistent with the clipped x0
            eps = (x - math.sqrt(ab[t]) * x0) / math.sqrt(1.0 - ab[t])
        if i == len(ts) - 1:
            return x0
        s = ts[i + 1]
        sigma = eta * math.sqrt((1 - ab[s]) / (1 - ab[t])) * math.sqrt(max(1 - ab[t] / ab[s], 0.0))
        x = math.sqrt(ab[s]) * x0 + math.sqrt(max(1 - ab[s] - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * randn(shape)
    return x


class GeneGroupDenoiser(nn.Module):
    """``eps_theta(x_t, t, patches)`` over the concatenated gene-group vector (see the module
    docstring).

    Parameters
    ----------
    in_dim
        Patch feature dimension.
    group_index
        Per gene group, indices of its genes in the concatenated vector.
    n_genes
        Length of the concatenated vector.
    dim
        Token width (PathGen: 1024).
    heads
        Co-attention and transformer heads (PathGen: 8).
    blocks
        Co-attention + transformer blocks (PathGen: 3).
    dropout
        Dropout in the transformer layers.
    enc_layers
        SNN layers of each group encoder (PathGen: 4).
    """

    def __init__(self, in_dim: int, group_index: Sequence[Sequence[int]], n_genes: int, *, dim: int = 128,
                 heads: int = 4, blocks: int = 3, dropout: float = 0.1, enc_layers: int = 2) -> None:
        super().__init__()
        g = len(group_index)
        self.dim = dim
        self.patch_in = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.encoders = GroupEncoders(group_index, dim, layers=enc_layers, dropout=0.0)
        self.group_emb = nn.Parameter(torch.zeros(g, dim))
        nn.init.normal_(self.group_emb, std=0.02)
        self.time_mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(blocks)])
        self.coattn = nn.ModuleList([CoAttention(dim, heads) for _ in range(blocks)])
        self.tf = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True,
                                       norm_first=True)
            for _ in range(blocks)])
        self.out_norm = nn.LayerNorm(dim)
        self.decoders = GroupDecoders(group_index, n_genes, dim)
        self.skip = nn.Linear(dim, n_genes)  # per-gene, time-dependent scale of x_t (starts at 0)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)
        self.slide_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def context(self, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, Any]:
        """Keys and values of the patches ``(B, N, D)`` for every block (reused across steps)."""
        h = self.patch_in(x)
        if mask is None:
            pooled = h.mean(dim=1)
        else:
            w = mask.to(h.dtype)
            pooled = (h * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)
        return {"kv": [ca.kv(h) for ca in self.coattn], "mask": mask, "slide": self.slide_mlp(pooled)}

    @staticmethod
    def repeat_context(ctx: dict[str, Any], n: int) -> dict[str, Any]:
        """The context of each slide repeated ``n`` times (rows ``b * n + j``), for ``n`` samples."""
        kv = [(k.repeat_interleave(n, 0), v.repeat_interleave(n, 0)) for k, v in ctx["kv"]]
        m = ctx["mask"]
        return {"kv": kv, "mask": None if m is None else m.repeat_interleave(n, 0),
                "slide": ctx["slide"].repeat_interleave(n, 0)}

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        """``x_t (B, n_genes)``, ``t (B,)``, ``ctx`` from :meth:`context` -> ``eps_hat (B, n_genes)``."""
        g = self.encoders(x_t)
        temb = self.time_mlp(timestep_embedding(t, self.dim, max_period=1000.0))
        h = g + self.group_emb[None] + (temb + ctx["slide"])[:, None, :]
        for norm, ca, tf, (k, v) in zip(self.norms, self.coattn, self.tf, ctx["kv"]):
            a, _ = ca.attend(norm(h), k, v, ctx["mask"])
            h = tf(h + a)
        return self.decoders(self.out_norm(h + g)) + self.skip(temb) * x_t
