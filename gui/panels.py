"""The left column: what is loaded (model and data) and the calibration job."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

from engine.detectors import DETECTORS
from engine.workflow import DEFAULT_DETECTOR, DEFAULT_FRR
from gui.detector_settings import DetectorSettings
from engine.progress import Progress
from gui.session import Session


class ModelDataPanel(QGroupBox):
    """Model facts, input scaling, clean data and poisoned sets."""

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__("1. Model and data", parent)
        self.session = session

        self.model_name = QElidingLabel("no model loaded")
        self.model_name.setElideMode(Qt.TextElideMode.ElideMiddle)
        self.model_facts = QLabel("")
        self.model_facts.setWordWrap(True)
        self.model_facts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_facts.setStyleSheet("color: #333;")
        self.open_model_button = QPushButton("Open model…")
        self.trust_box = QCheckBox("Trust model code")
        self.trust_box.setToolTip(
            "Allow Lambda layers and custom objects to run Python code from the model file.\n"
            "Leave off unless you trust where the file came from."
        )
        self.scaling_box = QComboBox()
        self.scaling_box.addItem("pixels / 255 (CSAW 2020)", "1/255")
        self.scaling_box.addItem("raw 0..255 (CSAW lab)", "raw")
        self.scaling_box.addItem("auto (best clean accuracy)", "auto")
        self.scaling_box.currentIndexChanged.connect(
            lambda i: session.data.set_scaling(self.scaling_box.itemData(i))
        )

        self.clean_name = QElidingLabel("no clean data")
        self.clean_name.setElideMode(Qt.TextElideMode.ElideMiddle)
        self.open_clean_button = QPushButton("Open clean data…")

        self.poisoned_list = QListWidget()
        self.poisoned_list.setMaximumHeight(58)
        self.poisoned_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.poisoned_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.target_spin = QSpinBox()
        self.target_spin.setRange(0, 100_000)
        self.target_spin.setPrefix("target ")
        self.target_spin.setToolTip("The class the attack sends these images to")
        self.add_poisoned_button = QPushButton("Add poisoned set…")
        self.remove_poisoned_button = QPushButton("Remove")
        self.remove_poisoned_button.clicked.connect(
            lambda: session.data.remove_poisoned(self.poisoned_list.currentRow())
        )
        self.remove_poisoned_button.setEnabled(False)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        model_row = QHBoxLayout()
        model_row.addWidget(self.open_model_button)
        model_row.addWidget(self.trust_box)
        form.addRow(model_row)
        form.addRow("Model", self.model_name)
        form.addRow(self.model_facts)
        form.addRow("Input scaling", self.scaling_box)
        form.addRow(self.open_clean_button)
        form.addRow("Clean data", self.clean_name)
        add_row = QHBoxLayout()
        add_row.addWidget(self.add_poisoned_button)
        add_row.addWidget(self.target_spin)
        add_row.addWidget(self.remove_poisoned_button)
        form.addRow(add_row)
        form.addRow("Poisoned", self.poisoned_list)
        self.setLayout(form)

        session.data.modelLoading.connect(self._on_loading)
        session.data.modelChanged.connect(self._on_model)
        session.data.cleanChanged.connect(self._on_clean)
        session.data.poisonedChanged.connect(self._on_poisoned)
        session.data.scalingChanged.connect(self._on_scaling)
        session.data.modelLoadEnded.connect(self._on_load_ended)

    @Slot(str)
    def _on_loading(self, path: str) -> None:
        self.model_name.setText(f"loading {path.rsplit('/', 1)[-1]}…")
        self.model_facts.setText("TensorFlow starts on first use; this takes a few seconds.")

    @Slot(str)
    def _on_load_ended(self, outcome: str) -> None:
        """A load that did not finish leaves the model there was (or none)."""
        if outcome == "done":
            return
        if self.session.data.net is None:
            self.model_name.setText("no model loaded")
            self.model_facts.setText("")
        else:
            self._on_model(self.session.data.net)

    @Slot(object)
    def _on_model(self, net) -> None:
        self.model_name.setText(net.path.name)
        self.model_name.setToolTip(str(net.path))
        h, w, c = net.input_shape
        self.model_facts.setText(
            f"{net.format}<br>input {h}×{w}×{c}, {net.num_classes} classes, {len(net.layer_names)} layers<br>"
            f"sha256 <tt>{net.sha256[:16]}…</tt>"
        )
        self.model_facts.setToolTip(f"sha256 {net.sha256}\nlayers: {', '.join(net.layer_names)}")
        self.target_spin.setMaximum(net.num_classes - 1)

    @Slot(object)
    def _on_clean(self, images) -> None:
        if images is None:
            self.clean_name.setText("no clean data")
            self.clean_name.setToolTip("")
            return
        labelled = "labelled" if images.labels is not None else "unlabelled"
        self.clean_name.setText(f"{images.source.rsplit('/', 1)[-1]} ({len(images)} {labelled})")
        self.clean_name.setToolTip(images.source)

    @Slot(object)
    def _on_poisoned(self, sets) -> None:
        self.poisoned_list.clear()
        for p in sets:
            self.poisoned_list.addItem(f"{p.name}  ({len(p.images)} images)")
            self.poisoned_list.item(self.poisoned_list.count() - 1).setToolTip(p.images.source)
        self.remove_poisoned_button.setEnabled(bool(sets))

    @Slot(str)
    def _on_scaling(self, scaling: str) -> None:
        index = self.scaling_box.findData(scaling)
        if index != self.scaling_box.currentIndex():
            self.scaling_box.setCurrentIndex(index)


class CalibrationPanel(QGroupBox):
    """Calibration options, Calibrate / Cancel, progress, and the calibration file."""

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__("2. Calibrate", parent)
        self.session = session

        self.detector_box = QComboBox()
        for name, cls in DETECTORS.items():
            self.detector_box.addItem(cls.title, name)
        self.detector_box.setToolTip(
            "\n".join(f"{cls.title}: {cls.summary}" for cls in DETECTORS.values())
            + "\nPicking a calibrated detector shows its histograms."
        )
        self.detector_box.setCurrentIndex(self.detector_box.findData(DEFAULT_DETECTOR))
        self.detector_box.currentIndexChanged.connect(self._on_detector_picked)
        self.settings = DetectorSettings()
        self.method_box = QComboBox()
        self.method_box.addItem("quantile (target false rejection)", "quantile")
        self.method_box.addItem("min (lowest clean score)", "min")
        self.frr_spin = QDoubleSpinBox()
        self.frr_spin.setRange(0.0, 50.0)
        self.frr_spin.setDecimals(1)
        self.frr_spin.setSingleStep(0.5)
        self.frr_spin.setValue(100 * DEFAULT_FRR)
        self.frr_spin.setSuffix(" %")
        self.min_samples_spin = QSpinBox()
        self.min_samples_spin.setRange(0, 10000)
        self.min_samples_spin.setSpecialValueText("auto (1/FRR, at least 5)")
        self.min_samples_spin.setValue(0)
        self.min_samples_spin.setToolTip(
            "Classes with fewer clean images use the pooled threshold. Auto: 1/FRR (20 at 5%), at least 5,\n"
            "so a class's own threshold is more than its single lowest score"
        )
        self.sample_spin = QSpinBox()
        self.sample_spin.setRange(-1, 10_000_000)
        self.sample_spin.setSpecialValueText("as the rate needs")
        self.sample_spin.setValue(-1)
        self.sample_spin.setSuffix(" clean images")
        self.sample_spin.setToolTip(
            "How many of the clean images to calibrate on, drawn at random. As the rate needs: enough that\n"
            "the false rejection of new clean images stays within a quarter of the target with 95% confidence\n"
            "(1168 at 5%); fewer when fewer are loaded. 0: every clean image"
        )
        self.method_box.currentIndexChanged.connect(
            lambda _: self.frr_spin.setEnabled(self.method_box.currentData() == "quantile")
        )

        self.calibrate_button = QPushButton("Calibrate")
        self.calibrate_button.setDefault(True)
        self.calibrate_button.clicked.connect(self.start_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(session.runner.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.job_label = QElidingLabel("idle")
        self.state_label = QLabel("not calibrated")
        self.state_label.setWordWrap(True)
        self.load_button = QPushButton("Load…")
        self.save_button = QPushButton("Save…")
        self.save_button.setEnabled(False)

        form = QFormLayout()
        form.addRow("Detector", self.detector_box)
        form.addRow(self.settings)
        form.addRow("Method", self.method_box)
        form.addRow("False rejection", self.frr_spin)
        form.addRow("Min. samples", self.min_samples_spin)
        form.addRow("Calibrate on", self.sample_spin)
        run_row = QHBoxLayout()
        run_row.addWidget(self.calibrate_button, 1)
        run_row.addWidget(self.cancel_button)
        form.addRow(run_row)
        form.addRow(self.progress)
        form.addRow(self.job_label)
        file_row = QHBoxLayout()
        file_row.addWidget(QLabel("Calibration file"))
        file_row.addWidget(self.load_button)
        file_row.addWidget(self.save_button)
        form.addRow(file_row)
        form.addRow(self.state_label)
        self.setLayout(form)

        runner = session.runner
        runner.started.connect(self._on_started)
        runner.progress.connect(self._on_progress)
        runner.finished.connect(self._on_finished)
        session.calib.calibrationChanged.connect(lambda _: self._update_state())
        session.calib.dirtyChanged.connect(lambda _: self._update_state())
        session.calib.thresholdsChanged.connect(lambda _: self._update_state())
        session.calib.calibrationChanged.connect(self._follow_active)
        self._on_detector_picked()

    @property
    def detector(self) -> str:
        return self.detector_box.currentData()

    def set_detector(self, name: str) -> None:
        self.detector_box.setCurrentIndex(self.detector_box.findData(name))

    def params(self, detector: str | None = None) -> dict:
        """The settings chosen for ``detector`` (default: the one picked); a combining detector's
        members take the settings on their own pages."""
        detector = detector or self.detector
        params = self.settings.params(detector)
        if "members" in params:
            names = [m.strip() for m in str(params["members"]).split(",") if m.strip() in DETECTORS]
            params["member_params"] = {m: self.settings.params(m) for m in names if m != detector}
        return params

    @Slot()
    def start_clicked(self) -> None:
        """The button's slot: a slot must not return a value (see gui/jobs.py, on PySide and bools)."""
        self.start()

    @Slot()
    def start(self) -> bool:
        params = self.params()
        return self.session.calib.calibrate(
            self.method_box.currentData(), self.frr_spin.value() / 100.0, self.min_samples_spin.value() or None,
            self.detector, params, None if self.sample_spin.value() < 0 else self.sample_spin.value(),
        )

    @Slot()
    def _on_detector_picked(self) -> None:
        self.settings.show_detector(self.detector)
        self.session.calib.set_active_detector(self.detector)  # show its calibration, if it has one
        self._update_state()

    @Slot(object)
    def _follow_active(self, cal) -> None:
        if cal is not None and cal.detector != self.detector:
            self.detector_box.blockSignals(True)
            self.set_detector(cal.detector)
            self.detector_box.blockSignals(False)
            self._on_detector_picked()

    @Slot(str)
    def _on_started(self, title: str) -> None:
        self.job_label.setText(title + "…")
        self.progress.setRange(0, 0)  # busy until the first progress step
        self.cancel_button.setEnabled(True)
        self.calibrate_button.setEnabled(False)

    @Slot(object)
    def _on_progress(self, step: Progress) -> None:
        if step.total > 0:
            self.progress.setRange(0, step.total)
            self.progress.setValue(step.done)
        if step.stage:
            self.job_label.setText(f"{self.session.runner.current_title}: {step.stage}")

    @Slot(str, str)
    def _on_finished(self, title: str, outcome: str) -> None:
        self.job_label.setText(f"{title}: {outcome}")
        if not self.session.runner.busy:
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if outcome == "done" else 0)
            self.cancel_button.setEnabled(False)
            self.calibrate_button.setEnabled(True)

    def _update_state(self) -> None:
        cal = self.session.calib.active
        self.save_button.setEnabled(cal is not None)
        others = [c.detector_title for name, c in self.session.calib.calibrations.items() if cal is None or name != cal.detector]
        also = f"<br>also calibrated: {', '.join(others)}" if others else ""
        if cal is None or cal.detector != self.detector:
            self.state_label.setText(f"{DETECTORS[self.detector].title}: not calibrated" + also)
            return
        text = html.escape(cal.summary())
        if cal.detector in self.session.calib.unsaved:
            text += " <b>(unsaved)</b>"
        self.state_label.setText(text + also)


class LeftColumn(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.model_data = ModelDataPanel(session)
        self.calibration = CalibrationPanel(session)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_data)
        layout.addWidget(self.calibration)
        layout.addStretch(1)
