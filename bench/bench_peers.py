"""Peers in the same run, cohort scaling, and a TCGA-scale estimate.

1. reads: the same 224-px tiles (level 0 of an Aperio-style JPEG SVS made from the CMU
   slide) read by a bare ``OpenSlide.read_region`` loop (the reference), tiffslide,
   TIAToolbox's ``WSIReader`` and histoviz (in process; through the OpenSlide backend with
   reader threads and DataLoader workers), round-robin, best of 3; ratios to the reference.
2. scaling: a synthetic cohort embedded (morphology encoder) by dask clusters of 1 and 2
   workers with one thread each, started and warmed before timing; ``t1 / t2`` against the
   linear 2.0 (target >= 0.9 x linear = 1.8).
3. estimate: hours for TCGA (11k slides x ~15k tiles) with ViT-L on 8 GPUs, from the
   reference GPU numbers (``bench/reference/gpu_h100.json``, measured on an H100 host), the
   reference host decode rates (``bench/reference/core_h100_host.json``) and this run's
   measurements; every input says where it was measured.

TIAToolbox 2.1 pins older torch/numpy/dask than histoviz uses, so it is not installed into
the venv: ``make bench-peers`` installs it with ``--no-deps`` into ``.peers/`` (plus the
three imports its reader needs) and passes ``--tia-path .peers``. A peer that cannot be
imported is reported as such, not timed.

Usage: ``python bench/bench_peers.py [--out bench/results] [--quick] [--tia-path DIR]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import compare, write_result  # noqa: E402
from bench.bench_core import make_svs_like  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def bench_peer_reads(slide: Path, n_max: int) -> dict:
    import openslide
    import torch
    from torch.utils.data import DataLoader

    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.tiling.dataset import TileBatchIterable

    torch.set_num_threads(1)
    grid = make_tile_grid(open_slide(slide), TilingConfig(min_tissue_fraction=0.0, max_artifact_fraction=1.0))
    grid = grid.select(np.arange(min(n_max, len(grid))))
    coords = [(int(x), int(y)) for x, y in grid.coords]
    n = len(coords)
    res: dict = {"slide": slide.name, "n_tiles": n, "peers": {}}

    def bare():
        osr = openslide.OpenSlide(str(slide))
        for c in coords:
            np.asarray(osr.read_region(c, 0, (224, 224)).convert("RGB"))
        osr.close()

    fns = {"bare_openslide": bare}
    try:
        import tiffslide

        def ts():
            s = tiffslide.TiffSlide(str(slide))
            for c in coords:
                s.read_region(c, 0, (224, 224), as_array=True)
            s.close()

        fns["tiffslide"] = ts
        res["peers"]["tiffslide"] = f"tiffslide {tiffslide.__version__}"
    except ImportError as e:
        res["peers"]["tiffslide"] = f"not installed ({e})"
    try:
        import tiatoolbox
        from tiatoolbox.wsicore.wsireader import WSIReader

        def tia():
            r = WSIReader.open(str(slide))
            for c in coords:
                r.read_rect(c, (224, 224), resolution=0, units="level")

        import logging

        logging.getLogger().setLevel(logging.WARNING)  # tiatoolbox configures the root logger
        fns["tiatoolbox"] = tia
        res["peers"]["tiatoolbox"] = (f"tiatoolbox {tiatoolbox.__version__} "
                                      f"({type(WSIReader.open(str(slide))).__name__})")
    except Exception as e:  # not installed, or its imports fail
        res["peers"]["tiatoolbox"] = f"not importable ({type(e).__name__}: {e}); see make bench-peers"

    def hv_region(tile_decode):
        def run():
            r = open_slide(slide, tile_decode=tile_decode)  # cold caches, like the bare loop
            for c in coords:
                r.read_region(c, 0, (224, 224))
        return run

    def hv_loader(tile_decode, workers, threads):
        def run():
            r = open_slide(slide, tile_decode=tile_decode)
            dl = DataLoader(TileBatchIterable(r, grid, 64, threads=threads), batch_size=None,
                            num_workers=workers, prefetch_factor=4 if workers else None)
            k = sum(len(x) for x, _ in dl)
            assert k == n
        return run

    fns["histoviz_tile_decode"] = hv_region(True)
    fns["histoviz_openslide_backend"] = hv_region(False)
    fns["histoviz_openslide_2_threads"] = hv_loader(False, 0, 2)
    fns["histoviz_openslide_1_worker"] = hv_loader(False, 1, 1)
    fns["histoviz_openslide_2_workers"] = hv_loader(False, 2, 1)
    times = compare(fns, 3)
    t_ref = times["bare_openslide"]
    res["tiles_per_s"] = {k: n / t for k, t in times.items()}
    res["ratio_to_bare_openslide"] = {k: t_ref / t for k, t in times.items()}
    return res


def bench_scaling(n_slides: int, size: int) -> dict:
    from distributed import Client, LocalCluster

    from histoviz.data.cohort import read_cohort
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.features.cohort import embed_cohort

    out: dict = {"n_slides": n_slides, "slide_px": size, "encoder": "morphology"}
    with tempfile.TemporaryDirectory() as d:
        c = make_synthetic_cohort(Path(d) / "c", n_slides=n_slides, seed=5, slide_size=(size, size),
                                  n_genes=20, n_proteins=2, n_mirna=2, n_pathways=2,
                                  n_cells_reference=30)
        cohort = read_cohort(c.cohort_csv)
        times = {}
        for n in (1, 2):
            env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                              dashboard_address=None, env=env,
                              silence_logs=logging.ERROR) as cl, Client(cl) as client:
                # warm every worker: torch import, encoder build
                embed_cohort(cohort.iloc[:n], Path(d) / f"warm{n}", encoder="morphology",
                             scheduler=client.scheduler.address, progress=False)
                t = time.perf_counter()
                res = embed_cohort(cohort, Path(d) / f"run{n}", encoder="morphology",
                                   scheduler=client.scheduler.address, progress=False)
                times[n] = time.perf_counter() - t
                assert res.counts()["done"] == n_slides, res.summary()
                out[f"tiles_{n}_workers"] = sum(s.n_tiles for s in res.slides)
        out["seconds_1_worker"], out["seconds_2_workers"] = times[1], times[2]
        out["speedup"] = times[1] / times[2]
        out["fraction_of_linear"] = out["speedup"] / 2.0
    return out


def estimate_tcga(peers: dict | None, scaling: dict | None) -> dict:
    ref = ROOT / "bench" / "reference"
    gpu = json.loads((ref / "gpu_h100.json").read_text())
    core = json.loads((ref / "core_h100_host.json").read_text())
    slides, tiles = 11_000, 15_000
    n_gpu = 8
    vit = gpu["encoders"]["uni"]
    per_gpu = vit["embed_slide_tiles_per_s"]  # whole pipeline per GPU, 14 loader workers
    total = slides * tiles
    gpu_h = total / (n_gpu * per_gpu) / 3600
    decode_proc = core["reads"]["tile_decode_in_process_tiles_per_s"]  # one process, one core
    need = n_gpu * per_gpu
    feats_tb = total * 1024 * 4 / 1e12
    est = {
        "inputs": {
            "vit_l_embed_slide_tiles_per_s_per_gpu": [per_gpu, "measured, H100 host (bench/reference/gpu_h100.json)"],
            "vit_l_bare_forward_tiles_per_s_per_gpu": [vit["bare_bf16_tiles_per_s"], "measured, H100 host"],
            "cpu_tile_decode_tiles_per_s_per_process": [decode_proc, "measured, H100 host, 1 process (bench/reference/core_h100_host.json)"],
            "mask_grid_seconds_per_100k_slide": [core["mask_grid"]["seconds"], "measured, H100 host, detector of 0.1; the robust mask costs ~1.5x (measured here)"],
            "slides": [slides, "assumption (TCGA diagnostic + frozen)"],
            "tiles_per_slide": [tiles, "assumption (224 px at 0.5 um/px)"],
            "slide_gb": [1.0, "assumption (median SVS ~0.5-1.5 GB)"],
        },
        "gpu_bound_hours": gpu_h,
        "decode_processes_needed_on_cpu": need / decode_proc,
        "storage_gb_per_s_needed": slides * 1.0 / (gpu_h * 3600),
        "features_tb_float32": feats_tb,
        "mask_cpu_hours_total": slides * core["mask_grid"]["seconds"] * 1.5 / 3600,
    }
    est["summary"] = (
        f"{total / 1e6:.0f}M tiles / (8 GPUs x {per_gpu:.0f} tiles/s) = {gpu_h:.1f} h if the "
        f"host keeps up: {need:.0f} tiles/s need ~{est['decode_processes_needed_on_cpu']:.0f} CPU "
        f"decode processes (or the GPU decode path, not measured on a GPU yet) and "
        f"{est['storage_gb_per_s_needed']:.2f} GB/s from storage; {feats_tb:.2f} TB of 1024-d "
        f"float32 features; tissue masks ~{est['mask_cpu_hours_total']:.1f} CPU-hours spread over "
        "the workers. Plan ~3-4 h on one 8-GPU node with >= 32 free cores and a fast file system."
    )
    if peers:
        est["measured_here"] = {"peers_ratio_to_bare_openslide": peers["ratio_to_bare_openslide"]}
    if scaling:
        est.setdefault("measured_here", {})["dask_scaling_fraction_of_linear"] = scaling["fraction_of_linear"]
    return est


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="smallest size: every code path, no meaningful numbers (CI)")
    ap.add_argument("--only", default="reads,scaling,estimate")
    ap.add_argument("--tia-path", default=os.environ.get("HISTOVIZ_TIA_PATH"),
                    help="folder where tiatoolbox was installed with --no-deps (make bench-peers)")
    a = ap.parse_args()
    if a.tia_path:
        sys.path.append(str(Path(a.tia_path).resolve()))
    only = set(a.only.split(","))
    result: dict = {"targets": {"scaling_fraction_of_linear": 0.9}}
    if "reads" in only:
        with tempfile.TemporaryDirectory() as d:
            side = 1500 if a.smoke else 6000 if a.quick else 16000
            slide = make_svs_like(Path(d) / "big.svs", side, ROOT / "sample_data/real/CMU-1-Small-Region.svs")
            n = 100 if a.smoke else 1500 if a.quick else 5000
            print(f"[reads] Aperio-style SVS {side}x{side}, {n} tiles of 224 px", flush=True)
            result["reads"] = bench_peer_reads(slide, n)
            for k, v in result["reads"]["ratio_to_bare_openslide"].items():
                print(f"  {k:<32} {result['reads']['tiles_per_s'][k]:8.0f} tiles/s  {v:5.2f}x")
            for k, v in result["reads"]["peers"].items():
                print(f"  peer {k}: {v}")
    if "scaling" in only:
        n, size = (2, 768) if a.smoke else (6, 1536) if a.quick else (12, 2048)
        print(f"[scaling] {n} synthetic slides of {size} px, 1 vs 2 dask workers", flush=True)
        result["scaling"] = bench_scaling(n, size)
        s = result["scaling"]
        print(f"  1 worker {s['seconds_1_worker']:.1f} s, 2 workers {s['seconds_2_workers']:.1f} s: "
              f"speedup {s['speedup']:.2f} ({s['fraction_of_linear']:.2f} of linear)")
    if "estimate" in only:
        result["tcga_estimate"] = estimate_tcga(result.get("reads"), result.get("scaling"))
        print("[estimate]", result["tcga_estimate"]["summary"])
    write_result(a.out, "peers" if only == {"reads", "scaling", "estimate"} else "peers_" + "_".join(sorted(only)), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
