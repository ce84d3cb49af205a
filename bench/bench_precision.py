"""Reduced-precision CPU encoders: speed, agreement with fp32, and what a downstream model sees.

For one encoder (default UNI's ViT-L/16; random weights, since no pretrained file can be
downloaded here) at fp32, int8 (dynamic quantisation of the linear layers) and bf16 (where
the CPU has native bfloat16):

1. speed: tiles per second on the same real H&E tiles, round-robin best-of-N, and the ratio to
   fp32 measured in the same process;
2. cosine between each tile's fp32 embedding and its int8 / bf16 embedding, on real H&E tiles
   (the CMU SVS and the H&E PNG of sample_data/real);
3. downstream: a small synthetic cohort (known grade); slides embedded at each precision and
   mean-pooled; ridge models (patient-level leave-one-out) trained and applied at one precision
   ("same": what histoviz allows, since bags of another precision are never mixed) and the
   fp32 model applied to int8 / bf16 features ("cross": what ``predict_slide`` refuses).
   Reported against the fp32 model's predictions: their Pearson correlation, the mean absolute
   change relative to the spread of the predictions, Spearman vs the true grade, and the
   paired difference of absolute errors (mean and standard deviation over slides).

Random weights: timm initialises LayerScale at 1e-5, which makes every block a near no-op
(fp32 and int8 would agree trivially); the benchmark sets every LayerScale to 0.5 so that the
blocks contribute as in a trained network. Real weights may agree more or less well.

Usage: ``python bench/bench_precision.py [--out bench/results] [--quick] [--encoder uni]``
(``--quick``, the size CI runs: 2 of the encoder's blocks, 8 tiles, 8 synthetic slides).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import compare, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "sample_data" / "real"


def real_tiles(n: int) -> np.ndarray:
    """``n`` 224-px RGB tiles with tissue from the CMU SVS and the H&E PNG, ``(n, 3, 224, 224)``."""
    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid

    out = []
    for path, mpp in ((REAL / "CMU-1-Small-Region.svs", None), (REAL / "he_1000px.png", 0.5)):
        with open_slide(path, mpp=mpp) if mpp else open_slide(path) as r:
            g = make_tile_grid(r, TilingConfig(tile_size=224, mpp=r.mpp, min_tissue_fraction=0.5))
            for x, y in g.coords:
                out.append(r.read_region((int(x), int(y)), 0, (224, 224)).transpose(2, 0, 1))
    if len(out) < n:
        raise SystemExit(f"only {len(out)} tissue tiles in {REAL}")
    idx = np.linspace(0, len(out) - 1, n).round().astype(int)
    return np.stack([out[i] for i in idx])


def build(name: str, precision: str, depth: int | None):
    import torch

    from histoviz.features.encoders import apply_precision, create_encoder

    kw = {"depth": depth} if depth else {}
    enc = create_encoder(name, pretrained=False, **kw)
    with torch.no_grad():
        for n, p in enc.weights_module().named_parameters():
            if n.endswith((".gamma", "lambda1")):  # LayerScale (see the module docstring)
                p.fill_(0.5)
    return apply_precision(enc, precision)


def embed(enc, x, batch: int = 8) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([enc(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def cohort_features(encs: dict, root: Path, n_slides: int, size: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Mean-pooled slide features at each precision, the true grade and the patient of each slide."""
    import pandas as pd

    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid

    c = make_synthetic_cohort(root, n_slides=n_slides, slide_size=(size, size), seed=3)
    table = pd.read_csv(c.cohort_csv)
    feats: dict[str, list[np.ndarray]] = {k: [] for k in encs}
    for sid in table["slide_id"]:
        with open_slide(c.slides[sid]) as r:
            g = make_tile_grid(r, TilingConfig(tile_size=224, mpp=0.5, min_tissue_fraction=0.25))
            x = np.stack([r.read_region((int(a), int(b)), 0, (g.tile_size_level0,) * 2)[:224, :224].transpose(2, 0, 1)
                          for a, b in g.coords])
        for k, enc in encs.items():
            feats[k].append(embed(enc, x).mean(0))
    return ({k: np.stack(v) for k, v in feats.items()}, table["grade"].to_numpy(float),
            table["patient_id"].to_numpy(str))


def downstream(feats: dict, grade: np.ndarray, patients: np.ndarray) -> dict:
    """Ridge (patient-level leave-one-out) on mean-pooled features, two ways.

    ``same``: trained and applied at one precision (what histoviz allows: bags of one recipe),
    compared with the fp32 model's predictions. ``cross``: the fp32-trained model applied to
    features of another precision (what ``predict_slide`` refuses).
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(f):  # noqa: ANN001, ANN202
        return make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(*f)

    same = {k: np.empty(len(grade)) for k in feats}
    cross = {k: np.empty(len(grade)) for k in feats}
    for p in np.unique(patients):
        test = patients == p
        ref = fit((feats["fp32"][~test], grade[~test]))
        for k, f in feats.items():
            cross[k][test] = ref.predict(f[test])
            same[k][test] = fit((f[~test], grade[~test])).predict(f[test])
    base = same["fp32"]
    out = {}
    for k in feats:
        if k == "fp32":
            continue
        row: dict[str, float | int] = {"n_slides": int(len(grade)),
                                       "spearman_vs_grade_fp32": float(spearmanr(base, grade)[0])}
        for how, pr in (("same", same[k]), ("cross", cross[k])):
            d_err = np.abs(pr - grade) - np.abs(base - grade)
            row.update({f"{how}_pearson_predictions": float(pearsonr(base, pr)[0]),
                        f"{how}_mean_abs_change_over_sd": float(np.abs(pr - base).mean() / max(base.std(), 1e-12)),
                        f"{how}_spearman_vs_grade": float(spearmanr(pr, grade)[0]),
                        f"{how}_abs_error_paired_diff_mean": float(d_err.mean()),
                        f"{how}_abs_error_paired_diff_sd": float(d_err.std(ddof=1))})
        out[k] = row
    return out


def main() -> int:
    import torch

    from histoviz.features.encoders.precision import bf16_supported

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="the smallest size (what CI runs)")
    ap.add_argument("--smoke", action="store_true", help="the same as --quick, already the smallest size")
    ap.add_argument("--encoder", default="uni")
    a = ap.parse_args()
    a.quick = a.quick or a.smoke
    depth = 2 if a.quick else None
    n_tiles, repeats = (8, 2) if a.quick else (32, 3)
    n_slides, size = (8, 448) if a.quick else (16, 672)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    precisions = ["fp32", "int8"] + (["bf16"] if bf16_supported() else [])
    t0 = time.perf_counter()
    encs = {p: build(a.encoder, p, depth) for p in precisions}
    x = real_tiles(n_tiles)
    for enc in encs.values():  # warm-up
        embed(enc, x[:2])
    best = compare({p: (lambda e=e: embed(e, x)) for p, e in encs.items()}, repeats=repeats)
    speed = {p: {"seconds": best[p], "tiles_per_s": n_tiles / best[p], "speedup_vs_fp32": best["fp32"] / best[p]}
             for p in precisions}
    emb = {p: embed(e, x) for p, e in encs.items()}
    cos = {p: {"min": float(c.min()), "p05": float(np.quantile(c, 0.05)), "mean": float(c.mean()),
               "n_tiles": len(c)} for p in precisions[1:] for c in [cosine(emb["fp32"], emb[p])]}
    with tempfile.TemporaryDirectory() as tmp:
        feats, grade, patients = cohort_features(encs, Path(tmp) / "cohort", n_slides, size)
    result = {
        "encoder": a.encoder + (f" ({depth} of its blocks)" if depth else ""),
        "weights": "random (seed 0), LayerScale set to 0.5",
        "precisions": precisions, "tiles": n_tiles, "batch": 8,
        "speed": speed, "cosine_real_tiles": cos,
        "downstream": downstream(feats, grade, patients),
        "seconds_total": time.perf_counter() - t0,
    }
    for p in precisions:
        print(f"{p:>5}: {speed[p]['tiles_per_s']:.2f} tiles/s ({speed[p]['speedup_vs_fp32']:.2f}x fp32)"
              + (f", cosine to fp32 min {cos[p]['min']:.4f} mean {cos[p]['mean']:.4f}" if p in cos else ""))
    for p, d in result["downstream"].items():
        for how in ("same", "cross"):
            print(f"{p:>5} {how:>5}: downstream predictions r={d[how + '_pearson_predictions']:.4f} vs fp32, "
                  f"|change| {d[how + '_mean_abs_change_over_sd']:.3f} sd, paired |error| diff "
                  f"{d[how + '_abs_error_paired_diff_mean']:+.4f} ± {d[how + '_abs_error_paired_diff_sd']:.4f} "
                  f"(n={d['n_slides']}; Spearman vs grade {d[how + '_spearman_vs_grade']:.3f}, "
                  f"fp32 {d['spearman_vs_grade_fp32']:.3f})")
    write_result(a.out, "precision", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
