"""Models page: the runs of one cohort and split (runs of other cohorts listed apart), per-target
score distributions, the comparison table and the paired comparison of any two runs
(difference, bootstrap interval, fold win rate, Wilcoxon, verdict)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from histoviz.dashboard import common as c
from histoviz.evaluation.paired import BOOTSTRAP_METRICS
from histoviz.task_kinds import TaskKind
from histoviz.viz.dashboard import mark_optimistic
from histoviz.viz.figures import distribution_figure, fmt_p, paired_figure
from histoviz.viz.results import runs_table, shared_omics

OPTIMISTIC_STYLE = "background-color: rgba(255, 170, 0, 0.22)"
#: Above this many metric rows (two runs) or held-out rows, the paired comparison runs on request.
LAZY_PAIR_ROWS = 250_000
LAZY_PAIR_HELDOUT = 4_000_000


def download(df: pd.DataFrame, name: str, key: str) -> None:
    """A CSV download button for a table."""
    st.download_button(f"Download {name} (CSV)", df.to_csv(index=False), f"{name.replace(' ', '_')}.csv",
                       "text/csv", key=key)


st.title("Models")
runs = c.selected_runs()
group = c.current_group()
if not runs:
    st.info("No runs to show. " + c.HOW_TO_MAKE_DATA)
    st.stop()

# ---- which cohort and split, the runs table -------------------------------------------------------
others = c.other_runs()
ident = runs[0].identity
st.markdown(f"Comparing **{len(runs)} run(s) of the cohort {group.cohort_name}** with one patient split "
            f"({group.split_label}; cohort `{group.key[0]}`, split `{group.key[1]}`): every table and plot below "
            "uses the same held-out patients."
            + (f" {len(others)} run(s) of other cohorts or splits are listed apart and never mixed in."
               if others else ""))
if ident is not None and not ident.recorded:
    st.caption("These runs did not record their cohort fingerprint (trained with an older histoviz): the cohort and "
               "split were derived from the config's cohort table and splits.parquet.")
st.subheader("Runs")
table = runs_table(runs)
st.dataframe(table, hide_index=True, key="runs_table", column_config={"patients": c.COUNT})
download(table, "runs", "dl_runs")
if others:
    with st.expander(f"Runs of other cohorts or splits ({len(others)}; not compared here)"):
        st.dataframe(runs_table(others), hide_index=True, key="other_runs_table", column_config={"patients": c.COUNT})
        st.caption("Pick their cohort and split in the sidebar to compare them with each other.")
for block in dict.fromkeys(b for r in runs for b, k in r.blocks.items() if k == TaskKind.REGRESSION):
    if shared_omics(runs, block) is False:
        st.warning(f"The runs' `{block}` tables differ (their omics fingerprints do not match): their per-target "
                   f"{block} scores measure different targets or values and do not compare.")

# ---- per-target distributions ------------------------------------------------------------------
reg = [r for r in runs if TaskKind.REGRESSION in r.blocks.values()]
if reg:
    st.subheader("Per-target scores")
    left, right = st.columns([1, 1])
    metric = left.radio("Metric", ["pearson", "spearman"], horizontal=True, key="dist_metric")
    style = right.radio("Plot", ["box", "violin"], horizontal=True, key="dist_style")
    scores = c.scores(reg, metric)
    if scores.empty:
        st.info(f"The selected runs have no per-target {metric} rows.")
    else:
        st.plotly_chart(distribution_figure(scores, metric=metric, style=style), key="dist_chart")
        st.caption(f"One point per target: held-out {metric} across the patients of a fold, averaged over folds "
                   "(box: quartiles, line: median, dashed: mean). Patient-level folds; no target was chosen "
                   "on test data.")
        with st.expander("Per-target scores table"):
            st.dataframe(scores, hide_index=True, key="scores_table",
                         column_config={"mean": c.NUMBER, "std": c.NUMBER, "n": c.NUMBER})
            download(scores, f"per-target {metric}", "dl_scores")

# ---- comparison table -------------------------------------------------------------------------
st.subheader("Comparison table")
default_k = ", ".join(str(k) for k in c.default_topk(runs))
topk_text = st.text_input("Top-k target subsets", value=default_k, key="topk",
                          help="Sizes of the top-k subsets (chosen on training folds; the best-predicted view "
                               "is chosen on test correlations and flagged optimistic). The runs' own sizes read "
                               "the table each run wrote; other sizes re-read its metrics.")
try:
    topk = tuple(sorted({int(v) for v in topk_text.replace(",", " ").split()}))
except ValueError:
    st.error(f"Top-k sizes must be whole numbers separated by commas, got {topk_text!r}")
    topk = c.default_topk(runs)
recompute = [r for r in runs if not c.has_summary(r, topk)]
rows = sum(len(r.table) for r in recompute)
if rows > LAZY_PAIR_ROWS and not st.toggle(
        f"Compute the comparison table of {len(recompute)} run(s) that did not store it with these sizes "
        f"(reads {rows:,} metric rows)", value=False, key="summary_go"):
    st.info("The runs' stored comparison tables use other top-k sizes (or there are none); computing them from the "
            "large metric tables runs when you switch it on.")
    runs_for_table = [r for r in runs if r not in recompute]
else:
    runs_for_table = runs
table, errors = c.summaries(runs_for_table, topk)
for e in errors:
    st.error(e)
if not table.empty:
    shown = mark_optimistic(table)
    if shown["optimistic"].any():
        st.warning("Rows marked **⚠ OPTIMISTIC** average the k targets with the highest *test* correlation "
                   "(the papers' “best predicted genes”): selected on the test data, they overstate "
                   "performance. Compare models on the held-out rows.")
    hide = st.toggle("Hide optimistic rows", value=False, key="hide_optimistic")
    view = shown[~shown["optimistic"]] if hide else shown
    styled = view.style.apply(lambda r: [OPTIMISTIC_STYLE if r["optimistic"] else ""] * len(r), axis=1)
    st.dataframe(styled, hide_index=True, key="comparison",
                 column_config={"optimistic": None, "mean": c.NUMBER, "std": c.NUMBER,
                                "n_targets": c.COUNT, "n_folds": c.COUNT, "n_undefined": c.COUNT})
    st.caption("mean ± std over folds of the per-fold value. **per-target**: across the held-out patients of a "
               "fold, averaged over targets; **pooled**: all folds' held-out patients together; "
               "**per-patient**: across targets within a patient.")
    download(table, "comparison", "dl_comparison")

# ---- paired comparison --------------------------------------------------------------------------
st.subheader("Paired comparison")
if len(runs) < 2:
    st.info("Pick two runs cross-validated on the same patients in the sidebar to compare them.")
    st.stop()
labels = [r.label for r in runs]
by_label = {r.label: r for r in runs}
cols = st.columns(4)
def _shares(x, y) -> bool:
    return any(t in y.blocks and y.blocks[t] == k for t, k in x.blocks.items())


a = cols[0].selectbox("Run A", labels, index=0, key="pair_a")
partners = [lab for lab in labels if lab != a and _shares(by_label[a], by_label[lab])]
default_b = labels.index(partners[0]) if partners else (1 if labels[0] == a else 0)
b = cols[1].selectbox("Run B", labels, index=default_b, key="pair_b")
if a == b:
    st.info("Pick two different runs.")
    st.stop()
ra, rb = by_label[a], by_label[b]
shared = [t for t in ra.blocks if t in rb.blocks and ra.blocks[t] == rb.blocks[t]]
if not shared:
    st.warning(f"{a} and {b} share no task ({a}: {', '.join(ra.blocks)}; {b}: {', '.join(rb.blocks)}).")
    st.stop()
task = cols[2].selectbox("Task", shared, key="pair_task")
kind = ra.blocks[task]
metric = cols[3].selectbox("Metric", list(BOOTSTRAP_METRICS[kind]), key=f"pair_metric_{kind}")
n_boot = st.select_slider("Bootstrap replicates", [200, 500, 1000, 2000], value=1000, key="pair_boot")
rows = len(ra.table) + len(rb.table)
held = ra.heldout_rows(task) + rb.heldout_rows(task)
big = rows > LAZY_PAIR_ROWS or held > LAZY_PAIR_HELDOUT
if big and not st.toggle(f"Compute the paired comparison (reads {rows:,} metric rows and {held:,} held-out rows)",
                         value=False, key="pair_go"):
    st.info("These runs are large: the paired comparison (a bootstrap over held-out patients and targets) runs when "
            "you switch it on.")
    st.stop()
pc = c.attempt(c.paired, ra, rb, metric=metric, task=task, n_boot=n_boot)
if pc is None:
    st.stop()
for note in pc.notes:
    st.info(note)
m = st.columns([1, 1.6, 1, 1])
m[0].metric(f"{a} − {b}", f"{pc.difference:+.3f}", help=f"{a}: {pc.mean_a:.3f}, {b}: {pc.mean_b:.3f}")
ci = f"[{pc.ci_low:+.3f}, {pc.ci_high:+.3f}]" if np.isfinite(pc.ci_low) else "n/a"
m[1].metric(f"{pc.confidence:.0%} interval", ci, help=pc.interval_method or "no interval")
m[2].metric("Fold win rate", f"{pc.win_rate:.2f}", help=f"{a} better in {pc.wins:g} of {pc.n_units} {pc.unit}s")
m[3].metric("Wilcoxon p (exploratory)", fmt_p(pc.wilcoxon_p),
            help=f"signed-rank over {pc.wilcoxon_n} {pc.wilcoxon_over}"
                 + (" (targets are not independent: optimistic)" if pc.wilcoxon_over == "targets"
                    else " (folds share training patients)"))
st.columns([2, 1])[0].metric("Verdict", pc.verdict, help="within noise when the interval includes 0")
if pc.verdict == "within noise":
    st.info(f"The {pc.confidence:.0%} interval of {a} − {b} includes 0: the difference is within noise.")
st.plotly_chart(paired_figure(pc), key="paired_chart")
what = ("per target, averaged over folds, then over targets" if kind == TaskKind.REGRESSION
        else "per fold, then averaged over folds")
st.caption(f"{pc.metric} {what}; {pc.n_targets if kind == TaskKind.REGRESSION else ''} "
           f"{'targets, ' if kind == TaskKind.REGRESSION else ''}{pc.n_units} {pc.unit}s. Interval: "
           f"{pc.interval_method}"
           + (f"; patient bootstrap with the models held fixed (test-set variance only): "
              f"[{pc.boot_low:+.3f}, {pc.boot_high:+.3f}] ({pc.n_boot} resamples, percentile)."
              if np.isfinite(pc.boot_low) else "."))
pair_rows = pd.DataFrame([pc.row()])
with st.expander("Per-fold differences", expanded=kind != TaskKind.REGRESSION):
    st.dataframe(pc.per_unit, hide_index=True, key="pair_units",
                 column_config={k: c.NUMBER for k in ("mean_a", "mean_b", "difference")})
    download(pc.per_unit, "paired per fold", "dl_pair_units")
if kind == TaskKind.REGRESSION:
    with st.expander("Per-target differences"):
        st.dataframe(pc.per_target, hide_index=True, key="pair_targets",
                     column_config={k: c.NUMBER for k in ("value_a", "value_b", "difference")})
        download(pc.per_target, "paired per target", "dl_pair_targets")
download(pair_rows, "paired summary", "dl_pair_summary")
