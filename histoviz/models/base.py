"""The estimator base class of slide-level models (the registry is :mod:`histoviz.models.registry`).

Every slide-level model follows one API (lifelines / scikit-learn style):

- the constructor takes hyper-parameters only and stores them unchanged;
- ``fit(bags, targets, *, val=None) -> self`` learns state; learned attributes end in ``_``;
- ``predict(bags) -> {block: array}`` in each task's prediction format
  (:mod:`histoviz.tasks`: regression values, class probabilities, survival per time bin);
- ``predict_patches(bag) -> PatchMaps`` gives per-patch predictions for one slide (the model
  applied to each patch alone) plus extra per-patch outputs (attention, cell-type weights,
  co-attention) named as in the output registry (:mod:`histoviz.outputs`);
- ``score(bags, targets) -> float`` is the mean over blocks of each task's primary metric
  (Pearson, macro AUC, c-index);
- a model that reads measured values of a patient *as inputs* at prediction time (PathGen's
  "slide + real expression" setting) names those regression blocks in ``inputs``; ``predict``
  and ``predict_patches`` then take ``inputs={block: target block}`` (the runner passes the
  held-out patients' blocks only to such models) and refuse to run without them;
- ``state() / load_state()`` move learned state in and out as JSON metadata plus named
  numpy arrays, which :mod:`histoviz.models.checkpoint` writes as safetensors (no pickle).

``bags`` is a sequence of ``(n_patches, n_features)`` float32 arrays (one per patient or
slide); ``targets`` maps a block name (``"gene"``, ``"grade"``, ``"survival"``) to a target
block (:class:`~histoviz.data.targets.TargetBlock`, :class:`~histoviz.data.outcomes.ClassBlock`,
:class:`~histoviz.data.outcomes.SurvivalBlock`). A model declares the task kinds it serves in
``tasks``; :func:`~histoviz.models.registry.register_model` is a decorator placed on the model
class (declaring its capabilities), and every module in
``histoviz/models/slide`` and ``histoviz/models/spot`` is imported when the registry is first
used, so a new model is one file.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind

__all__ = ["PatchMaps", "SlideModel", "check_bags", "predicted_block"]


@dataclass
class PatchMaps:
    """Per-patch predictions of one slide.

    Attributes
    ----------
    patch
        ``block -> (n_patches, ...)`` the model's prediction for each patch alone, in the
        block's task format (regression values, class probabilities, survival per bin).
    slide
        ``block -> (...)`` the slide-level prediction.
    targets
        ``block -> names`` of the prediction's columns (targets, classes, time bins).
    kinds
        ``block -> task kind``.
    extra
        ``output name -> per-patch values`` of outputs that belong to no task block:
        ``attention`` ``(n,)``, ``cell_type`` (composition weights) / ``coattention``
        DataFrames. Keys are registry output names (:mod:`histoviz.outputs`), which say where
        each is stored (``cell_type`` -> ``obsm["cell_type_weights"]``).
    """

    patch: dict[str, np.ndarray] = field(default_factory=dict)
    slide: dict[str, np.ndarray] = field(default_factory=dict)
    targets: dict[str, list[str]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def expression(self) -> dict[str, np.ndarray]:
        """Per-patch predictions of the regression blocks."""
        return {k: v for k, v in self.patch.items() if self.kinds.get(k, TaskKind.REGRESSION) == TaskKind.REGRESSION}

    @property
    def attention(self) -> np.ndarray | None:
        """``extra["attention"]`` or ``None``."""
        return self.extra.get("attention")

    @property
    def cell_type_weights(self) -> pd.DataFrame | None:
        """``extra["cell_type"]`` (composition weights) or ``None``."""
        return self.extra.get("cell_type")


def predicted_block(blk: Any, names: Sequence[str] | None) -> Any:
    """A regression block restricted to the targets ``names`` a model predicts, in that order
    (the block itself when it is not regression or already has exactly those targets).

    Raises
    ------
    DataError
        A name that is not a target of the block.
    """
    if getattr(blk, "kind", None) != TaskKind.REGRESSION or names is None or list(names) == list(blk.targets):
        return blk
    from histoviz.data.targets import OutputTransform, TargetBlock

    cols = pd.Index(blk.targets).get_indexer(list(names))
    if (cols < 0).any():
        raise DataError(f"{blk.modality}: the model predicts targets that are not in the block "
                        f"({[n for n, c in zip(names, cols) if c < 0][:5]})")
    o = blk.output
    if o is not None and o.mean is not None:
        o = OutputTransform(o.transform, o.target_sum, np.asarray(o.mean)[cols], np.asarray(o.std)[cols])
    return TargetBlock(blk.modality, list(names), blk.values[:, cols], blk.present,
                       None if blk.counts is None else blk.counts[:, cols], blk.library, o)


def check_bags(bags: Sequence[np.ndarray], *, embed_dim: int | None = None, where: str = "bags") -> int:
    """Validate a list of bags; return their feature dimension.

    Raises
    ------
    DataError
        No bags, an empty bag, a non-2-D bag, NaN/inf features, or mismatched dimensions
        (between bags or against ``embed_dim``, the dimension a model was trained with).
    """
    from histoviz.io.lazybags import bag_shapes

    if len(bags) == 0:
        raise DataError(f"{where}: no feature bags")
    dims = set()
    for i, shape in enumerate(bag_shapes(bags)):
        shape = shape or None
        if shape is None or len(shape) != 2:
            raise DataError(f"{where}[{i}]: a bag must be (n_patches, n_features), got {shape}")
        if shape[0] == 0:
            raise DataError(f"{where}[{i}]: empty feature bag (no patches)")
        dims.add(int(shape[1]))
    if len(dims) > 1:
        raise DataError(f"{where}: bags have different feature dimensions {sorted(dims)}")
    d = dims.pop()
    if embed_dim is not None and d != embed_dim:
        raise DataError(
            f"{where}: features have {d} dimensions but the model was trained on {embed_dim}; "
            "embed with the same encoder the model was trained with"
        )
    return d


class SlideModel:
    """Base class of slide-level molecular predictors (see the module docstring).

    Subclasses implement ``_fit``, ``_predict`` and ``_predict_patches`` and describe their
    learned state with ``state``/``load_state``.
    """

    #: registry name, set by :func:`create_model`
    name: str = ""
    #: task kinds this model serves (a capability; see :mod:`histoviz.models.registry`)
    tasks: tuple[TaskKind, ...] = (TaskKind.REGRESSION,)
    #: ``"slide"`` or ``"spot"`` (a capability; spot models derive from ``SpotModel``)
    level: str = "slide"
    #: whether it trains with the loop and owns ``self.loop`` (the torch models)
    trains_with_loop: bool = False
    #: regression modalities this model can predict (``None``: any)
    supported_modalities: tuple[str, ...] | None = None
    #: regression blocks read as inputs at prediction time (see the module docstring)
    inputs: tuple[str, ...] = ()

    # -- parameters -------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (hyper-parameters) of this instance; for a model that trains
        with the loop, every loop setting too (flat, as the constructor takes them)."""
        sig = inspect.signature(type(self).__init__)
        out = {
            k: getattr(self, k)
            for k, p in sig.parameters.items()
            if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        if self.trains_with_loop:
            out.update(self.loop.as_dict())
        return out

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({ps})"

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``load_state``) has run."""
        return hasattr(self, "embed_dim_")

    # -- API ----------------------------------------------------------------------------------
    def fit(
        self,
        bags: Sequence[np.ndarray],
        targets: Mapping[str, Any],
        *,
        val: tuple[Sequence[np.ndarray], Mapping[str, Any]] | None = None,
    ) -> SlideModel:
        """Fit on training bags and targets; ``val`` drives early stopping / model selection.

        Parameters
        ----------
        bags
            ``(n_patches, n_features)`` arrays, one per patient.
        targets
            ``block -> target block`` with one row per bag (``present`` masks patients
            without that modality or label).
        val
            ``(bags, targets)`` of validation patients from the **training** data.

        Returns
        -------
        self
        """
        from histoviz.tasks import block_kind

        d = check_bags(bags, where="training bags")
        if not targets:
            raise DataError("no target to fit")
        for mod, blk in targets.items():
            kind = block_kind(blk)
            if kind not in self.tasks:
                raise DataError(
                    f"{type(self).__name__} serves {list(self.tasks)} tasks, not {kind} ({mod!r}); "
                    "choose a model for this target in model.name"
                )
            if len(blk) != len(bags):
                raise DataError(f"{mod}: {len(blk)} target rows for {len(bags)} bags")
            if not blk.present.any():
                raise DataError(f"{mod}: no training patient has this target")
            if kind == TaskKind.REGRESSION and self.supported_modalities is not None and mod not in self.supported_modalities:
                raise DataError(
                    f"{type(self).__name__} predicts {list(self.supported_modalities)}, not {mod!r}"
                )
        if val is not None:
            check_bags(val[0], embed_dim=d, where="validation bags")
            if len(val[0]) == 0:
                val = None
        self.embed_dim_ = d
        self.modalities_ = list(targets)
        self.targets_ = {m: list(b.targets) for m, b in targets.items()}
        self.kinds_ = {m: block_kind(b) for m, b in targets.items()}
        with self._compute_context(bags):
            self._fit(bags, targets, val)
        return self

    def predict(self, bags: Sequence[np.ndarray], *, inputs: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Slide-level predictions ``{block: (n_bags, ...)}`` in each task's format.

        ``inputs``: ``{block: target block}`` with one row per bag, for a model that declares
        ``inputs`` (ignored otherwise)."""
        self._check_fitted()
        check_bags(bags, embed_dim=self.embed_dim_, where="bags")
        kw = self._input_kwargs(inputs, len(bags))
        with self._compute_context(bags):
            return self._predict(bags, **kw)

    def predict_patches(self, bag: np.ndarray, *, inputs: Mapping[str, Any] | None = None) -> PatchMaps:
        """Per-patch maps of one slide (see :class:`PatchMaps`); ``inputs`` as in :meth:`predict`
        with one row."""
        self._check_fitted()
        check_bags([bag], embed_dim=self.embed_dim_, where="bag")
        kw = self._input_kwargs(inputs, 1)
        with self._compute_context([bag]):
            pm = self._predict_patches(np.asarray(bag, dtype=np.float32), **kw)
        for m in pm.patch:
            pm.kinds.setdefault(m, self.kinds_.get(m, TaskKind.REGRESSION))
            pm.targets.setdefault(m, list(self.targets_.get(m, [])))
        return pm

    def score(self, bags: Sequence[np.ndarray], targets: Mapping[str, Any]) -> float:
        """Mean over blocks of each task's primary metric (per-target Pearson averaged over
        targets, macro AUC, Harrell's c-index) across ``bags``."""
        from histoviz.tasks import get_task

        pred = self.predict(bags, inputs={b: targets[b] for b in self.inputs if b in targets} or None)
        vals = []
        for mod, blk in targets.items():
            if mod not in pred or not blk.present.any():
                continue
            blk = predicted_block(blk, self.targets_.get(mod))
            task = get_task(blk)
            m = task.metrics(blk, pred[mod])
            if m.empty:
                continue
            v = m[(m["metric"] == task.primary) & (m["axis"] == "per-target")]["value"]
            if np.isfinite(v).any():
                vals.append(float(np.nanmean(v)))
        return float(np.mean(vals)) if vals else float("nan")

    def _input_kwargs(self, inputs: Mapping[str, Any] | None, n: int) -> dict[str, Any]:
        """``{"inputs": ...}`` for ``_predict`` of a model that declares inputs; checks them."""
        if not self.inputs:
            return {}
        missing = [b for b in self.inputs if not inputs or b not in inputs]
        if missing:
            raise DataError(
                f"{type(self).__name__} {self.input_description()}predicts from the slide plus measured "
                f"{missing} of its patient; a slide alone is not enough: pass inputs={{block: values}} or use a "
                "model trained without measured inputs"
            )
        bad = [b for b in self.inputs if len(inputs[b]) != n]
        if bad:
            raise DataError(f"inputs {bad}: {[len(inputs[b]) for b in bad]} rows for {n} bags")
        return {"inputs": {b: inputs[b] for b in self.inputs}}

    def input_description(self) -> str:
        """Words naming the setting that needs inputs (messages); ``""`` by default."""
        return ""

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Learned state as JSON-able metadata and named arrays."""
        self._check_fitted()
        meta = {"embed_dim": self.embed_dim_, "modalities": self.modalities_, "targets": self.targets_,
                "kinds": self.kinds_}
        meta_extra, arrays = self._state()
        meta.update(meta_extra)
        return meta, arrays

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> SlideModel:
        """Restore learned state written by :meth:`state`; returns self."""
        self.embed_dim_ = int(meta["embed_dim"])
        self.modalities_ = list(meta["modalities"])
        self.targets_ = {k: list(v) for k, v in meta["targets"].items()}
        self.kinds_ = {k: TaskKind.parse(v) for k, v in (meta.get("kinds") or {m: TaskKind.REGRESSION for m in self.modalities_}).items()}
        self._load_state(meta, arrays)
        return self

    # -- hooks -----------------------------------------------------------------------------------
    def _compute_context(self, bags: Sequence[np.ndarray]) -> contextlib.AbstractContextManager:
        """Context around fit/predict (torch models limit CPU threads here)."""
        return contextlib.nullcontext()

    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, Any], val: Any) -> None:
        raise NotImplementedError

    def _predict(self, bags: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _predict_patches(self, bag: np.ndarray) -> PatchMaps:
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        raise NotImplementedError

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise DataError(f"{type(self).__name__} is not fitted; call fit() first")

    #: extra information recorded by fit (best epoch, losses); JSON-able
    def fit_info(self) -> dict[str, Any]:
        """Training diagnostics (best epoch, validation loss, history) when available."""
        return dict(getattr(self, "fit_info_", {}))
