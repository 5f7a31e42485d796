"""Training the N+1 network: one epoch of our loop against one epoch of plain ``model.fit``, in one run.

Setting: the real CSAW sunglasses BadNet (1283 classes, so 1284 outputs) with faces augmented from
the sample when ../shared/csaw is there (else a random-weight network of the same shape), as many
clean and poisoned faces as below (CSAW's validation set has 11,547 clean faces and its
sunglasses set 12,830; the time per face is what matters).

"Ours" is ``repair --method nplus1``'s loop: batches of 32 drawn from uint8 faces and scaled on
the fly, a progress report (and a chance to cancel) after every batch, the running accuracy kept.
"Plain" is ``model.fit`` on the same N+1 model, compiled the same way, with the whole set already
scaled to float32 in memory. Both are timed after their first (compiling) epoch.
Target: ours / plain <= 1.2.
"""

from __future__ import annotations

import time

import numpy as np
from _common import realistic_setting

from engine.io.datasets import ImageSet, PoisonedSet
from engine.progress import run

CLEAN, POISONED, EPOCHS = 3000, 3000, 3


def plain_epoch(net, clean: ImageSet, poisoned: PoisonedSet, train_layers: str) -> float:
    import keras

    from engine.repairs.nplus1 import DEFAULT_LEARNING_RATE, output_dense, with_extra_class
    from engine.scoring import to_model_input

    model = with_extra_class(net)
    if train_layers == "output":
        head = output_dense(model)[0]
        for layer in model.layers:
            layer.trainable = layer is head
    model.compile(optimizer=keras.optimizers.Adam(DEFAULT_LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    x = to_model_input(np.concatenate([clean.images, poisoned.images.images]), "1/255")
    y = np.concatenate([clean.labels, np.full(len(poisoned.images), net.num_classes)])
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=32, epochs=EPOCHS, shuffle=True, verbose=0, callbacks=[Clock()])
    return float(np.median(times[1:]))


def main() -> None:
    import tempfile
    from pathlib import Path

    from engine.repairs.nplus1 import train_nplus1

    net, faces, described = realistic_setting(CLEAN + POISONED)
    print(f"setting: {described}; {CLEAN:,} as clean faces, {POISONED:,} as poisoned (label N)")
    clean = ImageSet(faces.images[:CLEAN], faces.labels[:CLEAN], faces.names[:CLEAN], "clean")
    bad = faces.images[CLEAN:]
    poisoned = PoisonedSet(ImageSet(bad, np.zeros(len(bad), np.int64), faces.names[CLEAN:], "poisoned"), 0)
    for layers in ("output", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            # holdout: the smallest share, so both train on (almost) the same number of faces
            result = run(train_nplus1(net, clean, [poisoned], Path(tmp) / "np1", "1/255", epochs=EPOCHS,
                                      holdout=0.001, train_layers=layers))
        ours = result.report["seconds_per_epoch"]
        n_ours = result.report["train_clean"] + result.report["train_poisoned"] * result.report["poisoned_repeated"]
        plain = plain_epoch(net, clean, poisoned, layers) * n_ours / (CLEAN + POISONED)
        print(f"train {layers} layer{'s' if layers == 'all' else ''}: ours {ours:.2f} s per epoch "
              f"({n_ours:,} faces), plain model.fit {plain:.2f} s (scaled to the same faces)")
        print(f"  ratio ours / plain: {ours / plain:.2f} (target <= 1.2: {'met' if ours / plain <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
