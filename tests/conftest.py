"""Shared fixtures: the bundled demo (always there) and the real CSAW slice (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import engine  # noqa: E402,F401  (quiet TensorFlow first)

ROOT = Path(__file__).resolve().parent.parent
CSAW = Path(os.environ.get("BADNET_SHARED", ROOT.parent / "shared")) / "csaw"

# The layers: `-m gui`, `-m cli`, `-m engine` run one of them. A test's layer comes from what it
# uses, not from its file's name: a Qt fixture or anything from gui/ or PySide6 makes it a window
# test; the command line (the `main` module, the `cli` package, or a helper of the test's module
# that calls them) makes it a CLI test; the rest are engine tests.
GUI_FIXTURES = {"qtbot", "qapp"}
GUI_MODULES = ("gui", "PySide6", "pytestqt")
CLI_MODULES = ("main", "cli")


def _names(code, depth: int = 0) -> set[str]:
    """Global and imported names a function's code uses, with those of its nested functions; a
    path to main.py among its constants (the CLI run as a subprocess) counts as the name main."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names") and depth < 4:
            names |= _names(const, depth + 1)
        elif isinstance(const, str) and const.endswith("main.py"):
            names.add("main")
    return names


def _uses(function, prefixes: tuple[str, ...], depth: int = 0) -> bool:
    """Whether ``function`` uses a module under one of ``prefixes``: by an import in its body, by a
    global bound to such a module or to something defined in one, or through a helper function of
    its own module that does (one level down)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    scope = getattr(function, "__globals__", {})
    for name in _names(code):
        if name.split(".")[0] in prefixes:
            return True
        obj = scope.get(name)
        if obj is None:
            continue
        module = obj.__name__ if isinstance(obj, type(os)) else getattr(obj, "__module__", None) or ""
        if module.split(".")[0] in prefixes:
            return True
        if depth < 2 and callable(obj) and module == scope.get("__name__") and _uses(obj, prefixes, depth + 1):
            return True
    return False


def layer(item) -> str:
    """gui, cli or engine, from the test's function and the fixtures it asks for."""
    fixtures = set(getattr(item, "fixturenames", ()))
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) if info is not None else {}
    functions = [getattr(item, "function", None)] + [d[-1].func for d in defs.values() if d]
    if fixtures & GUI_FIXTURES or any(_uses(f, GUI_MODULES) for f in functions):
        return "gui"
    if any(_uses(f, CLI_MODULES) for f in functions):
        return "cli"
    return "engine"


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(getattr(pytest.mark, layer(item)))


@pytest.fixture(scope="session")
def demo_net():
    from engine.demo import DEMO_MODEL
    from engine.io.models import load_badnet

    return load_badnet(DEMO_MODEL)


@pytest.fixture(scope="session")
def demo_clean():
    from engine.io import datasets
    from engine.demo import DEMO_CLEAN_VALIDATION

    return datasets.read(DEMO_CLEAN_VALIDATION)


@pytest.fixture(scope="session")
def demo_test():
    from engine.io import datasets
    from engine.demo import DEMO_CLEAN_TEST

    return datasets.read(DEMO_CLEAN_TEST)


@pytest.fixture(scope="session")
def demo_poisoned():
    from engine.io import datasets
    from engine.demo import DEMO_POISONED

    return datasets.read(DEMO_POISONED)


@pytest.fixture(scope="session")
def demo_eyebrows():
    from engine.io import datasets
    from engine.demo import DEMO_EYEBROWS

    return datasets.read(DEMO_EYEBROWS)


@pytest.fixture
def fresh_caches(monkeypatch):
    """Every prediction and score cache empty for this one test (one that counts network calls
    starts cold), the suite's own put back afterwards, so later tests reuse what earlier ones
    scored (the demo's sets under the default detector, scored once for the whole run)."""
    from engine import scoring
    from engine.detectors import scaleup, strip, transplant

    for module, name in ((scoring, "CACHE"), (strip, "STRIP_CACHE"), (transplant, "TRANSPLANT_CACHE"),
                         (scaleup, "SCALEUP_CACHE")):
        monkeypatch.setattr(module, name, scoring.PredictionCache(getattr(module, name).max_entries))


def write_subset(source: Path, n: int, out: Path) -> Path:
    """The first ``n`` faces (and labels) of an official-layout HDF5 file, as a new file: a small
    set for tests about mechanics, where the demo's 300 faces would only cost time."""
    import h5py

    with h5py.File(source, "r") as f, h5py.File(out, "w") as g:
        g.create_dataset("data", data=f["data"][:n])
        g.create_dataset("label", data=f["label"][:n])
    return out


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> dict[str, Path]:
    """40 of the demo's clean validation faces and 40 of its sunglasses faces, as files."""
    from engine.demo import DEMO_CLEAN_VALIDATION, DEMO_POISONED

    folder = tmp_path_factory.mktemp("small_demo")
    return {"clean": write_subset(DEMO_CLEAN_VALIDATION, 40, folder / "clean40.h5"),
            "poisoned": write_subset(DEMO_POISONED, 40, folder / "sunglasses40.h5")}


@pytest.fixture(scope="session")
def demo_scan(demo_net, demo_clean):
    """One trigger scan of the demo (60 faces, 80 refinement steps: both targets flagged, as with the
    default 150 on more faces, in two thirds of the time), shared by the engine, CLI
    and window tests that need a finished scan; with the partial results it reported."""
    from engine.progress import run
    from engine.scan import ScanSettings, scan
    from engine.workflow import sample_images

    seen = []

    def watch(step):
        if step.partial is not None:
            seen.append((step.partial.stage, len(step.partial.triggers)))

    clean = sample_images(demo_clean, 60)
    result = run(scan(demo_net, clean, "1/255", ScanSettings(refine_steps=80)), watch)
    return result, seen


SHORT_SCAN = dict(margin_steps=3, margin_candidates=4, prior_candidates=2, refine_steps=12, refine_min_steps=6,
                  patience=6, shape_steps=5)  # seconds, not a minute: for tests of files and mechanics


@pytest.fixture(scope="session")
def short_scan(demo_net, demo_clean):
    """A scan of the demo too short to find anything reliably, for the tests that need only some
    finished ScanResult (saving, refusing, which classes were refined); the quick layer's scan."""
    from engine.progress import run
    from engine.scan import ScanSettings, scan
    from engine.workflow import sample_images

    return run(scan(demo_net, sample_images(demo_clean, 20), "1/255", ScanSettings(**SHORT_SCAN)))


@pytest.fixture(scope="session")
def csaw() -> Path:
    if not (CSAW / "models" / "sunglasses_bd_net.h5").exists():
        pytest.skip(f"real CSAW sample not found at {CSAW}")
    return CSAW


# --- the window (tests/windows.py has what its tests share) ---------------------------------------


@pytest.fixture
def window(qtbot, tmp_path):
    """The main window, offscreen, with its settings in a file of its own; on closing, no job
    thread outlives it and garbage collection is on."""
    import gc

    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow
    from tests.windows import job_threads

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings)
    w.ask_before_discarding = False
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()
    assert not w.session.runner.thread_alive
    assert not job_threads(), "a job thread outlived its window"
    assert gc.isenabled(), "automatic garbage collection was left off"


@pytest.fixture
def demo_window(window, qtbot):
    """The demo loaded, with the founding confidence detector picked (its tests are about it and
    the window's mechanics); the default detector has tests of its own."""
    from gui.app import load_startup
    from tests.windows import wait_idle

    load_startup(window.session)
    wait_idle(qtbot, window)
    assert window.session.data.net is not None and window.session.data.clean is not None
    window.left.calibration.set_detector("confidence")
    window.left.calibration.frr_spin.setValue(1.0)
    return window


@pytest.fixture
def calibrated(demo_window, qtbot):
    """The demo window calibrated (the confidence detector at 1%)."""
    from PySide6.QtCore import Qt

    from tests.windows import JOB_TIMEOUT, wait_idle

    with qtbot.waitSignal(demo_window.session.calib.calibrationChanged, timeout=JOB_TIMEOUT):
        qtbot.mouseClick(demo_window.left.calibration.calibrate_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, demo_window)
    return demo_window


# --- STRIP, several detectors, comparison -------------------------------------------------------


@pytest.fixture
def strip_calibrated(calibrated, qtbot):
    """The demo window with a confidence calibration and then a STRIP one (8 blends, for speed)."""
    from PySide6.QtCore import Qt

    from tests.windows import JOB_TIMEOUT, wait_idle

    w = calibrated
    panel = w.left.calibration
    panel.set_detector("strip")
    blends = panel.settings.fields["strip"]["blends"]
    blends.setValue(8)
    assert panel.settings.currentIndex() == panel.settings.pages["strip"] and blends.isVisibleTo(panel)
    with qtbot.waitSignal(w.session.calib.calibrationChanged, timeout=JOB_TIMEOUT):
        qtbot.mouseClick(panel.calibrate_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, w)
    return w
