"""Which detector works on this data, and at what cost to clean inputs.

For each detector and each poisoned set: the ROC curve (share of poisoned images flagged against
share of clean images flagged, as one pooled threshold sweeps the scores), its area, and the
detection rate at fixed false-rejection rates. Thresholds come from the clean set's own scores,
pooled over classes, with the rule calibration uses (the k-th lowest clean score, k = floor(frr n)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.calibration import check_frr, quantile_threshold
from engine.data_io import ImageSet, PoisonedSet
from engine.detectors import Detector
from engine.errors import InputError
from engine.model_io import BadNet
from engine.progress import Job, Progress

DEFAULT_FRRS = (0.01, 0.05)


@dataclass(frozen=True)
class Roc:
    """Flag an image when its score is below t: for every t, the share of clean images flagged
    (false rejection) and of poisoned images flagged (detection), from (0, 0) to (1, 1)."""

    frr: np.ndarray
    detection: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve: the chance a poisoned image scores below a clean one (ties: half)."""
        f, d = self.frr, self.detection
        return float(np.sum((f[1:] - f[:-1]) * (d[1:] + d[:-1]) / 2))


def roc(clean_scores: np.ndarray, poisoned_scores: np.ndarray) -> Roc:
    clean = np.sort(np.asarray(clean_scores, dtype=np.float64))
    poisoned = np.sort(np.asarray(poisoned_scores, dtype=np.float64))
    if len(clean) == 0 or len(poisoned) == 0:
        raise InputError(None, "a ROC curve needs clean and poisoned scores")
    cuts = np.unique(np.concatenate([clean, poisoned, [np.inf]]))
    frr = np.concatenate([[0.0], np.searchsorted(clean, cuts, side="left") / len(clean)])
    detection = np.concatenate([[0.0], np.searchsorted(poisoned, cuts, side="left") / len(poisoned)])
    return Roc(frr, detection)


@dataclass(frozen=True)
class OperatingPoint:
    target_frr: float
    threshold: float
    frr: float  # measured on the clean set
    detection: float


def operating_point(clean_scores: np.ndarray, poisoned_scores: np.ndarray, target_frr: float) -> OperatingPoint:
    clean = np.sort(np.asarray(clean_scores, dtype=np.float64))
    t = quantile_threshold(clean, target_frr)
    return OperatingPoint(target_frr, t, float(np.mean(clean < t)), float(np.mean(np.asarray(poisoned_scores) < t)))


@dataclass(frozen=True)
class Comparison:
    """One detector against one poisoned set."""

    detector: str
    title: str
    params: dict
    poisoned: str
    target: int
    n_clean: int
    n_poisoned: int
    roc: Roc
    points: list[OperatingPoint]
    n_sent: int = -1  # poisoned images the BadNet sends to the target: detection counts these

    @property
    def auc(self) -> float:
        return self.roc.auc

    def sent_text(self) -> str:
        """How many poisoned images the detection figures count."""
        if self.n_sent == 0:
            return f"none sent to target {self.target}, so all {self.n_poisoned} count"
        return f"{self.n_sent} of {self.n_poisoned} sent to target {self.target}"

    def to_dict(self) -> dict:
        return {
            "detector": self.detector,
            "params": self.params,
            "poisoned": self.poisoned,
            "target": self.target,
            "n_clean": self.n_clean,
            "n_poisoned": self.n_poisoned,
            "n_sent_to_target": self.n_sent,
            "auc": self.auc,
            "at_frr": [
                {"target_frr": p.target_frr, "threshold": p.threshold, "frr": p.frr, "detection": p.detection}
                for p in self.points
            ],
        }


def compare(
    net: BadNet,
    clean: ImageSet,
    poisoned: list[PoisonedSet],
    detectors: list[Detector],
    scaling: str,
    frrs: tuple[float, ...] = DEFAULT_FRRS,
) -> Job[list[Comparison]]:
    """Fit each detector on the clean set, score every set, and compare.

    Detection counts the poisoned images the BadNet actually sends to the set's target (a trigger
    that does not work on an image needs no catching); when it sends none, all of them count."""
    if not poisoned:
        raise InputError(None, "comparing detectors needs at least one poisoned set")
    for f in frrs:
        check_frr(f)
    out = []
    for d in detectors:
        yield Progress(0, 1, f"{d.title}: fitting")
        yield from d.fit(net, clean, scaling)
        clean_scores = (yield from d.score(net, clean, scaling)).values
        for p in poisoned:
            scored = yield from d.score(net, p.images, scaling)
            sent = scored.predicted == p.target
            scores = scored.values[sent] if sent.any() else scored.values
            out.append(Comparison(
                d.name, d.title, d.params(), p.name, p.target, len(clean), len(p.images),
                roc(clean_scores, scores), [operating_point(clean_scores, scores, f) for f in frrs],
                int(sent.sum()),
            ))
    return out


ROC_CSV_HEADER = ["detector", "poisoned_set", "false_rejection", "detection"]
