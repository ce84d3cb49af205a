"""Outcomes page: Kaplan-Meier curves of predicted risk groups (within-fold median or tertiles)
with confidence bands, censor ticks and the numbers at risk, log-rank p; c-index and AUC per
model with their fold spread; the pooled confusion matrix and per-class AUC; calibration
(reliability diagram and ECE of grade probabilities; predicted survival at a horizon against
Kaplan-Meier by risk decile); conformal coverage against 1 - alpha with set size / interval
width per subgroup (class, event status, fold, and the run's Mondrian groups). Time axes carry
the unit the run's config gives."""

from __future__ import annotations

import numpy as np
import streamlit as st

from histoviz.dashboard import common as c
from histoviz.evaluation.calibration import (
    bin_ends,
    coverage_by_group,
    grade_calibration,
    survival_calibration,
)
from histoviz.evaluation.report import confusion_pooled, km_by_risk
from histoviz.evaluation.survival import concordance_index
from histoviz.task_kinds import OUTCOME_KINDS, TaskKind
from histoviz.viz.figures import (
    confusion_figure,
    coverage_figure,
    fmt_p,
    fold_spread_figure,
    km_risk_figure,
    reliability_figure,
    survival_calibration_figure,
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


def time_label(run, block: str) -> tuple[str, str]:
    """``("time (months)", "months")``, or a label that says the unit is not recorded."""
    unit = run.time_unit(block)
    return (f"time ({unit})" if unit else "time (unit not recorded)"), unit


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
    tlabel, unit = time_label(run, block)
    h = c.attempt(c.heldout, run, block) if run.has_heldout(block) else None
    if h is None or h.empty:
        st.info(f"{run.label}: no held-out predictions for {block} (heldout/{block}.parquet), so no curves.")
    else:
        res = c.attempt(km_by_risk, h, n_groups=2 if split == "median" else 3)
        if res is not None:
            curves, test = res
            st.plotly_chart(km_risk_figure(curves, test, title=f"{run.label} · {block}", time_label=tlabel),
                            key="km_chart")
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

        st.subheader("Calibration: predicted survival at a horizon vs Kaplan-Meier")
        try:
            ends = bin_ends(h)
        except Exception as e:  # a run trained before bin ends were recorded
            ends = None
            st.info(f"{run.label}: {c.message(e)}")
        if ends is not None:
            finite = np.where(np.isfinite(ends), ends, np.nan)
            last = float(np.nanmin(np.nanmax(finite, axis=1)))  # every fold's survival function reaches it
            events = h.loc[h["event"].astype(float) == 1, "time"].astype(float)
            default = float(np.clip(events.median() if len(events) else last / 2, last / 20, last))
            cols = st.columns([2, 1])
            horizon = cols[0].slider(f"Horizon ({unit or 'time unit not recorded'})", min_value=float(last / 20),
                                     max_value=last, value=round(default, 2), key=f"horizon:{pick}",
                                     help="Up to the last time every fold's survival function reaches (the end of "
                                          "its last closed time bin).")
            n_groups = cols[1].radio("Risk groups", [10, 5], horizontal=True, key="cal_groups",
                                     format_func=lambda k: "deciles" if k == 10 else "quintiles")
            got = c.attempt(survival_calibration, h, float(horizon), n_groups=int(n_groups))
            if got is not None:
                tab, summ = got
                if tab.empty:
                    st.info(f"Too few patients with a prediction at {horizon:.3g} {unit} for {n_groups} groups.")
                else:
                    st.plotly_chart(survival_calibration_figure(tab, horizon=float(horizon), unit=unit,
                                                                title=f"{run.label} · {block}"), key="surv_cal_chart")
                    st.markdown(f"{summ['n']} held-out patients in {n_groups} groups of predicted risk at "
                                f"{horizon:.3g} {unit}: mean |predicted − Kaplan-Meier| = "
                                f"**{summ['mean_abs_error']:.3f}** (patient-weighted).")
                    st.caption("Each fold's discrete-time survival function read at the horizon (linear between its "
                               "bin ends, from S(0) = 1); groups by predicted survival, group 1 the highest risk; "
                               "Kaplan-Meier (lifelines) with its 95% interval. On the diagonal: calibrated."
                               + (f" {summ['n_undefined']} patient(s) whose fold's bins end before the horizon are "
                                  "left out." if summ["n_undefined"] else ""))
                    st.dataframe(tab, hide_index=True, key="surv_cal_table",
                                 column_config={k: c.NUMBER for k in ("predicted", "observed", "lower", "upper")})
                    table_download(tab, "survival calibration", "dl_surv_cal")

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
    h = c.attempt(c.heldout, run, block) if run.has_heldout(block) else None
    left, right = st.columns(2)
    with left:
        if h is None or h.empty:
            st.info(f"{run.label}: no held-out predictions for {block}, so no confusion matrix or calibration.")
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
    if h is not None and not h.empty:
        st.subheader("Calibration of the predicted probabilities")
        cols = st.columns([1, 1, 2])
        n_bins = cols[0].select_slider("Bins", [5, 10, 15, 20], value=10, key="rel_bins")
        strategy = cols[1].radio("Bins of", ["uniform", "quantile"], horizontal=True, key="rel_strategy",
                                 format_func=lambda s: "equal width" if s == "uniform" else "equal count")
        got = c.attempt(grade_calibration, h, n_bins=int(n_bins), strategy=strategy)
        if got is not None:
            curves, summ = got
            views = ["top-label", *[f"class {k}" for k in summ["ece_per_class"]]]
            shown = cols[2].multiselect("Curves", views, default=["top-label"], key="rel_views")
            st.plotly_chart(reliability_figure(curves, views=shown, title=f"{run.label} · {block}"), key="rel_chart")
            m = st.columns(3)
            m[0].metric("ECE (top-label)", f"{summ['ece']:.3f}",
                        help="Expected calibration error: the patient-weighted mean over bins of |observed − "
                             "predicted| for the probability of the predicted class being right.")
            m[1].metric("ECE (classwise, mean)", f"{summ['ece_classwise']:.3f}")
            m[2].metric("Accuracy", f"{summ['accuracy']:.3f}", help=f"{summ['n']} held-out patients, folds pooled")
            st.caption(f"{summ['n']} held-out patients of {h['fold'].nunique()} folds pooled (each fold's model on "
                       f"its own held-out patients); {n_bins} bins of "
                       f"{'equal width' if strategy == 'uniform' else 'equal count'} as scikit-learn's "
                       "calibration_curve; bars: Wilson 95% interval; marker size: patients in the bin.")
            ece = {"view": list(summ["ece_per_class"]), "ece": list(summ["ece_per_class"].values())}
            with st.expander("Reliability table"):
                st.dataframe(curves, hide_index=True, key="rel_table",
                             column_config={k: c.NUMBER for k in ("predicted", "observed", "lower", "upper")})
                st.dataframe(ece, hide_index=True, key="ece_table", column_config={"ece": c.NUMBER})
                table_download(curves, "reliability", "dl_rel")

# ---- conformal -----------------------------------------------------------------------------------
st.header("Conformal coverage")
pairs = {f"{r.label} · {b}": (r, b) for r in runs for b, k in r.blocks.items() if k in OUTCOME_KINDS}
pick = st.selectbox("Run / block", list(pairs), key="cov_run")
run, block = pairs[pick]
kind = run.blocks[block]
cov = coverage_table(run, block)
if cov.empty:
    st.info(f"{run.label}: {block} was not calibrated (no coverage rows); set evaluation.calibration_fraction "
            "and evaluation.conformal in the config.")
else:
    st.plotly_chart(coverage_figure(cov, title=f"{run.label} · {block}"), key="cov_chart")
    group = run.conformal_group
    st.caption(f"Split conformal at α = {run.alpha:g}: coverage of the held-out patients' "
               f"{'sets' if kind == TaskKind.CLASSIFICATION else 'risk intervals'} (mean ± std over folds), "
               + (f"calibrated per `{group}` (Mondrian) and shown per subgroup." if group else
                  "marginal calibration (set evaluation.conformal.group for per-subgroup thresholds).")
               + (" Survival: patients with an observed event." if kind == TaskKind.SURVIVAL else ""))
    st.dataframe(cov, hide_index=True, key="cov_table",
                 column_config={k: c.NUMBER for k in ("coverage", "coverage_std", "size", "target_coverage")})
    table_download(cov, "coverage", "dl_cov")
    h = c.attempt(c.heldout, run, block) if run.has_heldout(block) else None
    by = coverage_by_group(h, kind) if h is not None else None
    if by is not None and not by.empty:
        st.subheader("Coverage and size per subgroup")
        views = list(dict.fromkeys(by["by"]))
        view = st.radio("Subgroups", views, horizontal=True, key="cov_by",
                        format_func=lambda v: {"class": "true class", "event": "event status"}.get(v, v))
        sub = by[by["by"] == view].rename(columns={"group": "subset", "n": "n_patients"})
        sub = sub.assign(coverage_std=np.nan, target_coverage=1.0 - run.alpha, n_folds=np.nan)
        st.plotly_chart(coverage_figure(sub, title=f"{run.label} · {block} by {view}"), key="cov_by_chart")
        st.caption("Held-out patients of every fold pooled. The guarantee is marginal: per class or per fold the "
                   "coverage may fall below 1 − α (Mondrian calibration per group restores it)."
                   + (" Censored patients: the share whose interval allows surviving past their censoring bin."
                      if kind == TaskKind.SURVIVAL else ""))
        st.dataframe(by[by["by"] == view], hide_index=True, key="cov_by_table",
                     column_config={"coverage": c.NUMBER, "size": c.NUMBER})

# ---- PathGen settings -------------------------------------------------------------------------------
pg = [r for r in runs if (r.info.get("setting") or {}).get("value") is not None]  # a model's declared setting
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
