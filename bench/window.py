"""The window at work, offscreen: how long the demo's *Calibrate* takes, and the longest stall of
the event loop in each phase, in one run.

A 10 ms timer runs on the GUI thread the whole time; a stall is the longest gap between two of
its ticks beyond its 10 ms, per phase: the window's first paint, loading the demo, calibrating with the defaults (then the
loaded sets scored for the histograms), checking the demo's images, comparing detectors, a
repair (magnitude pruning, no fine-tuning), a short trigger scan. The phases are driven through
the same controller calls the buttons make.

The plain way for *Calibrate*: one prediction pass over the same faces (the clean set and the
loaded poisoned sets), as a bare ``model.predict`` would do it.

Targets (issue 20): *Calibrate* to verdicts and histograms shown in at most 10 s; the longest
stall at most 50 ms in every phase. *Calibrate* shows the verdicts and the clean set's histogram
when the calibration ends; each poisoned set is then scored in a job of its own and its histogram
appears when that ends: both times are printed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from _common import ROOT  # noqa: E402,F401  (puts the project on sys.path)

import numpy as np  # noqa: E402
from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


class StallMeter:
    """The longest gap between ticks of a 10 ms timer, beyond the 10 ms, since the last reset."""

    def __init__(self, period_ms: int = 10):
        self.period = period_ms / 1000
        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(self._tick)
        self.reset()
        self.timer.start()

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.worst = 0.0
        self.when = (self.last, self.last)  # the worst gap's start and end

    def _tick(self) -> None:
        now = time.perf_counter()
        if now - self.last - self.period > self.worst:
            self.worst, self.when = now - self.last - self.period, (self.last, now)
        self.last = now


class StackSampler:
    """Every thread's innermost Python frames, every 2 ms, from a thread of its own (``--why``):
    a stall shows as a gap in its samples (the GIL held elsewhere), and the samples either side
    name what was running."""

    def __init__(self):
        import threading

        self.samples: list[tuple[float, dict]] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import threading
        import traceback

        me = threading.get_ident()
        while True:
            now = time.perf_counter()
            stacks = {tid: " <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}"
                                       for f in reversed(traceback.extract_stack(frame)[-4:]))
                      for tid, frame in sys._current_frames().items() if tid != me}
            self.samples.append((now, stacks))
            time.sleep(0.002)

    def report(self, start: float, end: float) -> str:
        """What the GUI thread ran between ``start`` and ``end`` (the longest stall), most often
        first, and the longest gap in the samples there (the GIL held by one thread)."""
        import threading
        from collections import Counter

        main = threading.main_thread().ident
        inside = [s for s in self.samples if start - 0.002 <= s[0] <= end]
        seen = Counter(s[1].get(main, "?") for s in inside)
        lines = [f"    {n} x {stack}" for stack, n in seen.most_common(4)]
        pairs = [(b[0] - a[0], a) for a, b in zip(inside, inside[1:])]
        if pairs:
            gap, before = max(pairs, key=lambda p: p[0])
            lines.append(f"  longest gap in the samples: {1000 * gap:.0f} ms, after:")
            lines += [f"    {stack}" for stack in before[1].values()]
        return "\n".join(lines)


def wait(app, done, timeout: float = 1800.0) -> float:
    """Process events until ``done()``; the seconds it took."""
    start = time.perf_counter()
    while not done():
        app.processEvents()
        time.sleep(0.002)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the window did not finish in time")
    return time.perf_counter() - start


def main() -> None:
    import argparse

    from engine.demo import DEMO_IMAGES
    from engine.io.datasets import parse_poisoned
    from engine.scan import ScanSettings
    from gui.app import load_startup
    from gui.main_window import MainWindow

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a BadNet instead of the demo's (e.g. the real CSAW one)")
    parser.add_argument("--clean", help="its clean data")
    parser.add_argument("--poisoned", action="append", default=[], metavar="P:TARGET")
    parser.add_argument("--images", type=Path, default=DEMO_IMAGES, help="images to check")
    parser.add_argument("--why", action="store_true",
                        help="sample every thread's stack and print what ran at each phase's longest stall")
    parser.add_argument("--csaw", action="store_true",
                        help="the real CSAW sunglasses BadNet (../shared/csaw) with 45 clean faces augmented from "
                        "its sample, its sunglasses faces and images")
    args = parser.parse_args()
    if args.csaw:
        from _common import CSAW, augmented_faces

        from engine.demo import write_official_h5

        faces = augmented_faces(45)
        if faces is None:
            parser.error("--csaw needs ../shared/csaw")
        args.clean = str(Path(tempfile.mkdtemp(prefix="bench-window-")) / "clean45.h5")
        write_official_h5(Path(args.clean), faces.images, faces.labels)
        args.model = str(CSAW / "models" / "sunglasses_bd_net.h5")
        args.poisoned = [f"{CSAW / 'sunglasses_sample.h5'}:0"]
        args.images = CSAW / "images"
    if bool(args.model) != bool(args.clean):
        parser.error("--model and --clean go together")
    sets = [parse_poisoned(p) for p in args.poisoned]

    app = QApplication.instance() or QApplication(sys.argv[:1])
    folder = Path(tempfile.mkdtemp(prefix="bench-window-"))
    window = MainWindow(settings=QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    window.ask_before_discarding = False
    window.resize(1280, 800)
    window.show()
    session = window.session
    meter = StallMeter()
    idle = lambda: not session.runner.busy  # noqa: E731
    rows = []

    sampler = StackSampler() if args.why else None

    def phase(name: str, start, done=idle) -> float:
        meter.reset()
        start()
        seconds = wait(app, done)
        app.processEvents()
        rows.append((name, seconds, 1000 * meter.worst))
        if sampler is not None:
            print(f"{name}: longest stall {1000 * meter.worst:.0f} ms; the GUI thread ran:\n"
                  f"{sampler.report(*meter.when)}", flush=True)
        return seconds

    shown = time.perf_counter() + 0.5
    phase("show the window (first paint)", lambda: None, lambda: time.perf_counter() > shown)
    phase("load the demo" if not args.model else "load the model and data",
          lambda: load_startup(session, args.model, args.clean, sets))
    data = session.data
    faces = np.concatenate([data.clean.images] + [p.images.images for p in data.poisoned])
    x = faces.astype(np.float32) / 255
    data.net.model.predict(x[:64], verbose=0)  # traced once, as ours was by the load
    start = time.perf_counter()
    data.net.model.predict(x, verbose=0)
    plain = time.perf_counter() - start

    calibrated = []
    session.calib.calibrationChanged.connect(lambda *_: calibrated.append(time.perf_counter()))
    begun = time.perf_counter()
    t_all = phase("calibrate (defaults) + every histogram", lambda: session.calib.calibrate(),
                  lambda: calibrated and idle())
    t_calibrate = calibrated[0] - begun  # verdicts and the clean histogram shown; the window usable
    phase("check images", lambda: window.open_paths([args.images]))
    phase("compare (confidence, STRIP)", lambda: session.compare.run({"confidence": None, "strip": None}))
    phase("repair (magnitude, no fine-tuning)",
          lambda: session.repair.run("magnitude", {"fine_tune_epochs": 0}, folder / "magnitude"))
    short = ScanSettings(margin_steps=3, margin_candidates=4, prior_candidates=2, refine_steps=12,
                         refine_min_steps=6, patience=6, shape_steps=5)
    phase("trigger scan (short)", lambda: session.scan.run(20, short))
    window.close()

    print(f"{args.model or 'demo'}: {len(data.clean)} clean faces + {len(faces) - len(data.clean)} poisoned, "
          f"{data.net.num_classes} classes; screen 1280x800 offscreen")
    print(f"{'phase':<38}{'seconds':>9}{'longest stall (ms)':>20}")
    for name, seconds, stall in rows:
        print(f"{name:<38}{seconds:>9.1f}{stall:>20.0f}")
    print(f"plain model.predict over the same {len(faces)} faces: {plain:.2f} s")
    print(f"calibrate to verdicts and the clean histogram shown: {t_calibrate:.1f} s; every poisoned set's "
          f"histogram after {t_all:.1f} s (each set its own job, the window usable)")
    print(f"ratio calibrate-to-verdicts / plain pass: {t_calibrate / plain:.0f}x; every histogram / plain pass: "
          f"{t_all / plain:.0f}x (target: calibrate in at most 10 s)")
    print(f"longest stall over all phases: {max(r[2] for r in rows):.0f} ms (target <= 50 ms in every phase)")


if __name__ == "__main__":
    main()
