"""``run_experiment``: patient-level K-fold cross-validation of one model, written to a run dir.

Protocol (per fold ``k``):

1. test patients = fold ``k``; the rest are training patients;
2. ``evaluation.calibration_fraction`` of the training patients are held out (by patient) as
   the split-conformal **calibration** set; they are never used for fitting or selection;
3. a validation split of the remaining training patients (``training.val_fraction``) drives
   early stopping and model selection; the test fold is used only for the final predictions;
4. target preprocessing (median-zero filter, imputation, standardisation; survival time bins)
   is fitted on the training patients; with ``training.shuffle_labels`` their targets are
   permuted first (negative control);
5. the model is fitted on every block it serves; each block's task (:mod:`histoviz.tasks`)
   scores the held-out predictions, writes the held-out table and, with a calibration set,
   computes the conformal threshold on the calibration patients and the coverage of the test
   patients' sets / intervals (per subgroup too when ``evaluation.conformal.group`` is set).

A regression block is scored on the targets the model predicts (``model.targets_``; PathGen
predicts the genes of its gene groups, CPNN the genes in its reference). A model that declares
``inputs`` (regression blocks it reads at prediction time, e.g. PathGen's "slide + real
expression" setting) gets those blocks of the calibration and test patients passed to
``predict``; no other model sees held-out targets.

Regression metrics are computed on the unstandardised target scale (per-target correlations
do not change; per-patient correlations across targets do, and their centred version
subtracts the training means of that scale). The training statistics used to pick top-k
targets are also on that scale, and saved per fold (``targets.parquet``).

The run directory is owned by :class:`~histoviz.io.rundir.RunWriter` /
:class:`~histoviz.io.rundir.RunDir` (layout there): assembled under ``<out>.partial``,
resumable, published whole.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.io.lazybags import take
from histoviz.task_kinds import TaskKind

if TYPE_CHECKING:
    from histoviz.training.config import ExperimentConfig
    from histoviz.training.data import ExperimentData

__all__ = ["RunResult", "fit_pipeline", "run_experiment"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What ``run_experiment`` wrote, plus the tables in memory."""

    out_dir: Path
    metrics: pd.DataFrame
    heldout: dict[str, pd.DataFrame]
    summary: pd.DataFrame
    selection: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def predictions(self) -> pd.DataFrame:
        """Held-out predictions of the regression blocks (long; ``task`` column)."""
        parts = [h for h in self.heldout.values() if "target" in h.columns and "y_true" in h.columns]  # regression
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def per_target(self, metric: str = "pearson") -> pd.DataFrame:
        """Per-target rows of ``metric`` (``fold, task, target, value``)."""
        m = self.metrics
        return m[(m["metric"] == metric) & (m["axis"] == "per-target")]


_STATELESS = ("path", "format", "layer", "patient_column", "id_length", "normalize", "target_sum", "transform",
              "from_modality", "network", "method", "min_targets")


def fit_pipeline(
    cfg: ExperimentConfig,
    data: ExperimentData,
    train_idx: np.ndarray,
    *,
    seed: int,
    shuffle_labels: bool | None = None,
) -> tuple[Any, dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]:
    """Fit preprocessors and a model on ``train_idx`` patients (validation split inside).

    Returns
    -------
    model, preprocessors, blocks (all patients, this fold's preprocessing), fit rows,
    validation rows.
    """
    from histoviz.data.omics import TargetPreprocessor
    from histoviz.data.outcomes import GradeEncoder, SurvivalBins
    from histoviz.training.data import inner_split
    from histoviz.training.prepare import build_model

    preps: dict[str, Any] = {}
    blocks: dict[str, Any] = {}
    from histoviz.training.prepare import served_blocks

    for m in served_blocks(cfg, data):
        if m in data.outcomes:
            blk = data.outcomes[m]
            if not blk.present[train_idx].any():
                raise DataError(f"{m}: no training patient in this fold has this outcome")
            if blk.kind == TaskKind.CLASSIFICATION:
                preps[m] = GradeEncoder(blk.classes)
            else:
                preps[m] = SurvivalBins(cfg.data.outcomes[m].n_bins, blk.time_unit).fit(blk.subset(train_idx))
            blocks[m] = preps[m].block(blk)
            continue
        md = data.omics[m]
        rows = train_idx[md.present[train_idx]]
        if len(rows) == 0:
            raise DataError(f"{m}: no training patient in this fold has this modality")
        spec = cfg.data.omics.get(m, md.spec)
        for k in _STATELESS:
            if getattr(spec, k) != getattr(md.spec, k):
                raise DataError(f"data.omics.{m}.{k} differs from the loaded data's; reload the data")
        try:
            preps[m] = TargetPreprocessor(spec).fit(md.values[rows], md.targets)
        except DataError as e:
            raise DataError(f"data.omics.{m}: {e}") from None
        blocks[m] = preps[m].block(md)
    fit_idx, val_idx = inner_split(train_idx, cfg.training.val_fraction, seed)
    shuffle = cfg.training.shuffle_labels if shuffle_labels is None else shuffle_labels
    train_blocks = blocks
    if shuffle:
        rng = np.random.default_rng(seed + 7919)
        perm = np.arange(len(data.patients))
        perm[train_idx] = rng.permutation(train_idx)
        train_blocks = {m: b.permuted(perm) for m, b in blocks.items()}
    model = build_model(cfg)
    val = None
    if len(val_idx):
        val = (take(data.bags, val_idx), {m: b.subset(val_idx) for m, b in train_blocks.items()})
    model.fit(take(data.bags, fit_idx), {m: b.subset(fit_idx) for m, b in train_blocks.items()}, val=val)
    return model, preps, _predicted_columns(model, blocks), fit_idx, val_idx


def _predicted_columns(model: Any, blocks: dict[str, Any]) -> dict[str, Any]:
    """Regression blocks restricted to the targets the model predicts (in its order); blocks the
    model reads as inputs stay whole."""
    from histoviz.models.base import predicted_block

    names = getattr(model, "targets_", {})
    return {m: b if m in getattr(model, "inputs", ()) else predicted_block(b, names.get(m)) for m, b in blocks.items()}


def _input_kw(model: Any, blocks: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """``{"inputs": ...}`` of held-out patients ``rows`` for a model that declares inputs."""
    names = tuple(getattr(model, "inputs", ()) or ())
    return {"inputs": {b: blocks[b].subset(rows) for b in names}} if names else {}


# ------------------------------------------------------------------------------------------------
# one fold
# ------------------------------------------------------------------------------------------------
def _raw_scale(blk: Any, prep: Any, values: np.ndarray) -> np.ndarray:
    """Undo the fold's standardisation (regression), so metrics see the unstandardised scale."""
    mean = getattr(prep, "mean_", None)
    if mean is None:
        return np.asarray(values, np.float64)
    cols = pd.Index(prep.targets_).get_indexer(blk.targets)
    return np.asarray(values, np.float64) * np.asarray(prep.std_)[cols] + np.asarray(mean)[cols]


def _pathway_block(cfg: ExperimentConfig, data: ExperimentData, model: Any, pred: dict[str, np.ndarray]) -> Any:
    """Pathway activity computed from predicted expression, as an extra regression block."""
    from histoviz.data.omics import pathway_activity
    from histoviz.data.targets import TargetBlock

    pfp = cfg.data.pathway_from_predictions
    if not pfp or pfp["from"] not in pred:
        return None
    src, cmp_mod = pfp["from"], pfp["compare_to"]
    try:
        pa = pathway_activity(pd.DataFrame(pred[src], columns=model.targets_[src]), pfp["network"],
                              method=pfp.get("method", "ulm"), min_targets=int(pfp.get("min_targets", 5)))
    except DataError as e:
        raise DataError(f"data.pathway_from_predictions: {e}") from None
    md = data.omics[cmp_mod]
    common = [t for t in pa.columns if t in md.targets]
    if not common:
        return None
    cols = [md.targets.index(t) for t in common]
    name = f"{cmp_mod}_from_predicted_{src}"
    return name, TargetBlock(name, common, md.values[:, cols], md.present), pa[common].to_numpy()


def _conformal(cfg: ExperimentConfig, data: ExperimentData, blocks: dict[str, Any], model: Any,
               cal_idx: np.ndarray, train_idx: np.ndarray, where: str) -> dict[str, Any]:
    """Thresholds per block from the calibration patients (``{}`` without calibration); each
    task calibrates itself (:meth:`~histoviz.tasks.Task.calibrate`), given the fold's training
    patients (``train_idx``, calibration included) as reference."""
    from dataclasses import asdict

    from histoviz.tasks import get_task

    if not len(cal_idx):
        return {}
    cs = cfg.evaluation.conformal
    pred = model.predict(take(data.bags, cal_idx), **_input_kw(model, blocks, cal_idx))
    out: dict[str, Any] = {}
    for b, p in pred.items():
        task = get_task(blocks[b])
        ref = blocks[b].subset(train_idx)
        entry: dict[str, Any] = {"kind": task.kind, **asdict(cs),
                                 **task.calibrate(blocks[b].subset(cal_idx), p, cs, reference=ref,
                                                  where=f"{where}, {b}")}
        if cs.group and cs.mondrian and data.groups is not None:
            g_cal = data.groups[cal_idx]
            entry["qhat_by_group"] = {
                str(g): task.calibrate(blocks[b].subset(cal_idx[g_cal == g]), np.asarray(p)[g_cal == g], cs,
                                       reference=ref, where=f"{where}, {b}, subgroup {g!r}")["qhat"]
                for g in dict.fromkeys(g_cal.tolist())}
        out[b] = entry
    return out


@dataclass
class FoldFit:
    """What one fold fitted: the model, its target preprocessing, this fold's blocks (all
    patients) and the patient rows of each split."""

    model: Any
    preps: dict[str, Any]
    blocks: dict[str, Any]
    fit_idx: np.ndarray
    val_idx: np.ndarray
    cal_idx: np.ndarray
    rest: np.ndarray
    conformal: dict[str, Any]


def _fit_fold(cfg: ExperimentConfig, data: ExperimentData, train_idx: np.ndarray, test_idx: np.ndarray,
              key: str, seed: int, writer: Any) -> FoldFit:
    """Hold out the calibration patients, fit the pipeline on the rest (validation split
    inside), compute the conformal thresholds and save the fold's checkpoint."""
    from histoviz.models.checkpoint import FittedPipeline, save_checkpoint
    from histoviz.training.data import calibration_split

    rest, cal_idx = calibration_split(train_idx, cfg.evaluation.calibration_fraction, seed)
    model, preps, blocks, fit_idx, val_idx = fit_pipeline(cfg, data, rest, seed=seed)
    conf = _conformal(cfg, data, blocks, model, cal_idx, train_idx, f"fold {key} calibration split")
    save_checkpoint(FittedPipeline(model, preps, _features_meta(data),
                                   {"fold": key, "run": cfg.name, "conformal": conf,
                                    "test_patients": [data.patients[i] for i in test_idx]}),
                    writer.checkpoint_dir(key))
    return FoldFit(model, preps, blocks, fit_idx, val_idx, cal_idx, rest, conf)


def _fold_record(cfg: ExperimentConfig, data: ExperimentData, fold: FoldFit, key: str,
                 test_idx: np.ndarray) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """The fold's ``selection.json`` entry (fit diagnostics, split sizes, loop settings) and its
    ``splits`` / ``history`` tables."""
    from histoviz.training.prepare import loop_record

    info = fold.model.fit_info()
    history = info.pop("history", None)
    info.pop("contrastive", None)
    info.update({"fold": key, "n_fit": len(fold.fit_idx), "n_val": len(fold.val_idx), "n_cal": len(fold.cal_idx),
                 "n_test": len(test_idx)})
    if (loop := loop_record(fold.model)) is not None:
        info["loop"] = {cfg.name: loop}
    order = (*fold.fit_idx, *fold.val_idx, *fold.cal_idx, *test_idx)
    split = (["fit"] * len(fold.fit_idx) + ["val"] * len(fold.val_idx) + ["cal"] * len(fold.cal_idx)
             + ["test"] * len(test_idx))
    tables = {"splits": pd.DataFrame({"patient_id": [data.patients[i] for i in order], "split": split})}
    if history:
        tables["history"] = pd.DataFrame(history)
    return info, tables


@dataclass
class HeldOutBlock:
    """One predicted block of a fold's test patients: the block, the predictions and where the
    training values of its targets come from (regression)."""

    name: str
    block: Any
    pred: np.ndarray
    prep: Any = None
    train_values: np.ndarray | None = None


def _heldout_blocks(cfg: ExperimentConfig, data: ExperimentData, fold: FoldFit,
                    test_idx: np.ndarray) -> list[HeldOutBlock]:
    """The model's predictions for the test patients, block by block (plus pathway activity
    computed from predicted expression, when the config asks for it)."""
    model, blocks, rest = fold.model, fold.blocks, fold.rest
    pred = model.predict(take(data.bags, test_idx), **_input_kw(model, blocks, test_idx))
    out = []
    for b, p in pred.items():
        blk = blocks[b].subset(test_idx)
        train_values = None
        if b in data.omics.modalities and b in fold.preps:
            src = data.omics[b]
            train_values = src.values[np.ix_(rest[src.present[rest]], pd.Index(src.targets).get_indexer(blk.targets))]
        out.append(HeldOutBlock(b, blk, p, fold.preps.get(b), train_values))
    extra = _pathway_block(cfg, data, model, pred)
    if extra is not None:
        name, blk, values = extra
        src = data.omics[cfg.data.pathway_from_predictions["compare_to"]]
        cols = pd.Index(src.targets).get_indexer(blk.targets)
        out.append(HeldOutBlock(name, blk.subset(test_idx), values, None,
                                src.values[np.ix_(rest[src.present[rest]], cols)]))
    return out


def _block_metrics(cfg: ExperimentConfig, fold: FoldFit, hb: HeldOutBlock,
                   patients: list[str]) -> pd.DataFrame:
    """Held-out metric rows of one block; regression on the unstandardised target scale."""
    from histoviz.tasks import get_task

    task = get_task(hb.block)
    min_n = cfg.evaluation.min_n
    if task.kind != TaskKind.REGRESSION:
        train = fold.blocks[hb.name].subset(fold.rest) if task.kind == TaskKind.SURVIVAL else None
        return task.metrics(hb.block, hb.pred, min_n=min_n, patients=patients, train=train)
    if hb.prep is not None:
        raw = type(hb.block)(hb.block.modality, hb.block.targets, _raw_scale(hb.block, hb.prep, hb.block.values),
                             hb.block.present)
        return task.metrics(raw, _raw_scale(hb.block, hb.prep, hb.pred), min_n=min_n, train=hb.train_values,
                            patients=patients)
    return task.metrics(hb.block, hb.pred, min_n=min_n, train=hb.train_values, patients=patients)


def _training_statistics(hb: HeldOutBlock) -> pd.DataFrame | None:
    """``task, target, train_mean, train_var`` of a regression block's training patients (the
    statistics top-k targets are chosen by; ``targets.parquet``)."""
    t = hb.train_values
    if t is None or not len(t):
        return None
    with np.errstate(all="ignore"):
        return pd.DataFrame({"task": hb.name, "target": hb.block.targets, "train_mean": np.nanmean(t, axis=0),
                             "train_var": np.nanvar(t, axis=0) if len(t) > 1 else np.nan})


def _conformal_rows(cfg: ExperimentConfig, data: ExperimentData, fold: FoldFit, hb: HeldOutBlock,
                    test_idx: np.ndarray, heldout: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coverage rows (overall and per group) of a block's conformal sets / intervals on the test
    patients, and the held-out table with each patient's region."""
    from histoviz.tasks import get_task

    task, cs, entry = get_task(hb.block), cfg.evaluation.conformal, fold.conformal[hb.name]
    qhat = entry["qhat"]
    groups = data.groups[test_idx] if data.groups is not None else None
    if "qhat_by_group" in entry:
        per = [entry["qhat_by_group"].get(g, entry["qhat"]) for g in groups]
        qhat = np.stack([np.asarray(v, np.float64) for v in per])
    regions = task.regions(hb.pred, qhat, cs, info=entry)
    rows = [task.coverage(hb.block, hb.pred, regions, cs, info=entry)]
    if groups is not None:
        for g in dict.fromkeys(groups.tolist()):
            sel = groups == g
            cg = task.coverage(hb.block.subset(np.flatnonzero(sel)), hb.pred[sel],
                               {k: v[sel] for k, v in regions.items()}, cs, info=entry)
            if not cg.empty:
                cg["subset"] = f"{cs.group}={g}"
                rows.append(cg)
    return pd.concat(rows, ignore_index=True), task.with_regions(heldout, hb.block, regions)


def _score_fold(cfg: ExperimentConfig, data: ExperimentData, fold: FoldFit, key: str,
                test_idx: np.ndarray) -> dict[str, pd.DataFrame]:
    """Metrics, training statistics and held-out tables of a fold's test patients."""
    from histoviz.tasks import get_task

    patients = [data.patients[i] for i in test_idx]
    slides = [";".join(data.slide_ids[i]) for i in test_idx]
    metric_parts, stat_parts, tables = [], [], {}
    for hb in _heldout_blocks(cfg, data, fold, test_idx):
        task = get_task(hb.block)
        metrics = _block_metrics(cfg, fold, hb, patients)
        if task.kind == TaskKind.REGRESSION and (stats := _training_statistics(hb)) is not None:
            stat_parts.append(stats)
        heldout = task.heldout(hb.block, hb.pred, patients=patients, slide_ids=slides)
        if hb.name in fold.conformal:
            coverage, heldout = _conformal_rows(cfg, data, fold, hb, test_idx, heldout)
            metrics = pd.concat([metrics, coverage], ignore_index=True)
        if not metrics.empty:
            metrics.insert(0, "kind", task.kind)
            metrics.insert(0, "task", hb.name)
            metric_parts.append(metrics)
        heldout.insert(0, "fold", int(key))
        if task.kind == TaskKind.REGRESSION:
            heldout.insert(1, "task", hb.name)
        tables[f"heldout__{hb.name}"] = heldout
    if metric_parts:
        tables["metrics"] = pd.concat(metric_parts, ignore_index=True)
    if stat_parts:
        tables["targets"] = pd.concat(stat_parts, ignore_index=True)
    return tables


def _run_fold(cfg: ExperimentConfig, data: ExperimentData, train_idx: np.ndarray, test_idx: np.ndarray,
              key: str, seed: int, writer: Any) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """One work unit: fit (:func:`_fit_fold`), record (:func:`_fold_record`) and, unless it is
    the final model, score the held-out patients (:func:`_score_fold`)."""
    t0 = time.perf_counter()
    fold = _fit_fold(cfg, data, train_idx, test_idx, key, seed, writer)
    info, tables = _fold_record(cfg, data, fold, key, test_idx)
    if key != "final":
        tables.update(_score_fold(cfg, data, fold, key, test_idx))
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return tables, {"info": info, "conformal": fold.conformal}


def _features_meta(data: ExperimentData) -> dict[str, Any]:
    return {k: (v if not isinstance(v, np.generic) else v.item()) for k, v in data.features.items()}


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool = False,
    data: ExperimentData | None = None,
) -> RunResult:
    """Cross-validate ``cfg``'s model and publish the run directory (see the module docstring).

    Parameters
    ----------
    cfg
        A validated :class:`~histoviz.training.config.ExperimentConfig`.
    out_dir
        Run directory (replaced as a whole when the new run is complete).
    progress
        Progress bars (embedding, folds).
    data
        Pre-loaded :class:`ExperimentData` (tests and benchmarks share one load).

    Returns
    -------
    :class:`RunResult`.

    Raises
    ------
    DataError, ConfigError
        Bad input, detected before any training.
    """
    import yaml

    from histoviz.data.identity import cohort_identity
    from histoviz.io.rundir import RunWriter, fingerprint
    from histoviz.training.config import config_to_dict
    from histoviz.training.prepare import prepare_run, run_record

    t0 = time.perf_counter()
    out = Path(out_dir)
    prep = prepare_run(cfg, data=data, progress=progress)  # read and check everything, then fit
    data, n_folds = prep.data, prep.n_folds
    resolved = config_to_dict(cfg)
    resolved["_run"] = {"n_patients": len(data.patients), "n_folds": n_folds, "repeats": len(prep.folds),
                        "features": _features_meta(data),
                        "identity": cohort_identity(cfg.data.cohort, data.patients, prep.folds,
                                                    omics=data.omics.modalities)}
    inputs = [cfg.data.cohort, cfg.data.features, *(s.path for s in cfg.data.omics.values())]
    fp = fingerprint({**resolved, "_patients": data.patients, "_folds": [f.tolist() for f in prep.folds]}, inputs)

    with RunWriter(out, fp) as w:
        w.write_text("config.yaml", yaml.safe_dump(resolved, sort_keys=False))

        def work(key: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
            train_idx, test_idx, seed = prep.split(key)
            return _run_fold(cfg, data, train_idx, test_idx, key, seed, w)

        pieces = w.run_pieces(prep.keys, work, progress=progress, desc=f"{cfg.name} folds")
        result = _assemble(cfg, data, prep.folds[0], pieces, w, t0, n_folds)
        from histoviz.evaluation.compare import summarise_metrics

        result.summary = summarise_metrics(result.metrics, targets=w.read_table("targets.parquet"),
                                           predictions=result.predictions, topk=cfg.evaluation.topk,
                                           criteria=cfg.evaluation.topk_criteria)
        w.write_text("summary.csv", result.summary.to_csv(index=False))
        infos = [i["info"] for k, (_, i) in pieces.items() if k != "final"]
        w.publish({"name": cfg.name, "model": cfg.model.name, "n_folds": n_folds, "n_patients": len(data.patients),
                   "blocks": {b: data.kind(b) for b in prep.served}, "seconds": result.seconds,
                   **run_record(cfg, infos)})
    result.out_dir = out
    log.info("%s: %d folds in %.1f s -> %s", cfg.name, n_folds, result.seconds, out)
    return result


def selection(pieces: dict[str, tuple[dict[str, pd.DataFrame], dict[str, Any]]], units: str,
              t0: float) -> dict[str, Any]:
    """``selection.json`` of a run: each fold's fit record, the final model's, and the fold whose
    model has the lowest validation loss (the checkpoint ``histoviz predict`` uses without a
    final model)."""
    sel: dict[str, Any] = {"folds": []}
    for key, (_, info) in pieces.items():
        if key == "final":
            sel["final"] = dict(info["info"])
        else:
            sel["folds"].append(dict(info["info"]))
    vl = []
    for f in sel["folds"]:
        bv = f.get("best_val")
        bv = bv.get("total") if isinstance(bv, dict) else bv
        vl.append(bv if isinstance(bv, (int, float)) and np.isfinite(bv) else np.inf)
    sel["selected_fold"] = int(np.argmin(vl)) if np.isfinite(vl).any() else 0
    sel["selection_rule"] = f"lowest validation loss (validation split of the training {units})"
    sel["seconds"] = round(time.perf_counter() - t0, 3)
    return sel


def _assemble(cfg: ExperimentConfig, data: ExperimentData, folds: np.ndarray,
              pieces: dict[str, tuple[dict[str, pd.DataFrame], dict[str, Any]]], w: Any, t0: float,
              n_folds: int) -> RunResult:
    """Concatenate the fold pieces into the run's tables (written into the staging folder)."""
    from histoviz.io.rundir import concat_pieces

    def cat(name: str, key_col: bool = True) -> pd.DataFrame | None:
        df = concat_pieces(pieces, name, fold_col=key_col, n_folds=n_folds)
        if df is not None:
            df.insert(0, "model", cfg.name)
        return df

    metrics = cat("metrics")
    if metrics is None:
        raise DataError(f"{cfg.name}: no fold produced metrics (no held-out patient has a target)")
    metrics = metrics[metrics["fold"] >= 0]
    for c in ("model", "task", "kind", "metric", "axis", "subset"):
        metrics[c] = metrics[c].astype("category")
    w.write_table("metrics.parquet", metrics)
    targets = cat("targets")
    if targets is not None:
        w.write_table("targets.parquet", targets[targets["fold"] >= 0])
    heldout: dict[str, pd.DataFrame] = {}
    names = sorted({n for t, _ in pieces.values() for n in t if n.startswith("heldout__")})
    for n in names:
        h = cat(n, key_col=False)
        assert h is not None
        b = n[len("heldout__"):]
        heldout[b] = h
        w.write_table(f"heldout/{b}.parquet", h)
    reg = [h for h in heldout.values() if "target" in h.columns and "y_true" in h.columns]
    if reg:
        pr = pd.concat(reg, ignore_index=True)
        for c in ("model", "task", "target"):
            pr[c] = pr[c].astype("category")
        w.write_table("predictions.parquet", pr)
    hist = cat("history")
    if hist is not None:
        w.write_table("history.parquet", hist)
    splits = cat("splits")
    if splits is not None:
        w.write_table("splits.parquet", splits.drop(columns="model"))
    sel = selection(pieces, "patients", t0)
    w.write_json("conformal.json", {k: i["conformal"] for k, (_, i) in pieces.items() if i.get("conformal")})
    w.write_json("selection.json", sel)
    final_split = np.full(len(data.patients), "", dtype=object)
    if "final" in pieces and "splits" in pieces["final"][0]:
        fs = pieces["final"][0]["splits"]
        lut = dict(zip(fs["patient_id"], fs["split"]))
        final_split = np.array([{"fit": "train"}.get(lut.get(p, ""), lut.get(p, "")) for p in data.patients],
                               dtype=object)
    w.write_text("folds.csv", pd.DataFrame({"patient_id": data.patients, "fold": folds,
                                            "split_in_final": final_split}).to_csv(index=False))
    return RunResult(w.out, metrics, heldout, pd.DataFrame(), sel, sel["seconds"])
