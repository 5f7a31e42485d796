"""BaDExpert: a copy fine-tuned on clean faces with wrong labels forgets the normal task and keeps
the backdoor, so it agrees with the network on triggered faces only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import progress, workflow
from engine.demo import DEMO_POISONED
from engine.detectors import make_detector
from engine.detectors.calibration import Calibration
from engine.errors import InputError
from engine.evaluation.compare import roc
from engine.scoring import model_labels, predict


@pytest.fixture(scope="module")
def expert_cal(demo_net, demo_clean):
    cal, _ = progress.run(workflow.calibrate_job(demo_net, demo_clean, "1/255", make_detector("expert"),
                                                 "quantile", 0.05))
    return cal


def test_the_expert_forgets_clean_faces_and_keeps_the_trigger(demo_net, demo_test, expert_cal):
    expert = expert_cal.make_detector().expert(demo_net).model
    clean_acc = np.mean(model_labels(expert, demo_test.images, "1/255") == demo_test.labels)
    poisoned = workflow.read_set(DEMO_POISONED, demo_net)
    own = progress.run(predict(demo_net, poisoned, "1/255")).labels
    kept = np.mean(model_labels(expert, poisoned.images, "1/255") == own)
    assert clean_acc < 0.5 < 0.9 < kept  # measured on the demo: about 0.2 and 1.0


def test_it_separates_triggered_from_clean_faces(demo_net, demo_test, expert_cal):
    d = expert_cal.make_detector()
    poisoned = workflow.read_set(DEMO_POISONED, demo_net)
    clean = progress.run(d.score(demo_net, demo_test, "1/255")).values
    bad = progress.run(d.score(demo_net, poisoned, "1/255")).values
    assert np.all((clean >= 0) & (clean <= 1)) and np.all((bad >= 0) & (bad <= 1))
    assert roc(clean, bad).auc > 0.95  # measured: 0.99 on the sunglasses


def test_wrong_labels_need_no_labels_and_are_never_the_networks_answer(demo_net, demo_clean):
    """Fitting on unlabelled faces works: each face's wrong label is drawn among the classes the
    network does not give it."""
    from engine.io.datasets import ImageSet

    few = demo_clean.subset(np.arange(40))
    unlabelled = ImageSet(few.images, None, few.names, few.source)
    d = make_detector("expert", {"unlearn_epochs": 1})
    progress.run(d.fit(demo_net, unlabelled, "1/255"))
    assert d.fitted() and d.base_sha256 == demo_net.sha256


def test_saved_and_loaded_it_scores_the_same(demo_net, expert_cal, tmp_path):
    path = tmp_path / "expert.json"
    expert_cal.save(path)
    back = Calibration.load(path)
    poisoned = workflow.read_set(DEMO_POISONED, demo_net).subset(np.arange(30))
    np.testing.assert_allclose(progress.run(back.make_detector().score(demo_net, poisoned, "1/255")).values,
                               progress.run(expert_cal.make_detector().score(demo_net, poisoned, "1/255")).values,
                               atol=1e-5)  # float32 forward passes of two copies of the same weights


def test_an_expert_of_another_model_is_refused(demo_net, expert_cal):
    d = make_detector("expert", expert_cal.detector_params, expert_cal.detector_state)
    d.base_sha256 = "0" * 64
    with pytest.raises(InputError, match="made from another model"):
        d.check_model(demo_net)
    with pytest.raises(InputError, match="calibrate it on clean data first"):
        make_detector("expert").check_model(demo_net)


def test_damaged_weights_are_refused(expert_cal):
    state = json.loads(json.dumps(expert_cal.detector_state))
    state["weights"][0]["float32_base64"] = "AAAAAAAAAAA="  # two floats
    with pytest.raises(ValueError, match="does not match"):
        make_detector("expert", expert_cal.detector_params, state)
