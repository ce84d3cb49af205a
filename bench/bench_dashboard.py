"""Dashboard at cohort scale: loading the results of 1,000 slides x 20,000 genes, warm, against a
raw parquet read of the same files, in one process.

Two runs of the same 1,000 patients (one slide each, 5 patient-level folds) predicting 20,000
genes are generated here: the held-out table in the long format ``histoviz train`` writes
(``heldout/gene.parquet``: fold, task, patient_id, slide_ids, target, y_true, y_pred; 20 M
rows per run) and ``metrics.parquet`` with each gene's per-fold Pearson / Spearman computed from
those values with histoviz (plus the per-patient rows). ``predictions.parquet``, which the
runner also writes, is left out: the dashboard reads ``heldout/`` first.

Timed (best of ``--repeats``, round-robin so machine noise hits all alike):

- ``raw``: ``pd.read_parquet`` of every file the Models and Targets pages read for these runs
  (both ``metrics.parquet``, both ``heldout/gene.parquet`` read whole);
- ``dashboard_warm``: what those pages do on a rerun, through the app's cached loaders
  (``histoviz/dashboard/common.py``: ``st.cache_resource`` runs, ``st.cache_data`` tables): read the
  runs, per-target scores, the targets table, the run / fold table, and one gene's held-out
  rows of each run for its scatter;
- ``dashboard_cold`` (once, caches cleared; the first visit): the same calls.

Target: ``dashboard_warm / raw <= 2``. Prints the ratios; writes ``<out>/dashboard.json``.

Usage: ``python bench/bench_dashboard.py [--out bench/results] [--quick] [--repeats 3]``
(``--quick``: 200 slides x 2,000 genes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import compare, write_result  # noqa: E402

TARGET = 2.0
N_FOLDS = 5


def make_run(run_dir: Path, name: str, y_true: np.ndarray, y_pred: np.ndarray, folds: np.ndarray) -> None:
    """One run: long held-out table and per-fold metrics (histoviz correlations)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from histoviz.evaluation.metrics import (
        columnwise_pearson,
        columnwise_spearman,
        per_sample_correlation,
    )

    n, m = y_true.shape
    patients = np.array([f"P{i:05d}" for i in range(n)])
    genes = np.array([f"GENE{j:05d}" for j in range(m)])
    (run_dir / "heldout").mkdir(parents=True, exist_ok=True)
    order = np.concatenate([np.flatnonzero(folds == k) for k in range(N_FOLDS)])  # fold by fold, as the runner
    rows_p = np.repeat(order, m).astype(np.int32)
    rows_t = np.tile(np.arange(m, dtype=np.int32), n)

    def strings(idx: np.ndarray, names: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(names)).cast(pa.string())

    table = pa.table({
        "model": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n * m, np.int8)), pa.array([name])).cast(pa.string()),
        "fold": pa.array(np.repeat(folds[order], m).astype(np.int64)),
        "task": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n * m, np.int8)), pa.array(["gene"])).cast(pa.string()),
        "patient_id": strings(rows_p, patients), "slide_ids": strings(rows_p, patients),
        "target": strings(rows_t, genes),
        "y_true": pa.array(y_true[order].reshape(-1)), "y_pred": pa.array(y_pred[order].reshape(-1)),
    })
    pq.write_table(table, run_dir / "heldout" / "gene.parquet")
    del table
    parts = []
    for k in range(N_FOLDS):
        s = folds == k
        for metric, fn in (("pearson", columnwise_pearson), ("spearman", columnwise_spearman)):
            parts.append(pd.DataFrame({"fold": k, "task": "gene", "kind": "regression", "target": genes,
                                       "metric": metric, "value": fn(y_true[s], y_pred[s]), "n": int(s.sum()),
                                       "axis": "per-target", "subset": "all"}))
        ps = per_sample_correlation(y_true[s], y_pred[s], samples=patients[s])
        for metric in ("pearson", "spearman"):
            parts.append(pd.DataFrame({"fold": k, "task": "gene", "kind": "regression", "target": ps["sample"],
                                       "metric": metric, "value": ps[metric], "n": ps["n_targets"],
                                       "axis": "per-patient", "subset": "all"}))
    met = pd.concat(parts, ignore_index=True)
    met.insert(0, "model", name)
    for c in ("model", "task", "kind", "metric", "axis", "subset"):
        met[c] = met[c].astype("category")
    met.to_parquet(run_dir / "metrics.parquet", index=False)
    (run_dir / "run.json").write_text(json.dumps({"format": 2, "name": name, "model": name, "n_folds": N_FOLDS,
                                                  "n_patients": n, "blocks": {"gene": "regression"}}))


def run(out: str, *, quick: bool, repeats: int) -> dict:
    """Generate, time, write the result."""
    import pandas as pd
    import streamlit as st

    n, m = (200, 2000) if quick else (1000, 20000)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="histoviz-bench-dashboard-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        y = rng.standard_normal((n, m))
        folds = rng.permutation(np.arange(n) % N_FOLDS)
        for name, noise in (("model_a", 1.0), ("model_b", 1.3)):
            make_run(root / "runs" / name, name, y, y + noise * rng.standard_normal((n, m)), folds)
        gen_s = time.perf_counter() - t0
        sizes = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*.parquet")}
        os.environ["HISTOVIZ_RESULTS_ROOT"] = str(root)
        from histoviz.dashboard import common as c
        from histoviz.viz.results import fold_table, targets_table

        paths = [str(root / "runs" / r) for r in ("model_a", "model_b")]
        gene = "GENE00042"

        def raw() -> None:
            for p in paths:
                pd.read_parquet(Path(p) / "metrics.parquet")
                pd.read_parquet(Path(p) / "heldout" / "gene.parquet")

        def dashboard() -> None:
            runs, errors = c.load_runs(paths)
            assert not errors, errors
            scores = c.scores(runs, "pearson")
            table = targets_table(scores)
            assert len(table) == m
            fold_table(runs)
            for r in runs:
                h = c.heldout_target(r, "gene", gene)
                assert len(h) == n, len(h)

        st.cache_data.clear()
        st.cache_resource.clear()
        t = time.perf_counter()
        dashboard()
        cold = time.perf_counter() - t
        best = compare({"raw": raw, "dashboard_warm": dashboard}, repeats=repeats)
        # check the numbers the Targets page shows for one gene against a direct computation
        from histoviz.evaluation.metrics import columnwise_pearson

        runs, _ = c.load_runs(paths)
        shown = targets_table(c.scores(runs, "pearson")).set_index("target").loc[gene, "runs/model_a"]
        held = pd.read_parquet(Path(paths[0]) / "heldout" / "gene.parquet", filters=[("target", "==", gene)])
        direct = np.mean([columnwise_pearson(g["y_true"].to_numpy(), g["y_pred"].to_numpy())[0]
                          for _, g in held.groupby("fold")])
    result = {
        "slides": n, "genes": m, "folds": N_FOLDS, "runs": 2, "heldout_rows_per_run": n * m,
        "files_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()}, "generate_s": round(gen_s, 2),
        "raw_read_s": round(best["raw"], 4), "dashboard_warm_s": round(best["dashboard_warm"], 4),
        "dashboard_cold_s": round(cold, 4),
        "ratio_warm": round(best["dashboard_warm"] / best["raw"], 4),
        "ratio_cold": round(cold / best["raw"], 4),
        "target_ratio_warm": TARGET, "pass": best["dashboard_warm"] / best["raw"] <= TARGET,
        "check_pearson_shown": float(shown), "check_pearson_direct": float(direct),
        "quick": quick, "repeats": repeats,
    }
    print(f"{n} slides x {m} genes, 2 runs: raw read {best['raw']:.3f} s, dashboard warm "
          f"{best['dashboard_warm']:.4f} s (ratio {result['ratio_warm']:.3f}, target <= {TARGET}), cold "
          f"{cold:.3f} s (ratio {result['ratio_cold']:.2f})")
    write_result(out, "dashboard", result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="200 slides x 2,000 genes")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    res = run(a.out, quick=a.quick, repeats=a.repeats)
    ok = res["pass"] and abs(res["check_pearson_shown"] - res["check_pearson_direct"]) < 1e-9
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
