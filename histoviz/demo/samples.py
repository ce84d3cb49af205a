"""The napari samples (File > Open Sample > histoviz), built once in a fresh process and cached.

- ``synthetic``: a synthetic slide with maps from two models trained here with
  :func:`histoviz.training.runner.run_experiment` on 66 synthetic patients (morphology features
  on 112-px tiles at 0.5 um/px): CPNN for expression and cell-type composition, and the joint
  ABMIL grade + survival model with split-conformal calibration (alpha 0.1) for per-patch grade
  probabilities, predicted grade, conformal set size, uncertainty, risk, survival bound width and
  attention, plus the slide-level grade with its conformal set and risk with its interval. The
  slide shown is a patient outside the training cohort: the same generator and seed (same genes,
  cell types, tissue colours), numbered after the training patients
  (``SyntheticConfig.index_offset``), so no training patient, slide, layout or random draw is
  its own (:func:`build_sample` checks it). About a minute on first use, then read from the cache.
- ``svs-simulated``: the shipped Aperio SVS (CMU-1-Small-Region). No model here is trained on
  real slides, so its maps are *simulated* (:func:`histoviz.demo.simulated.simulated_maps`) and
  labelled so in the file and in every map name.

:func:`open_sample` is what a viewer calls: a cached sample is returned at once; otherwise it is
built by ``python -m histoviz.demo.samples KIND`` in a fresh process (torch, training and the
encoders never load into the viewer's process), whose progress reaches the caller step by step.
:func:`sample_truth` measures how the synthetic sample's maps follow its slide's known truth
(the README's numbers, through ``histoviz demo``).

Files live under ``default_cache_dir() / "samples"`` (``$HISTOVIZ_CACHE`` to move it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histoviz.errors import DataError

__all__ = ["SAMPLES", "SAMPLE_VERSION", "Sample", "build_sample", "cached_sample", "open_sample", "report_samples",
           "sample_truth"]

log = logging.getLogger(__name__)

#: Bumped whenever a recipe below changes (a new cache folder is made).
SAMPLE_VERSION = 3  # 3: survival as a conformal lower bound in the data's time unit
#: The samples, by the name napari and ``open_sample`` use.
SAMPLES = ("synthetic", "svs-simulated")
_SEED = 3
#: Training cohort: 66 patients with one small slide each and few censored survival times, enough
#: for 2-fold CV with a 40% calibration split (split conformal at alpha 0.1 needs >= 9 events).
_TRAIN = {"n_slides": 66, "slide_size": (512, 512), "seed": _SEED, "spatial_fraction": 0.0,
          "multi_slide_fraction": 0.0, "censoring_fraction": 0.1}
#: The slide shown: the same world (seed), a patient numbered after the training cohort's.
_SHOWN = {**_TRAIN, "n_slides": 1, "slide_size": (2048, 1536), "index_offset": _TRAIN["n_slides"]}
_TILING = {"tile_size": 112, "mpp": 0.5}
_MARK = "histoviz-sample "  # prefix of the progress lines the build process prints
_STEPS = {"synthetic": 6, "svs-simulated": 1}

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Sample:
    """A sample slide, its prediction file and the runs that made it (none for simulated maps)."""

    slide: Path
    predictions: Path
    runs: dict[str, Path] = field(default_factory=dict)


def _root(cache_dir: str | os.PathLike | None) -> Path:
    from histoviz.datasets import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "samples"


def _folder(kind: str, cache_dir: str | os.PathLike | None) -> Path:
    if kind not in SAMPLES:
        raise DataError(f"unknown sample {kind!r}; choose one of {', '.join(SAMPLES)}")
    return _root(cache_dir) / f"{kind}-v{SAMPLE_VERSION}"


def cached_sample(kind: str, cache_dir: str | os.PathLike | None = None) -> Sample | None:
    """The sample if it is complete in the cache (its ``sample.json`` is written last), else ``None``."""
    d = _folder(kind, cache_dir)
    try:
        info = json.loads((d / "sample.json").read_text())
        s = Sample(d / info["slide"], d / info["predictions"], {k: d / v for k, v in info["runs"].items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    files = [s.slide, s.predictions, *(r / "run.json" for r in s.runs.values())]
    return s if all(p.is_file() for p in files) else None


# ----------------------------------------------------------------------------------------------
# building (in the process that calls it: the build process of open_sample, the tests)
# ----------------------------------------------------------------------------------------------
def _configs(train: Path, feats: Path) -> dict[str, dict[str, Any]]:
    cohort, omics = str(train / "cohort.csv"), str(train / "omics" / "gene.h5ad")
    common = {"seed": 0, "data": {"cohort": cohort, "features": str(feats)}}
    evaluation = {"n_folds": 2, "calibration_fraction": 0.4, "conformal": {"alpha": 0.1}}
    return {
        "cpnn": {
            **common, "name": "sample-cpnn",
            "data": {**common["data"], "omics": {"gene": {
                "path": omics, "normalize": "total", "transform": "log10p1", "drop_median_zero": True,
                "standardize": True}}},
            "model": {"name": "cpnn", "params": {"reference": str(train / "reference_sc.h5ad"),
                                                 "label_key": "cell_type", "loss": "nb"}},
            "training": {"epochs": 80, "patience": 10, "grad_clip": 0.5, "val_fraction": 0.2,
                         "final_model": True},
            "evaluation": {"n_folds": 2},
        },
        "grade-survival": {
            **common, "name": "sample-abmil-grade-survival",
            "data": {**common["data"], "outcomes": {
                "grade": {"column": "grade", "classes": [1, 2, 3, 4]},
                "survival": {"time": "time", "event": "event", "n_bins": 4}}},
            "model": {"name": "abmil-grade-survival",
                      "params": {"embed_dim": 64, "attn_dim": 32, "hidden": 64}},
            "training": {"epochs": 80, "lr": 5e-4, "batch_size": 16, "patience": 12, "val_fraction": 0.15,
                         "final_model": True},
            "evaluation": evaluation,
        },
    }


def _merge(parts: list[Any], runs: dict[str, Path]) -> Any:
    """One prediction AnnData from several runs' predictions of the same patches."""
    import numpy as np

    from histoviz.io.predictions import make_prediction_adata

    base = parts[0]
    for p in parts[1:]:
        if p.n_obs != base.n_obs or not np.array_equal(p.obs[["x", "y"]].to_numpy(), base.obs[["x", "y"]].to_numpy()):
            raise DataError("sample predictions of different runs cover different patches")
    expr = next((p for p in parts if p.n_vars), None)
    obs: dict[str, Any] = {}
    obsm: dict[str, Any] = {}
    sp: dict[str, Any] = {}
    for p in parts:
        for c in p.obs.columns:
            if c not in ("x", "y", "slide_id"):
                obs[c] = p.obs[c].array if hasattr(p.obs[c], "cat") else p.obs[c].to_numpy()
        for k in p.obsm:
            if k != "spatial":
                obsm[k] = p.obsm[k]
        sp.update(dict(p.uns.get("slide_prediction", {})))
    info = dict(parts[-1].uns["histoviz"])
    models = {str(p.uns["histoviz"]["model"]): str(p.uns["histoviz"]["run_dir"]) for p in parts}
    tasks: dict[str, str] = {}
    for p in parts:  # every block each model declared (the default map and the description read them)
        tasks.update(json.loads(p.uns["histoviz"].get("tasks") or "{}"))
    info.update(model=" + ".join(models), run_dir=json.dumps(models), runs=json.dumps({k: str(v) for k, v in runs.items()}),
                modality=str(expr.uns["histoviz"].get("modality", "")) if expr is not None else "",
                tasks=json.dumps(tasks))
    a = make_prediction_adata(
        base.obs[["x", "y"]].to_numpy(), slide_id=str(info["slide_id"]), tile_size_level0=int(info["tile_size_level0"]),
        expression=np.asarray(expr.X) if expr is not None else None,
        genes=[str(g) for g in expr.var_names] if expr is not None else None,
        obs=obs, obsm=obsm, meta={k: v for k, v in info.items() if k not in ("slide_id", "tile_size_level0")},
    )
    a.uns["slide_prediction"] = sp
    for key in ("survival", "target_scale", "cohort_reference", "units"):  # clinical units, per block
        merged = {b: v for p in parts for b, v in dict(p.uns.get(key) or {}).items()}
        if merged:
            a.uns[key] = merged
    return a


def _cohort(folder: Path, kw: dict[str, Any], progress: bool) -> Any:
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.errors import ConfigError

    try:
        return make_synthetic_cohort(folder, progress=progress, **kw)
    except ConfigError:  # made by another version of the generator: remake it
        shutil.rmtree(folder, ignore_errors=True)
        return make_synthetic_cohort(folder, progress=progress, **kw)


def _check_unseen(train: Any, shown: Any) -> dict[str, str]:
    """The shown slide's ids, after checking that no training slide or patient shares them or its
    tumour fraction (the patient's own draw)."""
    import pandas as pd

    t, s = train.cohort_table(), shown.cohort_table()
    sid, pid = str(s["slide_id"].iloc[0]), str(s["patient_id"].iloc[0])
    tp = pd.read_csv(train.root / "truth" / "patients.csv")
    sp = pd.read_csv(shown.root / "truth" / "patients.csv")
    if sid in set(t["slide_id"]) or pid in set(t["patient_id"]) or \
            (tp["tumour_fraction"] - float(sp["tumour_fraction"].iloc[0])).abs().min() < 1e-9:
        raise DataError(f"the sample's shown slide {sid} (patient {pid}) is not outside its training cohort")
    return {"slide_id": sid, "patient_id": pid}


def _build_synthetic(root: Path, step: Progress, progress: bool) -> dict[str, Any]:
    from histoviz.data.cohort import read_cohort
    from histoviz.features import create_encoder, embed_slide
    from histoviz.features.cohort import embed_cohort
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_bag
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    n = _STEPS["synthetic"]
    runs = {"cpnn": root / "runs" / "cpnn", "grade-survival": root / "runs" / "grade-survival"}
    step(1, n, f"generating the training cohort ({_TRAIN['n_slides']} synthetic patients)")
    train = _cohort(root / "train", _TRAIN, progress)
    feats = root / "train" / "features" / "morphology-112"
    step(2, n, f"embedding its {len(train.slide_ids)} slides (morphology features, 112-px tiles)")
    rep = embed_cohort(read_cohort(train.cohort_csv), feats, encoder="morphology", tiling=_TILING, workers=0,
                       progress=progress)
    if rep.failed:
        raise DataError(f"{root}: embedding the sample cohort failed: {rep.summary()}")
    what = {"cpnn": "CPNN (expression, cell-type weights)", "grade-survival": "ABMIL grade + survival (conformal)"}
    for i, (name, cfg) in enumerate(_configs(root / "train", feats).items()):
        step(3 + i, n, f"training {what[name]}: 2-fold CV and a final model")
        if not (runs[name] / "run.json").is_file():
            run_experiment(load_config(cfg), runs[name], progress=progress)
    step(5, n, f"rendering the shown slide (a patient outside the training cohort, {_SHOWN['slide_size'][0]} x "
               f"{_SHOWN['slide_size'][1]} px)")
    shown = _cohort(root / "slide", _SHOWN, progress)
    ids = _check_unseen(train, shown)
    slide = Path(shown.slides[ids["slide_id"]])
    step(6, n, f"predicting the patches of {ids['slide_id']} with both models")
    with open_slide(slide) as reader:
        grid = make_tile_grid(reader, TilingConfig(**_TILING))
        bag = embed_slide(reader, create_encoder("morphology"), grid, progress=progress)
        meta = {"slide_path": str(slide.resolve()), "slide_dimensions": list(map(int, reader.dimensions)),
                "mpp": reader.mpp, "tile_size": int(grid.tile_size), "stride_level0": int(grid.stride_level0)}
    parts = [predict_bag(bag, run, meta=meta) for run in runs.values()]
    pred = write_predictions(_merge(parts, runs), root / f"{ids['slide_id']}.predictions.h5ad")
    return {"slide": slide, "predictions": pred, "runs": runs, "shown": ids,
            "training": {"patients": len(train.cohort_table()), "seed": _SEED}}


def _build_svs_simulated(root: Path, step: Progress, progress: bool) -> dict[str, Any]:
    from histoviz.datasets import shipped_file
    from histoviz.demo.simulated import simulated_maps
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling import TilingConfig, make_tile_grid

    slide = shipped_file("CMU-1-Small-Region.svs")
    step(1, 1, f"simulating maps from the H&E density of {slide.name}'s tiles (not a model)")
    with open_slide(slide) as reader:
        grid = make_tile_grid(reader, TilingConfig(**_TILING))
        pred = write_predictions(simulated_maps(reader, grid), root / "CMU-1-Small-Region.simulated.h5ad")
    return {"slide": slide, "predictions": pred, "runs": {}}


def build_sample(
    kind: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    step: Progress | None = None,
) -> Sample:
    """Build sample ``kind`` in this process (a cached one is returned as is).

    Viewers call :func:`open_sample` instead, which runs this in a fresh process. Two builders of
    one cache wait for each other (a lock file), so a sample is built once.

    Parameters
    ----------
    kind
        One of :data:`SAMPLES`.
    cache_dir
        Where samples live (default ``default_cache_dir() / "samples"``).
    progress
        Progress bars while building.
    step
        Called as ``step(k, n, text)`` at each of the build's ``n`` steps (default: the log).

    Returns
    -------
    :class:`Sample`.
    """
    import fcntl

    from histoviz._atomic import atomic_write_text

    root = _folder(kind, cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
        done = cached_sample(kind, cache_dir)
        if done is not None:
            return done
        say = step or (lambda k, n, text: log.info("histoviz sample %s [%d/%d] %s", kind, k, n, text))
        build = _build_synthetic if kind == "synthetic" else _build_svs_simulated
        info = build(root, say, progress)

        def rel(p: Path) -> str:
            return os.path.relpath(p, root)

        atomic_write_text(root / "sample.json", json.dumps(
            {"kind": kind, "version": SAMPLE_VERSION, "slide": rel(info["slide"]), "predictions": rel(info["predictions"]),
             "runs": {k: rel(v) for k, v in info["runs"].items()},
             **{k: v for k, v in info.items() if k in ("shown", "training")}}, indent=1) + "\n")
    s = cached_sample(kind, cache_dir)
    if s is None:
        raise DataError(f"{root}: the {kind} sample was built but its files are not all there")
    return s


# ----------------------------------------------------------------------------------------------
# opening (from a viewer): cached, or built in a fresh process
# ----------------------------------------------------------------------------------------------
def open_sample(
    kind: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    on_progress: Progress | None = None,
    idle: Callable[[], None] | None = None,
) -> Sample:
    """Sample ``kind``: from the cache, or built first in a fresh Python process.

    Nothing heavy (torch, training, encoders) runs in the calling process, so a viewer that calls
    this cannot be taken down by it.

    Parameters
    ----------
    kind
        One of :data:`SAMPLES`.
    cache_dir
        Where samples live (default ``default_cache_dir() / "samples"``).
    on_progress
        Called in the calling thread as ``on_progress(k, n, text)`` at each build step.
    idle
        Called about ten times a second while the build runs (a GUI passes its event pump).

    Raises
    ------
    DataError
        The build failed (the message ends with its last lines of output).
    """
    import queue
    import subprocess
    import tempfile
    import threading

    s = cached_sample(kind, cache_dir)
    if s is not None:
        return s
    root = _folder(kind, cache_dir).parent
    src = str(Path(__file__).resolve().parents[2])  # the histoviz this process runs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "histoviz.demo.samples", kind, "--cache", str(root)]
    lines: queue.Queue[str | None] = queue.Queue()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=0.1) if idle is not None else lines.get()
            except queue.Empty:
                idle()  # type: ignore[misc]
                continue
            if line is None:
                break
            if line.startswith(_MARK) and on_progress is not None:
                msg = json.loads(line[len(_MARK):])
                on_progress(int(msg["step"]), int(msg["of"]), str(msg["text"]))
        rc = proc.wait()
        if rc != 0:
            err.seek(0)
            tail = "\n".join(err.read().strip().splitlines()[-15:])
            raise DataError(f"building the {kind} sample failed in its own process (exit {rc}; cache {root}); "
                            f"its last lines:\n{tail}")
    s = cached_sample(kind, cache_dir)
    if s is None:
        raise DataError(f"{root}: the {kind} sample's build process ended without a complete sample")
    return s


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m histoviz.demo.samples KIND [--cache DIR]``: build a sample, printing one
    ``histoviz-sample {json}`` line per step (what :func:`open_sample` reads)."""
    p = argparse.ArgumentParser(prog="python -m histoviz.demo.samples", description="build a napari sample")
    p.add_argument("kind", choices=SAMPLES)
    p.add_argument("--cache", default=None, help="samples folder (default: $HISTOVIZ_CACHE/samples)")
    a = p.parse_args(argv)

    def step(k: int, n: int, text: str) -> None:
        print(_MARK + json.dumps({"step": k, "of": n, "text": text}), flush=True)

    build_sample(a.kind, a.cache, step=step)
    return 0


# ----------------------------------------------------------------------------------------------
# how the synthetic sample's maps follow its slide's truth (the README's numbers)
# ----------------------------------------------------------------------------------------------
def sample_truth(sample: Sample) -> dict[str, Any]:
    """The synthetic sample's maps against its slide's known truth, and its runs' held-out CV.

    Returns
    -------
    dict with ``slide_id``, ``patient_id``, ``n_patches``; ``mki67_pearson`` (predicted MKI67 vs
    the tile's true ``log1p`` expected expression), ``gene_pearson_median`` (the same, median over
    genes), ``risk_spearman`` and ``p_grade4_spearman`` (against the true tumour fraction),
    ``cell_type_pearson`` (per cell type: weight vs true fraction), ``dominant_agree`` (patches
    whose largest weight is the truly most frequent type); ``cv``: the sample runs' held-out
    metrics (mean over folds) and ``calibration_patients`` (per fold).
    """
    import numpy as np
    import pandas as pd
    from scipy.stats import pearsonr, spearmanr

    from histoviz.data.synthetic import CELL_TYPES, load_synthetic_cohort, tile_truth
    from histoviz.io.predictions import read_predictions
    from histoviz.io.rundir import RunDir

    a = read_predictions(sample.predictions)
    cohort = load_synthetic_cohort(sample.slide.parent.parent)
    sid = str(a.uns["histoviz"]["slide_id"])
    tt = tile_truth(cohort, sid, a.obs[["x", "y"]].to_numpy(), int(a.uns["histoviz"]["tile_size_level0"]))
    genes = list(a.var_names)
    truth_genes = list(cohort.prototypes().columns)
    x = np.asarray(a.X)
    true_expr = np.log1p(tt["expression"][:, [truth_genes.index(g) for g in genes]])
    per_gene = [pearsonr(x[:, j], true_expr[:, j])[0] for j in range(len(genes))
                if np.ptp(x[:, j]) > 0 and np.ptp(true_expr[:, j]) > 0]
    w = a.obsm["cell_type_weights"]
    types = [t for t in CELL_TYPES if t in w.columns]
    comp = pd.DataFrame(tt["composition"], columns=list(CELL_TYPES))[types]
    tf = tt["tumour_fraction"]
    out: dict[str, Any] = {
        "slide_id": sid,
        "patient_id": str(cohort.cohort_table()["patient_id"].iloc[0]),
        "n_patches": int(a.n_obs),
        "mki67_pearson": float(pearsonr(x[:, genes.index("MKI67")], true_expr[:, genes.index("MKI67")])[0]),
        "gene_pearson_median": float(np.median(per_gene)),
        "n_genes": len(genes),
        "risk_spearman": float(spearmanr(a.obs["risk"], tf)[0]),
        "p_grade4_spearman": float(spearmanr(a.obsm["grade_proba"]["4"], tf)[0]),
        "cell_type_pearson": {t: float(pearsonr(w[t], comp[t])[0]) for t in types},
        "dominant_agree": int((w[types].to_numpy().argmax(1) == comp.to_numpy().argmax(1)).sum()),
        "training_patients": int(pd.read_csv(sample.predictions.parent / "train" / "cohort.csv")["patient_id"].nunique()),
    }
    cv: dict[str, Any] = {}
    for name, run in sample.runs.items():
        m = RunDir(run).metrics()
        m = m[(m["subset"] == "all") & (m["axis"] == "per-target")] if "axis" in m.columns else m
        for (task, metric), v in m.groupby(["task", "metric"], observed=True)["value"]:
            cv[f"{name}:{task}:{metric}"] = float(v.mean())
        sp = RunDir(run).splits()
        if sp is not None:  # calibration patients of the CV folds (the final model's split is fold -1)
            cal = sp[(sp["split"] == "cal") & sp["fold"].isin(m["fold"].unique())]
            if len(cal):
                out["calibration_patients"] = sorted(set(cal.groupby("fold").size().tolist()))
    out["cv"] = cv
    return out


def report_samples(res: Any, *, echo: Callable[[str], None] = print) -> None:
    """Step 8 of ``histoviz demo``: open every sample (built in a fresh process when not cached)
    and record how the synthetic one follows its slide's truth (``res.tables["sample"]``)."""
    for kind in SAMPLES:
        s = open_sample(kind, on_progress=lambda k, n, text, kind=kind: echo(f"  {kind} [{k}/{n}] {text}"))
        echo(f"  {kind}: {s.slide.name} with {s.predictions.name}"
             + (f" (runs: {', '.join(s.runs)})" if s.runs else " (simulated maps, no model)"))
    t = sample_truth(open_sample("synthetic"))
    res.records("sample", [t])
    echo(f"  synthetic sample {t['slide_id']} (patient {t['patient_id']}, not in the training cohort) against its "
         f"truth over {t['n_patches']} patches: MKI67 r = {t['mki67_pearson']:.2f} (median over {t['n_genes']} genes "
         f"{t['gene_pearson_median']:.2f}); Spearman with tumour fraction: risk {t['risk_spearman']:.2f}, "
         f"P(grade 4) {t['p_grade4_spearman']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
