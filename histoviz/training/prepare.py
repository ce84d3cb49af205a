"""Prepare a run in one pass, before any model is fitted.

The runners (:func:`histoviz.training.runner.run_experiment`,
:func:`histoviz.training.spots.run_spot_experiment`) first call :func:`prepare_run` /
:func:`prepare_spot_run`, which read everything a run needs and check it, so that bad input
fails in seconds with a message naming the file, not after an hour of training:

1. embed the slides (or spots) without a feature bag, when the config says how;
2. load the feature bags, omics tables and outcomes, aligned by patient (or the spot samples);
3. make the folds (patient-level; repeated K-fold when asked; one held-out patient per fold for
   spot runs);
4. run the pre-flight checks (:func:`preflight`): enough held-out and calibration patients per
   fold, blocks the model serves. A new check is a function added to :data:`CHECKS` (slide
   runs) or :data:`SPOT_CHECKS` (spot runs); each takes the prepared run and raises
   :class:`~histoviz.errors.DataError` or :class:`~histoviz.errors.ConfigError` naming the
   input and what to do.

:func:`model_kwargs` builds a model's constructor arguments from the config: its
``model.params`` plus, for a model that trains with the loop, the config's ``training:`` loop
settings whole, so that every model of a run (the main model, the compared ones, the shuffled
control) trains under the same settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from histoviz.errors import ConfigError
from histoviz.nn.settings import LOOP_FIELDS

if TYPE_CHECKING:
    from histoviz.training.config import ExperimentConfig

__all__ = ["build_model", "loop_record", "model_kwargs", "run_record"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# models from a config
# ------------------------------------------------------------------------------------------------
def model_kwargs(cfg: ExperimentConfig, name: str | None = None, params: Mapping[str, Any] | None = None,
                 *, where: str = "model.params") -> dict[str, Any]:
    """Constructor arguments of model ``name`` (default: the config's) under ``cfg``.

    ``params`` (default: ``model.params``) plus, when the model trains with the loop, every loop
    setting of ``cfg.training`` (its seed included).

    Raises
    ------
    ConfigError
        An unknown parameter, or a loop setting among the parameters (it belongs under
        ``training:``, so that the models of a run share it).
    """
    from histoviz.models import model_info

    info = model_info(name or cfg.model.name)
    params = dict(cfg.model.params if params is None else params)
    clash = sorted(set(params) & {*LOOP_FIELDS, "loop"})
    if clash:
        raise ConfigError(f"{where}: {clash} belong under training:, not with one model (every model of a run "
                          "trains with the same loop settings)")
    bad = sorted(set(params) - info.params)
    if bad:
        raise ConfigError(f"{where}: unknown parameter(s) {bad} for {info.name!r}; valid: {sorted(info.params)}")
    if info.caps.trains_with_loop:
        return {**cfg.training.loop_settings().as_dict(), **params}
    return params


def build_model(cfg: ExperimentConfig, name: str | None = None, params: Mapping[str, Any] | None = None,
                *, where: str = "model.params") -> Any:
    """A new, unfitted model ``name`` (default: the config's) with :func:`model_kwargs`."""
    from histoviz.models import create_model

    return create_model(name or cfg.model.name, **model_kwargs(cfg, name, params, where=where))


def loop_record(model: Any) -> dict[str, Any] | None:
    """The loop settings a model trained with (JSON-able), or ``None`` when it has none."""
    return model.loop.as_dict() if getattr(model, "trains_with_loop", False) else None


def run_record(cfg: ExperimentConfig, fold_infos: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What ``run.json`` records of a run's model, for evaluation and the pages (which ask these,
    never the model's name and never the registry):

    - ``capabilities``: what the config's model declares at registration;
    - ``setting``: ``{"param", "value"}`` of a model that declares a ``setting_param`` (PathGen's
      slide / synthetic / real), the value this run used;
    - ``loop``: ``label -> loop settings`` each model of the run trained with (from the folds).
    """
    from histoviz.models import model_info

    caps = model_info(cfg.model.name).caps
    loop: dict[str, Any] = {}
    for info in fold_infos:
        for label, rec in (info.get("loop") or {}).items():
            loop.setdefault(label, rec)
    out: dict[str, Any] = {"capabilities": caps.as_dict(), "loop": loop}
    if caps.setting_param:
        value = build_model(cfg).get_params()[caps.setting_param]
        out["setting"] = {"param": caps.setting_param, "value": value}
    return out
