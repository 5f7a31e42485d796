"""A whole trigger scan against Neural Cleanse's one-class-at-a-time loop, in one run.

Setting: the zoo's CSAW-scale BadNet (1283 classes, three triggers; ``python -m engine.demo.zoo``
builds it, about half an hour, cached) with 45 clean faces it never saw. Without the zoo: the real
CSAW sunglasses BadNet with the sample's 10 clean faces, when ../shared/csaw is there; else a
random-weight DeepID with random images.

"Ours" is the whole scan as a user runs it, from a cold start: ``python main.py scan --model M
--clean C --sample 45 -o DIR`` in a new process (Python and TensorFlow starting, the model
loaded, the input scaling chosen, the largest margin of every class, the candidates' reversed
triggers refined together and tested on held-out faces, the output layer read, the flagged
classes' shapes drawn, the folder written). "Plain" is Neural Cleanse as published: each class
optimised on its own, with the same images per step and as many steps as our refinement took;
timed on a few classes and extrapolated to all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import CSAW, ROOT, csaw_sized_badnet, random_faces

from engine.io import datasets
from engine.io.models import load_badnet
from engine.scan import ScanSettings, _draw
from engine.scan.trigger_opt import ChunkOptimizer, new_chunk

FACES = 45
PLAIN_CLASSES = 3
TARGET_SECONDS = 120


def setting(scratch: Path) -> tuple[Path, Path, str, list[int]]:
    """(model file, clean faces file, what they are, true targets)."""
    from engine.demo import zoo

    try:
        folder = zoo.path("csaw-badnet")
    except FileNotFoundError:
        folder = None
    if folder is not None:
        targets = sorted(zoo.facts("csaw-badnet")["member"]["triggers"].values())
        return (folder / "model.h5", folder / "clean.h5",
                f"zoo CSAW-scale BadNet (targets {targets}), {FACES} clean faces it never saw", targets)
    model = CSAW / "models" / "sunglasses_bd_net.h5"
    if model.exists():
        described = ("real CSAW sunglasses BadNet, the sample's 10 faces (build the zoo for the real setting: "
                     "python -m engine.demo.zoo)")
        return model, CSAW / "clean_sample.h5", described, [0]
    import h5py

    faces = random_faces(FACES)
    with h5py.File(scratch / "faces.h5", "w") as f:
        f["data"], f["label"] = faces.images, faces.labels
    return csaw_sized_badnet().path, scratch / "faces.h5", "random-weight DeepID (1283 classes), random images", []


def cold_scan(model: Path, clean: Path, out: Path) -> tuple[float, dict]:
    """Wall-clock seconds of ``python main.py scan`` in a new process, and its JSON."""
    command = [sys.executable, str(ROOT / "main.py"), "scan", "--model", str(model), "--clean", str(clean),
               "--sample", str(FACES), "--json", "-q", "-o", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the scan failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as scratch:
        model, clean_file, described, targets = setting(Path(scratch))
        print(f"setting: {described}")
        t_ours, printed = cold_scan(model, clean_file, Path(scratch) / "scan")
    settings = ScanSettings()
    converged = next((n for n in printed["notes"] if "converged" in n), f"ran all {settings.refine_steps} steps")
    steps = int(converged.split("after ")[1].split()[0]) if "after" in converged else settings.refine_steps
    ranking = [r["class"] for r in printed["classes"]]
    print(f"our scan from a cold start: {t_ours:.1f} s for {printed['num_classes']} classes (of which the scan "
          f"itself {printed['seconds']:.1f} s; {converged})")
    print(f"verdict: {printed['verdict']['line']}")
    if targets:
        print(f"true targets {targets}: ranked {[ranking.index(t) + 1 for t in targets]}, flagged "
              f"{[t for t in targets if t in printed['flagged']]}; other classes flagged: "
              f"{[c for c in printed['flagged'] if c not in targets]}")

    # Neural Cleanse as published: one class per optimisation, the same per-step images and steps.
    net = load_badnet(model)
    clean = datasets.read(clean_file, size=net.input_shape[:2])
    h, w, _ = net.input_shape
    x = clean.images[:FACES].astype(np.float32) / 255
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
          f"{t_plain / 60:.1f} min (extrapolated from {PLAIN_CLASSES} classes, warm)")
    print(f"target: whole scan from a cold start <= {TARGET_SECONDS} s: "
          f"{'met' if t_ours <= TARGET_SECONDS else 'NOT met'} ({t_ours:.0f} s)")
    print(f"ratio plain / ours: {t_plain / t_ours:.1f}x faster")


if __name__ == "__main__":
    main()
