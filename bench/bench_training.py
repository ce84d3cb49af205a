"""Training throughput of the slide-level models against their bare compute, same run.

For each model (multi-task ABMIL ``multiomics`` and ``cpnn``):

1. *fit*: ``model.fit(bags, targets)`` on in-memory feature bags for ``--epochs`` epochs
   (no validation split): everything a real fit does per step (shuffling, patch sampling up
   to ``max_patches``, feature standardisation, padding, host-to-device copies, the masked
   loss, AdamW with gradient clipping);
2. *bare*: the same network, loss and optimiser on batches that were padded, standardised and
   moved to the device beforehand: forward + backward + optimiser step only.

``ratio = fit slides/s / bare slides/s`` (1.0: the loop adds nothing to the compute); the
whole fit includes one-time set-up (feature statistics, first standardisation and upload of
every bag), so the ratio of the loop's epochs after the first is reported as well.
Inference time per slide is measured for ``predict`` (slide level, batched) and
``predict_patches`` (all per-patch maps of one slide).

The bags are random features with a planted linear signal (no slides are read): 1280-d
features (EfficientNet-Lite0 width), ``--patches`` patches per slide, 2,000 genes + 200
proteins. Device: CUDA when available, else CPU.

Usage: ``python bench/bench_training.py [--out bench/results] [--quick]``
Prints the table; writes ``<out>/training.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import write_result  # noqa: E402


def _data(n: int, patches: int, dim: int, genes: int, proteins: int, seed: int = 0):
    import pandas as pd

    from histoviz.data.omics import OutputTransform, TargetBlock

    rng = np.random.default_rng(seed)
    c = 6
    proj = rng.normal(size=(dim, c)).astype(np.float32) / np.sqrt(dim)
    proto = rng.gamma(0.6, 1.0, size=(c, genes)) + 0.01
    proto /= proto.sum(1, keepdims=True)
    bags, mix = [], []
    for _ in range(n):
        k = int(rng.integers(patches // 2, patches + 1))
        x = rng.normal(size=(k, dim)).astype(np.float32) + rng.normal(size=dim).astype(np.float32)
        lo = x @ proj
        w = np.exp(lo - lo.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        bags.append(x)
        mix.append(w.mean(0))
    mix = np.stack(mix)
    lib = rng.integers(10**5, 10**6, size=n).astype(float)
    counts = rng.poisson(mix @ proto * lib[:, None]).astype(float)
    norm = counts / counts.sum(1, keepdims=True) * 1e4
    gene = TargetBlock("gene", [f"G{i}" for i in range(genes)], np.log10(1 + norm), np.ones(n, bool),
                       counts, counts.sum(1), OutputTransform("log10p1", 1e4))
    prot_vals = mix @ rng.normal(size=(c, proteins)) + rng.normal(0, 0.1, size=(n, proteins))
    present = rng.random(n) > 0.15
    prot_vals[~present] = np.nan
    protein = TargetBlock("protein", [f"PR{i}" for i in range(proteins)], prot_vals, present)
    # prototypes as a table (cell types x genes): no anndata needed on a bare GPU image
    ref = pd.DataFrame(proto * np.exp(rng.normal(0, 0.1, proto.shape)), index=[f"T{k}" for k in range(c)],
                       columns=gene.targets)
    return bags, {"gene": gene, "protein": protein}, ref


def _bare(model, bags, targets, epochs: int) -> float:
    """Seconds for ``epochs`` epochs of forward + backward + step on preloaded batches."""
    import torch

    from histoviz.nn.losses import masked_mse, nb_nll

    dev = model._device()
    bs = int(model.loop.batch_size)
    b = model._batcher(bags, train=False)
    b.max_patches = int(model.loop.max_patches)
    batches = []
    for s in range(0, len(bags), bs):
        idx = np.arange(s, min(s + bs, len(bags)))
        x, mask = b.batch(idx)  # deterministic subsample, padded, standardised, on device
        ys = {m: torch.from_numpy(np.nan_to_num(t.values[idx])).float().to(dev) for m, t in targets.items()}
        ps = {m: torch.from_numpy(t.present[idx]).to(dev) for m, t in targets.items()}
        cnt = None
        if targets["gene"].counts is not None:
            cnt = torch.from_numpy(targets["gene"].counts[idx]).float().to(dev)
        batches.append((x, mask, ys, ps, cnt))
    net = model.module_
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    cpnn = model.name == "cpnn"
    keys = None if cpnn else model.arch_["keys"]

    def step(x, mask, ys, ps, cnt):
        if cpnn:
            fr, _, _ = net(x, mask)
            loss = nb_nll(cnt, fr * cnt.sum(1, keepdim=True), torch.exp(net.log_theta))
            loss = loss + 1e3 * ((net.prototypes() - net.prototypes_init()) ** 2).sum()
        else:
            out, _ = net(x, mask)
            loss = sum(masked_mse(out[keys[m]], ys[m], ps[m], reduction=model.loss_reduction) for m in keys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    with model._compute_context(bags):
        step(*batches[0])  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(epochs):
            for bt in batches:
                step(*bt)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="smaller workload (CI)")
    ap.add_argument("--smoke", action="store_true", help="smallest size: every code path, no meaningful numbers (CI)")

    ap.add_argument("--slides", type=int, default=None)
    ap.add_argument("--patches", type=int, default=None, help="max patches per slide")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    n = a.slides or (16 if a.smoke else 48 if a.quick else 200)
    patches = a.patches or (32 if a.smoke else 256 if a.quick else 2048)
    epochs = a.epochs or (2 if a.smoke or a.quick else 3)
    dim, genes, proteins = (64, 50, 20) if a.smoke else (1280, 500 if a.quick else 2000, 200)

    import torch

    from histoviz.models import create_model

    bags, targets, ref = _data(n, patches, dim, genes, proteins)
    tmp = Path(tempfile.mkdtemp(prefix="bench_training_"))
    ref_path = tmp / "prototypes.csv"
    ref.to_csv(ref_path)
    common = {"epochs": epochs, "batch_size": 8, "max_patches": patches, "device": a.device, "seed": 0}
    models = {
        "multiomics": ("multiomics", {**common, "embed_dim": 256, "attn_dim": 128, "hidden": 512}, targets),
        "cpnn": ("cpnn", {**common, "reference": str(ref_path), "hidden": 256}, {"gene": targets["gene"]}),
    }
    results = {}
    for label, (name, params, tg) in models.items():
        m = create_model(name, **{**params, "epochs": 1})
        m.fit(bags[:16], {k: v.subset(np.arange(16)) for k, v in tg.items()})  # warm-up (imports, kernels)
        m = create_model(name, **params)
        t = time.perf_counter()
        m.fit(bags, tg)
        if m._device().type == "cuda":
            torch.cuda.synchronize()
        t_fit = time.perf_counter() - t
        t_bare = _bare(m, bags, tg, epochs)
        fit_sps = n * epochs / t_fit
        bare_sps = n * epochs / t_bare
        # steady state: the training loop's own epochs after the first (one-time set-up excluded)
        ep = [h["train_seconds"] for h in m.fit_info()["history"]][1:]
        steady_sps = n / float(np.median(ep)) if ep else float("nan")
        m.predict(bags[:8])
        t = time.perf_counter()
        m.predict(bags)
        t_pred = (time.perf_counter() - t) / n
        k = min(20, n)
        t = time.perf_counter()
        for i in range(k):
            m.predict_patches(bags[i])
        t_patch = (time.perf_counter() - t) / k
        results[label] = {
            "fit_slides_per_s": fit_sps, "bare_slides_per_s": bare_sps, "ratio_fit_vs_bare": fit_sps / bare_sps,
            "fit_epoch_slides_per_s": steady_sps, "ratio_epoch_vs_bare": steady_sps / bare_sps,
            "predict_ms_per_slide": 1e3 * t_pred, "predict_patches_ms_per_slide": 1e3 * t_patch,
            "fit_seconds": t_fit, "bare_seconds": t_bare, "device": str(m._device()),
        }
        print(f"{label:11s} fit {fit_sps:8.1f} slides/s (epochs 2+: {steady_sps:8.1f}) | bare fwd+bwd "
              f"{bare_sps:8.1f} slides/s | ratio {fit_sps / bare_sps:.2f} (epochs 2+: {steady_sps / bare_sps:.2f}) | "
              f"predict {1e3 * t_pred:.2f} ms/slide | "
              f"per-patch maps {1e3 * t_patch:.2f} ms/slide", flush=True)
    write_result(a.out, "training", {
        "workload": {"slides": n, "max_patches": patches, "feature_dim": dim, "genes": genes,
                     "proteins": proteins, "epochs": epochs, "batch_size": 8, "quick": a.quick},
        "results": results,
        "reference": "bare = the same network, loss and optimiser on preloaded, pre-padded device tensors",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
