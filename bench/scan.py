"""A whole trigger scan against Neural Cleanse's one-class-at-a-time loop, in one run.

Setting: the real CSAW sunglasses BadNet (1283 classes) with 45 clean faces made from the
sample's 10 clean faces (shifted, re-lit, noisy) when ../shared/csaw is there; else a
random-weight network of the same shape with random images.

"Ours" is the whole scan as ``python main.py scan`` runs it: every class screened (62 classes
per network call), 16 candidates and 16 reference classes refined together, the triggers
tested on held-out faces. "Plain" is Neural Cleanse as published: each class optimised on its
own, with the same images per step and as many steps as our refinement took; timed on a few
classes and extrapolated to all of them.
"""

from __future__ import annotations

import time

import numpy as np
from _common import CSAW, csaw_sized_badnet, random_faces

from engine.progress import run
from engine.scan import ScanSettings, _draw, scan
from engine.trigger_opt import ChunkOptimizer, new_chunk

FACES = 45
PLAIN_CLASSES = 3


def setting():
    from engine import data_io
    from engine.data_io import ImageSet
    from engine.model_io import load_badnet

    model = CSAW / "models" / "sunglasses_bd_net.h5"
    if not model.exists():
        return csaw_sized_badnet(), random_faces(FACES), "random-weight DeepID (1283 classes), random images"
    net = load_badnet(model)
    base = data_io.read(CSAW / "clean_sample.h5")
    rng = np.random.default_rng(0)
    pick = np.concatenate([np.arange(len(base)), rng.integers(0, len(base), FACES - len(base))])
    images = base.images[pick].astype(np.float32)
    extra = slice(len(base), None)  # the sample's own faces stay as they are
    images[extra] = np.roll(images[extra], 1, axis=2) * rng.uniform(0.85, 1.15, (FACES - len(base), 1, 1, 1))
    images[extra] += rng.normal(0, 3.0, images[extra].shape)
    faces = ImageSet(np.clip(images, 0, 255).astype(np.uint8), base.labels[pick], [f"face[{i}]" for i in range(FACES)],
                     "augmented CSAW clean sample")
    return net, faces, f"real CSAW sunglasses BadNet, {FACES} clean faces (the sample's 10 and augmented copies)"


def main() -> None:
    net, clean, described = setting()
    print(f"setting: {described}")
    settings = ScanSettings()
    start = time.perf_counter()
    result = run(scan(net, clean, "1/255", settings))
    t_ours = time.perf_counter() - start
    converged = next((n for n in result.notes if "converged" in n), f"ran all {settings.refine_steps} steps")
    steps = int(converged.split("after ")[1].split()[0]) if "after" in converged else settings.refine_steps
    top = result.ranking()[0]
    print(f"our scan: {t_ours:.1f} s for {net.num_classes} classes ({converged}); "
          f"ranked first: class {top} (anomaly index {result.triggers[top].anomaly:.2f}); flagged {result.flagged}")

    # Neural Cleanse as published: one class per optimisation, the same per-step images and steps.
    h, w, _ = net.input_shape
    x = clean.images.astype(np.float32) / 255
    rng = np.random.default_rng(1)
    opt = ChunkOptimizer(net.model, "1/255", 1, settings.refine_images, net.input_shape)
    warm = new_chunk(np.array([1]), 1, (h, w), rng, 3.0)
    opt.load(warm)
    opt.step(warm, x[_draw(rng, len(x), 1, settings.refine_images)], np.ones((1, settings.refine_images), np.float32))
    start = time.perf_counter()
    for c in range(PLAIN_CLASSES):
        state = new_chunk(np.array([c]), 1, (h, w), rng, 3.0)
        opt.load(state)
        for _ in range(steps):
            opt.step(state, x[_draw(rng, len(x), 1, settings.refine_images)],
                     np.ones((1, settings.refine_images), np.float32))
    per_class = (time.perf_counter() - start) / PLAIN_CLASSES
    t_plain = per_class * net.num_classes
    print(f"Neural Cleanse one class at a time: {per_class:.2f} s per class x {net.num_classes} classes = "
          f"{t_plain / 60:.1f} min (extrapolated from {PLAIN_CLASSES} classes)")
    print(f"target: whole scan <= 300 s: {'met' if t_ours <= 300 else 'NOT met'} ({t_ours:.0f} s)")
    print(f"ratio plain / ours: {t_plain / t_ours:.1f}x faster")


if __name__ == "__main__":
    main()
