"""Common machinery of the torch slide models: settings, feature scaling, module state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from histoviz.models.base import SlideModel

__all__ = ["TorchSlideModel", "auto_threads", "feature_stats", "resolve_torch_device", "torch_threads"]


def resolve_torch_device(device: str | None) -> Any:
    """``auto`` -> CUDA when available, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def feature_stats(bags: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over all patches of ``bags`` (float64 running sums)."""
    d = int(np.asarray(bags[0]).shape[1])
    s = np.zeros(d)
    ss = np.zeros(d)
    n = 0
    for b in bags:
        b = np.asarray(b, dtype=np.float32)
        # per-bag sums in float32 (a bag is small), accumulated in float64
        s += b.sum(axis=0, dtype=np.float64)
        ss += np.einsum("ij,ij->j", b, b).astype(np.float64)
        n += len(b)
    mean = s / max(n, 1)
    var = np.maximum(ss / max(n, 1) - mean * mean, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 1e-6 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily run torch CPU ops on ``n`` threads (restored on exit)."""
    import torch

    old = torch.get_num_threads()
    if n > 0 and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def auto_threads(bags: Sequence[np.ndarray], batch_size: int, max_patches: int) -> int:
    """CPU threads worth using: 1 for small batches (thread start-up costs more than it saves)."""
    import torch

    from histoviz.io.lazybags import bag_shapes

    shapes = bag_shapes(bags)
    sizes = sorted(s[0] for s in shapes)
    med = sizes[len(sizes) // 2] if sizes else 0
    if max_patches:
        med = min(med, max_patches)
    work = med * max(1, batch_size) * int(shapes[0][1]) if sizes else 0
    return 1 if work < 2_000_000 else torch.get_num_threads()


class TorchSlideModel(SlideModel):
    """Base of torch models: owns the loop settings, ``module_`` and the feature standardisation.

    The constructor of a subclass takes its own hyper-parameters and passes every other
    keyword to this one (``super().__init__(**loop)``), which builds ``self.loop``
    (:class:`~histoviz.nn.settings.LoopSettings`) from the subclass's ``loop_defaults`` (a
    paper's settings) overridden by the keywords given; ``loop=`` takes a whole
    ``LoopSettings`` (a run passes its config's). Subclasses set ``self.module_`` in ``_fit`` /
    ``_load_state`` (through ``_build_module(meta)``) and describe the architecture in
    ``_arch_meta()``.
    """

    trains_with_loop = True
    #: this model's own defaults of loop settings (over :class:`LoopSettings`'); a run's
    #: config replaces them all
    loop_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **loop: Any) -> None:
        from histoviz.nn.settings import LoopSettings

        self.loop = LoopSettings.build(self.loop_defaults, loop, owner=type(self).__name__)

    def _compute_context(self, bags: Sequence[np.ndarray]) -> contextlib.AbstractContextManager:
        if self._device().type != "cpu":
            return contextlib.nullcontext()
        n = self.loop.num_threads
        if n <= 0:
            n = auto_threads(bags, self.loop.batch_size, self.loop.max_patches)
        return torch_threads(n)

    def _device(self) -> Any:
        return resolve_torch_device(self.loop.device)

    def _batcher(self, bags: Sequence[np.ndarray], *, train: bool) -> Any:
        from histoviz.nn.loop import BagBatcher

        return BagBatcher(
            bags,
            self.feature_mean_,
            self.feature_std_,
            max_patches=self.loop.max_patches if train else 0,
            device=self._device(),
        )

    # -- state -------------------------------------------------------------------------------
    def _arch_meta(self) -> dict[str, Any]:
        return dict(self.arch_)

    def _build_module(self, meta: Mapping[str, Any]) -> Any:
        self.arch_ = dict(meta)
        return self._make_net(self.arch_)

    @staticmethod
    def _make_net(arch: Mapping[str, Any]) -> Any:
        """The ``torch.nn.Module`` of an architecture description (subclasses set this)."""
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {f"module.{k}": v.detach().cpu().numpy() for k, v in self.module_.state_dict().items()}
        arrays["feature_mean"] = self.feature_mean_
        arrays["feature_std"] = self.feature_std_
        return {"arch": self._arch_meta(), "fit_info": _jsonable(self.fit_info())}, arrays

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        import torch

        self.feature_mean_ = np.asarray(arrays["feature_mean"], np.float32)
        self.feature_std_ = np.asarray(arrays["feature_std"], np.float32)
        self.module_ = self._build_module(meta["arch"])
        sd = {k[len("module."):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("module.")}
        self.module_.load_state_dict(sd)
        self.module_.to(self._device()).eval()
        self.fit_info_ = dict(meta.get("fit_info", {}))


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, (np.floating, float)):
        v = float(d)
        return v if np.isfinite(v) else None
    if isinstance(d, (np.integer,)):
        return int(d)
    return d
