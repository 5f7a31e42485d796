"""The figures a defense is judged by, on a clean set or on a poisoned set with its target."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.detectors.calibration import Verdicts
from engine.scoring import Predictions


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The share of predictions equal to the labels (NaN for no images)."""
    return float(np.mean(np.asarray(predicted) == np.asarray(labels))) if len(labels) else float("nan")


def attack_success_rate(predicted: np.ndarray, target: int) -> float:
    """Share of poisoned images sent to the attacker's target class."""
    return float(np.mean(np.asarray(predicted) == target)) if len(predicted) else float("nan")


def flagged_rate(verdict_labels: np.ndarray, poisoned_label: int) -> float:
    """Share of images given the 'poisoned' label N: detection rate on poisoned data,
    false-rejection rate on clean data."""
    return float(np.mean(np.asarray(verdict_labels) == poisoned_label)) if len(verdict_labels) else float("nan")


def detection(flagged: np.ndarray, predicted: np.ndarray, target: int) -> tuple[float, int]:
    """The one definition of detection used everywhere (``score``, ``compare``, the report, the
    window): the share flagged among the poisoned images the BadNet sends to ``target`` (those the
    trigger works on; a trigger that fails needs no catching), with how many that is. When it sends
    none, every image counts, and the count says 0."""
    flagged = np.asarray(flagged, dtype=bool)
    sent = np.asarray(predicted) == target
    counted = flagged[sent] if sent.any() else flagged
    return (float(np.mean(counted)) if len(counted) else float("nan")), int(sent.sum())


@dataclass
class SetReport:
    """What ``score`` gives for one set; a figure that does not apply is None (null in JSON)."""

    n: int
    accuracy: float | None = None
    attack_success_rate: float | None = None
    n_sent_to_target: int | None = None  # poisoned images the BadNet sends to the target: detection counts these
    detection_rate: float | None = None  # flagged among those sent to the target (all, when none are)
    flagged_share_of_all: float | None = None  # flagged among every poisoned image of the set
    frr: float | None = None
    defended_accuracy: float | None = None
    defended_attack_success_rate: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def report(
    predictions: Predictions,
    labels: np.ndarray | None,
    target: int | None = None,
    verdicts: Verdicts | None = None,
    badnet: bool = True,
) -> SetReport:
    """Clean set (``target`` None): accuracy, and with verdicts the false-rejection rate.
    Poisoned set: attack success, and with verdicts the detection rate (:func:`detection`).
    ``badnet`` False: the predictions are not the BadNet's (a hand-made N+1 network judged on its
    own), so which images the BadNet sends to the target is unknown and detection counts all."""
    out = SetReport(n=len(predictions))
    if target is None:
        if labels is not None:
            out.accuracy = accuracy(predictions.labels, labels)
        if verdicts is not None:
            out.frr = flagged_rate(verdicts.labels, verdicts.poisoned_label)
            if labels is not None:
                out.defended_accuracy = accuracy(verdicts.labels, labels)
    else:
        out.attack_success_rate = attack_success_rate(predictions.labels, target)
        if badnet:
            out.n_sent_to_target = int(np.sum(np.asarray(predictions.labels) == target))
        if verdicts is not None:
            flagged = np.asarray(verdicts.labels) == verdicts.poisoned_label
            if badnet:
                out.detection_rate, _ = detection(flagged, predictions.labels, target)
            else:
                out.detection_rate = float(np.mean(flagged)) if len(flagged) else float("nan")
            out.flagged_share_of_all = float(np.mean(flagged)) if len(flagged) else float("nan")
            out.defended_attack_success_rate = attack_success_rate(verdicts.labels, target)
    return out
