"""``histoviz demo``: the main job end to end on the embedded sample data.

1. Reads the real sample slides (Aperio SVS, PNG) and prints their metadata.
2. Tiles the SVS at 0.5 um/px and embeds it with the ImageNet EfficientNet-Lite0 encoder.
3. Writes the "power" synthetic cohort (240 slides of 768 px, 200 patients) with ground truth
   (pyramidal TIFFs, omics tables, grade, censored survival).
4. Embeds it (one task per slide; resumable) with the pretrained EfficientNet-Lite0 (ImageNet),
   not the hand-made ``morphology`` features, whose colour statistics are tuned to the
   generator's stains.
5. Omics: multi-task and single-task ABMIL, CPNN, ridge and a shuffled-label control, 5-fold
   patient-level CV; the table, and the paired comparisons MTL vs STL and MTL vs ridge
   (difference, bootstrap interval over targets and patients, fold win rate, Wilcoxon, verdict);
   per-patch maps of a slide of the "demo" preset cohort, which no model saw.
6. Outcomes: grade and survival (joint ABMIL, PCA + logistic / Cox, a shuffled control) with
   split-conformal calibration: AUC, c-index, coverage, KM of risk groups, the confusion matrix;
   per-patch grade, risk and uncertainty maps; then a small PathGen in its three settings.
7. Spots: imports the shipped Visium sample, trains CMRCNet beside BLEEP, CPNN-spot, ridge, kNN
   and two controls leave-one-sample-out on the "demo" cohort's Visium-like samples, prints the
   model x gene-set table and writes held-out per-spot predictions.

Everything lands under ``out_dir``; rerunning reuses what is already there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoResult", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What the demo produced (paths and headline numbers)."""

    out_dir: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)


def run_demo(
    out_dir: str | os.PathLike = "demo_out",
    *,
    encoder: str = "efficientnet-lite0",
    train: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo pipeline; see the module docstring.

    Parameters
    ----------
    out_dir
        Output folder (created; reused on reruns).
    encoder
        Patch encoder of the synthetic cohorts (default: pretrained EfficientNet-Lite0).
    train
        Also train and evaluate the slide-level models.
    progress
        Progress bars.
    echo
        Where the human-readable report goes.

    Returns
    -------
    :class:`DemoResult`.
    """
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.features import EmbedStats, create_encoder, embed_slide
    from histoviz.features.cohort import embed_cohort
    from histoviz.io import FeatureBag, is_complete_bag, open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.viz.thumbnails import grid_preview

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = DemoResult(out)
    t_all = time.perf_counter()

    # 1-2. real slides ---------------------------------------------------------------------------
    from histoviz.datasets import sample_data_dir

    real = sample_data_dir()
    if real is None:
        echo("[1/7] real sample slides: not in this installation (run from a source checkout)")
    else:
        echo("[1/7] real sample slides")
        for name in ("CMU-1-Small-Region.svs", "he_1000px.png"):
            with open_slide(real / name) as r:
                m = r.meta
                mpp = f"{m.mpp:.3f} um/px" if m.mpp else "no mpp recorded"
                echo(f"  {name}: {r.backend}, {m.dimensions[0]} x {m.dimensions[1]} px, {mpp}, "
                     f"{m.level_count} level(s), objective {m.objective_power or '?'}x")
        svs = real / "CMU-1-Small-Region.svs"
        with open_slide(svs) as r:
            grid = make_tile_grid(r, TilingConfig())
            res.outputs["tiles_preview"] = grid_preview(r, grid, out / "real" / "CMU-1-Small-Region_tiles.png")
            bag_path = out / "real" / "CMU-1-Small-Region.h5"
            echo(f"[2/7] tiled {r.slide_id}: {len(grid)} tiles of 224 px at 0.5 um/px "
                 f"(mean tissue {grid.tissue_fraction.mean():.0%}) -> {res.outputs['tiles_preview']}")
            if not is_complete_bag(bag_path, encoder="efficientnet-lite0"):
                st = EmbedStats()
                embed_slide(r, create_encoder("efficientnet-lite0"), grid, out=bag_path, stats=st,
                            progress=progress)
                echo(f"  embedded with efficientnet-lite0 (ImageNet): {st.n_tiles} tiles in "
                     f"{st.seconds:.1f} s ({st.tiles_per_s:.1f} tiles/s)")
            bag = FeatureBag.from_h5(bag_path)
            echo(f"  -> {bag_path}: coords {bag.coords.shape}, features {bag.features.shape}")
            res.outputs["real_bag"] = bag_path

    # 3. the "power" synthetic cohort, embedded with a pretrained encoder ---------------------------
    from histoviz.data.cohort import read_cohort
    from histoviz.datasets import synthetic_preset

    t = time.perf_counter()
    cohort = make_synthetic_cohort(out / "power", **synthetic_preset("power"), progress=progress)
    df = cohort.cohort_table()
    pats = df.drop_duplicates("patient_id")
    echo(f"[3/7] synthetic cohort 'power': {len(df)} slides of 768 px, {len(pats)} patients, "
         f"{int(pats['event'].sum())} deaths, grades {sorted(df['grade'].unique().tolist())} "
         f"({time.perf_counter() - t:.1f} s) -> {cohort.root}")
    res.outputs["cohort"] = cohort.cohort_csv
    feats = out / "power" / "features" / encoder
    t = time.perf_counter()
    rep = embed_cohort(read_cohort(cohort.cohort_csv), feats, encoder=encoder, workers=0, progress=progress)
    n_tiles = sum(len(FeatureBag.from_h5(feats / f"{s}.h5", load_features=False))
                  for s in df["slide_id"] if (feats / f"{s}.h5").exists())
    echo(f"[4/7] embedded the cohort with {encoder!r} (ImageNet weights, not tuned to the generator): "
         f"{rep.counts()}, {n_tiles} tiles ({time.perf_counter() - t:.1f} s) -> {feats}")
    res.numbers["cohort_tiles"] = n_tiles
    res.outputs["features"] = feats

    # 5-7. models --------------------------------------------------------------------------------------
    if train:
        try:
            from histoviz.training.demo import (
                train_demo_models,
                train_outcome_models,
                train_pathgen_models,
            )
        except ImportError:
            echo("[5/7] models: histoviz.training is not available in this build; skipped")
        else:
            # maps of slides none of the models saw: the 'demo' preset cohort (larger slides, Visium-like spots)
            show = make_synthetic_cohort(out / "synth", **synthetic_preset("demo"), progress=progress)
            train_demo_models(cohort, feats, out, res, echo=echo, progress=progress, show=show)
            train_outcome_models(cohort, feats, out, res, echo=echo, progress=progress, show=show)
            train_pathgen_models(cohort, feats, out, res, echo=echo, progress=progress)
            from histoviz.training.demo_spots import run_spot_demo

            echo("[7/7] spatial transcriptomics: spot-level models on the Visium-like samples of the 'demo' cohort")
            run_spot_demo(show, out, res, echo=echo, progress=progress)
    echo(f"done in {time.perf_counter() - t_all:.0f} s; outputs under {out}")
    return res
