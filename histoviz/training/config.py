"""Experiment configuration: frozen dataclasses, read from YAML, validated before training.

A config has five sections (see ``training/configs/*.yaml``)::

    name: mtl                      # run name (the "model" column of metrics.parquet)
    seed: 0
    data:
      cohort: data/synth/cohort.csv              # slide_id, patient_id, path (+ outcome columns)
      features: data/synth/features/morphology   # <slide_id>.h5 bags
      # one_patient_per_slide: true              # only for a table without patient_id
      embed: {encoder: morphology}               # embed missing bags first (optional)
      omics:
        gene: {path: data/synth/omics/gene.h5ad, normalize: total, transform: log10p1}
        protein: {path: data/synth/omics/protein.h5ad, impute: median}
      outcomes:                                  # cohort-table columns (optional)
        grade: {column: grade, classes: [1, 2, 3, 4]}
        survival: {time: time, event: event, n_bins: 4}
    model:
      name: multiomics                           # registry name (histoviz.models)
      params: {embed_dim: 128}                   # constructor hyper-parameters
    training: {epochs: 100, lr: 0.001, ...}
    evaluation: {n_folds: 5, topk: [50, 500], calibration_fraction: 0.25,
                 conformal: {alpha: 0.1, class_score: lac}, ...}

Unknown keys anywhere raise :class:`~histoviz.errors.ConfigError` naming the key; relative
paths are resolved against the current directory; :func:`apply_overrides` applies
``--set section.key=value`` (values parsed as YAML). The resolved config (absolute paths,
all defaults) is written next to every run's outputs as ``config.yaml``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

from histoviz.data.omics import OmicsSpec
from histoviz.data.outcomes import OutcomeSpec
from histoviz.errors import ConfigError
from histoviz.nn.settings import LOOP_FIELDS, LoopSettings
from histoviz.strict import build_strict, strict_keys
from histoviz.task_kinds import TaskKind

__all__ = [
    "DataConfig",
    "EmbedConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ModelConfig",
    "TrainingConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
]

def _check_type(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")


@dataclass(frozen=True)
class EmbedConfig:
    """Embed slides whose feature bag is missing (with :func:`histoviz.features.cohort.embed_cohort`)."""

    encoder: str = "efficientnet-lite0"
    pretrained: bool = True
    weights: str | None = None
    tile_size: int = 224
    mpp: float | None = 0.5
    overlap: float = 0.0
    min_tissue_fraction: float = 0.5
    mpp_override: float | None = None
    workers: int = 0
    batch_size: int = 64
    device: str = "auto"


@dataclass(frozen=True)
class DataConfig:
    """Where the cohort, features, omics and scRNA reference are.

    Attributes
    ----------
    cohort
        Cohort table (``slide_id, patient_id, path[, fold]``).
    features
        Folder of ``<slide_id>.h5`` feature bags.
    embed
        When set, slides without a bag are embedded into ``features`` first.
    omics
        ``modality -> OmicsSpec`` (or a path).
    outcomes
        ``name -> OutcomeSpec``: grade / survival columns of the cohort table.
    targets
        Blocks to predict (default: every omics modality and outcome); other modalities may
        feed ``from_modality``.
    pathway_from_predictions
        ``{network: CSV, from: gene, compare_to: pathway, method: ulm}``: also score pathway
        activity computed from *predicted* expression against the ``compare_to`` modality.
    drop_patients_without_features
        Drop patients whose slides have no bag instead of failing (default: fail).
    one_patient_per_slide
        The cohort table has no ``patient_id`` column and every slide is a different patient
        (a statement the user makes: without it such a table is refused, since folds must keep
        each patient's slides together).
    lazy_bags
        Read feature bags from disk one batch at a time instead of holding them in memory
        (``None``: automatically when the cohort's features exceed 4 GB).
    spots
        A spot-level experiment (:class:`~histoviz.data.spatial.SpotsSpec`: spatial samples,
        spot features, patch size, normalisation, gene sets); then no cohort, features, omics
        or outcomes are given and ``histoviz train`` runs :mod:`histoviz.training.spots`.
    """

    cohort: str = ""
    features: str = ""
    embed: EmbedConfig | None = None
    omics: dict[str, OmicsSpec] = field(default_factory=dict)
    outcomes: dict[str, OutcomeSpec] = field(default_factory=dict)
    targets: tuple[str, ...] | None = None
    pathway_from_predictions: dict[str, Any] | None = None
    drop_patients_without_features: bool = False
    one_patient_per_slide: bool = False
    lazy_bags: bool | None = None
    spots: Any = None


@dataclass(frozen=True)
class ModelConfig:
    """Registry name and constructor hyper-parameters."""

    name: str = "multiomics"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingConfig(LoopSettings):
    """Optimisation and protocol settings: the loop settings plus how a fold is split.

    The loop settings (:class:`~histoviz.nn.settings.LoopSettings`: ``epochs, lr,
    weight_decay, batch_size, patience, grad_clip, max_patches, lr_schedule, seed, device,
    num_threads, min_epochs, min_delta``) are declared there once; a run hands them whole to
    every model that trains with the loop (set them here, not in model.params). ``seed``
    defaults to the experiment's top-level ``seed``.

    Attributes
    ----------
    val_fraction
        Share of each training fold held out for early stopping / model selection (by
        patient). 0: no validation, train the full number of epochs.
    shuffle_labels
        Negative control: permute the training patients' targets (labels keep their
        distribution, lose their link to the slides).
    final_model
        After cross-validation, also fit on all patients (used by ``histoviz predict``).
    """

    where: ClassVar[str] = "training."

    val_fraction: float = 0.2
    shuffle_labels: bool = False
    final_model: bool = True


@dataclass(frozen=True)
class EvaluationConfig:
    """Cross-validation and reporting.

    Attributes
    ----------
    n_folds
        Patient-level folds (ignored when the cohort has a ``fold`` column and
        ``use_cohort_folds``).
    topk
        Sizes of top-k target subsets (selected on training data by ``topk_criteria``).
    topk_criteria
        ``variance`` and/or ``mean`` (of the training targets).
    min_n
        Minimum held-out patients for a defined correlation.
    calibration_fraction
        Share of each fold's training patients held out (by patient) as the split-conformal
        calibration set; 0: no conformal sets or intervals.
    conformal
        :class:`~histoviz.tasks.ConformalSettings` (``alpha``, ``class_score``,
        ``empty_sets``, ``survival``, ``censored``, ``group``, ``mondrian``).
    risk_groups
        Groups of predicted risk for Kaplan-Meier / log-rank (2: median, 3: tertiles).
    repeats
        Repeated K-fold cross-validation: each repeat re-draws the patient folds (fold ids
        ``repeat * n_folds + k``; a ``repeat`` column in every table). More held-out estimates
        for paired comparisons of models.
    spots
        Spot experiments: :class:`~histoviz.evaluation.spots.SpotEvalSpec` (gene-set sizes,
        retrieval k, comparison models, controls, encoder comparison, split).
    """

    n_folds: int = 5
    use_cohort_folds: bool = True
    topk: tuple[int, ...] = (50, 500)
    topk_criteria: tuple[str, ...] = ("variance", "mean")
    min_n: int = 3
    calibration_fraction: float = 0.0
    conformal: Any = None
    risk_groups: int = 2
    repeats: int = 1
    spots: Any = None


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment (one ``histoviz train`` run)."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


def _resolve(p: str | None, base: Path) -> str | None:
    if p is None or p == "" or str(p).startswith("scanpy:"):
        return p
    q = Path(os.path.expanduser(str(p)))
    return str(q if q.is_absolute() else (base / q).resolve())


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce_numbers(x: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; turn number-like strings into floats."""
    if isinstance(x, Mapping):
        return {k: _coerce_numbers(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_coerce_numbers(v) for v in x]
    if isinstance(x, str) and _NUMBER.match(x.strip()) and ("e" in x.lower()):
        return float(x)
    return x


def _build(raw: Mapping[str, Any], base: Path) -> ExperimentConfig:
    raw = _coerce_numbers(raw)
    top = strict_keys(ExperimentConfig, raw, "config")
    d = strict_keys(DataConfig, top.get("data"), "data")
    omics_raw = d.get("omics") or {}
    if not isinstance(omics_raw, Mapping):
        raise ConfigError("data.omics: expected a mapping modality -> spec")
    omics = {}
    for mod, spec in omics_raw.items():
        s = OmicsSpec.from_dict(spec, where=f"data.omics.{mod}")
        s = OmicsSpec(**{**asdict(s), "path": _resolve(s.path, base) or "",
                         "network": _resolve(s.network, base)})
        omics[str(mod)] = s
    embed = None
    if d.get("embed") is not None:
        embed = build_strict(EmbedConfig, d["embed"], "data.embed")
        if embed.weights:
            embed = EmbedConfig(**{**asdict(embed), "weights": _resolve(embed.weights, base)})
    outcomes_raw = d.get("outcomes") or {}
    if not isinstance(outcomes_raw, Mapping):
        raise ConfigError("data.outcomes: expected a mapping name -> {column / time, event, ...}")
    outcomes = {str(k): OutcomeSpec.from_dict(str(k), v, where="data.outcomes") for k, v in outcomes_raw.items()}
    pfp = d.get("pathway_from_predictions")
    if pfp is not None:
        if not isinstance(pfp, Mapping) or set(pfp) - {"network", "from", "compare_to", "method", "min_targets"}:
            raise ConfigError(
                "data.pathway_from_predictions: expected keys network, from, compare_to[, method, min_targets]"
            )
        pfp = {**pfp, "network": _resolve(pfp.get("network"), base)}
    targets = d.get("targets")
    spots = None
    if d.get("spots") is not None:
        from histoviz.data.spatial import SpotsSpec

        spots = SpotsSpec.from_dict(d["spots"], where="data.spots", base=base)
    data = DataConfig(
        cohort=_resolve(d.get("cohort", ""), base) or "",
        features=_resolve(d.get("features", ""), base) or "",
        embed=embed,
        omics=omics,
        outcomes=outcomes,
        targets=tuple(targets) if targets is not None else None,
        pathway_from_predictions=pfp,
        drop_patients_without_features=d.get("drop_patients_without_features", False),
        one_patient_per_slide=d.get("one_patient_per_slide", False),
        lazy_bags=d.get("lazy_bags"),
        spots=spots,
    )
    m = strict_keys(ModelConfig, top.get("model"), "model")
    if "name" in m:
        _check_type("model.name", m["name"], str, "a model name")
    params = m.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError("model.params: expected a mapping of hyper-parameters")
    model = ModelConfig(name=m.get("name", "multiomics"), params=dict(params))
    t = strict_keys(TrainingConfig, top.get("training"), "training")
    t.setdefault("seed", top.get("seed", 0))
    training = TrainingConfig(**t)
    e = strict_keys(EvaluationConfig, top.get("evaluation"), "evaluation")
    for k in ("topk", "topk_criteria"):
        if k in e:
            e[k] = tuple(e[k]) if isinstance(e[k], (list, tuple)) else (e[k],)
    from histoviz.tasks import ConformalSettings

    conf = e.get("conformal")
    if conf is None or isinstance(conf, ConformalSettings):
        e["conformal"] = conf or ConformalSettings()
    else:
        e["conformal"] = build_strict(ConformalSettings, conf, "evaluation.conformal")
    if e.get("spots") is not None or spots is not None:
        from histoviz.evaluation.spots import SpotEvalSpec

        e["spots"] = SpotEvalSpec.from_dict(e.get("spots"), where="evaluation.spots")
    evaluation = EvaluationConfig(**e)
    seed = top.get("seed", 0)
    _check_type("seed", seed, int, "an integer")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed: must be an integer in [0, 2**32), got {seed}")
    cfg = ExperimentConfig(
        name=str(top.get("name", "run")), seed=int(seed), data=data, model=model,
        training=training, evaluation=evaluation,
    )
    validate_config(cfg)
    return cfg


def validate_config(cfg: ExperimentConfig) -> None:
    """Check values and cross-references; raise :class:`ConfigError` naming the key."""
    from histoviz.models import model_info, model_param_names

    d = cfg.data
    if d.spots is not None:
        given = [k for k in ("cohort", "features", "omics", "outcomes", "embed") if getattr(d, k)]
        if given:
            raise ConfigError(f"data: a spot experiment (data.spots) takes no {given}; spot samples and their "
                              "features are set under data.spots")
    elif not d.cohort:
        raise ConfigError("data.cohort: required (the cohort table)")
    elif not d.features:
        raise ConfigError("data.features: required (folder of <slide_id>.h5 feature bags)")
    elif not d.omics and not d.outcomes:
        raise ConfigError("data: give at least one omics modality (data.omics) or outcome (data.outcomes)")
    clash = sorted(set(d.omics) & set(d.outcomes))
    if clash:
        raise ConfigError(f"data: {clash} are both an omics modality and an outcome; rename one")
    if d.targets is not None:
        bad = [t for t in d.targets if t not in d.omics and t not in d.outcomes]
        if bad:
            raise ConfigError(f"data.targets: {bad} not in data.omics ({sorted(d.omics)}) or data.outcomes "
                              f"({sorted(d.outcomes)})")
    for mod, s in d.omics.items():
        if s.from_modality and s.from_modality not in d.omics:
            raise ConfigError(f"data.omics.{mod}.from_modality: {s.from_modality!r} is not in data.omics")
    if d.pathway_from_predictions:
        p = d.pathway_from_predictions
        for k in ("network", "from", "compare_to"):
            if not p.get(k):
                raise ConfigError(f"data.pathway_from_predictions.{k}: required")
        for k in ("from", "compare_to"):
            if p[k] not in d.omics:
                raise ConfigError(f"data.pathway_from_predictions.{k}: {p[k]!r} is not in data.omics")
    info = model_info(cfg.model.name)
    wanted = {m: TaskKind.REGRESSION for m in d.omics} | {n: o.kind for n, o in d.outcomes.items()}
    if d.spots is not None:
        wanted = {"gene": TaskKind.REGRESSION}
    used = list(d.targets) if d.targets is not None else list(wanted)
    unserved = sorted({wanted[m] for m in used} - set(info.tasks))
    if unserved and not set(wanted[m] for m in used) & set(info.tasks):
        raise ConfigError(f"model.name: {cfg.model.name!r} serves {list(info.tasks)} tasks but the targets are "
                          f"{[f'{m} ({wanted[m]})' for m in used]}; pick a model with `histoviz models`")
    allowed = model_param_names(cfg.model.name)
    bad = sorted(set(cfg.model.params) - allowed)
    if bad:
        raise ConfigError(f"model.params: unknown parameter(s) {bad} for {cfg.model.name!r}; valid: {sorted(allowed)}")
    clash = sorted(set(cfg.model.params) & {*LOOP_FIELDS, "loop"})
    if clash:
        raise ConfigError(f"model.params: {clash} belong under training:, not model.params")
    t = cfg.training
    for where, v in (("training.shuffle_labels", t.shuffle_labels), ("training.final_model", t.final_model),
                     ("evaluation.use_cohort_folds", cfg.evaluation.use_cohort_folds),
                     ("data.drop_patients_without_features", d.drop_patients_without_features),
                     ("data.one_patient_per_slide", d.one_patient_per_slide)):
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: expected true or false, got {v!r}")
    if d.lazy_bags is not None and not isinstance(d.lazy_bags, bool):
        raise ConfigError(f"data.lazy_bags: expected true, false or null (automatic), got {d.lazy_bags!r}")
    _check_type("training.val_fraction", t.val_fraction, (int, float), "a number")
    if not 0.0 <= t.val_fraction < 0.9:
        raise ConfigError(f"training.val_fraction: must be in [0, 0.9), got {t.val_fraction}")
    e = cfg.evaluation
    _check_type("evaluation.n_folds", e.n_folds, int, "an integer")
    if e.n_folds < 2:
        raise ConfigError(f"evaluation.n_folds: must be >= 2, got {e.n_folds}")
    _check_type("evaluation.calibration_fraction", e.calibration_fraction, (int, float), "a number")
    if not 0.0 <= e.calibration_fraction < 0.9:
        raise ConfigError(f"evaluation.calibration_fraction: must be in [0, 0.9), got {e.calibration_fraction}")
    if t.val_fraction + e.calibration_fraction >= 0.9:
        raise ConfigError("training.val_fraction + evaluation.calibration_fraction must be < 0.9 "
                          "(something must be left to fit on)")
    c = e.conformal
    _check_type("evaluation.conformal.alpha", c.alpha, (int, float), "a number")
    if not 0.0 < c.alpha < 1.0:
        raise ConfigError(f"evaluation.conformal.alpha: must be in (0, 1), got {c.alpha}")
    for k, allowed in (("class_score", ("lac", "aps")), ("empty_sets", ("keep", "all", "argmax")),
                       ("censored", ("exclude", "observed_bin")), ("survival", ("interval", "risk_bins"))):
        if getattr(c, k) not in allowed:
            raise ConfigError(f"evaluation.conformal.{k}: must be one of {allowed}, got {getattr(c, k)!r}")
    _check_type("evaluation.conformal.mondrian", c.mondrian, bool, "true or false")
    _check_type("evaluation.repeats", e.repeats, int, "an integer")
    if e.repeats < 1:
        raise ConfigError(f"evaluation.repeats: must be >= 1, got {e.repeats}")
    if e.risk_groups not in (2, 3):
        raise ConfigError(f"evaluation.risk_groups: must be 2 (median) or 3 (tertiles), got {e.risk_groups!r}")
    if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in e.topk):
        raise ConfigError(f"evaluation.topk: positive integers expected, got {list(e.topk)}")
    bad = [c for c in e.topk_criteria if c not in ("variance", "mean")]
    if bad:
        raise ConfigError(f"evaluation.topk_criteria: unknown {bad}; use variance and/or mean")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed with ``yaml.safe_load``).

    Raises
    ------
    ConfigError
        An override without ``=``.
    """
    import copy

    import yaml

    out = copy.deepcopy(raw)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"--set {ov!r}: expected key.path=value")
        key, val = ov.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {ov!r}: empty key")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {ov!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = yaml.safe_load(val)
    return out


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """A YAML file whose top level is a mapping.

    Raises
    ------
    ConfigError
        Missing file, invalid YAML or another top level (the message names the file).
    """
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: {what} file not found")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML ({where}{what}); fix the file (e.g. a bracket or quote left "
                          "open, a tab used for indentation)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return raw


def load_config(
    path_or_dict: str | os.PathLike | Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike | None = None,
) -> ExperimentConfig:
    """Read, override and validate an experiment config.

    Parameters
    ----------
    path_or_dict
        YAML file or an already-parsed mapping.
    overrides
        ``key.path=value`` strings (``training.epochs=5``).
    base_dir
        Folder relative paths are resolved against (default: the current directory).

    Raises
    ------
    ConfigError
        Unreadable YAML, unknown keys, bad values, unknown model or parameters.
    """
    if isinstance(path_or_dict, Mapping):
        raw = dict(path_or_dict)
        src = "<dict>"
    else:
        src = str(path_or_dict)
        raw = read_yaml_mapping(path_or_dict, "config")
    raw = apply_overrides(raw, overrides)
    try:
        return _build(raw, Path(base_dir) if base_dir is not None else Path.cwd())
    except ConfigError as e:
        raise ConfigError(f"{src}: {e}") from None
    except TypeError as e:  # wrong value types reaching a dataclass
        raise ConfigError(f"{src}: {e}") from None


def config_to_dict(cfg: Any) -> Any:
    """Plain-Python (YAML-safe) form of a config dataclass."""
    if is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    return cfg
