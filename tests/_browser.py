"""Serve the dashboard and screenshot its pages in headless Chromium (tests and docs/make_screenshots.py).

``chromium --screenshot --virtual-time-budget`` captures Streamlit's loading skeleton (the app
renders over a websocket, which virtual time does not wait for), so the same headless Chromium
is driven over the DevTools protocol until the script has finished, its images have loaded and
its plotly charts have drawn; then the page is inspected (charts drawn, error boxes,
exceptions) and captured.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

_STATE_JS = """(() => {
  const q = (id) => document.querySelector(`[data-testid="${id}"]`);
  const all = (id) => [...document.querySelectorAll(`[data-testid="${id}"]`)];
  if (!q('stApp') || !q('stSidebarNav')) return {state: 'loading app'};
  // the script run has finished (Streamlit marks it on the app root: initial -> running -> notRunning)
  const run = q('stApp').getAttribute('data-test-script-state');
  if (run !== 'notRunning' && run !== 'compilationError') return {state: 'script ' + run};
  if (q('stAppSkeleton') || q('stSkeleton')) return {state: 'skeleton'};
  if (!document.querySelector('h1')) return {state: 'no page title yet'};  // every page opens with one
  if (q('stStatusWidgetRunningIcon') || q('stStatusWidgetRunningManIcon')) return {state: 'running'};
  const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
  if (!imgs.every(i => i.complete && i.naturalWidth > 0)) return {state: 'loading images'};
  const charts = all('stPlotlyChart');
  const drawn = charts.filter(c => c.querySelector('.main-svg'));
  if (drawn.length < charts.length) return {state: 'drawing charts'};
  return {state: 'ready', charts: drawn.length, images: imgs.length,
          errors: all('stAlertContentError').map(e => e.innerText),
          exceptions: all('stException').map(e => e.innerText),
          title: (document.querySelector('h1') || {}).innerText || ''};
})()"""


@dataclass
class PageShot:
    """What a served page showed: readiness, plotly charts drawn, error boxes, exceptions."""

    state: str
    charts: int = 0
    images: int = 0
    errors: tuple[str, ...] = ()
    exceptions: tuple[str, ...] = ()
    title: str = ""


def free_port() -> int:
    """An unused TCP port on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 200 (or ``proc`` exits)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and (proc is None or proc.poll() is None):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer" + (" (the server exited)" if proc is not None and proc.poll()
                                                   is not None else f" within {timeout:.0f} s"))


@contextlib.contextmanager
def serve_dashboard(root: str | os.PathLike, *, port: int | None = None, log: list[str] | None = None) -> Iterator[str]:
    """``histoviz dashboard ROOT`` in a subprocess; yields its base URL, stops it afterwards
    (its output goes into ``log``)."""
    port = port or free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "histoviz.cli", "dashboard", str(root), "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = ""
    try:
        try:
            wait_http(f"http://localhost:{port}/_stcore/health", timeout=180, proc=proc)
        except TimeoutError as e:
            out = _stop(proc)
            raise TimeoutError(f"{e}; server output:\n{out[-3000:]}") from None
        yield f"http://localhost:{port}"
    finally:
        out = out or _stop(proc)
        if log is not None:
            log.append(out)


def _stop(proc: subprocess.Popen) -> str:
    """Stop the server's process group (this test started it in a new session) and return
    its output."""
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=20)[0] or ""
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate(timeout=10)[0] or ""


@contextlib.contextmanager
def chromium(profile: str | os.PathLike, *, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium (fresh profile) and a ``call(method, **params)`` over DevTools."""
    from websockets.sync.client import connect

    assert CHROMIUM, "chromium is not installed"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--window-size={width},{height}", "--hide-scrollbars",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        t0 = time.monotonic()
        ws_url = None
        while ws_url is None and time.monotonic() - t0 < 30:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode}")
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            ws_url = m.group(1) if m else None
        assert ws_url, "chromium did not open its DevTools port"
        port = re.search(r":(\d+)/", ws_url).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        ids = itertools.count(1)
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            def call(method: str, **params):
                i = next(ids)
                ws.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv(timeout=240))
                    if msg.get("id") == i:
                        return msg.get("result", {})

            yield call
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


#: Resolves (in the page) once the app has been ready for ``frames`` animation frames in a row
#: at the expected size, its fonts loaded; or with the last state after ``ms`` milliseconds.
_WAIT_JS = """new Promise((resolve) => {
  const state = () => %s;
  const t0 = performance.now();
  let streak = 0, last = {state: 'not loaded'};
  const tick = () => {
    last = (document.readyState === 'complete' && location.href.startsWith(%s) && window.innerHeight === %d)
      ? state() : {state: 'navigating'};
    streak = last.state === 'ready' ? streak + 1 : 0;
    if (streak >= %d) document.fonts.ready.then(() => resolve(last));
    else if (performance.now() - t0 > %d) resolve(last);
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})"""


def _wait_ready(call: Any, url: str, height: int, timeout: float, frames: int = 10) -> dict:
    """Wait in the page for the app to be ready (see ``_WAIT_JS``): driven by the browser's
    animation frames and font loading, not by sleeping here."""
    js = _WAIT_JS % (_STATE_JS, json.dumps(url.split("?")[0]), int(height), int(frames), int(timeout * 1000))
    out = call("Runtime.evaluate", expression=js, awaitPromise=True, returnByValue=True)
    return out.get("result", {}).get("value") or {"state": "no answer"}


def screenshot(call: Any, url: str, png: str | os.PathLike, *, timeout: float = 90, full_page: bool = True,
               width: int = 1400, height: int = 1000, max_height: int = 5000) -> PageShot:
    """Load ``url``, wait until the page has rendered (ready for 10 animation frames in a row, its
    fonts loaded), inspect it and save a PNG (the whole page, up to ``max_height`` px, when
    ``full_page``)."""
    call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    call("Page.navigate", url=url)
    res = _wait_ready(call, url, height, timeout)
    if full_page and res.get("state") == "ready":
        out = call("Runtime.evaluate", returnByValue=True, expression=(
            "Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], [data-testid=\"stMainBlockContainer\"]')]"
            ".map(e => e.scrollHeight), 0)"))
        h = int(out.get("result", {}).get("value") or 0)
        if h > height:  # let the app lay itself out in a window as tall as its content
            tall = min(h + 40, max_height)
            call("Emulation.setDeviceMetricsOverride", width=width, height=tall, deviceScaleFactor=1, mobile=False)
            res = _wait_ready(call, url, tall, timeout)
    data = call("Page.captureScreenshot", format="png")["data"]
    Path(png).write_bytes(base64.b64decode(data))
    return PageShot(state=str(res.get("state")), charts=int(res.get("charts", 0)), images=int(res.get("images", 0)),
                    errors=tuple(res.get("errors", ())), exceptions=tuple(res.get("exceptions", ())),
                    title=str(res.get("title", "")))


def save_small(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a screenshot as a 256-colour PNG (docs images stay small)."""
    from PIL import Image

    im = Image.open(src).convert("RGB")
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, optimize=True)
    return out
