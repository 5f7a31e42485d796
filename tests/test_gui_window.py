"""The window as a whole: loading data and bad input (a banner, everything loaded kept), remembered folders and geometry, the screenshot mode, the job queue, the size at 1280x800, the audit report."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


from engine import scoring
from engine.demo import DEMO_CLEAN_VALIDATION, DEMO_MODEL, DEMO_POISONED
from gui.main_window import MainWindow
from tests.windows import JOB_TIMEOUT, drop, wait_idle

ROOT = Path(__file__).resolve().parent.parent


def test_bad_files_give_a_message_and_keep_the_window(calibrated, qtbot, tmp_path):
    w = calibrated
    net, cal = w.session.data.net, w.session.calib.active
    fake = tmp_path / "face.png"
    fake.write_text("not really a picture")
    truncated = tmp_path / "model.h5"
    truncated.write_bytes(DEMO_MODEL.read_bytes()[:5000])
    errors = []
    w.session.error.connect(errors.append)
    drop(w, [fake])
    wait_idle(qtbot, w)
    assert any(str(fake) in e and "not an image" in e for e in errors)
    assert w.banner.isVisible() and str(fake) in w.banner.label.text()
    w.session.data.open_model(truncated)
    wait_idle(qtbot, w)
    assert any(str(truncated) in e for e in errors)
    assert w.session.data.net is net and w.session.calib.active is cal  # nothing lost
    assert w.image_check.model.rowCount() == 0
    assert "\n" not in w.banner.label.text()


def test_folders_and_geometry_are_remembered(window, qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    asked = []

    def fake_open(parent, title, folder, filters):
        asked.append(folder)
        return str(DEMO_CLEAN_VALIDATION), filters

    monkeypatch.setattr(QFileDialog, "getOpenFileName", fake_open)
    window.files.open_clean()
    window.files.open_clean()
    assert asked[1] == str(DEMO_CLEAN_VALIDATION.parent)
    wait_idle(qtbot, window)
    # The offscreen screen is 800 px wide, so restoring clamps the width: compare heights.
    window.resize(window.width(), window.minimumSizeHint().height() + 7)
    height = window.height()
    settings = window.settings
    window.close()
    assert settings.value("window/geometry") is not None
    again = MainWindow(settings=settings)
    qtbot.addWidget(again)
    assert again.height() == height
    again.close()


@pytest.mark.slow
def test_screenshot_writes_a_png_of_the_window(tmp_path, small_demo):
    """The whole screenshot path (load, calibrate with the default detector, check the demo's
    images, save), on 40 clean and 40 poisoned demo faces: what it shows, not how many."""
    from PIL import Image

    out = tmp_path / "window.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "gui", "--clean", str(small_demo["clean"]),
         "--poisoned", f"{small_demo['poisoned']}:0", "--screenshot", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(out) as im:
        assert im.width >= 1000 and im.height >= 700
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100


@pytest.mark.slow  # the whole app in a subprocess (starts TensorFlow)
def test_screenshot_reports_bad_input(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "gui", "--model", str(tmp_path / "missing.h5"),
         "--screenshot", str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "missing.h5: no such file" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_poisoned_sets_are_listed_and_removable(demo_window, qtbot):
    w = demo_window
    assert w.left.model_data.poisoned_list.count() == 2  # the demo's sunglasses and eyebrows sets
    w.session.data.add_poisoned(DEMO_POISONED, 3)
    wait_idle(qtbot, w)
    assert w.left.model_data.poisoned_list.count() == 3
    w.session.data.remove_poisoned(2)
    assert w.left.model_data.poisoned_list.count() == 2
    w.session.data.add_poisoned(DEMO_POISONED, 5000)  # not a class of the demo
    assert w.left.model_data.poisoned_list.count() == 2


def test_clean_data_with_labels_outside_the_classes_is_refused(demo_window, qtbot, tmp_path):
    import h5py

    w = demo_window
    clean = w.session.data.clean
    bad = tmp_path / "labels5000.h5"
    with h5py.File(DEMO_CLEAN_VALIDATION, "r") as src, h5py.File(bad, "w") as f:
        f.create_dataset("data", data=src["data"][:6])
        f.create_dataset("label", data=np.array([0, 1, 2, 5000, 4, 5], np.float32))
    errors = []
    w.session.error.connect(errors.append)
    w.session.data.open_clean(bad)
    wait_idle(qtbot, w)
    assert errors and str(bad) in errors[-1] and "not classes of this model" in errors[-1]
    assert w.session.data.clean is clean


def test_a_job_factory_bug_ends_its_job_not_the_queue(window, qtbot):
    """Any exception from a job factory fails that job; the runner goes on with the next."""
    from engine.progress import Progress

    runner = window.session.runner
    errors, results = [], []
    window.session.error.connect(errors.append)

    def broken():
        raise IndexError("index 7 is out of bounds")

    def fine():
        yield Progress(1, 1, "fine")
        return 42

    runner.submit("Broken job", broken)
    runner.submit("Fine job", fine, results.append)
    qtbot.waitUntil(lambda: results == [42] and not runner.busy, timeout=JOB_TIMEOUT)  # the result lands first
    assert "Broken job failed: an internal error" in errors[0] and "IndexError" not in errors[0]
    assert "\n" not in window.banner.label.text()


def test_a_result_for_a_replaced_model_is_dropped(demo_window, qtbot):
    """One rule for stale results: a job started before the model changed does not land."""
    from engine.progress import Progress

    runner = demo_window.session.runner
    landed, finished = [], []

    def job():
        yield Progress(0, 1, "slow")
        runner.new_generation()  # as a model load finishing meanwhile would
        yield Progress(1, 1, "slow")
        return "old"

    handle = runner.submit("Stale job", job, landed.append)
    handle.finished.connect(finished.append)
    qtbot.waitUntil(lambda: bool(finished), timeout=JOB_TIMEOUT)
    assert landed == [] and finished == ["stale"]


def test_failures_do_not_wear_down_bool_references(window, qtbot):
    """Each failed job goes through the window's slots; none may drop a reference it does not own
    (PySide6 6.12.0 did, for every bool a slot returned, until Python aborted)."""
    from engine.progress import Progress

    runner = window.session.runner

    def broken():
        raise ValueError("bad")

    def fine():
        yield Progress(1, 1, "")
        return None

    def bools() -> int:
        gc.collect()
        return sys.getrefcount(True) + sys.getrefcount(False)

    def fail_many(n: int) -> None:
        done = []
        for _ in range(n):
            runner.submit("Broken", broken)
        runner.submit("Fine", fine, done.append)
        qtbot.waitUntil(lambda: done == [None], timeout=JOB_TIMEOUT)

    fail_many(20)  # warm up: first-use caches
    before = bools()
    fail_many(300)
    assert bools() - before > -100  # a slot dropping a bool reference per failure would lose 300


def test_a_model_with_fewer_classes_drops_data_whose_labels_it_lacks(demo_window, qtbot, tmp_path):
    """Clean labels and poisoned targets are classes of the model; a new model with fewer classes
    removes the sets that no longer fit, says so, and the panel shows it."""
    from engine.io.models import build_deepid

    w = demo_window
    small = tmp_path / "five_classes.h5"
    build_deepid(5).save(small)
    messages = []
    w.session.message.connect(messages.append)
    w.session.data.add_poisoned(DEMO_POISONED, 3)
    wait_idle(qtbot, w)
    w.session.data.open_model(small)
    wait_idle(qtbot, w)
    assert w.session.data.net.num_classes == 5
    assert w.session.data.clean is None  # the demo's labels run to 49
    assert [p.target for p in w.session.data.poisoned] == [0, 3]
    assert w.left.model_data.clean_name.text() == "no clean data"
    assert any("no longer fit the new model" in m for m in messages)


def test_the_window_fits_1280_by_800(window, qtbot):
    """Every tab's minimum width leaves the window no wider than a 1280x800 screen."""
    window.resize(1280, 800)
    for i in range(window.tabs.count()):
        window.tabs.setCurrentIndex(i)
        qtbot.waitUntil(lambda: window.tabs.currentWidget().isVisible())
        assert window.minimumSizeHint().width() <= 1280, window.tabs.tabText(i)
        assert window.width() <= 1280 and window.height() <= 800


def test_the_default_output_home_is_created_and_nothing_else(monkeypatch, tmp_path):
    from gui.folders import default_folder, make_output_home

    monkeypatch.setenv("HOME", str(tmp_path))
    out = default_folder(DEMO_MODEL, "nplus1")
    assert out == tmp_path / "BadNetInspector" / "demo_badnet_nplus1"
    make_output_home(out)
    assert out.parent.is_dir() and not out.exists()  # the run itself makes the folder, atomically
    make_output_home(tmp_path / "elsewhere" / "results")
    assert not (tmp_path / "elsewhere").exists()


def test_a_cancelled_audit_report_leaves_nothing(calibrated, qtbot, tmp_path, monkeypatch, short_scan, fresh_caches):
    """File > Save audit report… runs as a job; Cancel stops it before the file is written."""
    w = calibrated
    w.session.scan.result = short_scan
    out = tmp_path / "audit.html"
    real_forward = scoring.forward

    def slow_forward(net, x):
        time.sleep(0.3)
        return real_forward(net, x)

    monkeypatch.setattr(scoring, "forward", slow_forward)
    monkeypatch.setattr(w.files, "_ask_save", lambda *args: out)
    outcomes = []
    w.session.runner.finished.connect(lambda title, outcome: outcomes.append((title, outcome)))
    menu = next(a for a in w.menuBar().actions() if a.text() == "&File").menu()
    next(a for a in menu.actions() if a.text() == "Save &audit report…").trigger()
    qtbot.waitUntil(lambda: w.session.runner.busy, timeout=JOB_TIMEOUT)
    w.session.runner.cancel()
    wait_idle(qtbot, w)
    assert ("Audit report audit.html", "cancelled") in outcomes
    assert list(tmp_path.iterdir()) == []
