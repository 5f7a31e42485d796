"""Training, once for every repair: the held-out split, the loop over epochs and batches (progress
and cancel after every batch, a hook that keeps pruned weights at zero), and fine-tuning on clean
faces. Figures a repair reports come from the held-out share, which training never sees."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.io.datasets import ImageSet
from engine.errors import InputError
from engine.progress import Job, Progress
from engine.scoring import model_accuracy, to_model_input

BATCH = 32


def holdout_split(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, sorted; training rows, shuffled): ``share`` of ``n`` held out, at least one
    of each when ``n`` > 1."""
    order = rng.permutation(n)
    n_hold = min(n - 1, max(1, round(share * n))) if n > 1 else 0
    return np.sort(order[:n_hold]), order[n_hold:]


@dataclass
class TrainLog:
    """Per epoch of a training run: accuracy (when the model measures it) and seconds."""
    accuracy: list[float] = field(default_factory=list)  # per epoch, when the model has an accuracy metric
    seconds: list[float] = field(default_factory=list)  # per epoch


def train_epochs(model, rows: np.ndarray, epochs: int, batch: Callable[[np.ndarray], tuple], rng: np.random.Generator,
                 text: str, batch_size: int = BATCH, after_step: Callable | None = None) -> Job[TrainLog]:
    """Train ``model`` (compiled) for ``epochs`` over ``rows``, reshuffled each epoch; ``batch(part)``
    gives a batch's (inputs, targets), ``after_step(model)`` runs after every step."""
    steps = -(-len(rows) // batch_size)
    total = max(1, epochs * steps)
    log = TrainLog()
    yield Progress(0, total, text)
    for epoch in range(epochs):
        start = time.perf_counter()
        shuffled = rng.permutation(rows)
        hits = 0.0
        for k in range(steps):
            part = shuffled[k * batch_size:(k + 1) * batch_size]
            x, y = batch(part)
            logs = model.train_on_batch(x, y, return_dict=True)
            hits += float(logs.get("accuracy", 0.0)) * len(part)
            if after_step is not None:
                after_step(model)
            yield Progress(epoch * steps + k + 1, total, f"{text}, epoch {epoch + 1} of {epochs}")
        log.accuracy.append(hits / max(1, len(shuffled)))
        log.seconds.append(time.perf_counter() - start)
    return log


def fine_tune(model, keep_pruned, clean: ImageSet, scaling: str, epochs: int, holdout: float = 0.2, seed: int = 0,
              batch_size: int = BATCH, learning_rate: float = 1e-3, from_logits: bool = False) -> Job[dict]:
    """Train a pruned model on clean data for ``epochs``; ``keep_pruned(model)`` runs after every
    step and puts the pruned weights back to zero. The accuracy reported is on a held-out share."""
    import keras

    labels = clean.require_labels("fine-tuning")
    rng = np.random.default_rng(seed)
    hold, train = holdout_split(len(clean), holdout, rng)
    if len(train) == 0:
        raise InputError(clean.source, "too few clean images to fine-tune on")

    def accuracy(idx):
        return model_accuracy(model, clean.images[idx], labels[idx], scaling)

    before = accuracy(hold)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    yield from train_epochs(model, train, epochs,
                            lambda part: (to_model_input(clean.images[part], scaling), labels[part]),
                            rng, "fine-tuning", batch_size, keep_pruned)
    return {
        "epochs": epochs,
        "train_images": int(len(train)),
        "holdout_images": int(len(hold)),
        "holdout_accuracy_before": before,
        "holdout_accuracy_after": accuracy(hold),
    }
