"""The Trigger scan tab: is this network backdoored, which class, what does the trigger look like.

Ranked classes on the left (partial results while the scan runs); for the chosen class its mask,
pattern and mask x pattern, and a few clean faces before and after stamping with the network's
answer under each; a button that stamps the trigger on every loaded clean face; PNG export; and a
way to repair by unlearning (the Pruning & repair tab, unlearning chosen)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from superqt import QCollapsible

from engine.errors import InputError
from engine.scan import SCAN_IMAGES, ScanSettings, stats
from engine.scan import SETTINGS as SCAN_SETTINGS
from engine.scan.evidence import p_text
from gui.detector_settings import SettingsPages
from gui.folders import default_folder
from gui.image_check import to_pixmap
from gui.session import Session

class _ScanSettingsOwner:
    """What the settings form needs of the scan: the settings it declares."""

    settings = SCAN_SETTINGS


def columns() -> list[str]:
    """The table's headers: rank and class, each registered statistic's table columns, the
    combined p-value, the held-out flips and the flag (all but the last right-aligned)."""
    return (["Rank", "Class"] + [c.header for s in stats.active() for c in s.columns if c.table]
            + ["p", "Flips", "Flagged"])


ZOOM = 2
SHAPE_ZOOM = 1.4
FACE_ZOOM = 1.5
FLAG_BG = "#f6d5d3"
OUTCOME_COLOURS = {"backdoor": "#b3261e", "clean": "#1e6b30", "inconclusive": "#8a5a00"}


def _tile(image: np.ndarray, caption: str, colour: str = "#222", zoom: float = ZOOM) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(1, 1, 1, 1)
    layout.setSpacing(0)
    picture = QLabel()
    h, w = image.shape[:2]
    picture.setPixmap(to_pixmap(image).scaled(int(w * zoom), int(h * zoom), Qt.AspectRatioMode.KeepAspectRatio,
                                              Qt.TransformationMode.FastTransformation))
    text = QLabel(caption)
    text.setAlignment(Qt.AlignmentFlag.AlignCenter)
    text.setStyleSheet(f"color: {colour};")
    layout.addWidget(picture, 0, Qt.AlignmentFlag.AlignCenter)
    layout.addWidget(text)
    return box


def _as_image(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)


class ScanPanel(QWidget):
    repairRequested = Signal(list)  # classes to unlearn: the window opens its repair tab

    def __init__(self, session: Session, settings: QSettings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.settings = settings
        self._shown: int | None = None

        self.run_button = QPushButton("Run trigger scan")
        self.run_button.setToolTip("The largest logit margin of every class (MM-BD), then the smallest reversed "
                                   "trigger of the candidates (Neural Cleanse): about 2-3 minutes for 1283 classes")
        self.run_button.clicked.connect(self.start_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(session.runner.cancel)
        self.images_spin = QSpinBox()
        self.images_spin.setRange(4, 10_000)
        self.images_spin.setValue(SCAN_IMAGES)
        self.images_spin.setToolTip("Clean faces the scan uses, drawn at random from the loaded clean data "
                                    "(a third are held out to test the reversed triggers)")
        self.load_button = QPushButton("Load scan…")
        self.load_button.clicked.connect(self._load_clicked)
        self.save_button = QPushButton("Save scan…")
        self.save_button.clicked.connect(self._save_clicked)
        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addWidget(self.cancel_button)
        top.addWidget(QLabel("clean faces"))
        top.addWidget(self.images_spin)
        top.addSpacing(12)
        top.addWidget(self.load_button)
        top.addWidget(self.save_button)
        top.addStretch(1)

        self.verdict = QLabel("Run the scan to ask: is this network backdoored, which class is the target, "
                              "and what does its trigger look like?")
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.RichText)
        self.verdict.setStyleSheet("padding: 4px;")

        self.table = QTableWidget(0, len(columns()))
        self.table.setHorizontalHeaderLabels(columns())
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self._set_header_tips()
        self.table.currentCellChanged.connect(lambda *_: self._class_chosen())
        self.table_note = QLabel("")
        self.table_note.setWordWrap(True)
        self.table_note.setStyleSheet("color: #555;")
        self.table.setMinimumWidth(300)

        # the chosen class
        self.detail = QWidget()
        self.detail.setStyleSheet("background: white;")
        self.detail_title = QLabel("")
        self.detail_title.setTextFormat(Qt.TextFormat.RichText)
        self.detail_title.setWordWrap(True)
        self.trigger_row = QHBoxLayout()
        self.faces_grid = QGridLayout()
        self.faces_grid.setHorizontalSpacing(4)
        self.faces_grid.setAlignment(Qt.AlignmentFlag.AlignLeft)  # compact on a wide window
        detail_layout = QVBoxLayout(self.detail)
        detail_layout.addWidget(self.detail_title)
        detail_layout.addLayout(self.trigger_row)
        self.faces_caption = QLabel("")
        self.faces_caption.setStyleSheet("color: #444;")
        detail_layout.addWidget(self.faces_caption)
        detail_layout.addLayout(self.faces_grid)
        detail_layout.addStretch(1)
        self.stamp_button = QPushButton("Stamp on loaded clean faces")
        self.stamp_button.setToolTip("Apply this reversed trigger to every loaded clean face of another class "
                                     "and count how many the network then puts in this class")
        self.stamp_button.clicked.connect(self._stamp_clicked)
        self.export_button = QPushButton("Export PNG…")
        self.export_button.clicked.connect(self._export_clicked)
        self.stamp_result = QLabel("")
        self.stamp_result.setWordWrap(True)
        detail_buttons = QHBoxLayout()
        detail_buttons.addWidget(self.stamp_button)
        detail_buttons.addWidget(self.export_button)
        detail_buttons.addStretch(1)
        detail_scroll = QScrollArea()  # the pictures never force the window's size
        detail_scroll.setWidget(self.detail)
        detail_scroll.setWidgetResizable(True)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(detail_scroll, 1)
        right_layout.addLayout(detail_buttons)
        right_layout.addWidget(self.stamp_result)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.table)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(0, 1)
        splitter.setSizes([400, 540])

        self.unlearn_button = QPushButton("Repair by unlearning…")
        self.unlearn_button.setToolTip("Open Pruning & repair with unlearning chosen: the flagged classes' "
                                       "reversed triggers, and the selected class's when it is not flagged")
        self.unlearn_button.clicked.connect(self.unlearn_clicked)
        repair = QHBoxLayout()
        repair.addWidget(self.unlearn_button)
        repair.addStretch(1)

        # The scan's settings, built from what it declares (engine.scan.SETTINGS), folded away.
        self.settings_form = SettingsPages({"scan": _ScanSettingsOwner}, compact=True)
        self.settings_box = QCollapsible("Scan settings")
        self.settings_box.addWidget(self.settings_form)
        self.settings_box.collapse(animate=False)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.settings_box)
        layout.addWidget(self.verdict)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.table_note)
        layout.addLayout(repair)

        s = session.scan
        s.partial.connect(self._on_partial)
        s.scanChanged.connect(self._on_result)
        s.previewChanged.connect(self._on_preview)
        s.stampCounted.connect(self._on_counted)
        s.running.connect(self._on_scan_started)
        s.ended.connect(self._on_scan_ended)
        self._on_result(None)

    # --- actions ------------------------------------------------------------------------------

    @Slot()
    def _on_scan_started(self) -> None:
        self.cancel_button.setEnabled(True)
        self.run_button.setEnabled(False)

    @Slot(str)
    def _on_scan_ended(self, outcome: str) -> None:
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(True)
        if outcome != "done":
            result = self.session.scan.result
            self._on_result(result)
            if result is None:
                self.verdict.setText(f"The last scan was {outcome}; run it again to ask which class is the target.")

    def scan_settings(self) -> ScanSettings | None:
        """The form's settings, checked; None (and a banner saying why) when one is wrong."""
        try:
            return ScanSettings.from_params(self.settings_form.params("scan"))
        except InputError as err:
            self.session.error.emit(str(err))
            return None

    @Slot()
    def start_clicked(self) -> None:
        settings = self.scan_settings()
        if settings is None:
            return
        self.session.scan.run(self.images_spin.value(), settings)
        self.verdict.setText("<i>Scanning: the largest margin of every class, then the candidates' reversed "
                             "triggers…</i>")

    def _remembered(self, key: str, fallback: str) -> str:
        if self.settings is None:
            return fallback
        return str(self.settings.value(key, fallback))

    def _remember(self, key: str, value: str) -> None:
        if self.settings is not None:
            self.settings.setValue(key, value)

    def _load_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A trigger scan's folder", self._remembered("scan/dir", ""))
        if folder:
            self._remember("scan/dir", str(Path(folder).parent))
            self.session.scan.load(folder)

    def _save_clicked(self) -> None:
        net = self.session.data.net
        start = str(default_folder(net.path, "scan")) if net is not None else ""
        folder = QFileDialog.getExistingDirectory(self, "Save the scan into a new or empty folder", start)
        if folder:
            self.session.scan.save(folder)

    def chosen_class(self) -> int | None:
        row = self.table.currentRow()
        item = self.table.item(row, 1) if row >= 0 else None
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    @Slot()
    def _stamp_clicked(self) -> None:
        c = self.chosen_class()
        if c is None:
            self.session.error.emit("choose a class in the table first")
            return
        self.stamp_result.setText(f"stamping class {c}'s reversed trigger on the loaded clean faces…")
        self.session.scan.stamp_clean(c)

    @Slot()
    def _export_clicked(self) -> None:
        c = self.chosen_class()
        if c is None:
            self.session.error.emit("choose a class in the table first")
            return
        start = str(Path(self._remembered("export/dir", str(Path.home()))) / f"reversed_trigger_class{c}.png")
        name, _ = QFileDialog.getSaveFileName(self, "Export the reversed trigger", start, "PNG images (*.png)")
        if name:
            self.export_png(name)

    def export_png(self, path: str | Path) -> bool:
        from engine.io.files import write_png

        ok = self.session.write_output(path, lambda: write_png(path, lambda tmp: self.detail.grab().save(str(tmp))))
        if ok:
            self._remember("export/dir", str(Path(path).parent))
            self.session.message.emit(f"exported {path}")
        return ok

    @Slot()
    def unlearn_clicked(self) -> None:
        """Ask the window for the repair tab, unlearning the flagged classes (and the chosen one)."""
        result, chosen = self.session.scan.result, self.chosen_class()
        classes = [] if result is None else list(result.flagged)
        if chosen is not None and chosen not in classes:
            classes.append(chosen)
        self.repairRequested.emit(sorted(classes))

    # --- results ------------------------------------------------------------------------------

    @Slot(object)
    def _on_partial(self, result) -> None:
        if result.stage == "margins":
            self.verdict.setText(f"<i>Measuring the largest margin of all {result.num_classes} classes…</i>")
            return
        self.verdict.setText(f"<i>Refining {len(result.triggers)} candidate classes; provisional ranking:</i>")
        self._fill_table(result, partial=True)

    @Slot(object)
    def _on_result(self, result) -> None:
        has = result is not None
        for w in (self.save_button, self.stamp_button, self.export_button, self.unlearn_button):
            w.setEnabled(has)
        if not has:
            self.table.setRowCount(0)
            self.table_note.setText("")
            self._show_class(None)
            self.verdict.setText("Run the scan to ask: is this network backdoored, which class is the target, "
                                 "and what does its trigger look like?")
            return
        colour = OUTCOME_COLOURS.get(result.outcome, "#222")
        self.verdict.setText(f"<b style='color:{colour}'>{html.escape(result.summary())}</b>")
        self._fill_table(result, partial=False)
        if self.table.rowCount():
            self.table.selectRow(0)

    def _fit_columns(self) -> None:
        """The table never narrower than its columns: every column, the last included, shows
        without a horizontal scroll bar (the splitter gives the pictures the rest)."""
        self.table.resizeColumnsToContents()
        header = self.table.horizontalHeader()
        width = sum(header.sectionSize(c) for c in range(self.table.columnCount()))
        self.table.setMinimumWidth(width + self.table.verticalScrollBar().sizeHint().width()
                                   + 2 * self.table.frameWidth() + 2)

    def _set_header_tips(self) -> None:
        """Each column's meaning: the statistics' own, then the combined p-value and the flips."""
        tips = ([c.tip for s in stats.active() for c in s.columns if c.table]
                + [("The class's combined p-value, family-wise over all classes and every statistic; at most "
                    "the scan's false-alarm budget is flagged"),
                   "Share of held-out clean faces (not used to fit it) the trigger sends to the class"])
        for col, tip in enumerate(tips, start=2):
            if tip:
                self.table.horizontalHeaderItem(col).setToolTip(tip)

    def _fill_table(self, result, partial: bool) -> None:
        keep = self.chosen_class()
        rows = [r for r in result.rows() if r["refined"] or r["p"] is not None]  # refined or judged
        if self.table.columnCount() != len(columns()):  # a statistic registered since the tab was built
            self.table.setColumnCount(len(columns()))
            self.table.setHorizontalHeaderLabels(columns())
            self._set_header_tips()
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            if r["flagged"]:
                mark = "yes"
            else:
                mark = "unreached" if r["refined"] and not r["reached"] else ""
            cells = ([str(r["rank"]), str(r["class"])]
                     + [c.text(r.get(c.key)) for s in stats.active() for c in s.columns if c.table]
                     + [p_text(r["p"]) if r["p"] is not None else "", _num(r["attack_success"], "{:.0%}"), mark])
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 1:
                    item.setData(Qt.ItemDataRole.UserRole, r["class"])
                if col < len(cells) - 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if r["flagged"]:
                    item.setBackground(_flag_brush())
                    item.setToolTip(f"flagged by {' and '.join(r['support'])}")
                elif r["refined"] and not r["reached"]:
                    item.setToolTip("its reversed trigger never sent 99% of a batch to the class")
                elif not r["refined"]:
                    item.setToolTip("judged by the statistics that need no reversed trigger; not refined")
                self.table.setItem(i, col, item)
        held_out = getattr(result, "n_holdout", None)
        if held_out:
            flips = self.table.horizontalHeaderItem(self.table.columnCount() - 2)
            flips.setText(f"Flips of {held_out}")
            flips.setToolTip(f"Share of the {held_out} held-out clean faces (not used to fit the trigger) "
                             "it sends to the class")
        self._fit_columns()
        refined = sum(r["refined"] for r in rows)
        note = (f"{len(rows)} of {result.num_classes} classes judged; {refined} refined: the largest margins and the "
                f"classes the clean faces lean to most")
        if not partial:
            note += (f". p: the statistics and their combination, family-wise over every class; flagged at p <= "
                     f"{result.alpha:g}. Index: "
                     f"Neural Cleanse's, among the refined classes. Flips: the trigger on {result.n_holdout} clean "
                     f"faces it was not fitted on.")
        self.table_note.setText(note)
        if keep is not None:
            for i, r in enumerate(rows):
                if r["class"] == keep:
                    self.table.selectRow(i)
                    break

    def _class_chosen(self) -> None:
        c = self.chosen_class()
        result = self.session.scan.result
        if c is None or result is None or c not in result.triggers:
            return
        if c != self._shown:
            self._show_class(c)
            self.session.scan.preview(c)

    def _show_class(self, c: int | None) -> None:
        self._shown = c
        self.stamp_result.setText("")
        for layout in (self.trigger_row, self.faces_grid):
            while layout.count():
                item = layout.takeAt(0)
                if item.widget() is not None:
                    item.widget().deleteLater()
        self.faces_caption.setText("")
        if c is None:
            self.detail_title.setText("")
            return
        result = self.session.scan.result
        t = result.triggers[c]
        e = result.evidence.get(c)
        status = ("flagged by " + " and ".join(e.support)) if c in result.flagged and e is not None else "not flagged"
        anomaly = "n/a" if t.anomaly is None else f"{t.anomaly:.2f}"
        p = "" if e is None else f", p = {p_text(e.combined)}"
        self.detail_title.setText(f"<b>class {c}</b> ({status}{p}): mask {t.l1:.0f} pixels ({100 * t.size:.2f}% of "
                                  f"the image), anomaly index {anomaly}, margin {result.margins[c]:.1f}"
                                  + ("<br><span style='color:#555'>mask: the smallest that works (Neural Cleanse); "
                                     f"shape: a smooth inversion ({100 * float(t.shape_mask.mean()):.0f}% of the image) that shows "
                                     "what the trigger looks like</span>" if t.shape_mask is not None else ""))
        pictures = [(_as_image(t.mask), "mask"), (_as_image(t.pattern), "pattern"),
                    (_as_image(t.mask[..., None] * t.pattern), "mask x pattern")]
        if t.shape_mask is not None:  # flagged classes: what the trigger looks like
            pictures += [(_as_image(t.shape_mask), "shape"),
                         (_as_image(t.shape_mask[..., None] * t.shape_pattern), "shape x pattern")]
        zoom = ZOOM if len(pictures) <= 3 else SHAPE_ZOOM  # five tiles fit beside the table at 1280 px
        for image, caption in pictures:
            self.trigger_row.addWidget(_tile(image, caption, zoom=zoom))
        self.trigger_row.addStretch(1)

    @Slot(object)
    def _on_preview(self, out: dict) -> None:
        if out["label"] != self._shown or out["faces"] is None:
            return
        c = out["label"]
        self.faces_caption.setText(f"clean faces before and after stamping (the network's answer; red: sent to {c})")
        for col, (face, stamped, b, a) in enumerate(zip(out["faces"], out["stamped"], out["before"], out["after"])):
            self.faces_grid.addWidget(_tile(face, f"class {b}", zoom=FACE_ZOOM), 0, col)
            colour = "#b3261e" if a == c else "#222"
            self.faces_grid.addWidget(_tile(stamped, f"-> {a}", colour, zoom=FACE_ZOOM), 1, col)

    @Slot(object)
    def _on_counted(self, out: dict) -> None:
        n = max(1, out["n"])
        self.stamp_result.setText(f"class {out['label']}'s reversed trigger sends "
                                  f"<b>{out['flipped']} of {out['n']}</b> "
                                  f"loaded clean faces of other classes to class {out['label']} "
                                  f"({100 * out['flipped'] / n:.0f}%)")



def _num(v, fmt: str) -> str:
    return "" if v is None else fmt.format(v)


def _flag_brush():
    from PySide6.QtGui import QBrush, QColor

    return QBrush(QColor(FLAG_BG))
