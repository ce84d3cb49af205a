"""Grade and survival from slides: gated ABMIL with a classification and a discrete-time survival head.

- slide embedding: gated attention MIL pooling of the patch features (``pooling="abmil"``;
  ``"mean"``: mean pooling) -> ``Linear(E, hidden) + ReLU + Dropout``;
- grade head: ``Linear(hidden, K)``, cross-entropy on the class codes;
- survival head: ``Linear(hidden, B)`` hazard logits, ``h = sigmoid``, ``S_k = prod (1 - h)``,
  trained with MCAT's discrete-time censored negative log-likelihood
  (:func:`histoviz.nn.losses.discrete_survival_nll`); risk = ``-sum_k S_k``;
- joint model: ``grade_weight * L_grade + survival_weight * L_survival`` with PathGen's
  weights 0.7 / 0.3 (its "slide only" setting);
- per-patch ("distributed") maps: the heads applied to each patch embedding alone, which is
  the model run on a bag of that one patch (PathGen's distributed prediction).

Early stopping and model selection use the weighted validation loss of the validation split
of the training patients. Head weights start at zero and head biases at the training class
log-priors and per-bin hazards, so training starts from the zero-skill predictor (a constant
output) rather than from a random direction in feature space, which on features with one
dominant axis (tumour content) would give a shuffled-label control a systematic, seed-dependent
c-index far from 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from histoviz.errors import ConfigError, DataError
from histoviz.models._torch import TorchSlideModel, feature_stats
from histoviz.models.base import PatchMaps, register_model
from histoviz.task_kinds import OUTCOME_KINDS, TaskKind

__all__ = ["OutcomeABMIL", "bin_hazards"]


def bin_hazards(bins: np.ndarray, event: np.ndarray, n_bins: int) -> np.ndarray:
    """Empirical per-bin hazard ``events in k / patients at risk at the start of k`` (clipped)."""
    b = np.asarray(bins)
    e = np.asarray(event)
    h = np.empty(n_bins)
    for k in range(n_bins):
        at_risk = np.sum(b >= k)
        h[k] = np.sum((b == k) & (e == 1)) / at_risk if at_risk else 0.5
    return np.clip(h, 0.02, 0.98)


def _net(arch: Mapping[str, Any]) -> Any:
    import torch
    from torch import nn

    from histoviz.nn.abmil import GatedABMIL, MeanPool

    class OutcomeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if arch["pooling"] == "abmil":
                self.pool = GatedABMIL(arch["in_dim"], arch["embed_dim"], arch["attn_dim"], arch["dropout"],
                                       uniform_init=True)
            else:
                self.pool = MeanPool(arch["in_dim"], arch["embed_dim"], arch["dropout"])
            e = self.pool.embed_dim
            self.fc = nn.Sequential(nn.Linear(e, arch["hidden"]), nn.ReLU(), nn.Dropout(arch["dropout"]))
            self.heads = nn.ModuleDict({k: nn.Linear(arch["hidden"], d) for k, d in arch["out_dims"].items()})

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            z, a, _ = self.pool(x, mask)
            s = self.fc(z)
            return {k: h(s) for k, h in self.heads.items()}, a

        def patch_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            s = self.fc(self.pool.embed_patches(x))
            return {k: h(s) for k, h in self.heads.items()}

    return OutcomeNet()


@register_model("abmil-grade", tasks=(TaskKind.CLASSIFICATION,), outputs=("attention",),
                description="gated ABMIL grade classifier (cross-entropy)")
@register_model("abmil-survival", tasks=(TaskKind.SURVIVAL,), outputs=("attention",),
                description="gated ABMIL discrete-time survival (MCAT NLL, 4 bins), risk = -sum S")
@register_model("abmil-grade-survival", tasks=OUTCOME_KINDS, outputs=("attention",),
                description="gated ABMIL joint grade + survival (0.7 / 0.3, PathGen's slide-only setting)")
class OutcomeABMIL(TorchSlideModel):
    """Slide -> grade and / or survival with gated ABMIL.

    Parameters
    ----------
    tasks
        Task kinds to learn (``"classification"``, ``"survival"`` or both).
    pooling
        ``"abmil"`` or ``"mean"``.
    embed_dim, attn_dim, hidden, dropout
        Network widths and dropout.
    grade_weight, survival_weight
        Loss weights of the joint model (PathGen: 0.7 / 0.3).
    survival_alpha
        MCAT's extra weight on uncensored patients (PathGen: 0).
    **loop
        Loop settings (:class:`~histoviz.nn.settings.LoopSettings`); AdamW with early stopping
        on the validation loss (defaults here: lr 5e-4, weight decay 1e-3, batch 16).
    """

    loop_defaults = {"lr": 5e-4, "weight_decay": 1e-3, "batch_size": 16}

    def __init__(
        self,
        *,
        tasks: tuple[str, ...] = OUTCOME_KINDS,
        pooling: str = "abmil",
        embed_dim: int = 128,
        attn_dim: int = 64,
        hidden: int = 128,
        dropout: float = 0.25,
        grade_weight: float = 0.7,
        survival_weight: float = 0.3,
        survival_alpha: float = 0.0,
        **loop: Any,
    ) -> None:
        super().__init__(**loop)
        tasks = tuple(tasks)
        bad = [t for t in tasks if t not in OUTCOME_KINDS]
        if bad or not tasks:
            raise ConfigError(f"tasks must be classification and/or survival, got {list(tasks)}")
        if pooling not in ("abmil", "mean"):
            raise ConfigError(f"pooling must be 'abmil' or 'mean', got {pooling!r}")
        self.tasks = tasks
        self.pooling = pooling
        self.embed_dim = embed_dim
        self.attn_dim = attn_dim
        self.hidden = hidden
        self.dropout = dropout
        self.grade_weight = grade_weight
        self.survival_weight = survival_weight
        self.survival_alpha = survival_alpha

    _make_net = staticmethod(lambda arch: _net(arch))

    def _weight(self, kind: str) -> float:
        if len(self.kinds_) == 1:
            return 1.0
        return float(self.grade_weight if kind == TaskKind.CLASSIFICATION else self.survival_weight)

    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, Any], val: Any) -> None:
        import torch

        from histoviz.nn.loop import seed_everything, train_module
        from histoviz.nn.losses import discrete_survival_nll, masked_cross_entropy

        seed_everything(self.loop.seed)
        dev = self._device()
        for m, blk in targets.items():
            if blk.kind == TaskKind.SURVIVAL and (blk.edges is None or (blk.bins[blk.present] < 0).any()):
                raise DataError(f"{m}: survival targets need time bins (fit SurvivalBins on the training patients)")
        self.feature_mean_, self.feature_std_ = feature_stats(bags)
        keys = {m: f"t{i}" for i, m in enumerate(targets)}
        out_dims = {keys[m]: (len(b.classes) if b.kind == TaskKind.CLASSIFICATION else b.n_bins) for m, b in targets.items()}
        self.arch_ = {"in_dim": self.embed_dim_, "embed_dim": self.embed_dim, "attn_dim": self.attn_dim,
                      "hidden": self.hidden, "dropout": self.dropout, "pooling": self.pooling,
                      "out_dims": out_dims, "keys": keys}
        self.outcome_ = {m: ({"classes": list(b.classes)} if b.kind == TaskKind.CLASSIFICATION else
                             {"edges": [float(x) if np.isfinite(x) else None for x in b.edges], "n_bins": b.n_bins})
                         for m, b in targets.items()}
        net = _net(self.arch_)
        with torch.no_grad():  # start from the zero-skill predictor: constant output, prior biases
            for m, b in targets.items():
                head = net.heads[keys[m]]
                head.weight.zero_()
                p = b.present
                if b.kind == TaskKind.CLASSIFICATION:
                    prior = np.bincount(b.codes[p], minlength=len(b.classes)) + 1.0
                    head.bias.copy_(torch.from_numpy(np.log(prior / prior.sum())).float())
                else:
                    h = bin_hazards(b.bins[p], b.event[p], b.n_bins)
                    head.bias.copy_(torch.from_numpy(np.log(h / (1 - h))).float())
        net.to(dev)
        self.module_ = net
        tr = self._batcher(bags, train=True)

        def tensors(blocks: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
            out = {}
            for m, b in blocks.items():
                pres = torch.from_numpy(b.present).to(dev)
                if b.kind == TaskKind.CLASSIFICATION:
                    out[m] = (torch.from_numpy(np.maximum(b.codes, 0)).to(dev), pres)
                else:
                    out[m] = (torch.from_numpy(np.maximum(b.bins, 0)).to(dev),
                              torch.from_numpy(np.maximum(b.event, 0)).to(dev), pres)
            return out

        yt = tensors(targets)

        def losses(out: dict[str, Any], ti: Any, yy: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
            res = {}
            for m, b in targets.items():
                lg = out[keys[m]]
                if b.kind == TaskKind.CLASSIFICATION:
                    codes, pres = yy[m]
                    res[m] = masked_cross_entropy(lg, codes[ti], pres[ti])
                else:
                    bins, ev, pres = yy[m]
                    res[m] = discrete_survival_nll(lg, bins[ti], ev[ti], pres[ti], alpha=float(self.survival_alpha))
            return res

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
            x, mask = tr.batch(idx, rng)
            out, _ = net(x, mask)
            parts = losses(out, torch.from_numpy(idx).to(dev), yt)
            total = sum(self._weight(targets[m].kind) * v for m, v in parts.items())
            return total, {m: float(v.detach()) for m, v in parts.items()}

        validate = None
        if val is not None:
            vb = self._batcher(val[0], train=False)
            vy = tensors(val[1])
            n_val = len(val[0])

            def validate() -> dict[str, float]:
                tot = {m: 0.0 for m in targets}
                for s in range(0, n_val, max(1, self.loop.batch_size)):
                    idx = np.arange(s, min(s + self.loop.batch_size, n_val))
                    x, mask = vb.batch(idx)
                    out, _ = net(x, mask)
                    for m, v in losses(out, torch.from_numpy(idx).to(dev), vy).items():
                        tot[m] += float(v) * len(idx)
                res = {m: v / n_val for m, v in tot.items()}
                res["total"] = sum(self._weight(targets[m].kind) * res[m] for m in targets)
                return res

        self.fit_info_ = train_module(net, len(bags), step, settings=self.loop, validate=validate,
                                      desc="outcomes")

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        meta["outcome"] = self.outcome_
        return meta, arrays

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.outcome_ = dict(meta["outcome"])

    # -- predict ---------------------------------------------------------------------------------
    def _convert(self, logits: dict[str, Any]) -> dict[str, np.ndarray]:
        import torch

        from histoviz.nn.losses import survival_from_hazard_logits

        out = {}
        for m, k in self.arch_["keys"].items():
            lg = logits[k]
            if self.kinds_[m] == TaskKind.CLASSIFICATION:
                out[m] = torch.softmax(lg, dim=-1).cpu().numpy().astype(np.float64)
            else:
                out[m] = survival_from_hazard_logits(lg)[1].cpu().numpy().astype(np.float64)
        return out

    def _predict(self, bags: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        b = self._batcher(bags, train=False)
        parts: list[dict[str, np.ndarray]] = []
        self.module_.eval()
        with torch.no_grad():
            for s in range(0, len(bags), max(1, self.loop.batch_size)):
                idx = np.arange(s, min(s + self.loop.batch_size, len(bags)))
                x, mask = b.batch(idx)
                out, _ = self.module_(x, mask)
                parts.append(self._convert(out))
        return {m: np.concatenate([p[m] for p in parts]) for m in self.arch_["keys"]}

    def _predict_patches(self, bag: np.ndarray) -> PatchMaps:
        import torch

        b = self._batcher([bag], train=False)
        x, mask = b.batch([0])
        self.module_.eval()
        with torch.no_grad():
            out, att = self.module_(x, mask)
            slide = {m: v[0] for m, v in self._convert(out).items()}
            patch = self._convert(self.module_.patch_outputs(x[0]))
        extra = {"attention": att[0].cpu().numpy().astype(np.float64)} if self.pooling == "abmil" else {}
        return PatchMaps(patch=patch, slide=slide, targets=self._names(), kinds=dict(self.kinds_), extra=extra)

    def _names(self) -> dict[str, list[str]]:
        out = {}
        for m, o in self.outcome_.items():
            if "classes" in o:
                out[m] = [str(c) for c in o["classes"]]
            else:
                out[m] = [f"S_{k}" for k in range(int(o["n_bins"]))]
        return out
