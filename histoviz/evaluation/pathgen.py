"""PathGen's comparisons, read from run directories: the three settings side by side, paired over
folds, and the quality of the synthesised gene groups against the training-mean predictor.

- :func:`pathgen_settings`: per setting (``slide`` / ``synthetic`` / ``real``: the value of the
  setting parameter the run's model declares, recorded in ``run.json``; other runs by name) the fold mean and standard deviation of grade AUC
  (macro), c-index (Harrell), conformal coverage, grade set size, risk-interval width and the
  normalised uncertainties; and the **paired** difference of each setting against ``baseline``
  over the folds they share: mean, SD over folds, the Nadeau-Bengio corrected resampled t
  interval (:mod:`histoviz.evaluation.resampled`; the verdict's interval) and scipy's Wilcoxon
  signed-rank p (exploratory: folds share training patients). Runs are paired only when their
  folds hold the same test patients.
- :func:`synthesis_quality`: per fold and gene group, the synthesised groups against the
  measured ones of the held-out patients, each metric labelled: per-gene Pearson across
  patients (mean over genes), the paper's *pooled* Spearman (all held-out patient x gene values
  concatenated) and MAE, on the unstandardised target scale; the same for the training-mean
  predictor (its per-gene Pearson is undefined: constant predictions).
- :func:`pathgen_report`: plain-text lines of both (``histoviz evaluate``).

The paired statistics of the settings table are :func:`paired_difference` (fold values of
two runs on the same folds).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from histoviz.task_kinds import TaskKind

__all__ = ["SETTING_METRICS", "paired_difference", "pathgen_report", "pathgen_settings", "synthesis_quality"]

#: (label, task kind, metric, target(s)) rows of the settings table; survival intervals are in the
#: data's time unit (target ``time``) or, with ``evaluation.conformal.survival: risk_bins``, on
#: the risk scale (``risk``)
SETTING_METRICS = (
    ("grade AUC (macro)", TaskKind.CLASSIFICATION, "auc_macro", "all"),
    ("c-index (Harrell)", TaskKind.SURVIVAL, "c_index", "risk"),
    ("grade coverage", TaskKind.CLASSIFICATION, "coverage", "all"),
    ("grade set size", TaskKind.CLASSIFICATION, "set_size", "all"),
    ("grade uncertainty", TaskKind.CLASSIFICATION, "uncertainty", "all"),
    ("survival coverage", TaskKind.SURVIVAL, "coverage", ("time", "risk")),
    ("survival interval width", TaskKind.SURVIVAL, "interval_width", ("time", "risk")),
    ("survival uncertainty", TaskKind.SURVIVAL, "uncertainty", ("time", "risk")),
)


def paired_difference(a: pd.Series, b: pd.Series, *, n_test: pd.Series | None = None,
                      confidence: float = 0.95) -> dict[str, float]:
    """Paired difference ``a - b`` over the folds (index) both have.

    Parameters
    ----------
    a, b
        One value per fold.
    n_test
        Held-out patients per fold (for the corrected interval; the training patients of a fold
        are the other folds' held-out patients). ``None``: no interval.
    confidence
        Interval level.

    Returns
    -------
    ``{"n": folds, "mean": .., "std": .. (SD over folds, ddof 1), "ci_low", "ci_high": the
    Nadeau-Bengio corrected resampled t interval, "p_wilcoxon": ..}``; the p-value is scipy's
    two-sided Wilcoxon signed-rank test, exploratory (NaN with fewer than 2 folds or all
    differences 0; with 4 folds it cannot go below 0.125).
    """
    from scipy import stats

    from histoviz.evaluation.resampled import corrected_resampled_t

    d = (a - b).dropna()
    n = len(d)
    out = {"n": float(n), "mean": float(d.mean()) if n else np.nan, "std": float(d.std(ddof=1)) if n > 1 else np.nan,
           "ci_low": np.nan, "ci_high": np.nan, "p_wilcoxon": np.nan}
    if n_test is not None and n >= 2:
        nt = n_test.reindex(d.index).to_numpy(np.float64)
        if np.isfinite(nt).all():
            ci = corrected_resampled_t(d.to_numpy(), n_test=nt, n_train=nt.sum() - nt, confidence=confidence)
            out["ci_low"], out["ci_high"] = ci.low, ci.high
    if n >= 2 and np.any(d.to_numpy() != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(d.to_numpy()).pvalue)
    return out


def _setting(run: Any) -> str:
    """The run's setting (a model that declares a setting parameter), else the run's name."""
    s = run.setting
    if s is None:
        return run.name
    shuffled = bool((run.config.get("training") or {}).get("shuffle_labels"))
    return f"{s} (shuffled labels)" if shuffled else s


def _test_sets(run: Any) -> dict[int, frozenset[str]]:
    s = run.splits()
    if s is None:
        return {}
    s = s[(s["split"] == "test") & (s["fold"] >= 0)]
    return {int(f): frozenset(g["patient_id"].astype(str)) for f, g in s.groupby("fold")}


def pathgen_settings(run_dirs: Sequence[str | os.PathLike], *, baseline: str = "slide") -> pd.DataFrame:
    """The settings side by side, with paired differences against ``baseline`` (see the module
    docstring).

    Returns
    -------
    Tidy table ``setting, run, metric, task, statistic, versus, n_folds, mean, std, ci_low,
    ci_high, p_wilcoxon``: ``statistic="value"`` rows hold the fold mean / SD of a setting;
    ``"paired difference"`` rows the fold-paired ``setting - versus`` with its corrected 95%
    interval (:func:`paired_difference`).
    """
    from histoviz.io.rundir import RunDir

    runs = [RunDir(d) for d in run_dirs]
    per_fold: dict[tuple[str, str], pd.Series] = {}
    n_test: dict[str, pd.Series] = {}
    rows: list[dict[str, Any]] = []
    labels = {}
    for run in runs:
        label = _setting(run)
        labels[label] = run
        m = run.metrics()
        m = m[(m["subset"] == "all") & (m["fold"] >= 0)]
        kinds = m.groupby("task", observed=True)["kind"].first().to_dict() if "kind" in m.columns else {}
        for name, kind, metric, target in SETTING_METRICS:
            tasks = [t for t, k in kinds.items() if k == kind]
            sel = m[m["task"].isin(tasks) & (m["metric"] == metric)
                    & m["target"].isin(target if isinstance(target, tuple) else [target])]
            if sel.empty:
                continue
            v = sel.groupby("fold", observed=True)["value"].mean()
            per_fold[(label, name)] = v
            if "n" in sel.columns and name in ("grade AUC (macro)", "c-index (Harrell)"):
                n_test.setdefault(label, sel.groupby("fold", observed=True)["n"].max().astype(float))
            rows.append({"setting": label, "run": run.name, "metric": name, "task": ",".join(map(str, tasks)),
                         "statistic": "value", "versus": "", "n_folds": len(v), "mean": float(v.mean()),
                         "std": float(v.std(ddof=1)) if len(v) > 1 else np.nan, "ci_low": np.nan,
                         "ci_high": np.nan, "p_wilcoxon": np.nan})
    if baseline in labels:
        base_sets = _test_sets(labels[baseline])
        for label, run in labels.items():
            if label == baseline:
                continue
            same = _test_sets(run) == base_sets
            for name, *_ in SETTING_METRICS:
                if (label, name) not in per_fold or (baseline, name) not in per_fold or not same:
                    continue
                pdiff = paired_difference(per_fold[(label, name)], per_fold[(baseline, name)],
                                          n_test=n_test.get(baseline))
                rows.append({"setting": label, "run": run.name, "metric": name, "task": "",
                             "statistic": "paired difference", "versus": baseline, "n_folds": int(pdiff["n"]),
                             "mean": pdiff["mean"], "std": pdiff["std"], "ci_low": pdiff["ci_low"],
                             "ci_high": pdiff["ci_high"], "p_wilcoxon": pdiff["p_wilcoxon"]})
    return pd.DataFrame(rows, columns=["setting", "run", "metric", "task", "statistic", "versus", "n_folds", "mean",
                                       "std", "ci_low", "ci_high", "p_wilcoxon"])


def _groups(run: Any) -> dict[str, list[str]]:
    """``group -> genes`` of the run's PathGen checkpoints (empty for other runs)."""
    for name in run.checkpoint_names():
        p = run.checkpoint(name) / "model.json"
        try:
            state = json.loads(p.read_text()).get("state", {})
        except (OSError, ValueError):
            continue
        g = state.get("groups")
        if g:
            return {n: [g["genes"][j] for j in idx] for n, idx in zip(g["names"], g["index"])}
    return {}


def _matched(run: Any) -> str:
    """``"group m/t, ..."`` from the first fold's fit (the table is matched by gene name, the same in
    every fold unless a fold's preprocessing dropped genes)."""
    folds = run.json("selection.json").get("folds") or []
    rows = (folds[0].get("gene_groups") if folds else None) or []
    return ", ".join(f"{g['group']} {g['matched']}/{g['in_table']}" for g in rows)


def synthesis_quality(run_dir: str | os.PathLike, *, block: str | None = None) -> pd.DataFrame:
    """Synthesised against measured gene groups of the held-out patients (module docstring).

    Returns
    -------
    ``fold, group, predictor ("PathGen" | "training mean"), metric, value, n_patients,
    n_genes``; ``metric`` one of ``pearson_per_gene`` (mean over genes of the Pearson across
    patients), ``spearman_pooled`` (the paper's: all values concatenated), ``mae``. ``group``
    ``"all genes"`` pools the groups. Empty for runs without a synthesised block.
    """
    from scipy import stats

    from histoviz.io.rundir import RunDir

    run = RunDir(run_dir)
    groups = _groups(run)
    cfg = run.config
    block = block or (cfg.get("model") or {}).get("params", {}).get("modality", "gene")
    h = run.heldout(block)
    if not groups or h is None or h.empty:
        return pd.DataFrame(columns=["fold", "group", "predictor", "metric", "value", "n_patients", "n_genes"])
    spec = ((cfg.get("data") or {}).get("omics") or {}).get(block) or {}
    t = run.targets()
    rows: list[dict[str, Any]] = []
    for fold, hf in h.groupby("fold"):
        y = hf.pivot_table(index="patient_id", columns="target", values="y_true", observed=True)
        p = hf.pivot_table(index="patient_id", columns="target", values="y_pred", observed=True)
        tf = None if t is None else t[(t["fold"] == fold) & (t["task"] == block)].set_index("target")
        mean = np.zeros(y.shape[1])
        if tf is not None and set(y.columns) <= set(tf.index):
            mu = tf.loc[y.columns, "train_mean"].to_numpy(float)
            sd = np.sqrt(tf.loc[y.columns, "train_var"].to_numpy(float))
            if spec.get("standardize"):
                sd = np.where(sd > 1e-12, sd, 1.0)
                y, p = y * sd + mu, p * sd + mu
            mean = mu
        for gname, genes in [("all genes", list(y.columns)), *groups.items()]:
            cols = [c for c in genes if c in y.columns]
            if not cols:
                continue
            yy, pp = y[cols].to_numpy(float), p[cols].to_numpy(float)
            mm = np.broadcast_to(pd.Series(mean, index=y.columns)[cols].to_numpy(float), yy.shape)
            for pred_name, pr in (("PathGen", pp), ("training mean", mm)):
                with np.errstate(all="ignore"):
                    r = [stats.pearsonr(yy[:, j], pr[:, j])[0] if np.ptp(pr[:, j]) > 0 and np.ptp(yy[:, j]) > 0
                         else np.nan for j in range(len(cols))]
                    sp = stats.spearmanr(yy.ravel(), pr.ravel())[0] if np.ptp(pr) > 0 else np.nan
                base = {"fold": int(fold), "group": gname, "predictor": pred_name, "n_patients": len(yy),
                        "n_genes": len(cols)}
                rows.append({**base, "metric": "pearson_per_gene", "value": float(np.nanmean(r)) if np.isfinite(r).any() else np.nan})
                rows.append({**base, "metric": "spearman_pooled", "value": float(sp)})
                rows.append({**base, "metric": "mae", "value": float(np.mean(np.abs(yy - pr)))})
    return pd.DataFrame(rows)


def pathgen_report(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """Plain-text lines for ``histoviz evaluate``: the settings table (with paired differences
    against ``slide``) when PathGen runs are given, and the synthesis quality of each run that
    synthesised gene groups."""
    from histoviz.io.rundir import RunDir

    runs = [RunDir(d) for d in run_dirs]
    pg = [r for r in runs if r.setting is not None]
    if not pg:
        return []
    lines: list[str] = []
    tab = pathgen_settings([r.path for r in pg])
    if not tab.empty:
        lines.append("PathGen settings (held-out, mean +- SD over folds; paired difference = setting - slide over "
                     "the same folds with its 95% CI (Nadeau-Bengio corrected resampled t) and an exploratory "
                     "Wilcoxon signed-rank p):")
        for (metric,), sub in tab.groupby(["metric"], sort=False):
            vals = sub[sub["statistic"] == "value"]
            diffs = sub[sub["statistic"] == "paired difference"]
            cells = [f"{r.setting} {r.mean:.3f}+-{r.std:.3f}" for r in vals.itertuples()]
            cells += [f"{r.setting}-{r.versus} {r.mean:+.3f} 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}] "
                      f"(SD {r.std:.3f}; Wilcoxon p={r.p_wilcoxon:.2g}, exploratory; {r.n_folds} folds)"
                      for r in diffs.itertuples()]
            lines.append(f"  {metric}: " + "; ".join(cells))
    for r in pg:
        gg = _matched(r)
        if gg:
            lines.append(f"{r.name}: gene groups matched in the expression table (genes matched / listed): {gg}")
        q = synthesis_quality(r.path)
        if q.empty:
            continue
        s = q[q["group"] == "all genes"].groupby(["predictor", "metric"])["value"].agg(["mean", "std"])
        parts = []
        for metric, label in (("pearson_per_gene", "per-gene Pearson across patients"),
                              ("spearman_pooled", "pooled Spearman (paper's)"), ("mae", "MAE")):
            a = s.loc[("PathGen", metric)] if ("PathGen", metric) in s.index else None
            b = s.loc[("training mean", metric)] if ("training mean", metric) in s.index else None
            if a is None:
                continue
            bt = "undefined" if b is None or not np.isfinite(b["mean"]) else f"{b['mean']:.3f}"
            parts.append(f"{label} {a['mean']:.3f}+-{a['std']:.3f} (training mean: {bt})")
        lines.append(f"{r.name}: synthesised gene groups vs measured, held-out patients, unstandardised scale: "
                     + "; ".join(parts))
    return lines
