"""``predict_slide``: the one pipeline entry from a slide to per-patch molecular maps.

Used by ``histoviz predict``, the napari plugin and the dashboard::

    adata = predict_slide("slide.svs", "runs/mtl")
    adata = predict_bag(FeatureBag.from_h5("feats/slide.h5"), "runs/mtl")

Which fitted model of a run is used (``fold=None``): ``checkpoints/final`` (fitted on all
patients) when the run has it, otherwise the fold whose **validation** loss was lowest
(``selection.json``; the validation split is part of the training data, so this choice never
looks at test patients). ``fold="ensemble"`` averages every fold's predictions; an integer
picks that fold.

The returned AnnData follows :mod:`histoviz.io.predictions` (one observation per patch). What
goes where is decided by each block's task (:meth:`histoviz.tasks.Task.patch_outputs`) and
the output registry (:mod:`histoviz.outputs`), never by the model:

- regression blocks: ``X`` = the gene modality (or the first one) in the run's target space
  (e.g. ``log10(1 + CP10k)``, z-scored when the run standardised targets), ``var_names`` =
  targets; ``obsm["pred_<modality>"]`` = the others;
- classification blocks: ``obsm["grade_proba"]`` (DataFrame, one column per class),
  ``obs["grade_pred"]``, and with a calibrated run ``obs["grade_set_size"]`` and
  ``obs["grade_uncertainty"]`` (the conformal set of each patch alone);
- survival blocks: ``obs["risk"]`` (``-sum_k S_k``), and with a calibrated run
  ``obs["risk_width"]`` and ``obs["risk_uncertainty"]``;
- extra model outputs: ``obs["attention"]``, ``obsm["cell_type_weights"]``,
  ``obsm["coattention"]``, ...;
- ``obsm["pred_pathway_from_<modality>"]``: pathway activity computed (decoupler) from the
  per-patch predicted expression, when the run's config has ``data.pathway_from_predictions``;
- ``uns["slide_prediction"]``: ``{block: {kind, targets, values, ...}}`` slide level (with the
  conformal set or interval when calibrated);
- ``uns["histoviz"]``: slide_id, slide_path, slide_dimensions, mpp, tile_size,
  tile_size_level0, model, encoder, run_dir, checkpoint, target_space, config, version,
  trained_on (JSON of :func:`histoviz.provenance.training_data`: encoder, cohort, synthetic).

Per-patch values are what the model predicts for a slide made only of patches like that one
(ABMIL: the heads applied to the patch embedding; CPNN: ``alpha * w_i T + beta``; ridge: the
affine map applied to the patch features, whose mean equals the slide prediction; PathGen's
"distributed" prediction).

Spot-level runs (``histoviz train`` with ``data.spots``): :func:`predict_spots` predicts at the
spots of a spatial sample (one observation per spot, ``obsm["measured_expression"]`` beside the
prediction, ``uns["histoviz"]["spot_diameter_px"]``); :func:`predict_slide` with such a run
predicts on a regular grid of tiles of the run's patch size (slides without spots). A model that
fine-tuned its image encoder on the spot patches (CMRCNet / BLEEP with ``image_encoder``) carries
that encoder in its checkpoint, and slides are embedded with it (one checkpoint at a time: the
folds' encoders differ, so ``fold="ensemble"`` is refused for such runs).

Cancellation: ``cancel_event`` (a ``threading.Event``) is checked between tile batches;
when set, :class:`PredictionCancelled` (a :class:`~histoviz.errors.HistovizError`) is raised
and nothing is returned. ``progress_callback(done, total)`` is called after every batch of
tiles (``total`` = number of tiles + 1; the last step is the model).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import Cancelled, ConfigError, DataError
from histoviz.task_kinds import TaskKind

if TYPE_CHECKING:
    import anndata as ad

    from histoviz.io.featurebag import FeatureBag
    from histoviz.io.slide import SlideReader
    from histoviz.models.checkpoint import FittedPipeline

__all__ = ["PredictionCancelled", "RunModel", "embed_for_run", "load_run", "predict_bag", "predict_slide",
           "predict_spots"]

log = logging.getLogger(__name__)
_CACHE: dict[tuple[str, str, float], RunModel] = {}
_CACHE_LOCK = threading.Lock()


class PredictionCancelled(Cancelled):
    """``predict_slide`` was cancelled through its ``cancel_event``."""


class RunModel:
    """The fitted pipeline(s) of a run directory chosen for prediction.

    Attributes
    ----------
    run_dir
        The run directory.
    pipelines
        One :class:`~histoviz.models.checkpoint.FittedPipeline` (or several for
        ``fold="ensemble"``).
    checkpoint
        Which checkpoint(s): ``final``, ``fold<k>`` or ``ensemble``.
    config
        The run's resolved ``config.yaml`` as a dict.
    """

    def __init__(self, run_dir: Path, pipelines: list[FittedPipeline], checkpoint: str, config: dict[str, Any]):
        self.run_dir = run_dir
        self.pipelines = pipelines
        self.checkpoint = checkpoint
        self.config = config

    @property
    def features(self) -> dict[str, Any]:
        """Provenance of the training features (encoder, embed_dim, tile_size, mpp...)."""
        return dict(self.pipelines[0].features)

    @property
    def trained_on(self) -> dict[str, Any]:
        """What the run was trained on (:func:`histoviz.provenance.training_data`)."""
        from histoviz.provenance import training_data

        return training_data(self)

    @property
    def model_name(self) -> str:
        """Registry name of the model."""
        return str(self.pipelines[0].model.name)

    def target_space(self) -> dict[str, str]:
        """Human-readable target space per modality."""
        out = {}
        for m, p in self.pipelines[0].preprocessors.items():
            s = getattr(p, "spec", None)
            if s is None:  # outcomes: classes or survival bins
                if hasattr(p, "edges_"):
                    out[m] = f"survival per time bin ({', '.join(p.bin_labels())} {p.time_unit}); risk = -sum S"
                else:
                    out[m] = "class probabilities"
                continue
            parts = []
            if s.normalize == "total":
                parts.append(f"normalised to {s.target_sum:g} per sample")
            if s.transform != "none":
                parts.append(s.transform)
            if s.standardize:
                parts.append("z-scored with training statistics")
            out[m] = ", ".join(parts) or "as in the table"
        return out


def load_run(model_dir: str | os.PathLike, *, fold: int | str | None = None) -> RunModel:
    """Load the checkpoint(s) of a run directory (or a single checkpoint folder).

    Raises
    ------
    DataError
        Not a run directory, or the requested fold does not exist.
    """
    from histoviz.io.rundir import RunDir
    from histoviz.models.checkpoint import load_checkpoint

    d = Path(model_dir)
    if (d / "model.json").exists():  # a checkpoint folder itself
        run_dir = d.parent.parent if d.parent.name == "checkpoints" else d
        cfg = _read_yaml(run_dir / "config.yaml")
        return RunModel(run_dir, [load_checkpoint(d)], d.name, cfg)
    run = RunDir(d)
    cfg = run.config
    if fold == "ensemble":
        folds = [n for n in run.checkpoint_names() if n != "final"]
        if not folds:
            raise DataError(f"{d}/checkpoints: no fold checkpoints")
        return RunModel(d, [load_checkpoint(run.checkpoint(n)) for n in folds], "ensemble", cfg)
    if fold is None:
        name = run.default_checkpoint()
    elif fold == "final":
        name = "final"
    else:
        try:
            name = f"fold{int(fold)}"
        except (TypeError, ValueError):
            raise DataError(f"fold must be an integer, 'final', 'ensemble' or None; got {fold!r}") from None
    return RunModel(d, [load_checkpoint(run.checkpoint(name))], name, cfg)


def _read_yaml(p: Path) -> dict[str, Any]:
    import yaml

    if not p.exists():
        return {}
    return yaml.safe_load(p.read_text()) or {}


def _cached_run(model_dir: str | os.PathLike | RunModel, fold: int | str | None) -> RunModel:
    if isinstance(model_dir, RunModel):
        return model_dir
    d = Path(model_dir).resolve()
    stamp = max((p.stat().st_mtime for p in d.rglob("model.safetensors")), default=0.0)
    key = (str(d), str(fold), stamp)
    with _CACHE_LOCK:
        rm = _CACHE.get(key)
        if rm is None:
            rm = load_run(d, fold=fold)
            _CACHE.clear()
            _CACHE[key] = rm
    return rm


def _combine(maps: list[Any]) -> Any:
    """Average several folds' PatchMaps (targets intersected in the first map's order)."""
    first = maps[0]
    if len(maps) == 1:
        return first
    from histoviz.models.base import PatchMaps

    out = PatchMaps(kinds=dict(first.kinds))
    for m, names in first.targets.items():
        common = [t for t in names if all(m in pm.targets and t in pm.targets[m] for pm in maps)]
        if not common:
            continue
        out.patch[m] = np.mean([pm.patch[m][:, [pm.targets[m].index(t) for t in common]] for pm in maps], axis=0)
        out.slide[m] = np.mean([pm.slide[m][[pm.targets[m].index(t) for t in common]] for pm in maps], axis=0)
        out.targets[m] = common
    for k, v in first.extra.items():
        vals = [pm.extra.get(k) for pm in maps]
        if any(x is None for x in vals):
            continue
        if isinstance(v, pd.DataFrame):
            if all(list(x.columns) == list(v.columns) for x in vals):
                out.extra[k] = sum(vals) / len(vals)
        else:
            out.extra[k] = np.mean([np.asarray(x, np.float64) for x in vals], axis=0)
    return out


def _check_finite(pm: Any, rm: RunModel, where: str) -> None:
    """Refuse NaN or infinite predictions (a model whose weights hold NaN predicts NaN everywhere)."""
    blocks = [b for b in pm.patch if not np.isfinite(np.asarray(pm.patch[b], np.float64)).all()
              or not np.isfinite(np.asarray(pm.slide.get(b, 0.0), np.float64)).all()]
    if blocks:
        ck = Path(rm.run_dir) / "checkpoints" / rm.checkpoint / "model.safetensors"
        raise DataError(
            f"{ck if ck.is_file() else rm.run_dir}: the model predicts NaN or infinite {', '.join(blocks)} for {where} (its weights hold NaN or inf: training diverged or the "
            "checkpoint is damaged); retrain (e.g. with a lower training.lr) or predict with another checkpoint "
            "(--fold N)"
        )


def _conformal_of(rm: RunModel) -> dict[str, Any]:
    """Calibration thresholds of the chosen checkpoint (ensembles: none, they were not calibrated)."""
    if len(rm.pipelines) != 1:
        return {}
    return dict(rm.pipelines[0].info.get("conformal") or {})


def _main_regression(pm: Any) -> str | None:
    reg = [m for m, k in pm.kinds.items() if k == TaskKind.REGRESSION and m in pm.patch]
    if not reg:
        return None
    return "gene" if "gene" in reg else reg[0]


def predict_bag(
    bag: FeatureBag,
    model_dir: str | os.PathLike | RunModel,
    *,
    fold: int | str | None = None,
    device: str = "auto",
    meta: dict[str, Any] | None = None,
) -> ad.AnnData:
    """Per-patch predictions for a slide whose features exist (see the module docstring).

    Parameters
    ----------
    bag
        The slide's :class:`~histoviz.io.featurebag.FeatureBag`.
    model_dir
        Run directory, a checkpoint folder, or a :class:`RunModel`.
    fold
        ``None`` (final model, else the fold selected on validation), an int, ``"final"``
        or ``"ensemble"``.
    device
        Torch device for the model.
    meta
        Extra provenance for ``uns["histoviz"]`` (slide_path, slide_dimensions, mpp).

    Raises
    ------
    DataError
        Empty bag, or features whose dimension or encoder differ from the training features.
    """
    from histoviz.io.predictions import make_prediction_adata
    from histoviz.predict_units import clinical_uns, survival_reference_of
    from histoviz.tasks import get_task

    if device != "auto":
        from histoviz.features.embed import resolve_device

        resolve_device(device)  # an unknown or absent device is one line, before any work
    rm = _cached_run(model_dir, fold)
    _model_encoder(rm)  # refuses an ensemble of folds that fine-tuned their own encoders
    feats = rm.features
    where = bag.attrs.get("_path") or bag.slide_id
    if len(bag) == 0:
        raise DataError(f"{where}: empty feature bag (no patches)")
    bad = int((~np.isfinite(bag.features)).any(axis=1).sum()) if bag.features is not None else 0
    if bad:
        raise DataError(f"{where}: {bad} of {len(bag)} patches have NaN or infinite features (a damaged bag); "
                        "embed the slide again (histoviz embed ... --overwrite)")
    enc = bag.attrs.get("encoder")
    if feats.get("encoder") and enc and enc != feats["encoder"]:
        raise DataError(
            f"{bag.slide_id}: features made with encoder {enc!r}, but {rm.run_dir} was trained on "
            f"{feats['encoder']!r} features"
        )
    want = feats.get("embed_dim")
    if want and bag.features.shape[1] and int(want) != bag.embed_dim:
        raise DataError(
            f"{bag.attrs.get('_path') or bag.slide_id}: {bag.embed_dim}-d features ({enc or 'encoder unknown'}), but "
            f"{rm.run_dir} was trained on {int(want)}-d {feats.get('encoder')!r} features; predict with bags of that "
            "encoder (or train on these)"
        )
    _check_recipe(bag, feats, rm.run_dir)
    needs = [(p.model, tuple(getattr(p.model, "inputs", ()) or ())) for p in rm.pipelines]
    for model, names in needs:
        if names:
            raise DataError(
                f"{rm.run_dir}: {model.name} {model.input_description()}predicts from the slide plus measured "
                f"{list(names)} of its patient, which a slide alone does not have; predict this slide with a "
                "run trained without measured inputs (PathGen: model.params.setting synthetic or slide)"
            )
    maps = []
    for p in rm.pipelines:
        if device != "auto" and hasattr(p.model, "module_"):
            from dataclasses import replace

            p.model.loop = replace(p.model.loop, device=device)
            p.model.module_.to(p.model._device())
        maps.append(p.model.predict_patches(bag.features))
    pm = _combine(maps)
    _check_finite(pm, rm, where)
    conformal = _conformal_of(rm)
    main = _main_regression(pm)
    obs: dict[str, Any] = {}
    obsm: dict[str, Any] = {}
    expression, genes = None, None
    slide_pred: dict[str, Any] = {}
    refs = {b: survival_reference_of(rm, b) for b in pm.patch if pm.kinds.get(b) == TaskKind.SURVIVAL}
    for b, values in pm.patch.items():
        kind = pm.kinds.get(b, TaskKind.REGRESSION)
        task = get_task(kind)
        conf = conformal.get(b)
        ref = refs.get(b)
        outs = task.patch_outputs(b, values, pm.targets[b], conformal=conf, reference=ref)
        slide_pred[b] = task.slide_summary(b, pm.slide[b], pm.targets[b], conformal=conf, reference=ref)
        for name, v in outs.items():
            if name.startswith("pred:"):
                if b == main:
                    expression, genes = np.asarray(v, np.float32), list(v.columns)
                else:
                    obsm[f"pred_{b}"] = v
            else:
                _place(name, v, obs, obsm)
    for name, v in pm.extra.items():
        _place(name, v, obs, obsm)
    pfp = (rm.config.get("data") or {}).get("pathway_from_predictions")
    if pfp and pfp.get("from") in pm.patch:
        from histoviz.data.omics import pathway_activity

        src = pfp["from"]
        try:
            pa = pathway_activity(pd.DataFrame(pm.patch[src], columns=pm.targets[src]), pfp["network"],
                                  method=pfp.get("method", "ulm"), min_targets=int(pfp.get("min_targets", 5)))
            obsm[f"pred_pathway_from_{src}"] = pa.reset_index(drop=True).astype(np.float32)
        except (DataError, OSError) as e:
            log.warning("per-patch pathway activity skipped: %s", e)
    slide_mpp = bag.attrs.get("slide_mpp")
    dims = None
    if bag.attrs.get("slide_width") and bag.attrs.get("slide_height"):
        dims = [int(bag.attrs["slide_width"]), int(bag.attrs["slide_height"])]
    info = {
        "slide_path": str(bag.attrs.get("slide_path", "") or ""),
        "slide_dimensions": dims,
        "stride_level0": bag.attrs.get("stride_level0"),
        "mpp": float(slide_mpp) if slide_mpp is not None and float(slide_mpp) > 0 else None,
        "tile_size": bag.attrs.get("tile_size"),
        "model": rm.model_name,
        "encoder": enc or feats.get("encoder"),
        "run_dir": str(rm.run_dir),
        "checkpoint": rm.checkpoint,
        "modality": main or "",
        "tasks": json.dumps({b: pm.kinds.get(b, TaskKind.REGRESSION) for b in pm.patch}),
        "calibrated": bool(conformal),
        "target_space": json.dumps(rm.target_space()),
        "config": json.dumps(rm.config, default=str),
        "trained_on": json.dumps(rm.trained_on, default=str),
        **(meta or {}),
    }
    a = make_prediction_adata(
        bag.coords, slide_id=bag.slide_id or "slide", tile_size_level0=bag.tile_size_level0,
        expression=expression, genes=genes, obs=obs, obsm=obsm, meta=info,
    )
    a.uns["slide_prediction"] = slide_pred
    clinical_uns(a, rm, pm, refs)
    return a


def _check_recipe(bag: FeatureBag, feats: dict[str, Any], run_dir: Path) -> None:
    """Refuse a bag made at another resolution, tile size, encoder precision or with other weights
    than the run's training bags (what cannot be checked for older bags is logged)."""
    from histoviz.features.recipe import compare_recipes, embedding_recipe

    model_rec, bag_rec = embedding_recipe(feats), embedding_recipe(bag)
    keys = ["tile_size", "mpp", "precision"]
    if model_rec.get("weights") and bag_rec.get("weights"):
        keys.append("weights")
    diffs = compare_recipes(model_rec, bag_rec, keys=keys)
    real = [d for d in diffs if "not recorded" not in d]
    if real:
        raise DataError(
            f"{bag.attrs.get('_path') or bag.slide_id}: features made differently from {run_dir}'s training bags "
            f"({'; '.join(real)}); embed the slide with the run's recipe (histoviz predict --slide does)"
        )
    for d in diffs:
        log.info("%s: %s", bag.slide_id, d)


def _place(name: str, v: Any, obs: dict[str, Any], obsm: dict[str, Any]) -> None:
    """Put output ``name`` where the registry says it lives."""
    from histoviz.outputs import get_output

    spec = get_output(name)
    key = spec.anndata_key
    if spec.store in ("obs", "obs_category"):
        obs[key] = v
    elif spec.store == "obsm":
        obsm[key] = v
    else:
        raise DataError(f"output {name!r} is stored as {spec.store!r}; models write obs or obsm outputs")


def _encoder_for(rm: RunModel) -> tuple[str, dict[str, Any], dict[str, Any]]:
    f = rm.features
    embed = f.get("embed") or {}
    enc = embed.get("encoder") or f.get("encoder")
    if not enc:
        raise DataError(f"{rm.run_dir}: the run does not record which encoder made its features")
    from histoviz.features.encoders import list_encoders

    if not embed and enc not in {e.name for e in list_encoders()}:
        raise DataError(f"{rm.run_dir}: trained on features made elsewhere (encoder {enc!r}, not one histoviz runs); "
                        "predict from that encoder's feature bags: histoviz predict --model RUN --features FOLDER")
    kw: dict[str, Any] = {}
    if "pretrained" in embed:
        kw["pretrained"] = bool(embed["pretrained"])
    elif f.get("encoder_weights") == "random":
        kw["pretrained"] = False
    if embed.get("weights"):
        kw["weights"] = embed["weights"]
    tiling = dict(embed.get("tiling") or {})
    if not tiling:
        tiling = {"tile_size": int(f.get("tile_size") or 224), "mpp": f.get("mpp")}
    return enc, kw, tiling


def _features_precision(rm: RunModel) -> str:
    """The encoder precision of a run's training bags (``fp32`` for bags made before it existed)."""
    from histoviz.features.recipe import embedding_recipe

    return str(embedding_recipe(rm.features).get("precision") or "fp32")


def _model_encoder(rm: RunModel) -> Any:
    """The fine-tuned patch encoder a run's model carries (CMRCNet / BLEEP trained on patches),
    or ``None`` when the model predicts from frozen features of a registered encoder."""
    own = [p.model.patch_encoder() for p in rm.pipelines if hasattr(p.model, "patch_encoder")]
    own = [e for e in own if e is not None]
    if own and len(rm.pipelines) > 1:
        raise DataError(f"{rm.run_dir}: each fold fine-tuned its own image encoder, so the folds see different "
                        "features and cannot be averaged; predict with one checkpoint (--fold N or final)")
    return own[0] if own else None


def embed_for_run(
    reader: SlideReader,
    model_dir: str | os.PathLike | RunModel,
    *,
    device: str = "auto",
    progress: bool = False,
    progress_callback: Callable[[int, int], None] | None = None,
    cancel_event: threading.Event | None = None,
    fold: int | str | None = None,
    batch_size: int = 64,
    mpp_override: float | None = None,
    precision: str | None = None,
    overlap: float | None = None,
) -> tuple[FeatureBag, dict[str, Any]]:
    """Tile and embed an open slide the way a run's training features were made.

    Returns the bag and the provenance :func:`predict_bag` takes as ``meta``; runs with the same
    encoder and tiling can share one bag (``histoviz predict`` over a folder does).
    ``progress_callback(done, n_tiles)`` follows the tiles. ``precision`` (default: the training
    bags') must equal the training bags' precision: features are never mixed.

    Raises
    ------
    PredictionCancelled
        ``cancel_event`` was set.
    HistovizError
        No tissue, missing mpp or weights, an encoder the run's features were not made with,
        a precision other than the training bags'.
    """
    from histoviz.features.embed import embed_slide, resolve_device
    from histoviz.features.encoders import create_encoder
    from histoviz.tiling.grid import TilingConfig, make_tile_grid

    rm = _cached_run(model_dir, fold)
    enc_name, enc_kw, tiling = _encoder_for(rm)
    if mpp_override is not None:
        tiling = {**tiling, "mpp_override": float(mpp_override)}
    if overlap is not None:
        tiling = {**tiling, "overlap": float(overlap)}
    grid = make_tile_grid(reader, TilingConfig(**tiling))
    trained_at = _features_precision(rm)
    prec = precision or trained_at
    own = _model_encoder(rm)
    if prec != trained_at and own is None:
        raise ConfigError(
            f"{rm.run_dir}: the model was trained on {trained_at} features; embedding this slide "
            f"at {prec} would feed it features it never saw (bench/bench_precision.py measures the "
            f"change). Use precision {trained_at}, or train on bags embedded with --precision {prec}")
    encoder = own or create_encoder(enc_name, **enc_kw, precision=prec)
    if int(encoder.embed_dim) != int(rm.features.get("embed_dim") or encoder.embed_dim):
        raise DataError(
            f"encoder {enc_name!r} gives {encoder.embed_dim}-d features but the model expects "
            f"{rm.features.get('embed_dim')}"
        )
    prec = getattr(encoder, "precision", "fp32")
    dev = resolve_device("cpu" if prec == "int8" else device)  # dynamic int8 runs on the CPU
    try:
        bag = embed_slide(reader, encoder, grid, batch_size=batch_size, device=str(dev),
                          progress=progress, progress_callback=progress_callback, cancel_event=cancel_event)
    except Cancelled as e:
        raise PredictionCancelled(f"{reader.slide_id}: prediction cancelled") from e
    if cancel_event is not None and cancel_event.is_set():
        raise PredictionCancelled(f"{reader.slide_id}: prediction cancelled")
    meta = {"slide_path": bag.attrs["slide_path"], "slide_dimensions": list(map(int, reader.dimensions)),
            "mpp": mpp_override if mpp_override is not None else reader.mpp, "tile_size": int(grid.tile_size),
            "stride_level0": int(grid.stride_level0), "encoder_precision": prec,
            "features_precision": trained_at}
    return bag, meta


def predict_slide(
    reader_or_path: SlideReader | str | os.PathLike,
    model_dir: str | os.PathLike | RunModel,
    *,
    device: str = "auto",
    progress: bool = False,
    progress_callback: Callable[[int, int], None] | None = None,
    cancel_event: threading.Event | None = None,
    fold: int | str | None = None,
    batch_size: int = 64,
    mpp_override: float | None = None,
    precision: str | None = None,
    overlap: float | None = None,
) -> ad.AnnData:
    """Tile, embed and predict one slide with a trained run (see the module docstring).

    Parameters
    ----------
    reader_or_path
        An open :class:`~histoviz.io.slide.SlideReader` or a slide path.
    model_dir
        Run directory written by ``histoviz train`` (or a checkpoint folder).
    device
        Torch device for the encoder and the model (``"auto"``: CUDA when available).
    progress
        tqdm bar over tiles.
    progress_callback
        ``callback(done, total)`` after each batch of tiles and at the end.
    cancel_event
        Checked between batches; when set, :class:`PredictionCancelled` is raised.
    fold
        Which checkpoint (see :func:`load_run`).
    batch_size
        Tiles per encoder batch.
    mpp_override
        The slide's microns per pixel when the file does not record it (or records it wrongly).
    precision
        Encoder precision (``fp32``, ``bf16``, ``int8``: see
        :func:`~histoviz.features.encoders.apply_precision`; int8 embeds on the CPU). Default
        (``None``): the precision of the run's training bags, so a model trained on int8 bags
        embeds at int8 (the path for a laptop without a GPU). Another precision than the
        training bags' is refused (:class:`ConfigError`): features are never mixed. Recorded in
        ``uns["histoviz"]["encoder_precision"]``.
    overlap
        Tile overlap (0-0.9) instead of the run's: overlapping tiles (stride below the tile
        size) give viewers a finer map (:meth:`histoviz.viz.layout.PatchLayout.fine_raster`) at
        the cost of more tiles to embed.

    Returns
    -------
    AnnData (one observation per patch) following :mod:`histoviz.io.predictions`, with the
    slide's thumbnail in ``uns["spatial"]`` (as Space Ranger imports, so ``sc.pl.spatial`` draws
    the maps over the tissue).

    Raises
    ------
    PredictionCancelled
        ``cancel_event`` was set.
    HistovizError
        Unreadable slide, no tissue, missing mpp or weights, incompatible model.
    """
    from histoviz.features.embed import resolve_device
    from histoviz.io import open_slide
    from histoviz.io.predictions import add_slide_image

    rm = _cached_run(model_dir, fold)
    own = not hasattr(reader_or_path, "read_region")
    reader = open_slide(reader_or_path) if own else reader_or_path
    try:
        state = {"total": 1}

        def tiles(done: int, n: int) -> None:
            state["total"] = n + 1  # the last step is the model itself
            if progress_callback is not None:
                progress_callback(done, n + 1)

        bag, meta = embed_for_run(reader, rm, device=device, progress=progress, progress_callback=tiles,
                                  cancel_event=cancel_event, batch_size=batch_size, mpp_override=mpp_override,
                                  precision=precision, overlap=overlap)
        dev_name = "auto" if device == "auto" else str(resolve_device(device))
        a = predict_bag(bag, rm, device=dev_name, meta=meta)
        add_slide_image(a, reader)
        if progress_callback is not None:
            progress_callback(state["total"], state["total"])
        return a
    finally:
        if own:
            reader.close()


def predict_spots(
    sample: str | os.PathLike | Any,
    model_dir: str | os.PathLike | RunModel,
    *,
    fold: int | str | None = None,
    device: str = "auto",
    progress: bool = False,
    batch_size: int = 64,
) -> ad.AnnData:
    """Per-spot predictions of a spot-level run at the spots of a spatial sample.

    Each spot's patch is cut as in training (the run's patch size), embedded with the run's
    encoder and predicted. Which checkpoint (``fold=None``): when the run held this sample out
    (``samples.parquet``), the checkpoint of that fold, so the map is a held-out prediction;
    otherwise ``final`` or the fold selected on validation loss (:func:`load_run`).

    Parameters
    ----------
    sample
        A HEST-style spot file (``histoviz st-import`` output, the synthetic cohort's
        ``spatial/*.h5ad``) or a :class:`~histoviz.data.spatial.SpotSample`.
    model_dir
        A spot-level run directory (or a checkpoint folder).
    fold, device, progress, batch_size
        As :func:`predict_slide`.

    Returns
    -------
    A prediction AnnData (:mod:`histoviz.io.predictions`), one observation per spot:
    ``obsm["spatial"]`` = spot centres (level-0 px), ``X`` = predicted expression,
    ``obsm["measured_expression"]`` = the measured, normalised ``log1p`` expression of the same
    genes, ``uns["histoviz"]["spot_diameter_px"]`` (level-0 px) and ``uns["spots"]`` (barcodes,
    sample and patient ids, checkpoint).

    Raises
    ------
    DataError
        Not a spot-level run, bad spot file (see :func:`~histoviz.data.spatial.load_spot_sample`).
    """
    from histoviz.data.spatial import PatchSpec, load_spot_sample, normalize_log1p, spot_grid
    from histoviz.features.embed import embed_slide, resolve_device
    from histoviz.features.encoders import create_encoder
    from histoviz.io import open_slide

    s = sample if hasattr(sample, "centres") else load_spot_sample(sample)
    if fold is None and not isinstance(model_dir, RunModel):
        fold = _heldout_fold(Path(model_dir), s.sample_id)
    rm = _cached_run(model_dir, fold)
    f = rm.features
    if f.get("level") != "spot" or "spot_patch" not in f:
        raise DataError(f"{rm.run_dir}: not a spot-level run (train one with a data.spots config); "
                        "for slide-level runs use predict_slide")
    enc_name, enc_kw, _ = _encoder_for(rm)
    patch = PatchSpec(**f["spot_patch"])
    encoder = _model_encoder(rm) or create_encoder(enc_name, **enc_kw)
    with open_slide(s.slide_path) as reader:
        if not reader.mpp:
            reader.with_mpp(s.mpp)
        grid = spot_grid(s, patch, dimensions=tuple(int(v) for v in reader.dimensions))
        bag = embed_slide(reader, encoder, grid, batch_size=batch_size, device=str(resolve_device(device)),
                          progress=progress)
        dims = [int(v) for v in reader.dimensions]
    meta = {"slide_path": s.slide_path, "slide_dimensions": dims, "mpp": s.mpp, "tile_size": int(grid.tile_size),
            "stride_level0": int(grid.stride_level0), "spot_diameter_px": float(s.spot_diameter_px), "level": "spot"}
    a = predict_bag(bag, rm, device=device, meta=meta)
    a.obsm["spatial"] = np.asarray(s.centres, np.float64)
    genes = [g for g in a.var_names if g in set(s.genes)]
    if genes:
        cols = pd.Index(s.genes).get_indexer(genes)
        meas = normalize_log1p(s.counts, target_sum=float(f.get("target_sum", 1e4)), columns=cols,
                               library=s.library())
        a.obsm["measured_expression"] = pd.DataFrame(meas, index=a.obs_names, columns=genes)
    a.uns.pop("slide_prediction", None)  # a spot sample has no slide-level target
    a.uns["spots"] = {"barcodes": np.asarray(s.barcodes, dtype=str), "sample_id": s.sample_id,
                      "patient_id": s.patient_id, "source": str(s.path), "checkpoint": rm.checkpoint}
    return a


def _heldout_fold(run_dir: Path, sample_id: str) -> int | None:
    """The fold whose test set held ``sample_id`` out in a spot run (``None`` when none did)."""
    p = run_dir / "samples.parquet"
    if not p.exists():
        return None
    t = pd.read_parquet(p)
    row = t[t["sample_id"].astype(str) == str(sample_id)]
    return int(row["fold"].iloc[0]) if len(row) else None
