"""Detector comparison: ROC curves of every detector for a chosen poisoned set, AUC in the
legend, a table of detection at fixed false-rejection rates, and every defense side by side
(detectors and repaired networks: clean accuracy, false rejection, detection, attack success)."""

from __future__ import annotations

import html
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.detectors import DETECTORS
from engine.evaluation import families
from gui.plots import export_plot_png
from gui.session import Session


PLOT_MIN = 230  # pixels: the ROC plot is never squeezed below this


class ComparePanel(QWidget):
    def __init__(self, session: Session, settings_for=None, parent: QWidget | None = None):
        """``settings_for(name)``: the settings to compare detector ``name`` with (the calibration
        panel's), or None for every detector's defaults."""
        super().__init__(parent)
        self.session = session
        self.settings_for = settings_for
        self.checks = {}
        # Two rows, so every detector's box fits a 1280-pixel window.
        choose = QHBoxLayout()
        choose.addWidget(QLabel("Detectors"))
        for name, cls in DETECTORS.items():
            box = QCheckBox(cls.title)
            box.setToolTip(cls.summary)
            box.setChecked(True)
            self.checks[name] = box
            choose.addWidget(box)
        self.run_button = QPushButton("Compare on the loaded sets")
        self.run_button.setToolTip("Fit each detector on the clean set, score every set, and draw the ROC curves")
        self.run_button.clicked.connect(self.start_clicked)
        choose.addWidget(self.run_button)
        choose.addStretch(1)
        shown = QHBoxLayout()
        shown.addWidget(QLabel("Poisoned set"))
        self.set_box = QComboBox()
        self.set_box.setMinimumWidth(200)
        self.set_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.set_box.currentIndexChanged.connect(lambda _: self._draw())
        shown.addWidget(self.set_box)
        shown.addStretch(1)
        self.export_button = QPushButton("Export PNG…")
        self.export_button.clicked.connect(self._export_clicked)
        self.export_button.setEnabled(False)
        shown.addWidget(self.export_button)

        self.plot = pg.PlotWidget(background="w")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        # Short labels: the plot may be only PLOT_MIN pixels high at 1280x800, and a longer label is clipped.
        self.plot.setLabel("bottom", "false rejection (share of clean images flagged)")
        self.plot.setLabel("left", "detection")
        self.plot.getAxis("left").setToolTip("share of the poisoned images the BadNet sends to the target that "
                                             "are flagged")
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)
        self.plot.setXRange(0, 1, padding=0.01)
        self.plot.setYRange(0, 1, padding=0.01)
        self.plot.setMouseEnabled(x=True, y=False)
        # In the plot's lower right, where ROC curves seldom go, anchored to the bottom and in two
        # columns, so every detector's entry shows however short the plot is at 1280x800.
        self.legend = self.plot.addLegend(offset=(-10, -10), labelTextColor="k", colCount=2,
                                          brush=pg.mkBrush(255, 255, 255, 220), pen=pg.mkPen(200, 200, 200))
        self.plot.setTitle("Compare detectors to see their ROC curves", color="k")
        self._curves: dict[str, tuple] = {}
        self.chance = self.plot.plot([0, 1], [0, 1], pen=pg.mkPen((150, 150, 150), width=1, style=Qt.PenStyle.DashLine))
        self.chance.setVisible(False)
        self.table = QLabel("")
        self.table.setTextFormat(Qt.TextFormat.RichText)
        self.table.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table.setWordWrap(False)
        # What the figures mean and which families they were measured on: prose, so it wraps to
        # the tab's width instead of widening the table past a 1280-pixel window.
        self.note = QLabel("")
        self.note.setTextFormat(Qt.TextFormat.RichText)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #555")

        self.defenses = QLabel("")
        self.defenses.setTextFormat(Qt.TextFormat.RichText)
        self.defenses.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.defenses.setWordWrap(False)
        # The tables scroll under the plot, so a long list of defenses never squeezes the curves;
        # the splitter lets the user trade one for the other.
        tables = QWidget()
        column = QVBoxLayout(tables)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)  # grows with the tables, so the area scrolls
        column.addWidget(self.table)
        column.addWidget(self.note)
        column.addWidget(self.defenses)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(tables)
        self.plot.setMinimumHeight(PLOT_MIN)
        self._tables = tables
        split = self.split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.plot)
        split.addWidget(scroll)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([500, 400])  # scaled to the space there is: about half each
        split.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.addLayout(choose)
        layout.addLayout(shown)
        layout.addWidget(split, 1)
        session.compare.comparisonChanged.connect(self._on_comparison)

    @Slot()
    def start_clicked(self) -> None:
        """The button's slot: a slot must not return a value (see gui/jobs.py, on PySide and bools)."""
        self.start()

    @Slot()
    def start(self) -> bool:
        chosen = [name for name, box in self.checks.items() if box.isChecked()]
        if not chosen:
            self.session.error.emit("tick at least one detector to compare")
            return False
        params = {name: (self.settings_for(name) if self.settings_for else None) for name in chosen}
        self.session.compare.run(params)
        return True

    @property
    def results(self):
        return self.session.compare.results or []

    @Slot(object)
    def _on_comparison(self, results) -> None:
        current = self.set_box.currentText()
        self.set_box.blockSignals(True)
        self.set_box.clear()
        names = list(dict.fromkeys(r.poisoned for r in results or []))
        self.set_box.addItems(names)
        if current in names:
            self.set_box.setCurrentText(current)
        self.set_box.blockSignals(False)
        self.export_button.setEnabled(bool(results))
        self._draw()
        self._show_defenses()
        self._fit_split()

    def _fit_split(self) -> None:
        """Give the tables the height they need, so no row is cut, as long as the plot keeps at
        least PLOT_MIN pixels (then the tables scroll); the user's splitter moves are kept until
        the next comparison."""
        total = sum(self.split.sizes())
        if total <= 0:
            return
        needed = self._tables.sizeHint().height() + 4
        plot = max(PLOT_MIN, total - needed)
        self.split.setSizes([plot, max(total - plot, 1)])

    def _show_defenses(self) -> None:
        """Every defense on the chosen poisoned set: the same four figures for detectors and repaired networks."""
        rows = self.session.compare.defenses or []
        if not rows:
            self.defenses.setText("")
            return
        sets = list(dict.fromkeys(name for r in rows for name in r.sets))
        head = "".join(f"<th align='right'>&nbsp;{html.escape(n)}<br>detected / attack success&nbsp;</th>" for n in sets)
        body = ""
        for r in rows:
            cells = ""
            for n in sets:
                o = r.sets.get(n)
                mark = "*" if n in r.trained_on else ""
                cells += ("<td align='right'>n/a</td>" if o is None else
                          f"<td align='right'>{100 * o.detection:.1f}% / {100 * o.attack_success:.1f}%{mark}</td>")
            acc = "n/a" if r.clean_accuracy is None else f"{100 * r.clean_accuracy:.1f}%"
            acc += "*" if r.trained_on_clean else ""
            body += (f"<tr><td title='{html.escape(r.note, quote=True)}'>{html.escape(r.title)}</td><td align='right'>{acc}</td>"
                     f"<td align='right'>{100 * r.frr:.1f}%</td>{cells}</tr>")
        self.defenses.setText(
            "<b>Defenses side by side</b> <span style='color:#555'>(repaired networks: every one made or loaded "
            "for this model in the Pruning &amp; repair or Trigger scan tab)</span><table cellspacing='4'><tr><th align='left'>defense</th>"
            f"<th align='right'>&nbsp;clean acc&nbsp;</th><th align='right'>&nbsp;FRR&nbsp;</th>{head}</tr>{body}"
            "</table><span style='color:#555'>Detection counts the poisoned faces the BadNet sends to the target; "
            "attack success is over all the set's faces.<br>* = data the network was trained on (not held out). "
            "Hover a name to see how it was made.</span>"
        )

    def _curve(self, detector: str):
        """The detector's ROC curve and operating points, made once and reused."""
        if detector not in self._curves:
            colour = DETECTORS[detector].colour if detector in DETECTORS else (80, 80, 80)
            curve = self.plot.plot([], [], pen=pg.mkPen(colour, width=2))
            points = pg.ScatterPlotItem([], [], symbol="o", size=9, brush=pg.mkBrush(*colour), pen=pg.mkPen("w"))
            self.plot.addItem(points)
            self._curves[detector] = (curve, points)
        return self._curves[detector]

    def _draw(self) -> None:
        name = self.set_box.currentText()
        rows = [r for r in self.results if r.poisoned == name]
        self.legend.clear()
        shown = {r.detector for r in rows}
        for detector, (curve, points) in self._curves.items():
            if detector not in shown:
                curve.setData([], [])
                points.setData([], [])
        self.chance.setVisible(bool(rows))
        if not rows:
            self.plot.setTitle("Compare detectors to see their ROC curves", color="k")
            self.table.setText("")
            self.note.setText("")
            return
        self.plot.setTitle(f"{name}: {rows[0].sent_text()}, against {rows[0].n_clean} clean images",
                           color="k")
        for r in rows:
            curve, points = self._curve(r.detector)
            curve.setData(r.roc.frr, r.roc.detection)
            points.setData([p.frr for p in r.points], [p.detection for p in r.points])
            self.legend.addItem(curve, f"{r.title} (AUC {r.auc:.3f})")
        frrs = [p.target_frr for p in rows[0].points]
        head = "".join(f"<th align='right'>&nbsp;detection at {100 * f:g}% FRR&nbsp;</th>" for f in frrs)
        body, lines = "", []
        for r in rows:
            cells = "".join(f"<td align='right'>{100 * p.detection:.1f}% "
                            f"<span style='color:#777'>(FRR {100 * p.frr:.1f}%)</span></td>" for p in r.points)
            reach = families.reach(r.detector, r.params)
            zoo = reach.count_text() if reach else "<span style='color:#777'>not measured</span>"
            if reach and r.detector == "combined":
                lines.append(f"{html.escape(r.title)} on the zoo: {html.escape(reach.caught_text())}"
                             + (f"; {html.escape(reach.short_text())}" if reach.short else "") + ".")
            body += (f"<tr><td>{html.escape(r.title)}</td><td align='right'>&nbsp;{r.auc:.3f}&nbsp;</td>{cells}"
                     f"<td align='right'>&nbsp;{zoo}</td></tr>")
        self.table.setText(
            f"<table cellspacing='4'><tr><th align='left'>detector</th><th align='right'>&nbsp;AUC&nbsp;</th>{head}"
            "<th align='right'>&nbsp;attack zoo: caught at 95%+</th></tr>"
            f"{body}</table>")
        self.note.setText(
            "One threshold for all classes, set on the clean set's own scores; dots on the curves mark these "
            "operating points. These figures are measured on the loaded sets, whatever attack made them (the "
            "tool cannot tell its family). The last column is what each detector, with its default settings, "
            "caught on the ten attack families of our own zoo (patch, blend, SIG, WaNet, frequency, BPP, "
            "input-aware, SSBA; docs/attacks.md)." + "".join(f"<br>{line}" for line in lines))

    def export_png(self, path: str | Path) -> None:
        export_plot_png(self.plot, path)
        self.session.message.emit(f"exported ROC plot to {path}")

    def _export_clicked(self) -> None:
        window = self.window()
        if hasattr(window, "files"):
            window.files.export_roc()
