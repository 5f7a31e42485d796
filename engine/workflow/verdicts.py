"""Checking images and the verdict rules: per-image scores under every calibration, the verdict a
row gets by the active detector, by any detector, or by the repaired network, and their CSV."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.detectors.calibration import Calibration
from engine.io.datasets import ImageSet, PoisonedSet
from engine.detectors import DETECTORS, Scores
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scoring import predict
from engine.workflow.opening import fit_to_model, read_set

CLEAN = "clean"


POISONED = "poisoned"


VERDICT_SOURCES = ("calibration", "any", "repaired")  # the active detector, any calibrated one, G


@dataclass(frozen=True)
class SetScores:
    """Scores of one loaded set under one detector."""

    name: str
    kind: str  # CLEAN or POISONED
    target: int | None
    scores: Scores


def score_sets(net: BadNet, cal: Calibration, clean: ImageSet | None, poisoned: list[PoisonedSet]) -> Job[list[SetScores]]:
    """The clean set's and each poisoned set's scores under ``cal``'s detector (cached passes)."""
    detector = cal.make_detector()
    out = []
    if clean is not None:
        out.append(SetScores(CLEAN, CLEAN, None, (yield from detector.score(net, fit_to_model(clean, net), cal.scaling))))
    for p in poisoned:
        scores = yield from detector.score(net, fit_to_model(p.images, net), cal.scaling)
        out.append(SetScores(p.name, POISONED, p.target, scores))
    return out


@dataclass(frozen=True)
class CheckedImage:
    """One checked image: its pixels, the network's class, its top-1 confidence and every
    calibrated detector's score."""

    name: str
    image: np.ndarray
    predicted: int
    confidence: float
    scores: dict  # detector name -> score, for every calibrated detector
    label: int | None  # from the file name or data set, when it carries one
    repaired: int | None = None  # B''s class, when a repaired network G is loaded
    classes: dict = field(default_factory=dict)  # detector name -> the class it judged, where not `predicted`


def check_images(net: BadNet, images: ImageSet, scaling: str, calibrations: dict[str, Calibration],
                 repaired=None) -> Job[list[CheckedImage]]:
    """Every calibrated detector's score for each image (each with its calibration's scaling),
    the top-1 confidence always, and B''s class when a repaired network is given."""
    images = fit_to_model(images, net)
    conf = yield from predict(net, images, scaling)
    scores = [{} for _ in range(len(images))]
    classes = [{} for _ in range(len(images))]
    for name, cal in calibrations.items():
        cal.check_model(net)
        if name == "confidence" and cal.scaling == scaling and not cal.detector_params.get("fine_tune_epochs"):
            values, judged = conf.confidences, conf.labels
        else:
            scored = yield from cal.make_detector().score(net, images, cal.scaling)
            values, judged = scored.values, scored.predicted
        for row, own, v, c, b in zip(scores, classes, values, judged, conf.labels):
            row[name] = float(v)
            if int(c) != int(b):  # a detector that judges with another network (a fine-tuned copy)
                own[name] = int(c)
    if repaired is not None:
        second = [int(c) for c in (yield from predict(repaired.load_repaired(), images, repaired.scaling)).labels]
    else:
        second = [None] * len(images)
    labels = images.labels if images.labels is not None else [None] * len(images)
    return [
        CheckedImage(name, img, int(c), float(p), s, None if lab is None else int(lab), bp, own)
        for name, img, c, p, s, lab, bp, own in zip(images.names, images.images, conf.labels, conf.confidences,
                                                    scores, labels, second, classes)
    ]


def check_paths(net: BadNet, paths: list[Path], scaling: str, calibrations: dict[str, Calibration],
                repaired=None) -> Job[tuple[list[CheckedImage], list[str]]]:
    """Read and check each path on its own: (rows, one-line problems and warnings)."""
    rows, problems = [], []
    for i, path in enumerate(paths):
        yield Progress(i, len(paths), f"reading {path.name}")
        try:
            images = read_set(path, net)
        except InputError as err:
            problems.append(str(err))
            continue
        problems.extend(images.warnings)
        rows.extend((yield from check_images(net, images, scaling, calibrations, repaired)))
    yield Progress(len(paths), len(paths), "checked")
    return rows, problems


@dataclass(frozen=True)
class RowVerdict:
    """One defense's word on one image: score against threshold, and the label in [0, N]."""

    score: float | None
    threshold: float | None
    label: int | None
    poisoned_label: int | None

    @property
    def ready(self) -> bool:
        return self.label is not None

    @property
    def poisoned(self) -> bool:
        return self.label is not None and self.label == self.poisoned_label


NO_VERDICT = RowVerdict(None, None, None, None)


@dataclass
class VerdictRules:
    """The rules that turn a checked image's scores into verdicts, for every loaded defense."""

    calibrations: dict[str, Calibration] = field(default_factory=dict)
    active: str | None = None  # the detector whose calibration is shown and edited
    repaired: object | None = None  # RepairedNet
    source: str = "calibration"  # see VERDICT_SOURCES

    def detector(self, row: CheckedImage, name: str) -> RowVerdict:
        """One calibrated detector; the score alone when it is not calibrated."""
        cal = self.calibrations.get(name)
        score = row.confidence if name == "confidence" and name not in row.scores else row.scores.get(name)
        if cal is None or score is None:
            return RowVerdict(score, None, None, None)
        judged = row.classes.get(name, row.predicted)
        label = int(cal.labels(judged, score))
        return RowVerdict(score, float(cal.thresholds[judged]), label, cal.poisoned_label)

    def repaired_verdict(self, row: CheckedImage) -> RowVerdict:
        """The repaired network's verdict (G: N where B and B' disagree; N+1: B''s own answer)."""
        if self.repaired is None or row.repaired is None:
            return NO_VERDICT
        passes = float(self.repaired.passes(row.predicted, row.repaired))
        return RowVerdict(passes, 0.5, int(self.repaired.labels(row.predicted, row.repaired)),
                          self.repaired.poisoned_label)

    def any(self, row: CheckedImage) -> RowVerdict:
        """N when any calibrated detector flags the image."""
        from engine.detectors.calibration import any_flags

        each = [self.detector(row, d) for d in self.calibrations]
        each = [v for v in each if v.ready]
        if not each:
            return NO_VERDICT
        n = each[0].poisoned_label
        first = next((v for v in each if v.poisoned), each[0])
        label = int(any_flags([v.label for v in each], row.predicted, n))
        return RowVerdict(first.score, first.threshold, label, n)

    def verdict(self, row: CheckedImage) -> RowVerdict:
        """The verdict of the chosen source: the active detector, any detector, or G."""
        if self.source == "repaired":
            return self.repaired_verdict(row)
        if self.source == "any":
            return self.any(row)
        if self.active is None or self.active not in self.calibrations:
            return NO_VERDICT
        return self.detector(row, self.active)

    @property
    def source_name(self) -> str:
        return {"calibration": self.active or "", "any": "any", "repaired": "G"}[self.source]


def checked_csv(rows: list[CheckedImage], rules: VerdictRules) -> tuple[list[str], list[list]]:
    """(header, rows) of the image-check CSV: every calibrated detector's columns."""
    detectors = [d for d in DETECTORS if d in rules.calibrations]
    header = ["path", "predicted", "confidence"]
    for d in detectors:
        header += [f"{d}_score", f"{d}_threshold", f"{d}_label"]
    header += ["verdict_label", "poisoned", "verdict_by", "g_label", "file_label"]

    def cell(value, fmt="{:.6f}"):
        return "" if value is None else fmt.format(value)

    out = []
    for r in rows:
        v = rules.verdict(r)
        row = [r.name, r.predicted, f"{r.confidence:.6f}"]
        for d in detectors:
            dv = rules.detector(r, d)
            row += [cell(dv.score), cell(dv.threshold), cell(dv.label, "{}")]
        row += [cell(v.label, "{}"), "" if not v.ready else int(v.poisoned), rules.source_name,
                cell(rules.repaired_verdict(r).label, "{}"), cell(r.label, "{}")]
        out.append(row)
    return header, out
