"""Time of one image's SCALE-UP verdict against one plain prediction of that image, in one run.

Setting: the real CSAW sunglasses BadNet (1283 classes) when ../shared/csaw is there, else a
random-weight network of the same shape; the paper's five factors (3, 5, 7, 9, 11); images
checked one at a time, as a user dropping files does. "Ours" is the whole verdict: the scaled
copies, one network call over the image and its copies, the drift, the threshold. Also timed:
SCALE-UP the plain way, one network call per scaled copy. Target: at most 3x one plain prediction.
"""

from __future__ import annotations

import numpy as np

from _common import calibrated_verdict, checking_setting, per_image, plain_prediction

from engine.detectors import detector_class, title_of
from engine.scoring import forward

CHECKS = 60
CLEAN = 500


def main() -> None:
    net, clean, checks = checking_setting(CLEAN, CHECKS)
    cal, ours = calibrated_verdict(net, clean, "scaleup")
    factors = np.asarray(cal.make_detector().factors, dtype=np.float32)
    plain = plain_prediction(net)

    def one_call_per_copy(img):
        x = img.astype(np.float32) / 255
        p = forward(net, x[None])[0]
        own = p.argmax()
        kept = [forward(net, np.minimum(x * f, 1.0)[None])[0, own] for f in factors]
        return cal.labels(own, 1.0 - float(np.mean(kept)))

    t_plain = per_image(plain, checks)
    t_ours = per_image(ours, checks)
    t_loop = per_image(one_call_per_copy, checks[:30])
    print(f"factors: {', '.join(f'{f:g}' for f in factors)}  classes: {net.num_classes}  "
          f"images checked one at a time: {len(checks)}")
    print(f"one plain prediction (predict_on_batch, 1 image): {1000 * t_plain:6.1f} ms")
    print(f"our SCALE-UP verdict (one batched call):          {1000 * t_ours:6.1f} ms")
    print(f"SCALE-UP with one call per scaled copy:           {1000 * t_loop:6.1f} ms")
    print(f"ratio SCALE-UP verdict / one plain prediction: {t_ours / t_plain:.2f}  (target <= 3; "
          f"{len(factors) + 1} images' work in one call)")
    print(f"speed-up of the batched call over one call per copy: {t_loop / t_ours:.1f}x")

    # The combined detector (its default members, and with SCALE-UP among them) against the sum
    # of its members' verdicts.
    default = detector_class("combined").DEFAULT_MEMBERS
    for members in dict.fromkeys([tuple(default), ("strip", "scaleup")]):
        t_members = {name: per_image(calibrated_verdict(net, clean, name)[1], checks) for name in members}
        combined = calibrated_verdict(net, clean, "combined", params={"members": list(members)})[1]
        t_combined = per_image(combined, checks)
        total = sum(t_members.values())
        print(" + ".join(f"{title_of(n)} verdict {1000 * t:.1f} ms" for n, t in t_members.items())
              + f" = {1000 * total:.1f} ms")
        print(f"combined verdict ({', '.join(title_of(n) for n in members)}; p-values, one threshold): "
              f"{1000 * t_combined:.1f} ms")
        print(f"ratio combined / sum of its members: {t_combined / total:.2f}  (target <= 1.2)")


if __name__ == "__main__":
    main()
