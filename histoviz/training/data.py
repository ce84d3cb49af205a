"""Assemble an experiment's data: cohort, feature bags per patient, aligned omics, folds.

Everything is checked here, before any training starts: missing or empty feature bags,
feature dimensions that differ between slides, encoders that differ between slides, omics
tables that do not match the cohort, modalities without a single patient in common.

Patients are the unit of training and evaluation: a patient's bag is the concatenation of
the bags of all its slides, folds are made over patients, and a patient without any target
modality is dropped (logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind

if TYPE_CHECKING:
    from histoviz.data.omics import OmicsData
    from histoviz.training.config import EmbedConfig, ExperimentConfig

__all__ = ["ExperimentData", "calibration_split", "check_patient_ids", "embed_missing", "embed_tiling", "inner_split",
           "load_experiment_data",
           "load_feature_bags", "patient_folds"]

log = logging.getLogger(__name__)

#: Cohorts whose features exceed this (float32 bytes) are read lazily when ``data.lazy_bags`` is unset.
LAZY_AUTO_BYTES = 4 << 30


@dataclass
class ExperimentData:
    """Patients with their bags and omics.

    Attributes
    ----------
    patients
        Patient ids (order of every array here).
    bags
        One ``(n_patches, D)`` float32 array per patient (all its slides).
    slide_ids
        Slides of each patient.
    omics
        :class:`~histoviz.data.omics.OmicsData` aligned to ``patients``.
    targets
        Blocks to predict (omics modalities and outcome names).
    features
        Provenance of the bags (encoder, embed_dim, tile_size, mpp, tile_size_level0).
    cohort_folds
        Per-patient fold from the cohort table, or ``None``.
    """

    patients: list[str]
    bags: list[np.ndarray]
    slide_ids: list[list[str]]
    omics: OmicsData
    targets: list[str]
    features: dict[str, Any] = field(default_factory=dict)
    cohort_folds: np.ndarray | None = None
    outcomes: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None

    def kind(self, name: str) -> str:
        """Task kind of block ``name``."""
        return self.outcomes[name].kind if name in self.outcomes else TaskKind.REGRESSION

    def summary(self) -> str:
        """Human-readable description."""
        from histoviz.io.lazybags import bag_shapes

        n_patch = [s[0] for s in bag_shapes(self.bags)]
        return (
            f"{len(self.patients)} patients, {sum(len(s) for s in self.slide_ids)} slides, "
            f"{np.median(n_patch):.0f} patches/patient (median), {self.features.get('embed_dim')}-d "
            f"{self.features.get('encoder')} features\n" + self.omics.summary()
            + "".join(f"\n{n}: {int(b.present.sum())}/{len(self.patients)} patients ({b.kind})"
                      for n, b in self.outcomes.items())
        )


def _feature_dim(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["features"].shape[-1])


def load_feature_bags(cohort: pd.DataFrame, features_dir: str | Path, *, load_features: bool = True) -> dict[str, Any]:
    """Read ``<features_dir>/<slide_id>.h5`` for every slide; validate them together.

    Parameters
    ----------
    cohort
        Cohort table.
    features_dir
        Folder of the bags.
    load_features
        Read the feature matrices (``False``: coordinates and attributes only, for lazy bags).

    Returns
    -------
    ``slide_id -> FeatureBag`` for the slides that have a bag (``attrs["n_features_dim"]`` holds
    the feature dimension read from the file).

    Raises
    ------
    DataError
        Empty bags, different feature dimensions or encoders across slides (all problems
        listed in one message).
    """
    from histoviz.io.featurebag import FeatureBag

    folder = Path(features_dir)
    bags = {}
    for sid in cohort["slide_id"].astype(str):
        p = folder / f"{sid}.h5"
        if p.exists():
            b = FeatureBag.from_h5(p, load_features=load_features)
            b.attrs["n_features_dim"] = b.embed_dim if load_features else _feature_dim(p)
            b.attrs["_path"] = str(p)
            bags[sid] = b
    problems = []
    empty = [s for s, b in bags.items() if len(b) == 0]
    if empty:
        problems.append(f"empty feature bag(s) (no patches): {empty[:5]}")
    dims: dict[int, list[str]] = {}
    encs: dict[str, list[str]] = {}
    for s, b in bags.items():
        dims.setdefault(int(b.attrs["n_features_dim"]), []).append(s)
        encs.setdefault(str(b.attrs.get("encoder", "?")), []).append(s)
    if len(dims) > 1:
        problems.append("feature dimensions differ between slides: "
                        + "; ".join(f"{d}-d: {v[:3]}" for d, v in sorted(dims.items())))
    if len(encs) > 1:
        problems.append("slides were embedded with different encoders: "
                        + "; ".join(f"{e}: {v[:3]}" for e, v in sorted(encs.items())))
    if problems:
        raise DataError(f"{folder}: " + " | ".join(problems))
    return bags


def check_patient_ids(cohort: pd.DataFrame, d: Any) -> None:
    """Refuse a cohort whose patients are unknown: no ``patient_id`` column (unless
    ``data.one_patient_per_slide`` says each slide is its own patient) or empty ids.

    Raises
    ------
    DataError
        Naming the table and what to do (folds keep each patient's slides together).
    """
    if cohort.attrs.get("patient_id_from_slide_id") and not d.one_patient_per_slide:
        raise DataError(
            f"{d.cohort}: no patient_id column, so every slide would count as its own patient and one "
            "patient's slides could land in training and test folds at once; add a patient_id column, or "
            "state that each slide is a different patient with data.one_patient_per_slide: true"
        )
    blank = cohort.attrs.get("slides_without_patient") or []
    if blank:
        raise DataError(f"{d.cohort}: patient_id is empty for {len(blank)} slide(s) (e.g. {blank[:3]}); fill it "
                        "in: folds keep each patient's slides together")


def _check_declared_recipe(embed: Any, bag: Any, feat_dir: Path) -> None:
    """Refuse bags made another way than ``data.embed`` declares (the run would record the
    declared encoder and predict with it)."""
    from histoviz.features.recipe import compare_recipes, embedding_recipe, make_recipe

    declared = make_recipe(embed.encoder, embed_tiling(embed), weights="-")
    diffs = compare_recipes(declared, embedding_recipe(bag), keys=("encoder", "tile_size", "mpp"))
    diffs = [x for x in diffs if "not recorded" not in x]
    if diffs:
        raise DataError(
            f"{feat_dir}: the bags were made another way than data.embed declares ({'; '.join(diffs)}; "
            "declared vs bags); point data.features at bags made as declared (or at a new folder to embed "
            "into), or make data.embed say how these bags were made"
        )


def _bytes_on_disk(cohort: pd.DataFrame, folder: Path) -> int:
    import h5py

    total = 0
    for sid in cohort["slide_id"].astype(str):
        p = folder / f"{sid}.h5"
        if p.exists():
            try:
                with h5py.File(p, "r") as f:
                    total += int(np.prod(f["features"].shape)) * 4
            except (OSError, KeyError):
                pass
    return total


def embed_tiling(embed: EmbedConfig) -> dict[str, Any]:
    """The :class:`~histoviz.tiling.TilingConfig` fields of a config's ``data.embed``."""
    return {k: getattr(embed, k) for k in ("tile_size", "mpp", "overlap", "min_tissue_fraction", "mpp_override")}


def embed_missing(cfg: ExperimentConfig, cohort: pd.DataFrame, *, progress: bool = False) -> list[str]:
    """Embed the cohort's slides that have no feature bag in ``data.features`` (when the config's
    ``data.embed`` says how); return the slides still without one."""
    d = cfg.data
    feat_dir = Path(d.features)

    def missing() -> list[str]:
        return [s for s in cohort["slide_id"] if not (feat_dir / f"{s}.h5").exists()]

    todo = missing()
    if not todo or d.embed is None:
        return todo
    from histoviz.features.cohort import embed_cohort

    e = d.embed
    log.info("embedding %d slides with %s into %s", len(todo), e.encoder, feat_dir)
    res = embed_cohort(
        cohort[cohort["slide_id"].isin(todo)], feat_dir, encoder=e.encoder,
        encoder_kwargs={"pretrained": e.pretrained, **({"weights": e.weights} if e.weights else {})},
        tiling=embed_tiling(e), workers=e.workers, batch_size=e.batch_size, device=e.device, progress=progress,
    )
    for s in res.failed:
        log.warning("slide %s could not be embedded: %s", s.slide_id, s.error)
    return missing()


def load_experiment_data(cfg: ExperimentConfig, *, progress: bool = False) -> ExperimentData:
    """Cohort + bags (+ embedding of missing slides when ``data.embed`` is set) + omics.

    Raises
    ------
    DataError
        Any input problem (see the module docstring), before training.
    """
    from histoviz.data.cohort import read_cohort
    from histoviz.data.omics import OmicsData, load_omics
    from histoviz.data.outcomes import load_outcomes

    d = cfg.data
    cohort = read_cohort(d.cohort)
    check_patient_ids(cohort, d)
    feat_dir = Path(d.features)
    missing = embed_missing(cfg, cohort, progress=progress)
    lazy = d.lazy_bags
    if lazy is None:
        lazy = _bytes_on_disk(cohort, feat_dir) > LAZY_AUTO_BYTES
    bags = load_feature_bags(cohort, feat_dir, load_features=not lazy)
    if not bags:
        raise DataError(
            f"{feat_dir}: no feature bag for any of the {len(cohort)} cohort slides; run histoviz embed "
            "or set data.embed in the config"
        )
    patients, pbags, pslides = [], [], []
    without = []
    for pid, grp in cohort.groupby("patient_id", sort=False):
        sids = [s for s in grp["slide_id"] if s in bags]
        if len(sids) < len(grp):
            without.append(pid)
            if not d.drop_patients_without_features:
                continue
        if not sids:
            continue
        patients.append(str(pid))
        pslides.append(sids)
        if lazy:
            pbags.append([bags[s].attrs["_path"] for s in sids])
        else:
            pbags.append(np.concatenate([bags[s].features for s in sids]).astype(np.float32))
    if without and not d.drop_patients_without_features:
        raise DataError(
            f"{feat_dir}: {len(missing)} slide(s) have no feature bag (e.g. {missing[:5]}); embed them "
            "(histoviz embed, or data.embed in the config) or set data.drop_patients_without_features: true"
        )
    if without:
        log.warning("%d patient(s) lack features for some slides: %s", len(without), without[:5])
    if lazy:
        from histoviz.io.lazybags import LazyBags

        pbags = LazyBags(pbags)
        log.info("feature bags are read from disk on demand (%.1f GB as float32)", pbags.nbytes / 1e9)
    first = next(iter(bags.values()))
    features = {k: first.attrs.get(k) for k in ("encoder", "encoder_weights", "embed_dim", "tile_size", "mpp",
                                                "tile_size_level0", "recipe")}
    features["embed_dim"] = int(first.attrs["n_features_dim"])
    if d.embed is not None:
        _check_declared_recipe(d.embed, first, feat_dir)
        features["embed"] = {"encoder": d.embed.encoder, "pretrained": d.embed.pretrained,
                             "weights": d.embed.weights, "tiling": embed_tiling(d.embed)}

    def load(pats: list[str]) -> tuple[Any, dict[str, Any]]:
        om = load_omics(pats, d.omics) if d.omics else OmicsData(pats)
        oc = load_outcomes(cohort, pats, d.outcomes, source=d.cohort) if d.outcomes else {}
        return om, oc

    omics, outcomes = load(patients)
    targets = list(d.targets) if d.targets is not None else [*d.omics, *d.outcomes]
    for m in targets:
        if m in d.omics and omics[m].n_present == 0:
            raise DataError(f"data.omics.{m}: no patient with features has this modality")
        if m in outcomes and not outcomes[m].present.any():
            raise DataError(f"{d.cohort}: no patient with features has outcome {m!r}")
    has_any = np.zeros(len(patients), dtype=bool)
    for m in targets:
        has_any |= omics[m].present if m in d.omics else outcomes[m].present
    if not has_any.all():
        drop = [p for p, h in zip(patients, has_any) if not h]
        log.info("dropping %d patient(s) without any target: %s", len(drop), drop[:5])
        from histoviz.io.lazybags import take

        keep = np.flatnonzero(has_any)
        patients = [patients[i] for i in keep]
        pbags = take(pbags, keep)
        pslides = [pslides[i] for i in keep]
        omics, outcomes = load(patients)
    groups = None
    gcol = cfg.evaluation.conformal.group if cfg.evaluation.conformal is not None else None
    if gcol:
        if gcol not in cohort.columns:
            raise DataError(f"{d.cohort}: no column {gcol!r} for evaluation.conformal.group (Mondrian calibration)")
        g = cohort.groupby("patient_id")[gcol].agg(lambda s: s.dropna().astype(str).unique().tolist())
        bad = [p for p, v in g.items() if len(v) > 1]
        if bad:
            raise DataError(f"{d.cohort}: column {gcol!r} differs between slides of patient(s) {bad[:5]}")
        groups = np.array([g[p][0] if len(g[p]) else "missing" for p in patients], dtype=object)
    cohort_folds = None
    if "fold" in cohort.columns:
        f = cohort.groupby("patient_id")["fold"].agg(lambda s: s.unique().tolist())
        bad = [p for p, v in f.items() if len(v) > 1]
        if bad:
            raise DataError(f"{d.cohort}: slides of one patient sit in different folds: {bad[:5]}")
        cohort_folds = np.array([int(f[p][0]) for p in patients])
    return ExperimentData(patients, pbags, pslides, omics, targets, features, cohort_folds, outcomes, groups)


def patient_folds(n_patients: int, n_folds: int, seed: int, *, given: np.ndarray | None = None) -> np.ndarray:
    """Fold index of each patient (balanced random assignment, or ``given``).

    Raises
    ------
    DataError
        Fewer patients than folds.
    """
    if given is not None:
        u = np.unique(given)
        return np.searchsorted(u, given).astype(np.int64)
    if n_patients < n_folds:
        raise DataError(f"{n_patients} patients cannot make {n_folds} folds; lower evaluation.n_folds")
    rng = np.random.default_rng(seed)
    folds = np.arange(n_patients) % n_folds
    return folds[rng.permutation(n_patients)].astype(np.int64)


def inner_split(train_idx: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training patients into (fit, validation) by patient; empty validation when 0."""
    train_idx = np.asarray(train_idx)
    n_val = int(round(val_fraction * len(train_idx)))
    if val_fraction > 0:
        n_val = max(n_val, 2)
    if n_val == 0 or len(train_idx) - n_val < 2:
        return np.sort(train_idx), np.array([], dtype=train_idx.dtype)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(train_idx)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def calibration_split(train_idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the training patients (by patient) for conformal calibration.

    Returns ``(rest, calibration)``; an empty calibration set when ``fraction`` is 0. The
    split uses its own random stream, so runs without calibration keep their fit/validation
    split unchanged.
    """
    train_idx = np.asarray(train_idx)
    n_cal = int(round(fraction * len(train_idx)))
    if fraction <= 0 or n_cal == 0:
        return np.sort(train_idx), np.array([], dtype=train_idx.dtype)
    rng = np.random.default_rng([int(seed), 104729])
    perm = rng.permutation(train_idx)
    return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])
