"""``histoviz sweep``: a paper's claim along a generator knob (training/sweeps/*.yaml)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the sweep subcommand."""
    p = sub.add_parser("sweep", help="run a mechanism sweep (paired differences with corrected intervals along a "
                       "synthetic-generator knob, beside the knob's oracle)")
    p.add_argument("spec", type=Path, help="sweep file (training/sweeps/*.yaml)")
    p.add_argument("--out", required=True, type=Path, help="output folder (cells are kept there and resumed)")
    p.add_argument("--levels", nargs="*", default=None, help="only these level labels")
    p.add_argument("--repeats", type=int, default=None, help="cohorts per level (default: the file's)")
    p.add_argument("--results", type=Path, default=None,
                   help="also merge the results into this JSON (e.g. docs/results/sweeps.json) ...")
    p.add_argument("--figure-dir", type=Path, default=Path("docs/img"),
                   help="... and copy the plot there as sweep_<name>.png (with --results)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_sweep)


def _sweep(a: argparse.Namespace) -> int:
    from histoviz.training.sweep import load_sweep, publish_results, run_sweep

    spec = load_sweep(a.spec)
    cmd = f"histoviz sweep {shlex.quote(str(a.spec))} --out {shlex.quote(str(a.out))}" + (
        f" --repeats {a.repeats}" if a.repeats is not None else "") + (
        f" --levels {' '.join(shlex.quote(x) for x in a.levels)}" if a.levels else "")
    res = run_sweep(spec, a.out, levels=a.levels, repeats=a.repeats, progress=not a.no_progress, command=cmd)
    s = res.summary
    print(f"{spec.title}: {spec.claim}")
    o = res.results.get("oracle", [])
    if o:
        print(f"oracle ({spec.oracle_label}), mean over cohorts: "
              + ", ".join(f"{x['level_label']} {x['mean']:.3f}" for x in o if x["metric"] == "value"))
    for r in s.itertuples(index=False):
        print(f"  {spec.knob_label} = {r.level_label}: {r.comparison} {r.task} ({r.metric}) "
              f"{r.difference:+.3f} 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}] ({r.n_cohorts} cohorts x "
              f"{r.n_folds // max(r.n_cohorts, 1)} folds; {r.verdict})")
    print("95% CI: per cohort the Nadeau-Bengio corrected resampled t over folds, combined over the independent "
          "cohorts (Welch-Satterthwaite df).")
    print(f"-> {res.out_dir}/table.parquet, summary.csv, sweep.png ({res.seconds:.0f} s)")
    if a.results is not None:
        rf = publish_results(res, a.results, a.figure_dir, spec.name)
        print(f"-> {rf} ({spec.name}), {a.figure_dir}/sweep_{spec.name}.png")
    return 0
