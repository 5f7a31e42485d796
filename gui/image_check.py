"""Dropped images as sortable rows: thumbnail, class, confidence against its threshold, every
calibrated detector's score and verdict side by side, and the verdict of the chosen defense."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QRect, QSize, QSortFilterProxyModel, Qt, Slot
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStyledItemDelegate,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from engine.detectors import DETECTORS
from gui.session import Session

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
# The confidence detector has the score, threshold and bar columns; every detector has a verdict
# column; the others also a score column ("0.031 < 0.474").
OTHER_DETECTORS = [name for name in DETECTORS if name != "confidence"]
COLUMNS = (
    "Image", "File", "Class", "Confidence", "Threshold", "Confidence vs threshold", "Verdict",
    "Confidence verdict",
    *[c for name in OTHER_DETECTORS for c in (DETECTORS[name].scale.short, f"{DETECTORS[name].title} verdict")],
    "G verdict",
)
COL_IMAGE, COL_FILE, COL_CLASS, COL_CONF, COL_THRESHOLD, COL_BAR, COL_VERDICT, COL_CONF_VERDICT = range(8)
COL_G = len(COLUMNS) - 1
DETECTOR_SCORE_COLS = {name: 8 + 2 * i for i, name in enumerate(OTHER_DETECTORS)}
DETECTOR_VERDICT_COLS = {"confidence": COL_CONF_VERDICT,
                         **{name: 9 + 2 * i for i, name in enumerate(OTHER_DETECTORS)}}
VERDICT_COLS = (COL_VERDICT, COL_G, *DETECTOR_VERDICT_COLS.values())
POISON_BG = QColor(250, 215, 215)
CLEAN_BG = QColor(220, 240, 220)


def to_pixmap(image: np.ndarray, scale: int = 1) -> QPixmap:
    h, w, _ = image.shape
    data = np.ascontiguousarray(image)
    qimage = QImage(data.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    pix = QPixmap.fromImage(qimage)
    return pix if scale == 1 else pix.scaled(w * scale, h * scale, Qt.AspectRatioMode.KeepAspectRatio)


class CheckedModel(QAbstractTableModel):
    """Rows of ``session.checked``; verdicts follow the session's current thresholds."""

    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self._rows = []
        self._pixmaps: dict[int, QPixmap] = {}
        session.checkedChanged.connect(self.reload)
        session.thresholdsChanged.connect(lambda _: self._verdicts_changed())
        session.calibrationChanged.connect(lambda _: self._verdicts_changed())
        session.verdictSourceChanged.connect(lambda _: self._verdicts_changed())

    @Slot()
    def reload(self) -> None:
        self.beginResetModel()
        self._rows = list(self.session.checked)
        self._pixmaps.clear()
        self.endResetModel()

    def _verdicts_changed(self) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, COL_CONF), self.index(len(self._rows) - 1, COL_G))

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def verdict(self, row: int) -> tuple[int | None, bool]:
        """(label, poisoned) from the defense chosen for verdicts."""
        label, n = self.session.active_verdict(self._rows[row])
        return label, label is not None and label == n

    def g_verdict(self, row: int) -> tuple[int | None, bool]:
        label = self.session.g_label(self._rows[row])
        g = self.session.repaired
        return label, label is not None and label == g.poisoned_label

    def detector_verdict(self, row: int, detector: str) -> tuple[int | None, bool]:
        _, _, label = self.session.detector_verdict(self._rows[row], detector)
        cal = self.session.calibrations.get(detector)
        return label, label is not None and label == cal.poisoned_label

    def _verdict_of_column(self, row: int, col: int) -> tuple[int | None, bool]:
        if col == COL_VERDICT:
            return self.verdict(row)
        if col == COL_G:
            return self.g_verdict(row)
        detector = next(d for d, c in DETECTOR_VERDICT_COLS.items() if c == col)
        return self.detector_verdict(row, detector)

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        r = self._rows[row]
        _, threshold, _ = self.session.detector_verdict(r, "confidence")
        if role == Qt.ItemDataRole.DecorationRole and col == COL_IMAGE:
            if row not in self._pixmaps:
                self._pixmaps[row] = to_pixmap(r.image)
            return self._pixmaps[row]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_FILE:
                return r.name.rsplit("/", 1)[-1]
            if col == COL_CLASS:
                return str(r.predicted)
            if col == COL_CONF:
                return f"{r.score:.6f}"
            if col == COL_THRESHOLD:
                return "—" if threshold is None else f"{threshold:.6f}"
            for detector, c in DETECTOR_SCORE_COLS.items():
                if col == c:
                    score, t, _ = self.session.detector_verdict(r, detector)
                    if score is None:
                        return "—"
                    return f"{score:.4f}" + ("" if t is None else f" {'<' if score < t else '≥'} {t:.4f}")
            if col in VERDICT_COLS:
                label, poisoned = self._verdict_of_column(row, col)
                if label is None:
                    if col == COL_G:
                        return "— (no G)"
                    if col != COL_VERDICT:
                        return "—"
                    return "no repaired network" if self.session.verdict_source == "repaired" else "not calibrated"
                return f"POISONED ({label})" if poisoned else f"clean: class {label}"
        if role == Qt.ItemDataRole.ToolTipRole and col in (COL_FILE, COL_IMAGE):
            return r.name + ("" if r.label is None else f"\nlabel in file name: {r.label}")
        if role == Qt.ItemDataRole.BackgroundRole and col in VERDICT_COLS:
            label, poisoned = self._verdict_of_column(row, col)
            return None if label is None else (POISON_BG if poisoned else CLEAN_BG)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_CLASS, COL_CONF, COL_THRESHOLD,
                                                                 *DETECTOR_SCORE_COLS.values()):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == SORT_ROLE:
            if col in VERDICT_COLS:
                label, _ = self._verdict_of_column(row, col)
                return -1 if label is None else label
            for detector, c in DETECTOR_SCORE_COLS.items():
                if col == c:
                    score = r.scores.get(detector)
                    return float("-inf") if score is None else score
            return {
                COL_IMAGE: row, COL_FILE: r.name, COL_CLASS: r.predicted, COL_CONF: r.score,
                COL_THRESHOLD: -1.0 if threshold is None else threshold,
                COL_BAR: r.score - (threshold or 0.0),
            }[col]
        if role == Qt.ItemDataRole.UserRole and col == COL_BAR:
            return r.score, threshold
        return None


class BarDelegate(QStyledItemDelegate):
    """Confidence as a bar, the class threshold as a black tick: red when below it."""

    def paint(self, painter: QPainter, option, index) -> None:
        score, threshold = index.data(Qt.ItemDataRole.UserRole)
        rect: QRect = option.rect.adjusted(6, 8, -6, -8)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(rect, QColor(235, 235, 235))
        below = threshold is not None and score < threshold
        colour = QColor(204, 0, 0) if below else QColor(52, 101, 164)
        painter.fillRect(QRect(rect.left(), rect.top(), int(rect.width() * float(score)), rect.height()), colour)
        if threshold is not None:
            x = rect.left() + int(rect.width() * float(threshold))
            painter.fillRect(QRect(x - 1, rect.top() - 4, 3, rect.height() + 8), QColor(0, 0, 0))
        painter.restore()


class ImageCheckPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.model = CheckedModel(session, self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)

        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setItemDelegateForColumn(COL_BAR, BarDelegate(self.table))
        self.table.verticalHeader().setDefaultSectionSize(60)
        self.table.verticalHeader().setVisible(False)
        self.table.setIconSize(QSize(47, 55))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in ((COL_IMAGE, 64), (COL_FILE, 160), (COL_CLASS, 50), (COL_CONF, 80), (COL_THRESHOLD, 80),
                           (COL_BAR, 150), (COL_VERDICT, 140), (COL_CONF_VERDICT, 120)):
            header.resizeSection(col, width)
        for col in (*DETECTOR_SCORE_COLS.values(), *DETECTOR_VERDICT_COLS.values()):
            header.resizeSection(col, 120)
        header.setStretchLastSection(True)
        self.table.sortByColumn(COL_IMAGE, Qt.SortOrder.AscendingOrder)  # the order they came in

        self.hint = QLabel("Drop images, folders or HDF5 sets anywhere on this window, or use Open images…\n"
                           "Each gets the network's class, its confidence against that class's threshold, "
                           "every calibrated detector's score and verdict, and a verdict: the class, or N = poisoned.")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #555; padding: 16px; border: 2px dashed #bbb; border-radius: 8px;")
        self.summary = QLabel()

        self.open_button = QPushButton("Open images…")
        self.export_button = QPushButton("Export CSV…")
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(session.clear_checked)
        self.source_box = QComboBox()
        self.source_box.addItem("active detector (Calibrate panel)", "calibration")
        self.source_box.addItem("any calibrated detector flags", "any")
        self.source_box.addItem("repaired network G (fine-pruning)", "repaired")
        self.source_box.setToolTip("Which defense gives the Verdict column")
        self.source_box.currentIndexChanged.connect(lambda i: session.set_verdict_source(self.source_box.itemData(i)))
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.clear_button)
        buttons.addSpacing(12)
        buttons.addWidget(QLabel("Verdict by"))
        buttons.addWidget(self.source_box)
        buttons.addStretch(1)
        buttons.addWidget(self.summary)

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.hint)
        layout.addWidget(self.table, 1)

        session.checkedChanged.connect(self._update_summary)
        session.thresholdsChanged.connect(lambda _: self._update_summary())
        session.calibrationChanged.connect(lambda _: self._update_summary())
        session.verdictSourceChanged.connect(lambda _: self._update_summary())
        self._update_summary()

    @Slot()
    def _update_summary(self) -> None:
        n = self.model.rowCount()
        self.hint.setVisible(n == 0)
        self.export_button.setEnabled(n > 0)
        self.clear_button.setEnabled(n > 0)
        if n == 0:
            self.summary.setText("")
            return
        flagged = sum(1 for row in range(n) if self.model.verdict(row)[1])
        ready = self.model.verdict(0)[0] is not None
        self.summary.setText(f"{n} image(s)" + (f", {flagged} flagged as poisoned" if ready else ", no verdict yet"))
