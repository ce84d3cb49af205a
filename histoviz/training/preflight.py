"""Checks before work starts: a config against the data it points at, in about a second.

:func:`preflight` reads only what is cheap (the cohort table, the ids of each omics table, the
outcome columns) and fails with one line naming the file and the fix when a modality or an
outcome column is missing, ids do not match, no patient has a target, the feature folder is
empty with nothing to embed it, folds leave too few held-out patients, or a split-conformal
calibration split is too small, and names the minimum (9 for alpha 0.1). What counts: for
**survival** with the default lower bound of survival time (``conformal.survival: interval``),
the censoring-weighted calibration patients whose survival up to the horizon is known (followed
past it: weight 1; an event before it: the censoring weight), the weight the bound is calibrated
with (the horizon and the censoring Kaplan-Meier are estimated on the whole cohort here, on each
fold's training patients in the run); with ``risk_bins``, the calibration patients **with an
event** (``censored: exclude``) or all of them; for grade those with a label; for omics those with
the modality.

:func:`check_fold_sizes` does the fold and calibration checks on the exact patients of a loaded
experiment (after slides without features are known); the preparation step of a run calls both,
:func:`preflight` before embedding or loading anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind, kind_of

if TYPE_CHECKING:
    from histoviz.training.config import ExperimentConfig

__all__ = ["Calibratable", "PreflightResult", "check_fold_sizes", "preflight"]

log = logging.getLogger(__name__)


@dataclass
class Calibratable:
    """Which patients of a block can calibrate a conformal set or interval.

    Attributes
    ----------
    kind
        Task kind of the block.
    usable
        ``(n_patients,)`` bool: labelled (classification), with an event (survival, censored
        excluded), with a known survival up to the horizon (survival bound) or with the
        modality (regression).
    what
        How the patients are counted, for messages (``"patients with an event"``).
    """

    kind: TaskKind
    usable: np.ndarray
    what: str
    weight: np.ndarray | None = None  #: per patient, when patients count with a weight (survival bound)

    def count(self, idx: np.ndarray) -> float:
        """How much the patients ``idx`` count (their number, or their summed weight)."""
        return float(self.weight[idx].sum()) if self.weight is not None else float(self.usable[idx].sum())


@dataclass
class PreflightResult:
    """What :func:`preflight` found (for a summary line)."""

    n_patients: int
    n_slides: int
    blocks: dict[str, str] = field(default_factory=dict)
    smallest_calibration: dict[str, int] = field(default_factory=dict)


def _omics_ids(path: str, fmt: str) -> Any:
    """An AnnData of the table's ids only (no values read): obs = samples, var = targets."""
    import anndata as ad

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: omics table not found")
    if fmt == "h5ad" or (fmt == "auto" and p.suffix == ".h5ad"):
        try:
            a = ad.read_h5ad(p, backed="r")
        except Exception as e:  # anndata raises several types
            raise DataError(f"{p}: not a readable .h5ad file ({type(e).__name__}: {e})") from e
        try:
            return ad.AnnData(obs=a.obs.copy(), var=pd.DataFrame(index=a.var_names.copy()))
        finally:
            a.file.close()
    sep = "," if p.name.endswith((".csv", ".csv.gz")) else "\t"
    try:
        head = pd.read_csv(p, sep=sep, nrows=0, index_col=0)
        first = pd.read_csv(p, sep=sep, usecols=[0]).iloc[:, 0].astype(str)
    except Exception as e:
        raise DataError(f"{p}: cannot read Xena-style table ({type(e).__name__}: {e})") from e
    return ad.AnnData(obs=pd.DataFrame(index=pd.Index(head.columns.astype(str))),
                      var=pd.DataFrame(index=pd.Index(first.to_numpy())))


def _presence(cfg: ExperimentConfig, cohort: pd.DataFrame, patients: list[str]) -> dict[str, np.ndarray]:
    import anndata as ad

    from histoviz.data.omics import align_to_cohort

    out: dict[str, np.ndarray] = {}
    specs = cfg.data.omics
    for m, s in specs.items():
        if s.from_modality:
            continue
        ids = _omics_ids(s.path, s.format)
        bare = ad.AnnData(X=np.zeros((ids.n_obs, 0), np.float32), obs=ids.obs)
        aligned = align_to_cohort(bare, patients, s, source=f"data.omics.{m} ({s.path})",
                                  target_ids=list(ids.var_names))
        got = set(aligned.obs_names.astype(str))
        out[m] = np.array([p in got for p in patients])
    for m, s in specs.items():
        if s.from_modality:
            out[m] = out[s.from_modality].copy()
    return out


def _calibratable(cfg: ExperimentConfig, outcomes: Mapping[str, Any], present: Mapping[str, np.ndarray],
                  blocks: Sequence[str]) -> dict[str, Calibratable]:
    cs = cfg.evaluation.conformal
    out = {}
    for b in blocks:
        if b in outcomes:
            blk = outcomes[b]
            kind = kind_of(blk)
            if kind is TaskKind.SURVIVAL and cs.survival == "interval":
                out[b] = _survival_bound_weights(cfg, b, blk)
            elif kind is TaskKind.SURVIVAL:
                if cs.censored == "exclude":
                    out[b] = Calibratable(kind, blk.present & (blk.event == 1), "patients with an event")
                else:
                    out[b] = Calibratable(kind, blk.present.copy(), "patients with a survival time")
            else:
                out[b] = Calibratable(kind, blk.present.copy(), f"patients with a {b} label")
        else:
            out[b] = Calibratable(TaskKind.REGRESSION, present[b].copy(), f"patients with {b} data")
    return out


def _survival_bound_weights(cfg: ExperimentConfig, name: str, blk: Any) -> Calibratable:
    """The weight each patient brings to the survival bound's calibration (see the module docstring)."""
    from histoviz.data.outcomes import SurvivalBins
    from histoviz.evaluation.survival import censoring_km
    from histoviz.evaluation.survival_conformal import sample_weights, survival_horizon

    n_bins = cfg.data.outcomes[name].n_bins  # the runner bins each fold the same way
    pres = np.asarray(blk.present, bool)
    w = np.zeros(len(pres))
    if pres.sum() >= 2 and (np.asarray(blk.event)[pres] == 1).sum() >= n_bins:
        t, e = np.asarray(blk.time, np.float64)[pres], np.asarray(blk.event)[pres]
        tau = survival_horizon(SurvivalBins(n_bins).fit(blk).edges_)
        w[pres] = sample_weights(t, e, tau, censoring_km(t, e))
    return Calibratable(TaskKind.SURVIVAL, w > 0, "patients whose survival up to the horizon is known "
                        "(censoring-weighted)", weight=w)


def check_fold_sizes(
    cfg: ExperimentConfig,
    n_patients: int,
    folds: Sequence[np.ndarray] | np.ndarray,
    calibratable: Mapping[str, Calibratable] | None = None,
    *,
    source: str = "",
) -> dict[str, int]:
    """Held-out patients per fold and, with a calibration split, the calibration set of every
    fold (and of the final model) per block.

    Parameters
    ----------
    cfg
        The experiment config.
    n_patients
        Patients of the experiment.
    folds
        Fold index per patient (one array, or one per repeat).
    calibratable
        ``block -> Calibratable`` (which patients count for its calibration).
    source
        Where the data come from (named in messages; default the cohort table).

    Returns
    -------
    ``block -> smallest calibration count`` over the folds.

    Raises
    ------
    DataError
        Too few held-out patients in a fold, or a calibration split below the minimum for alpha.
    """
    from histoviz.evaluation.conformal import min_calibration_size
    from histoviz.training.data import calibration_split

    src = source or cfg.data.cohort
    reps = [np.asarray(folds)] if np.asarray(folds[0] if len(folds) else []).ndim == 0 else [np.asarray(f) for f in folds]
    first = reps[0]
    n_folds = int(first.max()) + 1 if len(first) else 0
    if n_folds < 2:
        raise DataError("cross-validation needs at least 2 folds (cohort 'fold' column has one value)")
    smallest = int(np.bincount(first).min())
    if smallest < cfg.evaluation.min_n:
        raise DataError(
            f"{n_patients} patients in {n_folds} folds leave {smallest} held-out patient(s) in a fold; "
            f"metrics need >= {cfg.evaluation.min_n} (evaluation.min_n): use fewer folds or more patients")
    frac = cfg.evaluation.calibration_fraction
    out: dict[str, int] = {}
    if frac <= 0 or not calibratable:
        return out
    alpha = cfg.evaluation.conformal.alpha
    need = min_calibration_size(alpha)
    splits: list[tuple[str, np.ndarray, int]] = []
    for r, fr in enumerate(reps):
        for k in range(n_folds):
            seed = cfg.seed + k if r == 0 else cfg.seed + 7907 * r + k
            splits.append((f"fold {r * n_folds + k}", np.flatnonzero(fr != k), seed))
    if cfg.training.final_model:
        splits.append(("the final model", np.arange(n_patients), cfg.seed + 1000))
    for b, c in calibratable.items():
        worst = None
        for name, train, seed in splits:
            _, cal = calibration_split(train, frac, seed)
            n = c.count(cal)
            if worst is None or n < worst[0]:
                worst = (n, name, len(cal))
        assert worst is not None
        out[b] = int(np.floor(worst[0] + 1e-9))
        if worst[0] < need - 1e-9:
            total = c.count(np.arange(len(c.usable)))
            fmt = "{:.1f}" if c.weight is not None else "{:.0f}"
            raise DataError(
                f"{src}: the calibration split of {worst[1]} ({frac:g} of its training patients = {worst[2]}) holds "
                f"{fmt.format(worst[0])} {c.what} for {b!r}; alpha={alpha:g} needs at least {need} (the cohort has "
                f"{fmt.format(total)} "
                f"{c.what} among {n_patients} patients): raise evaluation.calibration_fraction, use fewer folds, "
                "a larger evaluation.conformal.alpha, or more patients")
    return out


def preflight(cfg: ExperimentConfig) -> PreflightResult:
    """Check ``cfg`` against its data without loading features or training (see the module docstring).

    Raises
    ------
    DataError, ConfigError
        The first mismatch found (one line naming the file or key and the fix).
    """
    from histoviz.data.cohort import read_cohort
    from histoviz.data.outcomes import load_outcomes
    from histoviz.models import model_info
    from histoviz.training.data import check_patient_ids, patient_folds

    d = cfg.data
    if d.spots is not None:
        return PreflightResult(0, 0)
    cohort = read_cohort(d.cohort)
    check_patient_ids(cohort, d)
    feat = Path(d.features)
    if d.embed is None:
        have = feat.is_dir() and any((feat / f"{s}.h5").exists() for s in cohort["slide_id"])
        if not have:
            raise DataError(f"{feat}: no feature bag for any of the {len(cohort)} slides of {d.cohort}, and no "
                            "data.embed to make them; run histoviz embed, or set data.embed (an encoder)")
    patients = [str(p) for p in dict.fromkeys(cohort["patient_id"].astype(str))]
    outcomes = load_outcomes(cohort, patients, d.outcomes, source=d.cohort) if d.outcomes else {}
    present = _presence(cfg, cohort, patients)
    targets = list(d.targets) if d.targets is not None else [*d.omics, *d.outcomes]
    tasks = model_info(cfg.model.name).tasks
    kinds = {m: TaskKind.REGRESSION for m in d.omics} | {n: TaskKind.parse(o.kind) for n, o in d.outcomes.items()}
    served = [t for t in targets if kinds[t] in tasks]
    has_any = np.zeros(len(patients), bool)
    for t in targets:
        mask = present[t] if t in present else outcomes[t].present
        if not mask.any():
            where = f"data.omics.{t} ({d.omics[t].path})" if t in d.omics else f"{d.cohort} (outcome {t!r})"
            raise DataError(f"{where}: no patient of the cohort has this target; check the ids and columns")
        has_any |= mask
    keep = np.flatnonzero(has_any)
    kept = [patients[i] for i in keep]
    sub_outcomes = {k: v.subset(keep) for k, v in outcomes.items()}
    sub_present = {k: v[keep] for k, v in present.items()}
    given = None
    if "fold" in cohort.columns and cfg.evaluation.use_cohort_folds:
        f = cohort.groupby("patient_id")["fold"].agg(lambda s: s.unique().tolist())
        bad = [p for p, v in f.items() if len(v) > 1]
        if bad:
            raise DataError(f"{d.cohort}: slides of one patient sit in different folds: {bad[:5]}")
        given = np.array([int(f[p][0]) for p in kept])
    reps = [patient_folds(len(kept), cfg.evaluation.n_folds, cfg.seed, given=given)]
    if given is None:
        reps += [patient_folds(len(kept), int(reps[0].max()) + 1, cfg.seed + 7907 * r)
                 for r in range(1, int(cfg.evaluation.repeats))]
    cal = _calibratable(cfg, sub_outcomes, sub_present, served)
    smallest = check_fold_sizes(cfg, len(kept), reps, cal)
    return PreflightResult(len(kept), int(cohort["slide_id"].isin(
        cohort[cohort["patient_id"].astype(str).isin(kept)]["slide_id"]).sum()),
        {t: kinds[t] for t in served}, smallest)


def calibratable_of(cfg: ExperimentConfig, data: Any, blocks: Sequence[str]) -> dict[str, Calibratable]:
    """:class:`Calibratable` per block of loaded :class:`~histoviz.training.data.ExperimentData`."""
    present = {m: data.omics[m].present for m in blocks if m in data.omics.modalities}
    return _calibratable(cfg, data.outcomes, present, blocks)
