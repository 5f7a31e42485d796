"""Fine-pruning: options, the sweep plot (clean accuracy and attack success against the share of
channels pruned, markers at the saved models), and the repaired network G it builds."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QComboBox,
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
from gui.histograms import CLEAN_COLOUR, POISON_COLOURS
from gui.session import Session


def default_outdir(model_path: Path) -> Path:
    return Path.home() / "BadNetInspector" / f"{model_path.stem}_fine_pruning"


class PruningPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session

        self.layer_box = QComboBox()
        self.layer_box.setToolTip("The convolutional layer whose channels are pruned (conv_3 for DeepID)")
        self.drops_edit = QLineEdit("2,4,10")
        self.drops_edit.setToolTip("Save a pruned model B' when clean accuracy has dropped by these many points")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 100)
        self.epochs_spin.setValue(2)
        self.epochs_spin.setToolTip("Fine-tune each pruned model on clean data (0: pruning only)")
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
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.load_button)
        buttons.addStretch(1)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.layer_box.setMinimumWidth(160)
        self.drops_edit.setMaximumWidth(160)
        self.outdir_edit.setMinimumWidth(420)
        form.addRow("Layer", self.layer_box)
        form.addRow("Save at accuracy drops (%)", self.drops_edit)
        form.addRow("Fine-tuning epochs", self.epochs_spin)
        form.addRow("Output folder", out_row)

        self.plot = pg.PlotWidget(background="w")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "share of channels pruned")
        self.plot.setLabel("left", "rate")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setYRange(0, 1.02, padding=0)
        self.plot.setXRange(0, 1, padding=0.01)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextColor="k")
        self.plot.setTitle("Run fine-pruning to sweep the layer", color="k")
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

        session.data.modelChanged.connect(self._on_model)
        session.pruning.sweepChanged.connect(self._on_sweep)
        session.pruning.repairedChanged.connect(lambda _: self._update_summary())

    @Slot()
    def start_clicked(self) -> None:
        """The button's slot: a slot must not return a value (see gui/jobs.py, on PySide and bools)."""
        self.start()

    @Slot()
    def start(self) -> bool:
        try:
            drops = tuple(float(d) for d in self.drops_edit.text().split(",") if d.strip())
        except ValueError:
            drops = ()
        if not drops or any(not 0 < d < 100 for d in drops):
            self.session.error.emit(f"accuracy drops '{self.drops_edit.text()}': give percentages like 2,4,10")
            return False
        outdir = self.outdir_edit.text().strip()
        if not outdir:
            self.session.error.emit("choose an output folder for the pruned models")
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
    def _on_model(self, net) -> None:
        from engine.pruning import conv_layers, default_layer

        self.layer_box.clear()
        self.layer_box.addItems(conv_layers(net))
        self.layer_box.setCurrentText(default_layer(net))
        self.outdir_edit.setText(str(default_outdir(net.path)))

    @Slot(object)
    def _on_sweep(self, result) -> None:
        self.legend.clear()
        for curve in self._attack.values():
            curve.setData([], [])
        for label in self._labels:
            label.setVisible(False)
        if result is None:
            self.plot.setTitle("Run fine-pruning to sweep the layer", color="k")
            self._accuracy.setData([], [])
            self._saved.setData([], [])
            self._update_summary()
            return
        sw = result.sweep
        x = np.arange(sw.channels + 1) / sw.channels
        self.plot.setTitle(f"pruning {sw.layer}, lowest mean clean activation first", color="k")
        self._accuracy.setData(x, sw.clean_accuracy)
        self.legend.addItem(self._accuracy, "clean accuracy")
        for k, (name, rate) in enumerate(sw.attack_success.items()):
            if name not in self._attack:
                colour = POISON_COLOURS[len(self._attack) % len(POISON_COLOURS)]
                self._attack[name] = self.plot.plot([], [], pen=pg.mkPen(colour, width=2))
            self._attack[name].setData(x, rate)
            self.legend.addItem(self._attack[name], f"attack success: {name}")
        self._saved.setData([e["fraction_pruned"] for e in result.saved], [e["clean_accuracy"] for e in result.saved])
        self.legend.addItem(self._saved, "saved B'")
        while len(self._labels) < len(result.saved):
            label = pg.TextItem("", color=(40, 40, 40), anchor=(0.5, 1.3))
            self.plot.addItem(label)
            self._labels.append(label)
        for label, e in zip(self._labels, result.saved):
            label.setText(f"-{e['drop']:g}%")
            label.setPos(e["fraction_pruned"], e["clean_accuracy"])
            label.setVisible(True)
        self._update_summary()

    def _update_summary(self) -> None:
        result, g = self.session.pruning.result, self.session.pruning.repaired
        lines = []
        if result is not None:
            lines += [html.escape(describe_saved(e)) for e in result.saved]
        if g is not None:
            lines.append(f"<b>G</b> uses B' = {Path(g.repaired_path).name}; its verdicts are in the Image check "
                         "tab (column G verdict, or Verdict by: repaired network G)")
        self.summary.setText("<br>".join(lines))
