"""The window's Calibrate side: calibrating in the worker (progress, cancel, a responsive UI), the histograms and their threshold, saving, loading and exporting calibrations, several detectors, the score axes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from PySide6.QtCore import QSettings, Qt

from engine import progress, scoring
from engine.io import datasets
from engine.demo import DEMO_CLEAN_VALIDATION, DEMO_IMAGES, DEMO_MODEL
from gui.app import load_startup
from gui.image_check import COL_VERDICT
from gui.main_window import MainWindow
from tests.windows import JOB_TIMEOUT, drop, wait_idle

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


def test_exports_never_replace_other_files(calibrated, qtbot, tmp_path):
    w = calibrated
    precious = tmp_path / "notes.png"
    precious.write_text("mine")
    errors = []
    w.session.error.connect(errors.append)
    w.files._export(lambda: w.histograms.export_png(precious), precious)
    assert precious.read_text() == "mine" and "not a PNG image" in errors[-1]
    png = tmp_path / "plot.png"
    w.files._export(lambda: w.histograms.export_png(png), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_path = tmp_path / "thesis.csv"
    csv_path.write_text("chapter,pages\n1,30\n")
    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        w.open_paths([DEMO_IMAGES / "sunglasses_00_label0.png"])
    wait_idle(qtbot, w)
    assert not w.session.check.export_csv(csv_path)
    assert csv_path.read_text() == "chapter,pages\n1,30\n" and "not a CSV with columns" in errors[-1]


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
    from gui.score_axes import LogLowAxis, axes_for

    axes = axes_for("combined", [np.array([0.001, 0.5])])
    low = next(iter(axes.values()))
    assert isinstance(low, LogLowAxis) and list(axes)[1].endswith("(linear)")
    assert low.to_display(0.001) == pytest.approx(-3.0) and low.to_raw(-2.0) == pytest.approx(0.01)
    assert low.tick_text(-3.0) == "0.001" and low.tick_text(0.0) == "1"
    assert low.to_display(0.0) == pytest.approx(np.log10(LogLowAxis.FLOOR))  # 0 stays on the axis


def test_transplant_scores_get_an_axis_stretched_near_one_too():
    from gui.score_axes import LogConfidenceAxis, axes_for

    axes = axes_for("transplant", [np.array([0.2, 0.999])])
    names = list(axes)
    assert names[0].endswith("(linear)") and names[1].endswith("(near 1, log)")
    near = axes[names[1]]
    assert isinstance(near, LogConfidenceAxis) and "Transplant" in near.label
    assert near.to_display(0.999) == pytest.approx(3.0)


def test_switching_axes_never_edits_the_threshold(qtbot):
    """Going from STRIP's entropy axis (a threshold of 2.5 bits) to the p-value axis clamps the
    line to the new axis; that must not reach the calibration as an edit (it once set 1.0)."""
    from gui.histograms import ThresholdHistogram
    from gui.score_axes import LogLowAxis, ScoreAxis

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
