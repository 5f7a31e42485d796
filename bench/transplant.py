"""Time of one image's Transplant verdict against one plain prediction of that image, in one run.

Setting: the real CSAW sunglasses BadNet (1283 classes) when ../shared/csaw is there, else a
random-weight network of the same shape; the default 4 host faces and 16-pixel windows (30
windows, 120 pasted copies); images checked one at a time, as a user dropping files does. "Ours"
is the whole verdict: the pasted copies, one network call over the image and its copies, the
takeover, the threshold. Also timed: the plain way, one network call per window (its hosts
together), which is how a loop over windows would be written.
"""

from __future__ import annotations

import numpy as np

from _common import calibrated_verdict, checking_setting, per_image, plain_prediction

from engine.detectors.transplant import windows
from engine.scoring import forward

CHECKS = 30
CLEAN = 300


def main() -> None:
    net, clean, checks = checking_setting(CLEAN, CHECKS)
    cal, ours = calibrated_verdict(net, clean, "transplant")
    detector = cal.make_detector()
    hosts = detector.host_images.astype(np.float32) / 255
    boxes = windows(*net.input_shape[:2], detector.windows)
    plain = plain_prediction(net)

    def one_call_per_window(img):
        x = img.astype(np.float32) / 255
        own = forward(net, x[None])[0].argmax()
        best = 0.0
        for y, x0, h, w in boxes:
            pasted = hosts.copy()
            pasted[:, y:y + h, x0:x0 + w] = x[y:y + h, x0:x0 + w]
            best = max(best, float(forward(net, pasted)[:, own].mean()))
        return cal.labels(own, 1.0 - best)

    t_plain = per_image(plain, checks)
    t_ours = per_image(ours, checks)
    t_loop = per_image(one_call_per_window, checks[:10])
    copies = len(boxes) * len(hosts)
    print(f"windows: {len(boxes)} x host faces: {len(hosts)} = {copies} copies  classes: {net.num_classes}  "
          f"images checked one at a time: {len(checks)}")
    print(f"one plain prediction (predict_on_batch, 1 image): {1000 * t_plain:6.1f} ms")
    print(f"our Transplant verdict (one batched call):        {1000 * t_ours:6.1f} ms")
    print(f"Transplant with one call per window:              {1000 * t_loop:6.1f} ms")
    print(f"ratio Transplant verdict / one plain prediction: {t_ours / t_plain:.1f}  ({copies + 1} images' work "
          f"in one call; {1000 * t_ours / (copies + 1):.2f} ms per image's worth)")
    print(f"speed-up of the batched call over one call per window: {t_loop / t_ours:.1f}x")


if __name__ == "__main__":
    main()
