"""Tissue detection against truth, and on the real slides.

1. accuracy: synthetic slides with pen marks (blue, green, black), debris, air bubbles and
   faint tissue (``SyntheticConfig(pen_marks=..., debris=..., bubbles=..., faint_fraction=...)``):
   recall and precision of usable tissue (tissue not under an artefact), recall of faint
   tissue, and the share of kept tiles with > 10% ink or debris, for the default ``robust``
   detector and the ``combined`` detector of histoviz 0.1, on the same slides;
2. speed: mask + grid of a 100k x 100k px virtual slide with each detector (same run);
3. a figure of both masks on the real sample slides and two synthetic ones
   (``tissue_masks.png``; artefacts red, tissue kept bright, the rest dimmed).

Usage: ``python bench/bench_tissue.py [--out bench/results] [--quick]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import VirtualSlide, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("robust", "combined")


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3))


def accuracy(cohort) -> dict:
    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid, tissue_mask

    out: dict = {m: {"recall": [], "precision": [], "faint_recall": [], "ink_tiles": []} for m in METHODS}
    for sid, path in cohort.slides.items():
        t = cohort.truth(sid)
        usable_full = (t["labels"] > 0) & (t["artifact"] == 0)
        for m in METHODS:
            r = open_slide(path)
            mk = tissue_mask(r, method=m)
            f = int(round(mk.downsample / t["downsample"]))
            usable = _block_mean(usable_full.astype(float), f)
            faint = _block_mean((t["faint"] & (t["artifact"] == 0)).astype(float), f)
            hh, ww = min(usable.shape[0], mk.mask.shape[0]), min(usable.shape[1], mk.mask.shape[1])
            pred, usable, faint = mk.mask[:hh, :ww], usable[:hh, :ww], faint[:hh, :ww]
            tp = float((pred * usable).sum())
            o = out[m]
            o["recall"].append(tp / usable.sum())
            o["precision"].append(tp / max(pred.sum(), 1))
            o["faint_recall"].append(float(pred[faint > 0.99].mean()))
            g = make_tile_grid(r, TilingConfig(mask_method=m), allow_empty=True)
            ds = t["downsample"]
            boxes = [t["artifact"][y // ds:(y + g.tile_size_level0) // ds, x // ds:(x + g.tile_size_level0) // ds]
                     for x, y in g.coords]
            bad = [((b == 1) | (b == 2)).mean() > 0.1 for b in boxes]  # ink or debris
            o["ink_tiles"].append(float(np.mean(bad)) if bad else 0.0)
    for m in METHODS:
        o = out[m]
        o["f1"] = [2 * r * p / (r + p) for r, p in zip(o["recall"], o["precision"])]
        o["mean"] = {k: float(np.mean(v)) for k, v in o.items() if isinstance(v, list)}
    return out


def speed(side: int) -> dict:
    from histoviz.tiling import TilingConfig, make_tile_grid

    make_tile_grid(VirtualSlide(side, side))  # warm imports
    best = {m: float("inf") for m in METHODS}
    for _ in range(3):
        for m in METHODS:
            t = time.perf_counter()
            g = make_tile_grid(VirtualSlide(side, side), TilingConfig(mask_method=m))
            best[m] = min(best[m], time.perf_counter() - t)
    return {"slide_px": side, "n_tiles": len(g), "seconds": best, "robust_over_combined": best["robust"] / best["combined"]}


def figure(cohort, path: Path) -> Path:
    from PIL import Image, ImageDraw

    from histoviz.io import open_slide
    from histoviz.tiling import tissue_mask

    real = ROOT / "sample_data" / "real"
    items = [("CMU-1-Small-Region.svs", open_slide(real / "CMU-1-Small-Region.svs")),
             ("kidney-48-5.tif", open_slide(real / "kidney-48-5.tif", mpp=0.5)),
             ("he_1000px.png", open_slide(real / "he_1000px.png", mpp=0.5))]
    items += [(f"synthetic {sid}", open_slide(p)) for sid, p in list(cohort.slides.items())[:2]]
    rows = []
    for name, r in items:
        cells = []
        for m in METHODS:
            mk = tissue_mask(r, method=m)
            th = r.read_region_downsample((0, 0), mk.mask.shape[::-1], mk.downsample)
            vis = (th * np.where(mk.mask, 1.0, 0.35)[..., None]).astype(np.uint8)
            if mk.artifact is not None:
                vis[mk.artifact] = (230, 30, 30)
            im = Image.fromarray(vis)
            scale = 260 / max(im.size)
            im = im.resize((max(1, int(im.size[0] * scale)), max(1, int(im.size[1] * scale))), Image.NEAREST)
            canvas = Image.new("RGB", (270, 290), "white")
            canvas.paste(im, (5, 25))
            ImageDraw.Draw(canvas).text((5, 5), f"{name}: {m} ({mk.fraction:.0%} tissue)", fill="black")
            cells.append(canvas)
        row = Image.new("RGB", (540, 290), "white")
        row.paste(cells[0], (0, 0))
        row.paste(cells[1], (270, 0))
        rows.append(row)
    out = Image.new("RGB", (540, 290 * len(rows)), "white")
    for i, row in enumerate(rows):
        out.paste(row, (0, 290 * i))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def main() -> int:
    from histoviz.data.synthetic import make_synthetic_cohort

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="smallest size: every code path, no meaningful numbers (CI)")
    a = ap.parse_args()
    n, size = (2, 768) if a.smoke else (4, 1536) if a.quick else (8, 2048)
    res: dict = {"slides": n, "slide_px": size,
                 "artefacts": {"pen_marks": 2, "debris": 12, "bubbles": 1, "faint_fraction": 0.3}}
    with tempfile.TemporaryDirectory() as d:
        c = make_synthetic_cohort(Path(d) / "c", n_slides=n, seed=1, slide_size=(size, size),
                                  n_genes=20, n_proteins=2, n_mirna=2, n_pathways=2,
                                  n_cells_reference=30, **res["artefacts"])
        print(f"[accuracy] {n} synthetic slides of {size} px with artefacts", flush=True)
        res["accuracy"] = accuracy(c)
        for m in METHODS:
            mm = res["accuracy"][m]["mean"]
            print(f"  {m:<9} recall {mm['recall']:.3f} precision {mm['precision']:.3f} F1 {mm['f1']:.3f} "
                  f"faint recall {mm['faint_recall']:.3f} kept tiles with >10% ink/debris {mm['ink_tiles']:.1%}")
        res["figure"] = str(figure(c, Path(a.out) / "tissue_masks.png"))
    print("[speed] mask + grid, 100k x 100k px", flush=True)
    res["speed"] = speed(10_000 if a.smoke else 100_000)
    print(f"  robust {res['speed']['seconds']['robust']:.2f} s, combined {res['speed']['seconds']['combined']:.2f} s")
    write_result(a.out, "tissue", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
