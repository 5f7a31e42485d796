"""Helpers for the benchmarks: timing, peak memory, and a CSAW-sized synthetic setting."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import engine  # noqa: E402,F401

CSAW_VALIDATION_SIZE = 11_547
CSAW_CLASSES = 1283


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter for this process (Linux); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def per_image(fn, images) -> float:
    """Median seconds of ``fn(one image)`` over the images, after one warm-up call."""
    import numpy as np

    fn(images[0])
    times = []
    for img in images:
        start = time.perf_counter()
        fn(img)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def per_image_side_by_side(fns: dict, images, rounds: int = 3) -> dict:
    """Median seconds per image of each ``fn(one image)``, the functions taking turns on every
    image (each after one warm-up call), so a machine that speeds up or slows down during the
    run weighs on all of them alike. A function that caches by image is timed on its first call
    per image only."""
    import numpy as np

    for fn in fns.values():
        fn(images[0])
    times = {name: [] for name in fns}
    for r in range(rounds):
        for img in images[1:]:
            for name, fn in fns.items():
                if r and getattr(fn, "caches", False):
                    continue
                start = time.perf_counter()
                fn(img)
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def timed(fn, repeats: int = 3) -> tuple[float, float]:
    """Median wall time of ``fn()`` over ``repeats`` runs, and how far (MiB) the peak RSS rose
    above the resident size at the start."""
    times = []
    reset_peak_rss()
    base = _status_mib("VmRSS")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_rss_mib() - base


def csaw_sized_badnet(num_classes: int = CSAW_CLASSES):
    """A DeepID network of CSAW size, saved and loaded back through our loader."""
    from engine.io.models import build_deepid, load_badnet

    import keras

    keras.utils.set_random_seed(0)
    path = Path(tempfile.mkdtemp(prefix="bench-")) / "deepid.h5"
    build_deepid(num_classes).save(path)
    return load_badnet(path)


def random_faces(n: int = CSAW_VALIDATION_SIZE, num_classes: int = CSAW_CLASSES, seed: int = 0):
    import numpy as np

    from engine.io.datasets import ImageSet

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 55, 47, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n)
    return ImageSet(images, labels, [f"synthetic[{i}]" for i in range(n)], "synthetic")


CSAW = ROOT.parent / "shared" / "csaw"


def augmented_faces(n: int, seed: int = 0):
    """``n`` faces made from the real CSAW sample's 20 (shifted, re-lit, noisy), with its labels;
    None when ../shared/csaw is not there."""
    import numpy as np

    from engine.io import datasets
    from engine.io.datasets import ImageSet

    if not (CSAW / "clean_sample.h5").exists():
        return None
    base = datasets.read_many([CSAW / "clean_sample.h5", CSAW / "sunglasses_sample.h5"])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(base), n)
    images = base.images[pick].astype(np.float32)
    images = np.roll(images, rng.integers(-2, 3), axis=1)
    images *= rng.uniform(0.8, 1.2, (n, 1, 1, 1))
    images += rng.normal(0, 4.0, images.shape)
    return ImageSet(np.clip(images, 0, 255).astype(np.uint8), base.labels[pick],
                    [f"face[{i}]" for i in range(n)], "augmented CSAW sample")


def realistic_setting(n: int = CSAW_VALIDATION_SIZE, seed: int = 0):
    """(BadNet, clean set, description): the real CSAW sunglasses BadNet with ``n`` faces made
    from the sample's 20 faces (:func:`augmented_faces`) when ../shared/csaw is there; else a
    random-weight CSAW-sized DeepID with random images."""
    from engine.io.models import load_badnet

    model = CSAW / "models" / "sunglasses_bd_net.h5"
    faces = augmented_faces(n, seed) if model.exists() else None
    if faces is None:
        return csaw_sized_badnet(), random_faces(n), "random-weight DeepID (1283 classes), random images"
    return load_badnet(model), faces, f"real CSAW sunglasses BadNet, {n:,} faces augmented from the 20-face sample"


def checking_setting(clean_n: int, checks_n: int):
    """(net, clean ImageSet, images to check one at a time) in the realistic setting, printed."""
    from engine.io.datasets import ImageSet

    net, faces, setting = realistic_setting(clean_n + checks_n)
    print(f"setting: {setting}")
    clean = ImageSet(faces.images[:clean_n], faces.labels[:clean_n], faces.names[:clean_n], "clean")
    return net, clean, faces.images[clean_n:]


def calibrated_verdict(net, clean, name: str, frr: float = 0.05, params: dict | None = None):
    """(calibration, verdict(one image)) for detector ``name``: what a user's dropped image costs."""
    from engine import progress
    from engine.detectors.calibration import calibrate
    from engine.io.datasets import ImageSet
    from engine.detectors import make_detector

    cal = progress.run(calibrate(net, clean, "1/255", make_detector(name, params), frr=frr))
    detector = cal.make_detector()

    def verdict(img):
        one = ImageSet(img[None], None, ["dropped"], "dropped image")
        scores = progress.run(detector.score(net, one, "1/255"))
        return cal.labels(scores.predicted, scores.values)

    return cal, verdict


def plain_prediction(net):
    """One image through ``model.predict_on_batch``: the plain way to classify it."""
    import numpy as np

    def plain(img):
        net.model.predict_on_batch(img[None].astype(np.float32) / 255)

    return plain
