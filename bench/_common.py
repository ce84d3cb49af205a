"""Helpers shared by the benchmarks: result files, timing, a procedural virtual slide."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from histoviz.io.slide import SlideMeta, SlideReader


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "machine": platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_result(out_dir: str | os.PathLike, name: str, result: dict[str, Any]) -> Path:
    """Write ``<out>/<name>.json`` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = out / f"{name}.json"
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **result}
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float))
    tmp.replace(p)
    print(f"-> {p}")
    return p


def best_of(fn, repeats: int = 3) -> float:
    """Minimum wall time of ``repeats`` calls (robust to noise on shared machines)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def compare(fns: dict[str, Any], repeats: int = 3) -> dict[str, float]:
    """Best wall time of each callable, run round-robin so machine noise hits all alike."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


class VirtualSlide(SlideReader):
    """A procedural slide of any size: an elliptical tissue region filled with a texture.

    Pixels are generated on demand (no file, no memory proportional to the slide), with a
    2x pyramid, so tiling and embedding of very large slides can be measured.
    """

    backend = "virtual"

    def __init__(self, width: int, height: int, mpp: float = 0.5, seed: int = 0) -> None:
        levels, ds = [], 1
        while True:
            levels.append((max(1, width // ds), max(1, height // ds)))
            if max(levels[-1]) < 1024:
                break
            ds *= 2
        meta = SlideMeta(path=None, level_dimensions=tuple(levels),
                         level_downsamples=tuple(float(2**i) for i in range(len(levels))), mpp=mpp,
                         vendor="virtual", backend="virtual", mpp_source="given")
        super().__init__(meta, slide_id=f"virtual{width}x{height}")
        rng = np.random.default_rng(seed)
        tex = np.empty((512, 512, 3), np.uint8)
        tex[..., 0] = rng.integers(150, 230, (512, 512))
        tex[..., 1] = rng.integers(60, 140, (512, 512))
        tex[..., 2] = rng.integers(140, 210, (512, 512))
        self._tex = tex
        self._w, self._h = width, height

    def _read_level(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        reps = (-(-(y % 512 + h) // 512), -(-(x % 512 + w) // 512), 1)
        tex = np.tile(self._tex, reps) if reps != (1, 1, 1) else self._tex
        out = tex[y % 512 : y % 512 + h, x % 512 : x % 512 + w].copy()
        ys = ((np.arange(y, y + h, dtype=np.float32) * ds - self._h / 2) / (self._h * 0.42))[:, None]
        xs = ((np.arange(x, x + w, dtype=np.float32) * ds - self._w / 2) / (self._w * 0.42))[None, :]
        out[xs**2 + ys**2 >= 1.0] = 245
        return out

    def reopen_args(self) -> dict[str, Any]:
        """Not reopenable from a path; forked DataLoader workers inherit the object."""
        return {"path_or_array": None, "mpp": self.mpp, "slide_id": self.slide_id}
