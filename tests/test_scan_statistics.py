"""Model-level statistics are plug-ins: one registered from a test reaches the verdict, the scan's
JSON and saved folder, the CLI's table, the window's table and the audit report, and no file
outside its module (here, this test) names it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from engine import progress
from engine.scan import ScanResult, stats
from engine.scan.stats import Column, Statistic


class ToyStatistic(Statistic):
    """Reads values a measurement of its own left on the result; a class whose value is above 10
    stands out absolutely, the others not at all."""

    name = "toy"
    title = "Toy statistic"
    summary = "a test's statistic"
    weight = 0.5
    order = 90
    columns = (Column("toy_value", "Toy", lambda v: f"{v:.1f}", report="toy value"),)
    measured: list = []

    def values(self, result):
        return dict(result.extra.get(self.name, {}))

    def p_value(self, label, values, flagged):
        return (1e-12 if values[label] > 10 else 0.5), None

    def tests(self, values, num_classes):
        return num_classes

    def row(self, result, label, evidence):
        return {"toy_value": result.extra.get(self.name, {}).get(label)}

    def measure(self, net, clean, scaling, result):
        self.measured.append(len(clean))
        result.extra[self.name] = {}
        return
        yield


@pytest.fixture
def toy():
    stats.register(ToyStatistic)
    try:
        yield stats.STATISTICS["toy"]
    finally:
        stats.unregister("toy")


def _with_toy_values(scan: ScanResult, label: int) -> ScanResult:
    result = dataclasses.replace(scan.snapshot(), extra={"toy": {c: (25.0 if c == label else 1.0)
                                                                 for c in scan.triggers}})
    result.judge()
    return result


def test_a_registered_statistic_takes_a_share_of_the_budget(toy):
    from engine.scan import evidence

    # Five statistics and their combination (Fisher's, "together"), 0.5 each before normalising.
    assert evidence.shares() == pytest.approx({"margin": 1 / 6, "mask": 1 / 6, "smooth": 1 / 6, "head": 1 / 6,
                                               "toy": 1 / 6, "together": 1 / 6})
    assert [s.name for s in stats.active()] == ["margin", "mask", "smooth", "head", "toy"]
    # A statistic alone has no combination; the weights given are normalised over those present.
    assert evidence.shares(["margin"]) == {"margin": 1.0}
    assert evidence.shares(["margin", "toy"], {"margin": 1, "toy": 3, "together": 0}) == pytest.approx(
        {"margin": 0.25, "toy": 0.75, "together": 0.0})


def test_a_toy_statistic_is_everywhere_the_scan_is_shown(toy, short_scan, demo_net, demo_clean, qtbot, tmp_path):
    from cli.commands import scan_table
    from engine import report
    from gui.main_window import MainWindow
    from PySide6.QtCore import QSettings

    before = dataclasses.replace(short_scan.snapshot(), extra={})
    before.judge()
    label = next(c for c in short_scan.triggers if c not in before.flagged)
    result = _with_toy_values(short_scan, label)

    # The verdict: the class the toy singles out is flagged, by the toy (and the statistics together).
    assert label in result.flagged and label not in before.flagged
    assert result.evidence[label].support[0] == "toy" and result.evidence[label].p("toy") == 1e-12

    # The JSON and the saved folder (the toy's values come back, and with them its flag).
    row = next(r for r in result.to_dict()["classes"] if r["class"] == label)
    assert row["toy_value"] == 25.0 and row["flagged"] and row["support"][0] == "toy"
    back = ScanResult.load(result.save(tmp_path / "scan"))
    assert back.extra["toy"][label] == 25.0 and label in back.flagged
    assert json.loads((tmp_path / "scan" / "scan.json").read_text())["extra"]["toy"][str(label)] == 25.0

    # The CLI's table: a column headed by the toy, its value in the class's line.
    table = scan_table(result).splitlines()
    assert "toy" in table[0].split()
    line = next(t for t in table[1:] if t.split()[1] == str(label))
    assert "25.0" in line.split() and "flagged (toy" in line

    # The window's table.
    w = MainWindow(settings=QSettings(str(tmp_path / "w.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.scan._fill_table(result, partial=False)
    headers = [w.scan.table.horizontalHeaderItem(i).text() for i in range(w.scan.table.columnCount())]
    assert "Toy" in headers
    rows = [w.scan.table.item(r, 1).text() for r in range(w.scan.table.rowCount())]
    assert w.scan.table.item(rows.index(str(label)), headers.index("Toy")).text() == "25.0"

    # The audit report.
    clean = demo_clean.subset(np.arange(20))
    audit = progress.run(report.audit_job(demo_net, clean, [], "1/255", scan=result, calibrations=[]))
    text = report.render(audit)
    verdict = text[text.index('<section id="verdict">'):text.index("</section>", text.index('<section id="verdict">'))]
    assert "<th>toy value</th>" in verdict and "<td class=\"num\">25.0</td>" in verdict


def test_a_statistic_that_measures_is_run_by_the_scan(toy, demo_net, demo_clean):
    from engine.scan import ScanSettings, scan
    from engine.workflow import sample_images

    from tests.conftest import SHORT_SCAN

    toy.measured.clear()
    result = progress.run(scan(demo_net, sample_images(demo_clean, 20), "1/255", ScanSettings(**SHORT_SCAN)))
    assert toy.measured == [20] and result.extra["toy"] == {}
    # No values: the toy judges no class, and the verdict is the built-in statistics' alone.
    assert all(e.p("toy") is None for e in result.evidence.values())


def test_the_scans_settings_are_declared_once_for_the_cli_and_the_window(qtbot, tmp_path, monkeypatch):
    """engine.scan.SETTINGS gives the CLI its options and the window its form; both reach the scan."""
    from cli.parser import given_scan_settings
    from engine.errors import InputError
    from engine.scan import SETTINGS, ScanSettings
    from gui.main_window import MainWindow
    from PySide6.QtCore import QSettings

    import main

    args = main.build_parser().parse_args(["scan", "--candidates", "8", "--false-alarm", "10%", "--margin-steps", "5"])
    settings = ScanSettings.from_params(given_scan_settings(args))
    assert (settings.margin_candidates, settings.alpha, settings.margin_steps) == (8, 0.1, 5)
    assert settings.refine_steps == ScanSettings.refine_steps  # not given: the scan's own default
    with pytest.raises(InputError, match="refinement steps 0 must be in"):
        ScanSettings.from_params({"refine_steps": 0})
    with pytest.raises(InputError, match="at least one candidate"):
        ScanSettings.from_params({"margin_candidates": 0, "prior_candidates": 0})

    w = MainWindow(settings=QSettings(str(tmp_path / "w.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    fields = w.scan.settings_form.fields["scan"]
    assert set(fields) == {s.name for s in SETTINGS if s.shown}
    asked = []
    monkeypatch.setattr(w.session.scan, "run", lambda images, settings=None: asked.append(settings))
    fields["margin_candidates"].setValue(6)
    assert fields["alpha"].text() == "5.00 %"  # a rate reads as the CLI takes it, not 0.05
    fields["alpha"].setValue(1.0)
    w.scan.start_clicked()
    assert asked and asked[0].margin_candidates == 6 and asked[0].refine_steps == ScanSettings.refine_steps
    assert asked[0].alpha == pytest.approx(0.01)
    errors = []
    w.session.error.connect(errors.append)
    fields["margin_candidates"].setValue(0)
    fields["prior_candidates"].setValue(0)
    w.scan.start_clicked()
    assert len(asked) == 1 and errors and "at least one candidate" in errors[0]  # a banner, no scan


class Pointing(ToyStatistic):
    """Singles out the first class the scan did not refine (so no candidate)."""

    name = "pointing"
    order = 91

    def measure(self, net, clean, scaling, result):
        chosen = next(c for c in range(result.num_classes) if c not in result.triggers)
        result.extra[self.name] = {c: (25.0 if c == chosen else 1.0) for c in range(result.num_classes)}
        return
        yield


def test_a_class_flagged_without_being_a_candidate_gets_its_trigger_too(demo_net, demo_clean, qtbot, tmp_path):
    """Unlearning and the window take every flagged class: one flagged by a statistic that needs no
    reversed trigger is refined after the verdict, tested on the held-out faces, and listed."""
    from engine.scan import ScanSettings, scan
    from engine.workflow import sample_images
    from gui.main_window import MainWindow
    from PySide6.QtCore import QSettings

    from tests.conftest import SHORT_SCAN

    stats.register(Pointing)
    try:
        result = progress.run(scan(demo_net, sample_images(demo_clean, 20), "1/255", ScanSettings(**SHORT_SCAN)))
        chosen = next(c for c, v in result.extra["pointing"].items() if v > 10)
        assert chosen in result.flagged and chosen in result.triggers
        assert result.triggers[chosen].mask.shape == (55, 47) and result.triggers[chosen].attack_success is not None
        assert any("not a candidate" in n and str(chosen) in n for n in result.notes)
        # The window lists it (and every judged class, refined or not).
        w = MainWindow(settings=QSettings(str(tmp_path / "w.ini"), QSettings.Format.IniFormat))
        qtbot.addWidget(w)
        w.scan._fill_table(result, partial=False)
        listed = {int(w.scan.table.item(r, 1).text()) for r in range(w.scan.table.rowCount())}
        assert chosen in listed and listed >= set(result.triggers) and listed == set(result.evidence) | set(result.triggers)
    finally:
        stats.unregister("pointing")
