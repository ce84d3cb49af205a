"""Core engine benchmark: tile reads, embedding overhead, memory, tissue mask + grid.

Every number is a ratio against a reference measured in the same run:

1. tile reads: histoviz's DataLoader path (OpenSlide backend, 1 and 2 workers) and the path
   that decodes the slide's own JPEG tiles, against a bare ``OpenSlide.read_region`` loop over
   the same 224-px tiles (targets: >= 0.9x with 1 worker, >= 1.7x with 2, >= 2x tile decoding);
2. ``embed_slide`` against the bare encoder forward on preloaded tensors (target >= 0.85x);
3. peak memory embedding a 100k-tile virtual slide vs a 10k-tile one (target <= 2 GB, flat);
4. tissue mask + grid for a 100k x 100k px slide (target <= 1 s).

Usage: ``python bench/bench_core.py [--out bench/results] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import VirtualSlide, compare, write_result  # noqa: E402


def make_svs_like(path: Path, side: int, src: Path) -> Path:
    """An Aperio-style JPEG-tiled TIFF (240-px tiles, 'Aperio' description) from real H&E."""
    import tifffile

    from histoviz.io import open_slide

    base = open_slide(src).read_region((0, 0), 0, (2220, 2967))[:2880, :2160]
    reps = (-(-side // base.shape[0]), -(-side // base.shape[1]), 1)
    big = np.tile(base, reps)[:side, :side]
    desc = f"Aperio Image Library v12.0.0 \n{side}x{side} [0,0 {side}x{side}] (240x240) JPEG/RGB Q=70|AppMag = 20|MPP = 0.5"
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        tw.write(big, tile=(240, 240), compression="jpeg", compressionargs={"level": 70}, photometric="rgb", description=desc, metadata=None)
        tw.write(big[::4, ::4].copy(), tile=(240, 240), compression="jpeg", compressionargs={"level": 70}, photometric="rgb",
                 description=f"Aperio Image Library v12.0.0 \n{side}x{side} -> {side // 4}x{side // 4}", metadata=None)
    return path


def bench_reads(slide: Path, n_max: int) -> dict:
    import openslide
    import torch
    from torch.utils.data import DataLoader

    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.tiling.dataset import TileBatchIterable, TileDataset, tile_collate

    torch.set_num_threads(1)
    r_os = open_slide(slide, tile_decode=False)
    grid = make_tile_grid(r_os, TilingConfig(min_tissue_fraction=0.0, max_artifact_fraction=1.0))
    grid = grid.select(np.arange(min(n_max, len(grid))))
    coords = grid.coords
    n = len(coords)

    def bare():
        osr = openslide.OpenSlide(str(slide))
        for x, y in coords:
            np.asarray(osr.read_region((int(x), int(y)), 0, (224, 224)).convert("RGB"))
        osr.close()

    def loader(make_reader, workers, batched, threads=1):
        def run():
            reader = make_reader()  # cold caches every repetition, like the bare loop
            k = 0
            for x, _ in _dl(reader, workers, batched, threads):
                k += len(x)
            assert k == n, (k, n)

        return run

    def _dl(reader, workers, batched, threads=1):
        if batched:
            ds = TileBatchIterable(reader, grid, 64, threads=threads)
            dl = DataLoader(ds, batch_size=None, num_workers=workers,
                            prefetch_factor=4 if workers else None)
        else:
            ds = TileDataset(reader, grid)
            dl = DataLoader(ds, batch_size=64, num_workers=workers, collate_fn=tile_collate,
                            prefetch_factor=4 if workers else None)
        return dl

    out = {"slide": slide.name, "n_tiles": n}
    assert getattr(open_slide(slide), "tile_decode", False), "tile decoding path not active"

    def os_reader():
        return open_slide(slide, tile_decode=False)

    def fast_reader():
        return open_slide(slide)

    cases = {
        "openslide_backend_in_process": (os_reader, 0, True),
        "openslide_backend_1_worker": (os_reader, 1, True),
        "openslide_backend_2_workers": (os_reader, 2, True),
        "openslide_backend_2_threads": (os_reader, 0, True, 2),
        "openslide_backend_1_worker_2_threads": (os_reader, 1, True, 2),
        "openslide_backend_2_workers_2_threads": (os_reader, 2, True, 2),
        "tile_decode_2_threads": (fast_reader, 0, True, 2),
        "openslide_tiledataset_1_worker": (os_reader, 1, False),
        "tile_decode_in_process": (fast_reader, 0, True),
        "tile_decode_1_worker": (fast_reader, 1, True),
        "tile_decode_2_workers": (fast_reader, 2, True),
    }
    times = compare({"bare": bare, **{k: loader(*v) for k, v in cases.items()}}, 3)
    t_bare = times.pop("bare")
    out["bare_openslide_tiles_per_s"] = n / t_bare
    for name, t in times.items():
        out[f"{name}_tiles_per_s"] = n / t
        out[f"{name}_ratio"] = t_bare / t
    return out


def bench_embed(slide: Path, n_tiles: int, encoder_name: str, repeats: int = 3) -> dict:
    import torch

    from histoviz.features import EmbedStats, create_encoder, embed_slide
    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.tiling.dataset import read_tile

    torch.set_num_threads(2)
    reader = open_slide(slide)
    grid = make_tile_grid(reader, TilingConfig(min_tissue_fraction=0.0, max_artifact_fraction=1.0))
    grid = grid.select(np.arange(min(n_tiles, len(grid))))
    enc = create_encoder(encoder_name, pretrained=False)  # throughput does not depend on weights
    nhwc = torch.from_numpy(np.stack([read_tile(reader, grid, i) for i in range(len(grid))]))
    bs = 64

    def bare(tiles):
        def run():
            with torch.inference_mode():
                for s in range(0, len(tiles), bs):
                    enc(tiles[s : s + bs])

        return run

    # the reference is the faster of the two memory layouts (channels-last is what the loader
    # yields and what oneDNN convolutions prefer on CPU)
    layouts = {"channels_first": nhwc.permute(0, 3, 1, 2).contiguous(), "channels_last": nhwc.permute(0, 3, 1, 2)}
    with torch.inference_mode():
        enc(layouts["channels_last"][:8])  # warm-up
    st = EmbedStats()
    times = compare({**{k: bare(v) for k, v in layouts.items()},
                     "embed": lambda: embed_slide(reader, enc, grid, batch_size=bs, num_workers=1, device="cpu", stats=st)}, repeats)
    t_embed = times.pop("embed")
    t_layout = times
    t_bare = min(t_layout.values())
    return {"encoder": encoder_name, "n_tiles": len(grid), "bare_forward_tiles_per_s": len(grid) / t_bare,
            "bare_forward_tiles_per_s_by_layout": {k: len(grid) / v for k, v in t_layout.items()},
            "embed_slide_tiles_per_s": len(grid) / t_embed, "ratio": t_bare / t_embed}


_MEM_CHILD = r"""
import resource, sys, json, time, torch, numpy as np
sys.path.insert(0, {root!r})
from bench._common import VirtualSlide
from histoviz.features import embed_slide
from histoviz.tiling import TilingConfig, make_tile_grid
torch.set_num_threads(2)

class Null(torch.nn.Module):
    # cheap stand-in encoder with a realistic output width: the pipeline, not the model, is measured
    name, embed_dim, weights_source = "null1280", 1280, "none"
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 1280)
    def forward(self, x):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x.float(), 8).flatten(1))

side = {side}
r = VirtualSlide(side, side)
g = make_tile_grid(r, TilingConfig(min_tissue_fraction=0.0))
t = time.perf_counter()
embed_slide(r, Null(), g, out={out!r}, batch_size=256, num_workers=0)
# VmHWM: this process's own peak RSS (ru_maxrss would inherit the parent's peak across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"n_tiles": len(g), "seconds": time.perf_counter() - t, "peak_rss_mb": int(hwm) / 1024}}))
"""


def bench_memory(sides: list[int]) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for side in sides:
            code = _MEM_CHILD.format(root=root, side=side, out=f"{d}/v{side}.h5")
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            res[str(side)] = json.loads(p.stdout.strip().splitlines()[-1])
    return res


def bench_mask(side: int) -> dict:
    from histoviz.tiling import make_tile_grid

    r = VirtualSlide(side, side)
    make_tile_grid(r)  # warm imports
    times = []
    for _ in range(3):
        r = VirtualSlide(side, side)
        t = time.perf_counter()
        g = make_tile_grid(r)
        times.append(time.perf_counter() - t)
    return {"slide_px": side, "n_tiles": len(g), "seconds": min(times)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="smallest size: every code path, no meaningful numbers (CI)")
    ap.add_argument("--only", default="reads,embed,memory,mask")
    ap.add_argument("--side", type=int, default=None, help="side of the read/embed test slide")
    a = ap.parse_args()
    only = set(a.only.split(","))
    root = Path(__file__).resolve().parents[1]
    svs = root / "sample_data" / "real" / "CMU-1-Small-Region.svs"
    result: dict = {"targets": {"read_1_worker": 0.9, "read_2_workers": 1.7, "tile_decode": 2.0,
                                "embed_ratio": 0.85, "peak_rss_mb": 2048, "mask_grid_s": 1.0}}
    with tempfile.TemporaryDirectory() as d:
        side = a.side or (1500 if a.smoke else 6000 if a.quick else 16000)
        big = make_svs_like(Path(d) / "big.svs", side, svs)
        if "reads" in only:
            n_max = 100 if a.smoke else 1500 if a.quick else 5000
            print(f"[reads] Aperio-style SVS {side}x{side}, JPEG 240-px tiles, {n_max} tiles", flush=True)
            result["reads"] = bench_reads(big, n_max)
            result["reads_cmu_small_region"] = bench_reads(svs, n_max)
            for k, v in result["reads"].items():
                print(f"  {k}: {v:.2f}" if isinstance(v, float) else f"  {k}: {v}")
        if "embed" in only:
            print("[embed] embed_slide vs bare forward", flush=True)
            reps = 1 if a.smoke else 3
            result["embed"] = [bench_embed(big, 16 if a.smoke else 128 if a.quick else 384, "efficientnet-lite0", reps),
                               bench_embed(big, 32 if a.smoke else 512 if a.quick else 2048, "morphology", reps)]
            for e in result["embed"]:
                print(f"  {e['encoder']}: bare {e['bare_forward_tiles_per_s']:.1f} tiles/s, embed_slide "
                      f"{e['embed_slide_tiles_per_s']:.1f} tiles/s, ratio {e['ratio']:.3f}")
    if "memory" in only:
        print("[memory] peak RSS embedding virtual slides", flush=True)
        sides = [1120, 2240] if a.smoke else [11200, 22400] if a.quick else [22400, 70000]
        result["memory"] = bench_memory(sides)
        for k, v in result["memory"].items():
            print(f"  {k}px: {v['n_tiles']} tiles, peak {v['peak_rss_mb']:.0f} MB, {v['seconds']:.0f} s")
    if "mask" in only:
        print("[mask] tissue mask + grid, 100k x 100k px", flush=True)
        result["mask_grid"] = bench_mask(10_000 if a.smoke else 100_000)
        print(f"  {result['mask_grid']['n_tiles']} tiles in {result['mask_grid']['seconds']:.3f} s")
    write_result(a.out, "core" if only == {"reads", "embed", "memory", "mask"} else "core_" + "_".join(sorted(only)), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
