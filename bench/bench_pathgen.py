"""PathGen: sampling time per slide (DDPM against DDIM) and training throughput of both stages
against the bare forward and backward of the same networks, same run.

1. *fit*: ``PathGen.fit(bags, targets)`` (setting ``synthetic``: the diffusion, then the
   co-attention model) on in-memory feature bags for ``--epochs`` epochs per stage without a
   validation split: everything a real fit does per step (shuffling, patch sampling up to
   ``max_patches``, feature standardisation, padding, noise and step draws, the losses, AdamW with
   gradient clipping). The loop's own epoch times (``history.train_seconds``, epochs after the
   first) give each stage's steady-state rate;
2. *bare*: the same denoiser / co-attention network, loss and optimiser on batches padded,
   standardised and moved to the device beforehand: forward + backward + step only.
   ``ratio = fit slides/s / bare slides/s`` per stage (1.0: the loop adds nothing), over all
   epochs and for the best epoch of each (robust to other jobs on a shared machine);
3. *sampling*: ``synthesise`` of ``--sample-slides`` slides, 3 samples each (PathGen), with DDPM
   over all ``T = 1000`` steps and with DDIM in 50 steps; seconds per slide and their ratio
   (the number of denoiser evaluations differs 20-fold).

Bags are random features with a planted signal (no slides are read): ``--patches`` patches per
slide, 1024-d features (UNI width), genes in six groups. Device: CUDA when available, else CPU.

Usage: ``python bench/bench_pathgen.py [--out bench/results] [--quick]``; writes
``<out>/pathgen.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import write_result  # noqa: E402


def _data(n: int, patches: int, dim: int, genes: int, seed: int = 0):
    from histoviz.data.omics import TargetBlock
    from histoviz.data.outcomes import ClassBlock, SurvivalBins, SurvivalBlock

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim, genes)).astype(np.float32) / np.sqrt(dim)
    bags, centre = [], []
    for _ in range(n):
        c = rng.normal(size=dim).astype(np.float32)
        k = int(rng.integers(patches // 2, patches + 1))
        bags.append(c + rng.normal(size=(k, dim)).astype(np.float32))
        centre.append(c)
    y = np.stack(centre) @ w + 0.5 * rng.normal(size=(n, genes))
    y = (y - y.mean(0)) / y.std(0)
    names = [f"G{j}" for j in range(genes)]
    size = genes // 6
    groups = {f"group{k}": names[k * size:(k + 1) * size] for k in range(6)}
    score = y[:, :size].mean(1)
    grade = np.digitize(score, np.quantile(score, [0.25, 0.5, 0.75]))
    t = rng.exponential(20 * np.exp(-score))
    cens = rng.exponential(30, n)
    surv = SurvivalBlock("survival", np.minimum(t, cens) + 0.01, (t <= cens).astype(int), np.ones(n, bool))
    targets = {"gene": TargetBlock("gene", names, y, np.ones(n, bool)),
               "grade": ClassBlock("grade", ["1", "2", "3", "4"], grade),
               "survival": SurvivalBins(4).fit(surv).block(surv)}
    return bags, targets, groups


def _bare_diffusion(model, bags, x0, epochs: int) -> list[float]:
    import torch

    dev = model._device()
    net = model.module_["denoiser"]
    sched = model._schedule()
    b = model._batcher(bags, train=False)
    b.max_patches = model.loop.max_patches
    bs = model.loop.batch_size
    batches = []
    for s in range(0, len(bags), bs):
        idx = np.arange(s, min(s + bs, len(bags)))
        x, mask = b.batch(idx)
        batches.append((x, mask, torch.from_numpy(x0[idx].astype(np.float32)).to(dev)))
    net.train()
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    g = torch.Generator(device="cpu").manual_seed(0)

    def step(x, mask, y0):
        t = torch.randint(0, sched.timesteps, (len(y0),), generator=g).to(dev)
        noise = torch.randn(y0.shape, generator=g).to(dev)
        loss = ((net(sched.q_sample(y0, t, noise), t, net.context(x, mask)) - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return _time(model, bags, batches, step, epochs)


def _bare_coattention(model, bags, targets, epochs: int) -> list[float]:
    import torch

    from histoviz.nn.losses import discrete_survival_nll, masked_cross_entropy

    dev = model._device()
    net = model.module_["mcat"]
    b = model._batcher(bags, train=False)
    b.max_patches = model.loop.max_patches
    expr, pres = model._group_values(targets["gene"])
    om = model._coattention_input(expr, pres)
    g, s = targets["grade"], targets["survival"]
    bs = model.loop.batch_size
    batches = []
    for st in range(0, len(bags), bs):
        idx = np.arange(st, min(st + bs, len(bags)))
        x, mask = b.batch(idx)
        batches.append((x, mask, torch.from_numpy(om[idx]).to(dev), torch.from_numpy(g.codes[idx]).to(dev),
                        torch.from_numpy(s.bins[idx]).to(dev), torch.from_numpy(s.event[idx]).to(dev)))
    net.train()
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-5)

    def step(x, mask, genes, codes, bins, event):
        out, _ = net(x, mask, genes)
        loss = 0.7 * masked_cross_entropy(out["grade"], codes) + 0.3 * discrete_survival_nll(out["survival"], bins, event)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return _time(model, bags, batches, step, epochs)


def _time(model, bags, batches, step, epochs: int) -> list[float]:
    """Seconds of each of ``epochs`` epochs over the preloaded batches."""
    import torch

    dev = model._device()
    out = []
    with model._compute_context(bags):
        step(*batches[0])  # warm-up
        for _ in range(epochs):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for bt in batches:
                step(*bt)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="smaller workload (CI)")
    ap.add_argument("--smoke", action="store_true", help="smallest size: every code path, no meaningful numbers (CI)")

    ap.add_argument("--slides", type=int, default=None)
    ap.add_argument("--patches", type=int, default=None, help="max patches per slide")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per stage")
    ap.add_argument("--sample-slides", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared box more threads make timings noise)")
    a = ap.parse_args()
    n = a.slides or (16 if a.smoke else 32 if a.quick else 96)
    patches = a.patches or (16 if a.smoke else 64 if a.quick else 512)
    epochs = a.epochs or (2 if a.smoke else 3 if a.quick else 5)
    k = a.sample_slides or (2 if a.smoke else 4 if a.quick else 8)
    dim, genes = (64, 60) if a.smoke else (1024, 120 if a.quick else 600)

    import torch

    from histoviz.models import create_model

    bags, targets, groups = _data(n, patches, dim, genes)
    params = {"gene_groups": groups, "setting": "synthetic", "epochs": epochs, "diffusion_epochs": epochs,
              "batch_size": 8, "max_patches": patches, "device": a.device, "seed": 0, "num_threads": a.threads}
    warm = create_model("pathgen", **{**params, "epochs": 1, "diffusion_epochs": 1})
    warm.fit(bags[:16], {b: t.subset(np.arange(16)) for b, t in targets.items()})  # imports, kernels
    m = create_model("pathgen", **params)
    t = time.perf_counter()
    m.fit(bags, targets)
    if m._device().type == "cuda":
        torch.cuda.synchronize()
    t_fit = time.perf_counter() - t
    info = m.fit_info()
    hist = info["history"]
    results: dict[str, dict[str, float | str]] = {}
    expr, _ = m._group_values(targets["gene"])
    x0 = m.scale_.forward(expr)
    for stage, bare in (("diffusion", lambda: _bare_diffusion(m, bags, x0, epochs)),
                        ("coattention", lambda: _bare_coattention(m, bags, targets, epochs))):
        ep = [h["train_seconds"] for h in hist if h["stage"] == stage]
        bare_ep = bare()
        fit_sps, bare_sps = n * len(ep) / float(sum(ep)), n * len(bare_ep) / float(sum(bare_ep))
        # best epoch of each (robust to other jobs on a shared machine; the loop's first epoch
        # includes one-time standardisation and upload of every bag, so it is left out)
        best_fit, best_bare = n / float(min(ep[1:] or ep)), n / float(min(bare_ep))
        results[stage] = {"fit_slides_per_s": fit_sps, "bare_slides_per_s": bare_sps,
                          "ratio_fit_vs_bare": fit_sps / bare_sps, "best_epoch_fit_slides_per_s": best_fit,
                          "best_epoch_bare_slides_per_s": best_bare, "ratio_best_epoch": best_fit / best_bare,
                          "fit_epoch_seconds": ep, "bare_epoch_seconds": bare_ep}
        print(f"{stage:11s} fit {fit_sps:7.1f} slides/s (best epoch {best_fit:7.1f}) | bare fwd+bwd {bare_sps:7.1f} "
              f"slides/s (best {best_bare:7.1f}) | ratio {fit_sps / bare_sps:.2f} (best epochs: "
              f"{best_fit / best_bare:.2f})", flush=True)
    sample = {}
    sub = bags[:k]
    with m._compute_context(sub):
        for name, kw in (("ddpm_T1000", {"sampler": "ddpm"}), ("ddim_50", {"sampler": "ddim", "steps": 50})):
            m.synthesise(sub[:1], **kw)  # warm-up
            t = time.perf_counter()
            m.synthesise(sub, **kw)
            if m._device().type == "cuda":
                torch.cuda.synchronize()
            sample[name] = (time.perf_counter() - t) / k
    results["sampling"] = {"ddpm_T1000_s_per_slide": sample["ddpm_T1000"], "ddim_50_s_per_slide": sample["ddim_50"],
                           "ratio_ddpm_vs_ddim": sample["ddpm_T1000"] / sample["ddim_50"], "n_samples": m.n_samples}
    print(f"sampling    DDPM (T=1000) {sample['ddpm_T1000']:.3f} s/slide | DDIM (50 steps) {sample['ddim_50']:.3f} "
          f"s/slide | ratio {sample['ddpm_T1000'] / sample['ddim_50']:.1f} (3 samples per slide)", flush=True)
    write_result(a.out, "pathgen", {
        "workload": {"slides": n, "max_patches": patches, "feature_dim": dim, "genes": genes, "groups": 6,
                     "torch_threads": a.threads,
                     "epochs_per_stage": epochs, "batch_size": 8, "sample_slides": k, "quick": a.quick,
                     "diffusion_dim": m.diffusion_dim, "dim": m.dim, "device": str(m._device())},
        "fit_seconds_total": t_fit,
        "results": results,
        "reference": "bare = the same network, loss and optimiser on preloaded, pre-padded device tensors; "
                     "sampling ratio = DDPM over T=1000 steps / DDIM in 50 steps, same model",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
