"""What a cohort run did (:class:`CohortEmbedResult`), its reports (markdown + JSON) and the
live progress line.

Every :func:`~histoviz.features.cohort.embed_cohort` run writes
``<out>/reports/embed-<run_id>.{json,md}`` and copies them to ``<out>/embed_report.{json,md}``:
per slide its status, tiles, seconds per stage (stage, open, mask, read, encode, write),
worker and device, errors and notes (e.g. a recovered lock), and totals.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from histoviz._atomic import atomic_write_text

__all__ = ["STAGES", "CohortEmbedResult", "ProgressLine", "SlideStatus", "write_run_report"]

STAGES = ("stage", "open", "mask", "read", "encode", "write")


@dataclass
class SlideStatus:
    """Outcome of one slide.

    ``status`` is ``done``, ``skipped`` (already complete with the same recipe), ``busy``
    (another live process holds its lock) or ``failed``. ``seconds_<stage>`` time the stages
    (stage, open, mask, read, encode, write); ``note`` says e.g. that a dead process's lock
    was recovered.
    """

    slide_id: str
    status: str
    path: str
    n_tiles: int = 0
    seconds: float = 0.0
    error: str = ""
    note: str = ""
    worker: str = ""
    device: str = ""
    decode: str = ""
    seconds_stage: float = 0.0
    seconds_open: float = 0.0
    seconds_mask: float = 0.0
    seconds_read: float = 0.0
    seconds_encode: float = 0.0
    seconds_write: float = 0.0


@dataclass
class CohortEmbedResult:
    """Per-slide outcomes plus the files written next to the features."""

    out_dir: Path
    slides: list[SlideStatus] = field(default_factory=list)
    report: Path | None = None

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
        busy = f", {c['busy']} being embedded by another process" if c.get("busy") else ""
        lines = [
            f"{len(self.slides)} slides: {c['done']} embedded, {c['skipped']} already done, "
            f"{c['failed']} failed{busy}; {tiles} tiles in {secs:.1f} s of slide time -> {self.out_dir}"
        ]
        lines += [f"  note {s.slide_id}: {s.note}" for s in self.slides if s.note]
        lines += [f"  FAILED {s.slide_id}: {s.error}" for s in self.failed]
        if self.report is not None:
            lines.append(f"  report: {self.report}")
        return "\n".join(lines)



class ProgressLine:
    """One status line over all slides and workers: slides done, tiles, throughput, running.

    Thread-safe (dask events arrive on the client's thread). On a terminal the line is
    redrawn in place at most 4 times a second; otherwise a line is printed every 30 s.
    """

    def __init__(self, n_slides: int, stream: TextIO | None = None, enabled: bool = True,
                 label: str = "embed") -> None:
        self.n = n_slides
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self._tiles: dict[str, tuple[int, int]] = {}  # running slide -> (done, total)
        self._finished_tiles = 0
        self._status: dict[str, int] = {}
        self._t0 = time.perf_counter()
        self._last = 0.0
        self.events = 0  # tile reports received (from dask workers or in-process)

    def tiles(self, slide_id: str, done: int, total: int) -> None:
        """A running slide reports ``done`` of ``total`` tiles."""
        with self._lock:
            self._tiles[slide_id] = (int(done), int(total))
            self.events += 1
        self._draw()

    def finished(self, slide_id: str, status: str, n_tiles: int) -> None:
        """A slide ended with ``status``."""
        with self._lock:
            self._tiles.pop(slide_id, None)
            self._status[status] = self._status.get(status, 0) + 1
            if status == "done":
                self._finished_tiles += int(n_tiles)
        self._draw(force=True)

    def text(self) -> str:
        """The current line."""
        with self._lock:
            ended = sum(self._status.values())
            tiles = self._finished_tiles + sum(d for d, _ in self._tiles.values())
            running = sorted(self._tiles)
            st = dict(self._status)
        el = max(time.perf_counter() - self._t0, 1e-9)
        parts = [f"slides {ended}/{self.n}"]
        extra = [f"{v} {k}" for k, v in sorted(st.items()) if k != "done" and v]
        if extra:
            parts[0] += f" ({', '.join(extra)})"
        parts.append(f"{tiles} tiles, {tiles / el:.0f} tiles/s")
        if running:
            shown = ", ".join(running[:4]) + (f" +{len(running) - 4}" if len(running) > 4 else "")
            parts.append(f"running {shown}")
        return f"{self.label}: " + " | ".join(parts)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < (0.25 if self.tty else 30.0):
            return
        self._last = now
        line = self.text()
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the line."""
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _totals(slides: Sequence[Any], wall: float) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for s in slides:
        counts[s.status] = counts.get(s.status, 0) + 1
    done = [s for s in slides if s.status == "done"]
    stage = {k: round(sum(getattr(s, f"seconds_{k}", 0.0) for s in done), 3) for k in STAGES}
    tiles = sum(s.n_tiles for s in done)
    return {"slides": len(slides), **counts, "tiles": tiles, "seconds_wall": round(wall, 3),
            "seconds_per_stage": stage, "tiles_per_s_wall": round(tiles / wall, 2) if wall > 0 else None}


def write_run_report(result: CohortEmbedResult, run: dict[str, Any]) -> tuple[Path, Path]:
    """Write the JSON and markdown reports of a cohort run; return their paths.

    Parameters
    ----------
    result
        The run's per-slide outcomes.
    run
        Run metadata (``run_id``, ``started``, ``wall_seconds``, ``recipe``, ``workers``...).
    """
    out = Path(result.out_dir)
    slides = result.slides
    totals = _totals(slides, float(run.get("wall_seconds", 0.0)))
    doc = {"run": run, "totals": totals, "slides": [asdict(s) for s in slides]}
    rid = run["run_id"]
    js = json.dumps(doc, indent=1, default=str)
    md = _markdown(run, totals, slides)
    jp = atomic_write_text(out / "reports" / f"embed-{rid}.json", js)
    mp = atomic_write_text(out / "reports" / f"embed-{rid}.md", md)
    atomic_write_text(out / "embed_report.json", js)
    atomic_write_text(out / "embed_report.md", md)
    return jp, mp


def _markdown(run: dict[str, Any], totals: dict[str, Any], slides: Sequence[Any]) -> str:
    rec = run.get("recipe", {})
    lines = [
        f"# Embedding run {run['run_id']}",
        "",
        f"- output: `{run.get('out_dir')}`",
        f"- started {run.get('started')}, {totals['seconds_wall']:.1f} s wall, host {run.get('host')}, "
        f"histoviz {run.get('histoviz_version')}",
        f"- encoder `{rec.get('encoder')}` (weights {str(rec.get('weights'))[:23]}), "
        f"{rec.get('tile_size')} px at {rec.get('mpp')} um/px, mask `{rec.get('mask_method')}`",
        f"- workers: {run.get('workers')}" + (f", GPUs {run['gpus']}" if run.get("gpus") else "")
        + (f", scheduler {run['scheduler']}" if run.get("scheduler") else "")
        + (f", staged through `{run['stage_dir']}`" if run.get("stage_dir") else ""),
        "",
        "## Totals",
        "",
        "| slides | done | skipped | busy | failed | tiles | tiles/s (wall) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {totals['slides']} | {totals.get('done', 0)} | {totals.get('skipped', 0)} | "
        f"{totals.get('busy', 0)} | {totals.get('failed', 0)} | {totals['tiles']} | "
        f"{totals['tiles_per_s_wall']} |",
        "",
        "Seconds per stage, summed over embedded slides: "
        + ", ".join(f"{k} {v:.1f}" for k, v in totals["seconds_per_stage"].items()),
        "",
        "## Slides",
        "",
        "| slide | status | tiles | seconds | " + " | ".join(STAGES) + " | worker | device | note |",
        "|---|---|---:|---:|" + "---:|" * len(STAGES) + "---|---|---|",
    ]
    for s in slides:
        stages = " | ".join(f"{getattr(s, f'seconds_{k}', 0.0):.2f}" for k in STAGES)
        note = (s.error or s.note).replace("|", "/").replace("\n", " ")
        lines.append(f"| {s.slide_id} | {s.status} | {s.n_tiles} | {s.seconds:.2f} | {stages} | "
                     f"{s.worker} | {s.device} | {note} |")
    failed = [s for s in slides if s.status == "failed"]
    if failed:
        lines += ["", "## Errors", ""]
        lines += [f"- **{s.slide_id}**: {s.error}" for s in failed]
    return "\n".join(lines) + "\n"


def env_summary() -> dict[str, Any]:
    """Host, pid and version for the run record."""
    import socket

    from histoviz._version import __version__

    return {"host": socket.gethostname(), "pid": os.getpid(), "histoviz_version": __version__}
