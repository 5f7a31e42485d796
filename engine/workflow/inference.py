"""Requests that run the network on images and say what it answers: a model's facts (``info``),
top classes (``predict``), CSAW verdicts under a defense (``eval``), figures on whole sets
(``score``) and where the trigger is (``explain``). Each follows the protocol of
:class:`engine.workflow.requests.Request` and returns a plain outcome the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from engine.errors import InputError
from engine.io.datasets import ImageSet
from engine.io.models import BadNet
from engine.progress import Job
from engine.workflow.opening import check_target, load_defense, load_scan, read_images, read_set
from engine.workflow.requests import Note, Request, Sources, is_demo_model, note_scaling, warn_about


def _done(value):
    """A job that yields nothing and returns ``value`` (a request with no long work)."""
    return value
    yield  # noqa: unreachable: makes this a generator


@dataclass(frozen=True)
class InfoRequest(Request):
    """A model's format, input shape, classes, layers and fingerprint."""

    command: ClassVar[str] = "info"
    positional: ClassVar[bool] = True

    def file_words(self, sources: Sources) -> list[str]:
        return ([] if sources.model is None else [str(sources.model)]) + (["--trust-model"] if sources.trust else [])

    def job(self, net: BadNet) -> Job[dict]:
        """The model's facts (BadNet.report)."""
        return _done(net.report())

    def from_sources(self, sources, scaling, note, checked):
        return (yield from self.job(sources.open_model(note)))


@dataclass(frozen=True)
class ImagesOutcome:
    """What a request that ran the network on images found: the model, the images, the scaling
    used, and one result per image (``results``: the request's own kind)."""

    net: BadNet
    images: ImageSet
    scaling: str
    results: object = None
    extra: dict = field(default_factory=dict)


def _images(paths: tuple[Path, ...], net: BadNet, note: Note) -> ImageSet:
    """The images named; the demo's images when none are and the model is the demo's."""
    if not paths:
        if not is_demo_model(net):
            raise InputError(net.path, "{images} missing: name the images to check (the demo's images stand in "
                             "only for the demo's network)", settings=("images",))
        paths = tuple(Sources.demo_images())
    images = read_images(list(paths), net)
    warn_about(images, note)
    return images


@dataclass(frozen=True)
class PredictRequest(Request):
    """The top class and its confidence for each image of ``paths`` (files, folders, HDF5 sets)."""

    command: ClassVar[str] = "predict"
    positional: ClassVar[bool] = True

    paths: tuple[Path, ...] = ()

    def job(self, net: BadNet, images: ImageSet, scaling: str) -> Job[ImagesOutcome]:
        """Predictions (engine.scoring.Predictions) of ``images``, with the scaling chosen."""
        from engine.scoring import choose_scaling, predict

        chosen, reason = yield from choose_scaling(net, scaling, images if scaling == "auto" else None)
        preds = yield from predict(net, images, chosen)
        return ImagesOutcome(net, images, chosen, preds, {"reason": reason})

    def from_sources(self, sources, scaling, note, checked):
        net = sources.open_model(note)
        out = yield from self.job(net, _images(self.paths, net, note), scaling)
        note_scaling(scaling, out.extra["reason"], note)
        return out

    def words(self) -> list[str]:
        return [str(p) for p in self.paths]


@dataclass(frozen=True)
class Defense:
    """The defense a verdict comes from, as named: calibrations, a repaired bundle, or an N+1 network."""

    calibrations: tuple[Path, ...] = ()
    repaired: Path | None = None
    nplus1: Path | None = None

    @property
    def given(self) -> bool:
        return bool(self.calibrations or self.repaired or self.nplus1)

    def name(self) -> str | None:
        """The defense as the user named it (file names only)."""
        if self.calibrations:
            return ", ".join(Path(c).name for c in self.calibrations)
        for value in (self.repaired, self.nplus1):
            if value:
                return Path(value).name
        return None

    def open(self, sources: Sources, scaling: str | None, note: Note):
        """(defense, the BadNet it defends): Calibration, AnyOf or RepairedNet, and the model."""
        return load_defense(list(self.calibrations), self.repaired, sources.model, sources.trust, scaling,
                            on_model=lambda p: note(f"loading model {p}…"), nplus1=self.nplus1)

    def words(self) -> list[str]:
        out = [w for c in self.calibrations for w in ("--calibration", str(c))]
        out += [] if self.repaired is None else ["--repaired", str(self.repaired)]
        return out + ([] if self.nplus1 is None else ["--nplus1", str(self.nplus1)])


@dataclass(frozen=True)
class EvalRequest(Request):
    """CSAW verdicts for each image of ``paths`` under ``defense``: its class, or N when poisoned."""

    command: ClassVar[str] = "eval"
    positional: ClassVar[bool] = True

    defense: Defense = Defense()
    paths: tuple[Path, ...] = ()

    def check(self):
        if not self.defense.given:
            raise InputError(None, "give a calibration or a repaired network")

    def job(self, net: BadNet, defense, images: ImageSet) -> Job[ImagesOutcome]:
        """Verdicts (labels, N = poisoned) of ``images``; ``defense``: a loaded calibration or repaired network."""
        verdicts = yield from defense.judge(net, images)
        return ImagesOutcome(net, images, defense.scaling, verdicts,
                             {"poisoned_label": int(defense.poisoned_label), "defense": self.defense.name()})

    def from_sources(self, sources, scaling, note, checked):
        defense, net = self.defense.open(sources, scaling, note)
        return (yield from self.job(net, defense, _images(self.paths, net, note)))

    def words(self) -> list[str]:
        return self.defense.words() + [str(p) for p in self.paths]


@dataclass(frozen=True)
class ScoreOutcome:
    """Figures on each set: (data, target or None, engine.evaluation.metrics.SetReport)."""

    net: BadNet
    scaling: str
    defense: str | None
    sets: list
    reason: str = ""  # how the input scaling was chosen


@dataclass(frozen=True)
class ScoreRequest(Request):
    """Accuracy, attack success and (with a defense) detection and false rejection on each set:
    the clean set (labelled) and each poisoned set with its target. The demo's held-out test faces
    when the demo's network is scored with no set named."""

    command: ClassVar[str] = "score"
    takes_poisoned: ClassVar[bool] = True

    defense: Defense = Defense()

    def job(self, net: BadNet, sets: list[tuple[ImageSet, int | None]], scaling: str, defense=None,
            judge_only_second: bool = False) -> Job[ScoreOutcome]:
        """Each set's figures; ``defense`` (loaded) gives the detection figures and the scaling."""
        from engine.evaluation import metrics
        from engine.scoring import choose_scaling, predict

        reason = "the defense's"
        if defense is not None:
            scaling = defense.scaling
        else:
            scaling, reason = yield from choose_scaling(net, scaling, sets[0][0])
        out = []
        for data, target in sets:
            preds = yield from predict(net, data, scaling)
            verdicts = (yield from defense.judge(net, data)) if defense is not None else None
            result = metrics.report(preds, data.labels if target is None else None, target, verdicts,
                                    badnet=not judge_only_second)
            out.append((data, target, result))
        return ScoreOutcome(net, scaling, self.defense.name(), out, reason)

    def from_sources(self, sources, scaling, note, checked):
        if self.defense.given:
            defense, net = self.defense.open(sources, scaling, note)
        else:
            defense, net = None, sources.open_model(note)
        specs = [(Path(sources.clean), None)] if sources.clean else []
        specs += list(sources.poisoned)
        if not specs:
            if not is_demo_model(net):
                raise InputError(net.path, "{clean_data} or {poisoned_data} missing: name the data to score (the "
                                 "demo's faces stand in only for the demo's network)",
                                 settings=("clean_data", "poisoned_data"))
            specs = [(Sources().clean_path(held_out=True), None)]
        for path, target in specs:
            if target is not None:
                check_target(net, target, path)
        sets = []
        for path, target in specs:
            data = read_set(path, net)
            warn_about(data, note)
            if target is None and data.labels is None and defense is None:
                raise InputError(path, "has no labels: give it as {poisoned_data}, or give labelled clean data",
                                 settings=("poisoned_data",))
            sets.append((data, target))
        own = self.defense.nplus1 is not None and sources.model is None  # an N+1 network judged alone
        out = yield from self.job(net, sets, scaling or "1/255", defense, judge_only_second=own)
        if defense is None:
            note_scaling(scaling, out.reason, note)
        return out

    def words(self) -> list[str]:
        return self.defense.words()


@dataclass(frozen=True)
class ExplainRequest(Request):
    """A sensitivity map per image of ``paths`` (at most engine.workflow.MAX_EXPLAINED), with a
    saved scan's reversed-trigger mask for the predicted class when it flagged it; one PNG to ``output``."""

    command: ClassVar[str] = "explain"
    positional: ClassVar[bool] = True

    paths: tuple[Path, ...] = ()
    scan: Path | None = None
    output: Path | None = None

    def check(self):
        from engine.io.files import check_png_output

        if not self.paths:
            raise InputError(None, "{images} missing: name the images to explain", settings=("images",))
        if self.output is None:
            raise InputError(None, "explain writes one PNG: name it")
        check_png_output(self.output)

    def job(self, net: BadNet, images: ImageSet, scaling: str, scan=None) -> Job[ImagesOutcome]:
        """The explanations, written to ``output``; ``scan``: a ScanResult (its scaling is used)."""
        from engine.workflow.jobs import explain_images, write_explanations

        scaling = scan.scaling if scan is not None else scaling
        explanations = yield from explain_images(net, images, scaling)
        write_explanations(self.output, explanations, scan)
        return ImagesOutcome(net, images, scaling, explanations, {"scan": scan})

    def from_sources(self, sources, scaling, note, checked):
        net = sources.open_model(note)
        scan = load_scan(self.scan, net) if self.scan else None
        return (yield from self.job(net, _images(self.paths, net, note), scaling, scan))

    def words(self) -> list[str]:
        out = [str(p) for p in self.paths]
        out += [] if self.scan is None else ["--scan", str(self.scan)]
        return out + ["-o", str(self.output)]
