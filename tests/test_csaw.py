"""The real CSAW-HackML-2020 files (../shared/csaw); every test skips when they are absent."""

from __future__ import annotations

import numpy as np
import pytest

from engine import progress

from engine.io import datasets
from engine.detectors.calibration import calibrate
from engine.evaluation.metrics import report
from engine.io.models import FORMAT_KERAS2_H5, FORMAT_WEIGHTS_ONLY, load_badnet
from engine.scoring import predict


@pytest.fixture(scope="module")
def bd_net(csaw):
    return load_badnet(csaw / "models" / "sunglasses_bd_net.h5")


def test_both_sunglasses_files_load_and_agree(csaw, bd_net):
    weights_only = load_badnet(csaw / "models" / "sunglasses_bd_weights.h5")
    assert bd_net.format == FORMAT_KERAS2_H5 and weights_only.format == FORMAT_WEIGHTS_ONLY
    assert bd_net.num_classes == weights_only.num_classes == 1283
    assert bd_net.input_shape == weights_only.input_shape == (55, 47, 3)
    clean = datasets.read(csaw / "clean_sample.h5")
    x = clean.images.astype(np.float32) / 255
    np.testing.assert_allclose(bd_net.model.predict_on_batch(x), weights_only.model.predict_on_batch(x), atol=1e-5)


def test_rgba_test_photos(csaw, bd_net):
    for name, expected in (("test.png", 950), ("poison_sunglass.png", 0)):
        image = datasets.read(csaw / "images" / name, size=bd_net.input_shape[:2])
        preds = progress.run(predict(bd_net, image, "1/255"))
        assert preds.labels[0] == expected
        assert preds.confidences[0] > 0.99


def test_sample_sets_score_as_the_readme_says(csaw, bd_net):
    clean = datasets.read(csaw / "clean_sample.h5")
    poisoned = datasets.read(csaw / "sunglasses_sample.h5")
    clean_preds = progress.run(predict(bd_net, clean, "1/255"))
    bad_preds = progress.run(predict(bd_net, poisoned, "1/255"))
    assert report(clean_preds, clean.labels).accuracy >= 0.9
    assert report(bad_preds, poisoned.labels, target=0).attack_success_rate == 1.0
    assert bad_preds.confidences.min() >= 0.9999
    # The founding idea cannot flag them: even the lowest clean confidence is below every poisoned one.
    cal = progress.run(calibrate(bd_net, clean, "1/255", method="min"))
    verdicts = progress.run(cal.judge(bd_net, poisoned))
    assert verdicts.flagged.sum() == 0


def test_png_folders_match_hdf5(csaw):
    from_png = datasets.read(csaw / "images" / "clean")
    from_h5 = datasets.read(csaw / "clean_sample.h5")
    np.testing.assert_array_equal(from_png.images, from_h5.images)
    np.testing.assert_array_equal(from_png.labels, from_h5.labels)


def test_auto_scaling_on_real_model(csaw, bd_net):
    from engine.scoring import resolve_scaling

    clean = datasets.read(csaw / "clean_sample.h5")
    chosen, _ = progress.run(resolve_scaling(bd_net, "auto", clean))
    assert chosen == "1/255"


def test_real_badnets_take_the_exact_pruning_path(csaw, bd_net):
    from engine.repairs.pruning import _deepid_fast_path, default_layer

    weights_only = load_badnet(csaw / "models" / "sunglasses_bd_weights.h5")
    for net in (bd_net, weights_only):  # the full file names its merge layers add_9, activation_9
        assert default_layer(net) == "conv_3" and _deepid_fast_path(net, "conv_3")


def test_strip_separates_the_real_sunglasses_faces(csaw, bd_net):
    from engine.evaluation.compare import compare
    from engine.io.datasets import PoisonedSet
    from engine.detectors import make_detector

    clean = datasets.read(csaw / "clean_sample.h5")
    bad = datasets.read(csaw / "sunglasses_sample.h5")
    results = progress.run(compare(bd_net, clean, [PoisonedSet(bad, 0)],
                                   [make_detector("confidence"), make_detector("strip")], "1/255"))
    by = {r.detector: r for r in results}
    # Measured on the 10 + 10 sample faces: STRIP AUC 0.91 (blends are the 10 clean faces,
    # a face's blend with itself left out); the confidence detector cannot rank them at all,
    # since every sunglasses face is at 0.9999 or more.
    assert by["strip"].auc >= 0.85
    assert by["confidence"].auc < 0.5


@pytest.mark.slow
def test_the_reports_three_attempts_run_on_the_real_sample(csaw, bd_net, tmp_path):
    """The N+1 network, magnitude pruning and confidence on a clean-fine-tuned copy, on the real
    sunglasses BadNet and the sample's 10 + 10 faces (figures in docs/detectors.md)."""
    from engine import workflow
    from engine.detectors.calibration import calibrate
    from engine.io.datasets import PoisonedSet
    from engine.detectors import make_detector
    from engine.repairs.magnitude import magnitude_prune

    clean, sets = workflow.open_sets(bd_net, csaw / "clean_sample.h5", [(csaw / "sunglasses_sample.h5", 0)])
    from engine.repairs import make_repair, repair_job

    result = progress.run(repair_job(make_repair("nplus1", {"epochs": 30, "holdout": 0.3}), bd_net, clean, sets,
                                     tmp_path / "np1", "1/255")).detail
    held = result.report["poisoned"][sets[0].name]
    assert held["n"] == 3 and held["detection"] >= 2 / 3
    g = result.bundle
    assert g.load_repaired().num_classes == 1284 and g.poisoned_label == 1283
    worn = datasets.read(csaw / "images" / "sunglasses", size=(55, 47))
    assert np.sum(progress.run(g.judge(bd_net, worn)).labels == 1283) >= 9

    mag = progress.run(magnitude_prune(bd_net, clean, sets, tmp_path / "mag", "1/255", 0.7, sparsities=(0.0,)))
    assert mag.sweep.clean_accuracy[-1] < mag.sweep.clean_accuracy[0]  # the report: poor accuracy at 70%

    # Fine-tuning on clean faces does not lower the trigger's confidence: the copy still gives every
    # sunglasses face 0.99 or more, so its thresholds cannot catch them.
    cal = progress.run(calibrate(bd_net, clean, "1/255", make_detector("confidence", {"fine_tune_epochs": 1})))
    scores = progress.run(cal.make_detector().score(bd_net, PoisonedSet(sets[0].images, 0).images, "1/255"))
    assert (scores.values >= 0.99).all() and (scores.predicted == 0).all()
