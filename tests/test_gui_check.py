"""The window's image check: dropped images get the engine's verdicts, only local files are taken, and a selected image shows where the network looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent

from engine import progress
from engine.io import datasets
from engine.demo import DEMO_IMAGES, DEMO_MODEL
from tests.windows import JOB_TIMEOUT, drop, wait_idle

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
