"""The torch fit loop shared by the neural slide models.

- :class:`BagBatcher` pads variable-size bags into ``(B, N, D)`` batches with a patch mask,
  standardising features with training statistics and (in training) sampling at most
  ``max_patches`` patches per bag; bags held in memory are cached as tensors (on the device up
  to a byte budget), bags read from disk (:class:`~histoviz.io.lazybags.LazyBags`) are read one
  batch at a time (only the sampled rows) with a byte-bounded cache, so memory stays flat in
  the size of the cohort;
- :func:`train_module` runs epochs of mini-batch AdamW with gradient clipping, evaluates a
  validation loss after every epoch, keeps the best state (per parameter group when asked,
  e.g. per modality for single-task models) and stops early after ``patience`` epochs
  without improvement. Validation patients come from the training data; the test fold is
  never seen here.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from histoviz.nn.settings import LoopSettings

__all__ = ["BagBatcher", "LoopSettings", "seed_everything", "train_module"]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return a numpy generator for the same seed."""
    torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


class BagBatcher:
    """Pad bags into batches.

    Parameters
    ----------
    bags
        ``(n_i, D)`` arrays.
    mean, std
        ``(D,)`` feature standardisation (training statistics).
    max_patches
        Patches sampled per bag in training batches (``0``: all).
    device
        Torch device of the batches.
    device_cache_bytes
        On an accelerator, standardised bags are kept on the device up to this many bytes
        (padding and sampling then run there); the rest stay in host memory.
    host_cache_bytes
        For bags read from disk: most bytes of whole bags kept in host memory (least recently
        used evicted); sampled reads are never cached.
    """

    def __init__(
        self,
        bags: Sequence[np.ndarray],
        mean: np.ndarray,
        std: np.ndarray,
        *,
        max_patches: int = 4096,
        device: torch.device | str = "cpu",
        device_cache_bytes: int = 8 << 30,
        host_cache_bytes: int = 512 << 20,
    ) -> None:
        from collections import OrderedDict

        from histoviz.io.lazybags import LazyBags

        self.bags = bags
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.max_patches = int(max_patches)
        self.device = torch.device(device)
        self.device_cache_bytes = int(device_cache_bytes)
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_on_device = 0
        self._stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.lazy = isinstance(bags, LazyBags)
        self.host_cache_bytes = int(host_cache_bytes)
        self._lru: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lru_bytes = 0

    def __len__(self) -> int:
        return len(self.bags)

    def _mean_std(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(dev)
        if key not in self._stats:
            self._stats[key] = (torch.from_numpy(self.mean).to(dev), torch.from_numpy(self.std).to(dev))
        return self._stats[key]

    def _standardise(self, raw: np.ndarray) -> torch.Tensor:
        mean, std = self._mean_std(torch.device("cpu"))
        return (torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)) - mean) / std

    def _lazy_bag(self, i: int) -> torch.Tensor:
        t = self._lru.get(i)
        if t is not None:
            self._lru.move_to_end(i)
            return t
        t = self._standardise(self.bags.read(i))
        nb = t.numel() * 4
        if nb <= self.host_cache_bytes:
            self._lru[i] = t
            self._lru_bytes += nb
            while self._lru_bytes > self.host_cache_bytes and self._lru:
                _, old = self._lru.popitem(last=False)
                self._lru_bytes -= old.numel() * 4
        return t

    def _bag(self, i: int) -> torch.Tensor:
        if self.lazy:
            return self._lazy_bag(i)
        t = self._cache.get(i)
        if t is None:
            raw = torch.from_numpy(np.ascontiguousarray(self.bags[i], dtype=np.float32))
            dev = torch.device("cpu")
            if self.device.type != "cpu" and self._cached_on_device + raw.nbytes <= self.device_cache_bytes:
                dev = self.device
                self._cached_on_device += raw.nbytes
            mean, std = self._mean_std(dev)
            t = (raw.to(dev) - mean) / std
            self._cache[i] = t
        return t

    def batch(
        self, idx: Sequence[int], rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x (B, N, D), mask (B, N) bool)``; ``rng`` given: random patch subsample."""
        parts = []
        for i in idx:
            if self.lazy:
                n_i = self.bags.shapes[int(i)][0]
                if self.max_patches and n_i > self.max_patches and int(i) not in self._lru:
                    if rng is not None:
                        sel = np.sort(rng.choice(n_i, self.max_patches, replace=False))
                    else:
                        sel = np.linspace(0, n_i - 1, self.max_patches).round().astype(np.int64)
                    parts.append(self._standardise(self.bags.read(int(i), sel)))
                    continue
            t = self._bag(int(i))
            if self.max_patches and len(t) > self.max_patches:
                if rng is not None:
                    sel = np.sort(rng.choice(len(t), self.max_patches, replace=False))
                else:  # deterministic, evenly spread subsample for evaluation
                    sel = np.linspace(0, len(t) - 1, self.max_patches).round().astype(np.int64)
                t = t[torch.from_numpy(sel).to(t.device)]
            parts.append(t)
        n = max(len(p) for p in parts)
        d = parts[0].shape[1]
        x = torch.empty(len(parts), n, d, device=self.device)
        mask = torch.zeros(len(parts), n, dtype=torch.bool, device=self.device)
        for k, p in enumerate(parts):
            x[k, : len(p)] = p.to(self.device, non_blocking=True)
            if len(p) < n:
                x[k, len(p) :] = 0.0
            mask[k, : len(p)] = True
        return x, mask


def _group_keys(state: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> list[str]:
    return [k for k in state if any(k.startswith(p) for p in prefixes)]


def train_module(
    module: torch.nn.Module,
    n_train: int,
    step: Callable[[np.ndarray, np.random.Generator], tuple[torch.Tensor, dict[str, float]]],
    *,
    settings: LoopSettings,
    validate: Callable[[], dict[str, float]] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    parameters: Sequence[torch.nn.Parameter] | Sequence[Mapping[str, Any]] | None = None,
    progress: bool = False,
    desc: str = "train",
) -> dict[str, Any]:
    """Mini-batch training with validation-based model selection and early stopping.

    Parameters
    ----------
    module
        The model (its state is restored to the selected epoch(s) on return).
    n_train
        Number of training bags; batches are index arrays into them.
    step
        ``step(batch_indices, rng) -> (loss, parts)`` computes the training loss of a batch.
    settings
        :class:`LoopSettings`.
    validate
        Returns validation losses: ``"total"`` plus one entry per group. ``None``: no
        selection, train all epochs and keep the last state.
    groups
        ``name -> parameter-name prefixes`` selected independently on ``validate()[name]``
        (single-task heads); other parameters follow ``"total"``.
    parameters
        Parameters to optimise (default: all that require grad), or AdamW parameter groups
        (dicts with ``params`` and e.g. their own ``lr``).
    progress
        tqdm bar over epochs.

    Returns
    -------
    dict with ``best_epoch`` (per group when grouped), ``best_val``, ``epochs_run``,
    ``seconds``, ``history`` (list of per-epoch dicts).
    """
    rng = np.random.default_rng(settings.seed)
    if parameters and isinstance(parameters[0], Mapping):  # parameter groups
        groups_ = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in parameters]
        groups_ = [g for g in groups_ if g["params"]]
        params = [p for g in groups_ for p in g["params"]]
        opt = torch.optim.AdamW(groups_, lr=settings.lr, weight_decay=settings.weight_decay)
    else:
        params = [p for p in (parameters or module.parameters()) if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    sched: Any = None
    if settings.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, settings.epochs),
                                                           eta_min=settings.lr / 100)
    elif settings.lr_schedule == "plateau" and validate is not None:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(2, settings.patience // 3),
                                                           min_lr=settings.lr / 100)
    names = ["total", *(groups or {})]
    best = {g: math.inf for g in names}
    best_epoch = {g: -1 for g in names}
    best_state: dict[str, dict[str, torch.Tensor]] = {}
    history: list[dict[str, Any]] = []
    since = 0
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.epochs, desc=desc, unit="epoch", leave=False)
    epoch = -1
    try:
        for epoch in range(settings.epochs):
            module.train()
            te = time.perf_counter()
            order = rng.permutation(n_train)
            tot, nb = 0.0, 0
            for s in range(0, n_train, settings.batch_size):
                idx = order[s : s + settings.batch_size]
                loss, _ = step(idx, rng)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if settings.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
                opt.step()
                tot += float(loss.detach())
                nb += 1
            rec: dict[str, Any] = {"epoch": epoch, "train_loss": tot / max(nb, 1),
                                   "train_seconds": time.perf_counter() - te}
            if validate is not None:
                module.eval()
                with torch.no_grad():
                    vl = validate()
                rec.update({f"val_{k}": float(v) for k, v in vl.items()})
                improved = False
                for g in names:
                    v = float(vl.get(g, math.nan))
                    if math.isfinite(v) and v < best[g] - max(1e-9, settings.min_delta * abs(best[g]) if math.isfinite(best[g]) else 0.0):
                        best[g] = v
                        best_epoch[g] = epoch
                        state = module.state_dict()
                        keys = list(state) if g == "total" else _group_keys(state, groups[g])
                        best_state[g] = {k: state[k].detach().clone() for k in keys}
                        improved = True
                since = 0 if improved else since + 1
            if sched is not None:
                if settings.lr_schedule == "plateau":
                    sched.step(float(rec.get("val_total", math.nan)))
                else:
                    sched.step()
                rec["lr"] = float(opt.param_groups[0]["lr"])
            history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in rec.items() if k != "epoch"})
            if validate is not None and since >= settings.patience and epoch + 1 >= settings.min_epochs:
                break
    finally:
        if bar is not None:
            bar.close()
    if validate is not None and best_state:
        merged = copy.copy(module.state_dict())
        merged.update(best_state.get("total", {}))
        for g in names[1:]:
            merged.update(best_state.get(g, {}))
        module.load_state_dict(merged)
    module.eval()
    info = {
        "epochs_run": epoch + 1,
        "seconds": time.perf_counter() - t0,
        "best_epoch": best_epoch["total"] if not groups else {g: best_epoch[g] for g in names},
        "best_val": best["total"] if not groups else {g: best[g] for g in names},
        "history": history,
    }
    log.debug("%s: %d epochs in %.1f s, best %s", desc, info["epochs_run"], info["seconds"], info["best_epoch"])
    return info
