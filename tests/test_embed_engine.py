"""embed_slide at scale: flat memory (features streamed to disk), tiles decoded on the
encoder's device, quality scores in the bag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from histoviz.errors import ConfigError
from histoviz.features import EmbedStats, create_encoder, embed_slide, resolve_device
from histoviz.io import FeatureBag, open_slide
from histoviz.tiling import TilingConfig, make_tile_grid
from histoviz.tiling.dataset import read_tile

ROOT = Path(__file__).resolve().parents[1]

_MEM_CHILD = r"""
import json, sys, torch
sys.path.insert(0, {root!r})
from bench._common import VirtualSlide
from histoviz.features import embed_slide
from histoviz.tiling import TilingConfig, make_tile_grid
torch.set_num_threads(1)

class Wide(torch.nn.Module):  # cheap encoder with very wide output: features dominate memory
    name, embed_dim, weights_source = "wide4096", 4096, "none"
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 4096)
    def forward(self, x):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1))

r = VirtualSlide({side}, {side})
g = make_tile_grid(r, TilingConfig(tile_size=16, mpp=None, min_tissue_fraction=0.0))
out = {out!r} or None
embed_slide(r, Wide(), g, out=out, batch_size=512, num_workers=0, quality=False)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"n_tiles": len(g), "peak_mb": int(hwm) / 1024}}))
"""


def _peak(side: int, out: str) -> dict:
    code = _MEM_CHILD.format(root=str(ROOT), side=side, out=out)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_slide(tmp_path):
    """4k vs 36k tiles of 4096-d features (151 MB vs 590 MB if held): peak RSS stays flat when
    streamed to disk; the in-memory path (returning a FeatureBag) shows the test can tell."""
    small = _peak(1024, str(tmp_path / "small.h5"))
    large = _peak(3072, str(tmp_path / "large.h5"))
    assert large["n_tiles"] >= 8 * small["n_tiles"] and large["n_tiles"] >= 36_000
    feat_mb = large["n_tiles"] * 4096 * 4 / 2**20
    assert large["peak_mb"] - small["peak_mb"] < 64, (small, large)
    held = _peak(3072, "")
    assert held["peak_mb"] - large["peak_mb"] > 0.8 * feat_mb, (held, large, feat_mb)
    with h5py.File(tmp_path / "large.h5") as f:
        assert f["features"].shape == (large["n_tiles"], 4096)


CASES = [
    ("svs", {}),  # native level, JPEG tiles of 240 px with shared tables, RGB components
    ("svs", {"mpp": 1.0}),  # 449 -> 224 px: box downsampling like the CPU reader
    ("svs", {"mpp": 0.3, "tile_size": 128}),  # upsampling
    ("pyr", {"mpp": 1.0, "tile_size": 64}),  # served from pyramid level 1 (YCbCr JPEG)
    ("pyr", {"overlap": 0.5}),
]


@pytest.mark.parametrize(("slide", "cfg"), CASES)
def test_device_decoded_tiles_match_the_reader(slide, cfg, svs_path, layout_slide):
    from histoviz.tiling.device_decode import DeviceTileBatches

    r = open_slide(svs_path if slide == "svs" else layout_slide[0])
    g = make_tile_grid(r, TilingConfig(**cfg))
    src = DeviceTileBatches(r, g, torch.device("cpu"))
    got = torch.cat([src.batch(s, min(len(g), s + 7)) for s in range(0, len(g), 7)])
    want = np.stack([read_tile(r, g, i) for i in range(len(g))])
    diff = np.abs(got.permute(0, 2, 3, 1).numpy().astype(int) - want)
    assert diff.max() <= 1 and diff.mean() < 0.5, (diff.max(), diff.mean())


def test_embed_slide_device_path_and_quality_in_the_bag(svs_path, tmp_path):
    r = open_slide(svs_path)
    enc = create_encoder("morphology")
    a, b = EmbedStats(), EmbedStats()
    p_cpu = embed_slide(r, enc, out=tmp_path / "cpu.h5", stats=a, decode="cpu")
    p_dev = embed_slide(r, enc, out=tmp_path / "dev.h5", stats=b, decode="device", device="cpu")
    assert (a.decode, b.decode) == ("cpu", "device")
    fa, fb = FeatureBag.from_h5(p_cpu), FeatureBag.from_h5(p_dev)
    assert np.array_equal(fa.coords, fb.coords) and np.allclose(fa.features, fb.features, atol=1e-4)
    with h5py.File(p_cpu) as f:  # CLAM/TRIDENT layout kept; scores beside it
        assert set(f) == {"coords", "features", "quality"}
        assert set(f["quality"]) == {"tissue", "artifact", "background", "sharpness"}
        assert json.loads(f.attrs["recipe"])["encoder"] == "morphology"
    q = fa.quality
    assert np.all(np.isfinite(q["sharpness"])) and np.all(q["sharpness"] > 0.2)
    assert np.allclose(q["tissue"], make_tile_grid(r).tissue_fraction)
    sel = fa.select(q["sharpness"] >= np.median(q["sharpness"]))
    assert 0 < len(sel) < len(fa) and set(sel.quality) == set(q)
    for k in ("seconds_mask", "seconds_read", "seconds_forward", "seconds_write"):
        assert getattr(a, k) > 0, k
    # a slide without JPEG tiles cannot take the device path
    with pytest.raises(ConfigError, match="decode='device' needs a slide stored as JPEG tiles"):
        embed_slide(open_slide(np.full((512, 512, 3), 200, np.uint8), mpp=0.5), enc,
                    tiling=TilingConfig(min_tissue_fraction=0), decode="device", device="cpu")


def test_resolve_device_refuses_what_is_not_there():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="'tpu9' is not a device name"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is usable"):
            resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        embed_slide(open_slide(np.zeros((64, 64, 3), np.uint8), mpp=0.5), "morphology", batch_size=0)


@pytest.mark.gpu
@pytest.mark.parametrize(("slide", "cfg"), CASES)
def test_cuda_decoded_tiles_match_the_reader(slide, cfg, svs_path, layout_slide):  # no GPU here
    from histoviz.tiling.device_decode import DeviceTileBatches

    r = open_slide(svs_path if slide == "svs" else layout_slide[0])
    g = make_tile_grid(r, TilingConfig(**cfg))
    src = DeviceTileBatches(r, g, torch.device("cuda"))
    got = torch.cat([src.batch(s, min(len(g), s + 64)) for s in range(0, len(g), 64)]).cpu()
    want = np.stack([read_tile(r, g, i) for i in range(len(g))])
    diff = np.abs(got.permute(0, 2, 3, 1).numpy().astype(int) - want)
    assert diff.max() <= 2 and diff.mean() < 0.5


@pytest.mark.gpu
def test_cuda_embedding_decodes_on_the_gpu(svs_path):  # no GPU here
    r = open_slide(svs_path)
    st = EmbedStats()
    bag = embed_slide(r, "efficientnet-lite0", device="cuda", stats=st)
    ref = embed_slide(r, "efficientnet-lite0", device="cuda", decode="cpu")
    assert st.decode == "device"
    assert np.allclose(bag.features, ref.features, atol=0.05)


@pytest.mark.slow
def test_read_threads_and_loader_workers_give_the_same_bag(svs_path):
    for tile_decode in (True, False):
        r = open_slide(svs_path, tile_decode=tile_decode)
        g = make_tile_grid(r, TilingConfig(mpp=0.75))
        ref = embed_slide(r, "tiny-test", g, batch_size=5, decode="cpu")
        runs = [{"read_threads": 3}] + ([{"num_workers": 2, "read_threads": 2}] if not tile_decode else [])
        for kw in runs:
            bag = embed_slide(r, "tiny-test", g, batch_size=5, decode="cpu", **kw)
            assert np.array_equal(bag.features, ref.features), (tile_decode, kw)
