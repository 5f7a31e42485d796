"""The main window: model and data on the left, image check and histograms in tabs, a log below."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QDockWidget,
)

from superqt import QElidingLabel

from engine.progress import Progress
from gui.histograms import HistogramPanel
from gui.image_check import ImageCheckPanel
from gui.jobs import import_tensorflow
from gui.panels import LeftColumn
from gui.compare_panel import ComparePanel
from gui.file_actions import FileActions
from gui.repair_panel import RepairPanel
from gui.scan_panel import ScanPanel
from gui.session import Session

APP_NAME = "BadNet Inspector"


def default_size(available: QSize | None) -> QSize:
    """1320x860, or the screen's available area when that is smaller (a 1280x800 laptop)."""
    wanted = QSize(1320, 860)
    return wanted if available is None or available.isEmpty() else wanted.boundedTo(available)


class ErrorBanner(QFrame):
    """The latest problem, in one line, until dismissed; the window stays usable."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setStyleSheet("ErrorBanner { background: #fde2e1; border: 1px solid #e0a09c; border-radius: 4px; }")
        self.label = QElidingLabel()
        self.label.setElideMode(Qt.TextElideMode.ElideMiddle)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self.hide()

    def show_message(self, text: str) -> None:
        """One line, whatever the text holds; the whole of it in the tooltip."""
        line = " ".join(str(text).split())
        self.label.setText(line)
        self.label.setToolTip(line)
        self.show()


class MainWindow(QMainWindow):
    def __init__(self, session: Session | None = None, settings: QSettings | None = None):
        import_tensorflow()  # here, not in the first job, where its import stalls the event loop
        super().__init__()
        self.session = session or Session(parent=self)
        self.settings = settings if settings is not None else QSettings(APP_NAME, APP_NAME)
        self.ask_before_discarding = True
        self.setAcceptDrops(True)
        self.setWindowTitle(f"{APP_NAME}[*]")

        self.left = LeftColumn(self.session)
        scroll = QScrollArea()
        scroll.setWidget(self.left)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(380)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        self.image_check = ImageCheckPanel(self.session)
        self.histograms = HistogramPanel(self.session)
        self.repair = RepairPanel(self.session)
        self.compare = ComparePanel(self.session, self.left.calibration.params)
        self.scan = ScanPanel(self.session, self.settings)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.image_check, "3. Image check")
        self.tabs.addTab(self.histograms, "4. Histograms")
        self.tabs.addTab(self.repair, "5. Pruning && repair")
        self.tabs.addTab(self.compare, "6. Compare detectors")
        self.tabs.addTab(self.scan, "7. Trigger scan")
        self.scan.repairRequested.connect(self._unlearn_requested)
        self.banner = ErrorBanner()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.banner)
        right_layout.addWidget(self.tabs, 1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(scroll)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([400, 880])
        self.setCentralWidget(self.splitter)

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        dock = QDockWidget("Log", self)
        dock.setObjectName("log")
        dock.setWidget(self.log)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        self.resizeDocks([dock], [72], Qt.Orientation.Vertical)  # three lines: the rest for the tabs at 1280x800

        self.status_label = QLabel("ready")
        self.status_progress = QProgressBar()
        self.status_progress.setMaximumWidth(180)
        self.status_progress.setVisible(False)
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.status_progress)

        self.files = FileActions(self)  # the File menu's dialogs
        self._build_menus()
        self._connect()
        self._restore_settings()

    # --- wiring ---------------------------------------------------------------------------

    def _unlearn_requested(self, classes: list[int]) -> None:
        """The scan tab's *Repair by unlearning…*: the repair tab, unlearning chosen, those classes filled in."""
        self.repair.set_method("unlearning")
        self.repair.field("classes").setText(",".join(map(str, classes)))
        self.tabs.setCurrentWidget(self.repair)

    def _build_menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        f = self.files

        def action(text, slot, shortcut=None):
            act = QAction(text, self)
            act.triggered.connect(slot)
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
            menu.addAction(act)
            return act

        action("Open &model…", f.open_model, "Ctrl+M")
        action("Open &clean data…", f.open_clean)
        action("Add &poisoned set…", f.add_poisoned)
        action("Open &images…", f.open_images, QKeySequence.StandardKey.Open)
        menu.addSeparator()
        action("&Load calibration…", f.load_calibration)
        action("&Save calibration…", f.save_calibration, QKeySequence.StandardKey.Save)
        menu.addSeparator()
        action("Export image results (CSV)…", f.export_csv)
        action("Export histogram (PNG)…", f.export_plot)
        action("Export ROC curves (PNG)…", f.export_roc)
        menu.addSeparator()
        action("Save &audit report…", f.save_report)
        menu.addSeparator()
        action("&Quit", self.close, QKeySequence.StandardKey.Quit)

        jobs = self.menuBar().addMenu("&Jobs")
        run = QAction("&Calibrate", self)
        run.setShortcut(QKeySequence("Ctrl+R"))
        run.triggered.connect(self.left.calibration.start_clicked)
        jobs.addAction(run)
        compare = QAction("C&ompare detectors", self)
        compare.triggered.connect(self.compare.start_clicked)
        jobs.addAction(compare)
        cancel = QAction("C&ancel", self)
        cancel.setShortcut(QKeySequence("Esc"))
        cancel.triggered.connect(self.session.runner.cancel)
        jobs.addAction(cancel)

    def _connect(self) -> None:
        s = self.session
        s.message.connect(self.append_log)
        s.error.connect(self.show_error)
        s.calib.dirtyChanged.connect(self.setWindowModified)
        s.data.modelChanged.connect(lambda net: self.setWindowTitle(f"{APP_NAME} — {net.path.name}[*]"))
        s.calib.calibrationChanged.connect(self._on_calibration)
        s.runner.started.connect(self._on_job_started)
        s.runner.progress.connect(self._on_job_progress)
        s.runner.finished.connect(self._on_job_finished)

        f = self.files
        model_panel = self.left.model_data
        model_panel.open_model_button.clicked.connect(f.open_model)
        model_panel.open_clean_button.clicked.connect(f.open_clean)
        model_panel.add_poisoned_button.clicked.connect(f.add_poisoned)
        cal_panel = self.left.calibration
        cal_panel.load_button.clicked.connect(f.load_calibration)
        cal_panel.save_button.clicked.connect(f.save_calibration)
        self.image_check.open_button.clicked.connect(f.open_images)
        self.image_check.export_button.clicked.connect(f.export_csv)

    # --- slots ----------------------------------------------------------------------------

    @Slot(str)
    def append_log(self, text: str) -> None:
        self.log.appendPlainText(text)

    @Slot(str)
    def show_error(self, text: str) -> None:
        self.banner.show_message(text)
        self.append_log(f"error: {text}")
        self.statusBar().showMessage(text, 10_000)

    @Slot(object)
    def _on_calibration(self, cal) -> None:
        if cal is not None and self.session.calib.set_scores is not None:
            self.banner.hide()

    @Slot(str)
    def _on_job_started(self, title: str) -> None:
        self.status_label.setText(f"{title}…")
        self.status_progress.setRange(0, 0)
        self.status_progress.setVisible(True)

    @Slot(object)
    def _on_job_progress(self, step: Progress) -> None:
        if step.total > 0:
            self.status_progress.setRange(0, step.total)
            self.status_progress.setValue(step.done)

    @Slot(str, str)
    def _on_job_finished(self, title: str, outcome: str) -> None:
        self.status_label.setText(f"{title}: {outcome}")
        if outcome == "cancelled":
            self.append_log(f"{title}: cancelled; nothing changed")
        if not self.session.runner.busy:
            self.status_progress.setVisible(False)

    # --- drag and drop --------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls()
        if urls and all(url.isLocalFile() for url in urls):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_paths(paths)

    def open_paths(self, paths: list[Path]) -> None:
        """What a drop does: models replace the model, everything else is checked."""
        self.tabs.setCurrentWidget(self.image_check)
        self.session.check.check_paths(paths)

    # --- settings and closing -------------------------------------------------------------

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(default_size(self.screen().availableGeometry().size() if self.screen() else None))
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)

    def closeEvent(self, event: QCloseEvent) -> None:
        cal = self.session.calib.active
        if self.ask_before_discarding and cal is not None and cal.edited and self.session.calib.dirty:
            answer = QMessageBox.question(
                self, APP_NAME, "Thresholds were edited and not saved. Save them before closing?",
                QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            )
            if answer == QMessageBox.StandardButton.Cancel:
                event.ignore()
                return
            if answer == QMessageBox.StandardButton.Save:
                self.files.save_calibration()
                if self.session.calib.dirty:
                    event.ignore()
                    return
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.sync()
        self.session.shutdown()
        event.accept()

    def after_jobs(self, callback) -> None:
        """Call ``callback`` once the job queue is empty (now, if it already is)."""
        runner = self.session.runner
        if not runner.busy:
            QTimer.singleShot(0, callback)
            return

        def once():
            runner.idle.disconnect(once)
            callback()

        runner.idle.connect(once)
