"""Time of one image's STRIP verdict against one plain prediction of that image, in one run.

Setting: the real CSAW sunglasses BadNet (1283 classes) when ../shared/csaw is there, else a
random-weight network of the same shape; 32 blends (the default); images checked one at a
time, as a user dropping files does. "Ours" is the whole verdict: blend, one batched call over
the image and its 32 blends, entropies, threshold. Also timed: the same STRIP done the plain way,
one network call per blend. Target: a STRIP verdict in at most 50 ms on this 2-core machine.
"""

from __future__ import annotations


import numpy as np

from _common import calibrated_verdict, checking_setting, per_image, plain_prediction

from engine.detectors.strip import StripDetector, _entropy_bits
from engine.scoring import forward

CHECKS = 60
CLEAN = 500


def main() -> None:
    net, clean, checks = checking_setting(CLEAN, CHECKS)
    cal, ours = calibrated_verdict(net, clean, "strip")
    detector: StripDetector = cal.make_detector()
    overlays = detector.overlays.astype(np.float32)
    plain = plain_prediction(net)

    def one_call_per_blend(img):
        x = img.astype(np.float32)
        predicted = forward(net, x[None] / 255).argmax()
        h = [_entropy_bits(forward(net, ((1 - detector.alpha) * x + detector.alpha * o)[None] / 255))[0]
             for o in overlays]
        return cal.labels(predicted, float(np.mean(h)))

    t_plain = per_image(plain, checks)
    t_ours = per_image(ours, checks)
    t_loop = per_image(one_call_per_blend, checks[:20])
    print(f"blends: {len(overlays)}  classes: {net.num_classes}  images checked one at a time: {len(checks)}")
    print(f"one plain prediction (predict_on_batch, 1 image): {1000 * t_plain:6.1f} ms")
    print(f"our STRIP verdict (one batched call):             {1000 * t_ours:6.1f} ms   (target <= 50 ms)")
    print(f"STRIP with one call per blend:                    {1000 * t_loop:6.1f} ms")
    print(f"ratio STRIP verdict / one plain prediction: {t_ours / t_plain:.1f}  (33 images' work in one call)")
    print(f"speed-up of the batched call over one call per blend: {t_loop / t_ours:.1f}x")


if __name__ == "__main__":
    main()
