"""Detectors: each gives every image a predicted class and a score.

A detector's calibration (see :mod:`engine.calibration`) turns scores into
verdicts with one rule shared by all detectors: an image whose score falls
below its class's threshold is flagged as poisoned. New detectors (STRIP, a
repaired network) slot in by subclassing :class:`Detector`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engine.data_io import ImageSet
from engine.errors import InputError
from engine.model_io import BadNet
from engine.progress import Job
from engine.scoring import predict


@dataclass(frozen=True)
class Scores:
    """Per image: the class the network predicts and the detector's score (low = suspicious)."""

    predicted: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.predicted)


class Detector(ABC):
    name: ClassVar[str]
    score_label: ClassVar[str]

    def params(self) -> dict:
        return {}

    @abstractmethod
    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]: ...


class ConfidenceDetector(Detector):
    """The project's founding idea: a poisoned image reaches less confidence than its class does."""

    name = "confidence"
    score_label = "top-1 confidence"

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        preds = yield from predict(net, images, scaling)
        return Scores(preds.labels, preds.confidences)


DETECTORS: dict[str, type[Detector]] = {ConfidenceDetector.name: ConfidenceDetector}


def make_detector(name: str, params: dict | None = None) -> Detector:
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise InputError(None, f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}") from None
    return cls(**(params or {}))
