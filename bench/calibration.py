"""Calibration against a bare ``model.predict`` over the same array, in one run.

Setting: a DeepID network with 1283 classes and 11,547 synthetic 55x47 faces, the size of the
official CSAW validation set. Target: calibration / bare predict <= 1.15.
"""

from __future__ import annotations

import numpy as np

from _common import CSAW_VALIDATION_SIZE, csaw_sized_badnet, random_faces, timed

from engine import progress, scoring
from engine.detectors.calibration import calibrate


def main() -> None:
    net = csaw_sized_badnet()
    clean = random_faces(CSAW_VALIDATION_SIZE)
    x = clean.images.astype(np.float32) / 255  # the plain way gets its float array for free
    net.model.predict(x[:1024], verbose=0)  # trace once; both ways share Keras's predict function

    def ours():
        scoring.CACHE.clear()  # measure a real pass, not a cache hit
        progress.run(calibrate(net, clean, "1/255"))

    def plain():
        net.model.predict(x, verbose=0)

    def plain_same_batch():
        net.model.predict(x, batch_size=scoring.BATCH_SIZE, verbose=0)

    t_plain, m_plain = timed(plain)
    t_plain_b, _ = timed(plain_same_batch)
    t_ours, m_ours = timed(ours)
    print(f"images: {len(clean)}  classes: {net.num_classes}")
    print(f"bare model.predict (float array ready): {t_plain:.2f} s   peak RSS +{m_plain:.0f} MiB")
    print(f"model.predict, batch {scoring.BATCH_SIZE}:             {t_plain_b:.2f} s")
    print(f"calibrate (uint8 -> float per batch):   {t_ours:.2f} s   peak RSS +{m_ours:.0f} MiB")
    print(f"ratio calibrate / bare predict: {t_ours / t_plain:.2f}  (target <= 1.15)")
    print(f"ratio calibrate / predict at the same batch size: {t_ours / t_plain_b:.2f}")


if __name__ == "__main__":
    main()
