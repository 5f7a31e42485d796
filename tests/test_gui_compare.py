"""The window's Compare tab: ROC curves, AUC and the defenses side by side."""

from __future__ import annotations


import numpy as np
import pytest

from PySide6.QtCore import Qt

from tests.windows import JOB_TIMEOUT, wait_idle

@pytest.mark.slow  # the demo's figures: cheap after the engine's comparisons (their scores are cached)
def test_compare_tab_draws_roc_curves_with_auc(demo_window, qtbot, tmp_path):
    from PIL import Image

    w = demo_window
    qtbot.waitUntil(lambda: len(w.session.data.poisoned) == 2, timeout=JOB_TIMEOUT)
    w.left.calibration.settings.fields["strip"]["blends"].setValue(8)
    with qtbot.waitSignal(w.session.compare.comparisonChanged, timeout=JOB_TIMEOUT):
        qtbot.mouseClick(w.compare.run_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, w)
    results = {r.detector: r for r in w.session.compare.results if r.target == 0}
    assert results["strip"].params["blends"] == 8  # the calibration panel's STRIP settings
    assert results["strip"].auc > 0.95 > 0.1 > results["confidence"].auc
    eyebrows = {r.detector: r for r in w.session.compare.results if r.target == 7}
    assert eyebrows["transplant"].auc > 0.95 > 0.6 > eyebrows["strip"].auc  # the demo's lesson
    legend = [label.text for _, label in w.compare.legend.items]
    assert any("STRIP (AUC" in t for t in legend) and any("Confidence (AUC" in t for t in legend)
    assert "detection at 5% FRR" in w.compare.table.text()
    # Which families: the zoo's figures for detectors at their defaults, none for STRIP at 8 blends.
    from engine.evaluation import families

    table, note = w.compare.table.text(), w.compare.note.text()
    assert "attack zoo" in table and "the tool cannot tell its family" in note
    assert "not measured" in table  # STRIP at 8 blends: not the settings the zoo measured
    reach = families.reach("combined", results["combined"].params)
    if reach is not None:
        assert reach.count_text() in table and "on the zoo" in note
    png = tmp_path / "roc.png"
    w.compare.export_png(png)
    with Image.open(png) as im:
        assert im.width == 1200
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 5
