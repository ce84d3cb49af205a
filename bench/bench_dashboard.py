"""Dashboard at cohort scale, in one process: the Models page's warm load at 1,000 slides x
20,000 genes against a raw parquet read of the same files, and the peak memory of the Models page
on a 2-million-row metrics table.

1. **Warm load.** Two runs of the same 1,000 patients (one slide each, 5 patient-level folds)
   predicting 20,000 genes: the held-out table in the long format ``histoviz train`` writes
   (``heldout/gene.parquet``: fold, task, patient_id, slide_ids, target, y_true, y_pred; 20 M rows
   per run) and ``metrics.parquet`` with each gene's per-fold Pearson / Spearman computed from
   those values with histoviz (plus the per-patient rows). Timed (best of ``--repeats``,
   round-robin so machine noise hits all alike):

   - ``raw``: ``pd.read_parquet`` of every file the Models and Targets pages read for these runs
     (both ``metrics.parquet``, both ``heldout/gene.parquet``, whole);
   - ``models_page_warm``: the Models page rendered by Streamlit's ``AppTest`` (the real page:
     runs table, per-target distributions, comparison table, paired comparison) after a first,
     cold render, so its caches hold the runs;
   - ``targets_warm``: the Targets page's calls through the app's cached loaders (per-target
     scores, the targets table, one gene's held-out rows of each run);
   - ``models_page_cold`` (once, caches cleared: the first visit).

   Target: ``models_page_warm / raw <= 2`` at the full size (reported, not judged, with
   ``--quick``).
2. **Peak memory.** In a fresh process, the Models page (``AppTest``) over two runs whose
   ``metrics.parquet`` has 2,000,000 rows each (200,000 targets x 5 folds x 2 metrics): the
   peak resident memory (``VmHWM``) and the process's memory after imports, before the page.

Prints the ratios; writes ``<out>/dashboard.json``.

Usage: ``python bench/bench_dashboard.py [--out bench/results] [--quick] [--repeats 3]``
(``--quick``: 200 slides x 2,000 genes; 200,000-row metrics tables for the memory part).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    _run_files(run_dir, name, met, patients[order], folds[order])
    (run_dir / "run.json").write_text(json.dumps({"format": 2, "name": name, "model": name, "n_folds": N_FOLDS,
                                                  "n_patients": n, "blocks": {"gene": "regression"}}))


def _run_files(run_dir: Path, name: str, met: Any, patients: np.ndarray, folds: np.ndarray) -> None:
    """What ``histoviz train`` writes beside the tables: the split, the config and the comparison
    table (``summary.csv``, computed by histoviz from the metrics)."""
    import pandas as pd
    import yaml

    from histoviz.evaluation.compare import summarise_metrics

    pd.DataFrame({"fold": folds, "patient_id": patients, "split": "test"}).to_parquet(run_dir / "splits.parquet",
                                                                                    index=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"name": name, "evaluation": {"topk": [50, 500]}}))
    summarise_metrics(met, topk=(50, 500)).to_csv(run_dir / "summary.csv", index=False)


def make_metrics_run(run_dir: Path, name: str, n_targets: int, seed: int) -> int:
    """A run whose metrics table has ``n_targets x 5 folds x 2 metrics`` per-target rows (random
    values); no held-out table. Returns the row count."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    genes = np.array([f"G{j:06d}" for j in range(n_targets)])
    parts = []
    for k in range(N_FOLDS):
        for metric in ("pearson", "spearman"):
            parts.append(pd.DataFrame({"fold": k, "repeat": 0, "task": "gene", "kind": "regression", "target": genes,
                                       "metric": metric, "value": rng.uniform(-0.2, 0.8, n_targets), "n": 40,
                                       "axis": "per-target", "subset": "all"}))
    met = pd.concat(parts, ignore_index=True)
    met.insert(0, "model", name)
    for c in ("model", "task", "kind", "metric", "axis", "subset"):
        met[c] = met[c].astype("category")
    run_dir.mkdir(parents=True, exist_ok=True)
    met.to_parquet(run_dir / "metrics.parquet", index=False)
    _run_files(run_dir, name, met, np.array([f"P{i:03d}" for i in range(200)]), np.arange(200) % N_FOLDS)
    (run_dir / "run.json").write_text(json.dumps({"format": 2, "name": name, "model": name, "n_folds": N_FOLDS,
                                                  "n_patients": 200, "blocks": {"gene": "regression"}}))
    return len(met)


_MEMORY_PROBE = """
import os, sys, json
os.environ["HISTOVIZ_RESULTS_ROOT"] = sys.argv[1]
import streamlit, pandas, pyarrow, plotly, histoviz.dashboard.common  # what the app imports
from streamlit.testing.v1 import AppTest
from histoviz.dashboard import APP
def status_mb(key):  # VmHWM: this address space's peak (ru_maxrss would count the forked parent's)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024
base = status_mb("VmRSS")
at = AppTest.from_file(str(APP), default_timeout=1800)
at.run()
print("MEM" + json.dumps({"after_imports_mb": base, "peak_mb": status_mb("VmHWM"),
      "exceptions": [str(e.value) for e in at.exception], "errors": [e.value for e in at.error],
      "charts": len(at.get("plotly_chart"))}))
"""


def peak_memory(rows_target: int) -> dict:
    """Peak memory of the Models page over two runs with ``rows_target``-row metric tables."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="histoviz-bench-dashboard-mem-") as tmp:
        root = Path(tmp)
        rows = [make_metrics_run(root / "runs" / n, n, rows_target // (2 * N_FOLDS), seed)
                for seed, n in enumerate(("big_a", "big_b"))]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(root)], capture_output=True, text=True,
                           env=env, check=False, timeout=3600)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("MEM")), None)
        if p.returncode or line is None:
            raise RuntimeError(f"the memory probe failed: {p.stderr[-3000:]}")
        got = json.loads(line[3:])
    return {"metric_rows_per_run": rows[0], "runs": 2, **got}


def run(out: str, *, quick: bool, repeats: int, smoke: bool = False) -> dict:
    """Generate, time, write the result (``smoke``: the smallest size, not judged)."""
    import pandas as pd
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    n, m = (40, 200) if smoke else (200, 2000) if quick else (1000, 20000)
    quick = quick or smoke
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
        from histoviz.dashboard import APP
        from histoviz.dashboard import common as c
        from histoviz.viz.results import targets_table

        paths = [str(root / "runs" / r) for r in ("model_a", "model_b")]
        gene = "GENE00042"

        def raw() -> None:
            for p in paths:
                pd.read_parquet(Path(p) / "metrics.parquet")
                pd.read_parquet(Path(p) / "heldout" / "gene.parquet")

        app = AppTest.from_file(str(APP), default_timeout=3600)

        def models_page() -> None:
            app.run()
            assert not app.exception and not app.error, ([e.value for e in app.exception], [e.value for e in app.error])

        def targets() -> None:
            runs, errors = c.load_runs(paths)
            assert not errors, errors
            assert len(targets_table(c.scores(runs, "pearson"))) == m
            for r in runs:
                assert len(c.heldout_target(r, "gene", gene)) == n

        st.cache_data.clear()
        st.cache_resource.clear()
        t = time.perf_counter()
        models_page()
        cold = time.perf_counter() - t
        shown = {x.label: x.value for x in app.metric}
        best = compare({"raw": raw, "models_page_warm": models_page, "targets_warm": targets}, repeats=repeats)
        # the numbers the pages show for one gene equal a direct computation
        from histoviz.evaluation.metrics import columnwise_pearson

        runs, _ = c.load_runs(paths)
        pearson_shown = targets_table(c.scores(runs, "pearson")).set_index("target").loc[gene, "runs/model_a"]
        held = pd.read_parquet(Path(paths[0]) / "heldout" / "gene.parquet", filters=[("target", "==", gene)])
        direct = np.mean([columnwise_pearson(g["y_true"].to_numpy(), g["y_pred"].to_numpy())[0]
                          for _, g in held.groupby("fold")])
    mem = peak_memory(20_000 if smoke else 200_000 if quick else 2_000_000)
    ratio = best["models_page_warm"] / best["raw"]
    result = {
        "slides": n, "genes": m, "folds": N_FOLDS, "runs": 2, "heldout_rows_per_run": n * m,
        "files_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()}, "generate_s": round(gen_s, 2),
        "raw_read_s": round(best["raw"], 4), "models_page_warm_s": round(best["models_page_warm"], 4),
        "models_page_cold_s": round(cold, 4), "targets_warm_s": round(best["targets_warm"], 4),
        "ratio_warm": round(ratio, 4), "ratio_cold": round(cold / best["raw"], 4),
        "ratio_targets_warm": round(best["targets_warm"] / best["raw"], 4),
        "target_ratio_warm": TARGET, "pass": None if quick else bool(ratio <= TARGET),
        "paired_shown": {k: v for k, v in shown.items() if "−" in k or k == "Verdict"},
        "check_pearson_shown": float(pearson_shown), "check_pearson_direct": float(direct),
        "memory": mem, "quick": quick, "repeats": repeats,
    }
    print(f"{n} slides x {m} genes, 2 runs: raw read {best['raw']:.3f} s, Models page warm "
          f"{best['models_page_warm']:.4f} s (ratio {ratio:.3f}, target <= {TARGET}"
          f"{', not judged with --quick' if quick else ''}), cold {cold:.3f} s (ratio {result['ratio_cold']:.2f}); "
          f"Targets calls warm {best['targets_warm']:.4f} s")
    print(f"Models page over 2 runs x {mem['metric_rows_per_run']:,} metric rows: peak {mem['peak_mb']:.0f} MB "
          f"(after imports {mem['after_imports_mb']:.0f} MB); errors {mem['errors'] or 'none'}")
    write_result(out, "dashboard", result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="200 slides x 2,000 genes; 200,000-row metric tables")
    ap.add_argument("--smoke", action="store_true", help="smallest size: every code path, no meaningful numbers (CI)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    res = run(a.out, quick=a.quick, repeats=1 if a.smoke else a.repeats, smoke=a.smoke)
    ok = res["pass"] is not False and abs(res["check_pearson_shown"] - res["check_pearson_direct"]) < 1e-9
    ok = ok and not res["memory"]["exceptions"] and not res["memory"]["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
