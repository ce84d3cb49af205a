"""``histoviz info | encoders | synth | tile | embed``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the core subcommands."""
    p = sub.add_parser("info", help="slide metadata: dimensions, levels, mpp, objective, vendor")
    p.add_argument("slide")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)

    p = sub.add_parser("encoders", help="registered patch encoders: dims, licence, where weights are "
                                        "looked for and whether they are here; --check a file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--check", nargs=2, metavar=("NAME", "FILE"), default=None,
                   help="say whether a weights file fits encoder NAME (every tensor present, same "
                        "shape) and, if not, what differs and what that suggests")
    p.set_defaults(func=_encoders)

    p = sub.add_parser("synth", help="write a synthetic cohort with ground truth")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--preset", default=None, choices=["demo", "power"],
                   help="a named cohort: demo (48 slides of 1536 px, 40 patients) or power (240 slides of "
                        "768 px, 200 patients: enough held-out patients to compare models)")
    p.add_argument("--slides", type=int, default=None, help="number of slides (default 12)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--size", type=int, default=None, help="slide side in px at 0.5 um/px (default 2048)")
    p.add_argument("--gene-groups", action="store_true",
                   help="also write gene_groups.csv: six MCAT-like gene groups over the genes (PathGen)")
    p.add_argument("--hidden-factor", type=float, default=0.0, metavar="S",
                   help="with --gene-groups: a per-patient factor no slide shows shifts grade, survival and two "
                        "gene groups (strength S, e.g. 1)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("tile", help="tissue mask + tile grid of a slide (coords CSV and a preview PNG)")
    p.add_argument("slide")
    p.add_argument("--out", type=Path, default=None, help="folder for <slide_id>_tiles.csv and preview")
    _tiling_args(p)
    p.add_argument("--sharpness", action="store_true",
                   help="also measure each tile's sharpness (reads every tile)")
    p.set_defaults(func=_tile)

    p = sub.add_parser("embed", help="embed the tiles of a slide or a cohort into <out>/<slide_id>.h5")
    p.add_argument("input", help="a slide file or a cohort table (.csv/.tsv/.parquet)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--weights", default=None, help="local weights file for the encoder")
    p.add_argument("--random-weights", action="store_true", help="use random weights (testing)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"),
                   help="encoder precision: int8 (dynamic quantisation, CPU only, ~3x faster on a "
                        "laptop CPU) or bf16 (CPUs with AVX512-BF16/AMX, GPUs); recorded in every bag")
    _tiling_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1,
                   help="dask LocalCluster worker processes (0: run in this process)")
    p.add_argument("--scheduler", default=None, help="address of an existing dask scheduler")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU indices: one dask worker per GPU (e.g. 0,1)")
    p.add_argument("--read-threads", type=int, default=1,
                   help="threads reading the tiles of a batch (OpenSlide and JPEG decoding release the GIL)")
    p.add_argument("--decode", default="auto", choices=("auto", "cpu", "device"),
                   help="where JPEG tiles are decoded (auto: on the GPU when embedding on CUDA)")
    p.add_argument("--stage-dir", default=None,
                   help="copy each slide to this local folder first (slow network storage)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-embed bags made with another recipe instead of refusing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_embed)


def _tiling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mpp", type=float, default=0.5, help="target microns per pixel of the tiles")
    p.add_argument("--tile-size", type=int, default=224)
    p.add_argument("--overlap", type=float, default=0.0, help="fraction of overlap between tiles")
    p.add_argument("--min-tissue", type=float, default=0.5, help="minimum tissue fraction of a tile")
    p.add_argument("--mpp-override", type=float, default=None,
                   help="slide mpp to use when the file records none (or a wrong one)")
    p.add_argument("--mask-method", default="robust",
                   help="tissue detection: robust (default), combined (histoviz 0.1), saturation, od, "
                        "learned (with --mask-weights)")
    p.add_argument("--mask-weights", default=None, help="safetensors file of a learned tissue segmenter")
    p.add_argument("--max-artifact", type=float, default=0.1,
                   help="drop tiles with more than this fraction of ink, debris or bubble rims")
    p.add_argument("--min-sharpness", type=float, default=None,
                   help="drop out-of-focus tiles (sharpness below this, e.g. 0.4; reads every tile)")


def _tiling_kwargs(a: argparse.Namespace) -> dict:
    kw = {"tile_size": a.tile_size, "mpp": a.mpp, "overlap": a.overlap,
          "min_tissue_fraction": a.min_tissue, "mpp_override": a.mpp_override,
          "mask_method": a.mask_method, "max_artifact_fraction": a.max_artifact,
          "min_sharpness": a.min_sharpness, "mask_weights": a.mask_weights}
    if a.mask_weights and a.mask_method == "robust":
        kw["mask_method"] = "learned"
    return kw


def _info(a: argparse.Namespace) -> int:
    from histoviz.io import open_slide

    with open_slide(a.slide) as r:
        d = r.meta.to_dict()
        d["backend"] = r.backend
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{d['path']}")
    print(f"  backend     {d['backend']} ({d['vendor']})")
    print(f"  dimensions  {d['dimensions'][0]} x {d['dimensions'][1]} px")
    if d["mpp"]:
        mpp = f"{d['mpp']:.4f} um/px ({d['mpp_source']})"
    elif d["mpp_problem"]:
        mpp = f"refused: {d['mpp_problem']} (use --mpp-override)"
    else:
        mpp = "unknown (use --mpp-override)"
    print(f"  mpp         {mpp}")
    for src, v in d["mpp_sources"].items():
        note = " (10 / objective power; compared, never used)" if src == "objective" else ""
        print(f"    {src:<16}{v:.4f} um/px{note}")
    if d["mpp_warning"]:
        print(f"  warning     {d['mpp_warning']}")
    print(f"  objective   {d['objective_power'] or 'unknown'}")
    print(f"  levels      {d['level_count']}")
    for i, (dim, ds) in enumerate(zip(d["level_dimensions"], d["level_downsamples"])):
        print(f"    {i}: {dim[0]} x {dim[1]}  (downsample {ds:g})")
    return 0


def _encoders(a: argparse.Namespace) -> int:
    from histoviz.features.encoders import check_weights, list_encoders

    if a.check:
        fit = check_weights(*a.check)
        if a.json:
            print(json.dumps({"encoder": fit.encoder, "file": str(fit.path), "fits": fit.fits,
                              "prefix": fit.prefix, "missing": fit.missing, "extra": fit.extra,
                              "unused": fit.unused, "fits_instead": fit.fits_instead,
                              "differ": [[k, list(x), list(y)] for k, x, y in fit.mismatched],
                              "hints": fit.hints}, indent=2))
        else:
            print(fit.report())
        return 0 if fit.fits else 1
    rows = [{"name": i.name, "embed_dim": i.embed_dim, "weights": i.weights_status(),
             "description": i.description, "architecture": i.architecture, "licence": i.licence,
             "source": i.source, "looked_for": i.weights_locations(), **_fit_of(i),
             **({"requires": i.requires} if i.requires else {})} for i in list_encoders()]
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    pad = " " * (w + 9)
    for r in rows:
        print(f"{r['name']:<{w}}  {r['embed_dim']:>5}  {r['description']}")
        print(f"{pad}weights: {r['weights']}")
        for key in ("fit", "architecture", "licence", "source", "requires"):
            if r.get(key):
                print(f"{pad}{key}: {r[key]}")
        for i, where in enumerate(r["looked_for"]):
            print(f"{pad}{'looked for at: ' if i == 0 else ' ' * 15}{where}")
    return 0


def _fit_of(info: object) -> dict:
    """Whether the weights file found for an encoder fits it (shapes only; nothing when none)."""
    from histoviz.errors import HistovizError
    from histoviz.features.encoders import check_weights, find_weights

    path = find_weights(info) if getattr(info, "weights", "") == "local" else None
    if path is None:
        return {}
    try:
        fit = check_weights(info.name, path, suggest=False)
    except HistovizError as e:
        return {"fits": False, "fit": str(e)}
    return {"fits": fit.fits, "fit": fit.summary()}


def _synth(a: argparse.Namespace) -> int:
    from histoviz.data.synthetic import make_synthetic_cohort

    extra = {"gene_groups": True, "hidden_factor": a.hidden_factor} if a.gene_groups else {}
    if a.hidden_factor and not a.gene_groups:
        from histoviz.errors import ConfigError

        raise ConfigError("--hidden-factor needs --gene-groups (the factor shifts two gene groups)")
    kw: dict = {"n_slides": 12, "seed": 0, "slide_size": (2048, 2048)}
    if a.preset:
        from histoviz.datasets import synthetic_preset

        kw.update(synthetic_preset(a.preset))
    if a.slides is not None:
        kw["n_slides"] = a.slides
    if a.seed is not None:
        kw["seed"] = a.seed
    if a.size is not None:
        kw["slide_size"] = (a.size, a.size)
    c = make_synthetic_cohort(a.out, progress=True, **kw, **extra)
    print(f"synthetic cohort: {len(c.slides)} slides -> {c.cohort_csv}")
    return 0


def _tile(a: argparse.Namespace) -> int:
    import numpy as np

    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.viz.thumbnails import grid_preview

    cfg = TilingConfig(**_tiling_kwargs(a))
    with open_slide(a.slide) as r:
        g = make_tile_grid(r, cfg)
        if a.sharpness and "sharpness" not in g.quality:
            from histoviz.tiling.grid import _with_sharpness

            g = _with_sharpness(r, g)
        print(f"{r.slide_id}: {len(g)} tiles of {g.tile_size} px ({g.tile_size_level0} px at level 0), "
              f"mean tissue {g.tissue_fraction.mean():.0%}")
        if a.out:
            import pandas as pd

            from histoviz._atomic import atomic_write_text, make_output_dir

            make_output_dir(a.out)

            df = pd.DataFrame({"x": g.coords[:, 0], "y": g.coords[:, 1],
                               "tissue_fraction": np.round(g.tissue_fraction, 4),
                               **{k: np.round(v, 4) for k, v in g.quality.items() if k != "tissue"}})
            atomic_write_text(a.out / f"{r.slide_id}_tiles.csv", df.to_csv(index=False))
            png = grid_preview(r, g, a.out / f"{r.slide_id}_tiles.png")
            print(f"  -> {a.out / f'{r.slide_id}_tiles.csv'}, {png}")
    return 0


def _embed(a: argparse.Namespace) -> int:
    from histoviz.data.cohort import read_cohort
    from histoviz.errors import ConfigError
    from histoviz.features.cohort import embed_cohort
    from histoviz.features.embed import resolve_device
    from histoviz.features.encoders import encoder_info
    from histoviz.tiling import TilingConfig

    encoder_info(a.encoder)
    TilingConfig(**_tiling_kwargs(a))
    if a.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {a.workers}")
    if a.read_threads < 1:
        raise ConfigError(f"--read-threads must be >= 1, got {a.read_threads}")
    gpus = None
    if a.gpus is not None:
        try:
            gpus = [int(g) for g in a.gpus.split(",") if g.strip() != ""]
        except ValueError:
            raise ConfigError(f"--gpus takes GPU indices like 0,1; got {a.gpus!r}") from None
    dev = "cuda" if gpus is not None else str(resolve_device(a.device))
    src = Path(a.input)
    enc_kw: dict = {}
    if a.precision != "fp32":
        from histoviz.features.encoders import check_precision_device

        check_precision_device(a.precision, dev)  # int8 on a GPU, bf16 on a CPU without it
        enc_kw["precision"] = a.precision
    if a.random_weights:
        enc_kw["pretrained"] = False
    if a.weights:
        enc_kw["weights"] = a.weights
    enc = None
    if not a.random_weights:
        # fail fast on missing weights, or a file that does not fit, before any cluster starts
        from histoviz.features.encoders import create_encoder

        enc = create_encoder(a.encoder, **enc_kw)
    one_slide = src.is_dir() or src.suffix.lower() not in (".csv", ".tsv", ".parquet", ".txt")
    if one_slide and not (a.scheduler or gpus):
        return _embed_one_slide(a, src, enc_kw, enc)
    del enc  # the workers build their own
    if one_slide:  # --scheduler / --gpus: a one-slide cohort, so they are used (or refused), never ignored
        from histoviz.data.cohort import cohort_from_paths

        cohort = cohort_from_paths([src])
    else:
        cohort = read_cohort(src)
    workers = a.workers if len(cohort) > 1 or a.scheduler or gpus else 0
    res = embed_cohort(cohort, a.out, encoder=a.encoder, encoder_kwargs=enc_kw,
                       tiling=_tiling_kwargs(a), workers=workers, scheduler=a.scheduler,
                       batch_size=a.batch_size, device=a.device, progress=not a.no_progress,
                       overwrite=a.overwrite, gpus=gpus, stage_dir=a.stage_dir, decode=a.decode,
                       read_threads=a.read_threads)
    print(res.summary())
    if res.failed:
        return 1 if len(res.failed) == len(res.slides) else 3
    return 0


def _embed_one_slide(a: argparse.Namespace, src: Path, enc_kw: dict, enc: object = None) -> int:
    """One slide (or DICOM series folder): the cohort engine in this process on a one-row cohort,
    so that locks, recipes, staging and the report are the same as for a cohort (``enc``: the
    encoder already built, used instead of a second one)."""
    from histoviz.data.cohort import cohort_from_paths
    from histoviz.errors import HistovizError, LockedError
    from histoviz.features.cohort import embed_cohort

    res = embed_cohort(cohort_from_paths([src]), a.out, encoder=a.encoder, encoder_kwargs=enc_kw,
                       tiling=_tiling_kwargs(a), workers=0, batch_size=a.batch_size, device=a.device,
                       progress=not a.no_progress, overwrite=a.overwrite, stage_dir=a.stage_dir,
                       decode=a.decode, read_threads=a.read_threads, encoder_object=enc)
    (st,) = res.slides
    if st.note and st.status != "busy":
        print(f"{st.slide_id}: {st.note}")  # e.g. the lock of a dead process was recovered
    if st.status == "skipped":
        print(f"{st.slide_id}: already embedded -> {st.path}")
    elif st.status == "busy":
        raise LockedError(f"{a.out / (st.slide_id + '.h5')}: {st.note}; wait for it or remove "
                          f"{a.out / ('.' + st.slide_id + '.lock')} if that process is gone")
    elif st.status != "done":
        raise HistovizError(st.error)
    else:
        rate = st.n_tiles / st.seconds if st.seconds > 0 else 0.0
        print(f"{st.slide_id}: {st.n_tiles} tiles embedded with {a.encoder} in {st.seconds:.1f} s "
              f"({rate:.0f} tiles/s) -> {st.path}")
    return 0
