"""The default detector at CSAW scale against the plain way, in one run: ``calibrate`` with the
defaults on 11,547 faces against one plain scoring pass over them, and one image's verdict
against one plain prediction of it.

Setting: the real CSAW sunglasses BadNet with faces augmented from the 20-face sample when
../shared/csaw is there, else a random-weight DeepID of CSAW size with random images
(``_common.realistic_setting``). The default detector is Combined (Transplant + SCALE-UP under
Fisher's rule since issue 30; Transplant confirms its 5 best windows on every host), calibrated
on the sample a 5% rate needs (1,168 faces; ``--sample all`` would use every face). "Before" is
the default until issue 30, Transplant + STRIP (STRIP blending further only the images its first
8 blends leave low); ``--before`` also times its calibration on the same sample.

Targets (issues 20 and 30): calibrate at most 10x one plain pass; one verdict at most 10x one
plain prediction.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import (CSAW_VALIDATION_SIZE, calibrated_verdict, per_image_side_by_side, plain_prediction,
                     realistic_setting)

from engine import progress
from engine.detectors import make_detector
from engine.detectors.calibration import calibrate
from engine.io.datasets import ImageSet
from engine.scoring import BATCH_SIZE

BEFORE = {"members": ["transplant", "strip"], "rule": "bonferroni"}  # the default until issue 30
CHECKS = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", action="store_true", help="also calibrate the default before issue 30")
    args = parser.parse_args()
    net, faces, setting = realistic_setting(CSAW_VALIDATION_SIZE + CHECKS)
    clean = faces.subset(np.arange(CSAW_VALIDATION_SIZE))
    checks = faces.images[CSAW_VALIDATION_SIZE:]
    print(f"setting: {setting}")
    x = clean.images.astype(np.float32) / 255
    net.model.predict(x[:BATCH_SIZE], verbose=0)  # traced once, for both ways

    start = time.perf_counter()
    net.model.predict(x, batch_size=BATCH_SIZE, verbose=0)
    t_plain = time.perf_counter() - start

    def calibrated(params: dict, sample=None) -> tuple:
        begun = time.perf_counter()
        cal = progress.run(calibrate(net, clean, "1/255", make_detector("combined", params), sample=sample))
        return cal, time.perf_counter() - begun

    cal, t_ours = calibrated({})
    print(f"faces: {len(clean):,}  classes: {net.num_classes}")
    print(f"one plain scoring pass (model.predict, batch {BATCH_SIZE}):       {t_plain:7.1f} s")
    print(f"calibrate, the defaults ({cal.data_summary().strip()}): {t_ours:7.1f} s")
    print(f"ratio calibrate / plain pass: {t_ours / t_plain:.1f}  (target <= 10)")
    if args.before:
        _, t_before = calibrated(BEFORE)
        print(f"calibrate the default before issue 30 (Transplant + STRIP):  {t_before:7.1f} s "
              f"({t_before / t_plain:.1f}x the plain pass)")

    plain = plain_prediction(net)
    sample = ImageSet(clean.images[:500], None, clean.names[:500], "clean")
    ways = {"one plain prediction (predict_on_batch, 1 image)": plain}
    for label, params in (("default verdict (Transplant + SCALE-UP)", {}), ("verdict before (Transplant + STRIP)", BEFORE)):
        _, verdict = calibrated_verdict(net, sample, "combined", params=params)
        verdict.caches = True  # a second look at an image would be a cache hit
        ways[label] = verdict
    times = per_image_side_by_side(ways, checks)
    t_one = times.pop("one plain prediction (predict_on_batch, 1 image)")
    print(f"\none image, checked alone ({len(checks)} images, median; the ways take turns on each image):")
    print(f"{'one plain prediction (predict_on_batch, 1 image):':<51} {1000 * t_one:6.1f} ms")
    for label, t in times.items():
        print(f"{label + ':':<51} {1000 * t:6.1f} ms  ({t / t_one:.1f}x one plain prediction)")
    print("target: the default verdict at most 10x one plain prediction")


if __name__ == "__main__":
    main()
