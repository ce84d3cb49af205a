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

from histoviz.errors import ConfigError
from histoviz.models._torch import TorchSlideModel, feature_stats
from histoviz.models.base import PatchMaps
from histoviz.models.registry import register_model
from histoviz.models.slide._outcome_heads import OutcomeLoss, bin_hazards, outcome_meta
from histoviz.task_kinds import OUTCOME_KINDS, TaskKind

__all__ = ["OutcomeABMIL", "bin_hazards"]


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

    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, Any], val: Any) -> None:
        import torch

        from histoviz.nn.loop import seed_everything, train_module

        seed_everything(self.loop.seed)
        dev = self._device()
        self.outcome_ = outcome_meta(targets)
        self.feature_mean_, self.feature_std_ = feature_stats(bags)
        keys = {m: f"t{i}" for i, m in enumerate(targets)}
        out_dims = {keys[m]: (len(b.classes) if b.kind == TaskKind.CLASSIFICATION else b.n_bins) for m, b in targets.items()}
        self.arch_ = {"in_dim": self.embed_dim_, "embed_dim": self.embed_dim, "attn_dim": self.attn_dim,
                      "hidden": self.hidden, "dropout": self.dropout, "pooling": self.pooling,
                      "out_dims": out_dims, "keys": keys}
        net = _net(self.arch_)
        loss = OutcomeLoss(targets, keys, device=dev, grade_weight=self.grade_weight,
                           survival_weight=self.survival_weight, survival_alpha=self.survival_alpha)
        with torch.no_grad():  # start from the zero-skill predictor: constant output, prior biases
            for k in keys.values():
                net.heads[k].weight.zero_()
        loss.start_heads(lambda m: net.heads[keys[m]].bias)
        net.to(dev)
        self.module_ = net
        tr = self._batcher(bags, train=True)

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
            x, mask = tr.batch(idx, rng)
            return loss.step(net(x, mask)[0], torch.from_numpy(idx).to(dev))

        validate = None
        if val is not None:
            vb = self._batcher(val[0], train=False)
            validate = loss.validator(val[1], len(val[0]), self.loop.batch_size,
                                      lambda idx: net(*vb.batch(idx))[0])

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
