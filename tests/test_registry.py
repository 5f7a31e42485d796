"""A detector declared in one module is picked up everywhere: CLI options, calibration files,
the window's settings form, histogram axes and the image check, with no other edit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import progress
from engine.detectors import DETECTORS, Detector, Scores, ScoreScale, Setting, make_detector, register
from engine.errors import InputError
from engine.scoring import probabilities


class MarginDetector(Detector):
    """Top-1 minus top-k probability: a toy detector, declared as a real one would be."""

    name = "margin_test"
    title = "Margin"
    summary = "gap between the top class and the k-th class"
    scale = ScoreScale("top-1 minus top-k probability", "Margin", unit="", lo=0.0, hi=1.0)
    settings = (Setting("k", "rank", int, 2, 2, 10, "which class to compare with"),)
    colour = (10, 200, 10)

    def score(self, net, images, scaling):
        p = yield from probabilities(net, images.images, scaling)
        ranked = np.sort(p, axis=1)
        return Scores(p.argmax(axis=1), ranked[:, -1] - ranked[:, -self.k])


@pytest.fixture
def margin():
    register(MarginDetector)
    yield MarginDetector
    DETECTORS.pop(MarginDetector.name)


def test_settings_are_checked_from_the_declaration(margin):
    assert make_detector("margin_test", {"k": 3}).k == 3
    assert make_detector("margin_test").k == 2
    with pytest.raises(InputError, match=r"Margin rank 11 must be in \[2, 10\]"):
        make_detector("margin_test", {"k": 11})


def test_the_cli_offers_it_and_calibrates_it(margin, capsys, tmp_path):
    import main

    out = tmp_path / "margin.json"
    assert main.main(["calibrate", "--detector", "margin_test", "--k", "3", "-o", str(out)]) == 0
    raw = json.loads(out.read_text())
    assert raw["detector"] == "margin_test" and raw["detector_params"] == {"k": 3}
    assert main.main(["eval", "--calibration", str(out)]) == 0
    assert main.main(["calibrate", "--k", "3", "-o", str(tmp_path / "x.json")]) == 2
    assert "--k is a setting of Margin; add that detector" in capsys.readouterr().err


def test_the_window_builds_its_form_and_axis(margin, qtbot):
    from gui.detector_settings import DetectorSettings
    from gui.score_axes import axes_for

    form = DetectorSettings()
    qtbot.addWidget(form)
    box = form.fields["margin_test"]["k"]
    assert (box.minimum(), box.maximum(), box.value()) == (2, 10, 2)
    box.setValue(4)
    assert form.params("margin_test") == {"k": 4}
    (axis,) = axes_for("margin_test", [np.array([0.2, 0.9])]).values()
    assert (axis.lo, axis.hi) == (0.0, 1.0) and axis.label.startswith("top-1 minus top-k probability")


def test_checked_images_get_its_verdict(margin, demo_net, demo_clean):
    from engine import workflow

    detector = make_detector("margin_test")
    cal, _ = progress.run(workflow.calibrate_job(demo_net, demo_clean, "1/255", detector, frr=0.05))
    few = workflow.read_set(demo_clean.source, demo_net)
    rows = progress.run(workflow.check_images(demo_net, few, "1/255", {"margin_test": cal}))
    rules = workflow.VerdictRules({"margin_test": cal}, "margin_test")
    flagged = np.mean([rules.verdict(r).poisoned for r in rows])
    assert 0.0 < flagged <= 0.06  # its own clean data, calibrated at 5%
    header, _ = workflow.checked_csv(rows[:2], rules)
    assert "margin_test_score" in header
