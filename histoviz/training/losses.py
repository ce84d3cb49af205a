"""Losses of the slide-level models (torch).

- :func:`masked_mse`: the multi-task paper's masked loss
  ``L = (1/N) sum_i sum_t M_t^i ||y_t^i - f_t(z^i)||^2``; a patient without modality ``t``
  (``M_t^i = 0``) contributes nothing, whatever its (placeholder) target values are.
- :func:`nb_nll`: negative-binomial negative log-likelihood (mean/inverse-dispersion
  parametrisation, as scVI and CPNN), summed over genes, averaged over slides.
- :func:`info_nce`: symmetric InfoNCE between two batches of embeddings (TANGLE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "masked_mse", "nb_nll"]


def masked_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    present: torch.Tensor,
    *,
    reduction: str = "sum",
) -> torch.Tensor:
    """Masked squared error of one modality.

    Parameters
    ----------
    pred, target
        ``(N, m)``; ``target`` rows of absent patients may hold anything (NaN included).
    present
        ``(N,)`` bool mask ``M_t``.
    reduction
        ``"sum"``: sum over the ``m`` outputs (the paper's formula; large modalities weigh
        more); ``"mean"``: mean over outputs (each modality weighs the same).

    Returns
    -------
    Scalar: the per-patient error summed over present patients, divided by ``N`` (all
    patients of the batch, as in the paper). Zero (with zero gradient) when no patient has
    the modality.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    n = pred.shape[0]
    m = present.to(torch.bool)
    if not bool(m.any()):
        return pred.sum() * 0.0
    # select rows instead of multiplying by the mask, so NaN placeholders never enter a graph
    diff = pred[m] - target[m]
    per_patient = (diff * diff).sum(dim=1) if reduction == "sum" else (diff * diff).mean(dim=1)
    return per_patient.sum() / n


def nb_nll(
    counts: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, *, eps: float = 1e-8
) -> torch.Tensor:
    """Negative-binomial NLL, summed over genes and averaged over rows.

    ``NB(k; mu, theta) = Gamma(k+theta) / (Gamma(theta) k!) (theta/(theta+mu))^theta
    (mu/(theta+mu))^k``, i.e. scipy's ``nbinom(n=theta, p=theta/(theta+mu))``.

    Parameters
    ----------
    counts
        ``(N, G)`` observed counts.
    mu
        ``(N, G)`` means (> 0).
    theta
        ``(G,)`` or ``(N, G)`` inverse dispersion (> 0).
    """
    theta = theta.expand_as(mu)
    log_theta_mu = torch.log(theta + mu + eps)
    ll = (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + counts * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(counts + theta)
        - torch.lgamma(theta)
        - torch.lgamma(counts + 1.0)
    )
    return -ll.sum(dim=-1).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, *, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE: ``0.5 CE(S/tau, I) + 0.5 CE(S^T/tau, I)``, ``S = norm(a) norm(b)^T``.

    Row ``i`` of ``a`` and row ``i`` of ``b`` are the positive pair; every other row of the
    batch is a negative.
    """
    za = F.normalize(a, dim=-1)
    zb = F.normalize(b, dim=-1)
    logits = za @ zb.T / temperature
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
