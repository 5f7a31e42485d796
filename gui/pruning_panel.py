"""Pruning and repair: fine-pruning (channels of one layer), magnitude pruning (the smallest weights
of every layer) and the N+1 network (an extra output class meaning poisoned), each with its plot
(clean accuracy and attack success against the share pruned; the N+1 network's training accuracy
per epoch) and the repaired network G it builds."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.repair import describe_saved
from gui.folders import default_folder, make_output_home
from gui.histograms import CLEAN_COLOUR, POISON_COLOURS
from gui.session import Session

METHOD_TITLES = {
    "channels": "Fine-pruning (channels of one layer)",
    "magnitude": "Magnitude pruning (smallest weights of every layer; the report's first try)",
    "nplus1": "N+1 network (an output class meaning poisoned; the report's G1)",
}
OUTDIR_SUFFIX = {"channels": "fine_pruning", "magnitude": "magnitude", "nplus1": "nplus1"}
RUN_TEXT = {"channels": "Run fine-pruning", "magnitude": "Run magnitude pruning", "nplus1": "Train the N+1 network"}


def default_outdir(model_path: Path, method: str = "channels") -> Path:
    return default_folder(model_path, OUTDIR_SUFFIX[method])


class PruningPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session

        self.method_box = QComboBox()
        for method, title in METHOD_TITLES.items():
            self.method_box.addItem(title, method)
        self.method_box.setToolTip("What to build: each gives a repaired network G (a verdict source in the "
                                   "Image check) and appears in the comparison of defenses")
        self.layer_box = QComboBox()
        self.layer_box.setToolTip("The convolutional layer whose channels are pruned (conv_3 for DeepID)")
        self.drops_edit = QLineEdit("2,4,10")
        self.drops_edit.setToolTip("Save a pruned model B' when clean accuracy has dropped by these many points")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 100)
        self.epochs_spin.setValue(2)
        self.epochs_spin.setToolTip("Fine-tune each pruned model on clean data (0: pruning only)")
        self.sparsity_spin = QDoubleSpinBox()
        self.sparsity_spin.setRange(0.01, 0.99)
        self.sparsity_spin.setSingleStep(0.05)
        self.sparsity_spin.setValue(0.7)
        self.sparsity_spin.setToolTip("Share of every layer's weights zeroed, smallest magnitude first (the report: 0.7)")
        self.train_spin = QSpinBox()
        self.train_spin.setRange(1, 1000)
        self.train_spin.setValue(40)
        self.train_spin.setToolTip("Epochs of training on the clean data and the loaded poisoned sets (label N)")
        self.all_layers_check = QCheckBox("retrain every layer (as the report did)")
        self.all_layers_check.setToolTip("Off: only the output layer learns, so clean answers barely move "
                                         "(measured on the demo: 96.0% vs 90.7% clean accuracy)")
        self.learn_box = QComboBox()
        self.learn_box.setMinimumWidth(320)
        self.learn_box.setToolTip("The poisoned sets the N+1 network learns from (label N). Learn from one and "
                                  "the comparison shows what it does on a trigger it never saw")
        self.outdir_edit = QLineEdit()
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.outdir_edit, 1)
        out_row.addWidget(browse)
        self.run_button = QPushButton("Run fine-pruning")
        self.run_button.clicked.connect(self.start_clicked)
        self.load_button = QPushButton("Load repaired network…")
        self.load_button.clicked.connect(self._load_clicked)
        self.nplus1_button = QPushButton("Load N+1 network…")
        self.nplus1_button.setToolTip("A hand-made network with one output more than the BadNet, whose last class "
                                      "means poisoned (such as the report's *_processed_model.h5)")
        self.nplus1_button.clicked.connect(self._load_nplus1_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.nplus1_button)
        buttons.addStretch(1)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.layer_box.setMinimumWidth(160)
        self.drops_edit.setMaximumWidth(160)
        self.outdir_edit.setMinimumWidth(420)
        form.addRow("Method", self.method_box)
        form.addRow("Layer", self.layer_box)
        form.addRow("Save at accuracy drops (%)", self.drops_edit)
        form.addRow("Sparsity", self.sparsity_spin)
        form.addRow("Training epochs", self.train_spin)
        form.addRow("Learn from", self.learn_box)
        form.addRow("", self.all_layers_check)
        form.addRow("Fine-tuning epochs", self.epochs_spin)
        form.addRow("Output folder", out_row)
        self.form = form
        self.method_box.currentIndexChanged.connect(lambda _: self._method_changed())

        self.plot = pg.PlotWidget(background="w")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "share of channels pruned")
        self.plot.setLabel("left", "rate")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setYRange(0, 1.02, padding=0)
        self.plot.setXRange(0, 1, padding=0.01)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextColor="k")
        self.plot.setTitle("Run a method to see its sweep", color="k")
        # Built once, updated with setData.
        self._accuracy = self.plot.plot([], [], pen=pg.mkPen(CLEAN_COLOUR, width=2))
        self._attack: dict[str, pg.PlotDataItem] = {}
        self._saved = pg.ScatterPlotItem([], [], symbol="o", size=11, brush=pg.mkBrush(255, 255, 255),
                                         pen=pg.mkPen(CLEAN_COLOUR, width=2))
        self.plot.addItem(self._saved)
        self._labels: list[pg.TextItem] = []
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.summary)

        self._method_changed()
        session.data.modelChanged.connect(self._on_model)
        session.data.poisonedChanged.connect(self._on_poisoned)
        session.pruning.sweepChanged.connect(self._on_sweep)
        session.pruning.repairedChanged.connect(lambda _: self._update_summary())

    @Slot()
    def start_clicked(self) -> None:
        """The button's slot: a slot must not return a value (see gui/jobs.py, on PySide and bools)."""
        self.start()

    @property
    def method(self) -> str:
        return self.method_box.currentData()

    def set_method(self, method: str) -> None:
        self.method_box.setCurrentIndex(self.method_box.findData(method))

    def _method_changed(self) -> None:
        method = self.method
        for widget, shown in ((self.layer_box, method == "channels"), (self.drops_edit, method == "channels"),
                              (self.sparsity_spin, method == "magnitude"), (self.train_spin, method == "nplus1"),
                              (self.learn_box, method == "nplus1"), (self.all_layers_check, method == "nplus1"),
                              (self.epochs_spin, method != "nplus1")):
            self.form.setRowVisible(widget, shown)
        self.run_button.setText(RUN_TEXT[method])
        net = self.session.data.net
        old = {str(default_outdir(net.path, m)) for m in OUTDIR_SUFFIX} if net is not None else set()
        if net is not None and (not self.outdir_edit.text().strip() or self.outdir_edit.text() in old):
            self.outdir_edit.setText(str(default_outdir(net.path, method)))

    @Slot()
    def start(self) -> bool:
        outdir = self.outdir_edit.text().strip()
        if not outdir:
            self.session.error.emit("choose an output folder for the results")
            return False
        make_output_home(outdir)
        if self.method == "magnitude":
            self.session.pruning.run_magnitude(outdir, self.sparsity_spin.value(), self.epochs_spin.value())
            return True
        if self.method == "nplus1":
            if not self.session.data.poisoned:
                self.session.error.emit("the N+1 network learns from poisoned examples: add a poisoned set first")
                return False
            self.session.pruning.run_nplus1(outdir, self.train_spin.value(), self.learn_box.currentData(),
                                            "all" if self.all_layers_check.isChecked() else "output")
            return True
        try:
            drops = tuple(float(d) for d in self.drops_edit.text().split(",") if d.strip())
        except ValueError:
            drops = ()
        if not drops or any(not 0 < d < 100 for d in drops):
            self.session.error.emit(f"accuracy drops '{self.drops_edit.text()}': give percentages like 2,4,10")
            return False
        self.session.pruning.run(outdir, self.layer_box.currentText() or None, drops, self.epochs_spin.value())
        return True

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the pruned models", self.outdir_edit.text())
        if folder:
            self.outdir_edit.setText(folder)

    def _load_clicked(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Load a repaired network", self.outdir_edit.text(),
                                              "Repaired networks (*.json);;All files (*)")
        if name:
            self.session.pruning.load_repaired(name)

    @Slot(object)
    def _on_poisoned(self, sets) -> None:
        """Each loaded set alone (the first by default), or all of them."""
        current = self.learn_box.currentText()
        self.learn_box.clear()
        for i, p in enumerate(sets):
            self.learn_box.addItem(p.name, [i])
        if len(sets) > 1:
            self.learn_box.addItem(f"all {len(sets)} loaded poisoned sets", list(range(len(sets))))
        if self.learn_box.findText(current) >= 0:
            self.learn_box.setCurrentText(current)

    def _load_nplus1_clicked(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Load an N+1 network (its last class means poisoned)",
                                              self.outdir_edit.text(), "Keras models (*.h5 *.keras);;All files (*)")
        if name:
            self.session.pruning.load_nplus1(name)

    @Slot(object)
    def _on_model(self, net) -> None:
        from engine.pruning import conv_layers, default_layer

        self.layer_box.clear()
        self.layer_box.addItems(conv_layers(net))
        self.layer_box.setCurrentText(default_layer(net))
        self.outdir_edit.setText(str(default_outdir(net.path, self.method)))

    @Slot(object)
    def _on_sweep(self, result) -> None:
        from engine.magnitude import MagnitudeResult
        from engine.nplus1 import NPlusOneResult

        self.legend.clear()
        for curve in self._attack.values():
            curve.setData([], [])
        for label in self._labels:
            label.setVisible(False)
        self._saved.setData([], [])
        if result is None:
            self.plot.setTitle("Run a method to see its sweep", color="k")
            self._accuracy.setData([], [])
            self._update_summary()
            return
        if isinstance(result, NPlusOneResult):
            self._show_training(result)
        elif isinstance(result, MagnitudeResult):
            sw = result.sweep
            self.plot.setLabel("bottom", "share of every layer's weights zeroed (smallest magnitude first)")
            self.plot.setXRange(0, 1, padding=0.01)
            self.plot.setTitle("magnitude pruning, all layers", color="k")
            self._curves(sw.sparsity, sw.clean_accuracy, sw.attack_success)
            self._mark([(result.sparsity, result.report["clean_accuracy"], f"{100 * result.sparsity:.0f}%")])
        else:
            sw = result.sweep
            x = np.arange(sw.channels + 1) / sw.channels
            self.plot.setLabel("bottom", "share of channels pruned")
            self.plot.setXRange(0, 1, padding=0.01)
            self.plot.setTitle(f"pruning {sw.layer}, lowest mean clean activation first", color="k")
            self._curves(x, sw.clean_accuracy, sw.attack_success)
            self._mark([(e["fraction_pruned"], e["clean_accuracy"], f"-{e['drop']:g}%") for e in result.saved])
        self._update_summary()

    def _curves(self, x, accuracy, attack_success: dict, accuracy_name: str = "clean accuracy") -> None:
        self.plot.setYRange(0, 1.02, padding=0)  # rates: the same scale for every method
        self._accuracy.setData(x, accuracy)
        self.legend.addItem(self._accuracy, accuracy_name)
        for name, rate in attack_success.items():
            if name not in self._attack:
                colour = POISON_COLOURS[len(self._attack) % len(POISON_COLOURS)]
                self._attack[name] = self.plot.plot([], [], pen=pg.mkPen(colour, width=2))
            self._attack[name].setData(x, rate)
            self.legend.addItem(self._attack[name], f"attack success: {name}")

    def _mark(self, points: list[tuple[float, float, str]]) -> None:
        """Circles and labels at the saved models."""
        self._saved.setData([p[0] for p in points], [p[1] for p in points])
        self.legend.addItem(self._saved, "saved B'")
        while len(self._labels) < len(points):
            label = pg.TextItem("", color=(40, 40, 40), anchor=(0.5, 1.3))
            self.plot.addItem(label)
            self._labels.append(label)
        for label, (x, y, text) in zip(self._labels, points):
            label.setText(text)
            label.setPos(x, y)
            label.setVisible(True)

    def _show_training(self, result) -> None:
        """The N+1 network: training accuracy per epoch (clean + poisoned faces, label N for the poisoned)."""
        acc = result.report["train_accuracy"]
        epochs = np.arange(1, len(acc) + 1)
        self.plot.setLabel("bottom", "epoch")
        self.plot.setXRange(0.5, len(acc) + 0.5, padding=0)
        self.plot.setTitle("N+1 network: training accuracy per epoch (the report: about 99%)", color="k")
        self._curves(epochs, np.asarray(acc), {}, "training accuracy (clean + poisoned as N)")

    def _update_summary(self) -> None:
        from engine.compare import describe_repair
        from engine.magnitude import MagnitudeResult
        from engine.nplus1 import NPlusOneResult

        result, g = self.session.pruning.result, self.session.pruning.repaired
        lines = []
        if isinstance(result, (MagnitudeResult, NPlusOneResult)):
            lines += [html.escape(line) for line in result.lines()]
        elif result is not None:
            lines += [html.escape(describe_saved(e)) for e in result.saved]
        if g is not None:
            title, note, _ = describe_repair(g)
            lines.append(f"<b>G</b> = {html.escape(title)} ({html.escape(note)}), {html.escape(Path(g.repaired_path).name)}; "
                         "its verdicts are in the Image check tab (column G verdict, or Verdict by: repaired "
                         "network G), its figures in the comparison of defenses")
        self.summary.setText("<br>".join(lines))
