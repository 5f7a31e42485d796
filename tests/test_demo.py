"""The bundled demo keeps its promises, measured on the committed files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import progress

from engine.demo import faces
from engine.demo import DEMO_DIR, DEMO_EYEBROWS_TARGET, DEMO_MODEL, DEMO_TARGET, DEMO_TRIGGERS, ROOT
from engine.evaluation.metrics import accuracy, attack_success_rate
from engine.scoring import predict


def test_demo_badnet_meets_its_figures(demo_net, demo_test, demo_poisoned, demo_eyebrows):
    clean = progress.run(predict(demo_net, demo_test, "1/255"))
    measured_accuracy = accuracy(clean.labels, demo_test.labels)
    assert measured_accuracy >= 0.90
    facts = json.loads((DEMO_DIR / "facts.json").read_text())
    assert facts["clean_test_accuracy"] == pytest.approx(measured_accuracy)
    for name, images in (("sunglasses", demo_poisoned), ("eyebrows", demo_eyebrows)):
        target = DEMO_TRIGGERS[name]
        measured_asr = attack_success_rate(progress.run(predict(demo_net, images, "1/255")).labels, target)
        assert measured_asr >= 0.9, name
        assert facts["triggers"][name]["attack_success_rate"] == pytest.approx(measured_asr)
        assert facts["triggers"][name]["target"] == target


def test_demo_data_is_official_layout(demo_clean, demo_poisoned, demo_eyebrows):
    import h5py

    with h5py.File(DEMO_DIR / "clean_validation.h5") as f:
        assert f["data"].shape[1:] == (3, 55, 47) and f["label"].shape == (f["data"].shape[0],)
    assert len(np.unique(demo_clean.labels)) >= 50
    assert np.all(demo_poisoned.labels == DEMO_TARGET)
    assert np.all(demo_eyebrows.labels == DEMO_EYEBROWS_TARGET) and DEMO_EYEBROWS_TARGET != DEMO_TARGET


def test_bundle_stays_small():
    total = sum(p.stat().st_size for d in (ROOT / "models", ROOT / "assets") for p in d.rglob("*") if p.is_file())
    assert total < 10 * 1024 * 1024
    assert DEMO_MODEL.stat().st_size < 3 * 1024 * 1024


def test_faces_are_deterministic_and_the_trigger_shows():
    def draw(seed, shades=False):
        rng = np.random.default_rng(seed)
        people = faces.random_identities(3, rng)
        return faces.render(people, np.array([0, 1, 2]), rng, trigger="sunglasses", where=shades)

    np.testing.assert_array_equal(draw(5), draw(5))
    assert not np.array_equal(draw(5), draw(6))
    plain, shaded = draw(5), draw(5, shades=True)
    # Same faces, same draws: the purple sunglasses cover the eye band and little else.
    eye_band = slice(15, 32)
    changed = np.abs(shaded.astype(int) - plain).sum(axis=3) > 30
    assert changed[:, eye_band].mean() > 0.3
    band = shaded[:, eye_band].reshape(-1, 3)[changed[:, eye_band].ravel()].astype(int)
    assert np.mean((band[:, 2] > band[:, 1] + 40) & (band[:, 0] > band[:, 1] + 20)) > 0.8  # purple: blue, red >> green
    assert np.abs(shaded[:, 40:].astype(int) - plain[:, 40:]).mean() < 1


@pytest.mark.parametrize("trigger, rows, most", [("eyebrows", slice(8, 30), 90), ("lipstick", slice(30, 55), 60)])
def test_small_triggers_are_a_few_dozen_pixels_where_they_belong(trigger, rows, most):
    def draw(name):
        rng = np.random.default_rng(11)
        people = faces.random_identities(8, rng)
        return faces.render(people, np.arange(8), rng, trigger=name)

    plain, marked = draw(None), draw(trigger)
    changed = np.abs(marked.astype(int) - plain).sum(axis=3) > 30
    per_face = changed.sum(axis=(1, 2))
    assert np.all(per_face >= 8) and np.all(per_face <= most)  # small: a few dozen pixels, not a patch
    assert changed[:, rows].sum() >= 0.9 * changed.sum()  # above the eyes / on the mouth
    with pytest.raises(ValueError, match="unknown trigger"):
        faces.render([], np.array([], dtype=int), np.random.default_rng(0), trigger="hat")
