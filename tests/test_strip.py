"""STRIP, the detector comparison and the 'any detector' combination, on the demo BadNet."""

from __future__ import annotations

import json

import numpy as np
import pytest

import main
from engine import progress
from engine.detectors.calibration import AnyOf, Calibration, calibrate, load_defenses
from engine.evaluation.compare import compare, operating_point, roc
from engine.io.datasets import ImageSet, PoisonedSet
from engine.demo import DEMO_IMAGES, DEMO_POISONED
from engine.detectors import make_detector
from engine.detectors import strip
from engine.detectors.strip import StripDetector, _entropy_bits
from engine.errors import InputError
from engine.scoring import forward


@pytest.fixture(scope="module")
def strip_calibration(demo_net, demo_clean):
    return progress.run(calibrate(demo_net, demo_clean, "1/255", make_detector("strip"), frr=0.05))


@pytest.fixture(scope="module")
def comparison(demo_net, demo_clean, demo_poisoned):
    detectors = [make_detector("confidence"), make_detector("strip")]
    results = progress.run(compare(demo_net, demo_clean, [PoisonedSet(demo_poisoned, 0)], detectors, "1/255"))
    return {r.detector: r for r in results}


def test_strip_catches_what_confidence_cannot(comparison):
    conf, strip = comparison["confidence"], comparison["strip"]
    # Measured on the demo (300 clean validation faces, the 198 of 200 sunglasses faces sent to
    # the target, 32 blends): STRIP AUC 0.993, detection 83.3% at 1% and 94.4% at 5% false
    # rejection; the confidence detector's AUC is 0.025 (triggered faces are *more* confident
    # than clean ones) and it detects none of them at either rate.
    assert strip.auc == pytest.approx(0.993, abs=0.01)
    at1, at5 = strip.points
    assert (at1.target_frr, at5.target_frr) == (0.01, 0.05)
    assert at1.detection == pytest.approx(0.833, abs=0.05) and at5.detection == pytest.approx(0.944, abs=0.03)
    assert at1.frr <= 0.01 and at5.frr <= 0.05
    assert conf.auc < 0.1
    assert [p.detection for p in conf.points] == [0.0, 0.0]


def test_strip_calibration_flags_most_sunglasses_faces_and_few_clean_ones(
    demo_net, demo_test, demo_poisoned, strip_calibration
):
    cal = strip_calibration
    assert cal.detector == "strip" and cal.detector_params["blends"] == 32
    # 6 clean faces per class is far too few for a 5% quantile of its own (auto needs 20): pooled.
    assert cal.min_samples == 20 and cal.pooled.all()
    bad = progress.run(cal.judge(demo_net, demo_poisoned))
    good = progress.run(cal.judge(demo_net, demo_test))
    assert bad.flagged.mean() > 0.9  # measured 94.5%
    assert good.flagged.mean() < 0.10  # measured on held-out clean faces: 6.3%
    assert np.all(bad.labels[bad.flagged] == demo_net.num_classes)
    np.testing.assert_array_equal(good.labels[~good.flagged], good.predicted[~good.flagged])


def test_one_image_costs_one_batched_call(demo_net, demo_test, strip_calibration, monkeypatch):
    calls = []
    real = demo_net.model.predict_on_batch

    def counting(x):
        calls.append(len(x))
        return real(x)

    monkeypatch.setattr(demo_net.model, "predict_on_batch", counting)
    one = ImageSet(demo_test.images[:1], None, ["one"], "one face")
    detector = strip_calibration.make_detector()
    first = detector.first_blends
    strip.STRIP_CACHE.clear()
    score = progress.run(detector.score(demo_net, one, "1/255")).values[0]
    # The image and its first blends together; the rest, in a second call, only when the first
    # blends leave its entropy below the cut.
    assert calls == ([1 + first] if score >= detector.early_cut else [1 + first, 32 - first])
    calls.clear()
    strip.STRIP_CACHE.clear()
    whole = StripDetector(overlays=detector.overlays, first_blends=0)
    three = ImageSet(demo_test.images[1:4], None, ["a", "b", "c"], "three faces")
    progress.run(whole.score(demo_net, three, "1/255"))
    assert calls == [99]  # with first blends 0: every blend at once


def test_score_is_the_mean_blend_entropy_without_self_blends(demo_net, demo_clean, fresh_caches):
    detector = StripDetector(blends=4, alpha=0.5, seed=3)
    progress.run(detector.fit(demo_net, demo_clean, "1/255"))
    overlays = detector.overlays.astype(np.float32)
    assert len(overlays) == 4
    # An image that is one of the blend images (index 1), and one that is not.
    inside = detector.overlays[1]
    outside = next(img for img in demo_clean.images if not any(np.array_equal(img, o) for o in detector.overlays))
    images = ImageSet(np.stack([inside, outside]), None, ["in", "out"], "two faces")
    strip.STRIP_CACHE.clear()
    scores = progress.run(detector.score(demo_net, images, "1/255"))

    def by_hand(img, skip=None):
        blends = [(0.5 * img.astype(np.float32) + 0.5 * o) / 255 for j, o in enumerate(overlays) if j != skip]
        return float(np.mean(_entropy_bits(forward(demo_net, np.stack(blends)))))

    assert scores.values[0] == pytest.approx(by_hand(inside, skip=1), abs=1e-4)
    assert scores.values[1] == pytest.approx(by_hand(outside), abs=1e-4)
    assert scores.values[0] != pytest.approx(by_hand(inside), abs=1e-4)  # the self-blend would count


def test_only_the_images_the_first_blends_leave_low_get_the_rest(demo_net, demo_clean, demo_test, demo_poisoned,
                                                                   fresh_caches):
    """With first blends on, an image's score is its first blends' mean entropy when that is at
    or above the cut learnt on clean images (their median), else the mean over every blend."""
    early = StripDetector(blends=12, first_blends=4)
    progress.run(early.fit(demo_net, demo_clean, "1/255"))
    assert early.early == 4 and early.early_cut is not None
    first = StripDetector(overlays=early.overlays[:4], first_blends=0)
    whole = StripDetector(overlays=early.overlays, first_blends=0)
    faces = ImageSet(np.concatenate([demo_test.images[:20], demo_poisoned.images[:10]]), None,
                     [str(i) for i in range(30)], "faces")
    got, by_first, by_all = (progress.run(d.score(demo_net, faces, "1/255")).values for d in (early, first, whole))
    # The three detectors score in batches of different shapes, and float32 kernels round
    # differently by batch shape (1.4e-8 apart seen), so scores agree to a float32 tolerance,
    # and an image whose first-blend score lies within it of the cut may fall either side.
    tol = 1e-5
    low = by_first < early.early_cut - tol
    high = by_first >= early.early_cut + tol
    assert low.any() and high.any()
    np.testing.assert_allclose(got[low], by_all[low], atol=tol)
    np.testing.assert_allclose(got[high], by_first[high], atol=tol)
    edge = ~(low | high)
    assert np.all(np.isclose(got[edge], by_all[edge], atol=tol) | np.isclose(got[edge], by_first[edge], atol=tol))
    assert np.mean(progress.run(first.score(demo_net, demo_clean, "1/255")).values < early.early_cut) == \
        pytest.approx(0.5, abs=0.05)  # the cut: the clean images' median, on a sample of 200


def test_a_calibration_saved_before_the_first_blends_blends_fully(strip_calibration, tmp_path):
    path = tmp_path / "strip.json"
    strip_calibration.save(path)
    saved = json.loads(path.read_text())
    assert isinstance(saved["detector_state"]["early_cut"], float)
    assert Calibration.load(path).make_detector().early == 8
    del saved["detector_state"]["early_cut"]  # as calibrations were written before issue 20
    path.write_text(json.dumps(saved))
    assert Calibration.load(path).make_detector().early == 0
    saved["detector_state"]["early_cut"] = "lots"
    path.write_text(json.dumps(saved))
    with pytest.raises(InputError, match="early cut"):
        Calibration.load(path)


def test_entropy_in_bits():
    p = np.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25] * 4])
    np.testing.assert_allclose(_entropy_bits(p), [1.0, 0.0, 2.0])


def test_works_from_50_clean_images(demo_net, demo_clean, demo_poisoned):
    few = ImageSet(demo_clean.images[:50], demo_clean.labels[:50], demo_clean.names[:50], "50 faces")
    cal = progress.run(calibrate(demo_net, few, "1/255", make_detector("strip"), frr=0.05))
    assert len(cal.make_detector().overlays) == 32 and cal.pooled.all()
    assert cal.data["n"] == 50
    bad = progress.run(cal.judge(demo_net, demo_poisoned))
    assert bad.flagged.mean() > 0.8  # measured 96.3% with blends and threshold from 50 faces


def test_file_round_trip_keeps_blend_images_and_verdicts(demo_net, demo_poisoned, strip_calibration, tmp_path):
    path = tmp_path / "strip.json"
    strip_calibration.save(path)
    back = Calibration.load(path)
    assert back.detector == "strip" and back.detector_params == strip_calibration.detector_params
    np.testing.assert_array_equal(back.make_detector().overlays, strip_calibration.make_detector().overlays)
    sample = ImageSet(demo_poisoned.images[:20], None, demo_poisoned.names[:20], "20 faces")
    a = progress.run(strip_calibration.judge(demo_net, sample))
    b = progress.run(back.judge(demo_net, sample))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)  # float32: same faces, maybe other batch shapes


def test_damaged_blend_images_are_a_one_line_error(strip_calibration, tmp_path):
    path = tmp_path / "strip.json"
    strip_calibration.save(path)
    raw = json.loads(path.read_text())
    raw["detector_state"]["overlays"]["shape"][0] += 1  # more images than bytes
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError) as err:
        Calibration.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert "damaged" in str(err.value)


@pytest.mark.parametrize("params, message", [({"blends": 0}, r"blend images 0 must be in \[1, 256\]"), ({"alpha": 1.0}, r"blend weight 1.0 must be in \(0, 1\)"), ({"blends": 2.5}, "whole number"), ({"speed": 1}, "no setting speed")])
def test_bad_strip_settings(params, message):
    with pytest.raises(InputError, match=message):
        make_detector("strip", params)


def test_roc_auc_and_operating_points():
    clean, poisoned = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 5.0])
    curve = roc(clean, poisoned)
    # P(poisoned < clean) + half P(equal) = (4 + 3 + 0.5 + 0) / 12
    assert curve.auc == pytest.approx(7.5 / 12)
    assert curve.frr[0] == curve.detection[0] == 0.0 and curve.frr[-1] == curve.detection[-1] == 1.0
    assert np.all(np.diff(curve.frr) >= 0) and np.all(np.diff(curve.detection) >= 0)
    # At 25% of 4 clean scores the conformal rule takes the lowest (a new clean score falls below
    # it 1 time in 5): threshold 1.0 flags no clean score here and the one poisoned score under it.
    point = operating_point(clean, poisoned, 0.25)
    assert (point.threshold, point.frr, point.detection) == (1.0, 0.0, pytest.approx(1 / 3))
    point = operating_point(np.arange(1.0, 21.0), poisoned, 0.1)  # floor(0.1 * 21) - 1 = 1: the 2nd lowest
    assert (point.threshold, point.frr, point.detection) == (2.0, 0.05, pytest.approx(2 / 3))
    assert roc(clean, clean - 10).auc == 1.0 and roc(clean, clean + 10).auc == 0.0


def test_any_of_flags_when_either_flags(demo_net, demo_clean, demo_poisoned, strip_calibration):
    conf = progress.run(calibrate(demo_net, demo_clean, "1/255", make_detector("confidence"), frr=0.05))
    both = AnyOf([conf, strip_calibration])
    images = ImageSet(np.concatenate([demo_poisoned.images[:30], demo_clean.images[:30]]), None,
                      [f"i{k}" for k in range(60)], "mixed")
    v_conf = progress.run(conf.judge(demo_net, images))
    v_strip = progress.run(strip_calibration.judge(demo_net, images))
    v_both = progress.run(both.judge(demo_net, images))
    np.testing.assert_array_equal(v_both.flagged, v_conf.flagged | v_strip.flagged)
    np.testing.assert_array_equal(v_both.labels[~v_both.flagged], v_conf.predicted[~v_both.flagged])
    assert v_both.flagged.sum() > max(v_conf.flagged.sum(), v_strip.flagged.sum()) - 1


def test_any_of_refuses_calibrations_of_different_models(strip_calibration):
    other = Calibration(**{**strip_calibration.__dict__, "model_sha256": "0" * 64})
    with pytest.raises(InputError, match="another model"):
        AnyOf([strip_calibration, other])


# --- CLI: the same detector gives the same verdicts ------------------------------------------


@pytest.mark.slow  # detection figures: compare runs every chosen detector
def test_cli_strip_calibrate_eval_score_compare(capsys, tmp_path, demo_net, strip_calibration):
    out = tmp_path / "strip.json"
    assert main.main(["calibrate", "--detector", "strip", "--frr", "0.05", "-o", str(out)]) == 0
    assert "STRIP" in capsys.readouterr().out
    cal = load_defenses([out])
    np.testing.assert_array_equal(cal.make_detector().overlays, strip_calibration.make_detector().overlays)

    assert main.main(["eval", "--calibration", str(out), str(DEMO_IMAGES)]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    from engine.io import datasets

    images = datasets.read(DEMO_IMAGES, size=demo_net.input_shape[:2])
    verdicts = progress.run(strip_calibration.judge(demo_net, images))
    assert {p: int(lab) for p, lab in lines} == {n: int(lab) for n, lab in zip(verdicts.names, verdicts.labels)}
    flagged = {p.rsplit("/", 1)[-1] for p, lab in lines if int(lab) == demo_net.num_classes}
    # Measured: 6 of the 6 sunglasses PNGs, 1 of the 6 clean ones (5% is the target) and none
    # of the eyebrows ones: STRIP misses that small trigger.
    assert sum(name.startswith("sunglasses") for name in flagged) >= 5
    assert sum(name.startswith("clean") for name in flagged) <= 1

    assert main.main(["score", "--calibration", str(out), "--poisoned", f"{DEMO_POISONED}:0", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["sets"]
    assert result["detection_rate"] > 0.9  # measured: 94.5%

    roc_csv = tmp_path / "roc.csv"
    assert main.main(["compare", "--json", "--blends", "8", "--roc-csv", str(roc_csv)]) == 0
    report = json.loads(capsys.readouterr().out)
    import csv

    with roc_csv.open(newline="") as fh:
        curve = [r for r in csv.DictReader(fh) if r["detector"] == "strip" and r["poisoned_set"].startswith("sunglasses")]
    frr = [float(r["false_rejection"]) for r in curve]
    det = [float(r["detection"]) for r in curve]
    assert frr[0] == det[0] == 0.0 and frr[-1] == det[-1] == 1.0 and frr == sorted(frr) and det == sorted(det)
    by = {r["detector"]: r for r in report["results"] if r["target"] == 0}
    assert by["strip"]["params"]["blends"] == 8 and by["strip"]["auc"] > 0.95 and by["confidence"]["auc"] < 0.1
    assert [p["target_frr"] for p in by["strip"]["at_frr"]] == [0.01, 0.05]


def test_cli_combined_calibrations(capsys, tmp_path):
    strip, conf = tmp_path / "s.json", tmp_path / "c.json"
    assert main.main(["calibrate", "--detector", "strip", "--blends", "8", "-o", str(strip)]) == 0
    assert main.main(["calibrate", "--detector", "confidence", "--frr", "0.01", "-o", str(conf)]) == 0
    capsys.readouterr()
    rates = {}
    for name, args in (("strip", ["--calibration", strip]), ("conf", ["--calibration", conf]),
                       ("both", ["--calibration", strip, "--calibration", conf])):
        assert main.main(["score", *map(str, args), "--json"]) == 0  # demo clean test set
        rates[name] = json.loads(capsys.readouterr().out)["sets"][0]["frr"]
    assert rates["both"] >= max(rates["strip"], rates["conf"])
    assert rates["both"] <= rates["strip"] + rates["conf"] + 1e-9


@pytest.mark.parametrize(
    "args, message",
    [
        (["calibrate", "--detector", "confidence", "--blends", "8", "-o", "x.json"], "--blends is a setting of STRIP; add that detector"),
        (["calibrate", "--detector", "strip", "--blends", "0", "-o", "x.json"], "blend images 0 must be in [1, 256]"),
        (["compare", "--frr", "1%,x"], "--frr 'x' is not a rate"),
        (["compare", "--detectors", "confidence,nope"], "unknown detector"),
    ],
)
def test_cli_errors(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
