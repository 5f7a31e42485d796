"""SCALE-UP: scaled copies in one call per image, the drift score, its settings, and its figures
on the demo and on the real CSAW sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

import main
from engine import progress, scoring, workflow
from engine.detectors.calibration import Calibration, calibrate
from engine.io.datasets import ImageSet
from engine.demo import DEMO_IMAGES, DEMO_POISONED
from engine.detectors import make_detector
from engine.detectors import scaleup
from engine.errors import InputError
from engine.scoring import forward
from tests.test_scoring import count_forward_calls


def test_drift_is_one_minus_the_mean_probability_of_the_original_class(demo_net, demo_poisoned, fresh_caches):
    scaleup.SCALEUP_CACHE.clear()
    few = ImageSet(demo_poisoned.images[:3], None, ["a", "b", "c"], "three")
    detector = make_detector("scaleup", {"factors": "2, 4.5"})
    scores = progress.run(detector.score(demo_net, few, "1/255"))
    for i, img in enumerate(few.images):
        x = img.astype(np.float32) / 255
        own = forward(demo_net, x[None])[0].argmax()
        kept = [forward(demo_net, np.minimum(x * f, 1.0)[None])[0, own] for f in (2.0, 4.5)]
        assert scores.predicted[i] == own
        assert scores.values[i] == pytest.approx(1.0 - np.mean(kept), abs=1e-5)


def test_one_call_per_image_with_its_copies_clipped_to_the_pixel_range(demo_net, demo_test, monkeypatch, fresh_caches):
    scaleup.SCALEUP_CACHE.clear()
    seen = []
    real = scoring.forward

    def spy(net, x):
        seen.append((len(x), float(x.max())))
        return real(net, x)

    monkeypatch.setattr(scoring, "forward", spy)
    one = ImageSet(demo_test.images[:1], None, ["one"], "one")
    progress.run(make_detector("scaleup").score(demo_net, one, "1/255"))
    assert seen == [(6, pytest.approx(1.0))]  # the image and its 5 copies; bright pixels clip at 1
    seen.clear()
    progress.run(make_detector("scaleup").score(demo_net, one, "raw"))
    assert seen[0][0] == 6 and seen[0][1] == pytest.approx(255.0)


def test_scores_are_cached_per_factors(demo_net, demo_test, monkeypatch, fresh_caches):
    scaleup.SCALEUP_CACHE.clear()
    calls = count_forward_calls(monkeypatch)
    progress.run(make_detector("scaleup").score(demo_net, demo_test, "1/255"))
    n = len(calls)
    progress.run(make_detector("scaleup").score(demo_net, demo_test, "1/255"))
    assert len(calls) == n
    progress.run(make_detector("scaleup", {"factors": [3, 5]}).score(demo_net, demo_test, "1/255"))
    assert len(calls) > n


@pytest.mark.parametrize("factors, message", [
    ("0,2", r"must be in \(1, 255\]"),
    ("1", r"must be in \(1, 255\]"),
    ("3,x", "not a number"),
    (",", "give 1 to 32 numbers"),
    (",".join(["2"] * 33), "give 1 to 32 numbers"),
    ("3,nan", "not a finite number"),
])
def test_bad_factors(factors, message):
    with pytest.raises(InputError, match=message):
        make_detector("scaleup", {"factors": factors})


def test_separates_the_demo_trigger_unlike_confidence(demo_net, demo_clean):
    clean, sets = workflow.open_sets(demo_net, demo_clean.source, [(DEMO_POISONED, 0)])
    results = progress.run(workflow.compare_job(demo_net, clean, sets,
                                                workflow.make_detectors(["confidence", "scaleup"]), "1/255", (0.05,)))
    auc = {r.detector: r.auc for r in results}
    assert auc["scaleup"] > 0.85 > 0.5 > auc["confidence"]  # measured: 0.898 and 0.025


def test_calibration_file_keeps_the_factors(demo_net, demo_clean, tmp_path, capsys):
    out = tmp_path / "scaleup.json"
    assert main.main(["calibrate", "--detector", "scaleup", "--factors", "2,4,8", "-o", str(out)]) == 0
    raw = json.loads(out.read_text())
    assert raw["detector"] == "scaleup" and raw["detector_params"] == {"factors": [2.0, 4.0, 8.0]}
    cal = Calibration.load(out)
    assert cal.make_detector().factors == (2.0, 4.0, 8.0)
    assert main.main(["eval", "--calibration", str(out), str(DEMO_IMAGES)]) == 0
    labels = [int(line.split("\t")[1]) for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert len(labels) == len(list(DEMO_IMAGES.glob("*.png"))) and all(0 <= lab <= 50 for lab in labels)
    assert main.main(["calibrate", "--detector", "strip", "--factors", "2", "-o", str(tmp_path / "x.json")]) == 2
    assert "--factors is a setting of SCALE-UP; add that detector" in capsys.readouterr().err


def test_calibrates_from_the_window_form(qtbot):
    from gui.detector_settings import DetectorSettings

    form = DetectorSettings()
    qtbot.addWidget(form)
    line = form.fields["scaleup"]["factors"]
    assert line.text() == "3,5,7,9,11"
    line.setText("2, 6")
    assert make_detector("scaleup", form.params("scaleup")).factors == (2.0, 6.0)


def test_real_csaw_sample_separates(csaw):
    net = workflow.open_model(csaw / "models" / "sunglasses_bd_net.h5")
    clean, sets = workflow.open_sets(net, csaw / "clean_sample.h5", [(csaw / "sunglasses_sample.h5", 0)])
    (result,) = progress.run(workflow.compare_job(net, clean, sets, [make_detector("scaleup")], "1/255", (0.05,)))
    assert result.auc >= 0.9  # measured: 1.0 on the 10 + 10 faces


def test_calibrate_is_one_pass_over_the_clean_set(demo_net, demo_clean, monkeypatch, fresh_caches):
    scaleup.SCALEUP_CACHE.clear()
    calls = count_forward_calls(monkeypatch)
    cal = progress.run(calibrate(demo_net, demo_clean, "1/255", make_detector("scaleup"), frr=0.05))
    assert sum(calls) == 6 * len(demo_clean)
    assert 0.0 <= cal.pooled_threshold <= 1.0
