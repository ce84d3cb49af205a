"""Models page: cross-validated comparison of run directories and per-target correlations."""

from __future__ import annotations

import streamlit as st

from app_pages import common as c
from histoviz.viz.dashboard import (
    filter_targets,
    find_run_dirs,
    mark_optimistic,
    parse_path_list,
    pearson_bar_figure,
    per_target_summary,
)

OPTIMISTIC_STYLE = "background-color: rgba(255, 170, 0, 0.22)"
NUMBER = st.column_config.NumberColumn(format="%.3f")


def _fill_run_dirs() -> None:
    """A new runs folder refills the run list with the run directories found under it."""
    st.session_state["run_dirs"] = "\n".join(c.rel(p) for p in find_run_dirs(st.session_state["runs_root"]))


st.title("Models")
with st.sidebar:
    st.subheader("Runs")
    root = st.text_input("Runs folder", value=c.DEFAULT_RUNS, key="runs_root", persist_state="session",
                         on_change=_fill_run_dirs, help="Every folder under it with `metrics.parquet` is listed.")
if "run_dirs" not in st.session_state:
    st.session_state["run_dirs"] = "\n".join(c.rel(p) for p in find_run_dirs(root))
with st.sidebar:
    st.button("Find runs in the folder", on_click=_fill_run_dirs, key="find_runs")
    text = st.text_area("Run directories (one per line)", key="run_dirs", persist_state="session",
                        height=140)
    topk_text = st.text_input("Top-k target subsets", value="50, 500", key="topk", persist_state="session",
                              help="Sizes of the top-k subsets (selected on training folds; the "
                                   "best-predicted view is selected on test correlations).")

run_dirs = [str(p) for p in parse_path_list(text)]
if not run_dirs:
    st.info(
        "No run directories. Train and cross-validate models with `make demo` (runs under "
        "`demo_out/runs/`) or `histoviz train training/configs/multiomics.yaml --out runs/mtl`, "
        "then list the run folders in the sidebar (or set the runs folder)."
    )
    st.stop()
try:
    topk = tuple(sorted({int(v) for v in topk_text.replace(",", " ").split()}))
except ValueError:
    st.error(f"Top-k sizes must be whole numbers separated by commas, got {topk_text!r}")
    st.stop()

table = c.attempt(c.compare, run_dirs, topk)
if table is None:
    st.stop()
shown = mark_optimistic(table)

st.subheader("Comparison")
st.caption(
    "Held-out correlation, patient-level folds. **per-target**: correlation across held-out "
    "patients within a fold, averaged over targets, then mean ± std over folds; **pooled**: all "
    "folds' held-out patients together; **per-patient**: across targets within a patient. "
    "`top<k>_<criterion>` subsets are chosen on training folds only."
)
if shown["optimistic"].any():
    st.warning(
        "Rows marked **⚠ OPTIMISTIC** average the k targets with the highest *test* correlation "
        "(the papers' “best predicted genes”). They are selected on the test data and overstate "
        "performance; compare models on the held-out rows."
    )
hide_opt = st.toggle("Hide optimistic rows", value=False, key="hide_optimistic")
view = shown[~shown["optimistic"]] if hide_opt else shown
styled = view.style.apply(
    lambda r: [OPTIMISTIC_STYLE if r["optimistic"] else ""] * len(r), axis=1
)
st.dataframe(
    styled, hide_index=True, key="comparison",
    column_config={
        "optimistic": None,
        **{k: NUMBER for k in ("mean", "std")},
        "n_targets": st.column_config.NumberColumn(format="%.0f"),
    },
)
st.download_button("Download comparison (CSV)", table.to_csv(index=False), "comparison.csv", "text/csv")

st.subheader("Mean held-out Pearson by model and modality")
per_target = table[table["axis"] == "per-target"]
subsets = list(dict.fromkeys(per_target["subset"]))
opt_subsets = set(shown.loc[shown["optimistic"], "subset"])
subset = st.selectbox(
    "Targets", subsets, index=subsets.index("all") if "all" in subsets else 0, key="bar_subset",
    format_func=lambda s: f"{s}  ⚠ optimistic" if s in opt_subsets else s,
)
if subset in opt_subsets:
    st.warning(f"`{subset}`: targets selected on the test correlations (optimistic).")
st.plotly_chart(pearson_bar_figure(table, subset=subset), key="pearson_bars")
st.caption("Bars: mean over folds of the per-fold mean per-target Pearson; error bars: std over folds.")

st.subheader("Per target")
metrics = c.attempt(c.run_metrics, run_dirs)
if metrics is not None:
    q = st.text_input("Search targets (genes, proteins, ...; commas for several)", key="target_query",
                      placeholder="e.g. MKI67, CD3").strip()
    summary = per_target_summary(metrics, q)
    st.caption(f"{len(summary)} rows (run × model × modality × target): held-out Pearson and "
               "Spearman, mean and std over folds; `n_patients`: held-out patients per fold.")
    st.dataframe(
        summary, hide_index=True, key="per_target",
        column_config={k: NUMBER for k in ("pearson_mean", "pearson_std", "spearman_mean",
                                           "spearman_std", "n_patients")},
    )
    if q:
        with st.expander("Per-fold rows of the matching targets"):
            st.dataframe(filter_targets(metrics, q), hide_index=True)
