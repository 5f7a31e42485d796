"""Settings forms built from what each detector or repair declares (name, type, default, range, help)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QWidget,
)

from engine.detectors import DETECTORS, Setting


def field_for(setting: Setting) -> QSpinBox | QDoubleSpinBox | QLineEdit | QComboBox:
    """A spin box over the setting's range (open ends nudged inside), a line of numbers for a list
    setting, a list of words for a word setting, at its default."""
    if setting.kind is str:
        box = QComboBox()
        box.addItems(list(setting.choices) or ([setting.default] if setting.default else []))
        if setting.default:
            box.setCurrentText(setting.default)
        box.setToolTip(setting.help)
        return box
    if setting.is_list:
        line = QLineEdit(setting.default_text())
        if not setting.default:
            line.setPlaceholderText(setting.help)
        what = "names" if setting.kind is list else f"numbers, each in {setting.range_text()},"
        line.setToolTip(f"{setting.help}; {what} separated by commas (default {setting.default_text()})")
        return line
    if setting.rate:  # typed and shown as a percent, as the CLI takes it (5%), handed on as a fraction
        box = QDoubleSpinBox()
        step = 100 * (setting.step or 0.01)
        box.setDecimals(2)
        box.setSuffix(" %")
        box.setSingleStep(step)
        nudge = 0.01
        box.setRange(100 * setting.low + (nudge if setting.low_open else 0.0),
                     100 * setting.high - (nudge if setting.high_open else 0.0))
        box.setValue(100 * setting.default)
        box.setProperty("rate", True)
        box.setToolTip(f"{setting.help}, in {setting.range_text()} (default {setting.default_text()})")
        return box
    if setting.kind is int:
        box = QSpinBox()
        box.setRange(int(setting.low) + int(setting.low_open), int(setting.high) - int(setting.high_open))
    else:
        box = QDoubleSpinBox()
        step = setting.step or 0.01
        box.setDecimals(max(2, len(f"{step:g}".split(".")[-1]) if "." in f"{step:g}" else 2))
        box.setSingleStep(step)
        box.setRange(setting.low + (step if setting.low_open else 0.0), setting.high - (step if setting.high_open else 0.0))
    box.setValue(setting.default)
    box.setToolTip(f"{setting.help}, in {setting.range_text()} (default {setting.default_text()})")
    return box


class SettingsPages(QStackedWidget):
    """One page of settings per registered class (a detector, a repair); the page follows the chosen one."""

    def __init__(self, classes: dict, parent: QWidget | None = None, compact: bool = False):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.fields: dict[str, dict[str, QSpinBox | QDoubleSpinBox | QLineEdit | QComboBox]] = {}
        self.pages: dict[str, int] = {}
        self.forms: dict[str, QFormLayout] = {}
        for name, cls in classes.items():
            page = QWidget()
            form = QFormLayout(page)
            form.setContentsMargins(0, 0, 0, 0)
            if compact:  # fields at their own width, beside a wide plot
                form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
            self.fields[name] = {}
            shown = [s for s in cls.settings if s.shown]
            for s in shown:
                box = field_for(s)
                if compact and isinstance(box, (QLineEdit, QComboBox)):
                    box.setMinimumWidth(220)
                self.fields[name][s.name] = box
                form.addRow(s.label.capitalize(), box)
            if not shown:
                note = QLabel("no settings")
                note.setStyleSheet("color: #777;")
                form.addRow(note)
            page.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
            self.forms[name] = form
            self.pages[name] = self.addWidget(page)

    def show_page(self, name: str) -> None:
        self.setCurrentIndex(self.pages[name])
        self.updateGeometry()

    show_detector = show_page

    def sizeHint(self):  # noqa: N802  (Qt's name)
        """As tall as the page shown, not the tallest page."""
        return self.currentWidget().sizeHint() if self.currentWidget() else super().sizeHint()

    def minimumSizeHint(self):  # noqa: N802
        return self.currentWidget().minimumSizeHint() if self.currentWidget() else super().minimumSizeHint()

    def params(self, name: str) -> dict:
        """The chosen settings of ``name``, ready for ``make_detector`` or ``make_repair``."""
        out = {}
        for key, box in self.fields.get(name, {}).items():
            if isinstance(box, QComboBox):
                out[key] = box.currentText()
                continue
            if isinstance(box, QLineEdit):
                out[key] = box.text()  # checked by the detector, like a file's or the CLI's
                continue
            value = box.value()
            if box.property("rate"):
                out[key] = round(value / 100, 8)  # a percent in the field, a fraction for the engine
                continue
            out[key] = round(value, 6) if isinstance(value, float) else int(value)
        return out


class DetectorSettings(SettingsPages):
    """One page of settings per registered detector."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(DETECTORS, parent)
