"""The window's state and actions, without widgets: what is loaded, what was computed, what to run.

Widgets call the action methods and listen to the signals. Everything that touches Keras or
reads files runs as an engine generator in the :class:`JobRunner`; results land in slots on the
GUI thread. A result computed for a model that has since been replaced is dropped (generation
counter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine import data_io
from engine.calibration import Calibration
from engine.data_io import ImageSet, PoisonedSet
from engine.detectors import Scores, make_detector
from engine.errors import InputError
from engine.progress import Progress
from gui.jobs import JobRunner

CLEAN = "clean"
POISONED = "poisoned"


@dataclass(frozen=True)
class SetScores:
    """Scores of one loaded set under the current calibration's detector."""

    name: str
    kind: str  # CLEAN or POISONED
    target: int | None
    scores: Scores


@dataclass(frozen=True)
class CheckedImage:
    """One dropped image: its pixels, the network's class and every calibrated detector's score."""

    name: str
    image: np.ndarray
    predicted: int
    scores: dict  # detector name -> score; always has "confidence"
    label: int | None  # from the file name, when it carries label<k>
    repaired: int | None = None  # B''s class, when a repaired network G is loaded

    @property
    def score(self) -> float:
        """The top-1 confidence."""
        return self.scores["confidence"]


VERDICT_SOURCES = ("calibration", "any", "repaired")  # the active detector, any calibrated one, G


class Session(QObject):
    modelLoading = Signal(str)  # path
    modelChanged = Signal(object)  # BadNet | None
    cleanChanged = Signal(object)  # ImageSet | None
    poisonedChanged = Signal(object)  # list[PoisonedSet]
    calibrationChanged = Signal(object)  # the active Calibration | None
    thresholdsChanged = Signal(int)  # the class edited, -1 for all
    dirtyChanged = Signal(bool)  # calibration edited since last save/load
    setScoresChanged = Signal(object)  # list[SetScores]
    checkedChanged = Signal()
    scalingChanged = Signal(str)
    sweepChanged = Signal(object)  # FinePruneResult | None
    repairedChanged = Signal(object)  # RepairedNet | None
    verdictSourceChanged = Signal(str)
    comparisonChanged = Signal(object)  # list[Comparison] | None
    message = Signal(str)  # a line for the log
    error = Signal(str)  # a one-line problem for the user

    def __init__(self, runner: JobRunner | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner or JobRunner(self)
        self.runner.failed.connect(lambda title, msg: self.error.emit(msg))
        self.net = None
        self.scaling = "1/255"
        self.resolved_scaling: str | None = None
        self.clean: ImageSet | None = None
        self.poisoned: list[PoisonedSet] = []
        self.calibrations: dict[str, Calibration] = {}  # detector name -> its calibration
        self.active_detector: str | None = None  # whose calibration the histograms show and edit
        self.set_scores: list[SetScores] = []
        self.checked: list[CheckedImage] = []
        self.unsaved: set[str] = set()  # detectors whose calibration changed since saved or loaded
        self.generation = 0  # bumps whenever the model changes
        self.prune_result = None
        self.repaired = None  # RepairedNet with B' loaded
        self.verdict_source = "calibration"  # see VERDICT_SOURCES
        self.comparison = None  # list[Comparison] from the last detector comparison

    # --- derived -------------------------------------------------------------------------

    @property
    def calibration(self) -> Calibration | None:
        """The active calibration: the one the histograms show and edit, saved by Save."""
        return self.calibrations.get(self.active_detector) if self.active_detector else None

    @property
    def dirty(self) -> bool:
        return bool(self.unsaved)

    @property
    def effective_scaling(self) -> str:
        if self.calibration is not None:
            return self.calibration.scaling
        return self.resolved_scaling or (self.scaling if self.scaling != "auto" else "1/255")

    def detector_verdict(self, row: CheckedImage, detector: str) -> tuple[float | None, float | None, int | None]:
        """(score, threshold, label in [0, N]) of one calibrated detector; Nones when it is not
        calibrated or the row has no score for it yet."""
        cal = self.calibrations.get(detector)
        score = row.scores.get(detector)
        if cal is None or score is None:
            return score, None, None
        return score, float(cal.thresholds[row.predicted]), int(cal.labels(row.predicted, score))

    def g_label(self, row: CheckedImage) -> int | None:
        """G's label: B's class where B and B' agree, N where they do not; None without G."""
        if self.repaired is None or row.repaired is None:
            return None
        return int(self.repaired.labels(row.predicted, row.repaired))

    def active_verdict(self, row: CheckedImage) -> tuple[int | None, int | None]:
        """(label, N) from the chosen defense; (None, None) when it is not there yet."""
        if self.verdict_source == "repaired":
            return self.g_label(row), (self.repaired.poisoned_label if self.repaired else None)
        if self.verdict_source == "any":
            from engine.calibration import any_flags

            labels = [self.detector_verdict(row, d)[2] for d in self.calibrations]
            labels = [lab for lab in labels if lab is not None]
            if not labels:
                return None, None
            n = next(iter(self.calibrations.values())).poisoned_label
            return int(any_flags(labels, row.predicted, n)), n
        cal = self.calibration
        if cal is None:
            return None, None
        return self.detector_verdict(row, cal.detector)[2], cal.poisoned_label

    def set_verdict_source(self, source: str) -> None:
        if source not in VERDICT_SOURCES:
            raise ValueError(source)
        if source != self.verdict_source:
            self.verdict_source = source
            self.verdictSourceChanged.emit(source)
            self.checkedChanged.emit()

    # --- loading -------------------------------------------------------------------------

    def open_model(self, path: str | Path, trust: bool = False) -> None:
        path = Path(path)
        self.modelLoading.emit(str(path))

        def job():
            from engine.model_io import load_badnet

            yield Progress(0, 1, f"loading {path.name}")
            net = load_badnet(path, trust=trust)
            yield Progress(1, 1, f"loaded {path.name}")
            return net

        self.runner.submit(f"Load model {path.name}", job, self._set_model)

    def _set_model(self, net) -> None:
        self.net = net
        self.generation += 1
        self.resolved_scaling = None
        self.message.emit(
            f"model {net.path}: {net.format}, input {'x'.join(map(str, net.input_shape))}, "
            f"{net.num_classes} classes, sha256 {net.sha256[:12]}…"
        )
        for line in net.notes:
            self.message.emit(f"note: {line}")
        keep = self.calibration is not None and self.calibration.model_sha256 == net.sha256
        if not keep and self.calibrations:
            self.message.emit("the calibrations belonged to the previous model; cleared")
            self._clear_calibrations()
        if self.repaired is not None and self.repaired.badnet_sha256 != net.sha256:
            self.message.emit("the repaired network belonged to the previous model; cleared")
            self._set_repaired(None)
        if self.prune_result is not None:
            self.prune_result = None
            self.sweepChanged.emit(None)
        if self.comparison is not None:
            self.comparison = None
            self.comparisonChanged.emit(None)
        self.modelChanged.emit(net)
        if keep:
            self.score_sets()
        if self.checked:
            self._rescore_checked()

    def open_clean(self, path: str | Path) -> None:
        path = Path(path)
        self.runner.submit(f"Read clean data {path.name}", lambda: self._read_job(path), self._set_clean)

    def _set_clean(self, images: ImageSet) -> None:
        self.clean = images
        self._log_set("clean data", images)
        self.cleanChanged.emit(images)

    def add_poisoned(self, path: str | Path, target: int) -> None:
        path = Path(path)
        if self.net is not None and not 0 <= target < self.net.num_classes:
            self.error.emit(f"target {target} is not a class of this model (0..{self.net.num_classes - 1})")
            return

        def done(images: ImageSet) -> None:
            self.poisoned.append(PoisonedSet(images, target))
            self._log_set(f"poisoned set (target {target})", images)
            self.poisonedChanged.emit(list(self.poisoned))
            if self.calibration is not None:
                self.score_sets()

        self.runner.submit(f"Read poisoned data {path.name}", lambda: self._read_job(path), done)

    def remove_poisoned(self, index: int) -> None:
        if 0 <= index < len(self.poisoned):
            gone = self.poisoned.pop(index)
            self.message.emit(f"removed poisoned set {gone.name}")
            self.set_scores = [s for s in self.set_scores if s.name != gone.name or s.kind != POISONED]
            self.poisonedChanged.emit(list(self.poisoned))
            self.setScoresChanged.emit(list(self.set_scores))

    def set_scaling(self, scaling: str) -> None:
        if scaling != self.scaling:
            self.scaling = scaling
            self.resolved_scaling = None
            self.scalingChanged.emit(scaling)

    def _read_job(self, path: Path):
        yield Progress(0, 1, f"reading {path.name}")
        size = self.net.input_shape[:2] if self.net is not None else None
        images = data_io.read(path, size=size)
        yield Progress(1, 1, f"read {path.name}")
        return images

    def _log_set(self, what: str, images: ImageSet) -> None:
        labelled = "labelled" if images.labels is not None else "unlabelled"
        self.message.emit(f"{what}: {images.source}, {len(images)} {labelled} images")
        for w in images.warnings:
            self.message.emit(f"warning: {w}")

    # --- calibration ---------------------------------------------------------------------

    def calibrate(self, method: str = "quantile", frr: float = 0.01, min_samples: int | None = None,
                  detector: str = "confidence", params: dict | None = None) -> bool:
        """Queue a calibration of ``detector`` (behind any loads still running); False when the
        options are wrong. It becomes the active calibration when done."""
        from engine.calibration import check_options

        try:
            check_options(method, frr)
            chosen_detector = make_detector(detector, params)  # fitted by this one job
        except InputError as err:
            self.error.emit(str(err))
            return False
        snapshot = {}

        def factory():
            # Runs when the job starts, after the loads queued before it.
            if self.net is None:
                raise InputError(None, "load a model before calibrating")
            if self.clean is None:
                raise InputError(None, "load clean data before calibrating")
            snapshot.update(gen=self.generation, scaling=self.scaling)
            return job(self.net, self.clean, list(self.poisoned), self.scaling)

        def job(net, clean, sets, scaling):
            from engine.calibration import calibrate
            from engine.scoring import resolve_scaling

            fitted = clean.resized(net.input_shape[:2])
            chosen, reason = yield from resolve_scaling(net, scaling, fitted)
            cal = yield from calibrate(net, fitted, chosen, chosen_detector, method=method, frr=frr,
                                       min_samples=min_samples)
            scores = yield from _score_all(net, cal, fitted, sets)
            return cal, scores, reason

        def done(result) -> None:
            if snapshot["gen"] != self.generation:
                return  # the model changed meanwhile: this calibration is for another network
            cal, scores, reason = result
            if snapshot["scaling"] == "auto":
                self.resolved_scaling = cal.scaling
                self.message.emit(f"input scaling: {reason}")
            own = int((~cal.pooled).sum())
            self.message.emit(
                f"calibrated {cal.detector_title} on {cal.data.get('n')} clean images ({method}"
                + (f", target false rejection {frr:g}" if method == "quantile" else "")
                + f"): {own} of {cal.num_classes} classes have their own threshold, "
                f"pooled threshold {cal.pooled_threshold:.6f}"
            )
            self._set_calibration(cal, scores)
            self._set_unsaved(cal.detector, True)
            if self.checked:
                self._rescore_checked()  # rows need this detector's scores

        self.runner.submit(f"Calibrate {chosen_detector.title}", factory, done)
        return True

    def score_sets(self) -> None:
        """Score the loaded sets under the current calibration (after a load or a new set)."""
        if self.net is None or self.calibration is None:
            return
        net, cal, clean, sets, gen = self.net, self.calibration, self.clean, list(self.poisoned), self.generation

        def job():
            fitted = clean.resized(net.input_shape[:2]) if clean is not None else None
            return (yield from _score_all(net, cal, fitted, sets))

        def done(scores) -> None:
            if gen == self.generation and cal is self.calibration:
                self.set_scores = scores
                self.setScoresChanged.emit(list(scores))

        self.runner.submit("Score loaded sets", job, done)

    def _set_calibration(self, cal: Calibration, scores: list[SetScores]) -> None:
        """Add (or replace) ``cal`` and make it the active calibration."""
        self.calibrations[cal.detector] = cal
        self.active_detector = cal.detector
        self.set_scores = scores
        self.calibrationChanged.emit(cal)
        self.setScoresChanged.emit(list(scores))
        self.checkedChanged.emit()

    def _clear_calibrations(self) -> None:
        self.calibrations = {}
        self.active_detector = None
        self.set_scores = []
        if self.unsaved:
            self.unsaved = set()
            self.dirtyChanged.emit(False)
        self.calibrationChanged.emit(None)
        self.setScoresChanged.emit([])
        self.checkedChanged.emit()

    def set_active_detector(self, detector: str) -> None:
        """Show and edit ``detector``'s calibration (a no-op when it has none)."""
        cal = self.calibrations.get(detector)
        if cal is None or detector == self.active_detector:
            return
        self.active_detector = detector
        self.set_scores = []
        self.calibrationChanged.emit(cal)
        self.setScoresChanged.emit([])
        self.checkedChanged.emit()
        self.score_sets()

    def _set_unsaved(self, detector: str, unsaved: bool) -> None:
        before = self.dirty
        (self.unsaved.add if unsaved else self.unsaved.discard)(detector)
        if self.dirty != before or unsaved:
            self.dirtyChanged.emit(self.dirty)

    def load_calibration(self, path: str | Path) -> None:
        try:
            cal = Calibration.load(path)
        except InputError as err:
            self.error.emit(str(err))
            return
        if self.net is not None and self.net.sha256 == cal.model_sha256:
            self._apply_loaded_calibration(cal, path)
            return
        self.message.emit(f"calibration {path} is for {cal.model_path}; loading that model")
        self.open_model(cal.model_path)
        # Runs after the model load (FIFO); checks what actually got loaded.
        self.runner.submit("Apply calibration", _nothing, lambda _: self._apply_loaded_calibration(cal, path))

    def _apply_loaded_calibration(self, cal: Calibration, path) -> None:
        if self.net is None:
            return
        cal.check_model(self.net)  # InputError -> shown by the runner
        self._set_calibration(cal, [])
        self._set_unsaved(cal.detector, False)
        self.message.emit(f"loaded calibration {path}" + (" (thresholds edited by hand)" if cal.edited else ""))
        self.score_sets()
        if self.checked:
            self._rescore_checked()

    def save_calibration(self, path: str | Path) -> bool:
        if self.calibration is None:
            self.error.emit("nothing to save: calibrate first")
            return False
        try:
            self.calibration.save(path)
        except (InputError, OSError) as err:
            self.error.emit(str(err) if isinstance(err, InputError) else f"{path}: {err.strerror or err}")
            return False
        self._set_unsaved(self.calibration.detector, False)
        self.message.emit(f"saved calibration {path}")
        return True

    def set_threshold(self, cls: int, value: float) -> None:
        if self.calibration is None:
            return
        if float(self.calibration.thresholds[cls]) == float(value):
            return
        self.calibration.set_threshold(cls, value)
        self._mark_edited(cls)

    def set_all_thresholds(self, value: float) -> None:
        if self.calibration is None:
            return
        self.calibration.thresholds[:] = float(value)
        self.calibration.edited = True
        self.message.emit(f"every class's threshold set to {value:.6f}")
        self._mark_edited(-1)

    def _mark_edited(self, cls: int) -> None:
        if self.calibration.detector not in self.unsaved:
            self._set_unsaved(self.calibration.detector, True)
        self.thresholdsChanged.emit(cls)

    # --- image check ---------------------------------------------------------------------

    def check_paths(self, paths: list[str | Path]) -> None:
        """Open dropped files: a model file replaces the model, anything else is checked."""
        from engine.model_io import looks_like_model

        images = []
        for p in map(Path, paths):
            if p.is_file() and looks_like_model(p):
                self.open_model(p)
            else:
                images.append(p)
        if not images:
            return
        if self.net is None and not self.runner.busy:
            self.error.emit("load a model before checking images")
            return

        def factory():
            return self._check_job(images, self.net, dict(self.calibrations), self.effective_scaling, self.repaired)

        def done(result) -> None:
            rows, errors, gen = result
            for message in errors:
                self.error.emit(message)
            if gen != self.generation or not rows:
                return
            self.checked.extend(rows)
            self.message.emit(f"checked {len(rows)} image(s)")
            self.checkedChanged.emit()

        self.runner.submit(f"Check {len(images)} item(s)", factory, done)

    def _check_job(self, paths, net, calibrations, scaling, repaired=None):
        gen = self.generation
        if net is None:
            return [], ["load a model before checking images"], gen
        rows, errors = [], []
        for i, path in enumerate(paths):
            yield Progress(i, len(paths), f"reading {path.name}")
            try:
                images = data_io.read(path, size=net.input_shape[:2])
            except InputError as err:
                errors.append(str(err))
                continue
            errors.extend(images.warnings)
            predicted, scores = yield from _all_scores(net, calibrations, images, scaling)
            b_prime = yield from _repaired_classes(repaired, images)
            labels = images.labels if images.labels is not None else [None] * len(images)
            rows.extend(
                CheckedImage(name, img, int(c), s, None if lab is None else int(lab), bp)
                for name, img, c, s, lab, bp in zip(images.names, images.images, predicted, scores, labels, b_prime)
            )
        return rows, errors, gen

    def _rescore_checked(self) -> None:
        rows = list(self.checked)
        net, calibrations, gen, scaling = self.net, dict(self.calibrations), self.generation, self.effective_scaling
        repaired = self.repaired

        def job():
            images = ImageSet(np.stack([r.image for r in rows]), None, [r.name for r in rows], "checked images")
            images = images.resized(net.input_shape[:2])
            predicted, scores = yield from _all_scores(net, calibrations, images, scaling)
            return predicted, scores, (yield from _repaired_classes(repaired, images))

        def done(result) -> None:
            if gen != self.generation:
                return
            predicted, scores, b_prime = result
            self.checked = [
                CheckedImage(r.name, r.image, int(c), s, r.label, bp)
                for r, c, s, bp in zip(rows, predicted, scores, b_prime)
            ]
            self.checkedChanged.emit()

        self.runner.submit("Re-check images", job, done)

    def clear_checked(self) -> None:
        self.checked = []
        self.checkedChanged.emit()

    def export_checked_csv(self, path: str | Path) -> bool:
        from engine.detectors import DETECTORS
        from engine.files import write_csv

        detectors = [d for d in DETECTORS if d in self.calibrations]
        header = ["path", "predicted", "confidence"]
        for d in detectors:
            header += [f"{d}_score", f"{d}_threshold", f"{d}_label"]
        header += ["verdict_label", "poisoned", "verdict_by", "g_label", "file_label"]
        by = {"calibration": self.active_detector or "", "any": "any", "repaired": "G"}[self.verdict_source]
        rows = []
        for r in self.checked:
            label, n = self.active_verdict(r)
            row = [r.name, r.predicted, f"{r.score:.6f}"]
            for d in detectors:
                score, threshold, d_label = self.detector_verdict(r, d)
                row += ["" if score is None else f"{score:.6f}", "" if threshold is None else f"{threshold:.6f}",
                        "" if d_label is None else d_label]
            g = self.g_label(r)
            row += ["" if label is None else label, "" if label is None else int(label == n), by,
                    "" if g is None else g, "" if r.label is None else r.label]
            rows.append(row)
        try:
            write_csv(path, header, rows)
        except InputError as err:
            self.error.emit(str(err))
            return False
        self.message.emit(f"exported {len(rows)} rows to {path}")
        return True

    # --- detector comparison -------------------------------------------------------------

    def compare(self, detectors: dict[str, dict | None], frrs=(0.01, 0.05)) -> None:
        """Queue a comparison of ``detectors`` (name -> params) on the clean set against every
        poisoned set: ROC curves, AUC and detection at ``frrs``."""

        def factory():
            from engine.compare import compare

            if self.net is None:
                raise InputError(None, "load a model before comparing detectors")
            if self.clean is None:
                raise InputError(None, "load clean data before comparing detectors")
            if not self.poisoned:
                raise InputError(None, "add a poisoned set (with its target) to compare detectors on")
            net, gen = self.net, self.generation
            size = net.input_shape[:2]
            clean = self.clean.resized(size)
            sets = [PoisonedSet(p.images.resized(size), p.target) for p in self.poisoned]
            made = [make_detector(name, params) for name, params in detectors.items()]

            def job():
                return (yield from compare(net, clean, sets, made, self.effective_scaling, tuple(frrs))), gen

            return job()

        def done(outcome) -> None:
            results, gen = outcome
            if gen != self.generation:
                return
            self.comparison = results
            for r in results:
                at = ", ".join(f"{100 * p.detection:.1f}% at {100 * p.target_frr:g}% FRR" for p in r.points)
                self.message.emit(f"{r.title} on {r.poisoned}: AUC {r.auc:.3f}; detection {at}")
            self.comparisonChanged.emit(results)

        self.runner.submit("Compare detectors", factory, done)

    # --- fine-pruning ---------------------------------------------------------------------

    def prune(self, outdir: str | Path, layer: str | None = None, drops=(2.0, 4.0, 10.0), epochs: int = 2) -> None:
        """Queue fine-pruning of the model on the clean data; results go to ``outdir``."""
        outdir = Path(outdir)

        def factory():
            from engine.repair import fine_prune

            if self.net is None:
                raise InputError(None, "load a model before pruning")
            if self.clean is None:
                raise InputError(None, "load labelled clean data before pruning")
            net, gen = self.net, self.generation
            clean = self.clean.resized(net.input_shape[:2])
            sets = [PoisonedSet(p.images.resized(net.input_shape[:2]), p.target) for p in self.poisoned]

            def job():
                result = yield from fine_prune(net, clean, sets, outdir, layer, tuple(drops), epochs,
                                               self.effective_scaling)
                if result.chosen is not None:
                    result.chosen.load_repaired()  # off the GUI thread
                return result, gen

            return job()

        def done(outcome) -> None:
            result, gen = outcome
            if gen != self.generation:
                return
            self.prune_result = result
            for line in result.notes:
                self.message.emit(line)
            self.message.emit(f"fine-pruning results in {outdir}")
            self.sweepChanged.emit(result)
            if result.chosen is not None:
                self._set_repaired(result.chosen)

        self.runner.submit("Fine-prune", factory, done)

    def load_repaired(self, path: str | Path) -> None:
        from engine.repair import RepairedNet

        try:
            g = RepairedNet.load(path)
        except InputError as err:
            self.error.emit(str(err))
            return
        if self.net is None or self.net.sha256 != g.badnet_sha256:
            self.error.emit(f"{path}: built for {g.badnet_path}; open that model first")
            return

        def job():
            yield Progress(0, 1, "loading B'")
            g.load_repaired()
            return g

        self.runner.submit("Load repaired network", job, self._set_repaired)

    def _set_repaired(self, g) -> None:
        self.repaired = g
        if g is not None:
            self.message.emit(f"repaired network G: B' = {g.repaired_path} (drop {g.choice.get('drop', '?')}%)")
        self.repairedChanged.emit(g)
        if self.checked and self.net is not None:
            self._rescore_checked()

    def shutdown(self, msecs: int = 30_000) -> bool:
        return self.runner.wait(msecs)


def _score_all(net, cal, clean: ImageSet | None, sets: list[PoisonedSet]):
    """Scores of the clean set and each poisoned set under ``cal``'s detector (cached passes)."""
    detector = cal.make_detector()
    out = []
    if clean is not None:
        out.append(SetScores(CLEAN, CLEAN, None, (yield from detector.score(net, clean, cal.scaling))))
    for p in sets:
        fitted = p.images.resized(net.input_shape[:2])
        out.append(SetScores(p.name, POISONED, p.target, (yield from detector.score(net, fitted, cal.scaling))))
    return out


def _all_scores(net, calibrations: dict, images: ImageSet, scaling: str):
    """Predicted classes and, per image, a dict of scores: the top-1 confidence always, and
    every calibrated detector's score (each with its calibration's scaling)."""
    conf = yield from make_detector("confidence").score(net, images, scaling)
    per_image = [{"confidence": float(v)} for v in conf.values]
    for name, cal in calibrations.items():
        if name == "confidence" and cal.scaling == scaling:
            continue
        scores = yield from cal.make_detector().score(net, images, cal.scaling)
        for row, v in zip(per_image, scores.values):
            row[name] = float(v)
    return conf.predicted, per_image


def _repaired_classes(repaired, images: ImageSet):
    """B''s class per image, or None per image without a repaired network."""
    if repaired is None:
        return [None] * len(images)
    from engine.scoring import predict

    preds = yield from predict(repaired.load_repaired(), images, repaired.scaling)
    return [int(c) for c in preds.labels]


def _nothing():
    yield Progress(1, 1, "")
    return None

