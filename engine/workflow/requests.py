"""What a user asks for, as plain values: the CLI parses its options into one of these, the
window's controllers fill one from their forms, and both hand it to the engine once.

A request is checked completely by :meth:`check` (every option, the output's place) before any
file is read, so a wrong option fails in a second, not after loading a network; its
:meth:`job` then runs on a model and data already open (the window's) and :func:`run` opens
them first from :class:`Sources` (the command line's paths). A job given what ``check``
returned does not check again. Defaults come from the engine's constants, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.detectors import Detector
from engine.detectors.calibration import DEFAULT_METHOD, Calibration, check_options, check_sample
from engine.detectors.calibration import check_calibration_output
from engine.io.datasets import ImageSet, PoisonedSet
from engine.io.models import BadNet
from engine.progress import Job
from engine.workflow.jobs import (DEFAULT_DETECTOR, DEFAULT_FRR, calibrate_job, detector_params, make_detectors,
                                  scan_job)
from engine.workflow.opening import load_scan, open_model, open_sets, read_set, sample_images

Note = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Sources:
    """Where the network and its data are, as the user named them: the demo's when ``model`` is
    None (its clean validation faces and both poisoned sets unless others are named)."""

    model: Path | None = None
    clean: Path | None = None
    poisoned: tuple[tuple[Path, int], ...] = ()
    trust: bool = False

    def open_model(self, note: Note = _quiet) -> BadNet:
        from engine.demo import DEMO_MODEL

        path = Path(self.model or DEMO_MODEL)
        note(f"loading model {path}…")
        net = open_model(path, self.trust)
        for line in net.notes:
            note(f"note: {path}: {line}")
        return net

    def open_clean(self, net: BadNet, note: Note = _quiet) -> ImageSet:
        from engine.demo import DEMO_CLEAN_VALIDATION

        clean = read_set(self.clean or DEMO_CLEAN_VALIDATION, net)
        warn_about(clean, note)
        return clean

    def open_all(self, note: Note = _quiet) -> tuple[BadNet, ImageSet, list[PoisonedSet]]:
        from engine.demo import DEMO_CLEAN_VALIDATION, DEMO_SETS

        specs = list(self.poisoned) or (list(DEMO_SETS) if self.model is None else [])
        net = self.open_model(note)
        clean, sets = open_sets(net, self.clean or DEMO_CLEAN_VALIDATION, specs)
        for images in [clean] + [s.images for s in sets]:
            warn_about(images, note)
        return net, clean, sets


def warn_about(images: ImageSet, note: Note) -> None:
    """Each warning reading ``images`` raised (a resized set, skipped files), as a note."""
    for w in images.warnings:
        note(f"warning: {w}")


@dataclass(frozen=True)
class CalibrateRequest:
    """Calibrate ``detector`` (``params``: its settings as :func:`engine.detectors.make_detector`
    takes them) at ``frr``; saved to ``output`` when given."""

    detector: str = DEFAULT_DETECTOR
    params: dict = field(default_factory=dict)
    method: str = DEFAULT_METHOD
    frr: float = DEFAULT_FRR
    min_samples: int | None = None
    sample: int | None = None  # clean images to calibrate on; None: what the rate needs; 0: all
    output: Path | None = None

    @classmethod
    def from_options(cls, detector: str, given: dict, **rest) -> CalibrateRequest:
        """From settings given by name, as on a command line: a combining detector's members'
        settings go to its members; a setting no chosen detector has is an error."""
        return cls(detector, detector_params([detector], given)[detector], **rest)

    def check(self) -> Detector:
        """Every option and the output's place; the detector to calibrate."""
        check_options(self.method, self.frr, self.min_samples)
        check_sample(self.sample)
        (detector,) = make_detectors([self.detector], {self.detector: self.params})
        if self.output is not None:
            check_calibration_output(self.output)
        return detector

    def job(self, net: BadNet, clean: ImageSet, scaling: str,
            checked: Detector | None = None) -> Job[tuple[Calibration, str]]:
        """(calibration, how the input scaling was chosen); written to ``output`` when given."""
        detector = checked if checked is not None else self.check()
        cal, reason = yield from calibrate_job(net, clean, scaling, detector, self.method, self.frr, self.min_samples,
                                                self.sample)
        if self.output is not None:
            cal.save(self.output)
        return cal, reason


@dataclass(frozen=True)
class ScanRequest:
    """The trigger scan on up to ``max_images`` clean faces; saved to the folder ``output`` when given."""

    max_images: int | None = None  # None: engine.scan.SCAN_IMAGES; 0: every face given
    settings: object = None  # engine.scan.ScanSettings; None: its defaults
    output: Path | None = None

    def check(self) -> bool:
        from engine.io.files import check_output_folder
        from engine.scan import ScanSettings, is_scan_output

        (self.settings or ScanSettings()).check()
        if self.output is not None:
            check_output_folder(self.output, is_scan_output, "an earlier scan's results")
        return True

    def job(self, net: BadNet, clean: ImageSet, scaling: str, checked: bool = False):
        from engine.scan import SCAN_IMAGES

        if not checked:
            self.check()
        limit = SCAN_IMAGES if self.max_images is None else self.max_images
        result = yield from scan_job(net, sample_images(clean, limit), scaling, self.settings)
        if self.output is not None:
            result.save(self.output)
        return result


@dataclass(frozen=True)
class RepairRequest:
    """Repair by ``method`` (its ``settings`` by name) into the folder ``output``; ``scan``: a
    saved scan's folder, for a repair that uses one (it scans first without)."""

    method: str
    settings: dict = field(default_factory=dict)
    output: Path | None = None
    scan: Path | None = None

    def check(self):
        """The repair, its settings and the output folder checked: (repair, output folder)."""
        from engine.repairs import check_output_folder, make_repair

        repair = make_repair(self.method, self.settings)
        return repair, check_output_folder(self.output, repair)

    def job(self, net: BadNet, clean: ImageSet, sets: list[PoisonedSet], scaling: str, scan=None, checked=None):
        """The repair's outcome; ``scan``: a ScanResult already loaded (the window's), else the request's folder's."""
        from engine.repairs import repair_job

        repair, out = checked if checked is not None else self.check()
        if scan is None and self.scan is not None:
            scan = load_scan(self.scan, net)
        return (yield from repair_job(repair, net, clean, sets, out, scaling, scan))


def run(request, sources: Sources, scaling: str, note: Note = _quiet) -> Job:
    """A request from paths, as the command line has them: checked, then its files opened, then run."""
    checked = request.check()  # before any file is read
    if isinstance(request, RepairRequest):
        net, clean, sets = sources.open_all(note)
        if request.scan is None and checked[0].uses_scan:
            note("no scan given: scanning first")
        return (yield from request.job(net, clean, sets, scaling, checked=checked))
    net = sources.open_model(note)
    clean = sources.open_clean(net, note)
    return (yield from request.job(net, clean, scaling, checked=checked))
