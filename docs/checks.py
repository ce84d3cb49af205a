"""Small real-data checks whose numbers the README quotes, run and written to ``docs/results/checks.json``.

    .venv/bin/python docs/checks.py                # a few minutes on 2 CPU cores
    .venv/bin/python docs/gen_readme.py            # then the README's ``checks.*`` blocks follow

- ``rossi``: lifelines' Rossi recidivism data, one "patch" per patient (its 7 covariates): the
  discrete-time survival model (``abmil-survival``, mean pooling, 4 time bins, early stopping on
  40 validation patients) against lifelines' ``CoxPHFitter`` on the same 5 folds, held-out
  Harrell's c-index per fold. ``tests/test_outcomes.py`` runs the same comparison and asserts
  that the two are within 0.03.
- ``visium``: the shipped 100-spot Visium folder, ridge on EfficientNet-Lite0 features of each
  spot's patch against a permutation control across spots (200 permutations), for the 10 most
  expressed measured genes and for expression simulated from each patch's haematoxylin density
  (``tests/test_spatial_real.py`` asserts the simulated one beats the control).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rossi() -> dict:
    from lifelines import CoxPHFitter
    from lifelines.datasets import load_rossi

    from histoviz.data.outcomes import SurvivalBins, SurvivalBlock
    from histoviz.evaluation.survival import concordance_index
    from histoviz.models import create_model
    from histoviz.tasks import risk_from_survival

    df = load_rossi()
    x = df.drop(columns=["week", "arrest"]).to_numpy(np.float32)
    blk = SurvivalBlock("survival", df["week"].to_numpy(float), df["arrest"].to_numpy(int), np.ones(len(df), bool))
    folds = np.random.default_rng(0).permutation(len(df)) % 5
    ours, cox = [], []
    for k in range(5):
        tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        b = SurvivalBins(4).fit(blk.subset(tr)).block(blk)
        val, fit = tr[:40], tr[40:]
        model = create_model("abmil-survival", pooling="mean", embed_dim=32, hidden=32, dropout=0.3, epochs=300,
                             lr=3e-3, batch_size=32, patience=40, weight_decay=1e-2, device="cpu", seed=0)
        model.fit([x[i:i + 1] for i in fit], {"survival": b.subset(fit)},
                  val=([x[i:i + 1] for i in val], {"survival": b.subset(val)}))
        r = risk_from_survival(model.predict([x[i:i + 1] for i in te])["survival"])
        ours.append(float(concordance_index(blk.time[te], r, blk.event[te])))
        cph = CoxPHFitter().fit(df.iloc[tr], "week", "arrest")
        cox.append(float(concordance_index(blk.time[te], cph.predict_log_partial_hazard(df.iloc[te]).to_numpy(),
                                           blk.event[te])))
    d = np.asarray(ours) - np.asarray(cox)
    return {"patients": int(len(df)), "events": int(df["arrest"].sum()), "folds": 5,
            "discrete_time": ours, "cox": cox, "discrete_time_mean": float(np.mean(ours)),
            "cox_mean": float(np.mean(cox)), "difference_mean": float(d.mean()), "difference_sd": float(d.std(ddof=1))}


def visium() -> dict:
    from histoviz.data.spatial import (
        PatchSpec,
        embed_spot_sample,
        load_spot_sample,
        normalize_log1p,
        spot_grid,
    )
    from histoviz.data.st_import import import_spaceranger
    from histoviz.data.synthetic import simulated_labels_for_tiles
    from histoviz.evaluation.spots import permutation_check
    from histoviz.features.encoders import create_encoder
    from histoviz.io import open_slide
    from histoviz.io.featurebag import FeatureBag
    from histoviz.tiling.dataset import read_tile

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        s = load_spot_sample(import_spaceranger(ROOT / "sample_data" / "real" / "visium_mini", d / "v.h5ad"))
        patch = PatchSpec(size_um=None, tile_px=224)
        x = FeatureBag.from_h5(embed_spot_sample(s, create_encoder("efficientnet-lite0"), d / "f.h5", patch,
                                                 device="cpu")).features
        with open_slide(s.slide_path) as r:
            g = spot_grid(s, patch, dimensions=r.dimensions)
            tiles = np.stack([read_tile(r, g, i) for i in range(len(g))])
        sim, _ = simulated_labels_for_tiles(tiles, n_genes=10, seed=0)
        top = np.argsort(-np.asarray(s.counts.sum(0)).ravel())[:10]
        counts = float(np.asarray(s.counts.sum(1)).ravel().mean())
        keep = ("observed", "null_mean", "null_q95", "p", "n_spots", "n_perm")
        simulated = permutation_check(x, sim, n_perm=200)
        measured = permutation_check(x, normalize_log1p(s.counts)[:, top], n_perm=200)
        return {"spots": int(len(g)), "mean_counts_per_spot": counts, "mpp": float(getattr(s, "mpp", np.nan) or np.nan),
                "encoder": "efficientnet-lite0",
                "simulated": {k: float(simulated[k]) for k in keep if k in simulated},
                "measured_top10": {k: float(measured[k]) for k in keep if k in measured}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "checks.json")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = {"rossi": rossi()}
    print(f"Rossi held-out c-index: discrete-time {out['rossi']['discrete_time_mean']:.3f} vs Cox "
          f"{out['rossi']['cox_mean']:.3f}", file=sys.stderr)
    out["visium"] = visium()
    v = out["visium"]
    print(f"Visium: measured top-10 {v['measured_top10']['observed']:.3f} (null q95 "
          f"{v['measured_top10']['null_q95']:.3f}, p {v['measured_top10']['p']:.3f}); simulated "
          f"{v['simulated']['observed']:.3f} (q95 {v['simulated']['null_q95']:.3f}, p {v['simulated']['p']:.3f})",
          file=sys.stderr)
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    out["seconds"] = round(time.perf_counter() - t0, 1)
    tmp = a.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, a.out)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
