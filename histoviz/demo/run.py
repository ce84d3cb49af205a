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
8. The napari samples (File > Open Sample > histoviz), built in a fresh process into the cache,
   and how the synthetic sample's maps follow its slide's known truth.

Every model runs its shipped config of ``training/configs/`` with the overrides printed beside
it (:mod:`histoviz.demo.configs`). Everything lands under ``out_dir``, the numbers and the
printed report also in ``out_dir/results.json`` (:mod:`histoviz.demo.results`); rerunning
reuses what is already there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from histoviz.demo.results import DemoResult

__all__ = ["run_demo"]

log = logging.getLogger(__name__)


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
    :class:`~histoviz.demo.results.DemoResult` (also written to ``out_dir/results.json``).
    """
    from histoviz._atomic import make_output_dir
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.features import EmbedStats, create_encoder, embed_slide
    from histoviz.features.cohort import embed_cohort
    from histoviz.io import FeatureBag, is_complete_bag, open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.viz.thumbnails import grid_preview

    if train:  # the shipped configs the models run: say now, not after the cohort is embedded, when they are missing
        from histoviz.datasets import config_dir

        config_dir()
    out = make_output_dir(out_dir)  # a file, a read-only or full place: one line, before any work
    res = DemoResult(out)
    t_all = time.perf_counter()

    def say(text: str) -> None:  # every printed line is also kept for results.json
        res.log.extend(str(text).splitlines())
        echo(text)

    # 1-2. real slides ---------------------------------------------------------------------------
    from histoviz.datasets import sample_data_dir

    real = sample_data_dir()
    if real is None:
        say("[1/8] real sample slides: not in this installation (run from a source checkout)")
    else:
        say("[1/8] real sample slides")
        for name in ("CMU-1-Small-Region.svs", "he_1000px.png"):
            with open_slide(real / name) as r:
                m = r.meta
                mpp = f"{m.mpp:.3f} um/px" if m.mpp else "no mpp recorded"
                say(f"  {name}: {r.backend}, {m.dimensions[0]} x {m.dimensions[1]} px, {mpp}, "
                    f"{m.level_count} level(s), objective {m.objective_power or '?'}x")
        svs = real / "CMU-1-Small-Region.svs"
        with open_slide(svs) as r:
            grid = make_tile_grid(r, TilingConfig())
            res.outputs["tiles_preview"] = grid_preview(r, grid, out / "real" / "CMU-1-Small-Region_tiles.png")
            bag_path = out / "real" / "CMU-1-Small-Region.h5"
            say(f"[2/8] tiled {r.slide_id}: {len(grid)} tiles of 224 px at 0.5 um/px "
                f"(mean tissue {grid.tissue_fraction.mean():.0%}) -> {res.outputs['tiles_preview']}")
            if not is_complete_bag(bag_path, encoder="efficientnet-lite0"):
                st = EmbedStats()
                embed_slide(r, create_encoder("efficientnet-lite0"), grid, out=bag_path, stats=st,
                            progress=progress)
                say(f"  embedded with efficientnet-lite0 (ImageNet): {st.n_tiles} tiles in "
                    f"{st.seconds:.1f} s ({st.tiles_per_s:.1f} tiles/s)")
            bag = FeatureBag.from_h5(bag_path)
            say(f"  -> {bag_path}: coords {bag.coords.shape}, features {bag.features.shape}")
            res.outputs["real_bag"] = bag_path

    # 3. the "power" synthetic cohort, embedded with a pretrained encoder ---------------------------
    from histoviz.data.cohort import read_cohort
    from histoviz.datasets import synthetic_preset

    t = time.perf_counter()
    cohort = make_synthetic_cohort(out / "power", **synthetic_preset("power"), progress=progress)
    df = cohort.cohort_table()
    pats = df.drop_duplicates("patient_id")
    say(f"[3/8] synthetic cohort 'power': {len(df)} slides of 768 px, {len(pats)} patients, "
        f"{int(pats['event'].sum())} deaths, grades {sorted(df['grade'].unique().tolist())} "
        f"({time.perf_counter() - t:.1f} s) -> {cohort.root}")
    res.outputs["cohort"] = cohort.cohort_csv
    res.numbers.update(power_slides=len(df), power_patients=len(pats), power_deaths=int(pats["event"].sum()),
                       cpu_count=os.cpu_count())
    feats = out / "power" / "features" / encoder
    t = time.perf_counter()
    rep = embed_cohort(read_cohort(cohort.cohort_csv), feats, encoder=encoder, workers=0, progress=progress)
    n_tiles = sum(len(FeatureBag.from_h5(feats / f"{s}.h5", load_features=False))
                  for s in df["slide_id"] if (feats / f"{s}.h5").exists())
    say(f"[4/8] embedded the cohort with {encoder!r} (ImageNet weights, not tuned to the generator): "
        f"{rep.counts()}, {n_tiles} tiles ({time.perf_counter() - t:.1f} s) -> {feats}")
    res.numbers["cohort_tiles"] = n_tiles
    res.outputs["features"] = feats

    # 5-8. models and the napari samples ------------------------------------------------------------
    if train:
        from histoviz.demo.configs import DemoContext
        from histoviz.demo.omics import run_omics
        from histoviz.demo.outcomes import run_outcomes, run_pathgen
        from histoviz.demo.samples import report_samples
        from histoviz.demo.spots import run_spots

        # maps of slides none of the models saw: the 'demo' preset cohort (larger slides, Visium-like spots)
        show = make_synthetic_cohort(out / "synth", **synthetic_preset("demo"), progress=progress)
        ctx = DemoContext(out, res, feats, encoder, echo=say, progress=progress)
        run_omics(ctx, cohort, show)
        run_outcomes(ctx, cohort, show)
        run_pathgen(ctx, cohort)
        say("[7/8] spatial transcriptomics: spot-level models on the Visium-like samples of the 'demo' cohort")
        run_spots(ctx, show)
        say("[8/8] napari samples (File > Open Sample > histoviz), each built in a fresh process")
        report_samples(res, echo=say)
    say(f"done in {time.perf_counter() - t_all:.0f} s; outputs under {out}")
    say(f"  numbers and this report -> {res.write()}")
    return res
