"""GPU benchmark (run on a CUDA machine): encoder throughput in bf16, and embed_slide vs the
bare forward pass on preloaded GPU tensors.

For each encoder (UNI ViT-L/16, EfficientNet-Lite0, morphology; random weights: throughput does
not depend on the values), measures

- bare: ``encoder(x)`` on uint8 tiles already on the GPU, bf16 autocast, batches of 256;
- embed_slide: the whole pipeline on an Aperio-style JPEG-tiled slide, with the slide's JPEG
  tiles decoded on the GPU (``decode="device"``, the default on CUDA) and, for comparison, in
  DataLoader workers on the CPU (``decode="cpu"``), plus host-to-device copies, forward, HDF5
  writes,

and prints ``embed_slide / bare`` (targets: ViT-L >= 0.9, EfficientNet-Lite0 and morphology
>= 0.8 with GPU decoding). Usage: ``python bench/bench_gpu.py [--out DIR] [--workers 8]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import write_result  # noqa: E402
from bench.bench_core import make_svs_like  # noqa: E402


def bare_throughput(enc, n: int, bs: int, channels_last: bool) -> float:
    import torch

    x = torch.randint(0, 256, (bs, 3, 224, 224), dtype=torch.uint8, device="cuda")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            enc(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n // bs):
            enc(x).float()
        torch.cuda.synchronize()
    return (n // bs) * bs / (time.perf_counter() - t)


def main() -> int:
    import torch

    from histoviz.features import EmbedStats, create_encoder, embed_slide
    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--encoders", default="uni,efficientnet-lite0,morphology")
    ap.add_argument("--side", type=int, default=24000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="smallest size: every code path, no meaningful numbers (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.side, a.workers = min(a.side, 2400), min(a.workers, 2)
    assert torch.cuda.is_available(), "bench_gpu needs a CUDA device"
    torch.backends.cudnn.benchmark = True
    root = Path(__file__).resolve().parents[1]
    res: dict = {"device": torch.cuda.get_device_name(0), "workers": a.workers, "encoders": {}}
    with tempfile.TemporaryDirectory() as d:
        slide = make_svs_like(Path(d) / "big.svs", a.side, root / "sample_data/real/CMU-1-Small-Region.svs")
        reader = open_slide(slide)
        grid = make_tile_grid(reader, TilingConfig(min_tissue_fraction=0.0, max_artifact_fraction=1.0))
        res["slide"] = {"side": a.side, "n_tiles": len(grid), "backend": reader.backend}
        print(f"slide {a.side}x{a.side}: {len(grid)} tiles ({reader.backend})", flush=True)
        for name in a.encoders.split(","):
            bs = 256
            enc = create_encoder(name, pretrained=False).cuda().eval()
            cl = name == "efficientnet-lite0"
            if cl:
                enc = enc.to(memory_format=torch.channels_last)
            bare = bare_throughput(enc, 256 if a.smoke else 1024 if a.quick else 4096, bs, cl)
            rec = {"bare_bf16_tiles_per_s": bare, "batch_size": bs}
            for decode in ("device", "cpu"):  # JPEG decoded on the GPU vs in loader workers
                st = EmbedStats()
                embed_slide(open_slide(slide), enc, grid, batch_size=bs, num_workers=a.workers,
                            out=Path(d) / "warm.h5", stats=st, decode=decode)  # warm-up
                runs = []
                for _ in range(2):
                    st = EmbedStats()
                    embed_slide(open_slide(slide), enc, grid, batch_size=bs, num_workers=a.workers,
                                out=Path(d) / f"{name}.h5", stats=st, decode=decode)
                    runs.append(st.tiles_per_s)
                emb = max(runs)
                sfx = "" if decode == "device" else "_cpu_decode"
                rec[f"embed_slide_tiles_per_s{sfx}"] = emb
                rec[f"ratio{sfx}"] = emb / bare
                rec[f"decode_used{sfx}"] = st.decode
                print(f"{name} ({decode} decode, used {st.decode}): bare {bare:.0f} tiles/s, "
                      f"embed_slide {emb:.0f} tiles/s, ratio {emb / bare:.2f}", flush=True)
            res["encoders"][name] = rec
            del enc
            torch.cuda.empty_cache()
    write_result(a.out, "gpu", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
