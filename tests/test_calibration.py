"""Thresholds, the calibration file, verdicts, and the honest picture on the demo BadNet."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from engine import progress
from engine.detectors.calibration import Calibration, calibrate, fit_thresholds, frr_interval, sample_size
from engine.errors import InputError
from engine.evaluation.metrics import report
from engine.scoring import predict


def test_quantile_threshold_keeps_false_rejections_at_or_below_target():
    rng = np.random.default_rng(1)
    values = rng.uniform(0.5, 1.0, 1000)
    predicted = np.zeros(1000, dtype=int)
    thresholds, counts, pooled, _ = fit_thresholds(values, predicted, 2, "quantile", frr=0.05, min_samples=5)
    assert counts.tolist() == [1000, 0]
    assert 0.04 <= np.mean(values < thresholds[0]) <= 0.05
    assert pooled.tolist() == [False, True]


@pytest.mark.parametrize("n", [45, 100, 399])
def test_quantile_threshold_holds_the_rate_on_new_clean_images(n):
    """The target is a rate on clean images the threshold was not set on (split-conformal rule)."""
    rng = np.random.default_rng(n)
    frr, reps = 0.05, 4000
    held_out = []
    for _ in range(reps):
        values = rng.normal(size=n)
        thresholds, *_ = fit_thresholds(values, np.zeros(n, dtype=int), 1, "quantile", frr=frr, min_samples=1)
        held_out.append(np.mean(rng.normal(size=200) < thresholds[0]))
    mean = float(np.mean(held_out))
    assert mean <= frr + 0.002                     # at most the target, in expectation
    assert mean >= frr - 1.0 / (n + 1) - 0.002     # and no more than one order statistic below it


@pytest.mark.parametrize("n, method, frr", [(45, "quantile", 0.05), (300, "quantile", 0.05), (120, "min", 0.05),
                                            (1168, "quantile", 0.05)])
def test_the_reported_interval_holds_the_rate_of_new_clean_images(n, method, frr):
    """The interval a calibration reports: where the false rejection of new clean images lies for
    95% of draws of the n clean images the threshold is set on (simulated draws)."""
    lo, hi = frr_interval(n, method, frr)
    rng = np.random.default_rng(n)
    rates = []
    for _ in range(2000):
        values = rng.uniform(size=n)
        thresholds, *_ = fit_thresholds(values, np.zeros(n, dtype=int), 1, method, frr=frr, min_samples=1)
        rates.append(thresholds[0])  # uniform scores: the share of new images below t is t
    inside = np.mean((np.asarray(rates) >= lo) & (np.asarray(rates) <= hi))
    assert 0.93 <= inside <= 0.97
    assert lo < (frr if method == "quantile" else 1 / (n + 1)) < hi


def test_sample_size_keeps_the_interval_within_a_quarter_of_the_rate():
    assert sample_size("min", 0.05) == 0 and sample_size("quantile", 0.0) == 0  # every image
    for frr in (0.01, 0.05, 0.1):
        n = sample_size("quantile", frr)
        lo, hi = frr_interval(n, "quantile", frr)
        assert frr - lo <= 0.27 * frr and hi - frr <= 0.27 * frr  # a quarter, up to the order statistic's step
        lo, hi = frr_interval(n // 2, "quantile", frr)
        assert hi - lo > 0.5 * frr  # half as many would not do
    assert sample_size("quantile", 0.05) == 1168


def test_calibrating_on_a_sample(demo_net, demo_clean):
    """A sample: as many clean images as asked, drawn at random, recorded with the interval;
    0 or a sample larger than the set: every image."""
    cal = progress.run(calibrate(demo_net, demo_clean, "1/255", frr=0.05, sample=100))
    assert cal.data["n"] == 100 and cal.data["of"] == len(demo_clean) and cal.counts.sum() == 100
    assert f"on 100 of {len(demo_clean)} clean images (a random sample; false rejection" in cal.summary()
    assert cal.data["frr_interval"] == pytest.approx(list(frr_interval(100, "quantile", 0.05)))
    for sample in (0, None, 10_000):  # None: 1168 at 5%, more than the demo has
        cal = progress.run(calibrate(demo_net, demo_clean, "1/255", frr=0.05, sample=sample))
        assert cal.data["n"] == cal.data["of"] == len(demo_clean)
        assert "random sample" not in cal.summary()
    with pytest.raises(InputError, match="sample"):
        progress.run(calibrate(demo_net, demo_clean, "1/255", sample=-1))


def test_min_method_and_pooled_fallback():
    values = np.array([0.9, 0.8, 0.95, 0.6, 0.99, 0.7])
    predicted = np.array([0, 0, 0, 1, 1, 2])
    thresholds, counts, pooled, pooled_threshold = fit_thresholds(values, predicted, 4, "min", min_samples=2)
    assert thresholds[0] == 0.8 and thresholds[1] == 0.6
    assert pooled.tolist() == [False, False, True, True]
    assert pooled_threshold == 0.6 and thresholds[2] == thresholds[3] == 0.6
    assert counts.tolist() == [3, 2, 1, 0]


@pytest.mark.parametrize("method, frr", [("median", 0.01), ("quantile", 1.5)])
def test_bad_options(method, frr):
    with pytest.raises(InputError):
        fit_thresholds(np.ones(3), np.zeros(3, int), 1, method, frr)


@pytest.fixture(scope="module")
def demo_calibration(demo_net, demo_clean):
    return progress.run(calibrate(demo_net, demo_clean, "1/255", method="quantile", frr=0.01))


def test_calibration_on_demo(demo_calibration, demo_net, demo_clean):
    cal = demo_calibration
    assert cal.num_classes == demo_net.num_classes == cal.poisoned_label
    assert cal.counts.sum() == len(demo_clean)
    # Classes with fewer clean predictions than min_samples fall back to the pooled threshold.
    np.testing.assert_array_equal(cal.pooled, cal.counts < cal.min_samples)
    assert np.all(cal.thresholds[cal.pooled] == cal.pooled_threshold)
    assert 0 < cal.pooled_threshold <= 1


def test_verdicts_label_flagged_images_n(demo_calibration, demo_net, demo_clean):
    verdicts = progress.run(demo_calibration.judge(demo_net, demo_clean))
    assert np.all((verdicts.labels == verdicts.predicted) | (verdicts.labels == demo_net.num_classes))
    flagged = verdicts.scores < verdicts.thresholds
    np.testing.assert_array_equal(verdicts.flagged, flagged)
    # On its own calibration data a 1% quantile rejects few clean images.
    assert verdicts.flagged.mean() <= 0.05
    v = verdicts[0]
    assert v.name == demo_clean.names[0] and v.label in (v.predicted, demo_net.num_classes)


def test_confidence_detector_misses_the_sunglasses_backdoor(demo_calibration, demo_net, demo_poisoned):
    """The founding idea, measured honestly: triggered faces are confident, so few are flagged."""
    preds = progress.run(predict(demo_net, demo_poisoned, "1/255"))
    verdicts = progress.run(demo_calibration.judge(demo_net, demo_poisoned))
    result = report(preds, demo_poisoned.labels, 0, verdicts)
    assert result.attack_success_rate >= 0.95
    assert np.median(preds.confidences[preds.labels == 0]) > 0.99
    assert result.detection_rate < 0.5
    assert result.defended_attack_success_rate > 0.5


def test_round_trip_and_relative_model_path(demo_calibration, tmp_path):
    path = tmp_path / "cal.json"
    demo_calibration.save(path)
    raw = json.loads(path.read_text())
    assert raw["kind"] == "badnet-inspector/calibration"
    assert not raw["model"]["path"].startswith("/")
    back = Calibration.load(path)
    np.testing.assert_array_equal(back.thresholds, demo_calibration.thresholds)
    np.testing.assert_array_equal(back.pooled, demo_calibration.pooled)
    assert back.model_path == str(__import__("pathlib").Path(demo_calibration.model_path).resolve())
    assert back.scaling == "1/255" and back.method == "quantile" and not back.edited
    back.set_threshold(3, 0.5)
    assert back.edited and back.thresholds[3] == 0.5


def test_save_never_replaces_a_file_that_is_not_a_calibration(demo_calibration, tmp_path):
    precious = tmp_path / "model.h5"
    precious.write_bytes(b"\x89HDF\r\n\x1a\nweights")
    with pytest.raises(InputError, match="not overwritten"):
        demo_calibration.save(precious)
    assert precious.read_bytes() == b"\x89HDF\r\n\x1a\nweights"
    assert list(tmp_path.iterdir()) == [precious]


def test_save_is_atomic_when_writing_fails(demo_calibration, tmp_path, monkeypatch):
    path = tmp_path / "cal.json"
    demo_calibration.save(path)
    before = path.read_text()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sys.modules["engine.io.files"].json, "dump", broken_dump)
    with pytest.raises(OSError):
        demo_calibration.save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cal.json"]


def test_calibration_for_another_model_is_an_error(demo_calibration, demo_net, tmp_path):
    from engine.io.models import load_badnet
    from tests.test_model_io import write_keras2_weights

    other_path = tmp_path / "other.h5"
    write_keras2_weights(demo_net.model, other_path)
    other = load_badnet(other_path)
    with pytest.raises(InputError, match="made for another model") as err:
        demo_calibration.check_model(other)
    assert str(other_path) in str(err.value)


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "not readable JSON"), ('{"kind": "something else"}', "not a calibration file"),
     ('{"kind": "badnet-inspector/calibration", "num_classes": 3}', "damaged calibration file")],
)
def test_bad_calibration_files(tmp_path, content, message):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        Calibration.load(path)
