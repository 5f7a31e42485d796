"""Repairs: methods that make a second network B' which, beside the BadNet B, says what is poisoned.

A repair is one module in this package: a subclass of :class:`Repair` decorated with
:func:`register`, declaring its ``name``, ``title``, ``summary``, ``settings`` (the same
:class:`~engine.detectors.Setting` detectors use, so the CLI options and the window's form follow),
what data it needs (``needs_poisoned``, ``uses_scan``), the ``rule`` of the bundle it writes and
the ``files`` it writes; and implementing :meth:`Repair.run`, a job that writes its folder and
returns a :class:`RepairOutcome` (the bundle, summary lines, curves). The shared parts live once:
the bundle and the model writer in :mod:`engine.repairs.bundle`, the training loop with its
held-out split in :mod:`engine.training`, and the checks of the request in
:func:`repair_job`, which the CLI and the window both call.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.io.datasets import ImageSet, PoisonedSet
from engine.io.fitting import fit_sets, fit_to_model
from engine.scoring import choose_scaling
from engine.settings import Setting, apply_settings
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job

REPAIRS: dict[str, type[Repair]] = {}
ALIASES = {"unlearn": "unlearning", "channels": "fine-pruning"}  # names the CLI used before


@dataclass
class Curve:
    """One plotted line: ``y`` against ``x``; ``role`` "accuracy" (drawn black) or "attack" (a set's colour)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    role: str = "accuracy"


@dataclass
class Plot:
    """What a repair shows as it finishes: curves on one pair of axes, and marked x positions."""

    title: str
    x_label: str
    y_label: str
    curves: list[Curve]
    marks: list[tuple[float, float, str]] = field(default_factory=list)  # (x, y, label): the saved models
    x_range: tuple[float, float] | None = None


@dataclass
class RepairOutcome:
    """What a repair made: its bundle (None when it built none), lines for people, plots, and the
    method's own result (its report, sweep, ...)."""

    method: str
    outdir: Path
    bundle: object | None  # RepairedNet
    lines: list[str]
    plots: list[Plot] = field(default_factory=list)
    detail: object = None
    scan: object = None  # the trigger scan a repair used (the given one, or the one it ran first)
    table: list[str] = field(default_factory=list)  # a fixed-width table for the terminal (a sweep)


class Repair(ABC):
    """A repair: makes a second network (or a bundle) whose answer N means poisoned; declares its
    settings; one module each, registered with :func:`register`."""
    name: ClassVar[str]
    title: ClassVar[str]  # "Fine-pruning"
    summary: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]] = ()
    needs_poisoned: ClassVar[bool] = False  # learns from the poisoned sets (they are otherwise only measured)
    uses_scan: ClassVar[bool] = False  # takes a trigger scan's reversed triggers (scans first when none is given)
    rule: ClassVar[str] = "disagree"  # the bundle's rule (engine.repairs.bundle.RULES)
    files: ClassVar[str] = r"repaired\.json"  # a regular expression matching every file it writes
    marker: ClassVar[str] = "repaired.json"  # a file only its folders hold, checked by is_output
    marker_header: ClassVar[tuple[str, ...]] = ()  # a CSV marker: the columns it starts with
    order: ClassVar[int] = 100

    def __init__(self, **params):
        apply_settings(self, self.settings, params, self.title)

    def params(self) -> dict:
        return {s.name: getattr(self, s.name) for s in self.settings}

    def check(self, net: BadNet) -> None:
        """Raise InputError(None, ...) where a setting cannot serve ``net`` (cheap: before any data is read)."""

    @classmethod
    def choices_for(cls, setting: str, net: BadNet) -> tuple[list[str], str] | None:
        """For a word setting whose words depend on the model (a layer's name): (the words, the
        default); None where the setting's own ``choices`` hold."""
        return None

    @classmethod
    def is_output(cls, folder: Path) -> bool:
        """A folder an earlier run of this repair wrote: its marker, and only files named like its own."""
        from engine.io.files import csv_header, is_json_of_kind
        from engine.repairs.bundle import FILE_KIND

        pattern = re.compile(cls.files)
        marker = folder / cls.marker
        if cls.marker_header:
            ours = tuple((csv_header(marker) or [])[:len(cls.marker_header)]) == cls.marker_header
        else:
            ours = is_json_of_kind(marker, FILE_KIND)
        return ours and all(pattern.fullmatch(p.name) for p in folder.iterdir())

    @classmethod
    def phrase(cls) -> str:
        """The title inside a sentence: "fine-pruning", but "N+1 network"."""
        t = cls.title
        return t[0].lower() + t[1:] if t[1:2].islower() else t

    @classmethod
    def describe(cls, choice: dict) -> str:
        """How a bundle of this method was made, in a few words, from its recorded choice."""
        return cls.phrase()

    @classmethod
    def bundle_title(cls, choice: dict) -> str:
        return f"G ({cls.phrase()})"

    @abstractmethod
    def run(self, net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], outdir: Path, scaling: str,
            scan=None) -> Job[RepairOutcome]: ...


def register(cls: type[Repair]) -> type[Repair]:
    """Class decorator: make a repair known by its name (twice is an error)."""
    if cls.name in REPAIRS:
        raise ValueError(f"repair {cls.name!r} registered twice")
    REPAIRS[cls.name] = cls
    ordered = sorted(REPAIRS.items(), key=lambda kv: kv[1].order)
    REPAIRS.clear()
    REPAIRS.update(ordered)
    return cls


def repair_class(name: str) -> type[Repair]:
    """The registered repair class of ``name`` (or an alias), or an InputError listing the repairs."""
    cls = REPAIRS.get(ALIASES.get(name, name))
    if cls is None:
        raise InputError(None, f"unknown repair {name!r}; choose from {', '.join(REPAIRS)}")
    return cls


def make_repair(name: str, params: dict | None = None) -> Repair:
    """A repair by name with checked settings (None values take the defaults)."""
    cls = repair_class(name)
    return cls(**{k: v for k, v in (params or {}).items() if v is not None})


def check_output_folder(path: str | Path, repair: Repair | type[Repair]) -> Path:
    """Before any long work: ``path`` may be new, empty, or an earlier run of the same repair."""
    from engine.io.files import check_output_folder as check_folder

    return check_folder(path, repair.is_output, f"an earlier {repair.phrase()} run's results")


def repair_job(repair: Repair, net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], outdir: str | Path,
               scaling: str, scan=None) -> Job[RepairOutcome]:
    """The one way in, for the CLI and the window: every check of the request, then the repair.

    The settings were checked when ``repair`` was made; here the model, the output folder, the
    clean data (labelled, classes of the model), the poisoned sets and the scan, before the input
    scaling is chosen (which may run the network) and before anything is written."""
    from engine.io.datasets import check_labels_in_range

    repair.check(net)
    outdir = check_output_folder(outdir, repair)
    if repair.needs_poisoned and not poisoned:
        raise InputError(None, f"{repair.title} learns from poisoned examples: add a poisoned set (with its target)")
    clean = fit_to_model(clean, net)
    clean.require_labels(repair.phrase())
    check_labels_in_range(clean, net.num_classes)
    sets = fit_sets(poisoned, net)
    if scan is not None:
        scan.check_model(net)
    chosen, _ = yield from choose_scaling(net, scaling, clean)
    outcome = yield from repair.run(net, clean, sets, outdir, chosen, scan)
    if outcome.bundle is not None:
        outcome.bundle.load_repaired()  # off the GUI thread, checked
    return outcome


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in ("bundle", "training", "pruning"):
            importlib.import_module(f"{__name__}.{module.name}")


_discover()
