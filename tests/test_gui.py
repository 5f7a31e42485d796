"""The window, offscreen, with pytest-qt: calibrate in the worker, cancel, drop images, move thresholds."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pytestqt  # noqa: E402,F401  (a test dependency: missing, the run fails instead of skipping 45 tests)

from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402

from engine import progress, scoring  # noqa: E402

from engine.io import datasets
from engine.demo import DEMO_CLEAN_VALIDATION, DEMO_IMAGES, DEMO_MODEL, DEMO_POISONED  # noqa: E402
from gui.app import load_startup  # noqa: E402
from gui.jobs import THREAD_NAME  # noqa: E402
from gui.image_check import COL_VERDICT  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from tests.conftest import SHORT_SCAN  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
JOB_TIMEOUT = 120_000  # ms; the first job imports TensorFlow


def job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture
def window(qtbot, tmp_path):
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


def wait_idle(qtbot, w) -> None:
    qtbot.waitUntil(lambda: not w.session.runner.busy, timeout=JOB_TIMEOUT)


@pytest.fixture
def demo_window(window, qtbot):
    """The demo loaded, with the founding confidence detector picked (its tests are about it and
    the window's mechanics); the default detector has tests of its own."""
    load_startup(window.session)
    wait_idle(qtbot, window)
    assert window.session.data.net is not None and window.session.data.clean is not None
    window.left.calibration.set_detector("confidence")
    window.left.calibration.frr_spin.setValue(1.0)
    return window


@pytest.fixture
def calibrated(demo_window, qtbot):
    with qtbot.waitSignal(demo_window.session.calib.calibrationChanged, timeout=JOB_TIMEOUT):
        qtbot.mouseClick(demo_window.left.calibration.calibrate_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, demo_window)
    return demo_window


def drop(w, paths) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    w.dropEvent(event)


def test_before_a_calibration_the_histograms_say_so_and_show_no_threshold(window):
    hist = window.histograms
    assert hist.empty_note.isVisibleTo(hist) and not hist.tabs.isEnabled()
    assert not hist.per_class.line.isVisible() and not hist.pooled.line.isVisible()


def test_window_opens_on_demo_and_calibration_fills_histograms(calibrated):
    w = calibrated
    cal = w.session.calib.active
    assert cal is not None and cal.num_classes == w.session.data.net.num_classes
    assert "demo_badnet.h5" in w.left.model_data.model_name.text()
    assert "300 labelled" in w.left.model_data.clean_name.text()
    hist = w.histograms
    assert hist.tabs.isEnabled() and not hist.empty_note.isVisible() and hist.per_class.line.isVisible()
    assert hist.class_box.count() == cal.num_classes
    assert hist.current_class == 0  # opens on the class the poisoned set is sent to
    curves = hist.per_class._curves
    assert list(curves) == ["clean", "poisoned:sunglasses_poisoned.h5 -> 0", "poisoned:eyebrows_poisoned.h5 -> 7"]
    _, y_poisoned = curves["poisoned:sunglasses_poisoned.h5 -> 0"].getData()
    assert y_poisoned.sum() == pytest.approx(1.0)  # shares of the 300 images predicted 0
    hist.show_class(3)  # another class: the same curves, new data
    assert hist.per_class._curves["clean"] is curves["clean"]
    _, y_clean = curves["clean"].getData()
    clean = next(s for s in w.session.calib.set_scores if s.kind == "clean").scores
    assert y_clean.sum() == pytest.approx(1.0 if (clean.predicted == 3).any() else 0.0)
    assert "false rejection" in hist.per_class.readout.text()
    assert w.isWindowModified()  # a fresh calibration is not saved yet


def test_progress_reaches_the_bar(demo_window, qtbot, monkeypatch, fresh_caches):
    scoring.CACHE.clear()
    seen = []
    demo_window.session.runner.progress.connect(seen.append)
    with qtbot.waitSignal(demo_window.session.calib.calibrationChanged, timeout=JOB_TIMEOUT):
        demo_window.left.calibration.start()
    assert any(step.total == 300 and step.done == 300 for step in seen)
    wait_idle(qtbot, demo_window)
    panel = demo_window.left.calibration
    assert panel.calibrate_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_cancel_stops_a_run_and_keeps_the_old_calibration(calibrated, qtbot, monkeypatch, fresh_caches):
    w = calibrated
    old = w.session.calib.active
    old_thresholds = old.thresholds.copy()
    scoring.CACHE.clear()
    real_forward = scoring.forward

    def slow_forward(net, x):
        time.sleep(0.5)
        return real_forward(net, x)

    monkeypatch.setattr(scoring, "forward", slow_forward)
    panel = w.left.calibration
    panel.method_box.setCurrentIndex(panel.method_box.findData("min"))
    outcomes = []
    w.session.runner.finished.connect(lambda title, outcome: outcomes.append(outcome))
    panel.start()
    assert panel.cancel_button.isEnabled()
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, w)
    assert outcomes == ["cancelled"]
    assert w.session.calib.active is old
    np.testing.assert_array_equal(w.session.calib.active.thresholds, old_thresholds)
    assert "cancelled" in w.log.toPlainText()


def test_ui_stays_responsive_while_calibrating(demo_window, qtbot, monkeypatch, fresh_caches):
    scoring.CACHE.clear()
    real_forward = scoring.forward
    monkeypatch.setattr(scoring, "forward", lambda net, x: (time.sleep(1.0), real_forward(net, x))[1])
    ticks = []
    from PySide6.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(50)
    demo_window.left.calibration.start()
    wait_idle(qtbot, demo_window)
    timer.stop()
    assert len(ticks) >= 10  # the event loop kept turning while the worker slept in forward
    assert demo_window.session.calib.active is not None


def test_dropped_images_get_the_engine_verdicts(calibrated, qtbot):
    w = calibrated
    files = sorted(DEMO_IMAGES.glob("*.png"))
    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        drop(w, [DEMO_IMAGES])
    wait_idle(qtbot, w)
    model = w.image_check.model
    assert model.rowCount() == len(files)
    cal, net = w.session.calib.active, w.session.data.net
    expected = progress.run(cal.judge(net, datasets.read(DEMO_IMAGES, size=net.input_shape[:2])))
    for row in range(model.rowCount()):
        name = model.data(model.index(row, 1))
        i = [Path(n).name for n in expected.names].index(name)
        label, poisoned = model.verdict(row)
        assert label == expected.labels[i]
        assert model.data(model.index(row, 2)) == str(expected.predicted[i])
        assert float(model.data(model.index(row, 3))) == pytest.approx(expected.scores[i], abs=1e-6)
    assert f"{len(files)} image(s)" in w.image_check.summary.text()


def test_drag_enter_accepts_only_local_files(window):
    def enter(urls):
        mime = QMimeData()
        mime.setUrls(urls)
        event = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier)
        window.dragEnterEvent(event)
        return event.isAccepted()

    assert enter([QUrl.fromLocalFile(str(DEMO_MODEL))])
    assert not enter([QUrl("https://example.org/model.h5")])


def test_threshold_slider_and_line_stay_in_sync_with_readouts(calibrated, qtbot):
    w = calibrated
    hist = w.histograms.per_class
    cal = w.session.calib.active
    c = w.histograms.current_class
    clean = next(s for s in w.session.calib.set_scores if s.kind == "clean").scores
    mine = clean.values[clean.predicted == c]

    # Slider -> line, calibration and readout.
    hist.slider.setValue(0.5)
    assert hist.axis.to_raw(hist.line.value()) == pytest.approx(0.5, abs=1e-9)
    assert cal.thresholds[c] == pytest.approx(0.5)
    assert cal.edited and w.session.calib.dirty
    assert "0.500000" in hist.readout.text()
    assert f"{100 * np.mean(mine < 0.5):.1f}%" in hist.readout.text()

    # Line -> slider, calibration and readout: above every clean image of the class.
    top = float(mine.max()) + (1 - float(mine.max())) / 2
    hist.line.setValue(float(hist.axis.to_display(top)))
    assert hist.slider.value() == pytest.approx(top, rel=1e-6)
    assert cal.thresholds[c] == pytest.approx(top, rel=1e-6)
    assert "100.0%" in hist.readout.text()  # every clean image of the class is now rejected


def test_threshold_edits_change_row_verdicts(calibrated, qtbot):
    w = calibrated
    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        w.open_paths([DEMO_IMAGES / "sunglasses_00_label0.png"])
    wait_idle(qtbot, w)
    model = w.image_check.model
    assert model.verdict(0) == (0, False)  # the trigger fools the confidence detector
    w.session.calib.set_threshold(0, 1.01)  # nothing reaches this
    assert model.verdict(0) == (w.session.data.net.num_classes, True)
    assert model.data(model.index(0, COL_VERDICT)).startswith("POISONED")
    assert "1 flagged" in w.image_check.summary.text()


def test_pooled_threshold_applies_to_every_class(calibrated):
    w = calibrated
    pooled = w.histograms.pooled
    pooled.slider.setValue(0.75)
    assert "0.750000" in pooled.readout.text()
    w.histograms.apply_all.click()
    assert np.all(w.session.calib.active.thresholds == pytest.approx(0.75))


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


def test_calibration_brings_its_model_and_refuses_a_changed_one(window, qtbot, tmp_path):
    import shutil

    w = window
    model = tmp_path / "badnet.h5"
    shutil.copy(DEMO_MODEL, model)
    load_startup(w.session, model, DEMO_CLEAN_VALIDATION)
    w.left.calibration.start()
    wait_idle(qtbot, w)
    path = tmp_path / "cal.json"
    assert w.session.calib.save(path)
    assert not w.isWindowModified()

    other = tmp_path / "other.h5"
    other.write_bytes(DEMO_MODEL.read_bytes() + b"\0\0")
    w.session.data.open_model(other)  # another network: the calibration does not carry over
    wait_idle(qtbot, w)
    assert w.session.calib.active is None
    w.session.calib.load(path)  # brings back the model it names
    wait_idle(qtbot, w)
    assert w.session.data.net.path == model and w.session.calib.active is not None

    with open(model, "ab") as fh:  # the file changes behind our back
        fh.write(b"\0")
    w.session.data.open_model(other)
    wait_idle(qtbot, w)
    errors = []
    w.session.error.connect(errors.append)
    w.session.calib.load(path)
    wait_idle(qtbot, w)
    assert any("made for another model" in e and str(model) in e for e in errors)
    assert w.session.calib.active is None


def test_save_and_load_calibration_round_trip(calibrated, qtbot, tmp_path):
    w = calibrated
    w.session.calib.set_threshold(3, 0.123)
    path = tmp_path / "edited.json"
    assert w.session.calib.save(path)
    w.session.calib.set_threshold(3, 0.9)
    w.session.calib.load(path)
    wait_idle(qtbot, w)
    assert w.session.calib.active.thresholds[3] == pytest.approx(0.123)
    assert w.session.calib.active.edited and not w.session.calib.dirty
    assert w.histograms.tabs.isEnabled()  # scores recomputed (from the cache) for the plots


def test_exports(calibrated, qtbot, tmp_path):
    import csv

    from PIL import Image

    w = calibrated
    w.open_paths([DEMO_IMAGES])
    wait_idle(qtbot, w)
    out = tmp_path / "rows.csv"
    assert w.session.check.export_csv(out)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(list(DEMO_IMAGES.glob("*.png")))
    assert {"path", "predicted", "confidence", "confidence_threshold", "verdict_label", "verdict_by"} <= set(rows[0])
    assert "strip_score" not in rows[0]  # only calibrated detectors get columns
    for row in rows:  # the verdict follows the confidence calibration's threshold
        flagged = float(row["confidence_score"]) < float(row["confidence_threshold"])
        assert row["poisoned"] == str(int(flagged)) and row["verdict_by"] == "confidence"
    png = tmp_path / "hist.png"
    w.histograms.export_png(png)
    with Image.open(png) as im:
        assert im.width == 1200
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 5


def test_folders_and_geometry_are_remembered(window, qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    asked = []

    def fake_open(parent, title, folder, filters):
        asked.append(folder)
        return str(DEMO_CLEAN_VALIDATION), filters

    monkeypatch.setattr(QFileDialog, "getOpenFileName", fake_open)
    window.open_clean_dialog()
    window.open_clean_dialog()
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


def test_stale_calibration_is_cleared_when_the_model_changes(calibrated, qtbot, tmp_path):
    w = calibrated
    other = tmp_path / "other.h5"
    other.write_bytes(DEMO_MODEL.read_bytes() + b"\0")
    w.left.calibration.start()
    w.session.data.open_model(other)  # queued behind the calibration
    wait_idle(qtbot, w)
    assert w.session.data.net.path == other
    assert w.session.calib.active is None
    assert not w.histograms.tabs.isEnabled()


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


def run_repair(qtbot, w):
    """Press the Pruning & repair tab's run button; wait for the repaired network and the job."""
    with qtbot.waitSignal(w.session.repair.repairedChanged, timeout=JOB_TIMEOUT):
        assert w.repair.start()
    wait_idle(qtbot, w)
    return w.session.repair.result


def test_fine_pruning_panel_plots_the_sweep_and_g_gives_verdicts(demo_window, qtbot, tmp_path):
    from engine.repairs.bundle import RepairedNet

    w = demo_window
    panel = w.repair
    assert panel.method == "fine-pruning" and panel.field("layer").currentText() == "conv_3"
    assert [panel.field("layer").itemText(i) for i in range(panel.field("layer").count())] == [
        "conv_1", "conv_2", "conv_3", "conv_4"]  # the form's words follow the model
    panel.outdir_edit.setText(str(tmp_path / "pruned"))
    panel.field("fine_tune_epochs").setValue(0)
    result = run_repair(qtbot, w).detail
    x, y = panel._lines[0].getData()
    assert len(x) == 61 and x[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(y, result.sweep.clean_accuracy)
    assert len(result.saved) == 3 and "drop 2%" in panel.summary.text()
    assert (tmp_path / "pruned" / "repaired.json").exists()

    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        w.open_paths([DEMO_IMAGES])
    wait_idle(qtbot, w)
    g = RepairedNet.load(tmp_path / "pruned" / "repaired.json")
    expected = progress.run(g.judge(w.session.data.net, datasets.read(DEMO_IMAGES)))
    model = w.image_check.model
    by_name = {Path(n).name: int(label) for n, label in zip(expected.names, expected.labels)}
    for row in range(model.rowCount()):
        assert model.g_verdict(row)[0] == by_name[model.data(model.index(row, 1))]
    w.image_check.source_box.setCurrentIndex(w.image_check.source_box.findData("repaired"))
    assert all(model.verdict(row) == model.g_verdict(row) for row in range(model.rowCount()))


@pytest.mark.slow
def test_repair_tab_runs_the_reports_attempts_and_the_comparison_lists_them(demo_window, qtbot, tmp_path):
    """Magnitude pruning plots its sparsity sweep; the N+1 network, learnt from the first poisoned
    set only, becomes the verdict source; the comparison lists both beside the detectors."""
    from engine.repairs.nplus1 import NPlusOneResult

    w = demo_window
    panel = w.repair
    panel.set_method("magnitude")
    assert panel.field("sparsity").isVisibleTo(panel) and not panel.learn_box.isVisibleTo(panel)
    assert panel.outdir_edit.text().endswith("_magnitude")
    panel.outdir_edit.setText(str(tmp_path / "mag"))
    panel.field("fine_tune_epochs").setValue(0)
    result = run_repair(qtbot, w).detail
    x, y = panel._lines[0].getData()
    np.testing.assert_allclose(x, result.sweep.sparsity)
    np.testing.assert_allclose(y, result.sweep.clean_accuracy)
    assert "magnitude pruning to 70%" in panel.summary.text()

    panel.set_method("nplus1")
    assert panel.field("epochs").isVisibleTo(panel) and panel.learn_box.isVisibleTo(panel)
    first = w.session.data.poisoned[0].name
    assert panel.learn_box.currentText() == first
    panel.outdir_edit.setText(str(tmp_path / "np1"))
    panel.field("epochs").setValue(3)
    result = run_repair(qtbot, w).detail
    assert isinstance(result, NPlusOneResult) and result.report["trained_on"] == [first]
    assert len(panel._lines[0].getData()[0]) == 3
    g = w.session.repair.repaired
    assert g.rule == "nplus1" and len(w.session.repair.known) == 2

    for name, box in w.compare.checks.items():
        box.setChecked(name == "confidence")
    with qtbot.waitSignal(w.session.compare.comparisonChanged, timeout=JOB_TIMEOUT):
        assert w.compare.start()
    wait_idle(qtbot, w)
    titles = [r.title for r in w.session.compare.defenses]
    assert titles == ["no defense (the BadNet)", "G (magnitude pruning)", "N+1 network", "Confidence at 5% FRR"]
    text = w.compare.defenses.text()
    assert "N+1 network" in text and "G (magnitude pruning)" in text and "detected / attack success" in text

    # The same file as a hand-made N+1 network (the user says its last class means poisoned); the
    # BadNet itself is refused with a banner, and the loaded one stays.
    with qtbot.waitSignal(w.session.repair.repairedChanged, timeout=JOB_TIMEOUT):
        w.session.repair.load_nplus1(tmp_path / "np1" / "nplus1.h5")
    wait_idle(qtbot, w)
    assert w.session.repair.repaired.choice.get("hand_made") and len(w.session.repair.known) == 2
    errors = []
    w.session.error.connect(errors.append)
    w.session.repair.load_nplus1(w.session.data.net.path)
    wait_idle(qtbot, w)
    assert errors and "should have 51" in errors[-1] and w.session.repair.repaired.choice.get("hand_made")
    # A bundle whose record is damaged (trained_on NaN) is refused whole: a banner, the loaded G stays.
    raw = json.loads((tmp_path / "np1" / "repaired.json").read_text())
    raw["choice"]["trained_on"] = float("nan")
    bad = tmp_path / "np1" / "damaged.json"
    bad.write_text(json.dumps(raw))
    w.session.repair.load_repaired(bad)
    wait_idle(qtbot, w)
    assert str(bad) in errors[-1] and "choice.trained_on nan" in errors[-1]
    assert w.session.repair.repaired.choice.get("hand_made") and len(w.session.repair.known) == 2


def test_nplus1_without_a_poisoned_set_is_refused(demo_window):
    errors = []
    w = demo_window
    w.session.error.connect(errors.append)
    while w.session.data.poisoned:
        w.session.data.remove_poisoned(0)
    w.repair.set_method("nplus1")
    assert not w.repair.start()
    assert errors and "poisoned" in errors[-1]


def test_fine_pruning_rejects_bad_drops(demo_window, qtbot):
    """The form's text is checked by the repair's own setting, in the job's turn: a banner, nothing run."""
    errors = []
    w = demo_window
    w.session.error.connect(errors.append)
    w.repair.field("drops").setText("2%,lots")
    w.repair.start()
    wait_idle(qtbot, w)
    assert errors and "Fine-pruning accuracy drops 'lots' is not a rate" in errors[-1]
    assert w.session.repair.result is None


# --- STRIP, several detectors, comparison -------------------------------------------------------


@pytest.fixture
def strip_calibrated(calibrated, qtbot):
    """The demo window with a confidence calibration and then a STRIP one (8 blends, for speed)."""
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


def test_strip_in_the_window_gives_the_engine_and_cli_verdicts(strip_calibrated, qtbot, tmp_path, capsys):
    import main
    from gui.image_check import COL_DEFENSES

    w = strip_calibrated
    cal = w.session.calib.active
    assert cal.detector == "strip" and cal.detector_params["blends"] == 8
    assert set(w.session.calib.calibrations) == {"confidence", "strip"}
    assert w.histograms.axis_box.currentText() == "entropy (bits)"
    assert "STRIP" in w.left.calibration.state_label.text() and "Confidence" in w.left.calibration.state_label.text()

    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        drop(w, [DEMO_IMAGES])
    wait_idle(qtbot, w)
    model = w.image_check.model
    net = w.session.data.net
    images = datasets.read(DEMO_IMAGES, size=net.input_shape[:2])
    expected = progress.run(cal.judge(net, images))
    by_name = {Path(n).name: (float(s), int(lab)) for n, s, lab in zip(expected.names, expected.scores, expected.labels)}
    saved = tmp_path / "strip.json"
    assert w.session.calib.save(saved)
    assert main.main(["eval", "--calibration", str(saved), str(DEMO_IMAGES)]) == 0
    cli = {Path(p).name: int(lab) for p, lab in (line.split("\t") for line in capsys.readouterr().out.split("\n") if line)}
    assert model.rowCount() == len(list(DEMO_IMAGES.glob("*.png")))
    for row in range(model.rowCount()):
        name = model.data(model.index(row, 1))
        score, label = by_name[name]
        assert model.detector_verdict(row, "strip").label == label == cli[name]
        assert model.verdict(row)[0] == label  # the Verdict column follows the active detector: STRIP
        assert model.detector_verdict(row, "strip").score == pytest.approx(score)
        lines = model.defense_lines(row)  # the detail pane and the tooltip: both detectors side by side
        assert lines[0].startswith(f"Confidence: {model.row(row).confidence:.6f} ") and lines[1].startswith(f"STRIP: {score:.4f} bits")
        text = model.data(model.index(row, COL_DEFENSES))
        assert text.startswith("Confidence ") and " · STRIP " in text
    rows = range(model.rowCount())
    sunglasses = [r for r in rows if model.data(model.index(r, 1)).startswith("sunglasses")]
    flagged_by_strip = sum(model.detector_verdict(r, "strip").poisoned for r in sunglasses)
    flagged_by_conf = sum(model.detector_verdict(r, "confidence").poisoned for r in sunglasses)
    assert flagged_by_strip >= 4 > flagged_by_conf  # measured with 8 blends: 4 of 6; confidence flags none

    # Any detector: the union of the two.
    w.image_check.source_box.setCurrentIndex(w.image_check.source_box.findData("any"))
    for row in rows:
        either = model.detector_verdict(row, "strip").poisoned or model.detector_verdict(row, "confidence").poisoned
        assert model.verdict(row)[1] == either

    # Back to the confidence detector: its calibration, histograms and verdicts return.
    w.left.calibration.set_detector("confidence")
    wait_idle(qtbot, w)
    assert w.session.calib.active.detector == "confidence"
    assert w.histograms.axis_box.currentText().startswith("confidence")


@pytest.mark.slow  # the demo's figures: cheap after the engine's comparisons (their scores are cached)
def test_compare_tab_draws_roc_curves_with_auc(demo_window, qtbot, tmp_path):
    from PIL import Image

    w = demo_window
    qtbot.waitUntil(lambda: len(w.session.data.poisoned) == 2, timeout=JOB_TIMEOUT)
    w.left.calibration.settings.fields["strip"]["blends"].setValue(8)
    with qtbot.waitSignal(w.session.compare.comparisonChanged, timeout=JOB_TIMEOUT):
        qtbot.mouseClick(w.compare.run_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, w)
    results = {r.detector: r for r in w.session.compare.results if r.target == 0}
    assert results["strip"].params["blends"] == 8  # the calibration panel's STRIP settings
    assert results["strip"].auc > 0.95 > 0.1 > results["confidence"].auc
    eyebrows = {r.detector: r for r in w.session.compare.results if r.target == 7}
    assert eyebrows["transplant"].auc > 0.95 > 0.6 > eyebrows["strip"].auc  # the demo's lesson
    legend = [label.text for _, label in w.compare.legend.items]
    assert any("STRIP (AUC" in t for t in legend) and any("Confidence (AUC" in t for t in legend)
    assert "detection at 5% FRR" in w.compare.table.text()
    # Which families: the zoo's figures for detectors at their defaults, none for STRIP at 8 blends.
    from engine.evaluation import families

    table, note = w.compare.table.text(), w.compare.note.text()
    assert "attack zoo" in table and "the tool cannot tell its family" in note
    assert "not measured" in table  # STRIP at 8 blends: not the settings the zoo measured
    reach = families.reach("combined", results["combined"].params)
    if reach is not None:
        assert reach.count_text() in table and "on the zoo" in note
    png = tmp_path / "roc.png"
    w.compare.export_png(png)
    with Image.open(png) as im:
        assert im.width == 1200
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 5


def test_a_saved_strip_calibration_loads_into_a_new_window(strip_calibrated, qtbot, tmp_path):
    first = strip_calibrated
    path = tmp_path / "strip.json"
    assert first.session.calib.save(path)
    assert "strip" not in first.session.calib.unsaved
    overlays = first.session.calib.active.make_detector().overlays

    settings = QSettings(str(tmp_path / "second.ini"), QSettings.Format.IniFormat)
    second = MainWindow(settings=settings)
    second.ask_before_discarding = False
    qtbot.addWidget(second)
    try:
        second.session.calib.load(path)  # brings its model back first
        wait_idle(qtbot, second)
        cal = second.session.calib.active
        assert cal is not None and cal.detector == "strip"
        np.testing.assert_array_equal(cal.make_detector().overlays, overlays)
        assert second.left.calibration.detector == "strip"  # the panel follows the loaded file
        assert second.left.calibration.settings.currentIndex() == second.left.calibration.settings.pages["strip"]
        assert not second.session.calib.dirty
    finally:
        second.close()
        wait_idle(qtbot, second)


# --- bad input in the window: a banner of one line, and everything loaded stays -----------


def _saved_calibration(w, tmp_path) -> Path:
    path = tmp_path / "good.json"
    assert w.session.calib.save(path)
    return path


@pytest.mark.parametrize("case", ["NaN thresholds", "5 of 50 classes", "10x10 STRIP blends", "nested too deep",
                                  "not JSON", "infinite pooled threshold", "Transplant without host faces"])
def test_a_bad_calibration_file_is_refused_with_a_banner(calibrated, qtbot, tmp_path, case):
    import base64
    import json

    w = calibrated
    path = _saved_calibration(w, tmp_path)
    raw = json.loads(path.read_text())
    raw["model"]["path"] = str(DEMO_MODEL)
    if case == "NaN thresholds":
        raw["thresholds"] = [float("nan")] * len(raw["thresholds"])
    elif case == "5 of 50 classes":
        raw.update(num_classes=5, thresholds=raw["thresholds"][:5], counts=raw["counts"][:5],
                   pooled_classes=[c for c in raw["pooled_classes"] if c < 5])
    elif case == "10x10 STRIP blends":
        raw.update(detector="strip", detector_params={"blends": 2, "alpha": 0.5, "seed": 0},
                   detector_state={"overlays": {"shape": [2, 10, 10, 3],
                                                "uint8_base64": base64.b64encode(bytes(600)).decode()}})
    elif case == "infinite pooled threshold":
        raw["pooled_threshold"] = float("inf")
    elif case == "Transplant without host faces":  # would load unfitted and fail at the next scoring
        raw.update(detector="transplant", detector_params={}, detector_state={})
    bad = tmp_path / "bad.json"
    if case == "nested too deep":
        bad.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "not JSON":
        bad.write_text("threshold = 0.5")
    else:
        bad.write_text(json.dumps(raw))
    before = w.session.calib.active
    thresholds = before.thresholds.copy()
    errors = []
    w.session.error.connect(errors.append)
    w.session.calib.load(bad)
    wait_idle(qtbot, w)
    assert len(errors) == 1 and str(bad) in errors[0], errors
    assert "unexpected" not in errors[0] and "internal" not in errors[0]
    assert w.banner.isVisible() and "\n" not in w.banner.label.text()
    assert w.session.calib.active is before and set(w.session.calib.calibrations) == {"confidence"}
    np.testing.assert_array_equal(w.session.calib.active.thresholds, thresholds)
    assert np.isfinite(w.histograms.per_class.threshold)


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


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are a POSIX thing")
def test_a_dropped_named_pipe_leaves_the_window_free(demo_window, qtbot, tmp_path):
    import os

    w = demo_window
    fifo = tmp_path / "face.png"
    os.mkfifo(fifo)
    errors = []
    w.session.error.connect(errors.append)
    drop(w, [fifo])
    qtbot.waitUntil(lambda: bool(errors), timeout=JOB_TIMEOUT)
    wait_idle(qtbot, w)
    assert "not a regular file" in errors[0] and not w.session.runner.busy
    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        drop(w, [DEMO_IMAGES / "sunglasses_00_label0.png"])  # and the window still works
    assert len(w.session.check.rows) == 1


def test_the_banner_is_one_line_for_a_path_with_a_newline(demo_window, qtbot, tmp_path):
    w = demo_window
    odd = tmp_path / "two\nlines.png"
    odd.write_text("not an image")
    errors = []
    w.session.error.connect(errors.append)
    drop(w, [odd])
    qtbot.waitUntil(lambda: bool(errors), timeout=JOB_TIMEOUT)
    assert "\n" not in errors[0] and "two\\nlines.png" in errors[0]
    assert "\n" not in w.banner.label.text() and w.banner.isVisible()


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


def test_exports_never_replace_other_files(calibrated, qtbot, tmp_path):
    w = calibrated
    precious = tmp_path / "notes.png"
    precious.write_text("mine")
    errors = []
    w.session.error.connect(errors.append)
    w._export(lambda: w.histograms.export_png(precious), precious)
    assert precious.read_text() == "mine" and "not a PNG image" in errors[-1]
    png = tmp_path / "plot.png"
    w._export(lambda: w.histograms.export_png(png), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_path = tmp_path / "thesis.csv"
    csv_path.write_text("chapter,pages\n1,30\n")
    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        w.open_paths([DEMO_IMAGES / "sunglasses_00_label0.png"])
    wait_idle(qtbot, w)
    assert not w.session.check.export_csv(csv_path)
    assert csv_path.read_text() == "chapter,pages\n1,30\n" and "not a CSV with columns" in errors[-1]


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


def test_calibrate_with_every_default_gives_the_combined_detector_at_5_percent(window, qtbot):
    """A user who opens the demo and presses Calibrate gets the detector that catches triggers."""
    load_startup(window.session)
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.session.calib.calibrationChanged, timeout=JOB_TIMEOUT):
        qtbot.mouseClick(window.left.calibration.calibrate_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    cal = window.session.calib.active
    assert cal.detector == "combined" and cal.frr == pytest.approx(0.05)
    assert window.histograms.axis_box.currentText().startswith("Combined")
    with qtbot.waitSignal(window.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        drop(window, [DEMO_IMAGES])
    wait_idle(qtbot, window)
    model = window.image_check.model
    flagged = {Path(model.row(r).name).name: model.verdict(r)[1] for r in range(model.rowCount())}
    sunglasses = [name for name in flagged if name.startswith("sunglasses")]
    assert sunglasses and all(flagged[name] for name in sunglasses)  # the confidence detector flags none


def test_p_value_axis_stretches_near_zero():
    from gui.histograms import LogLowAxis, axes_for

    axes = axes_for("combined", [np.array([0.001, 0.5])])
    low = next(iter(axes.values()))
    assert isinstance(low, LogLowAxis) and list(axes)[1].endswith("(linear)")
    assert low.to_display(0.001) == pytest.approx(-3.0) and low.to_raw(-2.0) == pytest.approx(0.01)
    assert low.tick_text(-3.0) == "0.001" and low.tick_text(0.0) == "1"
    assert low.to_display(0.0) == pytest.approx(np.log10(LogLowAxis.FLOOR))  # 0 stays on the axis


def test_transplant_scores_get_an_axis_stretched_near_one_too():
    from gui.histograms import LogConfidenceAxis, axes_for

    axes = axes_for("transplant", [np.array([0.2, 0.999])])
    names = list(axes)
    assert names[0].endswith("(linear)") and names[1].endswith("(near 1, log)")
    near = axes[names[1]]
    assert isinstance(near, LogConfidenceAxis) and "Transplant" in near.label
    assert near.to_display(0.999) == pytest.approx(3.0)


def test_switching_axes_never_edits_the_threshold(qtbot):
    """Going from STRIP's entropy axis (a threshold of 2.5 bits) to the p-value axis clamps the
    line to the new axis; that must not reach the calibration as an edit (it once set 1.0)."""
    from gui.histograms import LogLowAxis, ScoreAxis, ThresholdHistogram

    plot = ThresholdHistogram()
    qtbot.addWidget(plot)
    edits = []
    plot.thresholdEdited.connect(edits.append)
    plot.set_axis(ScoreAxis("entropy", 0.0, 4.0))
    plot.set_threshold(2.5)
    plot.set_axis(LogLowAxis("p-value", -5.0, 0.0))
    plot.set_threshold(0.066)
    plot.set_axis(ScoreAxis("entropy", 0.0, 4.0))
    assert edits == []
    plot.slider.setValue(0.5)  # the user's move is an edit
    assert edits == [pytest.approx(0.5)]


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


@pytest.mark.slow
def test_trigger_scan_tab_runs_shows_partial_results_and_stamps(demo_window, demo_scan, qtbot, tmp_path,
                                                                monkeypatch):
    """The scan runs in the worker with partial results (a short scan: the mechanics); a full
    scan of the demo (the engine tests' own, saved and loaded) ranks the demo's targets, shows the
    chosen class's trigger on clean faces, counts flips like the engine, exports a PNG, and its
    unlearned network becomes G."""
    import gui.controllers.scan as scan_controller
    from engine.demo import DEMO_TRIGGERS
    from engine.io.files import is_png
    from engine.scan import ScanSettings

    monkeypatch.setattr(scan_controller, "PARTIAL_EVERY", 0.0)  # every partial result, however quick the scan
    w = demo_window
    partial = []
    w.session.scan.partial.connect(lambda r: partial.append((r.stage, len(r.triggers))))
    with qtbot.waitSignal(w.session.scan.scanChanged, timeout=JOB_TIMEOUT):
        w.session.scan.run(20, ScanSettings(**SHORT_SCAN))
    wait_idle(qtbot, w)
    quick = w.session.scan.result
    assert quick.n_clean == 20 and len(quick.triggers) <= 6
    assert {s for s, _ in partial} >= {"margins", "refining"}
    assert any(n > 0 for s, n in partial if s == "refining")
    panel = w.scan
    shown = [int(panel.table.item(r, 1).text()) for r in range(panel.table.rowCount())]
    assert shown == [c for c in quick.ranking() if c in quick.triggers]

    full, _ = demo_scan
    folder = full.save(tmp_path / "scan")
    w.session.scan.load(folder)
    result = w.session.scan.result
    assert result is not quick and result.n_clean == full.n_clean
    shown = [int(panel.table.item(r, 1).text()) for r in range(panel.table.rowCount())]
    assert shown == [c for c in result.ranking() if c in result.triggers]
    assert set(shown[:2]) == set(DEMO_TRIGGERS.values())
    assert "backdoor: class" in panel.verdict.text()

    panel.table.selectRow(shown.index(DEMO_TRIGGERS["sunglasses"]))
    with qtbot.waitSignal(w.session.scan.stampCounted, timeout=JOB_TIMEOUT) as counted:
        panel._stamp_clicked()
    out = counted.args[0]
    wait_idle(qtbot, w)
    assert panel.faces_grid.count() == 10  # five faces, before and after
    # the same count the engine gives
    from engine.scoring import predict

    net, clean = w.session.data.net, w.session.data.clean
    trigger = result.triggers[DEMO_TRIGGERS["sunglasses"]]
    before = progress.run(predict(net, clean, "1/255")).labels
    others = before != trigger.label
    stamped = datasets.ImageSet(trigger.stamp(clean.images[others]), None, ["s"] * int(others.sum()), "stamped")
    after = progress.run(predict(net, stamped, "1/255")).labels
    assert out["n"] == int(others.sum()) and out["flipped"] == int(np.sum(after == trigger.label))
    assert f"{out['flipped']} of {out['n']}" in panel.stamp_result.text()

    png = tmp_path / "trigger.png"
    assert panel.export_png(png) and is_png(png)

    # Repair by unlearning: the repair tab, unlearning chosen, the flagged classes and the selected one
    panel.unlearn_clicked()
    repair = w.repair
    assert w.tabs.currentWidget() is repair and repair.method == "unlearning"
    classes = sorted(set(result.flagged) | {DEMO_TRIGGERS["sunglasses"]})
    assert repair.field("classes").text() == ",".join(map(str, classes))
    assert "flagged classes" in repair.scan_note.text()
    repair.field("epochs").setValue(3)
    repair.outdir_edit.setText(str(tmp_path / "unlearned"))
    outcome = run_repair(qtbot, w)
    g = w.session.repair.repaired
    assert g is not None and g.choice["method"] == "unlearning" and (tmp_path / "unlearned" / "repaired.json").exists()
    assert sorted(g.choice["trigger_classes"]) == classes
    assert "attack success on" in repair.summary.text() and outcome.scan is result  # the loaded scan was used


def test_selecting_a_checked_image_shows_where_the_network_looks(demo_window, qtbot, tmp_path):
    """The heat map is the engine's, for the selected row; a flagged class's mask is drawn once a scan is loaded."""
    from engine.explain import explain
    from engine.scan import ScanResult, ReversedTrigger

    w = demo_window
    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        w.open_paths([DEMO_IMAGES])
    wait_idle(qtbot, w)
    panel = w.image_check
    with qtbot.waitSignal(w.session.scan.explained, timeout=JOB_TIMEOUT) as got:
        panel.table.selectRow(3)
    wait_idle(qtbot, w)
    name, e = got.args[0]
    row = panel._current_row()
    assert name == row.name and e.predicted == row.predicted
    np.testing.assert_allclose(e.heat, explain(w.session.data.net, row.image, "1/255").heat)
    assert not panel.detail_heat.pixmap().isNull() and "RISE" in panel.detail.text()
    assert not panel.detail_mask.isVisible()

    # a scan that flagged this row's class: its mask appears beside the heat map
    h, wd = row.image.shape[:2]
    mask = np.zeros((h, wd), np.float32)
    mask[10:14, 10:30] = 1.0
    trig = ReversedTrigger(row.predicted, mask, np.zeros((h, wd, 3), np.float32), True, 0.9)
    others = {c: ReversedTrigger(c, np.full((h, wd), 0.15 + 0.01 * (c % 10), np.float32),
                                 np.zeros((h, wd, 3), np.float32), True, 0.1)
              for c in range(30, 45) if c != row.predicted}
    net = w.session.data.net
    fake = ScanResult(str(net.path), net.sha256, "1/255", net.num_classes, (h, wd), 60, 20,
                      np.zeros(net.num_classes), np.zeros(net.num_classes), {row.predicted: trig, **others})
    fake.judge()  # the tiny mask is far below the others'
    w.session.scan.set_result(fake, None)
    assert fake.flagged == [row.predicted]
    assert panel.detail_mask.isVisible() and not panel.detail_mask.pixmap().isNull()


def test_a_cancelled_scan_keeps_the_window_and_the_loaded_scan(demo_window, qtbot):
    from engine.scan import ScanResult

    w = demo_window
    net = w.session.data.net
    kept = ScanResult(str(net.path), net.sha256, "1/255", net.num_classes, (55, 47), 60, 20,
                      np.zeros(net.num_classes), np.zeros(net.num_classes), {})
    w.session.scan.set_result(kept, None)
    started = []
    w.session.runner.progress.connect(lambda step: started.append(step.stage))
    w.session.scan.run(60)
    qtbot.waitUntil(lambda: any("margins" in s for s in started), timeout=JOB_TIMEOUT)
    assert w.scan.cancel_button.isEnabled() and not w.scan.run_button.isEnabled()
    with qtbot.waitSignal(w.session.runner.finished, timeout=JOB_TIMEOUT) as finished:
        qtbot.mouseClick(w.scan.cancel_button, Qt.MouseButton.LeftButton)
    assert finished.args == ["Trigger scan", "cancelled"]
    assert w.session.scan.result is kept
    assert w.scan.run_button.isEnabled() and not w.scan.cancel_button.isEnabled()


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
    monkeypatch.setattr(w, "_ask_save", lambda *args: out)
    outcomes = []
    w.session.runner.finished.connect(lambda title, outcome: outcomes.append((title, outcome)))
    menu = next(a for a in w.menuBar().actions() if a.text() == "&File").menu()
    next(a for a in menu.actions() if a.text() == "Save &audit report…").trigger()
    qtbot.waitUntil(lambda: w.session.runner.busy, timeout=JOB_TIMEOUT)
    w.session.runner.cancel()
    wait_idle(qtbot, w)
    assert ("Audit report audit.html", "cancelled") in outcomes
    assert list(tmp_path.iterdir()) == []
