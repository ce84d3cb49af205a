"""Reduced-precision encoders (int8 dynamic quantisation, bf16): what they change and that
bags made at another precision are never mixed with fp32 bags. Speed lives in
bench/bench_precision.py (run here at its smallest size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from histoviz.errors import ConfigError
from histoviz.features.encoders import check_precision_device, create_encoder
from histoviz.features.encoders.precision import bf16_supported
from histoviz.features.recipe import compare_recipes, embedding_recipe

ROOT = Path(__file__).resolve().parents[1]


def _tiles(n: int = 8) -> torch.Tensor:
    from histoviz.io import open_slide
    from tests.conftest import REAL

    with open_slide(REAL / "CMU-1-Small-Region.svs") as r:
        img = r.read_region((200, 600), 0, (224 * n, 224))
    return torch.from_numpy(np.ascontiguousarray(img.reshape(224, n, 224, 3).transpose(1, 3, 0, 2)))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b)


def _uni2(precision: str = "fp32"):
    """UNI's architecture 2 blocks deep, random, LayerScale 0.5 (timm's 1e-5 init would make the
    blocks near no-ops, and any precision would agree trivially)."""
    from histoviz.features.encoders import apply_precision

    enc = create_encoder("uni", pretrained=False, depth=2)
    with torch.no_grad():
        for n, p in enc.named_parameters():
            if n.endswith(".gamma"):
                p.fill_(0.5)
    return apply_precision(enc, precision)


def test_int8_quantises_the_linear_layers_and_keeps_the_embedding():
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    x = _tiles()
    ref, q = _uni2(), _uni2("int8")
    n_linear = sum(type(m) is torch.nn.Linear for m in ref.modules())
    assert n_linear == 8  # qkv, proj, fc1, fc2 in each of 2 blocks
    assert sum(type(m) is torch.nn.Linear for m in q.modules()) == 0
    assert sum(isinstance(m, DynamicInt8Linear) for m in q.modules()) == n_linear
    assert q.precision == "int8" and ref.precision == "fp32"
    with torch.inference_mode():
        a, b = ref(x), q(x)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert (a - b).abs().max() > 0  # it did change something
    assert _cos(a, b).min() > 0.97  # 0.983-0.985 here; bench/bench_precision.py reports it


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bfloat16 (AVX512-BF16/AMX)")
def test_bf16_keeps_the_embedding():
    x = _tiles(4)
    ref, h = _uni2(), _uni2("bf16")
    assert h.weights_module().patch_embed.proj.weight.dtype == torch.bfloat16
    assert h._mean.dtype == torch.float32  # preprocessing stays in float32
    with torch.inference_mode():
        a, b = ref(x), h(x)
    assert b.dtype == torch.float32 and _cos(a, b).min() > 0.999


def test_precision_errors_are_one_line():
    with pytest.raises(ConfigError, match="int8 .* runs on the CPU only"):
        check_precision_device("int8", "cuda:0")
    with pytest.raises(ConfigError, match="'morphology' has no learned weights"):
        create_encoder("morphology", precision="int8")
    with pytest.raises(ConfigError, match="precision 'fp8' is not one of fp32, bf16, int8"):
        create_encoder("tiny-test", precision="fp8")


def test_recipes_before_precision_read_as_fp32():
    old = {"encoder": "uni", "weights": "sha256:ab", "tile_size": 224, "mpp": 0.5}
    rec = embedding_recipe({"recipe": json.dumps(old)})
    assert rec["precision"] == "fp32"
    assert compare_recipes({**rec, "precision": "int8"}, rec, ["precision"]) == ["precision: 'int8' vs 'fp32'"]


def _embed(slide: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histoviz.cli", "embed", str(slide), "--out", str(out),
                           "--encoder", "tiny-test", "--no-progress", *extra],
                          capture_output=True, text=True, check=False, cwd=ROOT)


@pytest.mark.slow
def test_embed_records_precision_and_resume_refuses_a_mismatch(layout_slide, tmp_path):
    out = tmp_path / "feats"
    r = _embed(layout_slide[0], out, "--precision", "int8")
    assert r.returncode == 0, r.stderr
    bag = next(out.glob("*.h5"))
    assert embedding_recipe(bag)["precision"] == "int8"
    assert json.loads((out / "embed_config.json").read_text())["recipe"]["precision"] == "int8"
    again = _embed(layout_slide[0], out, "--precision", "int8")
    assert again.returncode == 0 and "already embedded" in again.stdout
    fp32 = _embed(layout_slide[0], out)
    assert fp32.returncode == 1 and "Traceback" not in fp32.stderr
    assert len(fp32.stderr.strip().splitlines()) == 1
    assert "precision: 'fp32' vs 'int8'" in fp32.stderr


@pytest.mark.slow
def test_precision_bench_runs_at_its_smallest_size(tmp_path):
    """CI runs the benchmark at its smallest size; its numbers are sane."""
    r = subprocess.run([sys.executable, "bench/bench_precision.py", "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, check=False, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "precision.json").read_text())
    speed = res["speed"]
    assert speed["fp32"]["tiles_per_s"] > 0 and speed["int8"]["tiles_per_s"] > 0
    cos = res["cosine_real_tiles"]["int8"]
    assert 0.9 < cos["min"] <= cos["mean"] <= 1.0
    down = res["downstream"]["int8"]
    assert down["n_slides"] >= 8 and -1.0 <= down["same_pearson_predictions"] <= 1.0
    assert np.isfinite(down["cross_abs_error_paired_diff_mean"])
