"""The audit report against the plain way, in one run: one ``audit`` against the separate
commands whose output it gathers.

Setting: the bundled demo (50 classes, 300 clean validation faces, the sunglasses and eyebrows
sets of 200 faces each). The trigger scan is run once first and handed to both ways (it is the
same work either way: ``scan`` or the audit's own).

"Plain" is what a reader had before the report: ``compare`` (every detector on both poisoned
sets) and ``calibrate`` (the default detector) run one after the other, each starting cold as a
new process does, then the calibration's scores of the poisoned sets (``eval``); no page, and the
figures exported one by one. "Ours" is ``audit --scan``: the same computations in one job that
shares its predictions and scores, the reversed triggers stamped on clean faces, every figure
drawn and the page written.

Targets (issue 21): the demo's audit with its defaults in at most 2 minutes (the scan included;
``--with-scan`` times that too) and under 5 MB; the page adds little to the computing it shows.

``--csaw``: at CSAW scale instead, the real CSAW sunglasses BadNet with 11,547 clean and 12,830
poisoned faces augmented from the 20-face sample (``_common.augmented_faces``; a random-weight
DeepID without ../shared/csaw): the audit as it runs by default, per-image detection on 2,000
faces of each set, against the audit on every face (``--detection-sample all``), both given the
same scan. Slow: the every-face audit takes many minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on the path)

from engine import progress, report, scoring, workflow
from engine.demo import DEMO_CLEAN_VALIDATION, DEMO_EYEBROWS, DEMO_EYEBROWS_TARGET, DEMO_MODEL, DEMO_POISONED, DEMO_TARGET
from engine.detectors import DETECTORS, make_detector, scaleup, strip, transplant
from engine.evaluation.compare import compare
from engine.io.datasets import PoisonedSet, read
from engine.io.models import load_badnet

SCALING = "1/255"


def cold() -> None:
    """Every prediction and score cache empty, as in a new process."""
    for cache in (scoring.CACHE, strip.STRIP_CACHE, transplant.TRANSPLANT_CACHE, scaleup.SCALEUP_CACHE):
        cache.clear()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def csaw_scale() -> None:
    from _common import CSAW_VALIDATION_SIZE, augmented_faces, realistic_setting

    net, clean, setting = realistic_setting(CSAW_VALIDATION_SIZE)
    faces = augmented_faces(12_830, seed=1)
    poisoned = [PoisonedSet(faces if faces is not None else clean, 0)]
    print(f"setting: {setting}; poisoned: {len(poisoned[0].images):,} faces -> 0")
    scan, t_scan = timed(lambda: progress.run(workflow.scan_job(net, workflow.sample_images(clean, 45), SCALING)))
    print(f"the trigger scan (45 faces), run once for both ways: {t_scan:6.1f} s ({scan.summary()})")

    def audit(limit, out: Path):
        cold()
        audit = progress.run(report.audit_job(net, clean, poisoned, SCALING, scan=scan, scan_source="a bench",
                                              detection_images=limit))
        report.write(audit, out)
        return out.stat().st_size

    with tempfile.TemporaryDirectory() as tmp:
        size, t_drawn = timed(lambda: audit(report.DETECTION_IMAGES, Path(tmp) / "drawn.html"))
        print(f"ours:  audit, detection on {report.DETECTION_IMAGES:,} faces of each set (the default): "
              f"{t_drawn:7.1f} s, {size / 1e6:.2f} MB")
        size, t_all = timed(lambda: audit(0, Path(tmp) / "all.html"))
        print(f"plain: audit on every face (--detection-sample all):              {t_all:7.1f} s, {size / 1e6:.2f} MB")
        print(f"ratio default / every face: {t_drawn / t_all:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-scan", action="store_true", help="also time the audit computing its own scan")
    parser.add_argument("--csaw", action="store_true", help="at CSAW scale: the default draw against every face")
    args = parser.parse_args()
    if args.csaw:
        csaw_scale()
        return
    net = load_badnet(DEMO_MODEL)
    clean = read(DEMO_CLEAN_VALIDATION)
    poisoned = [PoisonedSet(read(DEMO_POISONED), DEMO_TARGET), PoisonedSet(read(DEMO_EYEBROWS), DEMO_EYEBROWS_TARGET)]
    net.model.predict(clean.images[:8].astype("float32") / 255, verbose=0)  # traced once, for both ways

    scan, t_scan = timed(lambda: progress.run(workflow.scan_job(net, workflow.sample_images(clean, 300), SCALING)))
    print(f"setting: the demo, {net.num_classes} classes, {len(clean)} clean faces, "
          f"poisoned sets of {', '.join(str(len(p.images)) for p in poisoned)}")
    print(f"the trigger scan, run once for both ways: {t_scan:6.1f} s ({scan.summary()})")

    def plain():
        cold()
        detectors = [make_detector(n) for n in DETECTORS]
        progress.run(compare(net, clean, poisoned, detectors, SCALING, report.FRRS))
        cold()
        cal, _ = progress.run(workflow.CalibrateRequest().job(net, clean, SCALING))
        cold()
        progress.run(workflow.score_sets(net, cal, None, poisoned))

    def ours(given_scan, out: Path):
        cold()
        audit = progress.run(report.audit_job(net, clean, poisoned, SCALING, scan=given_scan, scan_source="a bench"))
        report.write(audit, out)
        return out.stat().st_size

    with tempfile.TemporaryDirectory() as tmp:
        _, t_plain = timed(plain)
        size, t_ours = timed(lambda: ours(scan, Path(tmp) / "audit.html"))
        print(f"plain: compare, then calibrate, then the calibration on the poisoned sets, each cold: {t_plain:6.1f} s")
        print(f"ours:  audit --scan (the same, the stamped faces, every figure and the page):       {t_ours:6.1f} s, "
              f"{size / 1e6:.2f} MB")
        print(f"ratio audit / plain: {t_ours / t_plain:.2f}  (target: the page costs little; under 5 MB)")
        if args.with_scan:
            size, t_all = timed(lambda: ours(None, Path(tmp) / "audit_scan.html"))
            print(f"audit with its own scan (the defaults):  {t_all:6.1f} s, {size / 1e6:.2f} MB  (target <= 120 s)")


if __name__ == "__main__":
    main()
