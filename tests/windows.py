"""What the window's tests share: waiting for the worker, dropping files on the window, the job
threads alive. The window fixtures (window, demo_window, calibrated, strip_calibrated) are in
conftest.py."""

from __future__ import annotations

import threading

import pytestqt  # noqa: F401  (a test dependency: missing, every window test fails instead of skipping)

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from gui.jobs import THREAD_NAME

JOB_TIMEOUT = 120_000  # ms; the first job imports TensorFlow


def job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def wait_idle(qtbot, w) -> None:
    qtbot.waitUntil(lambda: not w.session.runner.busy, timeout=JOB_TIMEOUT)


def drop(w, paths) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    w.dropEvent(event)


def run_repair(qtbot, w):
    """Press the Pruning & repair tab's run button; wait for the repaired network and the job."""
    with qtbot.waitSignal(w.session.repair.repairedChanged, timeout=JOB_TIMEOUT):
        assert w.repair.start()
    wait_idle(qtbot, w)
    return w.session.repair.result
