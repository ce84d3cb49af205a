"""The demo's runs: each is a shipped YAML config of ``training/configs/`` plus stated overrides.

Nothing here re-types a config. A :class:`DemoRun` names its YAML file and the ``--set``
overrides it needs beyond the data paths (with the reason); :func:`demo_config` reads the file,
applies the overrides exactly as ``histoviz train --set`` does, then points the YAML's data
folders (``data/synth/`` ...) at the demo's cohorts. :func:`describe` prints the same, so every
demo run can be repeated with ``histoviz train``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histoviz.demo.results import DemoResult
    from histoviz.training.config import ExperimentConfig

__all__ = ["OMICS_RUNS", "OUTCOME_RUNS", "PATHGEN_RUNS", "SPOT_RUN", "DemoContext", "DemoRun", "demo_config",
           "describe", "read_shipped", "record_run", "train_runs"]


@dataclass(frozen=True)
class DemoRun:
    """One run of the demo.

    Attributes
    ----------
    name
        Run folder (``runs/<name>``). The ``model`` column of its metrics is the config's
        ``name``, overridden (``name=...``) where two runs share a config.
    config
        File name in ``training/configs``.
    sets
        ``key.path=value`` overrides (as ``histoviz train --set``), applied before the data paths
        are mapped, so they may name the YAML's own paths.
    why
        Why the overrides (printed with them).
    """

    name: str
    config: str
    sets: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class DemoContext:
    """What every step of a demo run shares: the output folder, the result being filled, the
    slide-level features (folder and encoder), printing and progress bars."""

    out: Path
    res: DemoResult
    features: Path
    encoder: str
    echo: Callable[[str], None] = print
    progress: bool = True

    @property
    def runs_dir(self) -> Path:
        """``out/runs``: one folder per run."""
        return Path(self.out) / "runs"

    @property
    def data_sets(self) -> list[str]:
        """The overrides that point a slide-level config at the demo's features."""
        return [f"data.features={self.features}", f"data.embed.encoder={self.encoder}"]


def _control(name: str, config: str) -> DemoRun:
    return DemoRun(name, config, (f"name={name}", "training.shuffle_labels=true", "training.final_model=false"),
                   "shuffled-label control, no final model")


#: Step 5: omics on the "power" cohort (each model's own config; ``data/synth/`` is the cohort)
OMICS_RUNS: tuple[DemoRun, ...] = (
    DemoRun("mtl", "multiomics.yaml"),
    DemoRun("stl", "stl.yaml"),
    DemoRun("cpnn", "cpnn.yaml"),
    DemoRun("ridge", "ridge.yaml"),
    _control("mtl-shuffled", "multiomics.yaml"),
)
#: Step 6: grade and survival on the same cohort (``data/outcomes/``)
OUTCOME_RUNS: tuple[DemoRun, ...] = (
    DemoRun("abmil-grade-survival", "grade_survival.yaml"),
    DemoRun("pca-outcomes", "outcome_baselines.yaml"),
    _control("abmil-shuffled", "grade_survival.yaml"),
)
#: PathGen sized for two CPU cores (the config's defaults are PathGen's: DDPM, T = 1000, 300 epochs)
_PATHGEN_CPU = ("model.params.sampler=ddim", "model.params.sample_steps=20", "model.params.diffusion_dim=32",
                "model.params.diffusion_blocks=2", "model.params.diffusion_heads=2", "model.params.diffusion_lr=0.002",
                "model.params.diffusion_epochs=60", "model.params.diffusion_patience=15", "training.epochs=40",
                "training.patience=8", "training.final_model=false", "evaluation.n_folds=3", "evaluation.topk=[20]")
PATHGEN_RUNS: tuple[DemoRun, ...] = tuple(
    DemoRun(f"pathgen-{s}", "pathgen.yaml",
            (f"name=pathgen-{s}", *([] if s == "synthetic" else [f"model.params.setting={s}"]), *_PATHGEN_CPU),
            "CPU-sized diffusion (DDIM, 20 steps, 60 epochs), 3 folds, no final model")
    for s in ("slide", "synthetic", "real"))  # the YAML's own setting is "synthetic"
#: Step 7: spot-level models on the "demo" cohort's Visium-like samples
SPOT_RUN = DemoRun(
    "spatial", "st_cmrcnet.yaml",
    ("model.params.dim=32", "model.params.n_image_tokens=4", "model.params.fusion_heads=4", "training.epochs=15",
     "training.patience=5", "training.final_model=false", "evaluation.spots.top_k=[50]",
     "evaluation.spots.compare=[{name: bleep, params: {dim: 32, n_image_tokens: 4}}, {name: cpnn-spot, params: "
     "{reference: data/synth/reference_sc.h5ad, label_key: cell_type, hidden: 64}}, ridge, knn-spot]"),
    "smaller networks and 15 epochs for two CPU cores, one k; no final model: a sample's spots are "
    "predicted by the fold that held it out")


def read_shipped(config: str) -> dict[str, Any]:
    """The raw mapping of ``training/configs/<config>``.

    Raises
    ------
    ConfigError
        Unreadable YAML (names the file).
    """
    import yaml

    from histoviz.datasets import config_dir
    from histoviz.errors import ConfigError

    p = config_dir() / config
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot read the shipped config ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return raw


def _map_paths(x: Any, paths: Mapping[str, str]) -> Any:
    if isinstance(x, dict):
        return {k: _map_paths(v, paths) for k, v in x.items()}
    if isinstance(x, list):
        return [_map_paths(v, paths) for v in x]
    if isinstance(x, str):
        for old, new in paths.items():
            if x.startswith(old):
                return new + x[len(old):]
    return x


def _path_map(paths: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    return {k.rstrip("/") + "/": str(v).rstrip("/") + "/" for k, v in paths.items()}


def demo_config(run: DemoRun, paths: Mapping[str, str | os.PathLike], sets: Sequence[str] = ()) -> ExperimentConfig:
    """The validated config of ``run``: its YAML, its overrides, then ``sets`` (the demo's data
    settings, e.g. ``data.features=...``), then the YAML's data folders mapped by ``paths``
    (``{"data/synth": "demo_out/power"}``: every string value that starts with ``data/synth/``)."""
    from histoviz.training.config import apply_overrides, load_config

    raw = apply_overrides(read_shipped(run.config), [*run.sets, *sets])
    return load_config(_map_paths(raw, _path_map(paths)))


def describe(run: DemoRun, width: int = 22) -> str:
    """``name  config.yaml --set a=b ...  (why)``: one line per run, as ``histoviz train`` takes it."""
    sets = " ".join(f"--set {s!r}" if " " in s else f"--set {s}" for s in run.sets)
    tail = f"  ({run.why})" if run.why else ""
    return f"{run.name:<{width}} {run.config}{(' ' + sets) if sets else ''}{tail}"


def train_runs(ctx: DemoContext, runs: Sequence[DemoRun], paths: Mapping[str, str | os.PathLike], *,
               what: str) -> list[Path]:
    """Print the runs' configs and overrides, train each (``ctx.runs_dir/<name>``; a finished
    run with the same config is reused) and record them in ``ctx.res``.

    Returns
    -------
    The run directories, in the order of ``runs``.
    """
    from histoviz.training.runner import run_experiment

    sets = ctx.data_sets
    mapped = ", ".join(f"{k.rstrip('/')}/ -> {str(v).rstrip('/')}/" for k, v in paths.items())
    ctx.echo(f"  configs: training/configs/ with {mapped}" + "".join(f"; --set {s}" for s in sets))
    width = max(len(r.name) for r in runs)
    for r in runs:
        ctx.echo("    " + describe(r, width))
    dirs = []
    for run in runs:
        cfg = demo_config(run, paths, sets)
        t = time.perf_counter()
        d = ctx.runs_dir / run.name
        run_experiment(cfg, d, progress=ctx.progress)
        ctx.echo(f"  trained {run.name} ({cfg.model.name}): {what} in {time.perf_counter() - t:.1f} s -> {d}")
        ctx.res.outputs[f"run_{run.name}"] = d
        record_run(ctx.res, run, paths, sets)
        dirs.append(d)
    return dirs


def record_run(res: DemoResult, run: DemoRun, paths: Mapping[str, str | os.PathLike], sets: Sequence[str] = ()) -> None:
    """Keep the run's config, overrides and data paths in ``res.runs`` (the results file)."""
    res.runs[run.name] = {"config": f"training/configs/{run.config}", "sets": [*run.sets, *sets], "why": run.why,
                          "paths": {k: str(v) for k, v in paths.items()}, "order": len(res.runs)}
