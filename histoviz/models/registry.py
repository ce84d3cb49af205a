"""The model registry: every model with the capabilities it declares at registration.

A model file places ``@register_model(name, ...)`` on its class (stackable for variants that
differ by constructor defaults). What a model can do is declared there once, as
:class:`Capabilities`, and the runners, evaluation, the pages and the tests ask for capabilities,
never for names::

    @register_model("abmil-grade", tasks=(TaskKind.CLASSIFICATION,), outputs=("attention",))
    class OutcomeABMIL(TorchSlideModel): ...

A keyword of :func:`register_model` that names a constructor parameter is a default of that
variant (``tasks`` of the outcome models is both); a keyword that names a capability sets it;
what the base classes know (``level`` of spot models, ``trains_with_loop`` of the torch models)
and a class's ``tasks`` are read from the class.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from histoviz.errors import ConfigError
from histoviz.nn.settings import LOOP_FIELDS
from histoviz.task_kinds import TaskKind

__all__ = [
    "Capabilities",
    "ModelInfo",
    "control_model",
    "create_model",
    "list_models",
    "model_info",
    "model_param_names",
    "register_model",
]


@dataclass(frozen=True)
class Capabilities:
    """What a registered model can do (declared at registration; see the module docstring).

    Attributes
    ----------
    level
        ``"slide"`` (one prediction per patient's bag) or ``"spot"`` (one per spot; the spot
        runner fits it).
    tasks
        Task kinds it serves (:class:`~histoviz.task_kinds.TaskKind`).
    trains_with_loop
        It trains with :func:`histoviz.nn.loop.train_module` and takes every loop setting
        (:class:`~histoviz.nn.settings.LoopSettings`) as keyword arguments; a run hands it the
        config's ``training:`` settings whole.
    needs_reference
        It needs a single-cell reference (its ``reference`` parameter).
    outputs
        Per-patch outputs besides the task blocks (names in :mod:`histoviz.outputs`, e.g.
        ``attention``, ``cell_type``, ``coattention``).
    reads_inputs
        It may read measured blocks of a patient at prediction time (``model.inputs`` says
        which, per instance).
    setting_param
        Constructor parameter whose values are settings compared side by side across runs of
        this model (PathGen's ``setting``: slide / synthetic / real).
    regression_blocks
        Most regression blocks it predicts at once (``None``: any).
    additive
        Its slide prediction is the mean of its per-patch predictions (a linear map of
        mean-pooled features).
    control
        The control it provides (``"mean"``: the training mean everywhere), or ``None`` for a
        model to choose.
    """

    level: str = "slide"
    tasks: tuple[TaskKind, ...] = (TaskKind.REGRESSION,)
    trains_with_loop: bool = False
    needs_reference: bool = False
    outputs: tuple[str, ...] = ()
    reads_inputs: bool = False
    setting_param: str | None = None
    regression_blocks: int | None = None
    additive: bool = False
    control: str | None = None

    def __post_init__(self) -> None:
        if self.level not in ("slide", "spot"):
            raise ValueError(f"level must be 'slide' or 'spot', got {self.level!r}")
        object.__setattr__(self, "tasks", tuple(TaskKind.parse(t) for t in self.tasks))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (recorded in a run's ``run.json``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tasks"] = [t.value for t in self.tasks]
        out["outputs"] = list(self.outputs)
        return out


_CAPS = tuple(f.name for f in fields(Capabilities))


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its class, fixed arguments, capabilities and a one-line description."""

    name: str
    cls: type
    defaults: Mapping[str, Any]
    description: str
    caps: Capabilities = field(default_factory=Capabilities)

    @property
    def tasks(self) -> tuple[TaskKind, ...]:
        """Task kinds the model serves."""
        return self.caps.tasks

    @property
    def params(self) -> set[str]:
        """Hyper-parameters ``create_model(name, ...)`` accepts."""
        return _init_params(self.cls)


_MODELS: dict[str, ModelInfo] = {}


def _capabilities(c: type, defaults: dict[str, Any], declared: dict[str, Any]) -> Capabilities:
    kw: dict[str, Any] = {}
    for k in _CAPS:
        if k in declared:
            kw[k] = declared[k]
        elif k in defaults:  # a constructor default that is also a capability (tasks)
            kw[k] = defaults[k]
        elif hasattr(c, k) and not callable(getattr(c, k)) and not isinstance(getattr(c, k), property):
            kw[k] = getattr(c, k)
    return Capabilities(**kw)


def register_model(name: str, cls: type | None = None, *, description: str = "", **kw: Any) -> Any:
    """Register a model class under ``name``; variants differ by defaults, never by copied code.

    Used as a class decorator (stackable for variants)::

        @register_model("abmil-grade", tasks=(TaskKind.CLASSIFICATION,), outputs=("attention",))
        @register_model("abmil-survival", tasks=(TaskKind.SURVIVAL,), outputs=("attention",))
        class OutcomeABMIL(TorchSlideModel): ...

    or called directly, ``register_model("ridge", RidgeBaseline, description=...)``. Keywords
    that name constructor parameters are this variant's defaults; keywords that name a field of
    :class:`Capabilities` declare it.

    Raises
    ------
    KeyError
        ``name`` is taken by another class.
    TypeError
        A keyword that is neither a parameter of the class nor a capability.
    """

    def deco(c: type) -> type:
        params = _init_params(c)
        defaults = {k: v for k, v in kw.items() if k in params}
        declared = {k: v for k, v in kw.items() if k not in params and k in _CAPS}
        bad = set(kw) - set(defaults) - set(declared)
        if bad:
            raise TypeError(f"{c.__name__} has no parameter(s) {sorted(bad)} and they are no capabilities "
                            f"({', '.join(_CAPS)})")
        caps = _capabilities(c, defaults, declared)
        old = _MODELS.get(name)
        if old is not None:
            if old.cls.__qualname__ == c.__qualname__ and old.cls.__module__ == c.__module__:
                _MODELS[name] = ModelInfo(name, c, defaults, description or old.description, caps)
                return c  # the same class re-imported (e.g. reloaded module)
            raise KeyError(f"model {name!r} already registered (by {old.cls.__module__}.{old.cls.__qualname__})")
        _MODELS[name] = ModelInfo(name, c, defaults, description or (c.__doc__ or "").strip().split("\n")[0], caps)
        return c

    if cls is not None:
        deco(cls)
        return _MODELS[name]
    return deco


def _ensure_builtin() -> None:
    import histoviz.models  # noqa: F401  (imports every model file, which registers it)


def list_models(task: str | None = None, *, level: str | None = None, controls: bool = False) -> list[ModelInfo]:
    """Registered models sorted by name.

    Parameters
    ----------
    task
        Only those serving this task kind.
    level
        Only those of this level (``"slide"`` or ``"spot"``).
    controls
        Also list the controls (models that provide a reference predictor, not a model to
        choose, e.g. ``spot-mean``).
    """
    _ensure_builtin()
    out = [_MODELS[k] for k in sorted(_MODELS)]
    return [m for m in out if (task is None or task in m.tasks) and (level is None or m.caps.level == level)
            and (controls or m.caps.control is None)]


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name``; :class:`ConfigError` listing the choices when unknown."""
    _ensure_builtin()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def control_model(control: str, *, level: str) -> ModelInfo:
    """The registered model that provides ``control`` (``"mean"``) at ``level``.

    Raises
    ------
    ConfigError
        No model provides it.
    """
    _ensure_builtin()
    for m in (_MODELS[k] for k in sorted(_MODELS)):
        if m.caps.control == control and m.caps.level == level:
            return m
    raise ConfigError(f"no registered {level}-level model provides the {control!r} control")


def _init_params(cls: type) -> set[str]:
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {k for k, p in sig.parameters.items() if k != "self" and p.kind in kinds}
    if getattr(cls, "trains_with_loop", False):
        names |= {*LOOP_FIELDS, "loop"}
    return names


def model_param_names(name: str) -> set[str]:
    """Hyper-parameters ``create_model(name, ...)`` accepts."""
    return _init_params(model_info(name).cls)


def create_model(name: str, **params: Any) -> Any:
    """Build a registered model (a :class:`~histoviz.models.base.SlideModel`) with
    hyper-parameters ``params`` (over its defaults).

    Raises
    ------
    ConfigError
        Unknown model name or unknown parameter (the message lists the valid ones).
    """
    info = model_info(name)
    allowed = _init_params(info.cls)
    bad = sorted(set(params) - allowed)
    if bad:
        raise ConfigError(f"model {name!r}: unknown parameter(s) {bad}; valid: {sorted(allowed)}")
    try:
        m = info.cls(**{**info.defaults, **params})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model {name!r}: {e}") from e
    m.name = name
    return m
