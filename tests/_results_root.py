"""A small results root with two cohorts that share slide and patient ids (as the demo's synthetic
and PathGen cohorts do), built in a second: cohort tables, tiny H&E-like slides, runs that record
their cohort / omics / split fingerprints (computed by the library), held-out tables computed from
a known truth, and per-slide prediction files (simulated maps, labelled so) of each cohort's S001.

Layout::

    alpha/cohort.csv, alpha/slides/S001.tif, S002.tif      40 patients (grade, time, event, site)
    beta/cohort.csv,  beta/slides/S001.tif,  S002.tif      30 patients, other outcomes
    runs/alpha-good, runs/alpha-weak                        gene runs on alpha (one split)
    runs/alpha-outcomes                                     grade + survival on alpha (same split)
    runs/beta-ridge                                         a gene run on beta
    maps/S001.alpha.h5ad, maps/S001.beta.h5ad              each cohort's S001
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _runs import write_heldout_run

N_GENES = 24
GENES = ["ESR1", "MKI67", "ERBB2", "PGR", "FOXA1", "KRT5", *[f"G{j:03d}" for j in range(N_GENES - 6)]]


def write_slide(path: Path, seed: int, size: int = 768) -> Path:
    """A small pyramid-free TIFF at 0.5 um/px with an H&E-like tissue ellipse."""
    import tifffile
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 240, np.float32)
    yy, xx = np.mgrid[:size, :size]
    a, b = size * (0.3 + 0.1 * rng.random()), size * (0.35 + 0.08 * rng.random())
    mask = ((yy - size / 2) ** 2 / b ** 2 + (xx - size / 2) ** 2 / a ** 2) < 1
    tex = ndimage.gaussian_filter(rng.normal(size=(size, size)), 4) * 60
    tissue = np.stack([225 + tex * 0.2, 140 + tex, 185 + tex * 0.5], -1)
    tissue[ndimage.gaussian_filter((rng.random((size, size)) < 0.004).astype(float), 2) > 0.02] = (110, 60, 150)
    img[mask] = tissue[mask]
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.clip(img, 0, 255).astype(np.uint8), resolution=(2e4, 2e4), resolutionunit="CENTIMETER",
                     tile=(256, 256), photometric="rgb")
    return path


def _cohort(root: Path, name: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    t = rng.exponential(30 * np.exp(-0.8 * z)) + 0.5
    c = rng.exponential(60, n) + 1
    df = pd.DataFrame({"slide_id": [f"S{i + 1:03d}" for i in range(n)], "patient_id": [f"P{i + 1:03d}" for i in range(n)],
                       "path": [f"slides/S{i + 1:03d}.tif" for i in range(n)], "time": np.round(np.minimum(t, c), 2),
                       "event": (t <= c).astype(int), "grade": np.digitize(z, [-0.6, 0.6]) + 1,
                       "site": np.where(np.arange(n) % 2, "A", "B")})
    (root / name).mkdir(parents=True, exist_ok=True)
    df.to_csv(root / name / "cohort.csv", index=False)
    for i in (0, 1):
        write_slide(root / name / "slides" / f"S{i + 1:03d}.tif", seed * 10 + i)
    return df


def _record(run: Path, table: Path, df: pd.DataFrame, folds: np.ndarray, extra: dict | None = None) -> None:
    """config.yaml with the cohort table and the identity the runner records."""
    from histoviz.data.identity import cohort_identity

    ident = cohort_identity(table, df["patient_id"].tolist(), [folds])
    cfg = {"data": {"cohort": str(table)}, "evaluation": {"topk": [10]}, "_run": {"identity": ident,
                                                                                  "features": {"encoder": "morphology"}},
           **(extra or {})}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _outcome_run(run: Path, df: pd.DataFrame, folds: np.ndarray, seed: int) -> Path:
    """Grade + survival held-out tables from a model that sees the truth through noise, with
    conformal columns and each fold's bin ends, and metrics computed from them."""
    from _runs import write_outcome_run

    rng = np.random.default_rng(seed)
    n = len(df)
    codes = df["grade"].to_numpy() - 1
    s = np.eye(3)[codes] * 2.0 + rng.normal(0, 0.9, (n, 3))
    proba = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    risk_true = -np.log(df["time"].to_numpy())
    write_outcome_run(run, run.name, folds, time=df["time"].to_numpy(float), event=df["event"].to_numpy(),
                      risk=risk_true + rng.normal(0, 0.5, n), codes=codes, proba=proba)
    # the survival function per bin (4 bins per fold), conformal intervals, coverage columns
    h = pd.read_parquet(run / "heldout" / "survival.parquet")
    ends = np.zeros((n, 4))
    surv = np.zeros((n, 4))
    for k in np.unique(folds):
        tr = (folds != k) & (df["event"].to_numpy() == 1)
        e = np.quantile(df["time"].to_numpy()[tr], [0.25, 0.5, 0.75])
        ends[folds == k] = [*e, np.inf]
    scale = 30 * np.exp(-0.8 * h["risk"].to_numpy())  # higher risk, faster decline
    surv[:, :3] = np.exp(-ends[:, :3] / scale[:, None])
    surv[:, 3] = surv[:, 2] * 0.5
    h["bin"] = [int(np.searchsorted(ends[i, :3], t, side="right")) for i, t in enumerate(h["time"])]
    h["risk"] = -surv.sum(axis=1)
    for k in range(4):
        h[f"S_{k}"], h[f"end_{k}"] = surv[:, k], ends[:, k]
    h["risk_lo"], h["risk_hi"] = h["risk"] - 1.2, np.minimum(h["risk"] + 1.2, 0)
    h["width"] = h["risk_hi"] - h["risk_lo"]
    h["covered"] = np.where(h["event"] == 1, (-h["bin"] >= h["risk_lo"]) & (-h["bin"] <= h["risk_hi"]), np.nan)
    h.to_parquet(run / "heldout" / "survival.parquet", index=False)
    g = pd.read_parquet(run / "heldout" / "grade.parquet")
    sets = proba >= 0.2
    g["set"] = ["|".join(c for c, x in zip(("1", "2", "3"), row) if x) for row in sets]
    g["set_size"] = sets.sum(axis=1).astype(float)
    g["covered"] = sets[np.arange(n), codes]
    g.to_parquet(run / "heldout" / "grade.parquet", index=False)
    return run


def _predictions(slide: Path, out: Path, model: str) -> Path:
    from histoviz.demo.simulated import simulated_maps
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling import TilingConfig, make_tile_grid

    with open_slide(slide) as r:
        a = simulated_maps(r, make_tile_grid(r, TilingConfig()), n_genes=4)
    info = dict(a.uns["histoviz"])
    info["model"] = model
    a.uns["histoviz"] = info
    return write_predictions(a, out)


def build_two_cohorts(root: Path) -> dict[str, Path]:
    """The results root described in the module docstring; returns its main paths."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, n, seed in (("alpha", 40, 1), ("beta", 30, 2)):
        df = _cohort(root, name, n, seed)
        table = root / name / "cohort.csv"
        rng = np.random.default_rng(seed + 100)
        folds = rng.permutation(np.arange(n) % 4)
        y = rng.normal(size=(n, N_GENES))
        y[:, 1] += 0.8 * (df["grade"].to_numpy() - 2)  # MKI67 follows grade
        runs = [("good", 0.6), ("weak", 1.6)] if name == "alpha" else [("ridge", 0.9)]
        for model, noise in runs:
            run = write_heldout_run(root / "runs" / f"{name}-{model}", f"{name}-{model}", y,
                                    y + noise * rng.normal(size=y.shape), folds, targets=GENES)
            pats = [f"P{i:03d}" for i in range(n)]  # the writer's ids: renamed to the cohort's
            ren = dict(zip(pats, df["patient_id"]))
            for f in (run / "heldout" / "gene.parquet", run / "predictions.parquet"):
                h = pd.read_parquet(f)
                h["patient_id"] = h["patient_id"].map(ren)
                h["slide_ids"] = h["patient_id"].str.replace("P", "S")
                h.to_parquet(f, index=False)
            _record(run, table, df, folds)
            out[f"{name}-{model}"] = run
        if name == "alpha":
            run = _outcome_run(root / "runs" / "alpha-outcomes", df, folds, seed)
            for f in ("survival", "grade"):
                h = pd.read_parquet(run / "heldout" / f"{f}.parquet")
                h["patient_id"] = df["patient_id"].to_numpy()
                h.to_parquet(run / "heldout" / f"{f}.parquet", index=False)
            _record(run, table, df, folds, {"evaluation": {"conformal": {"alpha": 0.1, "group": "site"}},
                                            "data": {"cohort": str(table),
                                                     "outcomes": {"survival": {"time_unit": "months"}}}})
            info = json.loads((run / "run.json").read_text())
            (run / "run.json").write_text(json.dumps({**info, "model": "pca-outcomes"}))
            out["alpha-outcomes"] = run
        out[f"{name}-map"] = _predictions(root / name / "slides" / "S001.tif", root / "maps" / f"S001.{name}.h5ad",
                                          f"simulated ({name})")
    return out
