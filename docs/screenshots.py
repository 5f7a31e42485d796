"""Retake the screenshots the README and docs show, from the current code, at 1280x800.

    python docs/screenshots.py            # assets/screenshot.png: the demo's Compare detectors tab
    python docs/screenshots.py --scan     # also assets/screenshot_scan.png: the Trigger scan tab on
                                          # the real CSAW sunglasses BadNet (needs ../shared/csaw)

The window is driven offscreen through the same controller calls its buttons make, and grabbed
as a user would see it. Nothing is downloaded; the demo's figures are computed afresh.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402,F401  (quiet TensorFlow first)


def wait(app, done, timeout: float = 1800.0) -> None:
    start = time.perf_counter()
    while not done():
        app.processEvents()
        time.sleep(0.005)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the window did not finish in time")
    for _ in range(20):
        app.processEvents()


def window(app, folder: Path):
    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow

    w = MainWindow(settings=QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    w.ask_before_discarding = False
    w.resize(1280, 800)
    w.show()
    return w


def compare_shot(app, out: Path) -> None:
    from gui.app import load_startup

    folder = Path(tempfile.mkdtemp(prefix="screenshots-"))
    w = window(app, folder)
    s = w.session
    idle = lambda: not s.runner.busy  # noqa: E731
    load_startup(s, None)
    wait(app, idle)
    s.calib.calibrate()
    wait(app, idle)
    s.compare.run({name: None for name in w.compare.checks})
    wait(app, idle)
    w.tabs.setCurrentWidget(w.compare)
    eyebrows = next(i for i in range(w.compare.set_box.count()) if "eyebrows" in w.compare.set_box.itemText(i))
    w.compare.set_box.setCurrentIndex(eyebrows)
    wait(app, idle)
    w.grab().save(str(out))
    print(f"wrote {out}")
    w.close()


def scan_shot(app, out: Path) -> None:
    csaw = ROOT.parent / "shared" / "csaw"
    model = csaw / "models" / "sunglasses_bd_net.h5"
    if not model.exists():
        raise SystemExit(f"--scan needs the real CSAW sample at {csaw}")
    from gui.app import load_startup

    folder = Path(tempfile.mkdtemp(prefix="screenshots-"))
    w = window(app, folder)
    s = w.session
    idle = lambda: not s.runner.busy  # noqa: E731
    load_startup(s, model, csaw / "clean_sample.h5", [(csaw / "sunglasses_sample.h5", 0)])
    wait(app, idle)
    w.tabs.setCurrentWidget(w.scan)
    s.scan.run(0)  # every clean face of the sample
    wait(app, idle)
    w.grab().save(str(out))
    print(f"wrote {out}")
    w.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", action="store_true", help="also the Trigger scan tab on the real CSAW BadNet")
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    compare_shot(app, ROOT / "assets" / "screenshot.png")
    if args.scan:
        scan_shot(app, ROOT / "assets" / "screenshot_scan.png")


if __name__ == "__main__":
    main()
