"""Cohort page: patients, slides, modalities present per patient, tiles per slide, a thumbnail
grid, and Kaplan-Meier curves of cohort groups with a log-rank test."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from histoviz.dashboard import common as c
from histoviz.data.identity import cohort_id
from histoviz.evaluation.survival import km_curves, logrank
from histoviz.task_kinds import TaskKind
from histoviz.viz.figures import fmt_p, km_figure

NONE = "(none)"
NOT_GROUPS = {"slide_id", "patient_id", "path", "time", "event"}
PER_PAGE = 12

st.title("Cohort")
cohorts, cohort_errors = c.cohorts()
for e in cohort_errors:
    st.warning(e)
by_path = {c.rel(x.path): x for x in cohorts}
found = list(by_path)
group = c.current_group()
mine = next((k for k, x in by_path.items() if group is not None and x.id == group.key[0]), None)
top = st.columns([2, 2])
options = [*found, NONE] if found else [NONE]
pick = top[0].selectbox("Cohort table under the results root", options,
                        index=options.index(mine) if mine in options else 0, key="cohort_pick",
                        format_func=lambda k: f"{by_path[k].name} · {k}" if k in by_path else k,
                        help="Defaults to the cohort of the runs picked in the sidebar.")
typed = top[1].text_input("… or a path under the root", key="cohort_path",
                          help="Columns `slide_id, patient_id, path` and optional `time, event, grade, fold`.").strip()
text = typed or (pick if pick != NONE else "")
if not text:
    st.info("No cohort table (`cohort*.csv|tsv|parquet`) under the results root. " + c.HOW_TO_MAKE_DATA)
    st.stop()
path = c.under(text)
if path is None:
    st.stop()
if not path.is_file():
    st.error(f"{text}: cohort table not found under the results root")
    st.stop()
res = c.attempt(c.cohort, path)
if res is None:
    st.stop()
df, warning = res
if warning:
    st.warning(warning)
cid = cohort_id(df)
trained = [r for r in c.all_runs()[0] if r.identity is not None and r.identity.cohort_id == cid]
st.caption(f"Cohort `{cid}` · {len(trained)} run(s) under the root trained on it"
           + (f": {', '.join(r.label for r in trained[:8])}{' ...' if len(trained) > 8 else ''}" if trained else "")
           + ("" if group is None or group.key[0] == cid else
              " · not the cohort of the runs picked in the sidebar"))

per_patient = df.drop_duplicates("patient_id")
m = st.columns(4)
m[0].metric("Patients", df["patient_id"].nunique())
m[1].metric("Slides", len(df))
if "event" in df.columns:
    m[2].metric("Events (patients)", int(pd.to_numeric(per_patient["event"], errors="coerce").fillna(0).sum()))
if "grade" in df.columns:
    m[3].metric("Grades", ", ".join(str(g) for g in sorted(df["grade"].dropna().unique().tolist())))

# ---- modalities per patient ------------------------------------------------------------------------
st.subheader("Modalities per patient")
omics: dict[str, Path] = {}
for p in sorted((path.parent / "omics").glob("*.h5ad")):
    omics.setdefault(p.stem, p)
for r in trained:
    for mod, spec in ((r.config.get("data") or {}).get("omics") or {}).items():
        q = c.inside(str((spec or {}).get("path", "")))
        if q is not None and q.is_file() and str(q).endswith(".h5ad"):
            omics.setdefault(mod, q)
patients = tuple(per_patient["patient_id"].astype(str))
slides_per_patient = df.groupby("patient_id")["slide_id"].count()
if not omics:
    st.info("No omics tables (`omics/*.h5ad` next to the cohort table, or in a picked run's config) under the root.")
    presence = pd.DataFrame(index=pd.Index(patients, name="patient_id"))
else:
    presence = c.attempt(c.omics_presence, patients, tuple((k, str(v), c.mtime(v)) for k, v in omics.items()))
    if presence is None:
        presence = pd.DataFrame(index=pd.Index(patients, name="patient_id"))
    else:
        counts = presence.sum().astype(int)
        k = st.columns(len(counts) + 1)
        for i, (mod, n) in enumerate(counts.items()):
            k[i].metric(mod, f"{n} / {len(patients)}")
        k[-1].metric("all modalities", f"{int(presence.all(axis=1).sum())} / {len(patients)}")
ptable = presence.reset_index()
ptable.insert(1, "slides", ptable["patient_id"].map(slides_per_patient).fillna(0).astype(int))
for col in ("time", "event", "grade"):
    if col in per_patient.columns:
        ptable[col] = ptable["patient_id"].map(per_patient.set_index("patient_id")[col])
st.dataframe(ptable, hide_index=True, key="patients_table",
             column_config={mod: st.column_config.CheckboxColumn(mod) for mod in omics})
st.download_button("Download patients (CSV)", ptable.to_csv(index=False), "patients.csv", "text/csv", key="dl_patients")

# ---- tiles per slide --------------------------------------------------------------------------------
st.subheader("Tiles per slide")
feature_dirs = {c.rel(d): d for d in sorted((path.parent / "features").glob("*"))
                if d.is_dir() and any(d.glob("*.h5"))}
for r in trained:  # the bags the cohort's runs trained on (another cohort's folder, e.g. re-used slides)
    q = c.inside(str((r.config.get("data") or {}).get("features") or ""))
    if q is not None and q.is_dir() and any(q.glob("*.h5")):
        feature_dirs.setdefault(c.rel(q), q)
tiles = None
if not feature_dirs:
    st.info("No feature bags (`features/<encoder>/<slide_id>.h5` next to the cohort table, or the folder a run "
            "of this cohort trained on); `histoviz embed COHORT.csv --out DIR` writes them.")
else:
    fd = feature_dirs[st.selectbox("Feature folder", list(feature_dirs), key="feature_dir")]
    tiles = c.tiles_per_slide(tuple(df["slide_id"].astype(str)), str(fd), c.mtime(fd))
    n = tiles["n_tiles"]
    k = st.columns(4)
    k[0].metric("Slides embedded", int(n.notna().sum()))
    k[1].metric("Tiles", int(n.sum()))
    k[2].metric("Median tiles per slide", f"{n.median():.0f}" if n.notna().any() else "n/a")
    k[3].metric("Not embedded", int(n.isna().sum()))
    import plotly.express as px

    fig = px.histogram(tiles.dropna(), x="n_tiles", nbins=30, labels={"n_tiles": "tiles per slide"})
    fig.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=240, yaxis_title="slides")
    st.plotly_chart(fig, key="tiles_hist")
    summary = fd / "embed_summary.csv"
    if summary.is_file():
        from histoviz.viz.dashboard import embed_summary

        got = c.attempt(embed_summary, summary)
        if got is not None:
            table, totals = got
            if totals.get("warning"):
                st.warning(totals["warning"])
            failed = table[table["status"] == "failed"] if "status" in table.columns else table.iloc[:0]
            if len(failed):
                st.error(f"{len(failed)} slide(s) failed to embed ({c.rel(summary)}):")
                st.dataframe(failed, hide_index=True, key="failed_table")

# ---- thumbnails -------------------------------------------------------------------------------------
st.subheader("Slides")
slides = df[["slide_id", "path"]].copy()
if tiles is not None:
    slides = slides.merge(tiles, on="slide_id", how="left")
pages = max(1, -(-len(slides) // PER_PAGE))
page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="thumb_page") if pages > 1 else 1
cols = st.columns(6)
for i, row in enumerate(slides.iloc[(page - 1) * PER_PAGE: page * PER_PAGE].itertuples(index=False)):
    with cols[i % 6]:
        p = c.inside(row.path)
        n_t = getattr(row, "n_tiles", float("nan"))
        cap = f"{row.slide_id}" + (f" · {n_t:.0f} tiles" if pd.notna(n_t) else "")
        if p is None or not p.is_file():
            st.caption(f"{cap}: slide file not under the results root")
            continue
        thumb = c.attempt(c.thumbnail, str(p), c.mtime(p))
        if thumb is not None:
            st.image(thumb, caption=cap, width="stretch")

# ---- survival ---------------------------------------------------------------------------------------
st.subheader("Survival")
if not {"time", "event"} <= set(df.columns):
    st.info("The table has no `time` and `event` columns, so there are no survival curves.")
else:
    candidates = [col for col in df.columns if col not in NOT_GROUPS and 1 < df[col].nunique() <= 12]
    options = [NONE, *candidates]
    group = st.selectbox("Stratify by", options, index=options.index("grade") if "grade" in options else 0,
                         key="km_group")
    g = None if group == NONE else group
    units = {r.time_unit(b) for r in trained for b, k in r.blocks.items() if k == TaskKind.SURVIVAL} - {""}
    tlabel = f"time ({units.pop()})" if len(units) == 1 else "time (unit not recorded)"
    curves = c.attempt(km_curves, df, g, unit="patient_id")
    if curves is not None:
        st.plotly_chart(km_figure(curves, group_label=g or "cohort", time_label=tlabel), key="km_chart")
        if g:
            lr = c.attempt(logrank, df, g, unit="patient_id")
            if lr is not None:
                st.markdown(f"Log-rank test across {int(lr['n_groups'])} groups of `{g}` ({int(lr['n'])} patients, "
                            f"first slide each): χ² = {lr['test_statistic']:.2f}, df = {int(lr['degrees_of_freedom'])}, "
                            f"**p = {fmt_p(lr['p_value'])}**")

with st.expander("Cohort table"):
    st.dataframe(df, hide_index=True, key="cohort_table")
