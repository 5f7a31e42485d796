"""The window's Trigger scan tab: a scan with partial results, stamping a reversed trigger, cancelling."""

from __future__ import annotations


import numpy as np
import pytest

from PySide6.QtCore import Qt

from engine import progress
from engine.io import datasets
from tests.conftest import SHORT_SCAN
from tests.windows import JOB_TIMEOUT, run_repair, wait_idle

@pytest.mark.slow
def test_trigger_scan_tab_runs_shows_partial_results_and_stamps(demo_window, demo_scan, qtbot, tmp_path,
                                                                monkeypatch):
    """The scan runs in the worker with partial results (a short scan: the mechanics); a full
    scan of the demo (the engine tests' own, saved and loaded) ranks the demo's targets, shows the
    chosen class's trigger on clean faces, counts flips like the engine, exports a PNG, and its
    unlearned network becomes G."""
    import gui.controllers.scan as scan_controller
    from engine.demo import DEMO_TRIGGERS
    from engine.io.files import is_png
    from engine.scan import ScanSettings

    monkeypatch.setattr(scan_controller, "PARTIAL_EVERY", 0.0)  # every partial result, however quick the scan
    w = demo_window
    partial = []
    w.session.scan.partial.connect(lambda r: partial.append((r.stage, len(r.triggers))))
    with qtbot.waitSignal(w.session.scan.scanChanged, timeout=JOB_TIMEOUT):
        w.session.scan.run(20, ScanSettings(**SHORT_SCAN))
    wait_idle(qtbot, w)
    quick = w.session.scan.result
    assert quick.n_clean == 20 and len(quick.triggers) <= 6
    assert {s for s, _ in partial} >= {"margins", "refining"}
    assert any(n > 0 for s, n in partial if s == "refining")
    panel = w.scan
    shown = [int(panel.table.item(r, 1).text()) for r in range(panel.table.rowCount())]
    assert shown == [c for c in quick.ranking() if c in quick.triggers or c in quick.evidence]  # refined or judged

    full, _ = demo_scan
    folder = full.save(tmp_path / "scan")
    w.session.scan.load(folder)
    result = w.session.scan.result
    assert result is not quick and result.n_clean == full.n_clean
    shown = [int(panel.table.item(r, 1).text()) for r in range(panel.table.rowCount())]
    assert shown == [c for c in result.ranking() if c in result.triggers or c in result.evidence]
    assert set(shown[:2]) == set(DEMO_TRIGGERS.values())
    assert "backdoor: class" in panel.verdict.text()

    panel.table.selectRow(shown.index(DEMO_TRIGGERS["sunglasses"]))
    with qtbot.waitSignal(w.session.scan.stampCounted, timeout=JOB_TIMEOUT) as counted:
        panel._stamp_clicked()
    out = counted.args[0]
    wait_idle(qtbot, w)
    assert panel.faces_grid.count() == 10  # five faces, before and after
    # the same count the engine gives
    from engine.scoring import predict

    net, clean = w.session.data.net, w.session.data.clean
    trigger = result.triggers[DEMO_TRIGGERS["sunglasses"]]
    before = progress.run(predict(net, clean, "1/255")).labels
    others = before != trigger.label
    stamped = datasets.ImageSet(trigger.stamp(clean.images[others]), None, ["s"] * int(others.sum()), "stamped")
    after = progress.run(predict(net, stamped, "1/255")).labels
    assert out["n"] == int(others.sum()) and out["flipped"] == int(np.sum(after == trigger.label))
    assert f"{out['flipped']} of {out['n']}" in panel.stamp_result.text()

    png = tmp_path / "trigger.png"
    assert panel.export_png(png) and is_png(png)

    # Repair by unlearning: the repair tab, unlearning chosen, the flagged classes and the selected one
    panel.unlearn_clicked()
    repair = w.repair
    assert w.tabs.currentWidget() is repair and repair.method == "unlearning"
    classes = sorted(set(result.flagged) | {DEMO_TRIGGERS["sunglasses"]})
    assert repair.field("classes").text() == ",".join(map(str, classes))
    assert "flagged classes" in repair.scan_note.text()
    repair.field("epochs").setValue(3)
    repair.outdir_edit.setText(str(tmp_path / "unlearned"))
    outcome = run_repair(qtbot, w)
    g = w.session.repair.repaired
    assert g is not None and g.choice["method"] == "unlearning" and (tmp_path / "unlearned" / "repaired.json").exists()
    assert sorted(g.choice["trigger_classes"]) == classes
    assert "attack success on" in repair.summary.text() and outcome.scan is result  # the loaded scan was used


def test_a_cancelled_scan_keeps_the_window_and_the_loaded_scan(demo_window, qtbot):
    from engine.scan import ScanResult

    w = demo_window
    net = w.session.data.net
    kept = ScanResult(str(net.path), net.sha256, "1/255", net.num_classes, (55, 47), 60, 20,
                      np.zeros(net.num_classes), np.zeros(net.num_classes), {})
    w.session.scan.set_result(kept, None)
    started = []
    w.session.runner.progress.connect(lambda step: started.append(step.stage))
    w.session.scan.run(60)
    qtbot.waitUntil(lambda: any("margins" in s for s in started), timeout=JOB_TIMEOUT)
    assert w.scan.cancel_button.isEnabled() and not w.scan.run_button.isEnabled()
    with qtbot.waitSignal(w.session.runner.finished, timeout=JOB_TIMEOUT) as finished:
        qtbot.mouseClick(w.scan.cancel_button, Qt.MouseButton.LeftButton)
    assert finished.args == ["Trigger scan", "cancelled"]
    assert w.session.scan.result is kept
    assert w.scan.run_button.isEnabled() and not w.scan.cancel_button.isEnabled()
