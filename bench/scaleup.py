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

    # The combined detector (STRIP + SCALE-UP) against the sum of its members' verdicts.
    t_members = {name: per_image(calibrated_verdict(net, clean, name)[1], checks) for name in ("strip", "scaleup")}
    t_combined = per_image(calibrated_verdict(net, clean, "combined")[1], checks)
    total = sum(t_members.values())
    print(f"STRIP verdict {1000 * t_members['strip']:.1f} ms + SCALE-UP verdict {1000 * t_members['scaleup']:.1f} ms "
          f"= {1000 * total:.1f} ms")
    print(f"combined verdict (both members, p-values, one threshold): {1000 * t_combined:.1f} ms")
    print(f"ratio combined / sum of its members: {t_combined / total:.2f}  (target <= 1.2)")


if __name__ == "__main__":
    main()
