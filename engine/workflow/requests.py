"""What a user asks for, as plain values: the CLI parses its options into one of these, the
window's controllers fill one from their forms, and both hand it to the engine once.

Every request has one protocol:

- :meth:`Request.check`: every option and the output's place, before any file is read, so a
  wrong option fails in a second, not after loading a network; what it returns (the detector
  made, the repair and its folder) is handed to the job, which does not check again;
- :meth:`Request.job`: a generator on a model and data already open (the window's);
- :meth:`Request.from_sources`: the same job on what :class:`Sources` names (the command line's
  paths), opened first; :func:`run` is check, then this;
- :meth:`Request.words`: the request's own options as command-line words, so :func:`command_line`
  says any request as the line that repeats it (the audit's "how to reproduce" is built so).

The demo's defaults (its model, data and images) live in :class:`Sources` and nowhere else.
Requests that run the network on images (info, predict, eval, score, explain) are in
:mod:`engine.workflow.inference`, the comparison in :mod:`engine.workflow.comparing`, the audit
in :mod:`engine.report.request`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from engine import demo
from engine.detectors import DETECTORS, Detector
from engine.detectors.calibration import DEFAULT_METHOD, Calibration, check_options, check_sample
from engine.detectors.calibration import check_calibration_output
from engine.errors import InputError
from engine.io.datasets import ImageSet, PoisonedSet
from engine.io.models import BadNet
from engine.progress import Job
from engine.rates import percent
from engine.workflow.jobs import (DEFAULT_DETECTOR, DEFAULT_FRR, calibrate_job, detector_params, make_detectors,
                                  scan_job)
from engine.workflow.opening import load_scan, open_model, open_sets, read_set, sample_images

Note = Callable[[str], None]
COMMAND = "badnet-inspector"  # the installed command (pyproject's [project.scripts]), not a checkout's main.py


def _quiet(_: str) -> None:
    pass


def is_demo_model(net: BadNet | str | Path) -> bool:
    """Whether ``net`` (or a model path) is the bundled demo's file itself (a copy is not)."""
    path = getattr(net, "path", net)
    try:
        return Path(path).resolve() == Path(demo.DEMO_MODEL).resolve()
    except (OSError, TypeError):
        return False


@dataclass(frozen=True)
class Sources:
    """Where the network and its data are, as the user named them. With no model named, the
    bundled demo's: its model, its clean validation faces (its test faces for figures on held-out
    data), both its poisoned sets and its images; a model of one's own needs its data named (the
    demo's synthetic faces never stand in for it). The one place the demo's defaults live."""

    model: Path | None = None
    clean: Path | None = None
    poisoned: tuple[tuple[Path, int], ...] = ()
    trust: bool = False

    @property
    def demo(self) -> bool:
        return self.model is None

    def require(self, clean: bool = True, poisoned: bool = False) -> None:
        """With a model of one's own, the data the request needs must be named."""
        if self.demo:
            return
        missing = [name for name, need, given in (("clean_data", clean, self.clean),
                                                  ("poisoned_data", poisoned, self.poisoned)) if need and not given]
        if missing:
            raise InputError(self.model, " and ".join("{" + m + "}" for m in missing) + " missing: with a model of "
                             "your own, name its data (the demo's faces stand in only for the demo's network)",
                             settings=tuple(missing))

    def model_path(self) -> Path:
        return Path(self.model or demo.DEMO_MODEL)

    def clean_path(self, held_out: bool = False) -> Path | None:
        """The clean data named; the demo's validation faces (``held_out``: its test faces)."""
        if self.clean is not None or not self.demo:
            return self.clean
        return demo.DEMO_CLEAN_TEST if held_out else demo.DEMO_CLEAN_VALIDATION

    def poisoned_sets(self) -> list[tuple[Path, int]]:
        """The poisoned sets named; the demo's two when it is the demo and none are."""
        return list(self.poisoned) or (list(demo.DEMO_SETS) if self.demo else [])

    @staticmethod
    def demo_images() -> list[Path]:
        """The demo's images to check, when a command on the demo names none."""
        return [demo.DEMO_IMAGES]

    def named(self) -> Sources:
        """The same files by name only (what a report's reproduce lines show: run them where the files are)."""
        return Sources(by_name(self.model), by_name(self.clean), tuple((by_name(p), t) for p, t in self.poisoned),
                       self.trust)

    def words(self, clean: bool = True, poisoned: bool = True) -> list[str]:
        """The options naming these files, as a command line gives them."""
        out = [] if self.model is None else ["--model", str(self.model)]
        if clean and self.clean is not None:
            out += ["--clean", str(self.clean)]
        if poisoned:
            out += [w for p, t in self.poisoned for w in ("--poisoned", f"{p}:{t}")]
        return out + (["--trust-model"] if self.trust else [])

    def open_model(self, note: Note = _quiet) -> BadNet:
        path = self.model_path()
        note(f"loading model {path}…")
        net = open_model(path, self.trust)
        for line in net.notes:
            note(f"note: {path}: {line}")
        return net

    def open_clean(self, net: BadNet, note: Note = _quiet, held_out: bool = False) -> ImageSet:
        clean = read_set(self.clean_path(held_out), net)
        warn_about(clean, note)
        return clean

    def open_all(self, note: Note = _quiet) -> tuple[BadNet, ImageSet, list[PoisonedSet]]:
        net = self.open_model(note)
        clean, sets = open_sets(net, self.clean_path(), self.poisoned_sets())
        for images in [clean] + [s.images for s in sets]:
            warn_about(images, note)
        return net, clean, sets

    @classmethod
    def of(cls, net: BadNet, clean: ImageSet | None = None, sets: list[PoisonedSet] = (),
           trust: bool = False) -> Sources:
        """The files a model and sets already open came from (the window's), to say them as a command line."""
        return cls(Path(net.path), None if clean is None else Path(clean.source),
                   tuple((Path(p.images.source), p.target) for p in sets), trust)


def by_name(path: str | Path | None) -> Path | None:
    """A path by its last part only (a file's or a folder's name; the text itself when it has none)."""
    return None if path is None else Path(Path(str(path)).name or str(path))


def warn_about(images: ImageSet, note: Note) -> None:
    """Each warning reading ``images`` raised (a resized set, skipped files), as a note."""
    for w in images.warnings:
        note(f"warning: {w}")


def note_scaling(scaling: str, reason: str, note: Note) -> None:
    """How the input scaling was chosen, when the user left it to the data (auto)."""
    if scaling == "auto":
        note(f"input scaling: {reason}")


class Request:
    """One thing a user asks for (see the module's text). Subclasses are frozen dataclasses."""

    command: ClassVar[str] = ""  # the CLI command that takes this request
    takes_poisoned: ClassVar[bool] = False  # its command takes --poisoned sets
    positional: ClassVar[bool] = False  # its files are the command's positional arguments (no --model)

    def check(self):
        """Every option and the output's place; what the job needs of them."""
        return None

    def from_sources(self, sources: Sources, scaling: str, note: Note, checked) -> Job:
        """The job on the files ``sources`` names, opened first."""
        raise NotImplementedError

    def words(self) -> list[str]:
        """The request's own options as command-line words (the files are :class:`Sources`')."""
        return []

    def file_words(self, sources: Sources) -> list[str]:
        """The options naming the files this request runs on, as its command takes them."""
        if self.positional:  # its files are its own words; the model is named by --model
            return ([] if sources.model is None else ["--model", str(sources.model)]) + \
                (["--trust-model"] if sources.trust else [])
        return sources.words(clean=True, poisoned=self.takes_poisoned)


def settings_words(owner_settings, params: dict) -> list[str]:
    """Settings given by name (a plug-in's ``params``) as command-line words, in declaration order."""
    out = []
    for s in owner_settings:
        if s.shown and params.get(s.name) is not None:
            out += s.words(params[s.name])
    return out


def detector_words(name: str, params: dict) -> list[str]:
    """A detector's settings (and its members', for a combining detector) as command-line words."""
    out = settings_words(DETECTORS[name].settings, params)
    for member, member_params in (params.get("member_params") or {}).items():
        out += settings_words(DETECTORS[member].settings, member_params)
    return once(out)


def once(words: list[str]) -> list[str]:
    """Option-value pairs with a repeated pair kept once (a setting two detectors share)."""
    pairs = dict.fromkeys(zip(words[::2], words[1::2]))
    return [w for pair in pairs for w in pair]


def sample_text(n: int) -> str:
    """A sample size as an option takes it: a number, or ``all`` for 0."""
    return "all" if n == 0 else str(n)


def command_line(request: Request, sources: Sources, scaling: str | None = None) -> list[str]:
    """The words of the command line that repeats ``request`` on ``sources``."""
    head = [COMMAND] + request.command.split()
    return head + request.file_words(sources) + request.words() + ([] if scaling is None else ["--scale", scaling])


@dataclass(frozen=True)
class CalibrateRequest(Request):
    """Calibrate ``detector`` (``params``: its settings as :func:`engine.detectors.make_detector`
    takes them) at ``frr``; saved to ``output`` when given."""

    command: ClassVar[str] = "calibrate"

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

    def from_sources(self, sources, scaling, note, checked):
        sources.require()
        net = sources.open_model(note)
        cal, reason = yield from self.job(net, sources.open_clean(net, note), scaling, checked)
        note_scaling(scaling, reason, note)
        return cal, reason

    def words(self) -> list[str]:
        out = [] if self.detector == DEFAULT_DETECTOR else ["--detector", self.detector]
        out += detector_words(self.detector, self.params)
        out += [] if self.method == DEFAULT_METHOD else ["--method", self.method]
        out += [] if self.frr == DEFAULT_FRR else ["--frr", percent(self.frr)]
        out += [] if self.min_samples is None else ["--min-samples", str(self.min_samples)]
        out += [] if self.sample is None else ["--sample", sample_text(self.sample)]
        return out + ([] if self.output is None else ["-o", str(self.output)])


@dataclass(frozen=True)
class ScanRequest(Request):
    """The trigger scan on up to ``max_images`` clean faces; saved to the folder ``output`` when given."""

    command: ClassVar[str] = "scan"

    max_images: int | None = None  # None: engine.scan.SCAN_IMAGES; 0: every face given
    settings: object = None  # engine.scan.ScanSettings; None: its defaults
    output: Path | None = None

    def __post_init__(self):
        from engine.scan import ScanSettings

        if self.settings is None:  # one request, however its defaults were spelled
            object.__setattr__(self, "settings", ScanSettings())

    def check(self) -> bool:
        from engine.io.files import check_output_folder
        from engine.scan import ScanSettings, is_scan_output

        (self.settings or ScanSettings()).check()
        if self.output is not None:
            check_output_folder(self.output, is_scan_output, "an earlier scan's results")
        return True

    def job(self, net: BadNet, clean: ImageSet, scaling: str, checked: bool = False):
        """The scan's result (engine.scan.ScanResult), saved to ``output`` when given."""
        from engine.scan import SCAN_IMAGES

        if not checked:
            self.check()
        limit = SCAN_IMAGES if self.max_images is None else self.max_images
        result = yield from scan_job(net, sample_images(clean, limit), scaling, self.settings)
        if self.output is not None:
            result.save(self.output)
        return result

    def from_sources(self, sources, scaling, note, checked):
        sources.require()
        net = sources.open_model(note)
        return (yield from self.job(net, sources.open_clean(net, note), scaling, checked))

    def words(self) -> list[str]:
        from engine.scan import SCAN_IMAGES, SETTINGS, ScanSettings

        n = SCAN_IMAGES if self.max_images is None else self.max_images
        out = ["--sample", sample_text(n)]
        given, default = self.settings or ScanSettings(), ScanSettings()
        for s in SETTINGS:
            if getattr(given, s.name) != getattr(default, s.name):
                out += s.words(getattr(given, s.name))
        return out + ([] if self.output is None else ["-o", str(self.output)])


@dataclass(frozen=True)
class RepairRequest(Request):
    """Repair by ``method`` (its ``settings`` by name) into the folder ``output``; ``scan``: a
    saved scan's folder, for a repair that uses one (it scans first without)."""

    takes_poisoned: ClassVar[bool] = True

    method: str = ""
    settings: dict = field(default_factory=dict)
    output: Path | None = None
    scan: Path | None = None

    @property
    def command(self) -> str:  # type: ignore[override]
        return f"repair {self.method}"

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

    def from_sources(self, sources, scaling, note, checked):
        repair = checked[0]
        sources.require(poisoned=repair.needs_poisoned)
        net, clean, sets = sources.open_all(note)
        if self.scan is None and repair.uses_scan:
            note("no scan given: scanning first")
        return (yield from self.job(net, clean, sets, scaling, checked=checked))

    def words(self) -> list[str]:
        from engine.repairs import repair_class

        out = settings_words(repair_class(self.method).settings, self.settings)
        out += [] if self.scan is None else ["--scan", str(self.scan)]
        return out + ([] if self.output is None else ["-o", str(self.output)])


def run(request: Request, sources: Sources, scaling: str, note: Note = _quiet) -> Job:
    """A request from paths, as the command line has them: checked, then its files opened, then run."""
    checked = request.check()  # before any file is read
    return (yield from request.from_sources(sources, scaling, note, checked))

