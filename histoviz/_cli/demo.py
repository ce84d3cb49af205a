"""``histoviz demo | bench``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the demo and bench subcommands."""
    p = sub.add_parser("demo", help="run the main job end to end on the sample data")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--encoder", default="efficientnet-lite0",
                   help="patch encoder of the synthetic cohorts (default: pretrained EfficientNet-Lite0)")
    p.add_argument("--no-train", action="store_true", help="stop after embedding")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_demo)

    p = sub.add_parser("bench", help="run the benchmarks in bench/ (source checkout only)")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--only", default="")
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=_bench)


def _demo(a: argparse.Namespace) -> int:
    from histoviz.demo import run_demo

    run_demo(a.out, encoder=a.encoder, train=not a.no_train, progress=not a.no_progress)
    return 0


def _bench(a: argparse.Namespace) -> int:
    from histoviz.errors import HistovizError

    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "__main__.py").exists():
        raise HistovizError("benchmarks live in the source checkout (bench/); clone the repository")
    cmd = [sys.executable, "-m", "bench", "--out", a.out] + (["--only", a.only] if a.only else [])
    cmd += ["--quick"] if a.quick else []
    return subprocess.run(cmd, cwd=root, check=False).returncode
