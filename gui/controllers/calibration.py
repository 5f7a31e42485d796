"""Calibrations: one per detector, the active one shown and edited, saved and loaded; the scores
of the loaded sets under each, for the histograms."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine import workflow
from engine.detectors.calibration import Calibration
from engine.errors import InputError
from engine.progress import Progress


def _nothing():
    yield Progress(1, 1, "nothing to score")
    return []


class CalibrationController(QObject):
    calibrationChanged = Signal(object)  # the active Calibration | None
    thresholdsChanged = Signal(int)  # the class edited, -1 for all
    dirtyChanged = Signal(bool)  # some calibration changed since saved or loaded
    setScoresChanged = Signal(object)  # list[SetScores] of the active detector

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.calibrations: dict[str, Calibration] = {}  # detector name -> its calibration
        self.active_detector: str | None = None
        self.unsaved: set[str] = set()
        self.scores: dict[str, list] = {}  # detector name -> list[SetScores] of the loaded sets

    @property
    def active(self) -> Calibration | None:
        return self.calibrations.get(self.active_detector) if self.active_detector else None

    @property
    def set_scores(self) -> list:
        return self.scores.get(self.active_detector, []) if self.active_detector else []

    @property
    def dirty(self) -> bool:
        return bool(self.unsaved)

    # --- running -------------------------------------------------------------------------

    def calibrate(self, method: str = workflow.DEFAULT_METHOD, frr: float = workflow.DEFAULT_FRR,
                  min_samples: int | None = None, detector: str = workflow.DEFAULT_DETECTOR,
                  params: dict | None = None, sample: int | None = None) -> bool:
        """Queue a calibration of ``detector`` (behind any loads still running); False when the
        options are wrong. It becomes the active calibration when done, with the clean set's
        histogram; the poisoned sets are scored after it, each in a job of its own."""
        request = workflow.CalibrateRequest(detector, dict(params or {}), method, frr, min_samples, sample)
        try:
            chosen = request.check()
        except InputError as err:
            self.session.error.emit(str(err))
            return False
        data = self.session.data
        asked = {}

        def factory():
            self.session.require("calibrating", clean="clean data")
            net, clean, scaling = data.net, data.clean, data.scaling
            asked["scaling"] = scaling

            def job():
                cal, reason = yield from request.job(net, clean, scaling, checked=chosen)
                # The clean set's scores are the calibration's own (cached) when it used them all.
                scores = yield from workflow.score_sets(net, cal, clean, [])
                return cal, scores, reason

            return job()

        def done(result) -> None:
            cal, scores, reason = result
            if asked["scaling"] == "auto":
                data.resolved_scaling = cal.scaling
                self.session.message.emit(f"input scaling: {reason}")
            self.session.message.emit(f"calibrated {cal.summary()}")
            self._add(cal, scores)
            self._set_unsaved(cal.detector, True)
            self.score_sets([cal.detector], clean=False)

        self.session.runner.submit(f"Calibrate {chosen.title}", factory, done)
        return True

    def score_sets(self, detectors: list[str] | None = None, clean: bool = True) -> None:
        """Score the loaded sets under every calibration (or those of ``detectors``; after a new
        model or a new set), one job per calibration and set, the active calibration's first, so
        each histogram appears as soon as its set is scored and the window stays usable."""
        data = self.session.data
        names = [d for d in (detectors or list(self.calibrations)) if d in self.calibrations]
        names.sort(key=lambda d: d != self.active_detector)
        sets = ([None] if clean and data.clean is not None else []) + list(data.poisoned)
        for name in names:
            cal = self.calibrations[name]
            if clean or name not in self.scores:
                self.scores[name] = []
            for one in sets:
                self._score_one(name, cal, one)

    def _score_one(self, name: str, cal: Calibration, one) -> None:
        """Queue the scores of one loaded set (``None``: the clean set) under ``cal``."""
        data = self.session.data
        what = "clean set" if one is None else one.name

        def factory():
            self.session.require("scoring the loaded sets")
            if self.calibrations.get(name) is not cal:  # replaced or cleared while queued
                return _nothing()
            net = data.net
            if one is None:
                return workflow.score_sets(net, cal, data.clean, [])
            if all(p is not one for p in data.poisoned):  # removed while queued
                return _nothing()
            return workflow.score_sets(net, cal, None, [one])

        def done(scores) -> None:
            if not scores or self.calibrations.get(name) is not cal:
                return
            have = [s for s in self.scores.get(name, []) if s.name != scores[0].name]
            order = {workflow.CLEAN: 0, **{p.name: i + 1 for i, p in enumerate(data.poisoned)}}  # clean first
            self.scores[name] = sorted(have + scores, key=lambda s: order.get(s.name, len(order)))
            if name == self.active_detector:
                self.setScoresChanged.emit(list(self.set_scores))

        self.session.runner.submit(f"Score {what} ({cal.detector_title})", factory, done)

    def adopt(self, cal: Calibration, scores: list) -> None:
        """Take a calibration made elsewhere (an audit's) with its sets' scores, as one made here."""
        self._add(cal, scores)
        self._set_unsaved(cal.detector, True)

    # --- state ---------------------------------------------------------------------------

    def _add(self, cal: Calibration, scores: list) -> None:
        """Add (or replace) ``cal`` and make it the active calibration."""
        self.calibrations[cal.detector] = cal
        self.scores[cal.detector] = scores
        self.active_detector = cal.detector
        self.calibrationChanged.emit(cal)
        self.setScoresChanged.emit(list(scores))

    def clear(self) -> None:
        self.calibrations, self.scores, self.active_detector = {}, {}, None
        if self.unsaved:
            self.unsaved = set()
            self.dirtyChanged.emit(False)
        self.calibrationChanged.emit(None)
        self.setScoresChanged.emit([])

    def model_changed(self, net) -> None:
        """Keep the calibrations made for this very model, drop the others."""
        keep = {d: c for d, c in self.calibrations.items() if c.model_sha256 == net.sha256
                and c.num_classes == net.num_classes}
        if len(keep) != len(self.calibrations):
            self.session.message.emit("the calibrations belonged to the previous model; cleared")
            self.clear()
        elif keep:
            self.score_sets()

    def set_active_detector(self, detector: str) -> None:
        """Show and edit ``detector``'s calibration (a no-op when it has none)."""
        cal = self.calibrations.get(detector)
        if cal is None or detector == self.active_detector:
            return
        self.active_detector = detector
        self.calibrationChanged.emit(cal)
        self.setScoresChanged.emit(list(self.set_scores))
        if detector not in self.scores:
            self.score_sets()

    def _set_unsaved(self, detector: str, unsaved: bool) -> None:
        (self.unsaved.add if unsaved else self.unsaved.discard)(detector)
        self.dirtyChanged.emit(self.dirty)

    # --- files ---------------------------------------------------------------------------

    def load(self, path: str | Path) -> None:
        """Load a calibration; the model it names is opened first when another one is loaded.
        A calibration that cannot serve the model is refused and the current one kept."""
        path = Path(path)
        try:
            cal = Calibration.load(path)
        except InputError as err:
            self.session.error.emit(str(err))
            return
        data = self.session.data
        if data.net is None or data.net.sha256 != cal.model_sha256:
            self.session.message.emit(f"calibration {path} is for {cal.model_path}; loading that model")
            data.open_model(cal.model_path)

        def factory():
            net = data.net
            if net is None:
                raise InputError(path, "its model could not be loaded")
            cal.check_model(net)  # the banner says why; nothing changes

            def job():
                yield Progress(1, 1, "checked calibration")
                return cal

            return job()

        def done(loaded: Calibration) -> None:
            self.calibrations[loaded.detector] = loaded
            self.scores.pop(loaded.detector, None)
            self.active_detector = loaded.detector
            self._set_unsaved(loaded.detector, False)
            self.session.message.emit(f"loaded calibration {path}: {loaded.summary()}")
            self.calibrationChanged.emit(loaded)
            self.setScoresChanged.emit([])
            self.score_sets()

        self.session.runner.submit(f"Load calibration {path.name}", factory, done)

    def save(self, path: str | Path) -> bool:
        cal = self.active
        if cal is None:
            self.session.error.emit("nothing to save: calibrate first")
            return False
        if not self.session.write_output(path, lambda: cal.save(path)):
            return False
        self._set_unsaved(cal.detector, False)
        self.session.message.emit(f"saved calibration {path}")
        return True

    # --- thresholds ----------------------------------------------------------------------

    def set_threshold(self, cls: int, value: float) -> None:
        cal = self.active
        if cal is None or float(cal.thresholds[cls]) == float(value):
            return
        try:
            cal.set_threshold(cls, value)
        except InputError as err:
            self.session.error.emit(str(err))
            return
        self._edited(cls)

    def set_all_thresholds(self, value: float) -> None:
        cal = self.active
        if cal is None:
            return
        try:
            cal.set_all_thresholds(value)
        except InputError as err:
            self.session.error.emit(str(err))
            return
        self.session.message.emit(f"every class's threshold set to {value:.6f}")
        self._edited(-1)

    def _edited(self, cls: int) -> None:
        if self.active.detector not in self.unsaved:
            self._set_unsaved(self.active.detector, True)
        self.thresholdsChanged.emit(cls)
