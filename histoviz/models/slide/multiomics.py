"""Multi-omics regression from slides: ABMIL slide embedding + single- or multi-task heads.

After "Bridging Morphology and Molecular Signatures: Multi-Task Deep Learning for
Multi-Omics Prediction from Histopathology" (digest: ``../shared/papers/digest-multiomics.md``):

- slide embedding ``z``: gated ABMIL over patch features (``pooling="abmil"``) or their mean
  (``pooling="mean"``: the mean-pool MLP baseline);
- ``mode="mtl"``: a shared ``Linear(E, 512) + ReLU`` and one linear head per modality;
  ``mode="stl"``: an independent slide encoder + ``Linear(E, 512) + ReLU + Linear`` per
  modality (the paper's single-task models), each selected on its own validation loss;
- loss: the masked squared error ``(1/N) sum_i sum_t M_t^i ||y_t^i - f_t(z^i)||^2``
  (``loss_reduction="sum"``, the paper) or with a mean over each modality's outputs
  (``"mean"``), optional per-modality ``task_weights``;
- optional TANGLE-style contrastive pretraining (``contrastive_epochs > 0``): symmetric
  InfoNCE between the slide embedding and an MLP embedding of the patient's expression,
  on training patients only, before the supervised fit.

Deviations, stated: the paper trains regressors on frozen TANGLE embeddings; here the ABMIL
encoder is trained end to end with the heads (the contrastive stage makes the TANGLE variant).
Head biases start at the training mean of each target. Early stopping and model selection
use the validation split of the training data.

Per-patch maps: ``predict_patches`` applies the heads to each patch embedding ``h_i``
(the prediction for a slide made only of patches like ``i``) and returns the attention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import ConfigError, DataError
from histoviz.models._torch import TorchSlideModel, feature_stats
from histoviz.models.base import PatchMaps
from histoviz.models.registry import register_model

if TYPE_CHECKING:
    from histoviz.data.targets import TargetBlock

__all__ = ["MultiOmicsRegressor"]


def _net(arch: Mapping[str, Any]) -> Any:
    import torch
    from torch import nn

    from histoviz.nn.abmil import GatedABMIL, MeanPool

    class Branch(nn.Module):
        def __init__(self, out_dims: dict[str, int]) -> None:
            super().__init__()
            if arch["pooling"] == "abmil":
                self.pool = GatedABMIL(arch["in_dim"], arch["embed_dim"], arch["attn_dim"], arch["dropout"],
                                       uniform_init=arch.get("uniform_attention_init", False))
            else:
                self.pool = MeanPool(arch["in_dim"], arch.get("mean_embed_dim"), arch["dropout"])
            e = self.pool.embed_dim
            self.fc = nn.Sequential(nn.Linear(e, arch["hidden"]), nn.ReLU(), nn.Dropout(arch["dropout"]))
            self.heads = nn.ModuleDict({k: nn.Linear(arch["hidden"], m) for k, m in out_dims.items()})

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
            z, a, _ = self.pool(x, mask)
            s = self.fc(z)
            return {k: h(s) for k, h in self.heads.items()}, a, z

        def patch_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            s = self.fc(self.pool.embed_patches(x))
            return {k: h(s) for k, h in self.heads.items()}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            keys = arch["keys"]  # modality -> safe module key
            dims = {keys[m]: d for m, d in arch["out_dims"].items()}
            if arch["mode"] == "mtl":
                self.branches = nn.ModuleDict({"shared": Branch(dims)})
            else:
                self.branches = nn.ModuleDict({k: Branch({k: d}) for k, d in dims.items()})
            if arch.get("contrastive_dim"):
                m_in, e = arch["contrastive_dim"], self.branches["shared"].pool.embed_dim
                self.expr_encoder = nn.Sequential(
                    nn.Linear(m_in, e), nn.LayerNorm(e), nn.ReLU(), nn.Dropout(0.2), nn.Linear(e, e)
                )

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
            out: dict[str, torch.Tensor] = {}
            att: dict[str, torch.Tensor] = {}
            for name, br in self.branches.items():
                o, a, _ = br(x, mask)
                out.update(o)
                att[name] = a
            return out, att

    return Net()


@register_model("multiomics", mode="mtl", pooling="abmil", outputs=("attention",),
                description="ABMIL + shared FC-512 + linear head per modality (multi-task)")
@register_model("multiomics-stl", mode="stl", pooling="abmil", outputs=("attention",),
                description="one ABMIL + FC-512 + linear model per modality (single-task)")
@register_model("multiomics-tangle", mode="mtl", pooling="abmil", contrastive_epochs=30, outputs=("attention",),
                description="multi-task after TANGLE-style contrastive pretraining on expression")
@register_model("meanpool-mlp", mode="mtl", pooling="mean",
                description="mean-pooled features + FC-512 + linear heads (baseline)")
class MultiOmicsRegressor(TorchSlideModel):
    """Slide -> multi-omics regression with ABMIL and single-/multi-task heads.

    Parameters
    ----------
    mode
        ``"mtl"`` (shared FC-512, a linear head per modality) or ``"stl"`` (one independent
        model per modality).
    pooling
        ``"abmil"`` (gated attention) or ``"mean"`` (mean-pool MLP baseline).
    embed_dim, attn_dim
        ABMIL patch-embedding width and attention width.
    hidden
        Width of the FC layer after pooling (512 in the paper).
    dropout
        Dropout in the encoder and after the FC layer.
    uniform_attention_init
        Start ABMIL from uniform attention (zero-initialised attention output); bulk
        expression is a sum over all tissue, so mean pooling is a good starting point.
    loss_reduction
        ``"sum"`` over a modality's outputs (paper) or ``"mean"``.
    task_weights
        ``{modality: weight}`` (default 1 each).
    contrastive_epochs
        Epochs of TANGLE-style InfoNCE pretraining (0: off; needs ``mode="mtl"``).
    contrastive_modality
        Modality whose profile is embedded for the contrastive stage.
    temperature
        InfoNCE temperature (TANGLE: 0.01; small cohorts train better with 0.1).
    **loop
        Loop settings (:class:`~histoviz.nn.settings.LoopSettings`: epochs, lr, ...,
        ``max_patches`` sampled per slide in a training step); AdamW with early stopping on
        the validation loss.
    """

    def __init__(
        self,
        *,
        mode: str = "mtl",
        pooling: str = "abmil",
        embed_dim: int = 256,
        attn_dim: int = 128,
        hidden: int = 512,
        dropout: float = 0.25,
        uniform_attention_init: bool = False,
        loss_reduction: str = "sum",
        task_weights: dict[str, float] | None = None,
        contrastive_epochs: int = 0,
        contrastive_modality: str = "gene",
        temperature: float = 0.1,
        **loop: Any,
    ) -> None:
        super().__init__(**loop)
        if mode not in ("mtl", "stl"):
            raise ConfigError(f"mode must be 'mtl' or 'stl', got {mode!r}")
        if pooling not in ("abmil", "mean"):
            raise ConfigError(f"pooling must be 'abmil' or 'mean', got {pooling!r}")
        if loss_reduction not in ("sum", "mean"):
            raise ConfigError(f"loss_reduction must be 'sum' or 'mean', got {loss_reduction!r}")
        if contrastive_epochs and mode != "mtl":
            raise ConfigError("contrastive pretraining needs mode='mtl' (one shared slide encoder)")
        if contrastive_epochs and pooling != "abmil":
            raise ConfigError("contrastive pretraining needs pooling='abmil'")
        self.mode = mode
        self.pooling = pooling
        self.embed_dim = embed_dim
        self.attn_dim = attn_dim
        self.hidden = hidden
        self.dropout = dropout
        self.uniform_attention_init = uniform_attention_init
        self.loss_reduction = loss_reduction
        self.task_weights = task_weights
        self.contrastive_epochs = contrastive_epochs
        self.contrastive_modality = contrastive_modality
        self.temperature = temperature

    # -- architecture --------------------------------------------------------------------------
    _make_net = staticmethod(lambda arch: _net(arch))

    # -- fit -------------------------------------------------------------------------------------
    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, TargetBlock], val: Any) -> None:
        import torch

        from histoviz.nn.loop import seed_everything, train_module
        from histoviz.nn.losses import masked_mse

        seed_everything(self.loop.seed)
        dev = self._device()
        weights = {m: float((self.task_weights or {}).get(m, 1.0)) for m in targets}
        unknown = set(self.task_weights or {}) - set(targets)
        if unknown:
            raise ConfigError(f"task_weights name modalities {sorted(unknown)} that are not targets")
        self.feature_mean_, self.feature_std_ = feature_stats(bags)
        keys = {m: f"m{i}" for i, m in enumerate(targets)}
        contrastive_dim = 0
        if self.contrastive_epochs:
            if self.contrastive_modality not in targets:
                raise ConfigError(
                    f"contrastive_modality {self.contrastive_modality!r} is not among the targets {list(targets)}"
                )
            contrastive_dim = len(targets[self.contrastive_modality].targets)
        self.arch_ = {
            "in_dim": self.embed_dim_, "embed_dim": self.embed_dim, "attn_dim": self.attn_dim,
            "hidden": self.hidden, "dropout": self.dropout, "pooling": self.pooling, "mode": self.mode,
            "out_dims": {m: len(b.targets) for m, b in targets.items()}, "keys": keys,
            "contrastive_dim": contrastive_dim, "uniform_attention_init": bool(self.uniform_attention_init),
        }
        net = _net(self.arch_)
        # heads start at the training mean (predicting the mean is the zero-skill baseline)
        with torch.no_grad():
            for m, blk in targets.items():
                br = net.branches["shared"] if self.mode == "mtl" else net.branches[keys[m]]
                mu = np.nanmean(blk.values[blk.present], axis=0)
                br.heads[keys[m]].bias.copy_(torch.from_numpy(np.nan_to_num(mu).astype(np.float32)))
        net.to(dev)
        self.module_ = net
        tr = self._batcher(bags, train=True)
        y = {m: torch.from_numpy(np.nan_to_num(b.values)).to(dev) for m, b in targets.items()}
        pres = {m: torch.from_numpy(b.present).to(dev) for m, b in targets.items()}

        info: dict[str, Any] = {}
        if self.contrastive_epochs:
            info["contrastive"] = self._pretrain(net, tr, targets[self.contrastive_modality], dev)

        def loss_of(out: dict[str, torch.Tensor], idx: Any, yy: Any, pp: Any) -> tuple[torch.Tensor, dict[str, float]]:
            parts = {}
            total = 0.0
            for m in targets:
                lm = masked_mse(out[keys[m]], yy[m][idx], pp[m][idx], reduction=self.loss_reduction)
                parts[m] = lm
                total = total + weights[m] * lm
            return total, {k: float(v.detach()) for k, v in parts.items()}

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            x, mask = tr.batch(idx, rng)
            out, _ = net(x, mask)
            return loss_of(out, torch.from_numpy(idx).to(dev), y, pres)

        validate = None
        groups = None
        if val is not None:
            vb = self._batcher(val[0], train=False)
            vy = {m: torch.from_numpy(np.nan_to_num(val[1][m].values)).to(dev) for m in targets}
            vp = {m: torch.from_numpy(val[1][m].present).to(dev) for m in targets}
            n_val = len(val[0])

            def validate() -> dict[str, float]:
                tot = {m: 0.0 for m in targets}
                for s in range(0, n_val, max(1, self.loop.batch_size)):
                    idx = np.arange(s, min(s + self.loop.batch_size, n_val))
                    x, mask = vb.batch(idx)
                    out, _ = net(x, mask)
                    ti = torch.from_numpy(idx).to(dev)
                    for m in targets:
                        # undo the 1/batch normalisation so the sum over batches is per patient
                        tot[m] += float(masked_mse(out[keys[m]], vy[m][ti], vp[m][ti],
                                                   reduction=self.loss_reduction)) * len(idx)
                res = {m: v / n_val for m, v in tot.items()}
                res["total"] = sum(weights[m] * res[m] for m in targets)
                return res

            if self.mode == "stl":
                groups = {m: [f"branches.{keys[m]}."] for m in targets}

        info.update(train_module(net, len(bags), step, settings=self.loop, validate=validate, groups=groups))
        self.fit_info_ = info

    def _pretrain(self, net: Any, tr: Any, blk: TargetBlock, dev: Any) -> dict[str, Any]:
        """TANGLE-style symmetric InfoNCE between slide and expression embeddings."""
        import torch

        from histoviz.nn.loop import train_module
        from histoviz.nn.losses import info_nce

        rows = np.flatnonzero(blk.present)
        if len(rows) < 4:
            raise DataError(f"contrastive pretraining needs >= 4 training patients with {blk.modality}")
        expr = torch.from_numpy(np.nan_to_num(blk.values)).to(dev)
        mu = expr[torch.from_numpy(rows).to(dev)].mean(0)
        sd = expr[torch.from_numpy(rows).to(dev)].std(0).clamp(min=1e-6)
        pool = net.branches["shared"].pool
        enc = net.expr_encoder
        bs = max(2, min(self.loop.batch_size * 2, len(rows)))

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            pidx = rows[idx]
            if len(pidx) < 2:  # InfoNCE needs negatives; pad with random other patients
                extra = rng.choice(np.setdiff1d(rows, pidx), size=1, replace=False)
                pidx = np.concatenate([pidx, extra])
            x, mask = tr.batch(pidx, rng)
            z, _, _ = pool(x, mask)
            e = enc((expr[torch.from_numpy(pidx).to(dev)] - mu) / sd)
            loss = info_nce(z, e, temperature=self.temperature)
            return loss, {}

        # the same settings for a second stage: its own epochs and batches, no early stopping
        settings = replace(self.loop, epochs=int(self.contrastive_epochs), batch_size=bs, patience=10**9,
                           seed=self.loop.seed + 1)
        params = list(pool.parameters()) + list(enc.parameters())
        info = train_module(net, len(rows), step, settings=settings, parameters=params, desc="contrastive")
        return {"epochs": info["epochs_run"], "final_loss": info["history"][-1]["train_loss"] if info["history"] else None}

    # -- predict ---------------------------------------------------------------------------------
    def _forward_all(self, bags: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        b = self._batcher(bags, train=False)
        keys = self.arch_["keys"]
        outs: dict[str, list[np.ndarray]] = {m: [] for m in keys}
        self.module_.eval()
        with torch.no_grad():
            for s in range(0, len(bags), max(1, self.loop.batch_size)):
                idx = np.arange(s, min(s + self.loop.batch_size, len(bags)))
                x, mask = b.batch(idx)
                out, _ = self.module_(x, mask)
                for m, k in keys.items():
                    outs[m].append(out[k].cpu().numpy())
        return {m: np.concatenate(v).astype(np.float64) for m, v in outs.items()}

    def _predict(self, bags: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return self._forward_all(bags)

    def _predict_patches(self, bag: np.ndarray) -> PatchMaps:
        import torch

        keys = self.arch_["keys"]
        b = self._batcher([bag], train=False)
        x, mask = b.batch([0])
        net = self.module_
        net.eval()
        with torch.no_grad():
            out, att = net(x, mask)
            per_patch: dict[str, np.ndarray] = {}
            for _name, br in net.branches.items():
                po = br.patch_outputs(x[0])
                for m, k in keys.items():
                    if k in po:
                        per_patch[m] = po[k].cpu().numpy().astype(np.float64)
        # attention of the shared encoder (mtl) or of the first modality's encoder (stl)
        first = "shared" if "shared" in att else keys[self.modalities_[0]]
        attention = att[first][0].cpu().numpy().astype(np.float64) if self.pooling == "abmil" else None
        return PatchMaps(
            patch=per_patch,
            targets={m: self.targets_[m] for m in keys},
            slide={m: out[k][0].cpu().numpy().astype(np.float64) for m, k in keys.items()},
            extra={} if attention is None else {"attention": attention},
        )
