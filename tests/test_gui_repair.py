"""The window's Pruning & repair tab: the repairs run in the worker, their curves and verdicts, the attempts the comparison lists, and refused settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


from engine import progress
from engine.io import datasets
from engine.demo import DEMO_IMAGES
from tests.windows import JOB_TIMEOUT, run_repair, wait_idle

def test_fine_pruning_panel_plots_the_sweep_and_g_gives_verdicts(demo_window, qtbot, tmp_path):
    from engine.repairs.bundle import RepairedNet

    w = demo_window
    panel = w.repair
    assert panel.method == "fine-pruning" and panel.field("layer").currentText() == "conv_3"
    assert [panel.field("layer").itemText(i) for i in range(panel.field("layer").count())] == [
        "conv_1", "conv_2", "conv_3", "conv_4"]  # the form's words follow the model
    panel.outdir_edit.setText(str(tmp_path / "pruned"))
    panel.field("fine_tune_epochs").setValue(0)
    result = run_repair(qtbot, w).detail
    x, y = panel._lines[0].getData()
    assert len(x) == 61 and x[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(y, result.sweep.clean_accuracy)
    assert len(result.saved) == 3 and "drop 2%" in panel.summary.text()
    assert (tmp_path / "pruned" / "repaired.json").exists()

    with qtbot.waitSignal(w.session.check.checkedChanged, timeout=JOB_TIMEOUT):
        w.open_paths([DEMO_IMAGES])
    wait_idle(qtbot, w)
    g = RepairedNet.load(tmp_path / "pruned" / "repaired.json")
    expected = progress.run(g.judge(w.session.data.net, datasets.read(DEMO_IMAGES)))
    model = w.image_check.model
    by_name = {Path(n).name: int(label) for n, label in zip(expected.names, expected.labels)}
    for row in range(model.rowCount()):
        assert model.g_verdict(row)[0] == by_name[model.data(model.index(row, 1))]
    w.image_check.source_box.setCurrentIndex(w.image_check.source_box.findData("repaired"))
    assert all(model.verdict(row) == model.g_verdict(row) for row in range(model.rowCount()))


@pytest.mark.slow
def test_repair_tab_runs_the_reports_attempts_and_the_comparison_lists_them(demo_window, qtbot, tmp_path):
    """Magnitude pruning plots its sparsity sweep; the N+1 network, learnt from the first poisoned
    set only, becomes the verdict source; the comparison lists both beside the detectors."""
    from engine.repairs.nplus1 import NPlusOneResult

    w = demo_window
    panel = w.repair
    panel.set_method("magnitude")
    assert panel.field("sparsity").isVisibleTo(panel) and not panel.learn_box.isVisibleTo(panel)
    assert panel.outdir_edit.text().endswith("_magnitude")
    panel.outdir_edit.setText(str(tmp_path / "mag"))
    panel.field("fine_tune_epochs").setValue(0)
    result = run_repair(qtbot, w).detail
    x, y = panel._lines[0].getData()
    np.testing.assert_allclose(x, result.sweep.sparsity)
    np.testing.assert_allclose(y, result.sweep.clean_accuracy)
    assert "magnitude pruning to 70%" in panel.summary.text()

    panel.set_method("nplus1")
    assert panel.field("epochs").isVisibleTo(panel) and panel.learn_box.isVisibleTo(panel)
    first = w.session.data.poisoned[0].name
    assert panel.learn_box.currentText() == first
    panel.outdir_edit.setText(str(tmp_path / "np1"))
    panel.field("epochs").setValue(3)
    result = run_repair(qtbot, w).detail
    assert isinstance(result, NPlusOneResult) and result.report["trained_on"] == [first]
    assert len(panel._lines[0].getData()[0]) == 3
    g = w.session.repair.repaired
    assert g.rule == "nplus1" and len(w.session.repair.known) == 2

    for name, box in w.compare.checks.items():
        box.setChecked(name == "confidence")
    with qtbot.waitSignal(w.session.compare.comparisonChanged, timeout=JOB_TIMEOUT):
        assert w.compare.start()
    wait_idle(qtbot, w)
    titles = [r.title for r in w.session.compare.defenses]
    assert titles == ["no defense (the BadNet)", "G (magnitude pruning)", "N+1 network", "Confidence at 5% FRR"]
    text = w.compare.defenses.text()
    assert "N+1 network" in text and "G (magnitude pruning)" in text and "detected / attack success" in text

    # The same file as a hand-made N+1 network (the user says its last class means poisoned); the
    # BadNet itself is refused with a banner, and the loaded one stays.
    with qtbot.waitSignal(w.session.repair.repairedChanged, timeout=JOB_TIMEOUT):
        w.session.repair.load_nplus1(tmp_path / "np1" / "nplus1.h5")
    wait_idle(qtbot, w)
    assert w.session.repair.repaired.choice.get("hand_made") and len(w.session.repair.known) == 2
    errors = []
    w.session.error.connect(errors.append)
    w.session.repair.load_nplus1(w.session.data.net.path)
    wait_idle(qtbot, w)
    assert errors and "should have 51" in errors[-1] and w.session.repair.repaired.choice.get("hand_made")
    # A bundle whose record is damaged (trained_on NaN) is refused whole: a banner, the loaded G stays.
    raw = json.loads((tmp_path / "np1" / "repaired.json").read_text())
    raw["choice"]["trained_on"] = float("nan")
    bad = tmp_path / "np1" / "damaged.json"
    bad.write_text(json.dumps(raw))
    w.session.repair.load_repaired(bad)
    wait_idle(qtbot, w)
    assert str(bad) in errors[-1] and "choice.trained_on nan" in errors[-1]
    assert w.session.repair.repaired.choice.get("hand_made") and len(w.session.repair.known) == 2


def test_nplus1_without_a_poisoned_set_is_refused(demo_window):
    errors = []
    w = demo_window
    w.session.error.connect(errors.append)
    while w.session.data.poisoned:
        w.session.data.remove_poisoned(0)
    w.repair.set_method("nplus1")
    assert not w.repair.start()
    assert errors and "poisoned" in errors[-1]


def test_fine_pruning_rejects_bad_drops(demo_window, qtbot):
    """The form's text is checked by the repair's own setting, in the job's turn: a banner, nothing run."""
    errors = []
    w = demo_window
    w.session.error.connect(errors.append)
    w.repair.field("drops").setText("2%,lots")
    w.repair.start()
    wait_idle(qtbot, w)
    assert errors and "Fine-pruning accuracy drops 'lots' is not a rate" in errors[-1]
    assert w.session.repair.result is None
