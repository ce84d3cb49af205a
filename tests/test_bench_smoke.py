"""Every benchmark script runs at its smallest size (``--smoke``: every code path, tiny workloads)
and writes a result file with numbers in it, so none can rot unseen (``python -m bench --only core
--quick`` once stopped with a traceback nobody ran into). Speed itself is measured by the
benchmarks at their real sizes, never asserted here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py"))


def _numbers(x, path=""):
    """``(path, value)`` of every number in a JSON document."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, float(x)


#: scripts another test already runs at their smallest size
RUN_ELSEWHERE = {"precision": "tests/test_precision.py runs bench_precision at its smallest size"}


def _skip_reason(name: str) -> str | None:
    if name in RUN_ELSEWHERE:
        return RUN_ELSEWHERE[name]
    if name == "gpu":
        import torch

        if not torch.cuda.is_available():
            return "bench_gpu needs a CUDA device"
    return None


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_at_its_smallest_size(name, tmp_path):
    why = _skip_reason(name)
    if why:
        pytest.skip(why)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "HISTOVIZ_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "bench", "--only", name, "--smoke", "--out", str(tmp_path / "out")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-5000:])
    assert "Traceback" not in p.stderr, p.stderr[-5000:]
    results = sorted((tmp_path / "out").glob("*.json"))
    assert results, f"bench_{name} wrote no result file: {p.stdout[-2000:]}"
    for f in results:
        doc = json.loads(f.read_text())
        assert doc.get("benchmark") and doc.get("machine"), f
        nums = [(k, v) for k, v in _numbers(doc) if not k.startswith(".machine")]
        assert nums, f"{f.name}: no measured numbers"
        assert all(math.isfinite(v) or math.isnan(v) for _, v in nums)
        assert any(v > 0 for _, v in nums), f"{f.name}: every number is zero"
