"""``histoviz demo``: the main job end to end on the embedded sample data.

1. Reads the real sample slides (Aperio SVS, PNG) and prints their metadata.
2. Tiles the SVS at 0.5 um/px and embeds it with the ImageNet EfficientNet-Lite0 encoder.
3. Writes a synthetic cohort with ground truth (pyramidal TIFFs, omics tables, survival).
4. Embeds the cohort (one task per slide; resumable) with the weight-free morphology encoder.
5. Trains and cross-validates the omics models on the cohort when :mod:`histoviz.training` is
   present, prints the comparison, and writes per-patch prediction maps for one slide.
6. Makes a second synthetic cohort for outcomes (200 patients, small slides), trains grade and
   survival (joint ABMIL, PCA + logistic / Cox baselines, a shuffled control) with
   split-conformal calibration, prints AUC, c-index and coverage, and writes per-patch grade,
   risk and uncertainty maps; then a small PathGen on the same slides with six gene groups
   (slide only / + synthesised groups / + measured groups on the same folds, paired
   differences, synthesis quality, per-patch co-attention maps).
7. Spots: imports the shipped Visium sample, trains CMRCNet beside BLEEP, CPNN-spot, ridge, kNN
   and two controls leave-one-sample-out on the cohort's Visium-like samples, prints the model x
   gene-set table and writes held-out per-spot predictions (:mod:`histoviz.training.demo_spots`).

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
    n_slides: int = 48,
    slide_size: int = 1536,
    seed: int = 0,
    train: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo pipeline; see the module docstring.

    Parameters
    ----------
    out_dir
        Output folder (created; reused on reruns).
    n_slides, slide_size, seed
        Size of the synthetic cohort.
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
        echo("[1/6] real sample slides: not in this installation (run from a source checkout)")
    else:
        echo("[1/6] real sample slides")
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
            echo(f"[2/6] tiled {r.slide_id}: {len(grid)} tiles of 224 px at 0.5 um/px "
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

    # 3. synthetic cohort --------------------------------------------------------------------------
    t = time.perf_counter()
    cohort = make_synthetic_cohort(out / "synth", n_slides=n_slides, seed=seed,
                                   slide_size=(slide_size, slide_size), progress=progress)
    df = cohort.cohort_table()
    echo(f"[3/6] synthetic cohort: {len(df)} slides, {df['patient_id'].nunique()} patients, "
         f"{int(df['event'].sum())} deaths, grades {sorted(df['grade'].unique().tolist())} "
         f"({time.perf_counter() - t:.1f} s) -> {cohort.root}")
    res.outputs["cohort"] = cohort.cohort_csv

    # 4. embed the cohort ------------------------------------------------------------------------------
    from histoviz.data.cohort import read_cohort

    feats = out / "synth" / "features" / "morphology"
    t = time.perf_counter()
    rep = embed_cohort(read_cohort(cohort.cohort_csv), feats, encoder="morphology", workers=0,
                       progress=progress)
    n_tiles = sum(len(FeatureBag.from_h5(feats / f"{s}.h5", load_features=False))
                  for s in df["slide_id"] if (feats / f"{s}.h5").exists())
    echo(f"[4/6] embedded cohort with 'morphology': {rep.counts()}, {n_tiles} tiles "
         f"({time.perf_counter() - t:.1f} s) -> {feats}")
    res.numbers["cohort_tiles"] = n_tiles
    res.outputs["features"] = feats

    # 5. models ----------------------------------------------------------------------------------------
    if train:
        try:
            from histoviz.training.demo import train_demo_models
        except ImportError:
            echo("[5/6] models: histoviz.training is not available in this build; skipped")
        else:
            train_demo_models(cohort, feats, out, res, echo=echo, progress=progress)
            from histoviz.training.demo import train_outcome_models

            oc = make_synthetic_cohort(out / "outcomes", n_slides=240, seed=1, slide_size=(768, 768),
                                       spatial_fraction=0.0, progress=progress)
            ofeats = out / "outcomes" / "features" / "morphology"
            rep = embed_cohort(read_cohort(oc.cohort_csv), ofeats, encoder="morphology", workers=0,
                               progress=progress)
            odf = oc.cohort_table()
            echo(f"  outcome cohort: {len(odf)} slides of 768 px, {odf['patient_id'].nunique()} patients, "
                 f"{int(odf.drop_duplicates('patient_id')['event'].sum())} deaths, embedded {rep.counts()} -> {oc.root}")
            train_outcome_models(oc, ofeats, out, res, echo=echo, progress=progress)
            from histoviz.training.demo import train_pathgen_models

            train_pathgen_models(oc, ofeats, out, res, echo=echo, progress=progress)
            from histoviz.training.demo_spots import run_spot_demo

            echo("[spots] spatial transcriptomics: spot-level models on the cohort's Visium-like samples")
            run_spot_demo(cohort, out, res, echo=echo, progress=progress)
    echo(f"done in {time.perf_counter() - t_all:.0f} s; outputs under {out}")
    return res
