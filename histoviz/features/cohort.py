"""Embed a whole cohort: one task per slide, on dask.distributed or in-process.

Each slide's features are written atomically to ``<out>/<slide_id>.h5``. A rerun skips bags
made with the same embedding recipe (encoder, weights digest, tiling, tissue detection; see
:mod:`histoviz.features.recipe`) and refuses, listing the differences, a folder or bags made
another way unless ``overwrite``. Per-slide lock files let several processes (or machines on
a shared file system) work on one folder without embedding any slide twice; locks of dead
processes are taken over and said. A slide that cannot be read is reported and skipped
while the rest finish. Every run writes a report (:mod:`histoviz.features.report`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from histoviz._atomic import atomic_write_text, clean_stale_temps, make_output_dir
from histoviz.errors import ConfigError, HistovizError, StorageError
from histoviz.features.report import CohortEmbedResult, SlideStatus

__all__ = ["CohortEmbedResult", "SlideStatus", "check_feature_folder", "embed_cohort"]

log = logging.getLogger(__name__)
_WORKER_ENCODERS: dict[tuple[Any, ...], Any] = {}
_PROGRESS_TOPIC = "histoviz-embed-progress"


# ------------------------------------------------------------------------------------------------
# one slide (runs in a dask worker or in-process)
# ------------------------------------------------------------------------------------------------
def _progress_sink(slide_id: str, local: Any) -> Any:
    """A ``callback(done, total)`` reporting tiles to the run's progress line."""
    if local is not None:  # in-process
        return lambda done, total: local.tiles(slide_id, done, total)
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    last = [0.0]

    def cb(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 0.5 or done == total:
            last[0] = now
            worker.log_event(_PROGRESS_TOPIC, {"slide_id": slide_id, "done": done, "total": total})

    return cb


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "main"


def _encoder_key(encoder: str, kwargs: dict[str, Any]) -> tuple:
    """Key of an encoder in a process's cache (``_WORKER_ENCODERS``)."""
    return encoder, tuple(sorted((k, str(v)) for k, v in kwargs.items()))


def _embed_one(slide_id: str, path: str, out_dir: str, job: dict[str, Any],
               local_progress: Any = None) -> SlideStatus:
    """Task body. Never raises for bad slides; holds the slide's lock while working."""
    import torch

    from histoviz.features.embed import EmbedStats, embed_slide
    from histoviz.features.encoders import create_encoder
    from histoviz.features.locks import SlideLock
    from histoviz.features.recipe import compare_recipes, embedding_recipe
    from histoviz.io import is_complete_bag, open_slide
    from histoviz.tiling.grid import TilingConfig

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    out = Path(out_dir) / f"{slide_id}.h5"
    worker = _worker_name()
    device = job["device"]
    gpus = job.get("gpus")
    if gpus:  # one worker per GPU: LocalCluster names its workers 0..n-1
        try:
            idx = int(worker)
        except ValueError:
            idx = 0
        gpu = gpus[idx % len(gpus)]
        device = device if device == "cpu" else f"cuda:{gpu}"  # "cpu": plumbing tests
        worker = f"{worker} (GPU {gpu})"
    if device == "auto":
        from histoviz.features.embed import resolve_device

        device = str(resolve_device(device))
    st = SlideStatus(slide_id, "failed", path, worker=worker, device=str(device))
    t0 = time.perf_counter()
    lock = SlideLock(out_dir, slide_id)
    if not lock.acquire():
        st.status = "busy"
        st.note = f"being embedded by {lock.describe_holder()}"
        return st
    try:
        st.note = lock.recovered
        # another process may have finished it between our check and the lock
        if is_complete_bag(out) and not job["overwrite"] and not compare_recipes(
                job["recipe"], embedding_recipe(out)):
            st.status, st.path = "skipped", str(out)
            return st
        clean_stale_temps(out_dir, stem=slide_id, owned=True)  # leftovers of killed runs
        key = _encoder_key(job["encoder"], job["encoder_kwargs"])
        enc = _WORKER_ENCODERS.get(key)
        if enc is None:
            enc = _WORKER_ENCODERS[key] = create_encoder(job["encoder"], **job["encoder_kwargs"])
        stats = EmbedStats()
        cb = _progress_sink(slide_id, local_progress)
        if job.get("stage_dir"):
            from histoviz.features.staging import staged_slide

            ts = time.perf_counter()
            with staged_slide(path, job["stage_dir"], slide_id) as local:
                st.seconds_stage = time.perf_counter() - ts
                _embed_path(local, slide_id, out, enc, job, stats, cb, st, open_slide,
                            embed_slide, TilingConfig, device)
        else:
            _embed_path(Path(path), slide_id, out, enc, job, stats, cb, st, open_slide,
                        embed_slide, TilingConfig, device)
        st.status, st.path, st.n_tiles = "done", str(out), stats.n_tiles
    except StorageError as e:
        if e.path and Path(e.path).resolve().is_relative_to(Path(out_dir).resolve()):
            raise  # the output disk is full or read-only: no other slide can be written either
        st.error = str(e)  # e.g. a full staging cache: this slide is reported, the others go on
    except HistovizError as e:
        st.error = str(e)
    except Exception as e:  # a corrupt slide must not take the cohort down
        log.exception("slide %s failed", slide_id)
        st.error = f"{path}: {type(e).__name__}: {e}"
    finally:
        lock.release()
        st.seconds = time.perf_counter() - t0
    return st


def _embed_path(path: Path, slide_id: str, out: Path, enc: Any, job: dict[str, Any], stats: Any,
                cb: Any, st: SlideStatus, open_slide: Any, embed_slide: Any, tiling_cls: Any,
                device: str) -> None:
    t = time.perf_counter()
    with open_slide(path, slide_id=slide_id) as reader:
        st.seconds_open = time.perf_counter() - t
        embed_slide(reader, enc, tiling=tiling_cls(**job["tiling"]), out=out,
                    batch_size=job["batch_size"], device=device, num_workers=job["loader_workers"],
                    stats=stats, progress_callback=cb, decode=job["decode"], recipe=job["recipe"],
                    read_threads=job.get("read_threads", 1))
    st.seconds_mask, st.seconds_read = stats.seconds_mask, stats.seconds_read
    st.seconds_encode, st.seconds_write = stats.seconds_forward, stats.seconds_write
    st.decode = stats.decode


# ------------------------------------------------------------------------------------------------
# the cohort
# ------------------------------------------------------------------------------------------------
def check_feature_folder(out: str | os.PathLike, recipe: dict[str, Any], *, overwrite: bool = False,
                         sample: int = 3) -> None:
    """Refuse to add bags of ``recipe`` to a folder that holds bags made another way.

    The folder's ``embed_config.json`` says how its bags were made; without one, a few of
    its bags are asked. Nothing is refused with ``overwrite`` (the caller re-embeds).

    Raises
    ------
    ConfigError
        Listing the differences (new vs folder) and what to do.
    """
    from histoviz.features.recipe import compare_recipes, embedding_recipe

    out = Path(out)
    if overwrite or not out.is_dir():
        return
    cfg = out / "embed_config.json"
    diffs: list[str] = []
    if cfg.is_file():
        try:
            old = json.loads(cfg.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{cfg}: unreadable ({e}); remove it or pass --overwrite") from None
        prev = embedding_recipe({"recipe": json.dumps(old["recipe"])} if "recipe" in old else
                                {"encoder": old.get("encoder"), **(old.get("tiling") or {})})
        diffs = compare_recipes(recipe, prev)
    else:
        from histoviz.io.featurebag import is_complete_bag

        for bag in sorted(out.glob("*.h5"))[:sample]:
            if is_complete_bag(bag):
                diffs = compare_recipes(recipe, embedding_recipe(bag))
                if diffs:
                    diffs = [f"{bag.name}: {d}" for d in diffs]
                    break
    if diffs:
        raise ConfigError(
            f"{out}: this folder holds bags made another way ({'; '.join(diffs)}; new vs "
            "folder); mixing them would train on features that do not compare. Use another "
            "--out folder, or --overwrite to re-embed"
        )


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
    progress: bool | Any = True,
    overwrite: bool = False,
    gpus: list[int] | None = None,
    stage_dir: str | os.PathLike | None = None,
    decode: str = "auto",
    read_threads: int = 1,
    encoder_object: Any = None,
) -> CohortEmbedResult:
    """Embed every slide of ``cohort`` into ``out_dir/<slide_id>.h5``.

    Parameters
    ----------
    cohort
        Table with ``slide_id`` and ``path`` (see :func:`histoviz.data.cohort.read_cohort`);
        a path may be a DICOM series folder.
    out_dir
        Output folder; also receives ``embed_config.json`` (the recipe), ``embed_summary.csv``,
        ``embed_report.{md,json}`` and ``reports/``.
    encoder, encoder_kwargs
        Registry name and its arguments (e.g. ``{"pretrained": False}``).
    tiling
        :class:`~histoviz.tiling.TilingConfig` fields.
    workers
        ``0``: run in this process. ``>= 1``: a dask ``LocalCluster`` with that many worker
        processes (one slide per task). Ignored when ``scheduler`` or ``gpus`` is given.
    scheduler
        Address of an existing dask scheduler (``tcp://host:8786``).
    batch_size, device, loader_workers, decode, read_threads
        Passed to :func:`embed_slide` (``loader_workers`` only in-process; dask workers are
        daemonic and decode in their own process, with ``read_threads`` threads).
    progress
        A live progress line over all slides and workers (stderr); or a
        :class:`~histoviz.features.report.ProgressLine` to draw on.
    overwrite
        Re-embed slides whose bag was made with another recipe (and accept a folder whose
        ``embed_config.json`` says so) instead of refusing.
    gpus
        GPU indices: one dask worker per GPU, each task declaring the dask resource
        ``{"GPU": 1}`` so slides spread over the GPUs. With ``device="cpu"`` only the
        plumbing runs (for tests). With ``scheduler``, workers must have been started with
        ``--resources GPU=1``.
    stage_dir
        Copy each slide into this local folder before reading it (slow network storage); the
        copy is removed when the slide is done.
    encoder_object
        The encoder ``encoder`` with ``encoder_kwargs`` already built in this process (used for
        the slides embedded here instead of building it again).

    Returns
    -------
    :class:`CohortEmbedResult`; failures are listed, not raised.

    Raises
    ------
    ConfigError
        Bad settings, an unreachable scheduler, or a folder/bags made with another recipe
        (without ``overwrite``).
    StorageError
        ``out_dir`` is a file, read-only, or full: the run stops (finished bags are kept, a
        rerun resumes).
    """
    from histoviz.features.embed import resolve_device
    from histoviz.features.encoders import encoder_info
    from histoviz.features.recipe import compare_recipes, embedding_recipe, make_recipe
    from histoviz.features.report import ProgressLine, env_summary, write_run_report
    from histoviz.io.featurebag import is_complete_bag
    from histoviz.tiling.grid import TilingConfig

    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    encoder_info(encoder)  # unknown encoder -> clear error before any work
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if gpus is not None:
        gpus = [int(g) for g in gpus]
        if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
            raise ConfigError(f"gpus must be distinct indices >= 0 (e.g. 0,1), got {gpus}")
        if device != "cpu":
            for g in gpus:
                try:
                    resolve_device(f"cuda:{g}")
                except ConfigError as e:
                    raise ConfigError(f"--gpus {','.join(map(str, gpus))}: {str(e).split(': ', 1)[-1].split(';')[0]}; "
                                      "drop --gpus to embed on the CPU") from None
    else:
        resolve_device(device)
    encoder_kwargs = dict(encoder_kwargs or {})
    tiling = dict(tiling or {})
    tcfg = TilingConfig(**tiling)  # validate early
    recipe = make_recipe(encoder, tcfg, encoder_kwargs=encoder_kwargs)
    if scheduler:
        _probe_scheduler(scheduler)  # before anything is written
    out = make_output_dir(out_dir)
    check_feature_folder(out, recipe, overwrite=overwrite)
    removed = clean_stale_temps(out)  # temp files of writers that died
    if removed:
        log.info("removed %d temporary file(s) left by dead processes in %s", len(removed), out)

    result = CohortEmbedResult(out)
    todo, mismatched = [], []
    for row in cohort.itertuples(index=False):
        sid, path = str(row.slide_id), str(row.path)
        final = out / f"{sid}.h5"
        if is_complete_bag(final):
            diffs = compare_recipes(recipe, embedding_recipe(final))
            if not diffs:
                result.slides.append(SlideStatus(sid, "skipped", str(final)))
                continue
            if not overwrite:
                mismatched.append(f"{sid} ({'; '.join(diffs)})")
                continue
        if not os.path.lexists(path):  # links that lead nowhere are explained by open_slide
            result.slides.append(SlideStatus(sid, "failed", path, error=f"{path}: slide file not found"))
            continue
        todo.append((sid, path))
    if mismatched:
        raise ConfigError(
            f"{out}: {len(mismatched)} bag(s) were made another way (new vs existing): "
            f"{', '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''}; use another "
            "--out folder or --overwrite to re-embed them"
        )
    cfg_doc = {"recipe": recipe, "encoder": encoder,
               "encoder_kwargs": {k: str(v) for k, v in encoder_kwargs.items()},
               "tiling": tiling, "batch_size": batch_size}
    cfg_path = out / "embed_config.json"
    if overwrite or not cfg_path.is_file():
        atomic_write_text(cfg_path, json.dumps(cfg_doc, indent=2))

    if isinstance(progress, ProgressLine):
        line = progress
        line.n = len(todo)
    else:
        line = ProgressLine(len(todo), enabled=bool(progress) and bool(todo))

    def _done(st: SlideStatus) -> None:
        result.slides.append(st)
        line.finished(st.slide_id, st.status, st.n_tiles)

    job = {"encoder": encoder, "encoder_kwargs": encoder_kwargs, "tiling": tiling,
           "batch_size": batch_size, "device": device, "loader_workers": loader_workers,
           "decode": decode, "recipe": recipe, "overwrite": overwrite, "gpus": gpus,
           "read_threads": int(read_threads),
           "stage_dir": str(stage_dir) if stage_dir else None, "threads": None}
    n_workers = len(gpus) if gpus else workers
    try:
        if todo and (scheduler or n_workers >= 1):
            _run_dask(todo, str(out), job, n_workers, scheduler, _done, line)
        else:
            if encoder_object is not None:
                _WORKER_ENCODERS[_encoder_key(encoder, encoder_kwargs)] = encoder_object
            for sid, path in todo:
                _done(_embed_one(sid, path, str(out), {**job, "loader_workers": loader_workers},
                                 local_progress=line))
    finally:
        line.close()
        order = {sid: i for i, sid in enumerate(cohort["slide_id"].astype(str))}
        result.slides.sort(key=lambda s: order.get(s.slide_id, 1 << 30))
        tbl = result.table()
        try:
            if not tbl.empty:
                atomic_write_text(out / "embed_summary.csv", tbl.to_csv(index=False))
        except OSError as e:  # a full disk: the run's own error says so
            log.warning("could not write the run summary in %s: %s", out, e)
        run = {"run_id": f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", "started": started,
               "wall_seconds": time.perf_counter() - t_start, "out_dir": str(out),
               "recipe": recipe, "workers": n_workers if (scheduler or n_workers) else 0,
               "scheduler": scheduler, "gpus": gpus, "device": device,
               "stage_dir": str(stage_dir) if stage_dir else None,
               "removed_temp_files": [p.name for p in removed], **env_summary()}
        try:
            result.report = write_run_report(result, run)[1]
        except OSError as e:  # the report must not hide the run's own outcome
            log.warning("could not write the run report in %s: %s", out, e)
    return result


def _probe_scheduler(scheduler: str) -> None:
    """Refuse a ``tcp://host:port`` address where nothing listens, at once (other schemes are
    checked when the client connects)."""
    import socket
    from urllib.parse import urlsplit

    try:
        u = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
        host, port = u.hostname, u.port
    except ValueError:
        raise ConfigError(f"--scheduler {scheduler}: not an address like tcp://host:8786") from None
    if u.scheme != "tcp" or not host or not port:
        return
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        raise ConfigError(f"--scheduler {scheduler}: cannot reach a dask scheduler there ({e.strerror or e}); "
                          "check the address, or start one with `dask scheduler`, or drop --scheduler to use "
                          "local workers") from None


def _connect(scheduler: str) -> Any:
    from distributed import Client

    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(
            f"--scheduler {scheduler}: cannot reach a dask scheduler there ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]}); check the address, or start one with "
            "`dask scheduler`, or drop --scheduler to use local workers"
        ) from None


def _run_dask(todo: list[tuple[str, str]], out_dir: str, job: dict[str, Any], workers: int,
              scheduler: str | None, on_done: Any, line: Any) -> None:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    resources = {"GPU": 1} if job.get("gpus") else None
    if scheduler:
        client = _connect(scheduler)
    else:
        n = max(1, workers)
        job = {**job, "threads": max(1, (os.cpu_count() or 1) // n)}
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR,
                               resources=resources)
        client = Client(cluster)
    job = {**job, "loader_workers": 0}

    def on_event(event: Any) -> None:
        try:
            _, msg = event
            line.tiles(msg["slide_id"], msg["done"], msg["total"])
        except Exception:  # progress must never break the run
            pass

    try:
        client.subscribe_topic(_PROGRESS_TOPIC, on_event)
        futs = [client.submit(_embed_one, sid, path, out_dir, job, key=f"embed-{sid}", pure=False,
                              resources=resources)
                for sid, path in todo]
        for fut in as_completed(futs):
            try:
                on_done(fut.result())
            except StorageError:
                client.cancel(futs)
                raise
            except Exception as e:  # worker died (e.g. segfault in a decoder)
                sid = str(fut.key).removeprefix("embed-")
                path = dict(todo).get(sid, "")
                on_done(SlideStatus(sid, "failed", path, error=f"{path}: worker crashed ({e})"))
    finally:
        try:
            client.unsubscribe_topic(_PROGRESS_TOPIC)
        except Exception:
            pass
        client.close()
        if cluster is not None:
            cluster.close()
