"""Images fitted to a model: its input size, its classes, an attack's target among them, a sample.

Below every plug-in family: detectors, repairs and the scan fit their data with these, and the
workflow opens files with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.io import datasets
from engine.io.datasets import ImageSet, PoisonedSet
from engine.io.models import BadNet


def check_target(net: BadNet, target, source: str | Path | None = None) -> int:
    """An attack's target must be a class of the model."""
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < net.num_classes:
        what = f"target {target}" if source is not None else f"{{target}} {target}"
        raise InputError(source, f"{what} is not a class of this model (0..{net.num_classes - 1})", settings=("target",))
    return int(target)


def fit_to_model(images: ImageSet, net: BadNet) -> ImageSet:
    """The set at the model's input size (a warning names the source when it is resized), with
    labels checked against the model's classes."""
    datasets.check_labels_in_range(images, net.num_classes)
    return images.resized(net.input_shape[:2])


def fit_sets(poisoned: list[PoisonedSet], net: BadNet) -> list[PoisonedSet]:
    """Poisoned sets fitted to the model, their targets checked."""
    return [PoisonedSet(fit_to_model(p.images, net), check_target(net, p.target, p.images.source)) for p in poisoned]


def sample_images(images: ImageSet, limit: int, seed: int = 0) -> ImageSet:
    """At most ``limit`` images drawn at random without replacement (all when ``limit`` is 0)."""
    if not limit or len(images) <= limit:
        return images
    idx = np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
    return images.subset(idx)
