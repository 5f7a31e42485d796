"""The window's controllers on a session with a synchronous stand-in runner: no window, no thread.

Each job runs to its end inside ``submit``, so a controller's rules (what it requires, what it
announces, what it keeps when a job fails) are tested without widgets or waiting."""

from __future__ import annotations

import pytest

# PySide6 is a dependency: without it this module fails to import, and the run fails with it.
from PySide6.QtCore import QObject, Signal  # noqa: E402

from engine.demo import DEMO_CLEAN_VALIDATION, DEMO_MODEL, DEMO_POISONED  # noqa: E402
from engine.errors import InputError  # noqa: E402
from engine.progress import Progress  # noqa: E402


class _Done:
    """What ``submit`` returns once the job has already run: signals nobody will hear again."""

    class _Quiet:
        def connect(self, *_):
            pass

    yielded = started = finished = _Quiet()


class SyncRunner(QObject):
    """The JobRunner's interface, running every job at once on the calling thread."""

    started = Signal(str)
    progress = Signal(object)
    finished = Signal(str, str)
    failed = Signal(str, str)
    idle = Signal()

    def __init__(self):
        super().__init__()
        self.titles: list[tuple[str, str]] = []
        self.busy = False
        self.generation = 0
        self.current_title = None

    def new_generation(self) -> int:
        self.generation += 1
        return self.generation

    def submit(self, title, factory, on_result=None, on_error=None, on_started=None, on_finished=None):
        outcome = "done"
        try:
            generator = factory()
            if on_started is not None:
                on_started()
            self.started.emit(title)
            while True:
                step = next(generator)
                if isinstance(step, Progress):
                    self.progress.emit(step)
        except StopIteration as stop:
            if on_result is not None:
                on_result(stop.value)
        except InputError as err:
            outcome = "failed"
            if on_error is not None:
                on_error(str(err))
            self.failed.emit(title, str(err))
        if on_finished is not None:
            on_finished(outcome)
        self.titles.append((title, outcome))
        self.finished.emit(title, outcome)
        self.idle.emit()
        return _Done()

    def cancel(self):
        pass

    def cancel_all(self):
        pass

    def shutdown(self, msecs: int = 0) -> bool:
        return True


@pytest.fixture
def session(qapp):
    from gui.session import Session

    return Session(runner=SyncRunner())


def test_every_controller_asks_for_a_model_first_in_the_same_words(session):
    errors = []
    session.error.connect(errors.append)
    session.scan.run(60)
    session.repair.run("fine-pruning", {}, "unused")
    session.compare.run({"confidence": None})
    assert len(errors) == 3 and all(e.startswith("load a model before ") for e in errors), errors
    assert [outcome for _, outcome in session.runner.titles] == ["failed"] * 3


def test_loading_announces_its_end_and_a_failed_load_keeps_the_model(session, tmp_path):
    ended, models = [], []
    session.data.modelLoadEnded.connect(ended.append)
    session.data.modelChanged.connect(models.append)
    session.data.open_model(DEMO_MODEL)
    assert ended == ["done"] and models and session.data.net.num_classes == 50
    session.data.open_model(tmp_path / "missing.h5")
    assert ended == ["done", "failed"] and session.data.net is models[0]


def test_a_repair_runs_from_its_declared_settings_and_becomes_g(session, tmp_path):
    session.data.open_model(DEMO_MODEL)
    session.data.open_clean(DEMO_CLEAN_VALIDATION)
    session.data.add_poisoned(DEMO_POISONED, 0)
    outcomes = []
    session.repair.outcomeChanged.connect(outcomes.append)
    session.repair.run("magnitude", {"sparsity": 0.5}, tmp_path / "mag")
    (outcome,) = outcomes
    assert outcome.method == "magnitude" and outcome.plots and outcome.plots[0].x_range == (0, 1)
    assert session.repair.repaired is outcome.bundle and outcome.bundle.choice["sparsity"] == 0.5
    errors = []
    session.error.connect(errors.append)
    session.repair.run("magnitude", {"sparsity": 2}, tmp_path / "mag2")  # the setting's own check
    assert errors and "sparsity 2 must be in (0%, 100%)" in errors[-1] and not (tmp_path / "mag2").exists()
    assert session.repair.repaired is outcome.bundle  # what was made stays


def test_the_audit_report_uses_what_the_window_has_and_leaves_nothing_when_it_fails(session, small_demo, short_scan,
                                                                                   tmp_path, monkeypatch):
    from engine import report

    errors, saved = [], []
    session.error.connect(errors.append)
    session.report.saved.connect(saved.append)
    out = tmp_path / "audit.html"
    session.report.save(out)
    assert errors and errors[-1].startswith("load a model before writing an audit report") and not out.exists()
    session.data.open_model(DEMO_MODEL)
    session.data.open_clean(small_demo["clean"])
    session.data.add_poisoned(small_demo["poisoned"], 0)
    session.scan.result = short_scan  # as a finished scan in the window leaves it
    calibrations = []
    session.calib.calibrationChanged.connect(calibrations.append)
    session.report.save(out)
    assert saved == [str(out)] and report.is_report(out)
    text = out.read_text()
    assert "run in the window" in text and "sunglasses40.h5" in text and short_scan.summary() in text
    # The calibration the audit made, for want of one, is now the window's, with every set's scores.
    (cal,) = calibrations
    assert session.calib.active is cal and cal.detector == "combined" and session.calib.dirty
    assert [x.name for x in session.calib.set_scores] == ["clean", "sunglasses40.h5 -> 0"]
    assert session.scan.result is short_scan  # the window's own scan stays

    (tmp_path / "mine.html").write_text("mine")
    assert session.report.save(tmp_path / "mine.html") is False
    assert "not overwritten" in errors[-1] and (tmp_path / "mine.html").read_text() == "mine"

    def failing(*args, **kwargs):
        yield Progress(0, 1, "gathering")
        raise InputError(None, "the audit failed half-way")

    monkeypatch.setattr(report, "audit_job", failing)
    session.report.save(tmp_path / "failed.html")
    assert "the audit failed half-way" in errors[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html", "mine.html"]


def test_a_scan_the_audit_computed_becomes_the_windows(session, small_demo, short_scan, tmp_path, monkeypatch):
    """Without a scan in the window the audit scans; its result then shows in the Trigger scan
    tab rather than being thrown away (here the scan job hands back a prepared result, the rest
    of the audit runs for real)."""
    from engine import report, workflow

    session.data.open_model(DEMO_MODEL)
    session.data.open_clean(small_demo["clean"])
    scanned = []

    def scan_job(net, images, scaling, *args, **kwargs):
        scanned.append(len(images))
        yield Progress(0, 1, "scanning")
        return short_scan

    monkeypatch.setattr(workflow.requests, "scan_job", scan_job)  # what the audit's ScanRequest runs
    changed = []
    session.scan.scanChanged.connect(changed.append)
    out = tmp_path / "audit.html"
    session.report.save(out)
    assert scanned and report.is_report(out) and report.SCAN_COMPUTED in out.read_text()
    assert changed == [short_scan] and session.scan.result is short_scan and session.scan.folder is None


def test_an_adopted_calibration_is_scored_on_every_loaded_face(session, small_demo, short_scan, tmp_path,
                                                                monkeypatch):
    """The audit measures detection on a draw of each large set; the calibration it hands the
    window is scored again on the whole loaded sets, as the window's own would be."""
    from engine import report

    monkeypatch.setattr(report, "DETECTION_IMAGES", 25)
    session.data.open_model(DEMO_MODEL)
    session.data.open_clean(small_demo["clean"])
    session.data.add_poisoned(small_demo["poisoned"], 0)
    session.scan.result = short_scan
    session.report.save(tmp_path / "audit.html")
    assert "clean 25 of 40" in (tmp_path / "audit.html").read_text()
    assert session.calib.active is not None
    assert [len(x.scores.values) for x in session.calib.set_scores] == [40, 40]

