"""The figures a defense is judged by, on a clean set or on a poisoned set with its target."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.detectors.calibration import Verdicts
from engine.scoring import Predictions


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(labels))) if len(labels) else float("nan")


def attack_success_rate(predicted: np.ndarray, target: int) -> float:
    """Share of poisoned images sent to the attacker's target class."""
    return float(np.mean(np.asarray(predicted) == target)) if len(predicted) else float("nan")


def flagged_rate(verdict_labels: np.ndarray, poisoned_label: int) -> float:
    """Share of images given the 'poisoned' label N: detection rate on poisoned data,
    false-rejection rate on clean data."""
    return float(np.mean(np.asarray(verdict_labels) == poisoned_label)) if len(verdict_labels) else float("nan")


@dataclass
class SetReport:
    """What ``score`` prints for one set. Fields that do not apply stay None."""

    n: int
    accuracy: float | None = None
    attack_success_rate: float | None = None
    detection_rate: float | None = None
    frr: float | None = None
    defended_accuracy: float | None = None
    defended_attack_success_rate: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def report(
    predictions: Predictions,
    labels: np.ndarray | None,
    target: int | None = None,
    verdicts: Verdicts | None = None,
) -> SetReport:
    """Clean set (``target`` None): accuracy, and with verdicts the false-rejection rate.
    Poisoned set: attack success, and with verdicts the detection rate."""
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
        if verdicts is not None:
            out.detection_rate = flagged_rate(verdicts.labels, verdicts.poisoned_label)
            out.defended_attack_success_rate = attack_success_rate(verdicts.labels, target)
    return out
