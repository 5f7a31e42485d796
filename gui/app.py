"""Starting the window: the demo (or what the command line names) loads after it is shown."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.workflow import Sources
from engine.io.datasets import parse_poisoned
from engine.errors import InputError, first_line


def uses_xcb() -> bool:
    """Qt will pick its X11 plugin: Linux, an X display, and no other platform asked for."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or (platform and not platform.startswith("xcb")):
        return False
    return bool(os.environ.get("DISPLAY")) and not (os.environ.get("WAYLAND_DISPLAY") and not platform)


def has_display() -> bool:
    """False on a Linux machine with no X11 or Wayland display and no Qt platform chosen."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


XCB_PACKAGES = ("libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 "
                "libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-randr0 libxcb-shape0")


def xcb_problem(plugin: Path | None = None) -> str | None:
    """Why Qt's X11 plugin cannot load here, or None. Qt itself would abort with a screenful."""
    import ctypes

    if plugin is None:
        import PySide6

        plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if not plugin.exists():
            return None  # another Qt layout: let Qt speak for itself
    try:
        ctypes.CDLL(str(plugin))
    except OSError as err:
        return (f"Qt's X11 plugin cannot load ({first_line(err)}); on Debian or Ubuntu install: "
                f"apt install {XCB_PACKAGES}")
    return None


def run_app(
    model: str | Path | None = None,
    clean: str | Path | None = None,
    poisoned: list[str] | None = None,
    calibration: str | Path | None = None,
    screenshot: str | Path | None = None,
    trust: bool = False,
) -> int:
    """Open the window and return the application's exit code."""
    sets = [parse_poisoned(spec) for spec in poisoned or []]
    if calibration is not None:
        from engine.detectors.calibration import Calibration

        Calibration.load(calibration)  # a damaged file is refused here, in one line, before any window
    if screenshot is not None:
        from engine.io.files import check_png_output

        screenshot = check_png_output(screenshot)
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    elif not has_display():
        raise InputError(None, "no display to open the window on; use the CLI (python main.py --help), "
                         "or 'python main.py gui --screenshot OUT.png' to render it headless")
    elif uses_xcb() and (problem := xcb_problem()):
        raise InputError(None, problem)
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from gui.main_window import APP_NAME, MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    if screenshot is not None:
        # A screenshot shows the default layout and leaves the user's settings alone.
        settings = QSettings(str(Path(os.devnull)), QSettings.Format.IniFormat)
    else:
        settings = None
    window = MainWindow(settings=settings)
    if screenshot is not None:
        window.resize(1400, 900)
    window.show()

    errors: list[str] = []
    window.session.error.connect(errors.append)  # before anything loads, so no error is missed
    demo = load_startup(window.session, model, clean, sets, calibration, trust)

    if screenshot is not None:
        images = Sources.demo_images() if demo else []
        ScreenshotRun(window, Path(screenshot), calibrate=calibration is None, images=images, errors=errors)
    return app.exec()


def load_startup(session, model=None, clean=None, sets=(), calibration=None, trust=False) -> bool:
    """Queue what the window opens with; the bundled demo when no model is named. True for the demo."""
    named = Sources(None if model is None else Path(model), None if clean is None else Path(clean),
                    tuple((Path(p), int(t)) for p, t in sets), trust)  # the demo's files when no model is named
    session.data.open_model(named.model_path(), trust=trust)
    if named.clean_path() is not None:
        session.data.open_clean(named.clean_path())
    for path, target in named.poisoned_sets():
        session.data.add_poisoned(path, target)
    if calibration is not None:
        session.calib.load(calibration)
    return named.demo


class ScreenshotRun:
    """Load, calibrate, show the histograms, save the whole window to a PNG, quit."""

    def __init__(self, window, out: Path, calibrate: bool, images: list[Path], errors: list[str]):
        from PySide6.QtWidgets import QApplication

        self.window, self.out, self.images, self.app = window, out, images, QApplication.instance()
        self.errors = errors
        window.after_jobs(self._loaded if calibrate else self._calibrated)

    def _loaded(self) -> None:
        if self._stop_on_errors():
            return
        if not self.window.session.calib.calibrate():
            self._stop_on_errors()
            return
        self.window.after_jobs(self._calibrated)

    def _calibrated(self) -> None:
        if self._stop_on_errors():
            return
        if self.images:
            self.window.session.check.check_paths(self.images)
        self.window.after_jobs(self._shoot)

    def _shoot(self) -> None:
        from PySide6.QtCore import QTimer

        self.window.tabs.setCurrentWidget(self.window.histograms)
        QTimer.singleShot(200, self._save)  # let layouts settle

    def _save(self) -> None:
        if self._stop_on_errors():
            return
        from engine.io.files import write_png

        self.window.ask_before_discarding = False
        try:
            write_png(self.out, lambda tmp: self.window.grab().save(str(tmp)))
            ok = True
            print(f"screenshot written to {self.out}", file=sys.stderr)
        except InputError as err:
            ok = False
            print(f"error: {err}", file=sys.stderr)
        self.window.close()
        self.app.exit(0 if ok else 2)

    def _stop_on_errors(self) -> bool:
        if not self.errors:
            return False
        for message in self.errors:
            print(f"error: {message}", file=sys.stderr)
        self.window.ask_before_discarding = False
        self.window.close()
        self.app.exit(2)
        return True
