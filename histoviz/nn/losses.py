"""Losses of the slide-level models (torch).

- :func:`masked_mse`: the multi-task paper's masked loss
  ``L = (1/N) sum_i sum_t M_t^i ||y_t^i - f_t(z^i)||^2``; a patient without modality ``t``
  (``M_t^i = 0``) contributes nothing, whatever its (placeholder) target values are.
- :func:`nb_nll`: negative-binomial negative log-likelihood (mean/inverse-dispersion
  parametrisation, as scVI and CPNN), summed over genes, averaged over slides.
- :func:`info_nce`: symmetric InfoNCE between two batches of embeddings (TANGLE).
- :func:`discrete_survival_nll`: MCAT's negative log-likelihood of discrete-time hazards
  under right censoring; :func:`survival_from_hazard_logits` turns hazard logits into the
  survival function ``S_k`` at the end of each time bin.
- :func:`masked_cross_entropy`: cross-entropy over the rows that have a label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "discrete_survival_nll",
    "info_nce",
    "masked_cross_entropy",
    "masked_mse",
    "nb_nll",
    "survival_from_hazard_logits",
]


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


def survival_from_hazard_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hazards ``h_k = sigmoid(logit_k)`` and survival ``S_k = prod_{j<=k} (1 - h_j)``.

    ``S_k`` is the probability of surviving past the end of bin ``k``; the scalar risk used
    throughout histoviz is ``-sum_k S_k`` (MCAT, PathGen).
    """
    h = torch.sigmoid(logits)
    return h, torch.cumprod(1.0 - h, dim=-1)


def discrete_survival_nll(
    logits: torch.Tensor,
    bins: torch.Tensor,
    event: torch.Tensor,
    present: torch.Tensor | None = None,
    *,
    alpha: float = 0.0,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Negative log-likelihood of discrete-time hazards with right censoring (MCAT).

    With ``S_{-1} = 1`` and the observed bin ``y`` of a patient:

    - an event in bin ``y`` contributes ``-log S_{y-1} - log h_y``;
    - a patient censored in bin ``y`` contributes ``-log S_{y-1}`` (alive at the start of
      its bin; MCAT's convention, which does not credit survival through bin ``y``).

    ``loss = (1 - alpha) * (censored + uncensored) + alpha * uncensored``, averaged over the
    rows of the batch (rows without a label contribute 0 but count in the denominator, like
    :func:`masked_mse`).

    Parameters
    ----------
    logits
        ``(N, K)`` hazard logits.
    bins
        ``(N,)`` int64 bin index ``0..K-1``.
    event
        ``(N,)`` 1 = event observed, 0 = censored.
    present
        ``(N,)`` bool rows with a survival label (default: all).
    alpha
        Extra weight on uncensored patients (MCAT: 0.4 in some runs, PathGen: 0).
    """
    n = logits.shape[0]
    if present is not None:
        m = present.to(torch.bool)
        if not bool(m.any()):
            return logits.sum() * 0.0
        logits, bins, event = logits[m], bins[m], event[m]
    h, s = survival_from_hazard_logits(logits)
    s_pad = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)  # S_{-1} = 1
    y = bins.long().unsqueeze(1)
    c = 1.0 - event.float()
    s_before = torch.gather(s_pad, 1, y).squeeze(1).clamp(min=eps)
    h_y = torch.gather(h, 1, y).squeeze(1).clamp(min=eps)
    uncensored = -(1.0 - c) * (torch.log(s_before) + torch.log(h_y))
    censored = -c * torch.log(s_before)
    loss = (1.0 - alpha) * (censored + uncensored) + alpha * uncensored
    return loss.sum() / n


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, present: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over rows with a label, divided by all rows of the batch."""
    n = logits.shape[0]
    if present is not None:
        m = present.to(torch.bool)
        if not bool(m.any()):
            return logits.sum() * 0.0
        logits, labels = logits[m], labels[m]
    return F.cross_entropy(logits, labels.long(), reduction="sum") / n
