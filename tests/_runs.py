"""A fake but well-formed run directory (format 2) for dashboard and comparison tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def write_run(run_dir: Path, model: str, *, seed: int = 0, n_genes: int = 60, n_proteins: int = 8,
              n_folds: int = 3) -> Path:
    """``run.json`` + long ``metrics.parquet`` (per-target Pearson / Spearman of genes and proteins,
    random) + ``targets.parquet`` (training statistics for top-k)."""
    rng = np.random.default_rng(seed)
    rows, trows = [], []
    for fold in range(n_folds):
        for mod, n in (("gene", n_genes), ("protein", n_proteins)):
            for j in range(n):
                t = f"{mod.upper()[:1]}{j:03d}"
                for metric, mu in (("pearson", 0.3), ("spearman", 0.25)):
                    rows.append({"model": model, "fold": fold, "task": mod, "kind": "regression", "target": t,
                                 "metric": metric, "value": float(np.tanh(rng.normal(mu, 0.4))), "n": 8,
                                 "axis": "per-target", "subset": "all"})
                trows.append({"model": model, "fold": fold, "task": mod, "target": t,
                              "train_mean": float(rng.normal()), "train_var": float(rng.gamma(2.0))})
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(run_dir / "metrics.parquet", index=False)
    pd.DataFrame(trows).to_parquet(run_dir / "targets.parquet", index=False)
    (run_dir / "run.json").write_text(json.dumps({"format": 2, "name": model, "model": model, "n_folds": n_folds,
                                                  "blocks": {"gene": "regression", "protein": "regression"}}))
    return run_dir
