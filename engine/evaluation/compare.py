"""Which detector works on this data, and at what cost to clean inputs.

For each detector and each poisoned set: the ROC curve (share of poisoned images flagged against
share of clean images flagged, as one pooled threshold sweeps the scores), its area, and the
detection rate at fixed false-rejection rates. Thresholds come from the clean set's own scores,
pooled over classes, with the rule calibration uses (the k-th lowest clean score, k = floor(frr n)).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from engine.detectors.calibration import check_frr, quantile_threshold
from engine.io.datasets import ImageSet, PoisonedSet
from engine.detectors import Detector
from engine.errors import InputError
from engine.evaluation.metrics import detection
from engine.io.models import BadNet
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
    """The ROC curve of clean against poisoned scores (low = flagged) and its area."""
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
    """A threshold set at a target false-rejection rate and what it gives: measured FRR and detection."""
    target_frr: float
    threshold: float
    frr: float  # measured on the clean set
    detection: float
    attack_success: float | None = None  # share of all poisoned images still sent to the target, unflagged
    clean_accuracy: float | None = None  # share of clean images unflagged and rightly classified
    flagged_all: float | None = None  # share of every poisoned image flagged, sent to the target or not


def operating_point(clean_scores: np.ndarray, poisoned_scores: np.ndarray, target_frr: float) -> OperatingPoint:
    """The threshold at ``target_frr`` of the clean scores (the calibration's rule) and its figures."""
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
                {"target_frr": p.target_frr, "threshold": p.threshold, "frr": p.frr, "detection": p.detection,
                 "flagged_share_of_all": p.flagged_all, "attack_success": p.attack_success,
                 "clean_accuracy": p.clean_accuracy}
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
        clean_scored = yield from d.score(net, clean, scaling)
        clean_scores = clean_scored.values
        for p in poisoned:
            scored = yield from d.score(net, p.images, scaling)
            sent = scored.predicted == p.target
            scores = scored.values[sent] if sent.any() else scored.values
            points = []
            for f in frrs:
                point = operating_point(clean_scores, scores, f)
                passed = scored.values >= point.threshold
                accuracy = None
                if clean.labels is not None:
                    kept = clean_scores >= point.threshold
                    accuracy = float(np.mean(kept & (clean_scored.predicted == clean.labels)))
                points.append(replace(point, attack_success=float(np.mean(passed & sent)), clean_accuracy=accuracy,
                                      flagged_all=float(np.mean(~passed))))
            out.append(Comparison(
                d.name, d.title, d.params(), p.name, p.target, len(clean), len(p.images),
                roc(clean_scores, scores), points, int(sent.sum()),
            ))
    return out


# --- repaired networks beside the detectors --------------------------------------------------


@dataclass(frozen=True)
class SetOutcome:
    """What a defense does to one poisoned set."""

    target: int
    n: int
    n_sent: int  # sent to the target by the BadNet: detection counts these (all, when none)
    detection: float
    attack_success: float  # share of all the set's images whose final answer is the target
    flagged_all: float | None = None  # share of all the set's images flagged, sent to the target or not


@dataclass(frozen=True)
class DefenseRow:
    """One defense's figures, the same for a detector at an operating point and for a repaired
    network: clean accuracy and false rejection on the clean set, detection and attack success
    on each poisoned set."""

    title: str
    kind: str  # "none", "detector" or "repaired"
    clean_accuracy: float | None
    frr: float
    sets: dict[str, SetOutcome]
    note: str = ""  # how it was made (trained on which triggers, fine-tuned, ...)
    trained_on: tuple[str, ...] = ()  # poisoned sets it learnt from (figures on those are not held out)
    trained_on_clean: bool = False  # it learnt from this very clean set (its clean figures are not held out)

    def to_dict(self) -> dict:
        return {"defense": self.title, "kind": self.kind, "note": self.note, "clean_accuracy": self.clean_accuracy,
                "frr": self.frr, "trained_on": list(self.trained_on), "trained_on_clean": self.trained_on_clean,
                "poisoned": {k: {"target": v.target, "n": v.n, "n_sent_to_target": v.n_sent,
                                 "detection": v.detection, "flagged_share_of_all": v.flagged_all,
                                 "attack_success": v.attack_success} for k, v in self.sets.items()}}


def describe_repair(g) -> tuple[str, str, tuple[str, ...]]:
    """(title, how it was made, the poisoned sets it was trained on) for a RepairedNet."""
    return g.describe()


def repair_rows(net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], repairs: list,
                scaling: str) -> Job[list[DefenseRow]]:
    """The BadNet undefended, then each repaired network, judged on the same sets."""
    from engine.scoring import predict

    b_clean = yield from predict(net, clean, scaling)
    sent, b_labels = {}, {}
    undefended = {}
    for p in poisoned:
        b = yield from predict(net, p.images, scaling)
        b_labels[p.name] = b.labels
        sent[p.name] = b.labels == p.target
        undefended[p.name] = SetOutcome(p.target, len(p.images), int(sent[p.name].sum()), 0.0,
                                        float(np.mean(sent[p.name])), 0.0)
    labels = clean.labels
    rows = [DefenseRow("no defense (the BadNet)", "none",
                       None if labels is None else float(np.mean(b_clean.labels == labels)), 0.0, undefended)]
    for g in repairs:
        # A repaired network is judged as it is used: at the input scaling it was made with. Its
        # detection counts the faces the BadNet sends to the target at that scaling.
        title, note, trained = describe_repair(g)
        if g.scaling != scaling:
            note = "; ".join(n for n in (note, f"input scaling {g.scaling}") if n)
        yield Progress(0, 1, f"judging with {title}")
        v = yield from g.judge(net, clean)
        outcomes = {}
        for p in poisoned:
            pv = yield from g.judge(net, p.images)
            flagged = pv.labels == g.poisoned_label
            sent_by = b_labels[p.name]
            if g.scaling != scaling:
                sent_by = (yield from predict(net, p.images, g.scaling)).labels
            found, n_sent = detection(flagged, sent_by, p.target)
            outcomes[p.name] = SetOutcome(p.target, len(p.images), n_sent, found,
                                          float(np.mean(pv.labels == p.target)), float(np.mean(flagged)))
        rows.append(DefenseRow(title, "repaired", None if labels is None else float(np.mean(v.labels == labels)),
                               float(np.mean(v.labels == g.poisoned_label)), outcomes, note, trained,
                               g.choice.get("clean_digest") == clean.digest))
    return rows


def detector_rows(results: list[Comparison], target_frr: float) -> list[DefenseRow]:
    """Each compared detector at the operating point nearest ``target_frr``, as a DefenseRow."""
    rows: dict[str, DefenseRow] = {}
    for r in results:
        point = min(r.points, key=lambda p: abs(p.target_frr - target_frr))
        row = rows.get(r.detector)
        outcome = SetOutcome(r.target, r.n_poisoned, r.n_sent, point.detection,
                             point.attack_success if point.attack_success is not None else float("nan"),
                             point.flagged_all)
        if row is None:
            rows[r.detector] = DefenseRow(f"{r.title} at {100 * point.target_frr:g}% FRR", "detector",
                                          point.clean_accuracy, point.frr, {r.poisoned: outcome},
                                          "one pooled threshold from the clean scores")
        else:
            row.sets[r.poisoned] = outcome
    return list(rows.values())


ROC_CSV_HEADER = ["detector", "poisoned_set", "false_rejection", "detection"]
