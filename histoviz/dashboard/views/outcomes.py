"""Outcomes page: Kaplan-Meier curves of predicted risk groups (within-fold median or tertiles)
with confidence bands, censor ticks and the numbers at risk, log-rank p; c-index and AUC per
model with their fold spread; the pooled confusion matrix and per-class AUC; conformal
coverage against 1 - alpha with set size / interval width per subgroup."""

from __future__ import annotations

import streamlit as st

from histoviz.dashboard import common as c
from histoviz.evaluation.report import confusion_pooled, km_by_risk
from histoviz.evaluation.survival import concordance_index
from histoviz.task_kinds import OUTCOME_KINDS, TaskKind
from histoviz.viz.figures import (
    confusion_figure,
    coverage_figure,
    fmt_p,
    fold_spread_figure,
    km_risk_figure,
)
from histoviz.viz.results import (
    auc_per_class,
    coverage_table,
    fold_summary,
    fold_values,
    risk_group_sizes,
)

st.title("Outcomes")
runs = c.selected_runs(kinds=OUTCOME_KINDS)
if not runs:
    st.info("No run with an outcome (grade, survival) is picked. Train one with `histoviz train "
            "training/configs/grade_survival.yaml --out runs/joint` (or `outcome_baselines.yaml`), then pick it "
            "in the sidebar.")
    st.stop()


def table_download(df, name: str, key: str) -> None:
    """A CSV download of a table."""
    st.download_button(f"Download {name} (CSV)", df.to_csv(index=True), f"{name.replace(' ', '_')}.csv",
                       "text/csv", key=key)


surv_runs = [r for r in runs if TaskKind.SURVIVAL in r.blocks.values()]
class_runs = [r for r in runs if TaskKind.CLASSIFICATION in r.blocks.values()]

# ---- survival ---------------------------------------------------------------------------------
if surv_runs:
    st.header("Survival")
    cidx = fold_values(surv_runs, "c_index", kind=TaskKind.SURVIVAL)
    if len(cidx):
        st.subheader("c-index per model")
        st.plotly_chart(fold_spread_figure(cidx, metric="Harrell's c-index"), key="cindex_chart")
        summ = fold_summary(cidx, "c_index")
        st.dataframe(summ, hide_index=True, key="cindex_table",
                     column_config={"c_index_mean": c.NUMBER, "c_index_std": c.NUMBER})
        st.caption("Harrell's c-index of each fold's held-out patients (dots) and mean ± std over folds.")
        table_download(summ, "c-index", "dl_cindex")

    st.subheader("Kaplan-Meier by predicted risk group")
    pairs = {f"{r.label} · {b}": (r, b) for r in surv_runs for b, k in r.blocks.items() if k == TaskKind.SURVIVAL}
    cols = st.columns([2, 1])
    pick = cols[0].selectbox("Run / block", list(pairs), key="km_run")
    split = cols[1].radio("Groups", ["median", "tertiles"], horizontal=True, key="km_split")
    run, block = pairs[pick]
    h = c.attempt(c.heldout, run, block)
    if h is None or h.empty:
        st.warning(f"{run.label}: no held-out predictions for {block} (heldout/{block}.parquet); retrain the run.")
    else:
        res = c.attempt(km_by_risk, h, n_groups=2 if split == "median" else 3)
        if res is not None:
            curves, test = res
            st.plotly_chart(km_risk_figure(curves, test, title=f"{run.label} · {block}"), key="km_chart")
            st.markdown(f"Log-rank test across the {int(test['n_groups'])} predicted-risk groups "
                        f"({int(test['n'])} held-out patients of {h['fold'].nunique()} folds): "
                        f"χ² = {test['test_statistic']:.2f}, **p = {fmt_p(test['p_value'])}**. "
                        f"Pooled c-index {concordance_index(h['time'], h['risk'], h['event']):.3f} "
                        "(risks of different folds' models together).")
            st.caption(f"Groups by each fold's own {split} of predicted risk (no fold's scale leaks into another), "
                       "then pooled. Bands: 95% confidence; ticks: censored patients; table: patients still at "
                       "risk.")
            st.dataframe(risk_group_sizes(curves), hide_index=True, key="km_groups")
            table_download(curves, "km curves", "dl_km")

# ---- classification ----------------------------------------------------------------------------
if class_runs:
    st.header("Classification")
    auc = fold_values(class_runs, "auc_macro", kind=TaskKind.CLASSIFICATION)
    if len(auc):
        st.subheader("Macro AUC per model")
        st.plotly_chart(fold_spread_figure(auc, metric="macro AUC (one-vs-rest)"), key="auc_chart")
    pairs = {f"{r.label} · {b}": (r, b) for r in class_runs for b, k in r.blocks.items() if k == TaskKind.CLASSIFICATION}
    pick = st.selectbox("Run / block", list(pairs), key="cls_run")
    run, block = pairs[pick]
    left, right = st.columns(2)
    with left:
        h = c.attempt(c.heldout, run, block)
        if h is None or h.empty:
            st.warning(f"{run.label}: no held-out predictions for {block}; no confusion matrix.")
        else:
            cm = confusion_pooled(h)
            st.plotly_chart(confusion_figure(cm, title=f"{block}: held-out patients of {h['fold'].nunique()} "
                                                       "folds pooled"), key="cm_chart")
            table_download(cm, "confusion matrix", "dl_cm")
    with right:
        per = auc_per_class(run, block)
        st.markdown(f"**Per-class AUC** ({block}, one-vs-rest, mean ± std over folds)")
        st.dataframe(per, hide_index=True, key="auc_class_table",
                     column_config={"auc_mean": c.NUMBER, "auc_std": c.NUMBER, "n_per_fold": c.NUMBER})
        table_download(per, "per-class AUC", "dl_auc_class")

# ---- conformal -----------------------------------------------------------------------------------
st.header("Conformal coverage")
pairs = {f"{r.label} · {b}": (r, b) for r in runs for b, k in r.blocks.items() if k in OUTCOME_KINDS}
pick = st.selectbox("Run / block", list(pairs), key="cov_run")
run, block = pairs[pick]
cov = coverage_table(run, block)
if cov.empty:
    st.info(f"{run.label}: {block} was not calibrated (no coverage rows); set evaluation.calibration_fraction "
            "and evaluation.conformal in the config.")
else:
    st.plotly_chart(coverage_figure(cov, title=f"{run.label} · {block}"), key="cov_chart")
    group = run.conformal_group
    st.caption(f"Split conformal at α = {run.alpha:g}: coverage of the held-out patients' "
               f"{'sets' if run.blocks[block] == TaskKind.CLASSIFICATION else 'risk intervals'} (mean ± std over folds), "
               + (f"calibrated per `{group}` (Mondrian) and shown per subgroup." if group else
                  "marginal calibration (set evaluation.conformal.group for per-subgroup thresholds).")
               + (" Survival: patients with an observed event." if run.blocks[block] == TaskKind.SURVIVAL else ""))
    st.dataframe(cov, hide_index=True, key="cov_table",
                 column_config={k: c.NUMBER for k in ("coverage", "coverage_std", "size", "target_coverage")})
    table_download(cov, "coverage", "dl_cov")

# ---- PathGen settings -------------------------------------------------------------------------------
pg = [r for r in runs if (r.config.get("model") or {}).get("name") == "pathgen"]
if pg:
    from histoviz.evaluation.pathgen import pathgen_settings

    st.header("PathGen settings")
    tab = c.attempt(pathgen_settings, [r.path for r in pg])
    if tab is not None and not tab.empty:
        shown = tab.copy()
        for col in ("mean", "std", "ci_low", "ci_high", "p_wilcoxon"):
            if col in shown:
                shown[col] = shown[col].astype(float).round(3)
        values = shown[shown["statistic"] == "value"].pivot_table(index="setting", columns="metric", values="mean",
                                                                  aggfunc="first", sort=False)
        spread = shown[shown["statistic"] == "value"].pivot_table(index="setting", columns="metric", values="std",
                                                                  aggfunc="first", sort=False)
        st.markdown("**Held-out, mean (± SD over folds)**: slide only, slide + synthesised gene groups, "
                    "slide + measured gene groups, on the same folds.")
        st.dataframe((values.map(lambda v: f"{v:.3f}") + " ± " + spread.map(lambda v: f"{v:.3f}")).reset_index(),
                     hide_index=True, key="pathgen_values")
        diffs = shown[shown["statistic"] == "paired difference"]
        if len(diffs):
            st.markdown("**Paired differences over the same folds** (setting minus the versus setting; 95% CI: "
                        "Nadeau-Bengio corrected resampled t over folds; std: SD over folds; Wilcoxon over folds "
                        "exploratory, it cannot go below 0.125 with 4 folds):")
            st.dataframe(diffs[["setting", "versus", "metric", "n_folds", "mean", "ci_low", "ci_high", "std",
                                "p_wilcoxon"]],
                         hide_index=True, key="pathgen_diffs")
        table_download(tab, "pathgen settings", "dl_pathgen")
