"""The File menu's dialogs: open a model, data, images or a calibration; save a calibration or an
audit report; export results and plots. Each dialog opens in the folder last used for its kind
of file (remembered in the window's settings) and hands what was chosen to the session."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

MODEL_FILTER = "Keras models (*.h5 *.hdf5 *.keras);;All files (*)"
DATA_FILTER = "Image sets (*.h5 *.hdf5 *.npz);;All files (*)"
IMAGE_FILTER = "Images and sets (*.png *.jpg *.jpeg *.bmp *.h5 *.npz);;All files (*)"
CALIBRATION_FILTER = "Calibrations (*.json);;All files (*)"


class FileActions:
    """The dialogs of one window (``window``: its panels, settings and session)."""

    def __init__(self, window):
        self.window = window

    @property
    def settings(self):
        return self.window.settings

    @property
    def session(self):
        return self.window.session

    def _ask_open(self, kind: str, title: str, filters: str, many: bool = False):
        folder = str(self.settings.value(f"folders/{kind}", str(Path.home())))
        if many:
            names, _ = QFileDialog.getOpenFileNames(self.window, title, folder, filters)
        else:
            name, _ = QFileDialog.getOpenFileName(self.window, title, folder, filters)
            names = [name] if name else []
        if names:
            self.settings.setValue(f"folders/{kind}", str(Path(names[0]).parent))
        return [Path(n) for n in names]

    def _ask_save(self, kind: str, title: str, filters: str, default_name: str) -> Path | None:
        folder = Path(str(self.settings.value(f"folders/{kind}", str(Path.home()))))
        name, _ = QFileDialog.getSaveFileName(self.window, title, str(folder / default_name), filters)
        if not name:
            return None
        self.settings.setValue(f"folders/{kind}", str(Path(name).parent))
        return Path(name)

    def save_report(self) -> None:
        """One HTML report of everything loaded and found (the rest computed, with progress and Cancel)."""
        path = self._ask_save("reports", "Save an audit report", "HTML report (*.html)", "audit.html")
        if path is not None:
            if path.suffix.lower() not in (".html", ".htm"):
                path = path.with_suffix(".html")
            self.session.report.save(path)

    def open_model(self) -> None:
        for path in self._ask_open("models", "Open a BadNet", MODEL_FILTER):
            self.session.data.open_model(path, trust=self.window.left.model_data.trust_box.isChecked())

    def open_clean(self) -> None:
        for path in self._ask_open("data", "Open clean data", DATA_FILTER):
            self.session.data.open_clean(path)

    def add_poisoned(self) -> None:
        target = self.window.left.model_data.target_spin.value()
        for path in self._ask_open("data", f"Add a poisoned set (target {target})", DATA_FILTER):
            self.session.data.add_poisoned(path, target)

    def open_images(self) -> None:
        paths = self._ask_open("images", "Open images to check", IMAGE_FILTER, many=True)
        if paths:
            self.window.tabs.setCurrentWidget(self.window.image_check)
            self.session.check.check_paths(paths)

    def load_calibration(self) -> None:
        for path in self._ask_open("calibrations", "Load a calibration", CALIBRATION_FILTER):
            self.session.calib.load(path)

    def save_calibration(self) -> None:
        if self.session.calib.active is None:
            self.window.show_error("nothing to save: calibrate first")
            return
        name = (self.session.data.net.path.stem if self.session.data.net else "model") + "_calibration.json"
        path = self._ask_save("calibrations", "Save calibration", CALIBRATION_FILTER, name)
        if path is not None:
            self.session.calib.save(path)

    def export_csv(self) -> None:
        path = self._ask_save("exports", "Export image results", "CSV (*.csv)", "image_check.csv")
        if path is not None:
            self.session.check.export_csv(path)

    def export_plot(self) -> None:
        name = f"histogram_class{self.window.histograms.current_class}.png"
        path = self._ask_save("exports", "Export histogram", "PNG image (*.png)", name)
        if path is not None:
            self._export(lambda: self.window.histograms.export_png(path), path)

    def export_roc(self) -> None:
        if not self.session.compare.results:
            self.window.show_error("nothing to export: compare detectors first")
            return
        path = self._ask_save("exports", "Export ROC curves", "PNG image (*.png)", "roc.png")
        if path is not None:
            self._export(lambda: self.window.compare.export_png(path), path)

    def _export(self, write, path: Path) -> None:
        """Run an export; a refused or failed one becomes the banner's one line."""
        self.session.write_output(path, write)
