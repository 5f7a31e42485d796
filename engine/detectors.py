"""Detectors: each gives every image a predicted class and a score.

A detector's calibration (see :mod:`engine.calibration`) turns scores into
verdicts with one rule shared by all detectors: an image whose score falls
below its class's threshold is flagged as poisoned. New detectors slot in by
subclassing :class:`Detector`; one that needs clean data of its own (STRIP's
blend images) learns it in :meth:`Detector.fit` and keeps it in
:meth:`Detector.state`, which the calibration file stores.
"""

from __future__ import annotations

import base64
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engine.data_io import ImageSet
from engine.errors import InputError
from engine.model_io import BadNet
from engine.progress import Job, Progress
from engine.scoring import BATCH_SIZE, PredictionCache, check_size, forward, predict, to_model_input


@dataclass(frozen=True)
class Scores:
    """Per image: the class the network predicts and the detector's score (low = suspicious)."""

    predicted: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.predicted)


class Detector(ABC):
    name: ClassVar[str]
    title: ClassVar[str]  # for people: "Confidence", "STRIP"
    score_label: ClassVar[str]

    def params(self) -> dict:
        """Settings a user chose (small, shown and saved)."""
        return {}

    def state(self) -> dict:
        """What :meth:`fit` learnt, as JSON-ready values (saved with the calibration)."""
        return {}

    def fit(self, net: BadNet, clean: ImageSet, scaling: str) -> Job[None]:
        """Learn what scoring needs from clean data; most detectors need nothing."""
        return None
        yield  # a generator like every long job

    @abstractmethod
    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]: ...


class ConfidenceDetector(Detector):
    """The project's founding idea: a poisoned image reaches less confidence than its class does."""

    name = "confidence"
    title = "Confidence"
    score_label = "top-1 confidence"

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        preds = yield from predict(net, images, scaling)
        return Scores(preds.labels, preds.confidences)


class StripDetector(Detector):
    """STRIP (Gao et al., ACSAC 2019): a trigger survives being blended with other images.

    Each input is blended with ``blends`` clean images, ``(1 - alpha) * input + alpha * clean``;
    the score is the mean Shannon entropy (bits) of the network's predictions on the blends. A
    clean face blended with other faces gives uncertain, varied predictions (high entropy); a
    triggered face keeps being sent to the target class (low entropy), so, as for every detector
    here, a low score is suspicious. The input and its blends go through the network as one
    batch, so one image costs one call, not ``blends`` calls. A blend of an image with itself
    (the image is one of the clean blend images) is left out of its mean.
    """

    name = "strip"
    title = "STRIP"
    score_label = "STRIP entropy (bits)"
    DEFAULT_BLENDS = 32
    DEFAULT_ALPHA = 0.5

    def __init__(self, blends: int = DEFAULT_BLENDS, alpha: float = DEFAULT_ALPHA, seed: int = 0,
                 overlays: np.ndarray | None = None):
        blends, alpha, seed = int(blends), float(alpha), int(seed)
        if blends < 1:
            raise InputError(None, f"STRIP needs at least one blend image, not {blends}")
        if not 0.0 < alpha < 1.0:
            raise InputError(None, f"STRIP blend weight {alpha} must be between 0 and 1")
        self.blends, self.alpha, self.seed = blends, alpha, seed
        self.overlays = None if overlays is None else np.ascontiguousarray(overlays, dtype=np.uint8)

    def params(self) -> dict:
        return {"blends": self.blends, "alpha": self.alpha, "seed": self.seed}

    def state(self) -> dict:
        if self.overlays is None:
            return {}
        return {"overlays": {"shape": list(self.overlays.shape),
                             "uint8_base64": base64.b64encode(self.overlays.tobytes()).decode("ascii")}}

    @classmethod
    def from_saved(cls, params: dict, state: dict) -> StripDetector:
        raw = state.get("overlays")
        overlays = None
        if raw is not None:
            shape = tuple(int(v) for v in raw["shape"])
            data = np.frombuffer(base64.b64decode(raw["uint8_base64"], validate=True), dtype=np.uint8)
            if len(shape) != 4 or shape[-1] != 3 or data.size != int(np.prod(shape)):
                raise ValueError(f"STRIP blend images of shape {shape} do not match their {data.size} bytes")
            overlays = data.reshape(shape)
        return cls(**params, overlays=overlays)

    def fit(self, net: BadNet, clean: ImageSet, scaling: str) -> Job[None]:
        """Pick the blend images: ``blends`` clean images at random (seeded), all if fewer."""
        yield Progress(0, 1, "choosing STRIP blend images")
        if len(clean) == 0:
            raise InputError(clean.source, "no clean images to blend with")
        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(len(clean), size=min(self.blends, len(clean)), replace=False))
        self.overlays = clean.images[pick].copy()
        yield Progress(1, 1, "choosing STRIP blend images")

    @property
    def overlay_digest(self) -> str:
        return hashlib.blake2b(self.overlays.tobytes(), digest_size=16).hexdigest() if self.overlays is not None else ""

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        if self.overlays is None:
            raise InputError(None, "STRIP has no blend images: calibrate it on clean data first")
        check_size(net, self.overlays, "STRIP blend images")
        check_size(net, images.images, images.source)
        weighted = to_model_input(self.overlays, scaling) * np.float32(self.alpha)  # scaling is linear
        key = (net.sha256, images.digest, scaling, self.name, self.alpha, self.overlay_digest)
        hit = STRIP_CACHE.get(key)
        if hit is not None:
            yield Progress(len(images), len(images), "STRIP (cached)")
            return hit
        n, k = len(images), len(self.overlays)
        own = {o.tobytes(): j for j, o in enumerate(self.overlays)}
        keep = np.float32(1.0 - self.alpha)
        per_batch = max(1, BATCH_SIZE // (k + 1))
        predicted = np.empty(n, dtype=np.int64)
        entropy = np.empty(n, dtype=np.float64)
        yield Progress(0, n, "STRIP: blending and predicting")
        for start in range(0, n, per_batch):
            stop = min(n, start + per_batch)
            x = to_model_input(images.images[start:stop], scaling)
            batch = np.empty((stop - start, k + 1, *x.shape[1:]), dtype=np.float32)
            batch[:, 0] = x
            np.add((x * keep)[:, None], weighted[None], out=batch[:, 1:])
            p = forward(net, batch.reshape(-1, *x.shape[1:])).reshape(stop - start, k + 1, -1)
            predicted[start:stop] = p[:, 0].argmax(axis=1)
            h = _entropy_bits(p[:, 1:])  # (images, blends)
            valid = np.ones_like(h, dtype=bool)
            for i, img in enumerate(images.images[start:stop]):
                j = own.get(img.tobytes())
                if j is not None and k > 1:
                    valid[i, j] = False
            entropy[start:stop] = (h * valid).sum(axis=1) / valid.sum(axis=1)
            yield Progress(stop, n, "STRIP: blending and predicting")
        result = Scores(predicted, entropy)
        STRIP_CACHE.put(key, result)
        return result


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.maximum(-terms.sum(axis=-1), 0.0)


STRIP_CACHE = PredictionCache(16)  # STRIP scores per (model, data, scaling, blend settings)

DETECTORS: dict[str, type[Detector]] = {ConfidenceDetector.name: ConfidenceDetector, StripDetector.name: StripDetector}


def make_detector(name: str, params: dict | None = None, state: dict | None = None) -> Detector:
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise InputError(None, f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}") from None
    if state and hasattr(cls, "from_saved"):
        return cls.from_saved(params or {}, state)
    return cls(**(params or {}))
