"""Mechanism sweeps, summarised: the paired difference of two methods at each level of a
generator knob, with an interval that includes training variance, beside the knob's oracle.

Input: the long table a sweep writes (:func:`histoviz.training.sweep.run_sweep`), one row per
level, repeat (an independent cohort), comparison, task and fold: the per-fold paired difference
``a - b`` and the fold's test and training sizes. Per level and comparison:

- each cohort ``r`` gives the mean of its ``J_r`` per-fold differences ``d_r`` and its
  Nadeau-Bengio corrected variance ``v_r = (1 / J_r + n_test / n_train) s_r^2``
  (:mod:`histoviz.evaluation.resampled`);
- the level's difference is the mean over its ``R`` cohorts, ``d = mean_r d_r``, with variance
  ``sum_r v_r / R^2`` (independent cohorts) and Welch-Satterthwaite degrees of freedom
  ``(sum v_r)^2 / sum (v_r^2 / (J_r - 1))``; the 95% interval is ``d -+ t_df sqrt(var)``;
- ``sd_cohorts`` is the SD of ``d_r`` over the cohorts (spread, not an interval);
- the oracle (a model given the planted quantity) is averaged over the cohorts with its SD.

:func:`summarise_sweep` gives the table, :func:`sweep_figure` the plot (difference vs knob with
intervals, the oracle beneath), :func:`sweep_results` / :func:`sweeps_markdown` the results file and
the README section "When each method helps".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SUMMARY_COLUMNS", "combine_cohorts", "summarise_sweep", "sweep_figure", "sweep_results",
           "sweeps_markdown"]

SUMMARY_COLUMNS = ("sweep", "level", "level_label", "comparison", "task", "metric", "n_cohorts", "n_folds",
                   "mean_a", "mean_b", "difference", "ci_low", "ci_high", "df", "sd_cohorts", "verdict")


def combine_cohorts(diffs: Sequence[np.ndarray], n_test: Sequence[np.ndarray], n_train: Sequence[np.ndarray],
                    confidence: float = 0.95) -> dict[str, float]:
    """Mean over independent cohorts of their per-fold differences, with the corrected interval.

    Parameters
    ----------
    diffs, n_test, n_train
        Per cohort: the per-fold differences and the folds' test / training sizes.

    Returns
    -------
    ``difference, ci_low, ci_high, df, se, sd_cohorts, n_cohorts, n_folds``.
    """
    from scipy import stats

    from histoviz.evaluation.resampled import corrected_resampled_t

    means, var, dfs, n_folds = [], [], [], 0
    for d, nt, nr in zip(diffs, n_test, n_train):
        ci = corrected_resampled_t(d, n_test=nt, n_train=nr, confidence=confidence)
        if ci.n_units == 0:
            continue
        means.append(ci.mean)
        n_folds += ci.n_units
        if ci.n_units >= 2:
            var.append(ci.se ** 2)
            dfs.append(ci.df)
    r = len(means)
    out = {"difference": float(np.mean(means)) if r else np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "df": np.nan, "se": np.nan, "sd_cohorts": float(np.std(means, ddof=1)) if r > 1 else np.nan,
           "n_cohorts": r, "n_folds": n_folds}
    if r and len(var) == r:
        v = np.asarray(var) / r ** 2
        se = float(np.sqrt(v.sum()))
        df = float(v.sum() ** 2 / np.sum(v ** 2 / np.asarray(dfs))) if v.sum() > 0 else float(sum(dfs))
        half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
        out.update(ci_low=out["difference"] - half, ci_high=out["difference"] + half, df=df, se=se)
    return out


def _verdict(lo: float, hi: float, a: str, b: str) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undetermined"
    if lo <= 0 <= hi:
        return "within noise"
    return f"{a} better" if lo > 0 else f"{b} better"


def summarise_sweep(table: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per level, comparison and task: the combined paired difference (module docstring).

    ``table`` has ``sweep, level, level_label, repeat, comparison, a, b, task, metric, fold,
    value_a, value_b, difference, n_test, n_train`` (``kind == "difference"`` rows of a sweep's
    long table).
    """
    d = table[table["kind"] == "difference"] if "kind" in table.columns else table
    rows = []
    keys = ["sweep", "level", "level_label", "comparison", "task", "metric"]
    for key, g in d.groupby(keys, sort=False, dropna=False):
        per = [(x["difference"].to_numpy(float), x["n_test"].to_numpy(float), x["n_train"].to_numpy(float))
               for _, x in g.groupby("repeat", sort=True)]
        c = combine_cohorts([p[0] for p in per], [p[1] for p in per], [p[2] for p in per], confidence)
        a, b = str(g["a"].iloc[0]), str(g["b"].iloc[0])
        rows.append({**dict(zip(keys, key)), "n_cohorts": c["n_cohorts"], "n_folds": c["n_folds"],
                     "mean_a": float(g["value_a"].mean()), "mean_b": float(g["value_b"].mean()),
                     "difference": c["difference"], "ci_low": c["ci_low"], "ci_high": c["ci_high"], "df": c["df"],
                     "sd_cohorts": c["sd_cohorts"], "verdict": _verdict(c["ci_low"], c["ci_high"], a, b)})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def oracle_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per level and oracle number: mean and SD over the cohorts (``kind == "oracle"`` rows)."""
    o = table[table["kind"] == "oracle"]
    if o.empty:
        return pd.DataFrame(columns=["sweep", "level", "level_label", "metric", "mean", "sd", "n_cohorts"])
    g = o.groupby(["sweep", "level", "level_label", "metric"], sort=False, dropna=False)["value"]
    return g.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else np.nan,
                 n_cohorts="size").reset_index()


def sweep_figure(table: pd.DataFrame, path: str | Path, *, knob_label: str = "", log_x: bool = False,
                 title: str = "") -> Path:
    """PNG: the paired difference vs the knob with its 95% intervals (one panel per comparison and
    task), and the oracle's value beneath. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histoviz._atomic import atomic_path

    s = summarise_sweep(table)
    o = oracle_summary(table)
    o = o[o["metric"] == "value"]
    panels = list(dict.fromkeys(zip(s["comparison"], s["task"], s["metric"])))
    n = max(len(panels), 1)
    ticks = s.drop_duplicates("level").sort_values("level")
    tick_x, tick_lab = ticks["level"].to_numpy(float), ticks["level_label"].astype(str).tolist()
    fig, axes = plt.subplots(2, n, figsize=(3.8 * n + 0.8, 5.6), squeeze=False,
                             gridspec_kw={"height_ratios": [2.2, 1]})
    for j, (comp, task, metric) in enumerate(panels):
        ax = axes[0, j]
        g = s[(s["comparison"] == comp) & (s["task"] == task)].sort_values("level")
        x = g["level"].to_numpy(float)
        y = g["difference"].to_numpy(float)
        err = np.vstack([y - g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float) - y])
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0.0), fmt="o-", color="#b2182b", capsize=4,
                    label="difference, 95% CI")
        d = table[(table["kind"] == "difference") & (table["comparison"] == comp) & (table["task"] == task)]
        per = d.groupby(["level", "repeat"])["difference"].mean().reset_index()
        ax.plot(per["level"].astype(float), per["difference"], "x", color="0.35", ms=5, label="per cohort")
        ax.set_title(f"{comp}\n{task} ({metric})", fontsize=9)
        ax.set_ylabel("paired difference" if j == 0 else "")
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(tick_x, [""] * len(tick_x))
        ax.minorticks_off()
        if j == 0:
            ax.legend(fontsize=7, loc="best")
        ob = axes[1, j]
        if not o.empty:
            oo = o.sort_values("level")
            ob.errorbar(oo["level"].astype(float), oo["mean"], yerr=oo["sd"].fillna(0.0), fmt="s-", color="#2166ac",
                        capsize=3)
        ob.set_xlabel(knob_label or "knob", fontsize=8)
        ob.set_ylabel("oracle" if j == 0 else "")
        if log_x:
            ob.set_xscale("log")
        ob.set_xticks(tick_x, tick_lab, fontsize=7, rotation=20 if max(map(len, tick_lab)) > 6 else 0)
        ob.minorticks_off()
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, width=int(34 * n + 10))), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _clean(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else round(float(v), 4)
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def sweep_results(table: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able results of one sweep: ``meta`` (claim, knob, command, ...) plus the summary
    rows and the oracle per level (numbers rounded to 4 digits)."""
    s = summarise_sweep(table)
    o = oracle_summary(table)
    return {**dict(meta),
            "summary": [{k: _clean(v) for k, v in r.items()} for r in s.to_dict("records")],
            "oracle": [{k: _clean(v) for k, v in r.items()} for r in o.to_dict("records")]}


def _fmt(v: Any, sign: bool = True) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:+.3f}" if sign else f"{v:.3f}"


def sweeps_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The README section body "When each method helps": per sweep, the claim, the knob, the
    oracle check and a table of differences with 95% intervals per level, then the reproducing
    command. ``results`` maps sweep name -> :func:`sweep_results` (``docs/results/sweeps.json``)."""
    out: list[str] = []
    for name, r in results.items():
        knob = r.get("knob", {})
        out.append(f"**{r.get('title', name)}** ({r.get('claim', '')})")
        out.append("")
        orc = [x for x in r.get("oracle", []) if x.get("metric") == "value"]
        if orc:
            cells = ", ".join(f"{x['level_label']}: {_fmt(x['mean'], False)}" for x in orc)
            sizes = [x for x in r.get("oracle", []) if x.get("metric") == "n_spots_per_sample"]
            per = ("" if not sizes else " Spots per sample (mean): "
                   + ", ".join(f"{x['level_label']}: {x['mean']:.0f}" for x in sizes) + ".")
            out.append(f"Knob: {knob.get('label', knob.get('field', ''))}. Oracle check ({r.get('oracle_label', '')}): "
                       f"{cells}.{per}")
            out.append("")
        rows = r.get("summary", [])
        if rows:
            out.append("| " + " | ".join(["level", "comparison", "task (metric)", "A", "B", "A − B [95% CI]",
                                          "cohorts × folds", "verdict"]) + " |")
            out.append("|" + "---|" * 8)
            for x in rows:
                ci = f"{_fmt(x['difference'])} [{_fmt(x['ci_low'])}, {_fmt(x['ci_high'])}]"
                out.append(f"| {x['level_label']} | {x['comparison']} | {x['task']} ({x['metric']}) | "
                           f"{_fmt(x['mean_a'], False)} | {_fmt(x['mean_b'], False)} | {ci} | "
                           f"{x['n_cohorts']} × {int(x['n_folds'] / max(x['n_cohorts'], 1))} | {x['verdict']} |")
            out.append("")
        if r.get("figure"):
            out.append(f"![{name} sweep: paired difference vs {knob.get('label', 'the knob')}, 95% intervals; "
                       f"oracle beneath]({r['figure']})")
            out.append("")
        if r.get("command"):
            out.append(f"`{r['command']}`")
            out.append("")
    return "\n".join(out).rstrip() + "\n"
