"""``run_experiment``: patient-level K-fold cross-validation of one model, written to a run dir.

Protocol (per fold ``k``):

1. test patients = fold ``k``; the rest are training patients;
2. a validation split of the **training** patients (``training.val_fraction``) drives early
   stopping and model selection; the test fold is used only for the final predictions;
3. target preprocessing (median-zero filter, imputation, standardisation) is fitted on the
   training patients; with ``training.shuffle_labels`` their targets are permuted first
   (negative control);
4. the model is fitted, held-out predictions are scored per target across the held-out
   patients of that fold, and per patient across targets.

Run directory layout (column names are a contract; the dashboard reads these files)::

    config.yaml              resolved config (absolute paths, all defaults)
    folds.csv                patient_id, fold, split_in_final ("train"/"val")
    metrics.parquet          model, fold, modality, target, pearson, spearman, n,
                             train_mean, train_var      (one row per fold x target;
                             train_* are training-fold statistics used for top-k selection)
    patient_metrics.parquet  model, fold, modality, patient_id, pearson, spearman,
                             pearson_centered, n_targets
    predictions.parquet      model, fold, patient_id, slide_ids, modality, target,
                             y_true, y_pred             (held-out predictions, target space)
    history.parquet          model, fold, epoch, train_loss, val_* (torch models)
    selection.json           per-fold best epoch / validation loss, selected fold
    summary.csv              mean +- std over folds per modality and target subset
    checkpoints/fold<k>/     model.safetensors + model.json  (one per fold)
    checkpoints/final/       fitted on all patients (``training.final_model``)

Fold ``-1`` never appears in metrics; pooled-over-folds numbers are computed on demand by
:mod:`histoviz.evaluation.compare` and labelled as pooled.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz._atomic import atomic_path, atomic_write_text
from histoviz.errors import DataError

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
    patient_metrics: pd.DataFrame
    predictions: pd.DataFrame
    summary: pd.DataFrame
    selection: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


_STATELESS = ("path", "format", "layer", "patient_column", "id_length", "normalize", "target_sum", "transform",
              "from_modality", "network", "method", "min_targets")


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


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
    from histoviz.models import create_model
    from histoviz.training.data import inner_split

    preps: dict[str, Any] = {}
    blocks: dict[str, Any] = {}
    for m in data.targets:
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
    model = create_model(cfg.model.name, **cfg.model_kwargs())
    val = None
    if len(val_idx):
        val = ([data.bags[i] for i in val_idx], {m: b.subset(val_idx) for m, b in train_blocks.items()})
    model.fit([data.bags[i] for i in fit_idx], {m: b.subset(fit_idx) for m, b in train_blocks.items()}, val=val)
    return model, preps, blocks, fit_idx, val_idx


def _score_fold(
    cfg: ExperimentConfig,
    data: ExperimentData,
    model: Any,
    blocks: dict[str, Any],
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    fold: int,
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], list[pd.DataFrame]]:
    from histoviz.evaluation.metrics import per_sample_correlation, per_target_correlation

    pred = model.predict([data.bags[i] for i in test_idx])
    mrows, prows, preds = [], [], []
    extra = {}
    pfp = cfg.data.pathway_from_predictions
    if pfp and pfp["from"] in pred:
        from histoviz.data.omics import pathway_activity

        src = pfp["from"]
        cmp_mod = pfp["compare_to"]
        gene_pred = pd.DataFrame(pred[src], columns=model.targets_[src])
        try:
            pa = pathway_activity(gene_pred, pfp["network"], method=pfp.get("method", "ulm"),
                                  min_targets=int(pfp.get("min_targets", 5)))
        except DataError as e:
            raise DataError(f"data.pathway_from_predictions: {e}") from None
        md = data.omics[cmp_mod]
        common = [t for t in pa.columns if t in md.targets]
        if common:
            cols = [md.targets.index(t) for t in common]
            name = f"{cmp_mod}_from_predicted_{src}"
            extra[name] = (pa[common].to_numpy(), md.values[np.ix_(test_idx, cols)], md.present[test_idx],
                           common, md.values[np.ix_(train_idx, cols)])
    for mod, yhat in pred.items():
        blk = blocks[mod]
        names = model.targets_[mod]
        col = pd.Index(blk.targets).get_indexer(names)
        ytrue = blk.values[np.ix_(test_idx, col)].astype(np.float64)
        pres = blk.present[test_idx]
        ytr = blk.values[np.ix_(train_idx, col)].astype(np.float64)
        extra_mod = (yhat, ytrue, pres, names, ytr)
        extra[mod] = extra_mod
    for mod, (yhat, ytrue, pres, names, ytr) in extra.items():
        if not pres.any():
            continue
        pt = per_target_correlation(ytrue[pres], yhat[pres], targets=names, min_n=cfg.evaluation.min_n)
        with np.errstate(all="ignore"):
            trp = ytr[~np.isnan(ytr).all(axis=1)]
            pt["train_mean"] = np.nanmean(trp, axis=0) if len(trp) else np.nan
            pt["train_var"] = np.nanvar(trp, axis=0) if len(trp) > 1 else np.nan
        pt.insert(0, "modality", mod)
        pt.insert(0, "fold", fold)
        mrows.append(pt)
        pids = [data.patients[i] for i in test_idx[pres]]
        center = pt["train_mean"].to_numpy()
        ps = per_sample_correlation(ytrue[pres], yhat[pres], samples=pids,
                                    center=np.nan_to_num(center), min_n=cfg.evaluation.min_n)
        ps = ps.rename(columns={"sample": "patient_id"})
        ps.insert(0, "modality", mod)
        ps.insert(0, "fold", fold)
        prows.append(ps)
        n, m = int(pres.sum()), len(names)
        slides = [";".join(data.slide_ids[i]) for i in test_idx[pres]]
        preds.append(pd.DataFrame({
            "fold": fold,
            "patient_id": np.repeat(pids, m),
            "slide_ids": np.repeat(slides, m),
            "modality": mod,
            "target": np.tile(np.asarray(names, dtype=object), n),
            "y_true": ytrue[pres].reshape(-1),
            "y_pred": yhat[pres].reshape(-1),
        }))
    return mrows, prows, preds


def _features_meta(data: ExperimentData) -> dict[str, Any]:
    return {k: (v if not isinstance(v, np.generic) else v.item()) for k, v in data.features.items()}


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool = False,
    data: ExperimentData | None = None,
) -> RunResult:
    """Cross-validate ``cfg``'s model and write the run directory (see module docstring).

    Parameters
    ----------
    cfg
        A validated :class:`~histoviz.training.config.ExperimentConfig`.
    out_dir
        Run directory (created; existing files are replaced).
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

    from histoviz.evaluation.compare import summarise_run
    from histoviz.training.checkpoint import FittedPipeline, save_checkpoint
    from histoviz.training.config import config_to_dict
    from histoviz.training.data import load_experiment_data, patient_folds

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = load_experiment_data(cfg, progress=progress)
    log.info("%s", data.summary())
    folds = patient_folds(
        len(data.patients), cfg.evaluation.n_folds, cfg.seed,
        given=data.cohort_folds if cfg.evaluation.use_cohort_folds else None,
    )
    n_folds = int(folds.max()) + 1
    if n_folds < 2:
        raise DataError("cross-validation needs at least 2 folds (cohort 'fold' column has one value)")
    smallest = int(np.bincount(folds).min())
    if smallest < cfg.evaluation.min_n:
        raise DataError(
            f"{len(data.patients)} patients in {n_folds} folds leave {smallest} held-out patient(s) in a fold; "
            f"correlations need >= {cfg.evaluation.min_n} (evaluation.min_n): use fewer folds or more patients"
        )
    resolved = config_to_dict(cfg)
    resolved["_run"] = {"n_patients": len(data.patients), "n_folds": n_folds, "features": _features_meta(data)}
    atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))

    mrows: list[pd.DataFrame] = []
    prows: list[pd.DataFrame] = []
    preds: list[pd.DataFrame] = []
    hist: list[pd.DataFrame] = []
    sel: dict[str, Any] = {"folds": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_folds + int(cfg.training.final_model), desc=f"{cfg.name} folds", unit="fold")
    try:
        for k in range(n_folds):
            test_idx = np.flatnonzero(folds == k)
            train_idx = np.flatnonzero(folds != k)
            tf = time.perf_counter()
            model, preps, blocks, fit_idx, val_idx = fit_pipeline(cfg, data, train_idx, seed=cfg.seed + k)
            a, b, c = _score_fold(cfg, data, model, blocks, train_idx, test_idx, k)
            mrows += a
            prows += b
            preds += c
            info = model.fit_info()
            h = info.pop("history", None)
            if h:
                hd = pd.DataFrame(h)
                hd.insert(0, "fold", k)
                hist.append(hd)
            info.pop("contrastive", None)
            sel["folds"].append({"fold": k, "n_fit": len(fit_idx), "n_val": len(val_idx), "n_test": len(test_idx),
                                 "seconds": round(time.perf_counter() - tf, 3), **info})
            save_checkpoint(
                FittedPipeline(model, preps, _features_meta(data),
                               {"fold": k, "run": cfg.name, "test_patients": [data.patients[i] for i in test_idx]}),
                out / "checkpoints" / f"fold{k}",
            )
            if bar is not None:
                bar.update(1)
        val_losses = []
        for f in sel["folds"]:
            bv = f.get("best_val")
            bv = bv.get("total") if isinstance(bv, dict) else bv
            val_losses.append(bv if isinstance(bv, (int, float)) and np.isfinite(bv) else np.inf)
        sel["selected_fold"] = int(np.argmin(val_losses)) if np.isfinite(val_losses).any() else 0
        sel["selection_rule"] = "lowest validation loss (validation split of the training patients)"
        final_split = np.full(len(data.patients), "", dtype=object)
        if cfg.training.final_model:
            all_idx = np.arange(len(data.patients))
            model, preps, _, fit_idx, val_idx = fit_pipeline(cfg, data, all_idx, seed=cfg.seed + 1000)
            final_split[fit_idx] = "train"
            final_split[val_idx] = "val"
            info = model.fit_info()
            info.pop("history", None)
            info.pop("contrastive", None)
            sel["final"] = {"n_fit": len(fit_idx), "n_val": len(val_idx), **info}
            save_checkpoint(FittedPipeline(model, preps, _features_meta(data), {"fold": "final", "run": cfg.name}),
                            out / "checkpoints" / "final")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    metrics = pd.concat(mrows, ignore_index=True)
    metrics.insert(0, "model", cfg.name)
    pmet = pd.concat(prows, ignore_index=True)
    pmet.insert(0, "model", cfg.name)
    predictions = pd.concat(preds, ignore_index=True)
    predictions.insert(0, "model", cfg.name)
    for df in (metrics, pmet, predictions):
        for c in ("model", "modality"):
            df[c] = df[c].astype("category")
    predictions["target"] = predictions["target"].astype("category")
    _write_parquet(metrics, out / "metrics.parquet")
    _write_parquet(pmet, out / "patient_metrics.parquet")
    _write_parquet(predictions, out / "predictions.parquet")
    if hist:
        hd = pd.concat(hist, ignore_index=True)
        hd.insert(0, "model", cfg.name)
        _write_parquet(hd, out / "history.parquet")
    atomic_write_text(
        out / "folds.csv",
        pd.DataFrame({"patient_id": data.patients, "fold": folds, "split_in_final": final_split}).to_csv(index=False),
    )
    sel["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_text(out / "selection.json", json.dumps(_clean(sel), indent=1))
    summary = summarise_run(out, topk=cfg.evaluation.topk, criteria=cfg.evaluation.topk_criteria)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    log.info("%s: %d folds in %.1f s -> %s", cfg.name, n_folds, sel["seconds"], out)
    return RunResult(out, metrics, pmet, predictions, summary, sel, sel["seconds"])


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
