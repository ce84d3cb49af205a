"""Cohort page: the cohort table, Kaplan-Meier curves with a log-rank test, embedding summary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages import common as c
from histoviz.evaluation.survival import km_curves, logrank
from histoviz.viz.dashboard import embed_summary, find_embed_summaries, km_figure

NONE = "(none)"
NOT_GROUPS = {"slide_id", "patient_id", "path", "time", "event"}

st.title("Cohort")
path = st.text_input(
    "Cohort table (CSV, TSV or parquet)", value=c.DEFAULT_COHORT, key="cohort_path",
    persist_state="session",
    help="Columns `slide_id, patient_id, path` and optional `time, event, grade, fold`.",
).strip()
if not path or not Path(path).exists():
    if path and path != c.DEFAULT_COHORT:  # the default is simply not made yet
        st.error(f"{path}: cohort table not found")
    st.info("No cohort table yet. " + c.HOW_TO_MAKE_DATA)
    st.stop()

df = c.attempt(c.cohort, path)
if df is None:
    st.stop()

m = st.columns(4)
m[0].metric("Slides", len(df))
m[1].metric("Patients", df["patient_id"].nunique())
if "event" in df.columns:
    per_patient = df.drop_duplicates("patient_id")
    m[2].metric("Events (patients)", int(pd.to_numeric(per_patient["event"], errors="coerce").fillna(0).sum()))
if "grade" in df.columns:
    m[3].metric("Grades", ", ".join(str(g) for g in sorted(df["grade"].dropna().unique().tolist())))

left, right = st.columns([1.3, 1], gap="large")
with left:
    st.subheader("Survival")
    if not {"time", "event"} <= set(df.columns):
        st.info("The table has no `time` and `event` columns, so there are no survival curves.")
    else:
        candidates = [col for col in df.columns if col not in NOT_GROUPS and 1 < df[col].nunique() <= 12]
        options = [NONE, *candidates]
        group = st.selectbox("Stratify by", options,
                             index=options.index("grade") if "grade" in options else 0, key="km_group")
        per_patient = st.checkbox("One row per patient (first slide)", value=True, key="km_per_patient")
        g = None if group == NONE else group
        unit = "patient_id" if per_patient else None
        curves = c.attempt(km_curves, df, g, unit=unit)
        if curves is not None:
            st.plotly_chart(km_figure(curves, group_label=g or "cohort"), key="km_chart")
            if g:
                lr = c.attempt(logrank, df, g, unit=unit)
                if lr is not None:
                    st.markdown(
                        f"Log-rank test across {int(lr['n_groups'])} groups of `{g}` "
                        f"({int(lr['n'])} {'patients' if unit else 'rows'}): "
                        f"χ² = {lr['test_statistic']:.2f}, df = {int(lr['degrees_of_freedom'])}, "
                        f"**p = {lr['p_value']:.3g}**"
                    )

with right:
    st.subheader("Embedding")
    summaries = find_embed_summaries(path)
    choices = [c.rel(p) for p in summaries]
    pick = st.selectbox("Feature folder summary", [*choices, NONE] if choices else [NONE], key="embed_pick")
    typed = st.text_input("… or an embed_summary.csv path", key="embed_path").strip()
    summary_path = typed or (pick if pick != NONE else "")
    if not summary_path:
        st.info("No `features/*/embed_summary.csv` next to the cohort table. "
                "`histoviz embed COHORT.csv --out DIR` writes one.")
    else:
        res = c.attempt(embed_summary, summary_path)
        if res is not None:
            table, totals = res
            k = st.columns(3)
            k[0].metric("Slides embedded", totals.get("done", 0) + totals.get("skipped", 0))
            k[1].metric("Failed", totals.get("failed", 0))
            k[2].metric("Tiles", totals.get("tiles", 0))
            if "encoder" in totals:
                st.caption(f"encoder `{totals['encoder']}`"
                           + (f", {totals['embed_dim']}-d" if "embed_dim" in totals else ""))
            if "n_tiles" in table.columns and len(table):
                import plotly.express as px

                fig = px.histogram(table, x="n_tiles", nbins=30, labels={"n_tiles": "tiles per slide"})
                fig.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=240,
                                  yaxis_title="slides")
                st.plotly_chart(fig, key="tiles_hist")
            failed = table[table["status"] == "failed"] if "status" in table.columns else table.iloc[:0]
            if len(failed):
                st.error(f"{len(failed)} slide(s) failed to embed:")
                st.dataframe(failed, hide_index=True)
            with st.expander("Per-slide summary"):
                st.dataframe(table, hide_index=True)

st.subheader("Table")
st.dataframe(df, hide_index=True, key="cohort_table")
