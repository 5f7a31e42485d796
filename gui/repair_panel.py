"""Pruning & repair: any registered repair, its settings form built from what it declares, its plots
(what the engine's outcome draws: clean accuracy and attack success against the share pruned, the
N+1 network's training accuracy per epoch, ...) and the repaired network G it builds."""

from __future__ import annotations

import html
from pathlib import Path

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
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.repairs import REPAIRS, repair_class
from gui.detector_settings import SettingsPages
from gui.folders import default_folder, make_output_home
from gui.histograms import CLEAN_COLOUR, POISON_COLOURS
from gui.session import Session


def default_outdir(model_path: Path, method: str = "fine-pruning") -> Path:
    return default_folder(model_path, method.replace("-", "_"))


class RepairPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session

        self.method_box = QComboBox()
        for name, cls in REPAIRS.items():
            self.method_box.addItem(cls.title, name)
            self.method_box.setItemData(self.method_box.count() - 1, cls.summary, Qt.ItemDataRole.ToolTipRole)
        self.method_box.setToolTip("What to build: each gives a repaired network G (a verdict source in the "
                                   "Image check) and appears in the comparison of defenses")
        self.settings = SettingsPages(REPAIRS, compact=True)
        self.learn_box = QComboBox()
        self.learn_box.setMinimumWidth(320)
        self.learn_box.setToolTip("The poisoned sets it learns from. Learn from one and the comparison shows what "
                                  "it does on a trigger it never saw")
        self.scan_note = QLabel("")  # one short line: a wrapped label in a form row gets clipped
        self.outdir_edit = QLineEdit()
        self.outdir_edit.setMinimumWidth(420)
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.outdir_edit, 1)
        out_row.addWidget(browse)
        self.run_button = QPushButton("Run")
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
        form.addRow("Method", self.method_box)
        form.addRow(self.settings)
        form.addRow("Learn from", self.learn_box)
        form.addRow("Trigger scan", self.scan_note)
        form.addRow("Output folder", out_row)
        self.form = form
        self.method_box.currentIndexChanged.connect(lambda _: self._method_changed())

        self.plot = pg.PlotWidget(background="w")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("left", "rate")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setYRange(0, 1.02, padding=0)
        self.plot.setXRange(0, 1, padding=0.01)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextColor="k")
        self.plot.setTitle("Run a method to see its sweep", color="k")
        self._lines: list[pg.PlotDataItem] = []  # built as needed, updated with setData
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
        session.scan.scanChanged.connect(lambda _: self._update_scan_note())
        session.repair.outcomeChanged.connect(self._on_sweep)
        session.repair.repairedChanged.connect(lambda _: self._update_summary())

    @Slot()
    def start_clicked(self) -> None:
        """The button's slot: a slot must not return a value (see gui/jobs.py, on PySide and bools)."""
        self.start()

    @property
    def method(self) -> str:
        return self.method_box.currentData()

    def set_method(self, method: str) -> None:
        self.method_box.setCurrentIndex(self.method_box.findData(repair_class(method).name))

    def field(self, setting: str):
        """The current method's field for ``setting`` (a spin box, a line, a list of words)."""
        return self.settings.fields[self.method][setting]

    def _method_changed(self) -> None:
        cls = repair_class(self.method)
        self.settings.show_page(cls.name)
        self.form.setRowVisible(self.learn_box, cls.needs_poisoned)
        self.form.setRowVisible(self.scan_note, cls.uses_scan)
        self._update_scan_note()
        self.run_button.setText(f"Run {cls.phrase()}")
        net = self.session.data.net
        old = {str(default_outdir(net.path, m)) for m in REPAIRS} if net is not None else set()
        if net is not None and (not self.outdir_edit.text().strip() or self.outdir_edit.text() in old):
            self.outdir_edit.setText(str(default_outdir(net.path, cls.name)))

    def _update_scan_note(self) -> None:
        result = self.session.scan.result
        if result is None:
            text = "none loaded: it scans the clean faces first (or run one in tab 7)"
        elif result.flagged:
            text = f"the loaded scan's flagged classes: {', '.join(map(str, result.flagged))}"
        else:
            text = "the loaded scan flagged no class: name the classes to unlearn"
        self.scan_note.setText(text)

    @Slot()
    def start(self) -> bool:
        outdir = self.outdir_edit.text().strip()
        if not outdir:
            self.session.error.emit("choose an output folder for the results")
            return False
        cls = repair_class(self.method)
        if cls.needs_poisoned and not self.session.data.poisoned:
            self.session.error.emit(f"{cls.title} learns from poisoned examples: add a poisoned set first")
            return False
        make_output_home(outdir)
        sets = self.learn_box.currentData() if cls.needs_poisoned else None
        self.session.repair.run(cls.name, self.settings.params(cls.name), outdir, sets)
        return True

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the repaired network", self.outdir_edit.text())
        if folder:
            self.outdir_edit.setText(folder)

    def _load_clicked(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Load a repaired network", self.outdir_edit.text(),
                                              "Repaired networks (*.json);;All files (*)")
        if name:
            self.session.repair.load_repaired(name)

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
            self.session.repair.load_nplus1(name)

    @Slot(object)
    def _on_model(self, net) -> None:
        """Word settings whose words depend on the model (fine-pruning's layer) follow it."""
        for name, cls in REPAIRS.items():
            for s in cls.settings:
                words = cls.choices_for(s.name, net)
                box = self.settings.fields[name].get(s.name)
                if words is not None and isinstance(box, QComboBox):
                    box.clear()
                    box.addItems(words[0])
                    box.setCurrentText(words[1])
        self.outdir_edit.setText(str(default_outdir(net.path, self.method)))

    @Slot(object)
    def _on_sweep(self, outcome) -> None:
        self.legend.clear()
        for line in self._lines:
            line.setData([], [])
        for label in self._labels:
            label.setVisible(False)
        self._saved.setData([], [])
        plot = outcome.plots[0] if outcome is not None and outcome.plots else None
        if plot is None:
            self.plot.setTitle("Run a method to see its sweep" if outcome is None else
                               f"{repair_class(outcome.method).title}: nothing to plot", color="k")
            self._update_summary()
            return
        self.plot.setLabel("bottom", plot.x_label)
        self.plot.setLabel("left", plot.y_label)
        if plot.x_range is not None:
            self.plot.setXRange(*plot.x_range, padding=0.01)
        self.plot.setYRange(0, 1.02, padding=0)  # rates: the same scale for every method
        self.plot.setTitle(plot.title, color="k")
        attack = 0
        for i, curve in enumerate(plot.curves):
            if i == len(self._lines):
                self._lines.append(self.plot.plot([], []))
            colour = CLEAN_COLOUR if curve.role == "accuracy" else POISON_COLOURS[attack % len(POISON_COLOURS)]
            attack += curve.role != "accuracy"
            self._lines[i].setPen(pg.mkPen(colour, width=2))
            self._lines[i].setData(curve.x, curve.y)
            self.legend.addItem(self._lines[i], curve.name)
        if plot.marks:
            self._mark(plot.marks)
        self._update_summary()

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

    def _update_summary(self) -> None:
        outcome, g = self.session.repair.result, self.session.repair.repaired
        lines = [] if outcome is None else [html.escape(line) for line in outcome.lines]
        if g is not None:
            title, note, _ = g.describe()
            lines.append(f"<b>G</b> = {html.escape(title)} ({html.escape(note)}), {html.escape(Path(g.repaired_path).name)}; "
                         "its verdicts are in the Image check tab (column G verdict, or Verdict by: repaired "
                         "network G), its figures in the comparison of defenses")
        self.summary.setText("<br>".join(lines))
