"""Grade and survival targets of a torch model: what every model that predicts outcomes shares.

Gated ABMIL (:mod:`histoviz.models.slide.outcome_abmil`) and PathGen's co-attention
(:mod:`histoviz.models.slide.pathgen`) train the same two heads: a grade head (cross-entropy on
the class codes) and a discrete-time survival head (MCAT's censored negative log-likelihood),
weighted ``grade_weight`` / ``survival_weight`` when both are learnt. :class:`OutcomeLoss` holds
that once: the checks on the blocks, what a checkpoint records of them, the zero-skill start of
the heads (class log-priors, per-bin hazards), the target tensors, the losses and the validation
loss the loop selects on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind

__all__ = ["OutcomeLoss", "bin_hazards", "outcome_meta"]


def bin_hazards(bins: np.ndarray, event: np.ndarray, n_bins: int) -> np.ndarray:
    """Empirical per-bin hazard ``events in k / patients at risk at the start of k`` (clipped)."""
    b = np.asarray(bins)
    e = np.asarray(event)
    h = np.empty(n_bins)
    for k in range(n_bins):
        at_risk = np.sum(b >= k)
        h[k] = np.sum((b == k) & (e == 1)) / at_risk if at_risk else 0.5
    return np.clip(h, 0.02, 0.98)


def outcome_meta(blocks: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint records of outcome blocks (classes; survival bin edges).

    Raises
    ------
    DataError
        A survival block without time bins fitted on the training patients.
    """
    for m, b in blocks.items():
        if b.kind == TaskKind.SURVIVAL and (b.edges is None or (b.bins[b.present] < 0).any()):
            raise DataError(f"{m}: survival targets need time bins (fit SurvivalBins on the training patients)")
    return {m: ({"classes": list(b.classes)} if b.kind == TaskKind.CLASSIFICATION else
                {"edges": [float(x) if np.isfinite(x) else None for x in b.edges], "n_bins": b.n_bins})
            for m, b in blocks.items()}


class OutcomeLoss:
    """The weighted grade + survival loss of a model's outcome heads.

    Parameters
    ----------
    blocks
        ``name -> ClassBlock | SurvivalBlock`` of the training patients.
    keys
        ``name -> key`` of each block's logits in the network's output.
    device
        Torch device of the tensors.
    grade_weight, survival_weight
        Loss weights when both kinds are learnt (PathGen: 0.7 / 0.3); one block alone weighs 1.
    survival_alpha
        MCAT's extra weight on uncensored patients.
    """

    def __init__(self, blocks: Mapping[str, Any], keys: Mapping[str, str], *, device: Any, grade_weight: float,
                 survival_weight: float, survival_alpha: float) -> None:
        self.blocks = dict(blocks)
        self.keys = dict(keys)
        self.device = device
        self.grade_weight = float(grade_weight)
        self.survival_weight = float(survival_weight)
        self.survival_alpha = float(survival_alpha)
        self.train = self.tensors(self.blocks)

    def weight(self, name: str) -> float:
        """Loss weight of block ``name``."""
        if len(self.blocks) == 1:
            return 1.0
        return self.grade_weight if self.blocks[name].kind == TaskKind.CLASSIFICATION else self.survival_weight

    def start_heads(self, bias_of: Callable[[str], Any]) -> None:
        """Set each head's bias (``bias_of(name)``) to the zero-skill predictor: the training class
        log-priors (grade) and per-bin hazard logits (survival)."""
        import torch

        with torch.no_grad():
            for m, b in self.blocks.items():
                p = b.present
                if b.kind == TaskKind.CLASSIFICATION:
                    prior = np.bincount(b.codes[p], minlength=len(b.classes)) + 1.0
                    bias_of(m).copy_(torch.from_numpy(np.log(prior / prior.sum())).float())
                else:
                    h = bin_hazards(b.bins[p], b.event[p], b.n_bins)
                    bias_of(m).copy_(torch.from_numpy(np.log(h / (1 - h))).float())

    def tensors(self, blocks: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
        """Target tensors of these heads' blocks in ``blocks`` (codes, or bins and events, with
        the present mask)."""
        import torch

        out = {}
        for m in self.blocks:
            b = blocks[m]
            pres = torch.from_numpy(b.present).to(self.device)
            if b.kind == TaskKind.CLASSIFICATION:
                out[m] = (torch.from_numpy(np.maximum(b.codes, 0)).to(self.device), pres)
            else:
                out[m] = (torch.from_numpy(np.maximum(b.bins, 0)).to(self.device),
                          torch.from_numpy(np.maximum(b.event, 0)).to(self.device), pres)
        return out

    def parts(self, out: Mapping[str, Any], rows: Any, targets: Mapping[str, tuple[Any, ...]]) -> dict[str, Any]:
        """Loss of each block for the logits ``out`` of patients ``rows`` (a tensor of indices)."""
        from histoviz.nn.losses import discrete_survival_nll, masked_cross_entropy

        res = {}
        for m, b in self.blocks.items():
            lg = out[self.keys[m]]
            if b.kind == TaskKind.CLASSIFICATION:
                codes, pres = targets[m]
                res[m] = masked_cross_entropy(lg, codes[rows], pres[rows])
            else:
                bins, ev, pres = targets[m]
                res[m] = discrete_survival_nll(lg, bins[rows], ev[rows], pres[rows], alpha=self.survival_alpha)
        return res

    def step(self, out: Mapping[str, Any], rows: Any) -> tuple[Any, dict[str, float]]:
        """The weighted training loss of a batch and its parts (for the loop's history)."""
        parts = self.parts(out, rows, self.train)
        return sum(self.weight(m) * v for m, v in parts.items()), {m: float(v.detach()) for m, v in parts.items()}

    def validator(self, blocks: Mapping[str, Any], n: int, batch_size: int,
                  forward: Callable[[np.ndarray], Mapping[str, Any]]) -> Callable[[], dict[str, float]]:
        """The validation loss per patient of ``n`` validation patients (``forward(rows)`` gives
        their logits), per block and weighted (``"total"``), for :func:`~histoviz.nn.loop.train_module`."""
        import torch

        targets = self.tensors(blocks)

        def validate() -> dict[str, float]:
            tot = {m: 0.0 for m in self.blocks}
            for s in range(0, n, max(1, batch_size)):
                idx = np.arange(s, min(s + batch_size, n))
                for m, v in self.parts(forward(idx), torch.from_numpy(idx).to(self.device), targets).items():
                    tot[m] += float(v) * len(idx)
            res = {m: v / n for m, v in tot.items()}
            res["total"] = sum(self.weight(m) * res[m] for m in self.blocks)
            return res

        return validate
