"""Spot-level evaluation: per-gene correlation across a held-out sample's spots, gene sets,
gene-gene correlation preservation, the model x gene-set table and paired differences.

Protocol (CMRCNet / HEST-Benchmark, with the gene sets chosen without the test sample):

- one held-out **sample** is the unit: for each gene, Pearson (and Spearman) between measured
  and predicted expression **across the spots of that sample**, plus the mean squared error;
- a gene set's value for the sample is the mean over its genes (``hvg50``: the 50 most
  variable genes of the training spots; ``heg50``: the 50 highest mean expression on training
  spots; ``markers``: the configured marker list);
- gene-gene correlation preservation: Pearson between the upper triangles of the measured and
  the predicted gene-gene correlation matrices of the sample (per set; ``axis="gene-gene"``);
- the table reports mean +- SD **over held-out samples** (``n`` samples); paired differences
  between two models are taken per held-out sample, then summarised (mean, SD, the Nadeau-Bengio
  corrected resampled t 95% interval over the leave-one-out folds, how many samples the first
  model wins, an exploratory Wilcoxon signed-rank p when there are >= 5 samples).

A correlation is undefined (NaN) for a constant prediction (the training-mean control) or a
gene not expressed in the sample; summaries average the defined values and count the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import ConfigError, DataError

__all__ = [
    "SpotEvalSpec",
    "format_spot_table",
    "gene_correlation_preservation",
    "paired_differences",
    "permutation_check",
    "spot_metrics",
    "spot_table",
]


@dataclass(frozen=True)
class SpotEvalSpec:
    """``evaluation.spots`` of an experiment config.

    Attributes
    ----------
    n_hvg, n_heg
        Sizes of the HVG and HEG evaluation sets (paper: 50 each).
    top_k
        Retrieval sizes evaluated for retrieval models (CMRCNet-50 / -500); each gets its own
        table row (``<label>-<k>``); empty: the model's own ``top_k``.
    compare
        Other registered models run on the same folds: names or ``{name, params, label}``.
    controls
        ``mean`` (training-mean predictor) and / or ``shuffled`` (the main model trained on
        expression permuted across all training spots).
    encoders
        HEST-Benchmark encoder comparison: standardise + PCA-256 + ridge on each encoder's
        features (``ridge[<encoder>]`` rows).
    split
        ``patient`` (samples of one patient held out together), ``sample`` (leave one sample
        out) or ``auto`` (patient when patients are known).
    min_n
        Minimum spots for a defined correlation.
    """

    n_hvg: int = 50
    n_heg: int = 50
    top_k: tuple[int, ...] = (50, 500)
    compare: tuple[Any, ...] = ()
    controls: tuple[str, ...] = ("mean", "shuffled")
    encoders: tuple[str, ...] = ()
    split: str = "auto"
    min_n: int = 3

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "evaluation.spots") -> SpotEvalSpec:
        """Strictly validated spec (unknown keys are errors)."""
        if d is None:
            return cls()
        if isinstance(d, SpotEvalSpec):
            return d
        from histoviz.strict import strict_keys

        kw = strict_keys(cls, d, where)
        for k in ("top_k", "compare", "controls", "encoders"):
            if k in kw:
                v = kw[k]
                kw[k] = tuple(v) if isinstance(v, (list, tuple)) else (v,)
        for k in ("n_hvg", "n_heg", "min_n"):
            if k in kw and (isinstance(kw[k], bool) or not isinstance(kw[k], int) or kw[k] < 1):
                raise ConfigError(f"{where}.{k}: expected a positive integer, got {kw[k]!r}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in kw.get("top_k", ())):
            raise ConfigError(f"{where}.top_k: positive integers expected, got {list(kw['top_k'])}")
        bad_c = [c for c in kw.get("controls", ()) if c not in ("mean", "shuffled")]
        if bad_c:
            raise ConfigError(f"{where}.controls: unknown {bad_c}; use mean and/or shuffled")
        if kw.get("split", "auto") not in ("auto", "sample", "patient"):
            raise ConfigError(f"{where}.split: must be auto, sample or patient, got {kw['split']!r}")
        for i, c in enumerate(kw.get("compare", ())):
            if isinstance(c, str):
                continue
            if not isinstance(c, Mapping) or "name" not in c or set(c) - {"name", "params", "label"}:
                raise ConfigError(f"{where}.compare[{i}]: a model name or {{name, params, label}}, got {c!r}")
        return cls(**kw)

    def compare_models(self) -> list[dict[str, Any]]:
        """``[{name, params, label}]`` of the comparison models."""
        out = []
        for c in self.compare:
            if isinstance(c, str):
                out.append({"name": c, "params": {}, "label": c})
            else:
                out.append({"name": c["name"], "params": dict(c.get("params") or {}), "label": c.get("label") or c["name"]})
        return out


def gene_correlation_preservation(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson between the upper triangles of the gene-gene correlation matrices of measured and
    predicted expression (genes with a constant column on either side are left out; NaN with
    fewer than 3 genes left)."""
    yt, yp = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    ok = (yt.std(axis=0) > 1e-12) & (yp.std(axis=0) > 1e-12)
    if ok.sum() < 3 or len(yt) < 3:
        return float("nan")
    ct = np.corrcoef(yt[:, ok], rowvar=False)
    cp = np.corrcoef(yp[:, ok], rowvar=False)
    iu = np.triu_indices(int(ok.sum()), k=1)
    a, b = ct[iu], cp[iu]
    if a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spot_metrics(y_true: np.ndarray, y_pred: np.ndarray, genes: Sequence[str], sets: Mapping[str, Sequence[str]],
                 *, min_n: int = 3) -> pd.DataFrame:
    """Long metric rows of one held-out sample (``target, metric, value, n, axis, subset``).

    Per gene: ``pearson``, ``spearman``, ``mse`` across the sample's spots (``axis="per-target"``),
    once for ``subset="all"`` and once for every gene set containing the gene; per set (and all):
    ``gene_corr_preservation`` (``target="all"``, ``axis="gene-gene"``).
    """
    from histoviz.evaluation.metrics import per_target_correlation

    yt, yp = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if yt.shape != yp.shape or yt.shape[1] != len(genes):
        raise DataError(f"spot metrics: shapes {yt.shape} / {yp.shape} for {len(genes)} genes")
    pt = per_target_correlation(yt, yp, targets=list(genes), min_n=min_n)
    # a prediction constant up to float32 rounding (e.g. the mean of all training spots) has no
    # correlation: do not correlate rounding noise
    flat = yp.std(axis=0) <= 1e-6 * np.maximum(np.abs(yp).max(axis=0), 1e-12)
    pt.loc[flat, ["pearson", "spearman"]] = np.nan
    mse = ((yt - yp) ** 2).mean(axis=0)
    n = len(yt)
    base = pd.DataFrame({"target": list(map(str, genes)), "pearson": pt["pearson"].to_numpy(),
                         "spearman": pt["spearman"].to_numpy(), "mse": mse})
    long = base.melt(id_vars="target", var_name="metric", value_name="value")
    long["n"], long["axis"] = n, "per-target"
    parts = [long.assign(subset="all")]
    pos = {g: i for i, g in enumerate(map(str, genes))}
    gg = [{"target": "all", "metric": "gene_corr_preservation", "value": gene_correlation_preservation(yt, yp),
           "n": n, "axis": "gene-gene", "subset": "all"}]
    for name, gs in sets.items():
        members = [g for g in map(str, gs) if g in pos]
        if not members:
            continue
        parts.append(long[long["target"].isin(members)].assign(subset=name))
        idx = [pos[g] for g in members]
        gg.append({"target": "all", "metric": "gene_corr_preservation",
                   "value": gene_correlation_preservation(yt[:, idx], yp[:, idx]), "n": n, "axis": "gene-gene",
                   "subset": name})
    out = pd.concat([*parts, pd.DataFrame(gg)], ignore_index=True)
    return out[["target", "metric", "value", "n", "axis", "subset"]]


def per_sample(metrics: pd.DataFrame, metric: str = "pearson") -> pd.DataFrame:
    """``model, fold, subset, value, n_genes, n_undefined``: each held-out sample's mean over genes."""
    m = metrics[(metrics["metric"] == metric)].copy()
    for c in ("model", "subset", "axis"):
        m[c] = m[c].astype(str)
    g = m.groupby(["model", "subset", "fold"], sort=False)["value"]
    out = g.agg(value="mean", n_genes="size", n_defined="count").reset_index()
    out["n_undefined"] = out["n_genes"] - out["n_defined"]
    return out.drop(columns="n_defined")


def spot_table(metrics: pd.DataFrame, *, metric: str = "pearson", subsets: Sequence[str] | None = None,
               models: Sequence[str] | None = None) -> pd.DataFrame:
    """Model x gene set: ``mean``, ``std`` over held-out samples of the per-sample mean ``metric``.

    Returns a long frame ``model, subset, metric, mean, std, n_samples, n_genes, n_undefined``.
    """
    ps = per_sample(metrics, metric)
    if subsets is not None:
        ps = ps[ps["subset"].isin(list(subsets))]
    agg = ps.groupby(["model", "subset"], sort=False).agg(
        mean=("value", "mean"), std=("value", lambda s: s.std(ddof=1) if s.notna().sum() > 1 else np.nan),
        n_samples=("value", "size"), n_genes=("n_genes", "mean"), n_undefined=("n_undefined", "sum")).reset_index()
    agg.insert(2, "metric", metric)
    if models is not None:
        order = {m: i for i, m in enumerate(models)}
        agg = agg[agg["model"].isin(order)].assign(_o=agg["model"].map(order)).sort_values("_o", kind="mergesort")
        agg = agg.drop(columns="_o")
    return agg.reset_index(drop=True)


def paired_differences(metrics: pd.DataFrame, *, reference: str | None = None, metric: str = "pearson",
                       subsets: Sequence[str] | None = None) -> pd.DataFrame:
    """Per held-out sample differences ``model - reference`` of the per-sample mean ``metric``.

    Returns ``model, reference, subset, metric, mean_diff, std_diff (SD over samples), ci_low,
    ci_high, min_diff, max_diff, n_samples, n_better, wilcoxon_p`` (``reference=None``: every
    ordered pair of models). ``ci_low`` / ``ci_high``: the Nadeau-Bengio corrected resampled t
    95% interval over the leave-one-out folds (each fold trains on the other ``S - 1`` samples:
    ``n_test / n_train = 1 / (S - 1)``); the Wilcoxon p over samples is exploratory.
    """
    from scipy.stats import wilcoxon

    from histoviz.evaluation.resampled import corrected_resampled_t

    ps = per_sample(metrics, metric)
    if subsets is not None:
        ps = ps[ps["subset"].isin(list(subsets))]
    wide = ps.pivot_table(index=["subset", "fold"], columns="model", values="value", aggfunc="first", sort=False)
    models = list(wide.columns)
    refs = [reference] if reference is not None else models
    rows = []
    for ref in refs:
        if ref not in wide.columns:
            continue
        for m in models:
            if m == ref:
                continue
            for subset, g in wide.groupby(level="subset", sort=False):
                d = (g[m] - g[ref]).dropna().to_numpy()
                if not len(d):
                    continue
                p = np.nan
                if len(d) >= 5 and np.any(d != 0):
                    p = float(wilcoxon(d).pvalue)
                n_all = len(g)  # held-out samples of this run = the samples cross-validated
                ci = corrected_resampled_t(d, n_test=1.0, n_train=max(n_all - 1, 1))
                rows.append({"model": m, "reference": ref, "subset": subset, "metric": metric,
                             "mean_diff": float(d.mean()), "std_diff": float(d.std(ddof=1)) if len(d) > 1 else np.nan,
                             "ci_low": ci.low, "ci_high": ci.high,
                             "min_diff": float(d.min()), "max_diff": float(d.max()), "n_samples": int(len(d)),
                             "n_better": int((d > 0).sum()), "wilcoxon_p": p})
    return pd.DataFrame(rows, columns=["model", "reference", "subset", "metric", "mean_diff", "std_diff", "ci_low",
                                       "ci_high", "min_diff", "max_diff", "n_samples", "n_better", "wilcoxon_p"])


def _cell(m: float, s: float) -> str:
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.3f}" + (f" ± {s:.3f}" if np.isfinite(s) else "")


def format_spot_table(metrics: pd.DataFrame, *, metric: str = "pearson", models: Sequence[str] | None = None,
                      subsets: Sequence[str] | None = None, reference: str | None = None) -> str:
    """The printed table: one row per model, one column per gene set (``mean ± SD`` over held-out
    samples), then the gene-gene correlation preservation and MSE of the HVG set, then the paired
    differences against ``reference`` (default: the first model)."""
    tab = spot_table(metrics, metric=metric, models=models)
    if tab.empty:
        return "(no rows)"
    order = list(dict.fromkeys(tab["subset"]))
    pref = [s for s in order if s.startswith("hvg")] + [s for s in order if s.startswith("heg")] + \
        [s for s in order if s == "markers"] + [s for s in order if s == "all"]
    cols = [s for s in pref if subsets is None or s in subsets]
    tab["cell"] = [_cell(a, b) for a, b in zip(tab["mean"], tab["std"])]
    wide = tab.pivot_table(index="model", columns="subset", values="cell", aggfunc="first", sort=False)[cols]
    wide.columns = [f"{c} {metric}" for c in cols]
    hv = next((s for s in cols if s.startswith("hvg")), cols[0])
    gg = spot_table(metrics[metrics["axis"] == "gene-gene"], metric="gene_corr_preservation")
    gg = gg[gg["subset"] == hv].set_index("model")
    wide[f"{hv} gene-gene r"] = [_cell(*gg.loc[m, ["mean", "std"]]) if m in gg.index else "" for m in wide.index]
    mse = spot_table(metrics, metric="mse")
    mse = mse[mse["subset"] == hv].set_index("model")
    wide[f"{hv} mse"] = [_cell(*mse.loc[m, ["mean", "std"]]) if m in mse.index else "" for m in wide.index]
    n = tab.groupby("model", sort=False)["n_samples"].max()
    wide.insert(0, "samples", n.reindex(wide.index).to_numpy())
    if models is not None:
        wide = wide.reindex([m for m in models if m in wide.index])
    lines = [wide.reset_index().to_string(index=False)]
    ref = reference or (models[0] if models else wide.index[0])
    pdiff = paired_differences(metrics, reference=ref, metric=metric, subsets=cols)
    if not pdiff.empty:
        pdiff = pdiff[pdiff["model"].isin(wide.index)]
        lines.append(f"paired differences vs {ref} (per held-out sample, {metric}; mean [95% CI, Nadeau-Bengio "
                     "corrected resampled t over the held-out samples]; Wilcoxon p exploratory):")
        show = pdiff.assign(diff=[f"{a:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else _cell(a, np.nan)
                                  for a, lo, hi in zip(pdiff["mean_diff"], pdiff["ci_low"], pdiff["ci_high"])],
                            better=[f"{b}/{n}" for b, n in zip(pdiff["n_better"], pdiff["n_samples"])],
                            p=[f"{v:.2g}" if np.isfinite(v) else "" for v in pdiff["wilcoxon_p"]])
        piv = show.pivot_table(index="model", columns="subset", values="diff", aggfunc="first", sort=False)
        piv = piv[[c for c in cols if c in piv.columns]]
        bet = show.pivot_table(index="model", columns="subset", values="better", aggfunc="first", sort=False)
        pv = show.pivot_table(index="model", columns="subset", values="p", aggfunc="first", sort=False)
        for c in list(piv.columns):
            piv[c] = piv[c] + " (" + bet[c] + " better" + np.where(pv[c] != "", ", p " + pv[c], "") + ")"
        lines.append(piv.reset_index().to_string(index=False))
    lines.append(f"mean ± SD over held-out samples of each sample's mean over the set's genes ({metric} across the "
                 "sample's spots); gene sets chosen on the training samples of each fold; n/a: undefined "
                 "(a constant prediction has no correlation).")
    return "\n".join(lines)


def permutation_check(x: np.ndarray, y: np.ndarray, *, n_perm: int = 200, n_folds: int = 5, n_components: int = 50,
                      seed: int = 0) -> dict[str, Any]:
    """Does ridge on spot features predict ``y`` across spots better than chance?

    K-fold cross-validation over spots (one sample): standardise + PCA (fitted on the training
    spots of the fold) + ridge (``RidgeCV`` with one leave-one-out-selected penalty per column);
    the score is the mean over columns of Pearson's r between held-out predictions and ``y``.
    The null: the same procedure on ``n_perm`` permutations of the rows of ``y`` (all fitted in
    the same multi-output solve, each column with its own penalty).

    Returns
    -------
    ``{"observed", "null_mean", "null_sd", "null_q95", "p", "n_spots", "n_targets", "n_perm"}``;
    ``p = (1 + #{null >= observed}) / (1 + n_perm)``.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n, g = y.shape
    rng = np.random.default_rng(seed)
    perms = [np.arange(n)] + [rng.permutation(n) for _ in range(n_perm)]
    yall = np.concatenate([y[p] for p in perms], axis=1)
    pred = np.zeros_like(yall)
    for tr, te in KFold(n_folds, shuffle=True, random_state=seed).split(x):
        sc = StandardScaler().fit(x[tr])
        pca = PCA(min(n_components, len(tr) - 1, x.shape[1]), random_state=0).fit(sc.transform(x[tr]))
        ztr, zte = pca.transform(sc.transform(x[tr])), pca.transform(sc.transform(x[te]))
        reg = RidgeCV(alphas=np.logspace(-2, 5, 15), alpha_per_target=True).fit(ztr, yall[tr])
        pred[te] = reg.predict(zte)
    from histoviz.evaluation.metrics import columnwise_pearson

    r = columnwise_pearson(yall, pred).reshape(len(perms), g)
    scores = np.nanmean(r, axis=1)
    obs, null = float(scores[0]), scores[1:]
    return {"observed": obs, "null_mean": float(np.mean(null)), "null_sd": float(np.std(null, ddof=1)),
            "null_q95": float(np.quantile(null, 0.95)), "p": float((1 + np.sum(null >= obs)) / (1 + n_perm)),
            "n_spots": int(n), "n_targets": int(g), "n_perm": int(n_perm)}
