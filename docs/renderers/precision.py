"""README "Benchmarks": reduced-precision CPU encoders (``bench/bench_precision.py``)."""

from __future__ import annotations

from typing import Any

from gen_readme import md_table, pm


def _down(d: dict[str, Any], how: str, p: str) -> str:
    return (f"r = {d[how + '_pearson_predictions']:.3f} with the fp32 model's predictions; Spearman vs "
            f"true grade {d[how + '_spearman_vs_grade']:.3f} (fp32 {d['spearman_vs_grade_fp32']:.3f}); "
            f"abs. error {p} - fp32 per slide "
            f"{pm(d[how + '_abs_error_paired_diff_mean'], d[how + '_abs_error_paired_diff_sd'])} (mean ± sd)")


def render(data: dict[str, Any]) -> str:
    """Speed, cosine on real tiles and the downstream change, per precision, as measured."""
    sp, cos, down = data["speed"], data["cosine_real_tiles"], data["downstream"]
    rows = []
    for p in data["precisions"]:
        c = cos.get(p)
        d = down.get(p)
        rows.append([
            p, f"{sp[p]['tiles_per_s']:.2f} tiles/s ({sp[p]['speedup_vs_fp32']:.2f}x)",
            "1 (reference)" if c is None else f"min {c['min']:.4f}, mean {c['mean']:.4f} ({c['n_tiles']} tiles)",
            "reference" if d is None else _down(d, "same", p),
            "" if d is None else (_down(d, "cross", p) + f"; change {d['cross_mean_abs_change_over_sd']:.2f} "
                                  "sd of the predictions"),
        ])
    n = next(iter(down.values()))["n_slides"] if down else 0
    m = data["machine"]
    return (
        f"Reduced precision on a CPU (`python bench/bench_precision.py`; {data['encoder']}, "
        f"{data['weights']}; {data['tiles']} real H&E tiles, batch {data['batch']}; "
        f"{m.get('cpus')} CPUs, {m.get('torch_threads')} torch threads, shared machine):\n\n"
        + md_table(["precision", "speed (vs fp32, same tiles)", "cosine to fp32, real tiles",
                    f"downstream, trained and applied at this precision ({n} synthetic slides; vs fp32 model)",
                    "fp32 model applied to these features (refused by `predict_slide`)"], rows)
    )
