"""Running a trained model on the open slide in the background (progress bar, cancel).

The model runs in a napari worker thread; the progress bar is determinate from the start
(0 %, "preparing"), then counts tiles as :func:`histoviz.predict.predict_slide` reports them
(``done / total``, the last step being the model itself). Cancelling stops the run at its next
check and changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QProgressBar, QPushButton

from histoviz.errors import HistovizError

__all__ = ["ModelRunner", "block_triton"]

logger = logging.getLogger(__name__)


def block_triton() -> None:
    """Keep torch from importing triton inside the viewer process.

    Triton ships its own LLVM, whose symbols clash with the libLLVM that Mesa's OpenGL drivers
    (llvmpipe under Xvfb, radeonsi on AMD GPUs) have already loaded once napari has drawn:
    ``import triton`` then segfaults. Torch imports triton only to probe for it
    (``torch.utils._triton.has_triton_package``) and CPU / eager CUDA inference does not need it,
    so when triton is not loaded yet we make its import fail cleanly (``sys.modules`` entry
    ``None``, the documented way to block an import).
    """
    import sys

    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]
        logger.debug("histoviz: blocked 'import triton' in the napari process (LLVM clash)")


class _Signals(QObject):
    progress = Signal(int, int)


class ModelRunner(QObject):
    """One background model run at a time.

    Signals
    -------
    succeeded(object, str)
        The predictions (AnnData) and the model folder.
    message(str, bool)
        Text for the widget and whether it is an error.
    """

    succeeded = Signal(object, str)
    message = Signal(str, bool)

    def __init__(self, predict_fn: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self.predict_fn = predict_fn
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.btn_cancel = QPushButton("Cancel")
        self.btn_cancel.setVisible(False)
        self.btn_cancel.clicked.connect(self.cancel)
        self._worker: Any = None
        self._cancel: threading.Event | None = None
        self._signals: _Signals | None = None
        self._model_dir = ""

    @property
    def running(self) -> bool:
        """True while a model runs."""
        return self._worker is not None

    def _resolve(self) -> Callable[..., Any] | None:
        if self.predict_fn is not None:
            return self.predict_fn
        block_triton()
        try:
            from histoviz.predict import predict_slide
        except ImportError:
            self.message.emit("Running a model needs histoviz.predict, which this installation lacks; "
                              "load a prediction file instead.", True)
            return None
        return predict_slide

    def start(self, slide_path: str, model_dir: str | Path, *, mpp: float | None = None,
              overlap: float = 0.0) -> Any:
        """Run the model in ``model_dir`` on the slide file (at resolution ``mpp`` when the file's
        own is missing or wrong; tiles overlapping by ``overlap``); returns the worker (``None``
        if not started)."""
        from napari.qt.threading import create_worker

        from histoviz.io import open_slide

        if self._worker is not None:
            self.message.emit("A model is already running; cancel it first.", True)
            return None
        fn = self._resolve()
        if fn is None:
            return None
        reader = open_slide(slide_path)
        if mpp is not None:
            reader.with_mpp(mpp)
        extra: dict[str, Any] = {"overlap": float(overlap)} if overlap else {}
        if getattr(self, "precision", None):
            extra["precision"] = self.precision
        cancel = threading.Event()
        sig = _Signals()
        sig.progress.connect(self._on_progress)

        def report(done: int, total: int) -> None:
            sig.progress.emit(int(done), int(total))

        def job() -> tuple[str, Any]:
            try:
                out = fn(reader, str(model_dir), progress_callback=report, cancel_event=cancel, **extra)
            except Exception as e:  # noqa: BLE001 - reported in the widget, not as a traceback
                return ("error", e)
            finally:
                reader.close()
            return ("ok", out)

        worker = create_worker(job, _start_thread=False)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._worker, self._cancel, self._signals = worker, cancel, sig
        self._model_dir = str(model_dir)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("preparing (tiling, loading the model)…")
        self.progress.setVisible(True)
        self.btn_cancel.setVisible(True)
        worker.start()
        return worker

    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
            self.progress.setFormat("%v / %m steps (%p%)" if done < total else "done")

    def cancel(self) -> None:
        """Ask a running model to stop (it stops at its next check)."""
        if self._cancel is not None and not self._cancel.is_set():
            self._cancel.set()
            self.message.emit("Cancelling…", False)

    def _on_returned(self, result: tuple[str, Any]) -> None:
        status, value = result
        if self._cancel is not None and self._cancel.is_set():
            self.message.emit("Model run cancelled; nothing changed.", False)
            return
        if status == "error":
            if isinstance(value, HistovizError):
                self.message.emit(f"The model run failed: {value}", True)
            else:
                logger.error("histoviz model run failed", exc_info=value)
                self.message.emit(f"The model run failed ({type(value).__name__}: {value}).", True)
            return
        self.succeeded.emit(value, self._model_dir)

    def _on_finished(self) -> None:
        self._worker = None
        self._cancel = None
        self._signals = None
        try:
            self.progress.setVisible(False)
            self.btn_cancel.setVisible(False)
        except RuntimeError:  # widget deleted while the model ran
            pass
