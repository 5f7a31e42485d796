"""Checked images: every calibrated detector's score and verdict per image, and which defense
gives the Verdict column."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine import workflow
from engine.io.datasets import ImageSet
from engine.workflow import VERDICT_SOURCES, CheckedImage, VerdictRules


class CheckController(QObject):
    checkedChanged = Signal()
    verdictSourceChanged = Signal(str)

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.rows: list[CheckedImage] = []
        self.verdict_source = "calibration"

    @property
    def rules(self) -> VerdictRules:
        """The verdict rules for what is loaded now (thresholds are read live)."""
        calib, pruning = self.session.calib, self.session.repair
        return VerdictRules(dict(calib.calibrations), calib.active_detector, pruning.repaired, self.verdict_source)

    def set_verdict_source(self, source: str) -> None:
        if source not in VERDICT_SOURCES:
            raise ValueError(source)
        if source != self.verdict_source:
            self.verdict_source = source
            self.verdictSourceChanged.emit(source)

    def check_paths(self, paths: list[str | Path]) -> None:
        """Open dropped files: a model file replaces the model, anything else is checked."""
        from engine.io.models import looks_like_model

        images = []
        for p in map(Path, paths):
            if looks_like_model(p):
                self.session.data.open_model(p)
            else:
                images.append(p)
        if not images:
            return

        def factory():
            net = self.session.require("checking images").net
            return workflow.check_paths(net, images, self.session.data.effective_scaling,
                                        dict(self.session.calib.calibrations), self.session.repair.repaired)

        def done(result) -> None:
            rows, problems = result
            for message in problems:
                self.session.error.emit(message)
            if rows:
                self.rows.extend(rows)
                self.session.message.emit(f"checked {len(rows)} image(s)")
                self.checkedChanged.emit()

        self.session.runner.submit(f"Check {len(images)} item(s)", factory, done)

    def rescore(self) -> None:
        """Score the rows again (a new model, a new calibration, a repaired network)."""
        if not self.rows:
            return

        def factory():
            net = self.session.data.net
            rows = list(self.rows)
            if net is None or not rows:
                return _nothing()
            images = ImageSet(np.stack([r.image for r in rows]), None, [r.name for r in rows], "checked images")
            job = workflow.check_images(net, images, self.session.data.effective_scaling,
                                        dict(self.session.calib.calibrations), self.session.repair.repaired)
            return _relabel(job, rows)

        def done(rows) -> None:
            if rows is not None:
                self.rows = rows
                self.checkedChanged.emit()

        self.session.runner.submit("Re-check images", factory, done)

    def needs_rescore(self) -> bool:
        calibrated = set(self.session.calib.calibrations)
        return any(not calibrated <= set(r.scores) for r in self.rows)

    def clear(self) -> None:
        self.rows = []
        self.checkedChanged.emit()

    def export_csv(self, path: str | Path) -> bool:
        from engine.io.files import write_csv

        header, rows = workflow.checked_csv(self.rows, self.rules)
        if not self.session.write_output(path, lambda: write_csv(path, header, rows)):
            return False
        self.session.message.emit(f"exported {len(rows)} rows to {path}")
        return True


def _relabel(job, rows):
    """Rescored rows keep the labels their files gave them."""
    new = yield from job
    return [dataclasses.replace(n, label=r.label) for n, r in zip(new, rows)]


def _nothing():
    return None
    yield
