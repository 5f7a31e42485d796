"""A whole trigger scan against Neural Cleanse's one-class-at-a-time loop, in one run.

Setting: the zoo's CSAW-scale BadNet (1283 classes, three triggers; ``python -m engine.demo.zoo``
builds it, about half an hour, cached) with 45 distinct clean faces it never saw. Without the
zoo: the real CSAW sunglasses BadNet with the sample's 10 clean faces, when ../shared/csaw is
there; else a random-weight DeepID with random images.

"Ours" is the whole scan as ``python main.py scan`` runs it: the largest margin of every class
(two random starts each, all classes batched), the candidates' reversed triggers refined together,
the triggers tested on held-out faces, the verdict. "Plain" is Neural Cleanse as published: each
class optimised on its own, with the same images per step and as many steps as our refinement
took; timed on a few classes and extrapolated to all of them.
"""

from __future__ import annotations

import time

import numpy as np
from _common import CSAW, csaw_sized_badnet, random_faces

from engine.progress import run
from engine.scan import ScanSettings, _draw, scan
from engine.scan.trigger_opt import ChunkOptimizer, new_chunk

FACES = 45
PLAIN_CLASSES = 3
TARGET_SECONDS = 180


def setting():
    from engine.io import datasets
    from engine.demo import zoo
    from engine.io.models import load_badnet

    try:
        folder = zoo.path("csaw-badnet")
    except FileNotFoundError:
        folder = None
    if folder is not None:
        net = load_badnet(folder / "model.h5")
        faces = datasets.read(folder / "clean.h5")
        faces = faces.subset(np.random.default_rng(0).choice(len(faces), FACES, replace=False))
        targets = sorted(zoo.facts("csaw-badnet")["member"]["triggers"].values())
        return net, faces, f"zoo CSAW-scale BadNet (targets {targets}), {FACES} distinct clean faces", targets
    model = CSAW / "models" / "sunglasses_bd_net.h5"
    if model.exists():
        described = ("real CSAW sunglasses BadNet, the sample's 10 faces (build the zoo for the real setting: "
                     "python -m engine.demo.zoo)")
        return load_badnet(model), datasets.read(CSAW / "clean_sample.h5"), described, [0]
    return csaw_sized_badnet(), random_faces(FACES), "random-weight DeepID (1283 classes), random images", []


def main() -> None:
    net, clean, described, targets = setting()
    print(f"setting: {described}")
    settings = ScanSettings()
    start = time.perf_counter()
    result = run(scan(net, clean, "1/255", settings))
    t_ours = time.perf_counter() - start
    converged = next((n for n in result.notes if "converged" in n), f"ran all {settings.refine_steps} steps")
    steps = int(converged.split("after ")[1].split()[0]) if "after" in converged else settings.refine_steps
    ranking = result.ranking()
    print(f"our scan: {t_ours:.1f} s for {net.num_classes} classes ({converged})")
    print(f"verdict: {result.summary()}")
    if targets:
        print(f"true targets {targets}: ranked {[ranking.index(t) + 1 for t in targets]}, flagged "
              f"{[t for t in targets if t in result.flagged]}; other classes flagged: "
              f"{[c for c in result.flagged if c not in targets]}")

    # Neural Cleanse as published: one class per optimisation, the same per-step images and steps.
    h, w, _ = net.input_shape
    x = clean.images.astype(np.float32) / 255
    rng = np.random.default_rng(1)
    per = settings.refine_images
    opt = ChunkOptimizer(net.model, "1/255", 1, per, net.input_shape)
    warm = new_chunk(np.array([1]), 1, (h, w), rng, settings.size_weight)
    opt.load(warm)
    opt.step(warm, x[_draw(rng, len(x), 1, per)], np.ones((1, per), np.float32))
    start = time.perf_counter()
    for c in range(PLAIN_CLASSES):
        state = new_chunk(np.array([c]), 1, (h, w), rng, settings.size_weight)
        opt.load(state)
        for _ in range(steps):
            opt.step(state, x[_draw(rng, len(x), 1, per)], np.ones((1, per), np.float32))
    per_class = (time.perf_counter() - start) / PLAIN_CLASSES
    t_plain = per_class * net.num_classes
    print(f"Neural Cleanse one class at a time: {per_class:.2f} s per class x {net.num_classes} classes = "
          f"{t_plain / 60:.1f} min (extrapolated from {PLAIN_CLASSES} classes)")
    print(f"target: whole scan <= {TARGET_SECONDS} s: {'met' if t_ours <= TARGET_SECONDS else 'NOT met'} "
          f"({t_ours:.0f} s)")
    print(f"ratio plain / ours: {t_plain / t_ours:.1f}x faster")


if __name__ == "__main__":
    main()
