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


def write_heldout_run(run_dir: Path, name: str, y_true: np.ndarray, y_pred: np.ndarray, folds: np.ndarray, *,
                      targets: list[str] | None = None, task: str = "gene", repeat: np.ndarray | None = None) -> Path:
    """A run whose ``metrics.parquet`` is computed from its own held-out table (per fold, per
    target Pearson / Spearman with histoviz), as ``histoviz train`` writes it.

    ``y_true`` / ``y_pred``: ``(patients, targets)``; ``folds``: fold of each patient (``repeat``:
    optional repeat of each row; then rows of a patient may repeat across repeats).
    """
    from histoviz.evaluation.metrics import columnwise_pearson, columnwise_spearman

    n, m = y_true.shape
    targets = targets or [f"G{j:03d}" for j in range(m)]
    pats = np.array([f"P{i:03d}" for i in range(n)], dtype=object)
    rep = np.zeros(n, int) if repeat is None else np.asarray(repeat)
    rows, held = [], []
    for r in np.unique(rep):
        for k in np.unique(folds[rep == r]):
            sel = (rep == r) & (folds == k)
            pe = columnwise_pearson(y_true[sel], y_pred[sel])
            sp = columnwise_spearman(y_true[sel], y_pred[sel])
            for j, t in enumerate(targets):
                for metric, v in (("pearson", pe[j]), ("spearman", sp[j])):
                    row = {"model": name, "fold": int(k), "task": task, "kind": "regression", "target": t,
                           "metric": metric, "value": float(v), "n": int(sel.sum()), "axis": "per-target",
                           "subset": "all"}
                    if repeat is not None:
                        row["repeat"] = int(r)
                    rows.append(row)
            h = pd.DataFrame({"fold": int(k), "task": task, "patient_id": np.repeat(pats[sel], m),
                              "slide_ids": np.repeat(pats[sel], m), "target": np.tile(targets, int(sel.sum())),
                              "y_true": y_true[sel].reshape(-1), "y_pred": y_pred[sel].reshape(-1)})
            if repeat is not None:
                h.insert(0, "repeat", int(r))
            held.append(h)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "heldout").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(run_dir / "metrics.parquet", index=False)
    hh = pd.concat(held, ignore_index=True)
    hh.insert(0, "model", name)
    hh.to_parquet(run_dir / "heldout" / f"{task}.parquet", index=False)
    hh.to_parquet(run_dir / "predictions.parquet", index=False)
    (run_dir / "run.json").write_text(json.dumps({"format": 2, "name": name, "model": name,
                                                  "n_folds": int(len(np.unique(folds))), "n_patients": n,
                                                  "blocks": {task: "regression"}}))
    return run_dir


def write_outcome_run(run_dir: Path, name: str, folds: np.ndarray, *, time: np.ndarray, event: np.ndarray,
                      risk: np.ndarray, codes: np.ndarray, proba: np.ndarray, classes: tuple[str, ...] = ("1", "2", "3"),
                      alpha: float = 0.1) -> Path:
    """A grade + survival run whose metrics come from its held-out tables (histoviz c-index and
    classification metrics per fold), with conformal coverage rows per ``site`` subgroup."""
    from histoviz.evaluation.classification import classification_metrics
    from histoviz.evaluation.survival import concordance_index

    n = len(folds)
    pats = np.array([f"P{i:03d}" for i in range(n)], dtype=object)
    site = np.where(np.arange(n) % 2, "A", "B")
    rows = []

    def row(**kw):
        rows.append({"model": name, "axis": "per-target", "subset": "all", **kw})

    for k in np.unique(folds):
        s = folds == k
        row(fold=int(k), task="survival", kind="survival", target="risk", metric="c_index",
            value=concordance_index(time[s], risk[s], event[s]), n=int(s.sum()))
        cm = classification_metrics(codes[s], proba[s], list(classes))
        for c in classes:
            row(fold=int(k), task="grade", kind="classification", target=c, metric="auc",
                value=cm["auc_per_class"][c], n=int((codes[s] == classes.index(c)).sum()))
        for met in ("auc_macro", "balanced_accuracy"):
            row(fold=int(k), task="grade", kind="classification", target="all", metric=met, value=cm[met],
                n=int(s.sum()))
        for sub in ("all", "site=A", "site=B"):
            sel = s if sub == "all" else s & (site == sub[-1])
            row(fold=int(k), task="grade", kind="classification", target="all", metric="coverage",
                value=0.9 + 0.01 * int(k), n=int(sel.sum()), subset=sub)
            row(fold=int(k), task="grade", kind="classification", target="all", metric="set_size",
                value=1.5 + 0.1 * int(k), n=int(sel.sum()), subset=sub)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "heldout").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(run_dir / "metrics.parquet", index=False)
    pd.DataFrame({"model": name, "fold": folds, "patient_id": pats, "time": time, "event": event, "bin": 0, "risk": risk}).to_parquet(
        run_dir / "heldout" / "survival.parquet", index=False)
    g = pd.DataFrame({"model": name, "fold": folds, "patient_id": pats, "y_true": np.asarray(classes, dtype=object)[codes],
                      "y_pred": np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)]})
    for j, c in enumerate(classes):
        g[f"p_{c}"] = proba[:, j]
    g.to_parquet(run_dir / "heldout" / "grade.parquet", index=False)
    (run_dir / "config.yaml").write_text(f"evaluation:\n  conformal:\n    alpha: {alpha}\n    group: site\n")
    (run_dir / "run.json").write_text(json.dumps({"format": 2, "name": name, "model": name, "n_patients": n,
                                                  "n_folds": int(len(np.unique(folds))),
                                                  "blocks": {"grade": "classification", "survival": "survival"}}))
    return run_dir
