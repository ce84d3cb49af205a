"""Run every ``bench/bench_*.py`` script; each writes ``<out>/<name>.json``.

Usage: ``python -m bench [--out bench/results] [--only core,training] [--quick | --smoke]``
(``--smoke``: every script at its smallest size, so CI runs them all and none rots unseen).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--only", default="", help="comma-separated names (core, training, overlay, gpu)")
    ap.add_argument("--quick", action="store_true", help="smaller workloads")
    ap.add_argument("--smoke", action="store_true", help="smallest workloads: every code path, numbers meaningless")
    a = ap.parse_args()
    here = Path(__file__).parent
    scripts = sorted(here.glob("bench_*.py"))
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    rc = 0
    for s in scripts:
        name = s.stem.removeprefix("bench_")
        if only and name not in only:
            continue
        if name == "gpu" and not only:
            continue  # needs a CUDA machine: run explicitly with --only gpu
        print(f"\n=== {name} ===", flush=True)
        cmd = [sys.executable, str(s), "--out", a.out] + (["--smoke"] if a.smoke else ["--quick"] if a.quick else [])
        r = subprocess.run(cmd, check=False)
        rc = rc or r.returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
