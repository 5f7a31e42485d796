"""Score histograms with a draggable threshold: per class, and pooled over all classes.

Clean scores are drawn with each loaded poisoned set overlaid in its own colour. The threshold is
an ``InfiniteLine`` kept in two-way sync with a ``QLabeledDoubleSlider``; as it moves, the
false-rejection rate on clean data and the detection rate on each poisoned set update live.
Confidences of real BadNets pile up just below 1.0, so the x axis can also show
-log10(1 - confidence), which spreads 0.99, 0.9999 and 0.999999 apart (the axes' maths, with no
Qt in it, is :mod:`gui.score_axes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider, QSearchableComboBox

from engine.evaluation.metrics import detection
from engine.workflow import CLEAN, POISONED, SetScores
from gui.plots import export_plot_png
from gui.score_axes import AXES, ScoreAxis, axes_for  # noqa: F401  (the axes the panel offers)
from gui.session import Session

CLEAN_COLOUR = (52, 101, 164)
POISON_COLOURS = [(204, 0, 0), (245, 121, 0), (117, 80, 123), (78, 154, 6), (193, 125, 17)]
BINS = 50


class ScoreTicks(pg.AxisItem):
    """Bottom axis whose tick labels are raw scores, whatever the display transform."""

    def __init__(self):
        super().__init__("bottom")
        self.axis: ScoreAxis = next(iter(AXES.values()))

    def tickStrings(self, values, scale, spacing):
        return [self.axis.tick_text(v * scale) for v in values]


@dataclass(frozen=True)
class Series:
    key: str  # the set, whatever its count
    name: str
    values: np.ndarray  # raw scores
    colour: tuple[int, int, int]


class ThresholdHistogram(QWidget):
    """One histogram plot with a threshold line and a slider that move together."""

    thresholdEdited = Signal(float)  # raw score, from the user's line drag or slider

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.axis = next(iter(AXES.values()))
        self._syncing = False
        self._curves: dict[str, pg.PlotDataItem] = {}  # per set, built once
        self.fractions = False  # y as the share of each set rather than image counts

        self.ticks = ScoreTicks()
        self.plot = pg.PlotWidget(background="w", axisItems={"bottom": self.ticks})
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setMinimumHeight(220)
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("left", "images")
        self.legend = self.plot.addLegend(offset=(10, 10), labelTextColor="k")
        self.plot.setMouseEnabled(x=False, y=False)
        self.line = pg.InfiniteLine(
            angle=90,
            movable=True,
            pen=pg.mkPen((20, 20, 20), width=2),
            hoverPen=pg.mkPen((255, 140, 0), width=3),
            label="threshold",
            labelOpts={"position": 0.6, "color": (20, 20, 20), "fill": (255, 255, 255, 200)},
        )
        self.plot.addItem(self.line)
        self.line.sigPositionChanged.connect(self._on_line_moved)

        # The slider always speaks raw scores, so its box shows the real threshold.
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.slider.setDecimals(6)
        self.slider.setRange(0.0, 1.0)
        self.slider.setSingleStep(0.0001)
        self.slider.valueChanged.connect(self._on_slider_moved)
        self.readout = QLabel()
        self.readout.setWordWrap(True)
        self.readout.setTextFormat(Qt.TextFormat.RichText)
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        row = QHBoxLayout()
        row.addWidget(QLabel("Threshold"))
        row.addWidget(self.slider, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addLayout(row)
        layout.addWidget(self.readout)
        self.set_axis(self.axis)

    # --- public ---------------------------------------------------------------------------

    def set_axis(self, axis: ScoreAxis) -> None:
        raw = self.threshold
        self.axis = self.ticks.axis = axis
        self.plot.setLabel("bottom", axis.label)
        self.plot.setXRange(axis.lo, axis.hi, padding=0.02)
        self._syncing = True  # new bounds may clamp the line; that is no edit of the threshold
        try:
            self.line.setBounds((axis.lo, axis.hi))
            self.slider.setRange(*axis.raw_range())
        finally:
            self._syncing = False
        self.ticks.picture = None  # redraw tick labels for the new mapping
        self.ticks.update()
        self.set_threshold(raw)

    def set_series(self, series: list[Series]) -> None:
        """Draw each set's histogram: a set's curve is made the first time it is seen, then only
        updated with ``setData``; curves of sets no longer shown are emptied and leave the legend."""
        edges = np.linspace(self.axis.lo, self.axis.hi, BINS + 1)
        self.legend.clear()
        shown_keys = {s.key for s in series}
        for key, curve in self._curves.items():
            if key not in shown_keys:
                curve.setData([], [])
        for s in series:
            curve = self._curves.get(s.key)
            if curve is None:
                curve = self.plot.plot([], [], pen=pg.mkPen(s.colour, width=2), brush=pg.mkBrush(*s.colour, 70))
                self._curves[s.key] = curve
            curve.setPen(pg.mkPen(s.colour, width=2))
            curve.setBrush(pg.mkBrush(*s.colour, 70))
            values = np.asarray(s.values, dtype=np.float64)
            values = values[np.isfinite(values)]
            shown = np.clip(self.axis.to_display(values), self.axis.lo, self.axis.hi)
            counts, _ = np.histogram(shown, bins=edges)
            y = counts / max(1, len(shown)) if self.fractions else counts
            curve.setData(edges, y, stepMode="center", fillLevel=0)
            self.legend.addItem(curve, s.name)
        self.plot.setLabel("left", "share of the set's images" if self.fractions else "images")

    @property
    def threshold(self) -> float:
        return float(self.slider.value())

    def set_threshold(self, raw: float) -> None:
        """Move line and slider without emitting :attr:`thresholdEdited`. Only finite values reach Qt."""
        raw = float(raw)
        if not np.isfinite(raw):
            return
        self._syncing = True
        try:
            self.slider.setValue(float(raw))
            self.line.setValue(float(np.clip(self.axis.to_display(raw), self.axis.lo, self.axis.hi)))
        finally:
            self._syncing = False

    def export_png(self, path: str | Path) -> None:
        export_plot_png(self.plot, path)

    # --- sync -----------------------------------------------------------------------------

    @Slot(object)
    def _on_line_moved(self, line) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.slider.setValue(float(self.axis.to_raw(line.value())))
        finally:
            self._syncing = False
        self.thresholdEdited.emit(self.threshold)

    @Slot(float)
    def _on_slider_moved(self, value: float) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.line.setValue(float(np.clip(self.axis.to_display(value), self.axis.lo, self.axis.hi)))
        finally:
            self._syncing = False
        self.thresholdEdited.emit(self.threshold)


class HistogramPanel(QWidget):
    """Per-class and pooled histograms of the active detector's scores."""

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self._scores: list[SetScores] = []
        self._class = 0
        self._class_picked_for = None  # the calibration for which the class was auto-picked
        self._pooled_for = None  # the calibration the pooled line was placed for

        self.class_box = QSearchableComboBox()
        self.class_box.setMinimumWidth(220)
        self.class_box.setToolTip("Type a class number to find it")
        self.class_box.currentIndexChanged.connect(self._on_class_picked)
        self.axis_box = QComboBox()
        self.axis_box.addItems(list(AXES))
        self._axes_detector = "confidence"  # whose axes the box lists
        self._axes = AXES
        self.axis_box.setToolTip(
            "BadNets push triggered images to confidence ~1.0; the log view spreads 0.99, 0.9999 and\n"
            "0.999999 apart (x = -log10(1 - confidence)), so clean and poisoned piles separate.\n"
            "STRIP scores are entropies in bits, on a linear axis."
        )
        self.axis_box.currentTextChanged.connect(self._on_axis_picked)
        self.fraction_box = QCheckBox("share of each set")
        self.fraction_box.setToolTip("Plot each set as fractions of its images, so small and large sets compare")
        self.fraction_box.setChecked(True)
        self.fraction_box.toggled.connect(self._on_fractions)
        self.export_button = QPushButton("Export PNG…")
        self.export_button.clicked.connect(self._export_clicked)

        top = QHBoxLayout()
        top.addWidget(QLabel("Class"))
        top.addWidget(self.class_box)
        top.addSpacing(12)
        top.addWidget(QLabel("x axis"))
        top.addWidget(self.axis_box)
        top.addSpacing(12)
        top.addWidget(self.fraction_box)
        top.addStretch(1)
        top.addWidget(self.export_button)

        self.per_class = ThresholdHistogram()
        self.per_class.thresholdEdited.connect(self._on_class_threshold)
        self.pooled = ThresholdHistogram()
        self.pooled.thresholdEdited.connect(lambda _: self._update_pooled_readout())
        self.apply_all = QPushButton("Use this threshold for every class")
        self.apply_all.clicked.connect(lambda: self.session.calib.set_all_thresholds(self.pooled.threshold))
        pooled_page = QWidget()
        pooled_layout = QVBoxLayout(pooled_page)
        pooled_layout.setContentsMargins(0, 0, 0, 0)
        pooled_layout.addWidget(self.pooled, 1)
        pooled_layout.addWidget(self.apply_all, 0, Qt.AlignmentFlag.AlignLeft)

        self.per_class.fractions = self.pooled.fractions = self.fraction_box.isChecked()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.per_class, "Per class")
        self.tabs.addTab(pooled_page, "All classes (pooled)")
        self.empty_note = QLabel("Calibrate (left) to see clean and poisoned score histograms here.")
        self.empty_note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_note.setStyleSheet("color: #555; padding: 6px;")

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.empty_note)
        layout.addWidget(self.tabs, 1)

        session.calib.setScoresChanged.connect(self._on_scores)
        session.calib.thresholdsChanged.connect(self._on_thresholds_changed)
        session.calib.calibrationChanged.connect(lambda cal: self._on_scores(self.session.calib.set_scores))
        self._on_scores([])

    # --- public ---------------------------------------------------------------------------

    @property
    def current_class(self) -> int:
        return self._class

    def show_class(self, cls: int) -> None:
        if 0 <= int(cls) < self.class_box.count():  # item i is class i
            self.class_box.setCurrentIndex(int(cls))

    def export_png(self, path: str | Path) -> None:
        view = self.per_class if self.tabs.currentIndex() == 0 else self.pooled
        view.export_png(path)
        self.session.message.emit(f"exported plot to {path}")

    # --- slots ----------------------------------------------------------------------------

    @Slot(object)
    def _on_scores(self, scores) -> None:
        self._scores = list(scores)
        cal = self.session.calib.active
        self._match_axes(cal)
        has_data = cal is not None and bool(self._scores)
        self.empty_note.setVisible(not has_data)
        self.tabs.setEnabled(has_data)
        self.apply_all.setEnabled(has_data)
        for hist in (self.per_class, self.pooled):
            hist.line.setVisible(has_data)  # no threshold to show before a calibration
        self._fill_class_box()
        self._refresh_plots()

    def _fill_class_box(self) -> None:
        cal = self.session.calib.active
        wanted = self._class
        self.class_box.blockSignals(True)
        if cal is None:
            self.class_box.clear()
        else:
            clean = self._predicted_counts(CLEAN, cal.num_classes)
            bad = self._predicted_counts(POISONED, cal.num_classes)
            texts = [f"class {c}  ({clean[c]} clean{f', {bad[c]} poisoned' if bad[c] else ''})"
                     for c in range(cal.num_classes)]
            # Item i is class i. One call for all items (each addItem of the searchable box
            # resets its completer: 1283 of them stalled the window), and when the classes are
            # the same, only the texts that changed (the sets' scores arrive one by one).
            if self.class_box.count() == len(texts):
                for c, text in enumerate(texts):
                    if self.class_box.itemText(c) != text:
                        self.class_box.setItemText(c, text)
            else:
                self.class_box.clear()
                self.class_box.addItems(texts)
            if self._class_picked_for is not cal and bad.any():
                wanted = int(bad.argmax())  # open on the class the attack targets
                self._class_picked_for = cal
            wanted = min(wanted, cal.num_classes - 1)
            self.class_box.setCurrentIndex(wanted)
        self.class_box.blockSignals(False)
        self._class = wanted

    def _predicted_counts(self, kind: str, n: int) -> np.ndarray:
        counts = np.zeros(n, dtype=int)
        for s in self._scores:
            if s.kind == kind:
                counts += np.bincount(s.scores.predicted, minlength=n)[:n]
        return counts

    @Slot(int)
    def _on_class_picked(self, index: int) -> None:
        if index < 0:
            return
        self._class = index  # item i is class i
        self._refresh_plots()

    def _match_axes(self, cal) -> None:
        """Offer the axes of the active detector's scores (and fit the entropy axis to them)."""
        detector = cal.detector if cal is not None else "confidence"
        axes = axes_for(detector, [s.scores.values for s in self._scores])
        if detector != self._axes_detector or axes is not self._axes:
            changed = list(axes) != list(self._axes)
            self._axes_detector, self._axes = detector, axes
            if changed:
                self.axis_box.blockSignals(True)
                self.axis_box.clear()
                self.axis_box.addItems(list(axes))
                self.axis_box.blockSignals(False)
            axis = axes[self.axis_box.currentText()]
            self.per_class.set_axis(axis)
            self.pooled.set_axis(axis)

    @Slot(str)
    def _on_axis_picked(self, name: str) -> None:
        if name not in self._axes:
            return
        self.per_class.set_axis(self._axes[name])
        self.pooled.set_axis(self._axes[name])
        self._refresh_plots()

    @Slot(bool)
    def _on_fractions(self, on: bool) -> None:
        self.per_class.fractions = self.pooled.fractions = on
        self._refresh_plots()

    @Slot(float)
    def _on_class_threshold(self, raw: float) -> None:
        self.session.calib.set_threshold(self._class, raw)

    @Slot(int)
    def _on_thresholds_changed(self, cls: int) -> None:
        cal = self.session.calib.active
        if cal is None:
            return
        if cls in (-1, self._class):
            self.per_class.set_threshold(float(cal.thresholds[self._class]))
        if cls == -1:
            self.pooled.set_threshold(float(cal.thresholds[self._class]))
        self._update_class_readout()
        self._update_pooled_readout()

    def _export_clicked(self) -> None:
        window = self.window()
        if hasattr(window, "files"):
            window.files.export_plot()

    # --- drawing --------------------------------------------------------------------------

    def _series(self, cls: int | None) -> list[Series]:
        out, k = [], 0
        for s in self._scores:
            values = s.scores.values if cls is None else s.scores.values[s.scores.predicted == cls]
            if s.kind == CLEAN:
                out.append(Series(CLEAN, f"clean ({len(values)})", values, CLEAN_COLOUR))
            else:
                out.append(Series(f"{POISONED}:{s.name}", f"{s.name} ({len(values)})", values,
                                  POISON_COLOURS[k % len(POISON_COLOURS)]))
                k += 1
        return out

    def _refresh_plots(self) -> None:
        cal = self.session.calib.active
        if cal is None or not self._scores:
            self.per_class.set_series([])
            self.pooled.set_series([])
            self.per_class.readout.setText("")
            self.pooled.readout.setText("")
            return
        self.per_class.set_series(self._series(self._class))
        self.per_class.plot.setTitle(f"class {self._class}", color="k")
        self.per_class.set_threshold(float(cal.thresholds[self._class]))
        self.pooled.set_series(self._series(None))
        self.pooled.plot.setTitle("all classes", color="k")
        if self._pooled_for is not cal:
            self.pooled.set_threshold(cal.pooled_threshold)
            self._pooled_for = cal
        self._update_class_readout()
        self._update_pooled_readout()

    def _update_class_readout(self) -> None:
        cal = self.session.calib.active
        if cal is None or not self._scores:
            return
        c = self._class
        t = float(cal.thresholds[c])
        source = "pooled (too few clean images)" if cal.pooled[c] else f"own, from {cal.counts[c]} clean images"
        lines = [f"<b>class {c}</b>: threshold <b>{t:.6f}</b> ({source})"]
        for s in self._scores:
            mine = s.scores.predicted == c
            below = s.scores.values[mine] < t
            whole = s.scores.values < cal.thresholds[s.scores.predicted]
            if s.kind == CLEAN:
                lines.append(
                    f"<span style='color:rgb{CLEAN_COLOUR}'>clean</span>: false rejection for this class "
                    f"<b>{_pct(below)}</b> ({int(below.sum())} of {int(mine.sum())}); "
                    f"over all classes {_pct(whole)}"
                )
            else:
                lines.append(f"{s.name}: flagged here {int(below.sum())} of {int(mine.sum())}; over the whole set "
                             + detection_text(whole, s))
        self.per_class.readout.setText("<br>".join(lines))

    def _update_pooled_readout(self) -> None:
        if self.session.calib.active is None or not self._scores:
            return
        t = self.pooled.threshold
        parts = [f"one threshold <b>{t:.6f}</b> for every class"]
        for s in self._scores:
            below = s.scores.values < t
            if s.kind == CLEAN:
                parts.append(f"clean: false rejection <b>{_pct(below)}</b>")
            else:
                parts.append(f"{s.name}: " + detection_text(below, s))
        self.pooled.readout.setText("<br>".join(parts))


def detection_text(flagged: np.ndarray, s: SetScores) -> str:
    """Detection as everywhere (engine.evaluation.metrics.detection: over the images the BadNet
    sends to the target), with the share of the whole set beside it."""
    found, n_sent = detection(flagged, s.scores.predicted, s.target)
    counted = f"of the {n_sent} sent to class {s.target}" if n_sent else "none sent to the target: of all"
    return (f"detection <b>{'n/a' if np.isnan(found) else f'{100 * found:.1f}%'}</b> ({counted}); "
            f"flagged, all poisoned {_pct(flagged)}")


def _pct(mask: np.ndarray) -> str:
    return "n/a" if mask.size == 0 else f"{100.0 * mask.mean():.1f}%"
