"""README "Your own cohort": the commands of ``docs/own_cohort.py`` and what they printed."""

from __future__ import annotations

from typing import Any


def _run(data: dict[str, Any], key: str) -> dict[str, Any]:
    return next(r for r in data["runs"] if r["key"] == key)


def _block(r: dict[str, Any], keep: int | None = None) -> str:
    lines = r["stdout"].splitlines()
    if keep is not None and len(lines) > keep:
        lines = [*lines[:keep], "..."]
    return "\n".join([f"$ {r['command']}", *lines])


def render_import(data: dict[str, Any]) -> str:
    """The import command and its summary."""
    r = _run(data, "import")
    return "```\n" + _block(r) + f"\n```\n\n({r['seconds']} s for {data['slides']['found']} slide files.)"


def render_train(data: dict[str, Any]) -> str:
    """The three train commands and the tables they printed (the legend line once)."""
    out = []
    for k in ("train_omics", "train_grade", "train_survival"):
        r = _run(data, k)
        lines = [ln for ln in r["stdout"].splitlines() if not ln.startswith("mean ± std over folds")]
        out.append("\n".join([f"$ {r['command']}", *lines]))
    legend = next((ln for r in data["runs"] for ln in r["stdout"].splitlines()
                   if ln.startswith("mean ± std over folds")), "")
    secs = ", ".join(f"{_run(data, k)['seconds']:.0f} s" for k in ("train_omics", "train_grade", "train_survival"))
    g, s = data["metrics"]["grade"], data["metrics"]["survival"]
    return ("```\n" + "\n\n".join(out) + "\n```\n\n" + legend + f" ({secs}; {data['machine']}.)\n\n"
            "Each config the import wrote passed the preflight (\"ready\" above: columns, ids, fold sizes and "
            "every fold's conformal calibration split, counted as the method calibrates). "
            f"On this small cohort the survival model ranks patients "
            f"{'barely above chance' if s['c_index'][0] < 0.6 else 'above chance'} (c-index "
            f"{s['c_index'][0]:.3f} ± {s['c_index'][1]:.3f}) and " + _survival_interval(s) + ". "
            f"Grade: macro AUC {g['auc_macro'][0]:.3f} ± {g['auc_macro'][1]:.3f}; conformal sets of "
            f"{g['set_size'][0]:.2f} grades on average cover {g['coverage'][0]:.3f}.")


def _survival_interval(s: dict[str, Any]) -> str:
    if "lower_bound" in s:  # a conformal lower bound of survival time (months), censored patients included
        return (f"its 90% lower bound of survival time averages {s['lower_bound'][0]:.1f} months (the interval from "
                f"it to the horizon {s['interval_width'][0]:.1f} months wide); it covers "
                f"({s['coverage'][0]:.3f}, censoring-weighted) by being low, and says so")
    return (f"its 90% risk intervals span {s['interval_width'][0]:.2f} of the 4 time bins: they cover "
            f"({s['coverage'][0]:.3f}) by being nearly uninformative, and say so")


def render_predict(data: dict[str, Any]) -> str:
    """The predict command, its summary and a few rows of predictions.csv."""
    r = _run(data, "predict")
    from gen_readme import md_table

    cols = data["predictions_columns"]

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)

    table = md_table(cols, [[cell(x.get(c)) for c in cols] for x in data["predictions_head"]])
    return ("```\n" + _block(r) + f"\n```\n\n(exit status {r['returncode']}: the truncated download failed and was "
            f"reported; {r['seconds']:.0f} s.) A few rows of `predictions/predictions.csv` (a slide "
            "`in_training_cohort: False` is one no model saw: the normal-tissue and frozen slides the import "
            "left out):\n\n" + table)
