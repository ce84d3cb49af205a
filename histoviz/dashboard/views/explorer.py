"""Explorer page (what cBioPortal users expect): a gene query with completion; patients x genes,
measured beside predicted, clustered; filters on clinical attributes; two groups compared
(Kaplan-Meier, log-rank, differential predicted expression with Benjamini-Hochberg q-values).
Thin over :mod:`histoviz.viz.results.explorer`."""

from __future__ import annotations

import streamlit as st

from histoviz.dashboard import common as c
from histoviz.task_kinds import TaskKind
from histoviz.viz.figures import expression_heatmap_figure, fmt_p, km_figure
from histoviz.viz.results import gene_panel, list_panels, match_panel, parse_gene_list
from histoviz.viz.results.explorer import (
    apply_filters,
    clinical_columns,
    cluster_order,
    compare_groups,
    define_groups,
    gene_universe,
    patient_matrix,
    patient_table,
)

BY_GENE, BY_COLUMN = "predicted high vs low of a gene", "two values of a clinical attribute"

st.title("Explorer")
runs = [r for r in c.selected_runs(kinds=(TaskKind.REGRESSION,))
        if any(k == TaskKind.REGRESSION and r.has_heldout(b) for b, k in r.blocks.items())]
if not runs:
    st.info("No picked run has held-out predictions of genes or other targets. " + c.HOW_TO_MAKE_DATA)
    st.stop()
group = c.current_group()
pairs = {f"{r.label} · {b}": (r, b) for r in runs for b, k in r.blocks.items()
         if k == TaskKind.REGRESSION and r.has_heldout(b)}
top = st.columns([2, 3])
pick = top[0].selectbox("Run / modality", list(pairs), key="x_run",
                        help="Each patient's values come from the fold model that did not train on them.")
run, block = pairs[pick]
h = c.attempt(c.heldout, run, block)
if h is None or h.empty:
    st.stop()
n_folds = run.identity.n_folds if run.identity is not None and run.identity.n_folds else None
universe = gene_universe(h)

# ---- the gene query ---------------------------------------------------------------------------------
if "x_genes" not in st.session_state:
    pam = match_panel(gene_panel("pam50"), universe)[0] if "pam50" in list_panels() else []
    st.session_state["x_genes"] = (pam or universe)[:12]
genes = top[1].multiselect(f"Genes ({len(universe)} predicted; type to complete)", universe, key="x_genes")
with st.expander("Paste a gene list"):
    pasted = st.text_area("Symbols (commas, spaces or one per line)", key="x_pasted", height=70)
    if pasted.strip():
        found, unknown = match_panel(parse_gene_list(pasted), universe)
        genes = list(dict.fromkeys([*genes, *found]))
        if unknown:
            st.caption(f"Not predicted by this run: {', '.join(unknown[:30])}")
if not genes:
    st.info("Type a gene symbol above to query it.")
    st.stop()

# ---- clinical attributes and filters ------------------------------------------------------------
cohorts, _ = c.cohorts()
cohort = next((x for x in cohorts if group is not None and x.id == group.key[0]), None)
clinical = patient_table(cohort.table) if cohort is not None else None
measured_all = patient_matrix(h, genes, value="y_true", n_folds=n_folds)
patients = list(measured_all.index)
filters = {}
if clinical is None:
    st.caption("The cohort table of these runs is not under the results root: no clinical attributes to filter on "
               "or compare.")
else:
    cols = clinical_columns(clinical.reindex(patients))
    with st.expander(f"Filter patients ({len(cols)} clinical attributes of {cohort.name})", expanded=False):
        shown = st.multiselect("Attributes", list(cols), default=[k for k in ("grade", "event") if k in cols],
                               key="x_filter_cols")
        for col in shown:
            spec = cols[col]
            if spec["kind"] == "numeric":
                filters[col] = st.slider(col, spec["min"], spec["max"], (spec["min"], spec["max"]), key=f"x_f_{col}")
            else:
                filters[col] = st.multiselect(col, spec["values"], default=spec["values"], key=f"x_f_{col}")
    kept = apply_filters(clinical.reindex(patients), filters)
    patients = [p for p in patients if p in set(kept.index)]
st.caption(f"{len(patients)} of {len(measured_all)} held-out patients"
           + (f" after filters ({', '.join(k for k, v in filters.items() if v is not None)})" if filters else "")
           + f" · run {run.label} · cohort {group.cohort_name if group else '?'}")
if len(patients) < 2:
    st.warning("Fewer than two patients pass the filters.")
    st.stop()

# ---- measured vs predicted ----------------------------------------------------------------------------
measured = measured_all.reindex(patients)
predicted = patient_matrix(h, genes, value="y_pred", n_folds=n_folds, patients=patients)
rows, order = cluster_order(measured)
st.subheader("Measured and predicted, patients x genes")
st.plotly_chart(expression_heatmap_figure(measured, predicted, patients=rows, genes=order), key="x_heatmap")
st.caption("Patients and genes ordered by average-linkage clustering of the measured values (correlation "
           "distance); predicted values in the same order. Values on the run's training-fold standardised scale "
           "(each fold's model standardised on its own training patients).")

# ---- two groups -------------------------------------------------------------------------------------
st.subheader("Two groups compared")
ways = [BY_GENE] + ([BY_COLUMN] if clinical is not None else [])
how = st.radio("Groups", ways, horizontal=True, key="x_how")
g_cols = st.columns(3)
try:
    if how == BY_GENE:
        gene = g_cols[0].selectbox("Gene", genes, key="x_group_gene")
        pred_gene = patient_matrix(h, [gene], value="y_pred", n_folds=n_folds, patients=patients)
        groups, description = define_groups(patients, predicted=pred_gene, gene=gene)
    else:
        cols = {k: v for k, v in clinical_columns(clinical.reindex(patients)).items() if v["kind"] == "categorical"}
        if not cols:
            st.info("No categorical clinical attribute to split on.")
            st.stop()
        column = g_cols[0].selectbox("Attribute", list(cols), key="x_group_col")
        vals = cols[column]["values"]
        a = g_cols[1].selectbox("Group A", vals, index=0, key=f"x_group_a:{column}")
        b = g_cols[2].selectbox("Group B", vals, index=min(1, len(vals) - 1), key=f"x_group_b:{column}")
        groups, description = define_groups(patients, clinical=clinical, column=column, values=(a, b))
except Exception as e:  # a gene without predictions, identical values: say so
    st.warning(c.message(e))
    st.stop()
all_pred = c.attempt(c.explorer_matrix, run, block, n_folds, tuple(groups.index))
if all_pred is None:
    st.stop()
res = c.attempt(compare_groups, groups, description, clinical if clinical is not None else groups.to_frame("g"),
                all_pred)
if res is None:
    st.stop()
st.markdown(f"Groups: {description}.")
st.dataframe(res.sizes, hide_index=True, key="x_sizes")
if res.curves is not None:
    units = {run.time_unit(b) for b, k in run.blocks.items() if k == TaskKind.SURVIVAL} - {""}
    units |= {r.time_unit(b) for r in c.all_runs()[0] for b, k in r.blocks.items()
              if k == TaskKind.SURVIVAL and r.identity is not None and group is not None
              and r.identity.cohort_id == group.key[0]} - {""}
    tlabel = f"time ({units.pop()})" if len(units) == 1 else "time (unit not recorded)"
    st.plotly_chart(km_figure(res.curves, group_label="", time_label=tlabel), key="x_km")
    lr = res.logrank
    st.markdown(f"Log-rank test (lifelines) between the groups ({int(lr['n'])} patients): "
                f"χ² = {lr['test_statistic']:.2f}, **p = {fmt_p(lr['p_value'])}**")
else:
    st.caption("No survival times in the cohort table: no Kaplan-Meier curves.")
de = res.expression
st.markdown(f"**Differential predicted expression** ({len(de)} genes of {block}; Welch's t-test per gene, "
            "q = Benjamini-Hochberg adjusted p)")
if how == BY_GENE:
    st.caption(f"The groups were made from predicted {gene}: its own row (and genes correlated with it) differ by "
               "construction.")
st.dataframe(de.head(200), hide_index=True, key="x_de",
             column_config={k: c.NUMBER for k in de.columns if k not in ("gene", "p", "q") and not k.startswith("n ")}
             | {"p": st.column_config.NumberColumn(format="%.2e"), "q": st.column_config.NumberColumn(format="%.2e")})
st.download_button("Download the table (CSV)", de.to_csv(index=False), "differential_expression.csv", "text/csv",
                   key="x_dl_de")
