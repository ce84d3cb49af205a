"""Embed a whole cohort: one task per slide, on dask.distributed or in-process.

Each slide's features are written atomically to ``<out>/<slide_id>.h5``; slides whose file
is already complete are skipped, so an interrupted run resumes where it stopped. A slide that
cannot be read is reported and skipped while the rest finish.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histoviz._atomic import atomic_write_text
from histoviz.errors import HistovizError

__all__ = ["CohortEmbedResult", "SlideStatus", "embed_cohort"]

log = logging.getLogger(__name__)
_WORKER_ENCODERS: dict[tuple[Any, ...], Any] = {}


@dataclass
class SlideStatus:
    """Outcome of one slide: ``done``, ``skipped`` (already complete) or ``failed``."""

    slide_id: str
    status: str
    path: str
    n_tiles: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class CohortEmbedResult:
    """Per-slide outcomes plus the summary file written next to the features."""

    out_dir: Path
    slides: list[SlideStatus] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of slides per status."""
        c: dict[str, int] = {"done": 0, "skipped": 0, "failed": 0}
        for s in self.slides:
            c[s.status] = c.get(s.status, 0) + 1
        return c

    @property
    def failed(self) -> list[SlideStatus]:
        """Slides that could not be embedded."""
        return [s for s in self.slides if s.status == "failed"]

    def table(self) -> pd.DataFrame:
        """One row per slide."""
        return pd.DataFrame([asdict(s) for s in self.slides])

    def summary(self) -> str:
        """Human-readable summary (printed by the CLI)."""
        c = self.counts()
        tiles = sum(s.n_tiles for s in self.slides if s.status == "done")
        secs = sum(s.seconds for s in self.slides if s.status == "done")
        lines = [
            f"{len(self.slides)} slides: {c['done']} embedded, {c['skipped']} already done, "
            f"{c['failed']} failed; {tiles} tiles in {secs:.1f} s of slide time -> {self.out_dir}"
        ]
        for s in self.failed:
            lines.append(f"  FAILED {s.slide_id}: {s.error}")
        return "\n".join(lines)


def _embed_one(
    slide_id: str,
    path: str,
    out_dir: str,
    encoder_name: str,
    encoder_kwargs: dict[str, Any],
    tiling_kwargs: dict[str, Any],
    batch_size: int,
    device: str,
    num_workers: int,
    threads: int | None,
) -> SlideStatus:
    """Task body (runs in a dask worker or in-process). Never raises for bad slides."""
    import torch

    from histoviz.features.embed import EmbedStats, embed_slide
    from histoviz.features.encoders import create_encoder
    from histoviz.io import open_slide
    from histoviz.tiling.grid import TilingConfig

    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir) / f"{slide_id}.h5"
    t0 = time.perf_counter()
    try:
        key = (encoder_name, tuple(sorted((k, str(v)) for k, v in encoder_kwargs.items())))
        enc = _WORKER_ENCODERS.get(key)
        if enc is None:
            enc = create_encoder(encoder_name, **encoder_kwargs)
            _WORKER_ENCODERS[key] = enc
        stats = EmbedStats()
        with open_slide(path, slide_id=slide_id) as reader:
            embed_slide(reader, enc, tiling=TilingConfig(**tiling_kwargs), out=out, batch_size=batch_size,
                        device=device, num_workers=num_workers, stats=stats)
        return SlideStatus(slide_id, "done", str(out), stats.n_tiles, time.perf_counter() - t0)
    except HistovizError as e:
        return SlideStatus(slide_id, "failed", path, 0, time.perf_counter() - t0, str(e))
    except Exception as e:  # a corrupt slide must not take the cohort down
        log.exception("slide %s failed", slide_id)
        return SlideStatus(slide_id, "failed", path, 0, time.perf_counter() - t0,
                           f"{path}: {type(e).__name__}: {e}")


def _clean_stale_tmp(out_dir: Path, slide_id: str) -> None:
    for p in out_dir.glob(f".{slide_id}.*.tmp"):
        p.unlink(missing_ok=True)


def embed_cohort(
    cohort: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    encoder: str = "efficientnet-lite0",
    encoder_kwargs: dict[str, Any] | None = None,
    tiling: dict[str, Any] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    loader_workers: int = 0,
    progress: bool = True,
) -> CohortEmbedResult:
    """Embed every slide of ``cohort`` into ``out_dir/<slide_id>.h5``.

    Parameters
    ----------
    cohort
        Table with ``slide_id`` and ``path`` (see :func:`histoviz.data.cohort.read_cohort`).
    out_dir
        Output folder; also receives ``embed_summary.csv`` and ``embed_config.json``.
    encoder, encoder_kwargs
        Registry name and its arguments (e.g. ``{"pretrained": False}``).
    tiling
        :class:`~histoviz.tiling.TilingConfig` fields.
    workers
        ``0``: run in this process. ``>= 1``: a dask ``LocalCluster`` with that many worker
        processes (one slide per task). Ignored when ``scheduler`` is given.
    scheduler
        Address of an existing dask scheduler (``tcp://host:8786``).
    batch_size, device, loader_workers
        Passed to :func:`embed_slide` (``loader_workers`` only in-process; dask workers are
        daemonic and decode in their own thread).
    progress
        Progress bar over slides.

    Returns
    -------
    :class:`CohortEmbedResult`; failures are listed, not raised.
    """
    from histoviz.features.encoders import encoder_info
    from histoviz.io.featurebag import is_complete_bag
    from histoviz.tiling.grid import TilingConfig

    encoder_info(encoder)  # unknown encoder -> clear error before any work
    encoder_kwargs = dict(encoder_kwargs or {})
    tiling = dict(tiling or {})
    tcfg = TilingConfig(**tiling)  # validate early
    done_kw = {"encoder": encoder, "tile_size": tcfg.tile_size,
               "mpp": tcfg.mpp if tcfg.mpp is not None else -1.0}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "embed_config.json",
        json.dumps({"encoder": encoder, "encoder_kwargs": {k: str(v) for k, v in encoder_kwargs.items()},
                    "tiling": tiling, "batch_size": batch_size}, indent=2),
    )
    result = CohortEmbedResult(out)
    todo = []
    for row in cohort.itertuples(index=False):
        sid, path = str(row.slide_id), str(row.path)
        final = out / f"{sid}.h5"
        if is_complete_bag(final, **done_kw):
            result.slides.append(SlideStatus(sid, "skipped", str(final)))
            continue
        _clean_stale_tmp(out, sid)
        if not Path(path).exists():
            result.slides.append(SlideStatus(sid, "failed", path, error=f"{path}: slide file not found"))
            continue
        todo.append((sid, path))

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="slides", unit="slide")

    def _done(st: SlideStatus) -> None:
        result.slides.append(st)
        if bar is not None:
            bar.update(1)

    common = (str(out), encoder, encoder_kwargs, tiling, batch_size, device)
    try:
        if todo and (scheduler or workers >= 1):
            _run_dask(todo, common, workers, scheduler, _done)
        else:
            for sid, path in todo:
                _done(_embed_one(sid, path, *common, loader_workers, None))
    finally:
        if bar is not None:
            bar.close()
        order = {sid: i for i, sid in enumerate(cohort["slide_id"].astype(str))}
        result.slides.sort(key=lambda s: order.get(s.slide_id, 1 << 30))
        tbl = result.table()
        if not tbl.empty:
            atomic_write_text(out / "embed_summary.csv", tbl.to_csv(index=False))
    return result


def _run_dask(todo: list[tuple[str, str]], common: tuple[Any, ...], workers: int,
              scheduler: str | None, on_done: Any) -> None:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
        threads = None
    else:
        n = max(1, workers)
        threads = max(1, (os.cpu_count() or 1) // n)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        futs = [client.submit(_embed_one, sid, path, *common, 0, threads, key=f"embed-{sid}", pure=False)
                for sid, path in todo]
        for fut in as_completed(futs):
            try:
                on_done(fut.result())
            except Exception as e:  # worker died (e.g. segfault in a decoder)
                sid = str(fut.key).removeprefix("embed-")
                path = dict(todo).get(sid, "")
                on_done(SlideStatus(sid, "failed", path, error=f"{path}: worker crashed ({e})"))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
