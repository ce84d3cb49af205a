"""Plotly figures of the dashboard (no Streamlit; plotly imported inside each function).

- survival: :func:`km_figure` (cohort groups), :func:`km_risk_figure` (predicted-risk groups
  with confidence bands, censor ticks and a numbers-at-risk table under the plot),
  :func:`numbers_at_risk`;
- models: :func:`pearson_bar_figure`, :func:`distribution_figure` (box / violin of
  per-target scores), :func:`fold_spread_figure` (per-fold values with mean and std),
  :func:`paired_figure` (per-target or per-fold differences with the interval);
- targets: :func:`scatter_figure` (predicted vs true across held-out patients, fit line);
- outcomes: :func:`confusion_figure`, :func:`coverage_figure`, :func:`reliability_figure`
  (grade probabilities), :func:`survival_calibration_figure` (predicted survival at a horizon
  vs Kaplan-Meier by risk group);
- the cohort explorer: :func:`expression_heatmap_figure` (patients x genes, measured beside
  predicted, one clustered order and one colour scale);
- a slide: :func:`hover_map_figure` (the map over the thumbnail; the value under the cursor).

Every number a figure prints is rounded for reading (3 significant digits, p-values in
scientific form below 0.001) and every colour bar names its unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.task_kinds import TaskKind

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from histoviz.viz.maps import MapValues, PatchLayout

__all__ = [
    "confusion_figure",
    "coverage_figure",
    "distribution_figure",
    "expression_heatmap_figure",
    "fmt_p",
    "fold_spread_figure",
    "hover_map_figure",
    "km_figure",
    "km_risk_figure",
    "numbers_at_risk",
    "paired_figure",
    "pearson_bar_figure",
    "reliability_figure",
    "scatter_figure",
    "survival_calibration_figure",
]

_MARGIN = {"l": 10, "r": 10, "t": 30, "b": 10}
_RISK_COLOURS = {"low": "rgb(44,123,182)", "mid": "rgb(120,120,120)", "high": "rgb(215,48,39)"}


def _rgb(c: Sequence[float]) -> str:
    return f"rgb({int(c[0] * 255)},{int(c[1] * 255)},{int(c[2] * 255)})"


def _palette(n: int) -> list[str]:
    from histoviz.viz.colors import category_colors

    return [_rgb(c) for c in category_colors(max(n, 1))][:n]


def fmt_p(p: float) -> str:
    """A p-value for reading: ``0.042``, ``3.1e-05``, ``n/a``."""
    if p is None or not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


# ------------------------------------------------------------------------------------------------
# survival
# ------------------------------------------------------------------------------------------------
def km_figure(curves: pd.DataFrame, *, title: str = "", group_label: str = "group",
              time_label: str = "time", bands: bool = True) -> go.Figure:
    """Step plot of :func:`~histoviz.evaluation.survival.km_curves` output, with optional
    confidence bands."""
    import plotly.graph_objects as go

    fig = go.Figure()
    groups = list(dict.fromkeys(curves["group"]))
    for g, col in zip(groups, _palette(len(groups))):
        _km_traces(fig, curves[curves["group"] == g], str(g), col, f"{group_label} {g}", time_label, bands)
    fig.update_layout(title=title or None, xaxis_title=time_label, yaxis_title="survival probability",
                      yaxis={"range": [0, 1.02]},
                      legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
                      margin={**_MARGIN, "t": 60 if title else 30})
    return fig


def _km_traces(fig: Any, sub: pd.DataFrame, key: str, col: str, name: str, time_label: str, bands: bool,
               row: int | None = None) -> None:
    import plotly.graph_objects as go

    where = {"row": row, "col": 1} if row else {}
    rgb = col[4:-1]
    n = int(sub["n"].iloc[0]) if len(sub) else 0
    if bands:  # upper edge, then the lower edge filled up to it (both as steps)
        fig.add_trace(go.Scatter(x=sub["time"], y=sub["ci_upper"], mode="lines", line={"width": 0, "shape": "hv"},
                                 hoverinfo="skip", showlegend=False, legendgroup=key), **where)
        fig.add_trace(go.Scatter(x=sub["time"], y=sub["ci_lower"], mode="lines", line={"width": 0, "shape": "hv"},
                                 fill="tonexty", fillcolor=f"rgba({rgb},0.15)", hoverinfo="skip", showlegend=False,
                                 legendgroup=key), **where)
    fig.add_trace(go.Scatter(
        x=sub["time"], y=sub["survival"], mode="lines", line={"shape": "hv", "color": col},
        name=f"{name} (n={n})", legendgroup=key, customdata=sub[["at_risk"]].to_numpy(),
        hovertemplate=f"{name}<br>{time_label} %{{x:.3g}}<br>S(t) %{{y:.3f}}<br>at risk %{{customdata[0]:.0f}}"
                      "<extra></extra>"), **where)
    if "censored" in sub.columns:
        cen = sub[sub["censored"] > 0]
        if len(cen):
            fig.add_trace(go.Scatter(
                x=cen["time"], y=cen["survival"], mode="markers", legendgroup=key, showlegend=False,
                marker={"symbol": "line-ns-open", "size": 9, "color": col, "line": {"width": 1.5}},
                customdata=cen[["censored"]].to_numpy(),
                hovertemplate=f"{name}: %{{customdata[0]:.0f}} censored at {time_label} %{{x:.3g}}<extra></extra>"),
                **where)


def numbers_at_risk(curves: pd.DataFrame, times: Sequence[float]) -> pd.DataFrame:
    """Subjects still at risk (time >= t) per group at each of ``times``, from
    :func:`~histoviz.evaluation.survival.km_curves` output (its ``at_risk`` column is
    lifelines' count just before each timeline point). Rows: groups; columns: times."""
    out = {}
    for g, sub in curves.groupby("group", sort=False):
        t = sub["time"].to_numpy(float)
        ar = sub["at_risk"].to_numpy(float)
        idx = np.searchsorted(t, np.asarray(times, float), side="left")
        out[g] = [int(ar[i]) if i < len(t) else 0 for i in idx]
    return pd.DataFrame.from_dict(out, orient="index", columns=[float(x) for x in times])


def _nice_ticks(tmax: float, n: int = 6) -> np.ndarray:
    if not np.isfinite(tmax) or tmax <= 0:
        return np.array([0.0])
    raw = tmax / max(n - 1, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    return np.arange(0.0, tmax + 1e-9, step)


def km_risk_figure(curves: pd.DataFrame, test: dict[str, float] | None = None, *, title: str = "",
                   time_label: str = "time") -> go.Figure:
    """Kaplan-Meier curves of predicted-risk groups (``low``/``mid``/``high``) with confidence
    bands and censor ticks, and the numbers at risk in a table under the plot.

    Parameters
    ----------
    curves
        :func:`histoviz.evaluation.report.km_by_risk` curves.
    test
        Its log-rank result (``p_value``), shown in the title.
    """
    from plotly.subplots import make_subplots

    groups = list(dict.fromkeys(curves["group"]))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22], vertical_spacing=0.1)
    fallback = dict(zip(groups, _palette(len(groups))))
    for g in groups:
        col = _RISK_COLOURS.get(str(g), fallback[g])
        _km_traces(fig, curves[curves["group"] == g], str(g), col, f"{g} risk", time_label, True, row=1)
    ticks = _nice_ticks(float(curves["time"].max()))
    nar = numbers_at_risk(curves, ticks)
    import plotly.graph_objects as go

    for i, g in enumerate(groups):
        fig.add_trace(go.Scatter(x=ticks, y=[i] * len(ticks), mode="text", text=[str(v) for v in nar.loc[g]],
                                 textfont={"color": _RISK_COLOURS.get(str(g), fallback[g])}, showlegend=False,
                                 hovertemplate=f"{g} risk: %{{text}} at risk at {time_label} %{{x:.3g}}<extra></extra>"),
                      row=2, col=1)
    head = title
    if test is not None:
        head = (f"{title}<br>" if title else "") + (f"log-rank p = {fmt_p(test.get('p_value', np.nan))} "
                                                     f"({int(test.get('n', 0))} patients)")
    fig.update_yaxes(title_text="survival probability", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(tickvals=list(range(len(groups))), ticktext=[f"{g}" for g in groups], range=[-0.6, len(groups) - 0.4],
                     autorange="reversed", showgrid=False, zeroline=False, title_text="at risk", row=2, col=1)
    fig.update_xaxes(title_text=time_label, tickvals=ticks, row=2, col=1)
    fig.update_xaxes(tickvals=ticks, row=1, col=1)
    fig.update_layout(title={"text": head, "y": 0.98, "yanchor": "top"} if head else None, height=560,
                      margin={**_MARGIN, "t": 110 if head else 50},
                      legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"})
    return fig


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
def pearson_bar_figure(table: pd.DataFrame, *, subset: str = "all", axis: str = "per-target") -> go.Figure:
    """Grouped bars: mean held-out Pearson per modality (x) and model (colour), +- std over folds.

    Uses the rows of a :func:`~histoviz.evaluation.compare.compare_runs` table with the given
    ``subset`` and ``axis`` (default: all targets, per-target correlation, the honest headline).
    """
    import plotly.graph_objects as go

    t = table[(table["subset"] == subset) & (table["axis"] == axis) & (table["metric"] == "pearson")]
    fig = go.Figure()
    models = list(dict.fromkeys(t["model"].astype(str)))
    for mname, col in zip(models, _palette(len(models))):
        sub = t[t["model"].astype(str) == mname]
        err = sub["std"].to_numpy(dtype=float)
        fig.add_trace(go.Bar(
            x=sub["task"].astype(str), y=sub["mean"], name=mname, marker_color=col,
            error_y={"type": "data", "array": np.nan_to_num(err, nan=0.0), "visible": bool(np.isfinite(err).any())},
            customdata=np.stack([sub["n_targets"].to_numpy(dtype=float), sub["n_folds"].to_numpy(dtype=float),
                                 err], axis=1) if len(sub) else None,
            hovertemplate=f"{mname}<br>%{{x}}: Pearson %{{y:.3f}} ± %{{customdata[2]:.3f}}"
                          "<br>%{customdata[0]:.0f} targets, %{customdata[1]:.0f} folds<extra></extra>",
        ))
    fig.update_layout(barmode="group", xaxis_title="modality",
                      yaxis_title=f"mean held-out Pearson ({axis}, {subset} targets)",
                      legend_title_text="model", margin=_MARGIN)
    fig.add_hline(y=0, line_width=1, line_color="#888")
    return fig


def _box_stats_trace(s: pd.DataFrame, run: str, col: str, metric: str) -> Any:
    """A box per modality from precomputed statistics (Tukey fences at 1.5 IQR within the data)."""
    import plotly.graph_objects as go

    stats = {k: [] for k in ("x", "q1", "median", "q3", "lowerfence", "upperfence", "mean", "n")}
    for task, g in s.groupby(s["task"].astype(str), sort=False):
        v = g["mean"].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
        lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        for k, x in (("x", task), ("q1", q1), ("median", med), ("q3", q3), ("lowerfence", v[v >= lo].min()),
                     ("upperfence", v[v <= hi].max()), ("mean", v.mean()), ("n", len(v))):
            stats[k].append(x)
    return go.Box(x=stats["x"], q1=stats["q1"], median=stats["median"], q3=stats["q3"],
                  lowerfence=stats["lowerfence"], upperfence=stats["upperfence"], mean=stats["mean"],
                  name=f"{run} ({', '.join(f'{n:,}' for n in stats['n'])} targets)", marker_color=col,
                  legendgroup=run, boxpoints=False, hoverinfo="y+name")


def distribution_figure(scores: pd.DataFrame, *, metric: str = "pearson", style: str = "box",
                        max_points: int = 5000) -> go.Figure:
    """Per-target score distributions: x = modality, one box (or violin) per run.

    Parameters
    ----------
    scores
        :func:`histoviz.viz.results.per_target_scores` (one point per target: its score
        averaged over folds).
    style
        ``"box"`` or ``"violin"``.
    max_points
        Above this many targets a run's box is drawn from its quartiles (no violin, no outlier
        points), so a 20,000-gene run does not ship every value to the browser.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    runs = list(dict.fromkeys(scores["run"]))
    for run, col in zip(runs, _palette(len(runs))):
        s = scores[scores["run"] == run]
        if len(s) > max_points:  # summary statistics only: the browser gets quartiles, not every target
            fig.add_trace(_box_stats_trace(s, run, col, metric))
            continue
        common = {"x": s["task"].astype(str), "y": s["mean"], "name": run, "marker_color": col,
                  "customdata": s[["target"]].to_numpy(), "legendgroup": run,
                  "hovertemplate": f"{run}<br>%{{x}} %{{customdata[0]}}: {metric} %{{y:.3f}}<extra></extra>"}
        if style == "violin":
            fig.add_trace(go.Violin(**common, box_visible=True, meanline_visible=True, points=False,
                                    scalemode="width", spanmode="hard"))
        else:
            fig.add_trace(go.Box(**common, boxmean=True, boxpoints="outliers"))
    fig.update_layout(boxmode="group", violinmode="group", xaxis_title="modality",
                      yaxis_title=f"held-out {metric} per target (mean over folds)", legend_title_text="run",
                      margin=_MARGIN)
    fig.add_hline(y=0, line_width=1, line_color="#888")
    return fig


def fold_spread_figure(values: pd.DataFrame, *, metric: str, chance: float | None = 0.5) -> go.Figure:
    """Per-fold values (dots) and mean ± std over folds (bar) per run and task.

    ``values``: :func:`histoviz.viz.results.fold_values`.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    v = values.assign(label=values["run"].astype(str) + " · " + values["task"].astype(str))
    labels = list(dict.fromkeys(v["label"]))
    for lab, col in zip(labels, _palette(len(labels))):
        s = v[v["label"] == lab]
        mean, std = float(s["value"].mean()), float(s["value"].std()) if len(s) > 1 else 0.0
        fig.add_trace(go.Scatter(
            x=[mean], y=[lab], mode="markers", marker={"symbol": "line-ns", "size": 22, "color": col,
                                                       "line": {"width": 3, "color": col}},
            error_x={"type": "data", "array": [std], "visible": True, "color": col}, showlegend=False,
            hovertemplate=f"{lab}<br>{metric} {mean:.3f} ± {std:.3f} over {len(s)} folds<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=s["value"], y=[lab] * len(s), mode="markers", marker={"size": 8, "color": col, "opacity": 0.6},
            customdata=s[["fold", "n"]].to_numpy(), showlegend=False,
            hovertemplate=f"{lab}<br>fold %{{customdata[0]}}: {metric} %{{x:.3f}} "
                          "(%{customdata[1]:.0f} patients)<extra></extra>"))
    if chance is not None:
        fig.add_vline(x=chance, line_dash="dot", line_color="#888", annotation_text="chance")
    fig.update_layout(xaxis_title=f"{metric} (dots: folds; bar: mean ± std over folds)",
                      height=max(160, 60 + 46 * len(labels)), margin=_MARGIN)
    fig.update_yaxes(autorange="reversed")
    return fig


def paired_figure(pc: Any) -> go.Figure:
    """The per-target (regression) or per-fold (outcomes) differences ``a - b`` of a
    :class:`~histoviz.evaluation.paired.PairedComparison`, with its mean and interval."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if pc.kind == TaskKind.REGRESSION and len(pc.per_target):
        d = pc.per_target["difference"].to_numpy(float)
        fig.add_trace(go.Histogram(x=d[np.isfinite(d)], nbinsx=min(60, max(10, len(d) // 4)),
                                   marker_color="rgb(120,120,160)", name="targets",
                                   hovertemplate="difference %{x}<br>%{y} targets<extra></extra>"))
        ytitle = "targets"
    else:
        d = pc.per_unit["difference"].to_numpy(float)
        fig.add_trace(go.Scatter(x=d, y=[0] * len(d), mode="markers", marker={"size": 11},
                                 customdata=pc.per_unit[["fold"]].to_numpy(), name="folds",
                                 hovertemplate="fold %{customdata[0]}: %{x:.3f}<extra></extra>"))
        ytitle = ""
    if np.isfinite(pc.ci_low):
        fig.add_vrect(x0=pc.ci_low, x1=pc.ci_high, fillcolor="rgba(215,48,39,0.15)", line_width=0,
                      annotation_text=f"{pc.confidence:.0%} interval", annotation_position="top left")
    fig.add_vline(x=pc.difference, line_color="rgb(215,48,39)", line_width=2)
    fig.add_vline(x=0, line_color="#444", line_dash="dot")
    fig.update_layout(xaxis_title=f"{pc.metric}: {pc.run_a} − {pc.run_b}", yaxis_title=ytitle, showlegend=False,
                      height=260, margin=_MARGIN)
    if pc.kind != TaskKind.REGRESSION:
        fig.update_yaxes(visible=False)
    return fig


# ------------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------------
def scatter_figure(points: pd.DataFrame, *, target: str, unit: str = "") -> go.Figure:
    """Predicted vs true across held-out patients, one panel per run, with a least-squares
    fit line and the identity.

    ``points``: ``run, fold, patient_id, y_true, y_pred`` (held-out rows of one target).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs = list(dict.fromkeys(points["run"]))
    fig = make_subplots(rows=1, cols=max(1, len(runs)), subplot_titles=runs, horizontal_spacing=0.06)
    folds = sorted(points["fold"].unique().tolist())
    cols = dict(zip(folds, _palette(len(folds))))
    for i, run in enumerate(runs, start=1):
        s = points[points["run"] == run]
        for f in folds:
            sf = s[s["fold"] == f]
            fig.add_trace(go.Scatter(
                x=sf["y_true"], y=sf["y_pred"], mode="markers", marker={"color": cols[f], "size": 7, "opacity": 0.8},
                name=f"fold {f}", legendgroup=f"fold {f}", showlegend=i == 1, customdata=sf[["patient_id"]].to_numpy(),
                hovertemplate="%{customdata[0]}<br>true %{x:.3g}<br>predicted %{y:.3g}<extra>fold " + str(f) + "</extra>"),
                row=1, col=i)
        ok = np.isfinite(s["y_true"].to_numpy(float)) & np.isfinite(s["y_pred"].to_numpy(float))
        x, y = s["y_true"].to_numpy(float)[ok], s["y_pred"].to_numpy(float)[ok]
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, icpt = np.polyfit(x, y, 1)
            xs = np.array([x.min(), x.max()])
            fig.add_trace(go.Scatter(x=xs, y=slope * xs + icpt, mode="lines", line={"color": "#222", "width": 2},
                                     name="least-squares fit", legendgroup="fit", showlegend=i == 1,
                                     hovertemplate=f"fit: predicted = {slope:.3g} × true + {icpt:.3g}<extra></extra>"),
                          row=1, col=i)
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"color": "#aaa", "dash": "dot"},
                                     name="identity", legendgroup="identity", showlegend=i == 1, hoverinfo="skip"),
                          row=1, col=i)
        fig.update_xaxes(title_text=f"measured {target}" + (f" ({unit})" if unit else ""), row=1, col=i)
    fig.update_yaxes(title_text=f"predicted {target}" + (f" ({unit})" if unit else ""), row=1, col=1)
    fig.update_layout(height=380, margin={**_MARGIN, "t": 40}, legend={"orientation": "h", "y": -0.25})
    return fig


# ------------------------------------------------------------------------------------------------
# outcomes
# ------------------------------------------------------------------------------------------------
def confusion_figure(cm: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Heatmap of a confusion matrix (rows true, columns predicted) with the counts written in
    the cells and the share of each true class on hover."""
    import plotly.graph_objects as go

    z = cm.to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = z / z.sum(axis=1, keepdims=True)
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(c) for c in cm.columns], y=[str(c) for c in cm.index], colorscale="Blues",
        text=z.astype(int).astype(str), texttemplate="%{text}", customdata=np.nan_to_num(share),
        colorbar={"title": {"text": "patients"}},
        hovertemplate="true %{y}, predicted %{x}: %{z:.0f} patients (%{customdata:.0%} of true %{y})<extra></extra>"))
    fig.update_layout(title={"text": title, "font": {"size": 13}} if title else None, xaxis_title="predicted",
                      yaxis_title="true", height=380, margin={**_MARGIN, "t": 60 if title else 30})
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def coverage_figure(table: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Conformal coverage per subgroup against the promised ``1 - alpha`` (left) and the mean
    set size or interval width (right). ``table``: :func:`histoviz.viz.results.coverage_table`."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    size_label = {"set_size": "mean set size (classes)", "interval_width": "mean interval width"}.get(
        str(table["size_metric"].iloc[0]) if len(table) else "", "size")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("coverage", size_label), horizontal_spacing=0.12)
    sub = table["subset"].astype(str)
    fig.add_trace(go.Bar(x=sub, y=table["coverage"], marker_color="rgb(44,123,182)",
                         error_y={"type": "data", "array": np.nan_to_num(table["coverage_std"].to_numpy(float))},
                         customdata=table[["n_patients", "n_folds"]].to_numpy(), showlegend=False,
                         hovertemplate="%{x}: coverage %{y:.3f}<br>%{customdata[0]} patients, "
                                       "%{customdata[1]} folds<extra></extra>"), row=1, col=1)
    target = float(table["target_coverage"].iloc[0]) if len(table) else np.nan
    if np.isfinite(target):
        fig.add_hline(y=target, line_dash="dash", line_color="rgb(215,48,39)", row=1, col=1,
                      annotation_text=f"1 − α = {target:.2f}", annotation_position="bottom right")
    fig.add_trace(go.Bar(x=sub, y=table["size"], marker_color="rgb(120,120,160)", showlegend=False,
                         hovertemplate="%{x}: %{y:.3f}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_layout(title=title or None, height=320, margin={**_MARGIN, "t": 50})
    return fig


def _diagonal(fig: Any) -> None:
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "rgb(150,150,150)"},
                             name="perfect calibration", hoverinfo="skip"))


def reliability_figure(curves: pd.DataFrame, *, views: Sequence[str] = ("top-label",), title: str = "") -> go.Figure:
    """Reliability diagram: observed frequency against mean predicted probability per bin (with
    the Wilson 95% interval), one line per view (``top-label``, ``class <c>``); the diagonal
    is perfect calibration. ``curves``: :func:`histoviz.evaluation.calibration.grade_calibration`."""
    import plotly.graph_objects as go

    fig = go.Figure()
    _diagonal(fig)
    shown = [v for v in views if v in set(curves["view"])]
    for v, col in zip(shown, _palette(len(shown))):
        d = curves[curves["view"] == v]
        fig.add_trace(go.Scatter(
            x=d["predicted"], y=d["observed"], mode="lines+markers", name=v, line={"color": col},
            marker={"size": 4 + 10 * np.sqrt(d["count"] / max(d["count"].max(), 1))},
            error_y={"type": "data", "symmetric": False, "array": (d["upper"] - d["observed"]).to_numpy(),
                     "arrayminus": (d["observed"] - d["lower"]).to_numpy(), "thickness": 1},
            customdata=d[["count"]].to_numpy(),
            hovertemplate=f"{v}<br>predicted %{{x:.3f}}<br>observed %{{y:.3f}}<br>%{{customdata[0]}} patients"
                          "<extra></extra>"))
    fig.update_layout(title=title or None, xaxis_title="mean predicted probability", yaxis_title="observed frequency",
                      height=380, margin={**_MARGIN, "t": 40}, legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def survival_calibration_figure(table: pd.DataFrame, *, horizon: float, unit: str = "", title: str = "") -> go.Figure:
    """Predicted survival at ``horizon`` (mean per risk group) against the Kaplan-Meier estimate
    with its 95% interval; the diagonal is perfect calibration. ``table``:
    :func:`histoviz.evaluation.calibration.survival_calibration`."""
    import plotly.graph_objects as go

    fig = go.Figure()
    _diagonal(fig)
    when = f"{horizon:.3g} {unit}".strip()
    fig.add_trace(go.Scatter(
        x=table["predicted"], y=table["observed"], mode="markers+text", text=table["group"].astype(str),
        textposition="top center", marker={"size": 9, "color": "rgb(215,48,39)"}, name="risk group (1 = highest)",
        error_y={"type": "data", "symmetric": False, "array": (table["upper"] - table["observed"]).to_numpy(),
                 "arrayminus": (table["observed"] - table["lower"]).to_numpy(), "thickness": 1},
        customdata=table[["n", "events"]].to_numpy(),
        hovertemplate="group %{text}<br>predicted S(" + when + ") %{x:.3f}<br>Kaplan-Meier %{y:.3f}<br>"
                      "%{customdata[0]} patients, %{customdata[1]} events<extra></extra>"))
    fig.update_layout(title=title or None, xaxis_title=f"predicted survival at {when}",
                      yaxis_title=f"Kaplan-Meier survival at {when}", height=380, margin={**_MARGIN, "t": 40},
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(range=[-0.02, 1.02])
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def expression_heatmap_figure(measured: pd.DataFrame, predicted: pd.DataFrame, *, patients: Sequence[str],
                              genes: Sequence[str], limit: float = 3.0, title: str = "") -> go.Figure:
    """Patients (rows) x genes (columns), measured beside predicted, in one (clustered) order and
    one diverging colour scale clipped at ``±limit`` (values on the run's standardised scale)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows, cols = [str(p) for p in patients], [str(g) for g in genes]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("measured", "predicted (held out)"), shared_yaxes=True,
                        horizontal_spacing=0.03)
    for j, (name, m) in enumerate((("measured", measured), ("predicted", predicted))):
        z = m.reindex(index=rows, columns=cols).to_numpy(np.float64)
        fig.add_trace(go.Heatmap(
            z=z, x=cols, y=rows, zmin=-limit, zmax=limit, zmid=0.0, colorscale="RdBu_r", showscale=j == 1,
            colorbar={"title": {"text": "z (training-fold scale)", "side": "right"}},
            hovertemplate="patient %{y}<br>%{x}: " + name + " %{z:.2f}<extra></extra>", hoverongaps=False),
            row=1, col=j + 1)
    fig.update_yaxes(showticklabels=len(rows) <= 60, autorange="reversed")
    fig.update_xaxes(tickangle=-60, showticklabels=len(cols) <= 80)
    fig.update_layout(title=title or None, height=max(320, min(900, 14 * len(rows) + 160)),
                      margin={**_MARGIN, "t": 50})
    return fig


# ------------------------------------------------------------------------------------------------
# a slide
# ------------------------------------------------------------------------------------------------
def hover_map_figure(thumbnail: np.ndarray | None, layout: PatchLayout, mv: MapValues, slide_dimensions: Sequence[int], *,
                     opacity: float = 0.6, contrast_limits: Sequence[float] | None = None,
                     colormap: str | None = None) -> go.Figure:
    """The map over the slide thumbnail, in level-0 pixel coordinates, with the value (and its
    unit) or the class name of the patch under the cursor, and a colour bar with the unit.

    Parameters
    ----------
    thumbnail
        ``(h, w, 3)`` uint8 thumbnail of the whole slide (``None``: a blank background).
    layout, mv
        :class:`~histoviz.viz.maps.PatchLayout` and :class:`~histoviz.viz.maps.MapValues`.
    slide_dimensions
        Level-0 ``(width, height)``.
    """
    import plotly.graph_objects as go

    from histoviz.viz.colors import category_colors

    w0, h0 = (float(v) for v in slide_dimensions[:2])
    fig = go.Figure()
    if thumbnail is not None:
        th, tw = thumbnail.shape[:2]
        dx, dy = w0 / tw, h0 / th  # x0 / y0 are pixel centres
        fig.add_trace(go.Image(z=thumbnail, x0=dx / 2, dx=dx, y0=dy / 2, dy=dy, hoverinfo="skip"))
    c = float(layout.cell_size)
    ox, oy = layout.origin
    xs = ox + c * (np.arange(layout.shape[1]) + 0.5)
    ys = oy + c * (np.arange(layout.shape[0]) + 0.5)
    lookup = layout.lookup
    if mv.categorical:
        cats = list(mv.categories)
        raster = layout.raster(np.where(mv.values >= 0, mv.values, np.nan).astype(np.float32))
        names = np.array([*cats, ""], dtype=object)
        codes = np.where(np.isfinite(raster), np.nan_to_num(raster, nan=len(cats)), len(cats)).astype(int)
        text = names[codes]
        cols = [_rgb(cc) for cc in category_colors(max(len(cats), 1))]
        k = max(len(cats), 1)
        scale = []
        for i, col in enumerate(cols[:k]):
            scale += [[i / k, col], [(i + 1) / k, col]]
        fig.add_trace(go.Heatmap(
            z=raster, x=xs, y=ys, zmin=-0.5, zmax=k - 0.5, colorscale=scale, opacity=opacity, text=text,
            customdata=lookup, hovertemplate="patch %{customdata}<br>%{text}<extra>" + mv.label + "</extra>",
            colorbar={"title": {"text": mv.label, "side": "right"}, "tickvals": list(range(k)), "ticktext": cats}))
    else:
        raster = layout.raster(mv.values)
        lo, hi = contrast_limits if contrast_limits is not None else mv.contrast_limits
        unit = f" {mv.unit}" if mv.unit else ""
        fig.add_trace(go.Heatmap(
            z=raster, x=xs, y=ys, zmin=float(lo), zmax=float(hi), colorscale=_plotly_scale(colormap or mv.colormap),
            opacity=opacity, customdata=lookup, hoverongaps=False,
            hovertemplate="patch %{customdata}<br>" + mv.label + " = %{z:.3g}" + unit + "<extra></extra>",
            colorbar={"title": {"text": f"{mv.label}" + (f" ({mv.unit})" if mv.unit else ""), "side": "right"}}))
    fig.update_xaxes(range=[0, w0], showgrid=False, visible=False, constrain="domain")
    fig.update_yaxes(range=[h0, 0], showgrid=False, visible=False, scaleanchor="x")
    fig.update_layout(margin={"l": 0, "r": 0, "t": 30, "b": 0}, height=520, dragmode="pan",
                      plot_bgcolor="white")
    return fig


def _plotly_scale(name: str) -> Any:
    """A matplotlib-style colormap name as a plotly colorscale (sampled from histoviz's LUT)."""
    from histoviz.viz.colors import colormap_lut

    try:
        lut = colormap_lut(name, 11)
    except ValueError:  # not a matplotlib name: plotly's own scale of that name
        return name or "Viridis"
    return [[i / 10, _rgb(lut[i])] for i in range(11)]
