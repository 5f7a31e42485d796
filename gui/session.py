"""The window's state: small controllers composed around one job runner, and the two lines every
part of the window speaks to the user (a log message, a one-line error)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal, Slot

from engine.errors import InputError
from gui.controllers.calibration import CalibrationController
from gui.controllers.check import CheckController
from gui.controllers.compare import CompareController
from gui.controllers.data import DataController
from gui.controllers.repair import RepairController
from gui.controllers.scan import ScanController
from gui.controllers.report import ReportController
from gui.jobs import JobRunner


class Session(QObject):
    message = Signal(str)  # a line for the log
    error = Signal(str)  # a one-line problem for the user

    def __init__(self, runner: JobRunner | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner or JobRunner(self)
        self.runner.failed.connect(self._on_failed)
        self.data = DataController(self, self)
        self.calib = CalibrationController(self, self)
        self.check = CheckController(self, self)
        self.compare = CompareController(self, self)
        self.repair = RepairController(self, self)
        self.scan = ScanController(self, self)
        self.report = ReportController(self, self)

        self.data.modelChanged.connect(self._on_model)
        self.data.cleanChanged.connect(lambda _: self.calib.score_sets())
        self.data.poisonedChanged.connect(lambda _: self.calib.score_sets())
        self.calib.calibrationChanged.connect(self._on_calibration)
        self.repair.repairedChanged.connect(lambda _: self.check.rescore())

    def require(self, what: str, clean: str | None = None):
        """The data controller, once a model (and, when ``clean`` says how, clean data) is loaded;
        otherwise the one-line error every controller gives: "load a model before <what>"."""
        if self.data.net is None:
            raise InputError(None, f"load a model before {what}")
        if clean is not None and self.data.clean is None:
            raise InputError(None, f"load {clean} before {what}")
        return self.data

    @Slot(str, str)
    def _on_failed(self, title: str, message: str) -> None:
        self.error.emit(message)

    def _on_model(self, net) -> None:
        self.calib.model_changed(net)
        self.repair.model_changed(net)
        self.scan.model_changed(net)
        self.compare.clear()
        self.check.rescore()

    def _on_calibration(self, cal) -> None:
        if self.check.needs_rescore():
            self.check.rescore()

    def write_output(self, path, write) -> bool:
        """Run ``write()`` (a save or an export); a refused or failed write becomes the one-line error."""
        from engine.errors import InputError

        try:
            write()
        except InputError as err:
            self.error.emit(str(err))
            return False
        except OSError as err:
            self.error.emit(str(InputError(path, err.strerror or str(err))))
            return False
        return True

    def shutdown(self, msecs: int = 30_000) -> bool:
        return self.runner.shutdown(msecs)
