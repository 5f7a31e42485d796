"""The trigger scan, its reversed triggers on the loaded faces, and per-image explanations
(sensitivity maps). Repair by unlearning is a repair like the others (the pruning controller)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine import workflow
from engine.errors import InputError
from engine.progress import Progress
from engine.scan import SCAN_IMAGES

PREVIEW_FACES = 5
PARTIAL_EVERY = 0.5  # seconds between partial-result updates
SCAN_TITLE = "Trigger scan"


class ScanController(QObject):
    scanChanged = Signal(object)  # ScanResult | None: finished, loaded or cleared
    running = Signal()  # a scan job started
    ended = Signal(str)  # a scan job ended: "done" | "cancelled" | "failed" | "stale"
    partial = Signal(object)  # ScanResult while the scan runs
    previewChanged = Signal(object)  # dict: the chosen class's trigger on a few clean faces
    stampCounted = Signal(object)  # dict: flips over all loaded clean faces
    explained = Signal(object)  # (name, Explanation)

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.result = None
        self.folder: Path | None = None
        self._last_partial = 0.0
        self._explained: dict[tuple, object] = {}

    # --- the scan ---------------------------------------------------------------------------

    def run(self, max_images: int = SCAN_IMAGES, settings=None) -> None:
        """Queue a scan on up to ``max_images`` of the loaded clean faces (``settings``: ScanSettings)."""
        data = self.session.data
        request = workflow.ScanRequest(max_images, settings)

        def factory():
            self.session.require("scanning it", clean="clean data (45-100 faces are enough)")
            return request.job(data.net, data.clean, data.effective_scaling)

        job = self.session.runner.submit(SCAN_TITLE, factory, self._finished, on_started=self.running.emit,
                                         on_finished=self.ended.emit)
        job.yielded.connect(self._on_step)

    def _on_step(self, step: Progress) -> None:
        now = time.monotonic()
        if step.partial is not None and now - self._last_partial >= PARTIAL_EVERY:
            self._last_partial = now
            self.partial.emit(step.partial)

    def _finished(self, result) -> None:
        self.set_result(result, None)
        self.session.message.emit(f"trigger scan: {result.summary()} ({result.seconds:.0f} s)")

    def set_result(self, result, folder: Path | None) -> None:
        self.result, self.folder = result, folder
        self.scanChanged.emit(result)

    def load(self, folder: str | Path) -> None:
        net = self.session.data.net
        try:
            if net is None:
                raise InputError(folder, "load the model this scan was made for first")
            result = workflow.load_scan(folder, net)
        except InputError as err:
            self.session.error.emit(str(err))
            return
        self.set_result(result, Path(folder))
        self.session.message.emit(f"loaded trigger scan {folder}: {result.summary()}")

    def save(self, folder: str | Path) -> bool:
        if self.result is None:
            self.session.error.emit("run or load a trigger scan first")
            return False
        if self.session.write_output(folder, lambda: self.result.save(folder)):
            self.folder = Path(folder)
            self.session.message.emit(f"saved the trigger scan to {folder}")
            return True
        return False

    def model_changed(self, net) -> None:
        self._explained.clear()
        if self.result is not None and self.result.model_sha256 != net.sha256:
            self.set_result(None, None)

    # --- a reversed trigger on the loaded faces ---------------------------------------------

    def preview(self, label: int) -> None:
        """The trigger of ``label`` on a few clean faces of other classes: before/after answers."""
        self._stamp_job(label, PREVIEW_FACES, self.previewChanged.emit, "Preview reversed trigger")

    def stamp_clean(self, label: int) -> None:
        """Stamp ``label``'s trigger on every loaded clean face and count how many flip to it."""
        self._stamp_job(label, None, self._counted, "Stamp reversed trigger")

    def _counted(self, out: dict) -> None:
        self.session.message.emit(
            f"class {out['label']}'s reversed trigger sends {out['flipped']} of {out['n']} clean faces of other "
            f"classes to class {out['label']} ({100 * out['flipped'] / max(1, out['n']):.0f}%)")
        self.stampCounted.emit(out)

    def _stamp_job(self, label: int, limit: int | None, done, title: str) -> None:
        result, data = self.result, self.session.data

        def factory():
            if result is None or label not in result.triggers:
                raise InputError(None, "run or load a trigger scan, then choose a class")
            self.session.require("stamping a reversed trigger", clean="clean data")
            return workflow.stamp_and_count(data.net, data.clean, result, label, limit)

        self.session.runner.submit(title, factory, done)

    # --- explanations -----------------------------------------------------------------------

    def explain(self, name: str, image: np.ndarray) -> None:
        """A sensitivity map of one checked image (cached per model and pixels)."""
        data = self.session.data
        if data.net is None:
            return
        key = (data.net.sha256, data.effective_scaling, image.tobytes())
        hit = self._explained.get(key)
        if hit is not None:
            self.explained.emit((name, hit))
            return
        net, scaling = data.net, data.effective_scaling

        def job():
            from engine.explain import explain

            yield Progress(0, 1, f"explaining {name}")
            return explain(net, image, scaling)

        def done(e) -> None:
            if len(self._explained) > 200:
                self._explained.clear()
            self._explained[key] = e
            self.explained.emit((name, e))

        self.session.runner.submit("Explain image", job, done)

    def flagged_mask(self, label: int):
        """The reversed trigger's mask for ``label`` when the scan flagged that class."""
        if self.result is None or label not in self.result.flagged:
            return None
        return self.result.triggers[label].mask
