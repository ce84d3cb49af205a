"""``run_spot_experiment``: leave-one-sample-out (patient-out) evaluation of spot models.

The spot-level counterpart of :func:`histoviz.training.runner.run_experiment`, on the same
pieces: the strictly validated config (``data.spots``, ``evaluation.spots``), the model
registry and estimator API, :class:`~histoviz.io.rundir.RunWriter` (resumable, published whole),
long metrics, held-out tables and safetensors checkpoints.

Units: a **sample** is one tissue section with its spots; each spot has one patch (one feature
vector) and one measured expression vector. Folds hold out every sample of one patient
(``evaluation.spots.split: patient``; a sample is its own patient when none is recorded) or one
sample (``sample``). Per fold:

1. expression of every spot is total-count normalised and ``log1p`` transformed (per spot, no
   statistic shared across spots);
2. the targets (``data.spots.n_genes`` HVG, plus the HEG and marker sets) and the evaluation gene
   sets are chosen on the **training samples' spots only** (:func:`~histoviz.data.spatial.select_genes`);
3. a validation split of the training data drives early stopping: whole training samples (by
   patient, ``training.val_fraction`` of them, at least one) when there are >= 3 training
   patients, else that fraction of the training spots;
4. the main model, the comparison models, the controls (training mean; the main model trained on
   expression permuted across all training spots) and the HEST encoder
   comparison (standardise + PCA-256 + ridge on each encoder's features) are fitted; retrieval
   models are evaluated at every ``evaluation.spots.top_k``;
5. every held-out sample is scored (:func:`histoviz.evaluation.spots.spot_metrics`): the
   ``fold`` column of the metrics is the held-out **sample** (the unit of mean +- std).

Run directory additions (besides the layout of :mod:`histoviz.io.rundir`): ``samples.parquet``
(sample_id, patient_id, path, slide_path, n_spots, spot_diameter_px, mpp, fold, checkpoint) and
``heldout/gene.parquet`` (model, fold, sample_id, spot, x, y, target, y_true, y_pred; every
model's rows, comparison models and controls included, for the evaluated gene sets, so any
comparison can be recomputed). ``run.json`` has ``level: spot``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind
from histoviz.training.spot_data import SpotExperimentData, load_spot_data, spot_folds

if TYPE_CHECKING:
    from histoviz.data.spatial import GeneSets, SpotSample
    from histoviz.training.config import ExperimentConfig
    from histoviz.training.runner import RunResult

__all__ = ["FoldPrep", "SpotExperimentData", "fit_spot_model", "load_spot_data", "prepare_fold",
           "run_spot_experiment", "spot_folds"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# one fold
# ------------------------------------------------------------------------------------------------
@dataclass
class FoldPrep:
    """What a fold fits on: its training samples, gene sets and training targets."""

    train: list[int]
    genes: GeneSets
    y: list[np.ndarray]

    @property
    def targets(self) -> list[str]:
        """Target genes."""
        return self.genes.targets


def prepare_fold(cfg: ExperimentConfig, data: SpotExperimentData, train: Sequence[int]) -> FoldPrep:
    """Choose targets and gene sets on the ``train`` samples' spots only; their target matrices."""
    import scipy.sparse as sp

    from histoviz.data.spatial import select_genes

    spec, ev = cfg.data.spots, cfg.evaluation.spots
    train = [int(i) for i in train]
    x = sp.vstack([data.normalized(i) for i in train]).tocsr()
    batches = np.concatenate([np.full(len(data.samples[i]), data.samples[i].sample_id, dtype=object) for i in train])
    gs = select_genes(x, data.genes, batches, n_genes=spec.n_genes, n_hvg=ev.n_hvg, n_heg=ev.n_heg,
                      markers=spec.markers)
    return FoldPrep(train, gs, [data.expression(i, gs.targets) for i in train])


def _val_split(data: SpotExperimentData, train: list[int], frac: float, seed: int) -> tuple[list[tuple[int, np.ndarray]],
                                                                                          list[tuple[int, np.ndarray]]]:
    """``(fit, val)`` as lists of ``(sample, spot rows)``."""
    rng = np.random.default_rng(seed + 104729)
    allrows = [(i, np.arange(len(data.samples[i]))) for i in train]
    if frac <= 0:
        return allrows, []
    pats = list(dict.fromkeys(data.samples[i].patient_id for i in train))
    if len(pats) >= 3:
        n_val = max(1, int(round(frac * len(pats))))
        vp = set(rng.choice(pats, size=min(n_val, len(pats) - 1), replace=False).tolist())
        fit = [(i, r) for i, r in allrows if data.samples[i].patient_id not in vp]
        val = [(i, r) for i, r in allrows if data.samples[i].patient_id in vp]
        return fit, val
    fit, val = [], []
    for i, r in allrows:
        m = rng.random(len(r)) < frac
        fit.append((i, r[~m]))
        val.append((i, r[m]))
    return fit, val


def _stack(data: SpotExperimentData, prep: FoldPrep, parts: list[tuple[int, np.ndarray]],
           encoder: str) -> tuple[np.ndarray, np.ndarray]:
    pos = {s: k for k, s in enumerate(prep.train)}
    xs, ys = [], []
    for i, rows in parts:
        y = prep.y[pos[i]]
        xs.append(data.features[encoder][i][rows])
        ys.append(y[rows])
    d = data.features[encoder][prep.train[0]].shape[1]
    if not xs:
        return np.zeros((0, d), np.float32), np.zeros((0, len(prep.targets)), np.float32)
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)


def fit_spot_model(cfg: ExperimentConfig, data: SpotExperimentData, prep: FoldPrep, name: str,
                   params: dict[str, Any] | None = None, *, encoder: str | None = None, seed: int = 0,
                   shuffle: bool = False, where: str = "model.params") -> Any:
    """Fit registered model ``name`` on a fold's training spots (validation split inside).

    The model is built by :func:`~histoviz.training.prepare.build_model`: ``params`` (default:
    none; ``model.params`` for the config's model) plus the config's loop settings for a model
    that trains with the loop.

    ``shuffle`` permutes the expression across all training spots (the shuffled control: images
    and expression keep their distributions and lose their pairing). Models without the spot fast path get one-patch bags.
    Models that train their image encoder on the patches (``uses_patches``) get the spots' patches
    (:meth:`SpotExperimentData.patches`) instead of features.
    """
    from histoviz.data.targets import TargetBlock
    from histoviz.training.prepare import build_model

    enc = encoder or data.encoder
    fit, val = _val_split(data, prep.train, float(cfg.training.val_fraction), seed)
    x, y = _stack(data, prep, fit, enc)
    xv, yv = _stack(data, prep, val, enc)
    if shuffle:  # one permutation of all training spots (fit and validation alike)
        rng = np.random.default_rng(seed + 7919)
        perm = rng.permutation(len(y) + len(yv))
        ya = np.concatenate([y, yv])[perm]
        y, yv = ya[:len(y)], ya[len(y):]
    model = build_model(cfg, name, params or {}, where=where)
    blk = TargetBlock("gene", prep.targets, y, np.ones(len(y), bool))
    vblk = TargetBlock("gene", prep.targets, yv, np.ones(len(yv), bool)) if len(yv) else None
    if getattr(model, "uses_patches", False):
        x, xv = data.patches(fit), data.patches(val)
    if hasattr(model, "fit_spots"):
        model.fit_spots(x, blk, val=(xv, vblk) if vblk is not None else None)
    else:
        v = ([r[None, :] for r in xv], {"gene": vblk}) if vblk is not None else None
        model.fit([r[None, :] for r in x], {"gene": blk}, val=v)
    model.n_fit_, model.n_val_ = len(x), len(xv)
    return model


def predict_spots_with(model: Any, x: np.ndarray) -> np.ndarray:
    """``(n_spots, n_targets)`` predictions of any regression model for spot features."""
    if hasattr(model, "predict_spots"):
        return model.predict_spots(x)
    return np.asarray(model.predict([r[None, :] for r in np.asarray(x, np.float32)])["gene"], np.float64)


def spot_inputs(model: Any, data: SpotExperimentData, i: int, encoder: str) -> np.ndarray:
    """What ``model`` predicts sample ``i`` from: the sample's features of ``encoder``, or, for a
    model that trained its image encoder on the patches, that encoder's features of its patches."""
    if getattr(model, "uses_patches", False):
        return model.encode_patches(data.patches([(int(i), np.arange(len(data.samples[int(i)])))]))
    return data.features[encoder][int(i)]


def _labelled_predictions(model: Any, label: str, x: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    if ks and hasattr(model, "top_k"):
        out = {}
        old = model.top_k
        for k in ks:
            model.top_k = int(k)
            out[f"{label}-{k}"] = predict_spots_with(model, x)
        model.top_k = old
        return out
    return {label: predict_spots_with(model, x)}


def _run_fold(cfg: ExperimentConfig, data: SpotExperimentData, test: np.ndarray, key: str, seed: int,
              writer: Any) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    from histoviz.evaluation.spots import spot_metrics
    from histoviz.models import control_model
    from histoviz.models.checkpoint import FittedPipeline, save_checkpoint
    from histoviz.training.prepare import loop_record

    t0 = time.perf_counter()
    ev = cfg.evaluation.spots
    final = key == "final"
    train = [i for i in range(len(data.samples)) if i not in set(test.tolist())]
    prep = prepare_fold(cfg, data, train)
    main = fit_spot_model(cfg, data, prep, cfg.model.name, cfg.model.params, seed=seed,
                          shuffle=bool(cfg.training.shuffle_labels))
    test_ids = [data.sample_ids[i] for i in test]
    if ev.top_k and hasattr(main, "top_k"):  # the checkpoint predicts with the first evaluated k
        main.top_k = int(ev.top_k[0])
    save_checkpoint(FittedPipeline(main, {}, _with_image_side(_features_meta(cfg, data), main),
                                   {"fold": key, "run": cfg.name, "level": "spot", "test_samples": test_ids,
                                    "gene_sets": prep.genes.sets, "target_sum": data.target_sum}),
                    writer.checkpoint_dir(key))
    info = main.fit_info()
    history = info.pop("history", None)
    info.update({"fold": key, "n_fit": int(main.n_fit_), "n_val": int(main.n_val_), "test_samples": test_ids,
                 "train_samples": [data.sample_ids[i] for i in train]})
    if (rec := loop_record(main)) is not None:
        info["loop"] = {cfg.name: rec}
    tables: dict[str, pd.DataFrame] = {}
    if history:
        tables["history"] = pd.DataFrame(history)
    split_rows = [{"sample_id": data.sample_ids[i], "patient_id": data.samples[i].patient_id,
                   "split": "test" if i in set(test.tolist()) else "train", "n_spots": len(data.samples[i])}
                  for i in range(len(data.samples))]
    tables["splits"] = pd.DataFrame(split_rows)
    if final:
        info["seconds"] = round(time.perf_counter() - t0, 3)
        return tables, {"info": info}

    ks = tuple(ev.top_k)
    main_label = cfg.name
    fitted: list[tuple[str, Any, str]] = [(main_label, main, data.encoder)]
    for c in ev.compare_models():
        m = fit_spot_model(cfg, data, prep, c["name"], c["params"], seed=seed, where="evaluation.spots.compare")
        fitted.append((c["label"], m, data.encoder))
    if "mean" in ev.controls:
        mean = control_model("mean", level="spot").name
        fitted.append((mean, fit_spot_model(cfg, data, prep, mean, seed=seed), data.encoder))
    if "shuffled" in ev.controls:
        fitted.append((f"{main_label}-shuffled", fit_spot_model(cfg, data, prep, cfg.model.name, cfg.model.params,
                                                                seed=seed, shuffle=True), data.encoder))
    for enc in ev.encoders:
        fitted.append((f"ridge[{enc}]", fit_spot_model(cfg, data, prep, "ridge", encoder=enc, seed=seed), enc))
    info["loop"] = {label: rec for label, m, _ in fitted if (rec := loop_record(m)) is not None}

    sets = prep.genes.sets
    eval_genes = list(dict.fromkeys(g for gs in sets.values() for g in gs))
    ecols = pd.Index(prep.targets).get_indexer(eval_genes)
    mrows, hrows, trows = [], [], []
    main_labels: list[str] = []
    for label, model, enc in fitted:
        for i in test:
            s = data.samples[i]
            y_true = data.expression(int(i), prep.targets)
            preds = _labelled_predictions(model, label, spot_inputs(model, data, int(i), enc), ks)
            for lab, p in preds.items():
                m = spot_metrics(y_true, p, prep.targets, sets, min_n=ev.min_n)
                m.insert(0, "kind", TaskKind.REGRESSION.value)
                m.insert(0, "task", "gene")
                m.insert(0, "fold", int(i))
                m.insert(0, "model", lab)
                mrows.append(m)
                if model is main and lab not in main_labels:
                    main_labels.append(lab)
                hrows.append(_heldout(lab, int(i), s, eval_genes, y_true[:, ecols], p[:, ecols]))
    for i in test:
        trows.append(pd.DataFrame({"fold": int(i), "task": "gene", "target": prep.targets,
                                   "train_mean": prep.genes.mean, "train_var": prep.genes.var,
                                   "hvg_rank": prep.genes.hvg_rank}))
    tables["metrics"] = pd.concat(mrows, ignore_index=True)
    tables["heldout__gene"] = pd.concat(hrows, ignore_index=True)
    tables["targets"] = pd.concat(trows, ignore_index=True)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    info["labels"] = list(dict.fromkeys(tables["metrics"]["model"]))
    info["main_labels"] = main_labels
    info["gene_sets"] = sets
    return tables, {"info": info}


def _heldout(label: str, fold: int, s: SpotSample, genes: list[str], yt: np.ndarray, yp: np.ndarray) -> pd.DataFrame:
    n, m = yt.shape
    return pd.DataFrame({
        "model": label, "fold": fold, "sample_id": s.sample_id, "patient_id": s.patient_id,
        "spot": np.repeat(np.asarray(s.barcodes, dtype=object), m),
        "x": np.repeat(s.centres[:, 0], m), "y": np.repeat(s.centres[:, 1], m),
        "target": np.tile(np.asarray(genes, dtype=object), n),
        "y_true": yt.reshape(-1).astype(np.float64), "y_pred": yp.reshape(-1).astype(np.float64),
    })


def _features_meta(cfg: ExperimentConfig, data: SpotExperimentData) -> dict[str, Any]:
    """Feature provenance for checkpoints: what ``histoviz predict`` needs to embed new spots or tiles."""
    spec = cfg.data.spots
    a = data.feature_meta.get(data.encoder, {})
    p = spec.patch
    if p.size_um is None:
        diam_um = float(np.median([s.spot_diameter_px * s.mpp for s in data.samples]))
        tiling = {"tile_size": int(p.tile_px), "mpp": diam_um / int(p.tile_px)}
    else:
        tiling = {"tile_size": int(round(p.size_um / p.mpp)), "mpp": float(p.mpp)}
    out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in a.items()
           if k in ("encoder", "encoder_weights", "embed_dim", "tile_size", "mpp")}
    out.update({"encoder": data.encoder, "embed_dim": int(data.features[data.encoder][0].shape[1]),
                "embed": {"encoder": data.encoder, "pretrained": bool(spec.pretrained),
                          "weights": spec.weights, "tiling": {**tiling, "min_tissue_fraction": 0.5}},
                "level": "spot", "spot_patch": {"size_um": p.size_um, "mpp": p.mpp, "tile_px": p.tile_px},
                "target_sum": float(spec.target_sum), "transform": "log1p"})
    return out


def _with_image_side(meta: dict[str, Any], model: Any) -> dict[str, Any]:
    """Checkpoint provenance of a model that fine-tuned its image encoder: its features are that
    encoder's (``histoviz predict`` embeds with the encoder saved in the checkpoint)."""
    side = model.image_side() if hasattr(model, "image_side") else {}
    if not side:
        return meta
    out = dict(meta)
    out.update({"encoder": side["encoder"], "encoder_weights": side["encoder_weights"], "embed_dim": side["embed_dim"]})
    out["embed"] = {**meta["embed"], "encoder": side["encoder"], "pretrained": side["pretrained"],
                    "weights": side["weights"], "finetuned": side}
    return out


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
def run_spot_experiment(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool = False,
    data: SpotExperimentData | None = None,
) -> RunResult:
    """Leave-one-sample-out (patient-out) evaluation of ``cfg``; publishes the run directory.

    Parameters
    ----------
    cfg
        A validated config with ``data.spots``.
    out_dir
        Run directory (replaced as a whole when the new run is complete).
    progress
        Progress bars (embedding, folds).
    data
        Pre-loaded :class:`SpotExperimentData` (tests share one load).

    Returns
    -------
    :class:`~histoviz.training.runner.RunResult` (``summary``: the model x gene-set table, long).

    Raises
    ------
    DataError, ConfigError
        Bad input, detected before any training.
    """
    import yaml

    from histoviz.data.identity import spot_identity
    from histoviz.evaluation.spots import spot_table
    from histoviz.io.rundir import RunWriter, fingerprint
    from histoviz.training.config import config_to_dict
    from histoviz.training.prepare import prepare_spot_run, run_record

    t0 = time.perf_counter()
    out = Path(out_dir)
    prep = prepare_spot_run(cfg, data=data, progress=progress)  # read and check everything, then fit
    data, folds = prep.data, prep.folds
    resolved = config_to_dict(cfg)
    resolved["_run"] = {"n_samples": len(data.samples), "n_folds": len(folds), "level": "spot",
                        "features": _features_meta(cfg, data),
                        "identity": spot_identity(data.samples, data.genes, folds)}
    inputs = [s.path for s in data.samples] + [str(Path(cfg.data.spots.features) / e) for e in data.features]
    fp = fingerprint({**resolved, "_samples": data.sample_ids, "_folds": [f.tolist() for f in folds]}, inputs)
    with RunWriter(out, fp) as w:
        w.write_text("config.yaml", yaml.safe_dump(resolved, sort_keys=False))

        def work(key: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
            test, seed = prep.split(key)
            return _run_fold(cfg, data, test, key, seed, w)

        pieces = w.run_pieces(prep.keys, work, progress=progress, desc=f"{cfg.name} folds")
        result = _assemble(cfg, data, folds, pieces, w, t0)
        summary = pd.concat([spot_table(result.metrics, metric=m) for m in ("pearson", "spearman", "mse")] +
                            [spot_table(result.metrics[result.metrics["axis"] == "gene-gene"],
                                        metric="gene_corr_preservation")], ignore_index=True)
        result.summary = summary
        w.write_text("summary.csv", summary.to_csv(index=False))
        infos = [i["info"] for k, (_, i) in pieces.items() if k != "final"]
        labels = list(dict.fromkeys(lab for i in infos for lab in i.get("labels", [])))
        main_labels = list(dict.fromkeys(lab for i in infos for lab in i.get("main_labels", [])))
        w.publish({"name": cfg.name, "model": cfg.model.name, "level": "spot", "n_folds": len(folds),
                   "n_samples": len(data.samples), "blocks": {"gene": TaskKind.REGRESSION}, "labels": labels,
                   "main_labels": main_labels, "seconds": result.seconds, **run_record(cfg, infos)})
    result.out_dir = out
    log.info("%s: %d folds in %.1f s -> %s", cfg.name, len(folds), result.seconds, out)
    return result


def _assemble(cfg: ExperimentConfig, data: SpotExperimentData, folds: list[np.ndarray],
              pieces: dict[str, tuple[dict[str, pd.DataFrame], dict[str, Any]]], w: Any, t0: float) -> RunResult:
    from histoviz.io.rundir import concat_pieces
    from histoviz.training.runner import RunResult, selection

    def cat(name: str, fold_col: bool = False) -> pd.DataFrame | None:
        return concat_pieces(pieces, name, fold_col=fold_col)

    metrics = cat("metrics")
    if metrics is None:
        raise DataError(f"{cfg.name}: no fold produced metrics")
    for c in ("model", "task", "kind", "metric", "axis", "subset"):
        metrics[c] = metrics[c].astype("category")
    w.write_table("metrics.parquet", metrics)
    targets = cat("targets")
    if targets is not None:  # one copy per table row label, so top-k subsets match every model's rows
        labels = list(dict.fromkeys(metrics["model"].astype(str)))
        targets = pd.concat([targets.assign(model=lab) for lab in labels], ignore_index=True)
        w.write_table("targets.parquet", targets[["model", *[c for c in targets.columns if c != "model"]]])
    held = cat("heldout__gene")
    heldout = {}
    if held is not None:
        for c in ("model", "sample_id", "patient_id", "target"):
            held[c] = held[c].astype("category")
        w.write_table("heldout/gene.parquet", held)
        heldout["gene"] = held
    hist = cat("history", fold_col=True)
    if hist is not None:
        hist.insert(0, "model", cfg.name)
        w.write_table("history.parquet", hist)
    splits = cat("splits", fold_col=True)
    if splits is not None:
        w.write_table("splits.parquet", splits)
    sample_fold = {int(i): k for k, f in enumerate(folds) for i in f}
    w.write_table("samples.parquet", pd.DataFrame({
        "sample_id": data.sample_ids, "patient_id": [s.patient_id for s in data.samples],
        "path": [s.path for s in data.samples], "slide_path": [s.slide_path for s in data.samples],
        "n_spots": [len(s) for s in data.samples], "spot_diameter_px": [s.spot_diameter_px for s in data.samples],
        "mpp": [s.mpp for s in data.samples], "fold": [sample_fold[i] for i in range(len(data.samples))],
        "checkpoint": [f"fold{sample_fold[i]}" for i in range(len(data.samples))],
    }))
    sel = {"level": "spot", **selection(pieces, "samples", t0)}
    w.write_json("selection.json", sel)
    w.write_json("conformal.json", {})
    return RunResult(w.out, metrics, heldout, pd.DataFrame(), sel, sel["seconds"])
