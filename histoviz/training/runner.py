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

from histoviz.errors import ConfigError, DataError
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


def _served(cfg: ExperimentConfig, data: ExperimentData) -> list[str]:
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
    from histoviz.models import create_model
    from histoviz.training.data import inner_split

    preps: dict[str, Any] = {}
    blocks: dict[str, Any] = {}
    for m in _served(cfg, data):
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
    model = create_model(cfg.model.name, **cfg.model_kwargs())
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
    from histoviz.data.omics import TargetBlock, pathway_activity

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


def _run_fold(cfg: ExperimentConfig, data: ExperimentData, train_idx: np.ndarray, test_idx: np.ndarray,
              key: str, seed: int, writer: Any) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    from histoviz.models.checkpoint import FittedPipeline, save_checkpoint
    from histoviz.tasks import get_task
    from histoviz.training.data import calibration_split

    t0 = time.perf_counter()
    final = key == "final"
    rest, cal_idx = calibration_split(train_idx, cfg.evaluation.calibration_fraction, seed)
    model, preps, blocks, fit_idx, val_idx = fit_pipeline(cfg, data, rest, seed=seed)
    conf = _conformal(cfg, data, blocks, model, cal_idx, train_idx, f"fold {key} calibration split")
    save_checkpoint(FittedPipeline(model, preps, _features_meta(data),
                                   {"fold": key, "run": cfg.name, "conformal": conf,
                                    "test_patients": [data.patients[i] for i in test_idx]}),
                    writer.checkpoint_dir(key))
    info = model.fit_info()
    history = info.pop("history", None)
    info.pop("contrastive", None)
    info.update({"fold": key, "n_fit": len(fit_idx), "n_val": len(val_idx), "n_cal": len(cal_idx),
                 "n_test": len(test_idx)})
    splits = pd.DataFrame({"patient_id": [data.patients[i] for i in (*fit_idx, *val_idx, *cal_idx, *test_idx)],
                           "split": ["fit"] * len(fit_idx) + ["val"] * len(val_idx) + ["cal"] * len(cal_idx)
                           + ["test"] * len(test_idx)})
    tables: dict[str, pd.DataFrame] = {"splits": splits}
    if history:
        tables["history"] = pd.DataFrame(history)
    if final:
        info["seconds"] = round(time.perf_counter() - t0, 3)
        return tables, {"info": info, "conformal": conf}

    cs = cfg.evaluation.conformal
    pred = model.predict(take(data.bags, test_idx), **_input_kw(model, blocks, test_idx))
    pids = [data.patients[i] for i in test_idx]
    sids = [";".join(data.slide_ids[i]) for i in test_idx]
    mrows, trows = [], []
    held: dict[str, pd.DataFrame] = {}
    items: list[tuple[str, Any, np.ndarray, Any]] = [(b, blocks[b], pred[b], preps.get(b)) for b in pred]
    extra = _pathway_block(cfg, data, model, pred)
    if extra is not None:
        name, blk, vals = extra
        items.append((name, blk.subset(test_idx), vals, None))
    for b, blk_all, p, prep in items:
        blk = blk_all if extra is not None and b == extra[0] else blk_all.subset(test_idx)
        task = get_task(blk)
        train_vals = None
        if task.kind == TaskKind.REGRESSION:
            src = data.omics[b] if b in data.omics.modalities else None
            if src is not None and prep is not None:
                cols = pd.Index(src.targets).get_indexer(blk.targets)
                train_vals = src.values[np.ix_(rest[src.present[rest]], cols)]
                raw_blk = type(blk)(blk.modality, blk.targets, _raw_scale(blk, prep, blk.values), blk.present)
                m = task.metrics(raw_blk, _raw_scale(blk, prep, p), min_n=cfg.evaluation.min_n,
                                 train=train_vals, patients=pids)
            else:
                if extra is not None and b == extra[0]:
                    src_m = data.omics[cfg.data.pathway_from_predictions["compare_to"]]
                    cols = pd.Index(src_m.targets).get_indexer(blk.targets)
                    train_vals = src_m.values[np.ix_(rest[src_m.present[rest]], cols)]
                m = task.metrics(blk, p, min_n=cfg.evaluation.min_n, train=train_vals, patients=pids)
            if train_vals is not None and len(train_vals):
                with np.errstate(all="ignore"):
                    trows.append(pd.DataFrame({
                        "task": b, "target": blk.targets,
                        "train_mean": np.nanmean(train_vals, axis=0),
                        "train_var": np.nanvar(train_vals, axis=0) if len(train_vals) > 1 else np.nan,
                    }))
        else:
            m = task.metrics(blk, p, min_n=cfg.evaluation.min_n, patients=pids,
                             train=blocks[b].subset(rest) if task.kind == TaskKind.SURVIVAL else None)
        h = task.heldout(blk, p, patients=pids, slide_ids=sids)
        if b in conf:
            entry = conf[b]
            q = entry["qhat"]
            if "qhat_by_group" in entry:
                groups = data.groups[test_idx]
                q = np.array([entry["qhat_by_group"].get(g, entry["qhat"]) for g in groups], dtype=object)
                q = np.stack([np.asarray(v, np.float64) for v in q])
            reg = task.regions(p, q, cs, info=entry)
            cov = task.coverage(blk, p, reg, cs, info=entry)
            m = pd.concat([m, cov], ignore_index=True)
            if data.groups is not None:
                g_test = data.groups[test_idx]
                for g in dict.fromkeys(g_test.tolist()):
                    sel = g_test == g
                    sub = {k: v[sel] for k, v in reg.items()}
                    cg = task.coverage(blk.subset(np.flatnonzero(sel)), p[sel], sub, cs, info=entry)
                    if not cg.empty:
                        cg["subset"] = f"{cs.group}={g}"
                        m = pd.concat([m, cg], ignore_index=True)
            h = task.with_regions(h, blk, reg)
        if not m.empty:
            m.insert(0, "kind", task.kind)
            m.insert(0, "task", b)
            mrows.append(m)
        h.insert(0, "fold", int(key))
        if task.kind == TaskKind.REGRESSION:
            h.insert(1, "task", b)
        held[b] = h
    if mrows:
        tables["metrics"] = pd.concat(mrows, ignore_index=True)
    if trows:
        tables["targets"] = pd.concat(trows, ignore_index=True)
    for b, h in held.items():
        tables[f"heldout__{b}"] = h
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return tables, {"info": info, "conformal": conf}


def _features_meta(data: ExperimentData) -> dict[str, Any]:
    return {k: (v if not isinstance(v, np.generic) else v.item()) for k, v in data.features.items()}


def _check_sizes(cfg: ExperimentConfig, data: ExperimentData, folds: np.ndarray | list[np.ndarray]) -> None:
    """Fold and calibration sizes on the loaded patients (survival counts patients with an event)."""
    from histoviz.training.preflight import calibratable_of, check_fold_sizes

    check_fold_sizes(cfg, len(data.patients), folds, calibratable_of(cfg, data, _served(cfg, data)))


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

    from histoviz.io.rundir import RunWriter, fingerprint
    from histoviz.training.config import config_to_dict
    from histoviz.training.data import load_experiment_data, patient_folds

    t0 = time.perf_counter()
    out = Path(out_dir)
    if data is None:
        from histoviz.training.preflight import preflight

        preflight(cfg)  # config vs data, before any embedding or loading
        data = load_experiment_data(cfg, progress=progress)
    log.info("%s", data.summary())
    given = data.cohort_folds if cfg.evaluation.use_cohort_folds else None
    folds = patient_folds(len(data.patients), cfg.evaluation.n_folds, cfg.seed, given=given)
    _served(cfg, data)
    n_folds = int(folds.max()) + 1
    repeats = int(cfg.evaluation.repeats)
    if repeats > 1 and given is not None:
        raise ConfigError("evaluation.repeats > 1 needs random folds; set evaluation.use_cohort_folds: false "
                          "(the cohort table fixes one fold per patient)")
    # repeat r re-draws the patient folds with its own seed; fold ids run on across repeats
    all_folds = [folds] + [patient_folds(len(data.patients), n_folds, cfg.seed + 7907 * r) for r in range(1, repeats)]
    _check_sizes(cfg, data, all_folds)
    resolved = config_to_dict(cfg)
    resolved["_run"] = {"n_patients": len(data.patients), "n_folds": n_folds, "repeats": repeats,
                        "features": _features_meta(data)}
    inputs = [cfg.data.cohort, cfg.data.features, *(s.path for s in cfg.data.omics.values())]
    fp = fingerprint({**resolved, "_patients": data.patients, "_folds": [f.tolist() for f in all_folds]}, inputs)

    keys = [str(r * n_folds + k) for r in range(repeats) for k in range(n_folds)]
    keys += ["final"] if cfg.training.final_model else []
    with RunWriter(out, fp) as w:
        w.write_text("config.yaml", yaml.safe_dump(resolved, sort_keys=False))

        def work(key: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
            if key == "final":
                train_idx, test_idx, seed = np.arange(len(data.patients)), np.array([], np.int64), cfg.seed + 1000
            else:
                r, k = divmod(int(key), n_folds)
                fr = all_folds[r]
                train_idx, test_idx = np.flatnonzero(fr != k), np.flatnonzero(fr == k)
                seed = cfg.seed + k if r == 0 else cfg.seed + 7907 * r + k
            return _run_fold(cfg, data, train_idx, test_idx, key, seed, w)

        pieces = w.run_pieces(keys, work, progress=progress, desc=f"{cfg.name} folds")
        result = _assemble(cfg, data, folds, pieces, w, t0, n_folds)
        from histoviz.evaluation.compare import summarise_metrics

        result.summary = summarise_metrics(result.metrics, targets=w.read_table("targets.parquet"),
                                           predictions=result.predictions, topk=cfg.evaluation.topk,
                                           criteria=cfg.evaluation.topk_criteria)
        w.write_text("summary.csv", result.summary.to_csv(index=False))
        w.publish({"name": cfg.name, "model": cfg.model.name, "n_folds": n_folds, "n_patients": len(data.patients),
                   "blocks": {b: data.kind(b) for b in _served(cfg, data)}, "seconds": result.seconds})
    result.out_dir = out
    log.info("%s: %d folds in %.1f s -> %s", cfg.name, n_folds, result.seconds, out)
    return result


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
    sel: dict[str, Any] = {"folds": [], "conformal": {}}
    for key, (_, info) in pieces.items():
        i = dict(info["info"])
        if key == "final":
            sel["final"] = i
        else:
            sel["folds"].append(i)
        if info.get("conformal"):
            sel["conformal"][key] = info["conformal"]
    vl = []
    for f in sel["folds"]:
        bv = f.get("best_val")
        bv = bv.get("total") if isinstance(bv, dict) else bv
        vl.append(bv if isinstance(bv, (int, float)) and np.isfinite(bv) else np.inf)
    sel["selected_fold"] = int(np.argmin(vl)) if np.isfinite(vl).any() else 0
    sel["selection_rule"] = "lowest validation loss (validation split of the training patients)"
    sel["seconds"] = round(time.perf_counter() - t0, 3)
    w.write_json("conformal.json", sel.pop("conformal"))
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
