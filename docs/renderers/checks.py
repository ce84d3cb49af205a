"""README: small real-data checks (``docs/checks.py``): Rossi survival and the shipped Visium folder."""

from __future__ import annotations

from typing import Any

from gen_readme import pm


def render_rossi(data: dict[str, Any]) -> str:
    """The discrete-time survival model against lifelines' Cox model on Rossi."""
    r = data["rossi"]
    return (f"on lifelines' Rossi data ({r['patients']} patients, {r['events']} re-arrests; one \"patch\" per "
            f"patient, its covariates; `python docs/checks.py`) the discrete-time model's held-out c-index is "
            f"{r['discrete_time_mean']:.3f} against Cox's {r['cox_mean']:.3f} over the same {r['folds']} folds "
            f"(paired difference {pm(r['difference_mean'], r['difference_sd'])}, mean ± SD over folds; "
            "4 time bins and early stopping on 40 validation patients cost a little).")


def render_visium(data: dict[str, Any]) -> str:
    """Ridge on real features of the shipped Visium spots against a permutation control."""
    v = data["visium"]
    m, s = v["measured_top10"], v["simulated"]

    def verdict(d: dict[str, float]) -> str:
        return "above" if d["observed"] > d["null_q95"] and d["p"] <= 0.05 else "**not** above"

    return (f"On the shipped Visium sample ({v['spots']} spots, about {v['mean_counts_per_spot']:.0f} counts per "
            f"spot; `python docs/checks.py`) ridge on {v['encoder']} features predicts the 10 most expressed "
            f"genes {verdict(m)} a permutation control (mean Pearson {m['observed']:.3f} vs null 95th percentile "
            f"{m['null_q95']:.3f}, p = {m['p']:.3g}, {m['n_perm']:.0f} permutations); expression simulated from the "
            f"haematoxylin density of the same real patches is {verdict(s)} it ({s['observed']:.3f} vs "
            f"{s['null_q95']:.3f}, p = {s['p']:.3g}), which is what `tests/test_spatial_real.py` asserts.")
