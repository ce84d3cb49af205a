"""PathGen: diffusion-synthesised gene groups, co-attention grade and survival.

After Dey et al., "Generating crossmodal gene expression from cancer histopathology improves
multimodal AI predictions" (``../shared/papers/paper-pathgen.txt``, digest beside it),
reimplemented from the paper and the digest (the authors' code is CC-BY-NC-ND and was not
used). Fitted on a fold's training patients, in two stages:

1. **Gene groups** (:mod:`histoviz.data.gene_groups`): a table gene -> group
   (``gene_groups``; default MCAT's six families) matched to the expression modality
   (``modality``, default ``gene``); the matched genes, concatenated group by group (each gene
   once), are the *gene-group vector*. A per-gene scaling (``scaling``: ``minmax`` to [0, 1] as
   PathGen, or ``zscore``) is fitted on the training patients.
2. **Diffusion** (setting ``synthetic``): a DDPM over the gene-group vector conditioned on the
   slide's patch embeddings by co-attention (:class:`~histoviz.nn.diffusion.GeneGroupDenoiser`;
   ``T = timesteps`` = 1000 with the linear schedule by default, noise-prediction loss).
   Synthesis is the mean of ``n_samples`` (3) samples, ``sampler="ddpm"`` (all ``T`` steps) or
   ``"ddim"`` (``sample_steps`` deterministic steps: faster, a labelled deviation). The noise of
   a slide comes from a generator seeded by its features, so a slide always gets the same
   synthesis.
3. **Co-attention** (:class:`~histoviz.nn.coattention.GeneGroupMCAT`, MCAT with PathGen's
   separate grade branch) on patches plus gene groups, with the layer's losses:
   ``grade_weight`` x cross-entropy (grade) + ``survival_weight`` x MCAT's discrete-time
   survival NLL (0.7 / 0.3 as PathGen).

``setting`` picks the co-attention's gene-group input (same splits and seed give the paper's
three-way comparison):

- ``slide``: no omic information (all-zero group vectors, so the group tokens are learned
  constant queries that attend to the patches). PathGen feeds Gaussian noise instead; both
  carry nothing about the patient, zeros keep predictions deterministic.
- ``synthetic``: trained on the training patients' *measured* groups (PathGen trains MCAT_GR on
  real transcriptomes), predicted from the *synthesised* groups. Only this setting trains the
  diffusion and outputs the synthesised groups (the ``gene`` block restricted to group genes,
  which the task layer scores like any regression).
- ``real``: trained and predicted with measured groups. The model declares
  ``inputs = ("gene",)``: held-out patients' measured expression is passed at prediction time,
  and a new slide without expression cannot be predicted (a clear error says so). A
  shuffled-label run of this setting is no null control (shuffling keeps each patient's
  expression with its outcomes); the control is the ``slide`` setting with shuffled labels.

Per-patch ("distributed") maps: the co-attention model applied to each patch alone with the
slide's gene groups unchanged (PathGen's distributed prediction) gives per-patch grade
probabilities and risk; per-patch synthesised expression is the diffusion conditioned on that
patch alone (always DDIM with ``sample_steps`` steps and one sample, for speed); the
co-attention weights of each gene group over the slide's patches go to
``extra["coattention"]`` (one column per group; each column sums to 1 over the slide).

Other deliberate deviations (small data, CPUs): widths and depths are scaled down (``dim``,
``diffusion_dim``; PathGen uses 1024); the group vectors are not re-normalised within each
sample before the co-attention model (that would erase a shift shared by a whole group); the
predicted ``x0`` is clipped to the training range widened by half its span instead of clamping
samples at 0; the denoiser's time -> gene attention is an additive time embedding; batches of
slides replace batch size 1 with gradient accumulation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import ConfigError, DataError
from histoviz.models._torch import TorchSlideModel, feature_stats
from histoviz.models.base import PatchMaps
from histoviz.models.registry import register_model
from histoviz.models.slide._outcome_heads import OutcomeLoss, outcome_meta
from histoviz.models.slide._pathgen_parts import (
    GeneScaling,
    build_net,
    patch_seeds,
    randn_per_slide,
    slide_seed,
)
from histoviz.task_kinds import OUTCOME_KINDS, TaskKind

__all__ = ["SETTINGS", "PathGen"]

log = logging.getLogger(__name__)

SETTINGS = ("slide", "synthetic", "real")
_CHUNK = 32  # slides sampled together


@register_model("pathgen", setting_param="setting", reads_inputs=True, regression_blocks=1,
                outputs=("coattention",), description="PathGen: DDPM-synthesised gene groups + MCAT co-attention grade and "
                                       "survival (setting slide | synthetic | real)")
class PathGen(TorchSlideModel):
    """Gene groups synthesised from slides by diffusion; grade and survival by co-attention.

    Parameters
    ----------
    gene_groups
        Gene-group table (CSV path, wide or long; ``"mcat"`` = MCAT's six families shipped in
        ``sample_data/gene_groups``) or a mapping ``group -> genes``.
    setting
        ``"slide"``, ``"synthetic"`` or ``"real"`` (see the module docstring).
    modality
        The expression block whose genes are grouped.
    timesteps, beta_start, beta_end, schedule
        Diffusion schedule (PathGen: 1000, 1e-4, 0.02, linear).
    sampler, sample_steps, n_samples
        ``"ddpm"`` (all steps) or ``"ddim"`` (``sample_steps`` steps); samples averaged.
    scaling
        ``"minmax"`` (PathGen) or ``"zscore"`` per gene, fitted on training patients.
    diffusion_dim, diffusion_heads, diffusion_blocks, diffusion_dropout
        Denoiser size (PathGen: 1024, 8 heads, 3 co-attention blocks).
    diffusion_epochs, diffusion_lr, diffusion_patience
        Denoiser optimisation (AdamW, early stopping on a fixed-draw validation noise loss).
    dim, heads, tf_heads, layers, snn_layers, dropout
        Co-attention model size (MCAT_GR: 1024, 1 co-attention head, 8 heads, 2 layers, 0.25).
    grade_weight, survival_weight, survival_alpha
        Loss weights (PathGen 0.7 / 0.3) and MCAT's extra weight on uncensored patients (0).
    **loop
        Loop settings (:class:`~histoviz.nn.settings.LoopSettings`) of the co-attention stage
        (PathGen: lr 2e-4, weight decay 1e-5, batch 16); the diffusion stage takes them with its
        own epochs, learning rate, patience and no weight decay.
    """

    tasks = tuple(TaskKind)
    loop_defaults = {"lr": 2e-4, "weight_decay": 1e-5, "batch_size": 16}

    def __init__(
        self,
        *,
        gene_groups: Any = "mcat",
        setting: str = "synthetic",
        modality: str = "gene",
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        schedule: str = "linear",
        sampler: str = "ddpm",
        sample_steps: int = 50,
        n_samples: int = 3,
        scaling: str = "minmax",
        diffusion_dim: int = 64,
        diffusion_heads: int = 4,
        diffusion_blocks: int = 3,
        diffusion_dropout: float = 0.1,
        diffusion_epochs: int = 300,
        diffusion_lr: float = 1e-3,
        diffusion_patience: int = 40,
        dim: int = 64,
        heads: int = 1,
        tf_heads: int = 4,
        layers: int = 1,
        snn_layers: int = 2,
        dropout: float = 0.25,
        grade_weight: float = 0.7,
        survival_weight: float = 0.3,
        survival_alpha: float = 0.0,
        **loop: Any,
    ) -> None:
        super().__init__(**loop)
        for name, val, allowed in (("setting", setting, SETTINGS), ("sampler", sampler, ("ddpm", "ddim")),
                                   ("scaling", scaling, ("minmax", "zscore")),
                                   ("schedule", schedule, ("linear", "cosine"))):
            if val not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {val!r}")
        for name, val, lo in (("timesteps", timesteps, 2), ("sample_steps", sample_steps, 1),
                              ("n_samples", n_samples, 1), ("diffusion_epochs", diffusion_epochs, 1)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {val!r}")
        if dim % tf_heads or dim % heads or diffusion_dim % diffusion_heads:
            raise ConfigError("dim must be divisible by heads and tf_heads, diffusion_dim by diffusion_heads")
        if not isinstance(gene_groups, (str, Mapping)):
            raise ConfigError(f"gene_groups must be a table path, 'mcat' or a mapping group -> genes, got "
                              f"{type(gene_groups).__name__}")
        self.gene_groups = gene_groups if isinstance(gene_groups, str) else {
            str(k): [str(g) for g in v] for k, v in gene_groups.items()}
        self.setting = setting
        self.modality = modality
        self.timesteps = int(timesteps)
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.schedule = schedule
        self.sampler = sampler
        self.sample_steps = int(sample_steps)
        self.n_samples = int(n_samples)
        self.scaling = scaling
        self.diffusion_dim = diffusion_dim
        self.diffusion_heads = diffusion_heads
        self.diffusion_blocks = diffusion_blocks
        self.diffusion_dropout = diffusion_dropout
        self.diffusion_epochs = int(diffusion_epochs)
        self.diffusion_lr = diffusion_lr
        self.diffusion_patience = diffusion_patience
        self.dim = dim
        self.heads = heads
        self.tf_heads = tf_heads
        self.layers = layers
        self.snn_layers = snn_layers
        self.dropout = dropout
        self.grade_weight = grade_weight
        self.survival_weight = survival_weight
        self.survival_alpha = survival_alpha
        self.inputs = (modality,) if setting == "real" else ()

    _make_net = staticmethod(lambda arch: build_net(arch))

    def input_description(self) -> str:
        """``"(setting 'real') "`` for messages."""
        return f"(setting {self.setting!r}) " if self.inputs else ""

    # -- fit ------------------------------------------------------------------------------------
    def _schedule(self) -> Any:
        from histoviz.nn.diffusion import NoiseSchedule

        return NoiseSchedule(self.timesteps, self.beta_start, self.beta_end, self.schedule)

    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, Any], val: Any) -> None:
        from histoviz.data.gene_groups import match_gene_groups
        from histoviz.nn.loop import seed_everything

        seed_everything(self.loop.seed)
        blk = targets.get(self.modality)
        if blk is None or blk.kind != TaskKind.REGRESSION:
            raise DataError(f"PathGen needs the expression modality {self.modality!r} (data.omics.{self.modality}) "
                            f"for its gene groups; the targets are {list(targets)}")
        outcomes = {m: b for m, b in targets.items() if b.kind in OUTCOME_KINDS}
        kinds = [b.kind for b in outcomes.values()]
        if len(kinds) != len(set(kinds)):
            raise DataError(f"PathGen predicts one grade and one survival outcome; got {list(outcomes)}")
        ignored = [m for m, b in targets.items() if b.kind == TaskKind.REGRESSION and m != self.modality]
        if ignored:
            log.info("PathGen ignores the regression blocks %s", ignored)
        if self.setting != "synthetic" and not outcomes:
            raise DataError(f"PathGen setting {self.setting!r} predicts grade and survival: give data.outcomes "
                            "(or setting synthetic to only synthesise gene groups)")
        outcome = outcome_meta(outcomes)
        source = None if isinstance(self.gene_groups, Mapping) else str(self.gene_groups)
        self.groups_ = match_gene_groups(self.gene_groups, blk.targets, source=source)
        expr, pres = self._group_values(blk)
        if pres.sum() < 2:
            raise DataError(f"{self.modality}: {int(pres.sum())} training patient(s) have expression; PathGen needs >= 2")
        self.scale_ = GeneScaling.fit(self.scaling, expr[pres])
        self.zscale_ = GeneScaling.fit("zscore", expr[pres])
        self.feature_mean_, self.feature_std_ = feature_stats(bags)
        diffuse = self.setting == "synthetic"
        self.arch_ = self._arch(diffuse, outcomes)
        self.outcome_ = outcome
        self.module_ = build_net(self.arch_).to(self._device())
        self.modalities_ = ([self.modality] if diffuse else []) + list(outcomes)
        self.targets_ = {m: (list(self.groups_.genes) if m == self.modality else list(targets[m].targets))
                         for m in self.modalities_}
        self.kinds_ = {m: targets[m].kind for m in self.modalities_}
        vexpr = vpres = None
        if val is not None and self.modality in val[1]:
            vexpr, vpres = self._group_values(val[1][self.modality])
        info: dict[str, Any] = {"gene_groups": self.groups_.summary().to_dict("records"), "history": []}
        if diffuse:
            d = self._fit_diffusion(bags, self.scale_.forward(expr), pres, val,
                                    None if vexpr is None else self.scale_.forward(vexpr), vpres)
            info["history"] += [{"stage": "diffusion", **r} for r in d.pop("history", [])]
            info["diffusion"] = d
            info["best_val"] = d.get("best_val")
        if outcomes:
            c = self._fit_coattention(bags, outcomes, expr, pres, val, vexpr, vpres)
            info["history"] += [{"stage": "coattention", **r} for r in c.pop("history", [])]
            info["coattention"] = c
            info["best_val"] = c.get("best_val")
            info["best_epoch"] = c.get("best_epoch")
        self.fit_info_ = info

    def _group_values(self, blk: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(n, m)`` values of the group genes in ``blk`` and the rows that have them all."""
        cols = pd.Index([str(t) for t in blk.targets]).get_indexer(self.groups_.genes)
        if (cols < 0).any():
            miss = [g for g, c in zip(self.groups_.genes, cols) if c < 0]
            raise DataError(f"{self.modality}: {len(miss)} gene(s) of the model's gene groups are not in the "
                            f"expression table (e.g. {miss[:3]}); give the genes the model was trained on")
        v = np.asarray(blk.values, np.float64)[:, cols]
        return v, np.asarray(blk.present, bool) & np.isfinite(v).all(axis=1)

    def _arch(self, diffuse: bool, outcomes: Mapping[str, Any]) -> dict[str, Any]:
        keys = {m: ("grade" if b.kind == TaskKind.CLASSIFICATION else "survival") for m, b in outcomes.items()}
        n_cls = next((len(b.classes) for b in outcomes.values() if b.kind == TaskKind.CLASSIFICATION), 0)
        n_bins = next((b.n_bins for b in outcomes.values() if b.kind == TaskKind.SURVIVAL), 0)
        return {
            "in_dim": int(self.embed_dim_), "n_genes": len(self.groups_.genes),
            "groups": [[int(j) for j in i] for i in self.groups_.index], "keys": keys,
            "denoiser": {"dim": self.diffusion_dim, "heads": self.diffusion_heads, "blocks": self.diffusion_blocks,
                         "dropout": self.diffusion_dropout, "enc_layers": 2} if diffuse else None,
            "mcat": {"dim": self.dim, "heads": self.heads, "tf_heads": self.tf_heads, "layers": self.layers,
                     "snn_layers": self.snn_layers, "dropout": self.dropout, "n_classes": n_cls,
                     "n_bins": n_bins} if outcomes else None,
        }

    def _diffusion_loop(self) -> Any:
        """The loop settings of the diffusion stage: its own epochs, rate and patience."""
        return replace(self.loop, epochs=self.diffusion_epochs, lr=float(self.diffusion_lr),
                       patience=int(self.diffusion_patience), weight_decay=0.0)

    def _fit_diffusion(self, bags: Sequence[np.ndarray], scaled: np.ndarray, pres: np.ndarray, val: Any,
                       vscaled: np.ndarray | None, vpres: np.ndarray | None) -> dict[str, Any]:
        import torch

        from histoviz.nn.loop import train_module

        dev = self._device()
        net = self.module_["denoiser"]
        sched = self._schedule()
        T = sched.timesteps
        rows = np.flatnonzero(pres)
        x0_all = torch.from_numpy(np.nan_to_num(scaled).astype(np.float32)).to(dev)
        tr = self._batcher(bags, train=True)

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
            ii = rows[idx]
            x, mask = tr.batch(ii, rng)
            x0 = x0_all[torch.from_numpy(ii).to(dev)]
            t = torch.from_numpy(rng.integers(0, T, len(ii))).to(dev)
            noise = torch.randn_like(x0)
            eps = net(sched.q_sample(x0, t, noise), t, net.context(x, mask))
            loss = ((eps - noise) ** 2).mean()
            return loss, {"diffusion": float(loss.detach())}

        validate = None
        if vscaled is not None and vpres is not None and vpres.any():
            vrows = np.flatnonzero(vpres)
            vb = self._batcher([val[0][i] for i in vrows], train=False)
            reps = 8
            g = torch.Generator().manual_seed(self.loop.seed + 17)
            vt = torch.randint(0, T, (reps, len(vrows)), generator=g)
            vn = torch.randn((reps, len(vrows), scaled.shape[1]), generator=g)
            vx0 = torch.from_numpy(vscaled[vrows].astype(np.float32))

            def validate() -> dict[str, float]:
                tot = 0.0
                for s in range(0, len(vrows), self.loop.batch_size):
                    sl = np.arange(s, min(s + self.loop.batch_size, len(vrows)))
                    x, mask = vb.batch(sl)
                    ctx = net.context(x, mask)
                    for r in range(reps):
                        t, n = vt[r, sl].to(dev), vn[r, sl].to(dev)
                        eps = net(sched.q_sample(vx0[sl].to(dev), t, n), t, ctx)
                        tot += float(((eps - n) ** 2).mean()) * len(sl)
                v = tot / (reps * len(vrows))
                return {"total": v, "diffusion": v}

        info = train_module(net, len(rows), step, validate=validate, parameters=list(net.parameters()),
                            settings=self._diffusion_loop(),
                            desc="pathgen diffusion")
        self.module_.eval()
        return info

    def _coattention_input(self, expr: np.ndarray, pres: np.ndarray | None = None) -> np.ndarray:
        """Gene-group input of the co-attention model: z-scores with training statistics (the
        SNNs expect standardised inputs; patients without expression get 0, the training mean),
        or zeros for the slide-only setting."""
        if self.setting == "slide":
            return np.zeros(np.shape(expr), dtype=np.float32)
        z = self.zscale_.forward(expr)
        if pres is not None:
            z = np.where(pres[:, None], np.nan_to_num(z), 0.0)
        return z.astype(np.float32)

    def _fit_coattention(self, bags: Sequence[np.ndarray], outcomes: Mapping[str, Any], expr: np.ndarray,
                         pres: np.ndarray, val: Any, vexpr: np.ndarray | None, vpres: np.ndarray | None) -> dict[str, Any]:
        import torch

        from histoviz.nn.loop import train_module

        dev = self._device()
        net = self.module_["mcat"]
        loss = OutcomeLoss(outcomes, self.arch_["keys"], device=dev, grade_weight=self.grade_weight,
                           survival_weight=self.survival_weight, survival_alpha=self.survival_alpha)
        # start from the zero-skill predictor
        loss.start_heads(lambda m: (net.grade_head if outcomes[m].kind == TaskKind.CLASSIFICATION
                                    else net.survival_head).bias)
        om = torch.from_numpy(self._coattention_input(expr, pres)).to(dev)
        tr = self._batcher(bags, train=True)

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
            x, mask = tr.batch(idx, rng)
            ti = torch.from_numpy(idx).to(dev)
            return loss.step(net(x, mask, om[ti])[0], ti)

        validate = None
        if val is not None and len(val[0]):
            vb = self._batcher(val[0], train=False)
            n_val = len(val[0])
            if vexpr is None:
                vexpr, vpres = np.zeros((n_val, expr.shape[1])), np.zeros(n_val, bool)
            vom = torch.from_numpy(self._coattention_input(vexpr, vpres)).to(dev)
            validate = loss.validator(val[1], n_val, self.loop.batch_size,
                                      lambda idx: net(*vb.batch(idx), vom[torch.from_numpy(idx).to(dev)])[0])

        info = train_module(net, len(bags), step, validate=validate, parameters=list(net.parameters()),
                            settings=self.loop,
                            desc="pathgen co-attention")
        self.module_.eval()
        return info

    # -- state ----------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        sm, sa = self.scale_.to_state("scale")
        zm, za = self.zscale_.to_state("z")
        meta.update({"outcome": self.outcome_, "groups": self.groups_.to_state(), "scaling": sm, "z": zm,
                     "setting": self.setting})
        arrays.update({**sa, **za})
        return meta, arrays

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        from histoviz.data.gene_groups import GeneGroups

        super()._load_state(meta, arrays)
        self.outcome_ = dict(meta["outcome"])
        self.groups_ = GeneGroups.from_state(meta["groups"])
        self.scale_ = GeneScaling.from_state(meta["scaling"], arrays, "scale")
        self.zscale_ = GeneScaling.from_state(meta["z"], arrays, "z")

    # -- predict --------------------------------------------------------------------------------
    def synthesise(self, bags: Sequence[np.ndarray], *, sampler: str | None = None, steps: int | None = None,
                   n_samples: int | None = None, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Synthesised gene-group vectors ``(n_bags, n_genes)`` in the expression block's space
        (the mean of ``n_samples`` samples, each drawn in the scaled space and mapped back;
        defaults: the model's settings). ``seeds`` (one per bag) replace the seeds derived from
        the bags' features."""
        import torch

        if "denoiser" not in self.module_:
            raise DataError(f"this PathGen model (setting {self.setting!r}) has no diffusion; train with setting "
                            "synthetic to synthesise gene groups")
        sampler = sampler or self.sampler
        steps = int(steps or self.sample_steps)
        ns = int(n_samples or self.n_samples)
        net, sched, dev = self.module_["denoiser"], self._schedule(), self._device()
        m = len(self.groups_.genes)
        self.module_.eval()
        b = self._batcher(bags, train=False)
        out = np.empty((len(bags), m))
        with torch.no_grad():
            for s in range(0, len(bags), _CHUNK):
                idx = np.arange(s, min(s + _CHUNK, len(bags)))
                x, mask = b.batch(idx)
                ctx = net.repeat_context(net.context(x, mask), ns)
                sd = [slide_seed(bags[i], self.loop.seed) if seeds is None else int(seeds[i]) for i in idx]
                out[idx] = self._run_sampler(net, sched, ctx, sd, ns, m, sampler, steps, dev)
        return self.scale_.inverse(out)

    def _run_sampler(self, net: Any, sched: Any, ctx: Any, seeds: Sequence[int], ns: int, m: int, sampler: str,
                     steps: int, dev: Any) -> np.ndarray:
        import torch

        from histoviz.nn.diffusion import ddim_sample, ddpm_sample

        n = len(seeds) * ns
        randn = randn_per_slide(seeds, ns, m, dev)

        def eps_fn(x: Any, t: int) -> Any:
            return net(x, torch.full((n,), t, dtype=torch.long, device=dev), ctx)

        if sampler == "ddpm":
            x0 = ddpm_sample(eps_fn, (n, m), sched, randn, clip=self.scale_.clip)
        else:
            x0 = ddim_sample(eps_fn, (n, m), sched, randn, steps=steps, clip=self.scale_.clip)
        return x0.view(len(seeds), ns, m).mean(dim=1).cpu().numpy().astype(np.float64)

    def _omics(self, bags: Sequence[np.ndarray], inputs: Mapping[str, Any] | None) -> np.ndarray | None:
        """Gene-group values at prediction time, in the block's space: zeros (slide only),
        measured (real) or synthesised."""
        if self.setting == "slide":
            return np.zeros((len(bags), len(self.groups_.genes)))
        if self.setting == "real":
            blk = (inputs or {})[self.modality]
            v, pres = self._group_values(blk)
            if not pres.all():
                raise DataError(f"{self.modality}: {int((~pres).sum())} of {len(pres)} patient(s) have no measured "
                                "expression of the group genes; setting 'real' needs it for every patient")
            return v
        return self.synthesise(bags)

    def _outcomes(self, bags: Sequence[np.ndarray], om: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """Grade probabilities / survival functions and co-attention ``(G, n_patches)`` per bag."""
        import torch

        from histoviz.nn.losses import survival_from_hazard_logits

        net, dev = self.module_["mcat"], self._device()
        b = self._batcher(bags, train=False)
        parts: dict[str, list[np.ndarray]] = {m: [] for m in self.arch_["keys"]}
        att: list[np.ndarray] = []
        with torch.no_grad():
            for s in range(0, len(bags), max(1, self.loop.batch_size)):
                idx = np.arange(s, min(s + self.loop.batch_size, len(bags)))
                x, mask = b.batch(idx)
                out, a = net(x, mask, torch.from_numpy(self._coattention_input(om[idx])).to(dev))
                for m, k in self.arch_["keys"].items():
                    lg = out[k]
                    v = torch.softmax(lg, -1) if k == "grade" else survival_from_hazard_logits(lg)[1]
                    parts[m].append(v.cpu().numpy().astype(np.float64))
                for j, i in enumerate(idx):
                    att.append(a[j, :, :len(bags[i])].cpu().numpy().astype(np.float64))
        return {m: np.concatenate(v) for m, v in parts.items()}, att

    def _predict(self, bags: Sequence[np.ndarray], inputs: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        self.module_.eval()
        om = self._omics(bags, inputs)
        out: dict[str, np.ndarray] = {}
        if "mcat" in self.module_:
            out.update(self._outcomes(bags, om)[0])
        if self.setting == "synthetic":
            out[self.modality] = om
        return out

    def _predict_patches(self, bag: np.ndarray, inputs: Mapping[str, Any] | None = None) -> PatchMaps:
        import torch

        self.module_.eval()
        om = self._omics([bag], inputs)
        slide: dict[str, np.ndarray] = {}
        patch: dict[str, np.ndarray] = {}
        extra: dict[str, Any] = {}
        n = len(bag)
        if "mcat" in self.module_:
            res, att = self._outcomes([bag], om)
            slide.update({m: v[0] for m, v in res.items()})
            patch.update(self._distributed(bag, om[0]))
            extra["coattention"] = pd.DataFrame(att[0].T, columns=list(self.groups_.names))
        if self.setting == "synthetic":
            slide[self.modality] = om[0]
            net, sched, dev = self.module_["denoiser"], self._schedule(), self._device()
            x, _ = self._batcher([bag], train=False).batch([0])
            m = len(self.groups_.genes)
            vals = np.empty((n, m))
            seeds = patch_seeds(bag, self.loop.seed)
            with torch.no_grad():
                for s in range(0, n, 256):
                    e = min(s + 256, n)
                    ctx = net.context(x[0, s:e][:, None, :], None)
                    vals[s:e] = self._run_sampler(net, sched, ctx, seeds[s:e], 1, m, "ddim", self.sample_steps, dev)
            patch[self.modality] = self.scale_.inverse(vals)
        return PatchMaps(patch=patch, slide=slide, targets=self._names(), kinds=dict(self.kinds_), extra=extra)

    def _distributed(self, bag: np.ndarray, om_slide: np.ndarray) -> dict[str, np.ndarray]:
        """The co-attention model on each patch alone, with the slide's gene groups."""
        import torch

        from histoviz.nn.losses import survival_from_hazard_logits

        net, dev = self.module_["mcat"], self._device()
        x, _ = self._batcher([bag], train=False).batch([0])
        g = torch.from_numpy(self._coattention_input(om_slide[None, :])[0]).to(dev)
        parts: dict[str, list[np.ndarray]] = {m: [] for m in self.arch_["keys"]}
        with torch.no_grad():
            for s in range(0, x.shape[1], 1024):
                xp = x[0, s:s + 1024][:, None, :]
                out, _ = net(xp, None, g[None, :].expand(xp.shape[0], -1))
                for m, k in self.arch_["keys"].items():
                    v = torch.softmax(out[k], -1) if k == "grade" else survival_from_hazard_logits(out[k])[1]
                    parts[m].append(v.cpu().numpy().astype(np.float64))
        return {m: np.concatenate(v) for m, v in parts.items()}

    def _names(self) -> dict[str, list[str]]:
        out = {m: [str(c) for c in o["classes"]] if "classes" in o else [f"S_{k}" for k in range(int(o["n_bins"]))]
               for m, o in self.outcome_.items()}
        if self.setting == "synthetic":
            out[self.modality] = list(self.groups_.genes)
        return out
