"""The pruning sweep against one plain forward pass and against the textbook loop, in one run.

Setting: the real CSAW sunglasses BadNet (1283 classes) with 11,547 faces made from the
../shared/csaw sample (the size of the official validation set), pruning conv_3's 60 channels one
at a time; without ../shared, a random-weight network of the same shape on random images. A
trained network is the fair case: the sweep skips rows whose class provably cannot change, and
a random network's predictions have almost no margin. Target: the whole
sweep costs at most 2x one plain forward pass. The textbook loop (rebuild the model with the
channels zeroed and re-predict everything, per step) is timed over a few steps and extrapolated
to all 60; that figure is labelled as extrapolated.
"""

from __future__ import annotations

import time

import numpy as np

from _common import CSAW_VALIDATION_SIZE, realistic_setting, timed

from engine import progress
from engine.repairs.pruning import TRUNK_BATCH, pruned_model, sweep

TEXTBOOK_STEPS = 3


def main() -> None:
    net, clean, setting = realistic_setting(CSAW_VALIDATION_SIZE)
    print(f"setting: {setting}")
    x = clean.images.astype(np.float32) / 255
    net.model.predict(x[:1024], verbose=0)  # trace once

    def plain():
        net.model.predict(x, verbose=0)

    def plain_same_batch():
        net.model.predict(x, batch_size=TRUNK_BATCH, verbose=0)

    result = {}

    def ours():
        result["sweep"] = progress.run(sweep(net, clean, [], "conv_3", "1/255"))

    t_plain, _ = timed(plain)
    t_plain_b, _ = timed(plain_same_batch)
    t_sweep, mem = timed(ours)  # median of 3, like the plain passes
    order = result["sweep"].order

    start = time.perf_counter()
    for step in range(1, TEXTBOOK_STEPS + 1):
        model = pruned_model(net, "conv_3", order[:step])
        model.predict(x, verbose=0)
    t_textbook = (time.perf_counter() - start) / TEXTBOOK_STEPS * len(order)

    print(f"images: {len(clean)}  classes: {net.num_classes}  channels swept: {len(order)} (conv_3)")
    print(f"one plain forward pass (model.predict):     {t_plain:.2f} s")
    print(f"model.predict at batch {TRUNK_BATCH}:                {t_plain_b:.2f} s")
    print(f"our whole sweep ({len(order) + 1} evaluations, median of 3): {t_sweep:.2f} s   peak RSS +{mem:.0f} MiB")
    print(f"textbook rebuild-and-predict, all steps:    {t_textbook:.1f} s  (extrapolated from {TEXTBOOK_STEPS} steps)")
    print(f"ratio sweep / one forward pass: {t_sweep / t_plain:.2f}  (target <= 2)")
    print(f"ratio sweep / forward pass at batch {TRUNK_BATCH}: {t_sweep / t_plain_b:.2f}")
    print(f"ratio textbook / one forward pass: {t_textbook / t_plain:.1f}  (extrapolated)")
    print(f"speed-up over the textbook loop: {t_textbook / t_sweep:.1f}x")


if __name__ == "__main__":
    main()
