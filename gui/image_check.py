"""Checked images as sortable rows: thumbnail, class, confidence against its threshold, the verdict
of the chosen defense and every defense's word in one compact column; the selected image's
scores, thresholds and verdicts in full in a detail pane below."""

from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QRect, QSize, QSortFilterProxyModel, Qt, QTimer, Slot
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStyledItemDelegate,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from engine.detectors import DETECTORS
from engine.workflow import RowVerdict
from gui.session import Session

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
COLUMNS = ("Image", "File", "Class", "Confidence", "vs threshold", "Verdict", "Every defense")
COL_IMAGE, COL_FILE, COL_CLASS, COL_CONF, COL_BAR, COL_VERDICT, COL_DEFENSES = range(len(COLUMNS))
POISON_BG = QColor(250, 215, 215)
CLEAN_BG = QColor(220, 240, 220)


def to_pixmap(image: np.ndarray, scale: int = 1) -> QPixmap:
    h, w, _ = image.shape
    data = np.ascontiguousarray(image)
    qimage = QImage(data.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    pix = QPixmap.fromImage(qimage)
    return pix if scale == 1 else pix.scaled(w * scale, h * scale, Qt.AspectRatioMode.KeepAspectRatio)


def verdict_text(v: RowVerdict) -> str:
    return f"POISONED ({v.label})" if v.poisoned else f"clean: class {v.label}"


class CheckedModel(QAbstractTableModel):
    """Rows of the check controller; verdicts follow the current thresholds and verdict source."""

    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self._rows = []
        self._pixmaps: dict[int, QPixmap] = {}
        session.check.checkedChanged.connect(self.reload)
        session.calib.thresholdsChanged.connect(lambda _: self._verdicts_changed())
        session.calib.calibrationChanged.connect(lambda _: self._verdicts_changed())
        session.check.verdictSourceChanged.connect(lambda _: self._verdicts_changed())
        session.repair.repairedChanged.connect(lambda _: self._verdicts_changed())

    @Slot()
    def reload(self) -> None:
        self.beginResetModel()
        self._rows = list(self.session.check.rows)
        self._pixmaps.clear()
        self.endResetModel()

    def _verdicts_changed(self) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, COL_CONF), self.index(len(self._rows) - 1, COL_DEFENSES))

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def row(self, row: int):
        return self._rows[row]

    def verdict(self, row: int) -> tuple[int | None, bool]:
        """(label, poisoned) from the defense chosen for verdicts."""
        v = self.session.check.rules.verdict(self._rows[row])
        return v.label, v.poisoned

    def g_verdict(self, row: int) -> tuple[int | None, bool]:
        v = self.session.check.rules.repaired_verdict(self._rows[row])
        return v.label, v.poisoned

    def detector_verdict(self, row: int, detector: str) -> RowVerdict:
        return self.session.check.rules.detector(self._rows[row], detector)

    def defenses(self, row: int) -> list[tuple[str, RowVerdict]]:
        """Every calibrated detector's verdict and G's, in registry order."""
        rules = self.session.check.rules
        r = self._rows[row]
        out = [(DETECTORS[d].title, rules.detector(r, d)) for d in DETECTORS if d in rules.calibrations]
        if rules.repaired is not None:
            out.append(("G", rules.repaired_verdict(r)))
        return out

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        r = self._rows[row]
        conf = self.detector_verdict(row, "confidence")
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
                return f"{r.confidence:.6f}"
            if col == COL_VERDICT:
                label, poisoned = self.verdict(row)
                if label is None:
                    return "no repaired network" if self.session.check.verdict_source == "repaired" else "not calibrated"
                return f"POISONED ({label})" if poisoned else f"clean: class {label}"
            if col == COL_DEFENSES:
                parts = [f"{name} {'✗' if v.poisoned else '✓'}" for name, v in self.defenses(row) if v.ready]
                return " · ".join(parts) if parts else "—"
        if role == Qt.ItemDataRole.ToolTipRole:
            if col in (COL_FILE, COL_IMAGE):
                return r.name + ("" if r.label is None else f"\nlabel from the file: {r.label}")
            if col == COL_BAR:
                t = "no threshold (not calibrated)" if conf.threshold is None else f"threshold {conf.threshold:.6f}"
                return f"top-1 confidence {r.confidence:.6f}; {t}"
            if col == COL_DEFENSES:
                return "\n".join(self.defense_lines(row)) or "no defense loaded"
        if role == Qt.ItemDataRole.BackgroundRole and col == COL_VERDICT:
            label, poisoned = self.verdict(row)
            return None if label is None else (POISON_BG if poisoned else CLEAN_BG)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_CLASS, COL_CONF):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == SORT_ROLE:
            if col == COL_VERDICT:
                label, _ = self.verdict(row)
                return -1 if label is None else label
            if col == COL_DEFENSES:
                return sum(v.poisoned for _, v in self.defenses(row))
            return {
                COL_IMAGE: row, COL_FILE: r.name, COL_CLASS: r.predicted, COL_CONF: r.confidence,
                COL_BAR: r.confidence - (conf.threshold or 0.0),
            }[col]
        if role == Qt.ItemDataRole.UserRole and col == COL_BAR:
            return r.confidence, conf.threshold
        return None

    def defense_lines(self, row: int) -> list[str]:
        """Plain lines: each defense's score against its threshold and its verdict."""
        out = []
        for name, v in self.defenses(row):
            if name == "G":
                how = "B and B' agree" if v.score == 1.0 else "B and B' disagree"
            else:
                d = next(d for d in DETECTORS.values() if d.title == name)
                unit = f" {d.scale.unit}" if d.scale.unit else ""
                how = f"{d.scale.format(v.score)}{unit} {'<' if v.poisoned else '≥'} {d.scale.format(v.threshold)}"
            out.append(f"{name}: {how} → {verdict_text(v)}")
        return out


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
        if threshold is not None and np.isfinite(threshold):
            x = rect.left() + int(rect.width() * float(np.clip(threshold, 0.0, 1.0)))
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
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setItemDelegateForColumn(COL_BAR, BarDelegate(self.table))
        self.table.verticalHeader().setDefaultSectionSize(60)
        self.table.verticalHeader().setVisible(False)
        self.table.setIconSize(QSize(47, 55))
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in ((COL_IMAGE, 60), (COL_FILE, 150), (COL_CLASS, 46), (COL_CONF, 78), (COL_BAR, 120),
                           (COL_VERDICT, 130)):
            header.resizeSection(col, width)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(40)
        self.table.sortByColumn(COL_IMAGE, Qt.SortOrder.AscendingOrder)  # the order they came in
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._update_detail())

        self.detail = QLabel()
        self.detail.setTextFormat(Qt.TextFormat.RichText)
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.detail.setStyleSheet("padding: 4px;")
        self.detail_image = QLabel()
        self.detail_image.setFixedSize(47 * 2, 55 * 2)
        # where the network looks (sensitivity map) and, after a scan flagged the class, its mask
        self.detail_heat = QLabel()
        self.detail_heat.setFixedSize(47 * 2, 55 * 2)
        self.detail_heat.setToolTip("Pixels that drive the predicted class: how much more likely the class is when "
                                    "they are kept than when hidden, over 800 random masks (RISE)")
        self.detail_mask = QLabel()
        self.detail_mask.setFixedSize(47 * 2, 55 * 2)
        self.detail_mask.setToolTip("The trigger scan's reversed trigger for the predicted class (a flagged class)")
        self._heat_line = ""
        self._explain_key = None
        self._explain_timer = QTimer(self)
        self._explain_timer.setSingleShot(True)
        self._explain_timer.setInterval(200)
        self._explain_timer.timeout.connect(self._request_explanation)
        pictures = QWidget()
        pictures_layout = QGridLayout(pictures)
        pictures_layout.setContentsMargins(0, 0, 0, 0)
        pictures_layout.addWidget(self.detail_image, 0, 0)
        pictures_layout.addWidget(self.detail_heat, 0, 1)
        pictures_layout.addWidget(self.detail_mask, 0, 2)
        pictures.setMaximumWidth(47 * 2 * 3 + 24)
        detail_box = QWidget()
        detail_row = QHBoxLayout(detail_box)
        detail_row.setContentsMargins(0, 0, 0, 0)
        detail_row.addWidget(pictures, 0, Qt.AlignmentFlag.AlignTop)
        detail_row.addWidget(self.detail, 1)

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
        self.clear_button.clicked.connect(session.check.clear)
        self.source_box = QComboBox()
        self.source_box.addItem("active detector", "calibration")
        self.source_box.addItem("any detector flags", "any")
        self.source_box.addItem("repaired network G", "repaired")
        self.source_box.setToolTip("Which defense gives the Verdict column: the detector chosen in the Calibrate "
                                   "panel, any calibrated detector, or the repaired network G (fine-pruning, "
                                   "magnitude pruning, unlearning or the N+1 network)")
        self.source_box.currentIndexChanged.connect(
            lambda i: session.check.set_verdict_source(self.source_box.itemData(i)))
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.clear_button)
        buttons.addSpacing(8)
        buttons.addWidget(QLabel("Verdict by"))
        buttons.addWidget(self.source_box)
        buttons.addStretch(1)
        buttons.addWidget(self.summary)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(detail_box)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setSizes([400, 120])
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.hint, 1)
        layout.addWidget(self.splitter, 1)

        session.check.checkedChanged.connect(self._update_summary)
        session.scan.explained.connect(self._on_explained)
        session.scan.scanChanged.connect(lambda _: self._update_detail())
        for signal in (session.calib.thresholdsChanged, session.calib.calibrationChanged,
                       session.check.verdictSourceChanged, session.repair.repairedChanged):
            signal.connect(lambda *_: self._update_summary())
        self._update_summary()

    @Slot()
    def _update_summary(self) -> None:
        n = self.model.rowCount()
        self.hint.setVisible(n == 0)
        self.splitter.setVisible(n > 0)
        self.export_button.setEnabled(n > 0)
        self.clear_button.setEnabled(n > 0)
        self._update_detail()
        if n == 0:
            self.summary.setText("")
            return
        flagged = sum(1 for row in range(n) if self.model.verdict(row)[1])
        ready = self.model.verdict(0)[0] is not None
        self.summary.setText(f"{n} image(s)" + (f", {flagged} flagged as poisoned" if ready else ", no verdict yet"))

    def _update_detail(self) -> None:
        row = self._current_source_row()
        if row is None:
            self.detail.setText("<span style='color:#555'>Select an image to see every defense's score, "
                                "threshold and verdict.</span>")
            self.detail_image.clear()
            self.detail_heat.clear()
            self.detail_mask.clear()
            self._heat_line = ""
            self._explain_key = None
            return
        r = self.model.row(row)
        self.detail_image.setPixmap(to_pixmap(r.image, 2))
        self._show_mask(r)
        key = (r.name, r.predicted, r.image.tobytes())
        if key != self._explain_key:
            self._explain_key = key
            self.detail_heat.clear()
            self._heat_line = "finding where the network looks…"
            self._explain_timer.start()
        head = (f"<b>{html.escape(r.name)}</b><br>class {r.predicted}, top-1 confidence {r.confidence:.6f}"
                + ("" if r.label is None else f", label from the file {r.label}"))
        lines = [html.escape(line) for line in self.model.defense_lines(row)] or ["no defense loaded yet"]
        if self._heat_line:
            lines.append(f"<span style='color:#555'>{html.escape(self._heat_line)}</span>")
        self.detail.setText(head + "<br>" + "<br>".join(lines))

    def _current_source_row(self) -> int | None:
        """The selected row in the model's own order (the table may be sorted)."""
        index = self.table.currentIndex()
        if not index.isValid() or self.model.rowCount() == 0:
            return None
        return self.proxy.mapToSource(index).row()

    def _current_row(self):
        row = self._current_source_row()
        return None if row is None else self.model.row(row)

    def _show_mask(self, r) -> None:
        from engine.explain import mask_overlay

        mask = self.session.scan.flagged_mask(r.predicted)
        if mask is None or mask.shape != r.image.shape[:2]:
            self.detail_mask.clear()
            self.detail_mask.setVisible(False)
            return
        self.detail_mask.setPixmap(to_pixmap(mask_overlay(r.image, mask), 2))
        self.detail_mask.setVisible(True)

    @Slot()
    def _request_explanation(self) -> None:
        r = self._current_row()
        if r is not None:
            self.session.scan.explain(r.name, r.image)

    @Slot(object)
    def _on_explained(self, named) -> None:
        from engine.explain import overlay

        name, e = named
        r = self._current_row()
        if r is None or r.name != name or not np.array_equal(r.image, e.image):
            return
        self.detail_heat.setPixmap(to_pixmap(overlay(e.image, e.heat), 2))
        mask = ("; third picture, in cyan: the trigger scan's reversed trigger for this flagged class"
                if self.detail_mask.isVisible() else "")
        self._heat_line = (f"second picture: the pixels that drive class {e.predicted} (random-mask sensitivity, "
                           f"RISE: up to {e.peak:.2f} more likely when kept than hidden){mask}")
        self._update_detail()
