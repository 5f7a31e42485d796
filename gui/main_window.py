"""The main window: model and data on the left, image check and histograms in tabs, a log below."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
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
from gui.repair_panel import RepairPanel
from gui.scan_panel import ScanPanel
from gui.session import Session

APP_NAME = "BadNet Inspector"
MODEL_FILTER = "Keras models (*.h5 *.hdf5 *.keras);;All files (*)"
DATA_FILTER = "Image sets (*.h5 *.hdf5 *.npz);;All files (*)"
IMAGE_FILTER = "Images and sets (*.png *.jpg *.jpeg *.bmp *.h5 *.npz);;All files (*)"
CALIBRATION_FILTER = "Calibrations (*.json);;All files (*)"


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

        def action(text, slot, shortcut=None):
            act = QAction(text, self)
            act.triggered.connect(slot)
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
            menu.addAction(act)
            return act

        action("Open &model…", self.open_model_dialog, "Ctrl+M")
        action("Open &clean data…", self.open_clean_dialog)
        action("Add &poisoned set…", self.add_poisoned_dialog)
        action("Open &images…", self.open_images_dialog, QKeySequence.StandardKey.Open)
        menu.addSeparator()
        action("&Load calibration…", self.load_calibration_dialog)
        action("&Save calibration…", self.save_calibration_dialog, QKeySequence.StandardKey.Save)
        menu.addSeparator()
        action("Export image results (CSV)…", self.export_csv_dialog)
        action("Export histogram (PNG)…", self.export_plot_dialog)
        action("Export ROC curves (PNG)…", self.export_roc_dialog)
        menu.addSeparator()
        action("Save &audit report…", self.save_report_dialog)
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

        model_panel = self.left.model_data
        model_panel.open_model_button.clicked.connect(self.open_model_dialog)
        model_panel.open_clean_button.clicked.connect(self.open_clean_dialog)
        model_panel.add_poisoned_button.clicked.connect(self.add_poisoned_dialog)
        cal_panel = self.left.calibration
        cal_panel.load_button.clicked.connect(self.load_calibration_dialog)
        cal_panel.save_button.clicked.connect(self.save_calibration_dialog)
        self.image_check.open_button.clicked.connect(self.open_images_dialog)
        self.image_check.export_button.clicked.connect(self.export_csv_dialog)

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

    # --- dialogs --------------------------------------------------------------------------

    def _ask_open(self, kind: str, title: str, filters: str, many: bool = False):
        folder = str(self.settings.value(f"folders/{kind}", str(Path.home())))
        if many:
            names, _ = QFileDialog.getOpenFileNames(self, title, folder, filters)
        else:
            name, _ = QFileDialog.getOpenFileName(self, title, folder, filters)
            names = [name] if name else []
        if names:
            self.settings.setValue(f"folders/{kind}", str(Path(names[0]).parent))
        return [Path(n) for n in names]

    def _ask_save(self, kind: str, title: str, filters: str, default_name: str) -> Path | None:
        folder = Path(str(self.settings.value(f"folders/{kind}", str(Path.home()))))
        name, _ = QFileDialog.getSaveFileName(self, title, str(folder / default_name), filters)
        if not name:
            return None
        self.settings.setValue(f"folders/{kind}", str(Path(name).parent))
        return Path(name)

    def save_report_dialog(self) -> None:
        """One HTML report of everything loaded and found (the rest computed, with progress and Cancel)."""
        path = self._ask_save("reports", "Save an audit report", "HTML report (*.html)", "audit.html")
        if path is not None:
            if path.suffix.lower() not in (".html", ".htm"):
                path = path.with_suffix(".html")
            self.session.report.save(path)

    def open_model_dialog(self) -> None:
        for path in self._ask_open("models", "Open a BadNet", MODEL_FILTER):
            self.session.data.open_model(path, trust=self.left.model_data.trust_box.isChecked())

    def open_clean_dialog(self) -> None:
        for path in self._ask_open("data", "Open clean data", DATA_FILTER):
            self.session.data.open_clean(path)

    def add_poisoned_dialog(self) -> None:
        target = self.left.model_data.target_spin.value()
        for path in self._ask_open("data", f"Add a poisoned set (target {target})", DATA_FILTER):
            self.session.data.add_poisoned(path, target)

    def open_images_dialog(self) -> None:
        paths = self._ask_open("images", "Open images to check", IMAGE_FILTER, many=True)
        if paths:
            self.tabs.setCurrentWidget(self.image_check)
            self.session.check.check_paths(paths)

    def load_calibration_dialog(self) -> None:
        for path in self._ask_open("calibrations", "Load a calibration", CALIBRATION_FILTER):
            self.session.calib.load(path)

    def save_calibration_dialog(self) -> None:
        if self.session.calib.active is None:
            self.show_error("nothing to save: calibrate first")
            return
        name = (self.session.data.net.path.stem if self.session.data.net else "model") + "_calibration.json"
        path = self._ask_save("calibrations", "Save calibration", CALIBRATION_FILTER, name)
        if path is not None:
            self.session.calib.save(path)

    def export_csv_dialog(self) -> None:
        path = self._ask_save("exports", "Export image results", "CSV (*.csv)", "image_check.csv")
        if path is not None:
            self.session.check.export_csv(path)

    def export_plot_dialog(self) -> None:
        name = f"histogram_class{self.histograms.current_class}.png"
        path = self._ask_save("exports", "Export histogram", "PNG image (*.png)", name)
        if path is not None:
            self._export(lambda: self.histograms.export_png(path), path)

    def export_roc_dialog(self) -> None:
        if not self.session.compare.results:
            self.show_error("nothing to export: compare detectors first")
            return
        path = self._ask_save("exports", "Export ROC curves", "PNG image (*.png)", "roc.png")
        if path is not None:
            self._export(lambda: self.compare.export_png(path), path)

    def _export(self, write, path: Path) -> None:
        """Run an export; a refused or failed one becomes the banner's one line."""
        self.session.write_output(path, write)

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
                self.save_calibration_dialog()
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
