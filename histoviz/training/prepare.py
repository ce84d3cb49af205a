"""Prepare a run in one pass, before any model is fitted.

The runners (:func:`histoviz.training.runner.run_experiment`,
:func:`histoviz.training.spots.run_spot_experiment`) first call :func:`prepare_run` /
:func:`prepare_spot_run`, which read everything a run needs and check it, so that bad input
fails in seconds with a message naming the file, not after an hour of training:

1. embed the slides (or spots) without a feature bag, when the config says how;
2. load the feature bags, omics tables and outcomes, aligned by patient (or the spot samples);
3. make the folds (patient-level; repeated K-fold when asked; one held-out patient per fold for
   spot runs);
4. run the checks: before anything is loaded, the config against its data
   (:func:`histoviz.training.preflight.preflight`: ids, outcome columns, fold and calibration
   sizes); on the loaded patients, :data:`CHECKS` (blocks the model serves, held-out and
   calibration patients per fold). A new check of loaded data is a function added to
   :data:`CHECKS` (slide runs) or :data:`SPOT_CHECKS` (spot runs); each takes the prepared run
   and raises :class:`~histoviz.errors.DataError` or :class:`~histoviz.errors.ConfigError`
   naming the input and what to do.

:func:`model_kwargs` builds a model's constructor arguments from the config: its
``model.params`` plus, for a model that trains with the loop, the config's ``training:`` loop
settings whole, so that every model of a run (the main model, the compared ones, the shuffled
control) trains under the same settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import ConfigError
from histoviz.nn.settings import LOOP_FIELDS

if TYPE_CHECKING:
    from histoviz.training.config import ExperimentConfig
    from histoviz.training.data import ExperimentData
    from histoviz.training.spot_data import SpotExperimentData

__all__ = [
    "CHECKS",
    "SPOT_CHECKS",
    "PreparedRun",
    "PreparedSpotRun",
    "build_model",
    "check_fold_sizes",
    "check_served_blocks",
    "loop_record",
    "model_kwargs",
    "prepare_run",
    "prepare_spot_run",
    "run_checks",
    "run_record",
    "served_blocks",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# the prepared run
# ------------------------------------------------------------------------------------------------
@dataclass
class PreparedRun:
    """Everything a slide-level run fits on, read and checked (see the module docstring).

    Attributes
    ----------
    cfg
        The validated config.
    data
        Patients, bags, omics and outcomes (:class:`~histoviz.training.data.ExperimentData`).
    folds
        Fold of each patient, one array per repeat (repeat 0 first; from the cohort's ``fold``
        column when it has one and ``evaluation.use_cohort_folds``).
    served
        The blocks the model predicts (the targets of the task kinds it serves).
    """

    cfg: ExperimentConfig
    data: ExperimentData
    folds: list[np.ndarray]
    served: list[str] = field(default_factory=list)

    @property
    def n_folds(self) -> int:
        """Folds per repeat."""
        return int(self.folds[0].max()) + 1

    @property
    def keys(self) -> list[str]:
        """Work units: fold ids ``repeat * n_folds + k``, then ``final`` (the model fitted on every
        patient) when ``training.final_model``."""
        n = self.n_folds
        keys = [str(r * n + k) for r in range(len(self.folds)) for k in range(n)]
        return keys + (["final"] if self.cfg.training.final_model else [])

    def split(self, key: str) -> tuple[np.ndarray, np.ndarray, int]:
        """``(training patients, test patients, seed)`` of work unit ``key``."""
        seed0 = self.cfg.seed
        if key == "final":
            return np.arange(len(self.data.patients)), np.array([], np.int64), seed0 + 1000
        r, k = divmod(int(key), self.n_folds)
        fr = self.folds[r]
        return np.flatnonzero(fr != k), np.flatnonzero(fr == k), (seed0 + k if r == 0 else seed0 + 7907 * r + k)


#: A pre-flight check of a slide-level run: raises DataError / ConfigError naming the input.
Check = Callable[[PreparedRun], None]


def served_blocks(cfg: ExperimentConfig, data: ExperimentData) -> list[str]:
    """The targets whose task kind the config's model serves (others are logged and skipped).

    Raises
    ------
    ConfigError
        The model serves none of the targets.
    """
    from histoviz.models import model_info

    tasks = model_info(cfg.model.name).tasks
    served = [b for b in data.targets if data.kind(b) in tasks]
    skipped = [b for b in data.targets if b not in served]
    if skipped:
        log.info("%s serves %s tasks; not predicting %s", cfg.model.name, list(tasks), skipped)
    if not served:
        raise ConfigError(f"model {cfg.model.name!r} serves {list(tasks)} tasks; none of the targets "
                          f"{[f'{b} ({data.kind(b)})' for b in data.targets]} is one")
    return served


def check_served_blocks(prep: PreparedRun) -> None:
    """The model serves at least one target (and :attr:`PreparedRun.served` says which)."""
    prep.served = served_blocks(prep.cfg, prep.data)


def check_fold_sizes(prep: PreparedRun) -> None:
    """Every fold holds out enough patients for the metrics, and every calibration split (of
    every fold and of the final model) holds enough patients that can calibrate each served
    block (:func:`histoviz.training.preflight.check_fold_sizes`, on the loaded patients)."""
    from histoviz.training.preflight import calibratable_of
    from histoviz.training.preflight import check_fold_sizes as check_sizes

    check_sizes(prep.cfg, len(prep.data.patients), prep.folds, calibratable_of(prep.cfg, prep.data, prep.served))


#: The checks of a slide-level run on its loaded data, in order (append a check here).
CHECKS: list[Check] = [check_served_blocks, check_fold_sizes]


def run_checks(prep: PreparedRun, checks: list[Check] | None = None) -> PreparedRun:
    """Run ``checks`` (default: :data:`CHECKS`) on a prepared run; return it."""
    for check in CHECKS if checks is None else checks:
        check(prep)
    return prep


def prepare_run(cfg: ExperimentConfig, *, data: ExperimentData | None = None,
                progress: bool = False) -> PreparedRun:
    """Read and check everything a slide-level run needs, in one pass, before any fit.

    Checks the config against its data without loading them
    (:func:`histoviz.training.preflight.preflight`: ids, columns, fold and calibration sizes,
    in about a second), embeds the slides without a feature bag (``data.embed``), loads the bags,
    omics and outcomes (:func:`~histoviz.training.data.load_experiment_data`; both skipped when
    ``data`` is given), makes the patient folds of every repeat and runs :data:`CHECKS` on the
    loaded patients.

    Raises
    ------
    DataError, ConfigError
        Bad input, named with what to do.
    """
    from histoviz.training.data import load_experiment_data, patient_folds

    if data is None:
        from histoviz.training.preflight import preflight

        preflight(cfg)  # the config against its data, before any embedding or loading
        data = load_experiment_data(cfg, progress=progress)
    log.info("%s", data.summary())
    ev = cfg.evaluation
    given = data.cohort_folds if ev.use_cohort_folds else None
    if ev.repeats > 1 and given is not None:
        raise ConfigError("evaluation.repeats > 1 needs random folds; set evaluation.use_cohort_folds: false "
                          "(the cohort table fixes one fold per patient)")
    folds = [patient_folds(len(data.patients), ev.n_folds, cfg.seed, given=given)]
    # repeat r re-draws the patient folds with its own seed; fold ids run on across repeats
    n_folds = int(folds[0].max()) + 1
    folds += [patient_folds(len(data.patients), n_folds, cfg.seed + 7907 * r) for r in range(1, ev.repeats)]
    return run_checks(PreparedRun(cfg, data, folds))


@dataclass
class PreparedSpotRun:
    """Everything a spot-level run fits on: the samples with their spot features and the
    held-out groups of samples (one per patient, or per sample)."""

    cfg: ExperimentConfig
    data: SpotExperimentData
    folds: list[np.ndarray]

    @property
    def keys(self) -> list[str]:
        """Work units: one per held-out group, then ``final`` when ``training.final_model``."""
        return [str(k) for k in range(len(self.folds))] + (["final"] if self.cfg.training.final_model else [])

    def split(self, key: str) -> tuple[np.ndarray, int]:
        """``(held-out sample indices, seed)`` of work unit ``key``."""
        if key == "final":
            return np.array([], np.int64), self.cfg.seed + 1000
        return self.folds[int(key)], self.cfg.seed + int(key)


#: The pre-flight checks of a spot-level run (append a check here).
SPOT_CHECKS: list[Callable[[PreparedSpotRun], None]] = []


def prepare_spot_run(cfg: ExperimentConfig, *, data: SpotExperimentData | None = None,
                     progress: bool = False) -> PreparedSpotRun:
    """The spot-level :func:`prepare_run`: read the samples (embedding missing spot features),
    make the held-out groups (:func:`~histoviz.training.spot_data.spot_folds`), run
    :data:`SPOT_CHECKS`.

    Raises
    ------
    DataError, ConfigError
        Bad input, named with what to do.
    """
    from histoviz.training.spot_data import load_spot_data, spot_folds

    if cfg.data.spots is None:
        raise ConfigError("a spot run needs a config with data.spots")
    if data is None:
        data = load_spot_data(cfg, progress=progress)
    log.info("%s", data.summary())
    prep = PreparedSpotRun(cfg, data, spot_folds(data, cfg.evaluation.spots.split))
    for check in SPOT_CHECKS:
        check(prep)
    return prep


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
