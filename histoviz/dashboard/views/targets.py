"""Targets page: every target with each model's score (search, sort, gene panels); one target's
predicted vs true values across held-out patients, and its map where a prediction file has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from histoviz.dashboard import common as c
from histoviz.task_kinds import TaskKind
from histoviz.viz.dashboard import napari_command
from histoviz.viz.figures import scatter_figure
from histoviz.viz.results import (
    gene_panel,
    list_panels,
    match_panel,
    parse_gene_list,
    pooled_by_run,
    targets_table,
)

ALL, PASTED = "all targets", "pasted list"

st.title("Targets")
runs = c.selected_runs(kinds=(TaskKind.REGRESSION,))
if not runs:
    st.info("No run with regression targets (genes, proteins, ...) is picked. " + c.HOW_TO_MAKE_DATA)
    st.stop()

top = st.columns([1, 1, 2])
metric = top[0].radio("Metric", ["pearson", "spearman"], horizontal=True, key="t_metric")
scores = c.scores(runs, metric)
tasks = list(dict.fromkeys(scores["task"]))
task_pick = top[1].selectbox("Modality", ["(all)", *tasks], index=1 + tasks.index("gene") if "gene" in tasks else 0,
                             key="t_task")
if task_pick != "(all)":
    scores = scores[scores["task"] == task_pick]
query = top[2].text_input("Search targets (commas for several)", key="t_query", placeholder="e.g. MKI67, CD3")

panels = list_panels()
view = st.radio("View", [ALL, *panels, PASTED], horizontal=True, key="t_view",
                format_func=lambda v: v.upper() if v in panels else v)
panel_targets = None
if view != ALL:
    if view == PASTED:
        text = st.text_area("Gene symbols (commas, spaces or one per line)", key="t_pasted", height=80)
        panel = parse_gene_list(text)
    else:
        panel = gene_panel(view)
    n_panel = len(panel)
    if n_panel:
        universe = scores["target"].astype(str).unique()
        found, unknown = match_panel(panel, universe)
        panel_targets = found
        st.caption(f"{view.upper() if view in panels else 'Pasted list'}: {n_panel} genes, "
                   f"{len(found)} predicted by the picked runs"
                   + (f" ({task_pick})" if task_pick != "(all)" else ""))
        if unknown:
            st.warning(f"{len(unknown)} of {n_panel} panel genes are not among the runs' targets: "
                       + ", ".join(unknown))
    else:
        panel_targets = []
        st.info("Paste gene symbols to see them as a panel.")

table = targets_table(scores, query=query, targets=panel_targets)
run_cols = [r.label for r in runs if r.label in table.columns]
st.caption(f"{len(table)} targets. Cells: held-out {metric} across the patients of each fold, averaged over "
           "folds (per target; patient-level folds). Click a row to see its held-out predictions.")
event = st.dataframe(table, hide_index=True, key="t_table", on_select="rerun", selection_mode="single-row",
                     column_config={k: c.NUMBER for k in run_cols}, height=min(420, 38 + 35 * max(len(table), 1)))
st.download_button("Download targets (CSV)", table.to_csv(index=False), "targets.csv", "text/csv", key="dl_targets")
if table.empty:
    st.stop()

# ---- one target -------------------------------------------------------------------------------
options = [f"{t}/{g}" for t, g in zip(table["task"], table["target"])]
rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
if rows and rows != st.session_state.get("_t_rows"):
    st.session_state["t_pick"] = options[rows[0]]
st.session_state["_t_rows"] = rows
if st.session_state.get("t_pick") not in options:
    st.session_state["t_pick"] = options[0]
pick = st.selectbox("Target", options, key="t_pick")
task, target = pick.split("/", 1)
st.subheader(f"{target} ({task})")

points, missing = [], []
for r in runs:
    if task not in r.blocks:  # a run without this output is not mentioned
        continue
    if not r.has_heldout(task):
        missing.append(r.label)
        continue
    h = c.attempt(c.heldout_target, r, task, target)
    if h is not None and not h.empty:
        points.append(h.assign(run=r.label))
if missing:
    st.caption(f"Not in the scatter: {', '.join(missing)} (no held-out {task} predictions saved; runs trained with "
               "`histoviz train` save them).")
sc = scores[(scores["task"] == task) & (scores["target"] == target)].set_index("run")
if points:
    pts = pd.concat(points, ignore_index=True)
    st.plotly_chart(scatter_figure(pts, target=target), key="t_scatter")
    lines = []
    for row in pooled_by_run(pts).itertuples(index=False):
        per = sc.loc[row.run, "mean"] if row.run in sc.index else np.nan
        lines.append(f"**{row.run}**: {metric} {per:.3f} (mean over {row.folds} folds of "
                     f"{row.per_fold:.0f} held-out patients) · pooled Pearson {row.pooled_pearson:.3f} "
                     f"({row.n} patients, all folds together)")
    st.markdown("  \n".join(lines))
    st.caption("Values on each run's training-fold standardised scale (the scale the model was fitted on); "
               "the per-fold correlation does not depend on it.")

# ---- the target's map ----------------------------------------------------------------------------
have = []
for f in c.find_files((".h5ad",))[:50]:
    try:
        avail, info, _ = c.prediction_info(Path(f))
    except Exception:  # not a prediction file
        continue
    spec = (f"gene:{target}" if target in avail.get("gene", [])
            else f"modality:{task}/{target}" if f"{task}/{target}" in avail.get("modality", []) else None)
    if spec:
        have.append((f, spec, info))
with st.expander("Spatial map", expanded=bool(have)):
    if not have:
        st.info(f"No prediction file under the results root has a map of {target}. "
                f"`histoviz predict --model RUN --slide SLIDE --out maps/` writes one.")
    else:
        f, spec, info = have[[c.rel(h[0]) for h in have].index(
            st.selectbox("Prediction file", [c.rel(h[0]) for h in have], key="t_map_file"))]
        slide = c.locate(str(info.get("slide_path", "")))
        if slide is None:
            st.caption(f"The slide of {c.rel(f)} is not under the results root; the map is drawn without it.")
        res = c.attempt(c.hover_map, slide, Path(f), spec, 0.65, None)
        if res is not None:
            st.plotly_chart(res[0], key="t_map")
            if slide is not None:
                shell, _ = napari_command(slide, f, spec)
                st.code(shell, language="bash")
