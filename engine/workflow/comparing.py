"""The comparison, once: every chosen detector's ROC curves and detection at fixed false-rejection
rates, and every defense side by side (the BadNet undefended, each repaired network, each
detector at the last rate). The CLI's ``compare``, the window's Compare tab and the audit report
all run :class:`CompareRequest`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from engine.detectors import DETECTORS
from engine.detectors.calibration import check_frr
from engine.evaluation.compare import DEFAULT_FRRS
from engine.io.datasets import ImageSet, PoisonedSet
from engine.io.models import BadNet
from engine.progress import Job
from engine.rates import percent
from engine.workflow.jobs import compare_job, make_detectors, repairs_job
from engine.workflow.requests import Request, detector_words, once


@dataclass(frozen=True)
class CompareOutcome:
    """The comparisons (engine.evaluation.compare.Comparison, one per detector and poisoned set)
    and the defenses side by side (DefenseRow), with the sets they were measured on."""

    net: BadNet
    results: list
    defenses: list
    clean: ImageSet
    poisoned: list[PoisonedSet]
    frrs: tuple[float, ...]
    roc_csv: Path | None = None


@dataclass(frozen=True)
class CompareRequest(Request):
    """Compare ``detectors`` (names; ``params``: each one's settings) at the rates ``frrs`` on the
    clean set against every poisoned set; with ``repaired`` bundles and hand-made ``nplus1``
    networks beside them; every ROC curve to ``roc_csv`` when given. Each repaired network is
    judged at the input scaling it was made with (the scaling is part of the defense)."""

    command: ClassVar[str] = "compare"
    takes_poisoned: ClassVar[bool] = True

    detectors: tuple[str, ...] = tuple(DETECTORS)
    params: dict = field(default_factory=dict)
    frrs: tuple[float, ...] = tuple(DEFAULT_FRRS)
    roc_csv: Path | None = None
    repaired: tuple[Path, ...] = ()
    nplus1: tuple[Path, ...] = ()

    def __post_init__(self):  # one request, however its defaults were spelled
        object.__setattr__(self, "params", {n: dict(p) for n, p in (self.params or {}).items() if p})
        object.__setattr__(self, "detectors", tuple(self.detectors))
        object.__setattr__(self, "frrs", tuple(self.frrs))

    def check(self):
        """The detectors made with their settings, the rates, the CSV's place: the detectors."""
        from engine.evaluation.compare import ROC_CSV_HEADER
        from engine.io.files import check_output, csv_header

        for f in self.frrs:
            check_frr(f)
        made = make_detectors(list(self.detectors), self.params)
        if self.roc_csv is not None:
            check_output(self.roc_csv, lambda p: csv_header(p) == ROC_CSV_HEADER, "ROC curve CSV")
        return made

    def read_bundles(self) -> list:
        """The repaired bundles named, read (a damaged one fails before any model is loaded)."""
        from engine.repairs.bundle import RepairedNet

        return [RepairedNet.load(b) for b in self.repaired]

    def open_repaired(self, net: BadNet, scaling: str, trust: bool, bundles: list | None = None) -> list:
        """The repaired networks named, each checked against ``net`` and loaded (one for another
        model fails here, before the long comparison)."""
        from engine.repairs.bundle import RepairedNet

        repaired = list(self.read_bundles() if bundles is None else bundles)
        hand_scaling = "1/255" if scaling in (None, "auto") else scaling
        repaired += [RepairedNet.hand_made_nplus1(m, hand_scaling, net, trust) for m in self.nplus1]
        for g in repaired:
            g.check_model(net)
            g.load_repaired(trust=trust)
        return repaired

    def job(self, net: BadNet, clean: ImageSet, sets: list[PoisonedSet], scaling: str, checked=None,
            repaired: list = ()) -> Job[CompareOutcome]:
        """The comparison and the defenses side by side; ``repaired``: RepairedNets already loaded."""
        from engine.evaluation.compare import detector_rows

        detectors = checked if checked is not None else self.check()
        frrs = tuple(self.frrs)
        results = yield from compare_job(net, clean, sets, detectors, scaling, frrs)
        defenses = detector_rows(results, frrs[-1])
        if repaired:
            defenses = (yield from repairs_job(net, clean, sets, list(repaired), scaling)) + defenses
        if self.roc_csv is not None:
            write_roc_csv(self.roc_csv, results)
        return CompareOutcome(net, results, defenses, clean, list(sets), frrs, self.roc_csv)

    def from_sources(self, sources, scaling, note, checked):
        sources.require(poisoned=True)
        bundles = self.read_bundles()  # a damaged bundle fails before any work
        net, clean, sets = sources.open_all(note)
        repaired = self.open_repaired(net, scaling, sources.trust, bundles)
        out = yield from self.job(net, clean, sets, scaling, checked, repaired)
        if out.roc_csv is not None:
            note(f"wrote ROC curves to {out.roc_csv}")
        return out

    def words(self) -> list[str]:
        out = [] if tuple(self.detectors) == tuple(DETECTORS) else ["--detectors", ",".join(self.detectors)]
        out += once([w for name in self.detectors for w in detector_words(name, self.params.get(name) or {})])
        out += ["--frr", ",".join(percent(f) for f in self.frrs)]
        out += [w for r in self.repaired for w in ("--repaired", str(r))]
        out += [w for m in self.nplus1 for w in ("--nplus1", str(m))]
        return out + ([] if self.roc_csv is None else ["--roc-csv", str(self.roc_csv)])


def write_roc_csv(path: Path, results: list) -> None:
    """Every ROC curve as CSV rows: detector, poisoned set, false rejection, detection."""
    from engine.evaluation.compare import ROC_CSV_HEADER
    from engine.io.files import write_csv

    rows = [[r.detector, r.poisoned, f"{f:.6f}", f"{d:.6f}"]
            for r in results for f, d in zip(r.roc.frr, r.roc.detection)]
    write_csv(path, ROC_CSV_HEADER, rows)
