"""Batched inference as a stoppable generator, with a cache per (model, data, scaling)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from engine.io.datasets import ImageSet
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress

SCALINGS = {"1/255": 1.0 / 255.0, "raw": 1.0}
SCALING_CHOICES = ("1/255", "raw", "auto")
BATCH_SIZE = 512
AUTO_SAMPLE = 1000


@dataclass(frozen=True)
class Predictions:
    """Top-1 class and its confidence for each image of a set."""

    labels: np.ndarray
    confidences: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


class PredictionCache:
    """Least-recently-used store of :class:`Predictions`, so no pass runs twice."""

    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple, Predictions] = OrderedDict()

    def get(self, key: tuple) -> Predictions | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: tuple, value: Predictions) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


CACHE = PredictionCache()


def to_model_input(batch: np.ndarray, scaling: str) -> np.ndarray:
    """uint8 pixels -> the float32 input the model was trained on."""
    try:
        factor = SCALINGS[scaling]
    except KeyError:
        raise InputError(None, f"unknown input scaling {scaling!r}; choose one of {', '.join(SCALINGS)}") from None
    x = batch.astype(np.float32)
    if factor != 1.0:
        x *= np.float32(factor)
    return x


def probabilities(net: BadNet, images: np.ndarray, scaling: str, batch_size: int = BATCH_SIZE) -> Job[np.ndarray]:
    """Full class probabilities for uint8 images (N, H, W, 3); not cached."""
    check_size(net, images)
    n = len(images)
    out = np.empty((n, net.num_classes), dtype=np.float32)
    yield Progress(0, n, "predicting")
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        out[start:stop] = forward(net, to_model_input(images[start:stop], scaling))
        yield Progress(stop, n, "predicting")
    return out


def predict(net: BadNet, images: ImageSet, scaling: str, batch_size: int = BATCH_SIZE) -> Job[Predictions]:
    """Top-1 predictions for a set, computed once per (model, data, scaling)."""
    key = (net.sha256, images.digest, scaling)
    hit = CACHE.get(key)
    if hit is not None:
        yield Progress(len(images), len(images), "predicting (cached)")
        return hit
    check_size(net, images.images, images.source)
    n = len(images)
    labels = np.empty(n, dtype=np.int64)
    confidences = np.empty(n, dtype=np.float32)
    yield Progress(0, n, "predicting")
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        p = forward(net, to_model_input(images.images[start:stop], scaling))
        labels[start:stop] = p.argmax(axis=1)
        confidences[start:stop] = p[np.arange(stop - start), labels[start:stop]]
        yield Progress(stop, n, "predicting")
    result = Predictions(labels, confidences)
    CACHE.put(key, result)
    return result


def model_labels(model, images: np.ndarray, scaling: str, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The top class per uint8 image from a bare Keras model (one being trained or pruned, not a
    loaded BadNet, so nothing is cached)."""
    out = [np.asarray(model.predict_on_batch(to_model_input(images[start:start + batch_size], scaling))).argmax(axis=1)
           for start in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def model_accuracy(model, images: np.ndarray, wanted: np.ndarray, scaling: str) -> float:
    """Share of ``images`` a bare Keras model puts in class ``wanted`` (labels, or a target)."""
    return float(np.mean(model_labels(model, images, scaling) == wanted)) if len(images) else 0.0


def forward(net: BadNet, x: np.ndarray) -> np.ndarray:
    """One batch through the network, as probabilities."""
    p = np.asarray(net.model.predict_on_batch(x), dtype=np.float32)
    if not net.outputs_probabilities:
        p = np.exp(p - p.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
    return p


def resolve_scaling(net: BadNet, scaling: str, clean: ImageSet | None = None) -> Job[tuple[str, str]]:
    """Return (scaling, reason). ``auto`` tries both on labelled clean data and keeps the better."""
    if scaling in SCALINGS:
        return scaling, "as asked"
    if scaling != "auto":
        raise InputError(None, f"unknown input scaling {scaling!r}; choose one of {', '.join(SCALING_CHOICES)}")
    if clean is None:
        raise InputError(None, "{scale} auto needs labelled clean data to choose from", settings=("scale",))
    labels = clean.require_labels("choosing the input scaling (auto)")
    sample = ImageSet(clean.images[:AUTO_SAMPLE], labels[:AUTO_SAMPLE], clean.names[:AUTO_SAMPLE], clean.source)
    scores = {}
    for candidate in SCALINGS:
        preds = yield from _staged(predict(net, sample, candidate), f"trying scaling {candidate}")
        scores[candidate] = float(np.mean(preds.labels == sample.labels))
    best = max(scores, key=lambda s: scores[s])
    detail = ", ".join(f"{s} gives {100 * a:.1f}%" for s, a in scores.items())
    return best, f"chose {best}: clean accuracy on {len(sample)} images: {detail}"


def _staged(job: Job, stage: str) -> Job:
    """Re-label a sub-job's progress with a stage name."""
    while True:
        try:
            step = next(job)
        except StopIteration as stop:
            return stop.value
        yield Progress(step.done, step.total, stage)


def check_size(net: BadNet, images: np.ndarray, source: str | None = None) -> None:
    """Images must have the model's input shape; else an InputError naming the source."""
    want = net.input_shape
    got = tuple(images.shape[1:])
    if got != want:
        raise InputError(source, f"images are {got}, the model expects {want}")


def choose_scaling(net: BadNet, scaling: str, labelled: ImageSet | None) -> Job[tuple[str, str]]:
    """(scaling, reason): as asked, or for ``auto`` the one with higher accuracy on labelled data."""
    if scaling == "auto" and labelled is not None and labelled.labels is None:
        labelled = None
    return (yield from resolve_scaling(net, scaling, labelled))
