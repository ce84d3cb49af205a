"""The settings of the training loop, declared once (no torch import).

:class:`LoopSettings` is the one declaration of how a model trains with
:func:`histoviz.nn.loop.train_module`: epochs, learning rate and its schedule, early stopping,
batching, patch sampling, seed, device and CPU threads. Every model that trains with the loop
owns one (``model.loop``, built by its base class from keyword arguments); the ``training:``
section of an experiment config is these fields plus the protocol settings
(:class:`~histoviz.training.config.TrainingConfig` derives from this class), and the runners hand
the config's settings whole to every model of a run, so the models of a comparison train under
the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from histoviz.errors import ConfigError

__all__ = ["LOOP_FIELDS", "LR_SCHEDULES", "LoopSettings"]

LR_SCHEDULES = ("none", "plateau", "cosine")


@dataclass(frozen=True)
class LoopSettings:
    """Optimisation settings of :func:`~histoviz.nn.loop.train_module`.

    Attributes
    ----------
    epochs
        Most epochs (early stopping may end sooner).
    lr, weight_decay
        AdamW learning rate and weight decay.
    batch_size
        Bags (or spots) per step.
    patience
        Epochs without a better validation loss before stopping.
    grad_clip
        Gradient-norm clip (0: off).
    max_patches
        Patches sampled per bag in each training step (0: all).
    lr_schedule
        ``"none"``, ``"plateau"`` (halve the learning rate after ``max(2, patience // 3)``
        epochs without a better validation loss) or ``"cosine"`` (cosine decay to ``lr / 100``
        over ``epochs``).
    seed
        Seed of initialisation, batching and patch sampling.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
    num_threads
        CPU threads during fit / predict (0: 1 for small batches, else torch's default).
    min_epochs
        Epochs before early stopping may end training.
    min_delta
        An epoch counts as better when it lowers the best validation loss by more than this
        fraction of it (so endless tiny improvements do not defeat early stopping).
    """

    #: prefix of the field names in error messages (``"training."`` in a config)
    where: ClassVar[str] = ""

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 8
    patience: int = 15
    grad_clip: float = 1.0
    max_patches: int = 4096
    lr_schedule: str = "none"
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    min_epochs: int = 5
    min_delta: float = 1e-4

    def __post_init__(self) -> None:
        for k, lo in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("max_patches", 0), ("num_threads", 0),
                      ("min_epochs", 0)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int):
                raise self._error(k, "an integer", v)
            if v < lo:
                raise self._error(k, f">= {lo}", v)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise self._error("seed", "an integer", self.seed)
        for k in ("lr", "weight_decay", "grad_clip", "min_delta"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self._error(k, "a number", v)
            if v < 0 or (k == "lr" and v == 0):
                raise self._error(k, "> 0" if k == "lr" else ">= 0", v)
        if self.lr_schedule not in LR_SCHEDULES:
            raise self._error("lr_schedule", "none, plateau or cosine", self.lr_schedule)
        if not isinstance(self.device, str) or not self.device:
            raise self._error("device", "auto, cpu, cuda or cuda:N", self.device)

    def _error(self, key: str, want: str, got: Any) -> ConfigError:
        """``training.epochs: must be >= 1, got 0`` in a config; ``epochs must be >= 1, got 0``
        for a model's keyword."""
        expected = want.startswith(("an ", "a "))
        if self.where:
            return ConfigError(f"{self.where}{key}: {'expected' if expected else 'must be'} {want}, got {got!r}")
        return ConfigError(f"{key} must be {want}, got {got!r}")

    # -- derived -----------------------------------------------------------------------------------
    def loop_settings(self) -> LoopSettings:
        """These settings as a plain :class:`LoopSettings` (drops a subclass's other fields)."""
        return LoopSettings(**self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """``field -> value`` of the loop settings (JSON- and YAML-safe)."""
        return {k: getattr(self, k) for k in LOOP_FIELDS}

    @classmethod
    def build(cls, defaults: Mapping[str, Any], given: Mapping[str, Any], *, owner: str = "") -> LoopSettings:
        """Settings from a model's own ``defaults`` overridden by ``given`` keyword arguments.

        ``given`` may hold a ``loop`` entry (a :class:`LoopSettings`, e.g. a config's training
        section, or a mapping) that replaces the defaults as a whole; the other entries then
        override single fields.

        Raises
        ------
        ConfigError
            An unknown setting or a bad value.
        """
        given = dict(given)
        base = given.pop("loop", None)
        unknown = sorted(set(given) - set(LOOP_FIELDS))
        if unknown:
            raise ConfigError(f"{owner + ': ' if owner else ''}unknown parameter(s) {unknown}")
        start = dict(defaults)
        if isinstance(base, LoopSettings):
            start = base.as_dict()
        elif isinstance(base, Mapping):
            start.update(base)
        elif base is not None:
            raise ConfigError(f"{owner + ': ' if owner else ''}loop must be LoopSettings or a mapping, "
                              f"got {type(base).__name__}")
        return LoopSettings(**{**start, **given})


#: names of the loop settings, in declaration order
LOOP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LoopSettings))
