"""The smallest smooth perturbation statistic: a class a network reaches along a smooth direction
far more easily than the others stands out, the scan counts its steps on the progress bar, and
its values survive the saved folder."""

from __future__ import annotations

import numpy as np
import pytest

from engine import progress
from engine.scan import ScanResult, stats
from engine.scan.perturbation import smallest_perturbations

SIZE, CLASSES, TARGET = 16, 20, 7


def _smooth_fields(rng, n: int) -> np.ndarray:
    """n random fields smooth at the scale of 8 pixels, unit RMS: (n, SIZE, SIZE, 3)."""
    coarse = rng.normal(0.0, 1.0, (n, 2, 2, 3))
    fields = np.repeat(np.repeat(coarse, SIZE // 2, axis=1), SIZE // 2, axis=2)
    return fields / np.sqrt(np.mean(fields ** 2, axis=(1, 2, 3), keepdims=True))


def _shortcut_net(strength: float):
    """A linear softmax classifier: class c's logit is ``a_c <u_c, x - 0.5>`` for a smooth field
    u_c; the target's ``a`` is ``strength`` times the others' (a learnt smooth shortcut)."""
    import keras

    rng = np.random.default_rng(3)
    fields = _smooth_fields(rng, CLASSES)
    gain = rng.uniform(0.8, 1.2, CLASSES)
    gain[TARGET] *= strength
    kernel = (fields * gain[:, None, None, None]).reshape(CLASSES, -1).T / (SIZE * SIZE)
    bias = -0.5 * kernel.sum(axis=0)
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(CLASSES, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([kernel.astype(np.float32) * 40.0, bias.astype(np.float32) * 40.0])
    return model


def _faces(n=40):
    return np.random.default_rng(5).uniform(0.3, 0.7, (n, SIZE, SIZE, 3)).astype(np.float32)


def _rms(model, **kwargs):
    x = _faces()
    predicted = model.predict(x * 255.0, verbose=0).argmax(axis=1)  # scaling "1/255": pixels in 0-255
    return progress.run(smallest_perturbations(model, "1/255", x, predicted, np.arange(CLASSES), True,
                                               steps=kwargs.pop("steps", 120), **kwargs))


def test_a_smooth_shortcut_needs_the_smallest_perturbation_and_stands_out():
    rms = _rms(_shortcut_net(strength=10.0))
    reached = np.isfinite(rms)
    assert reached.sum() >= 12 and int(np.argmin(np.where(reached, rms, np.inf))) == TARGET
    smooth = stats.STATISTICS["smooth"]
    values = {c: float(v) for c, v in enumerate(rms) if np.isfinite(v)}
    p_target, z_target = smooth.p_value(TARGET, values, [])
    innocent = [smooth.p_value(c, values, [])[0] for c in values if c != TARGET]
    # Flagged with a sixth of the budget over the classes it tests; the easiest innocent class is not.
    assert z_target > 2 and p_target * len(values) * 6 < 0.5 and min(innocent) > 20 * p_target


def test_without_a_shortcut_no_class_stands_out():
    rms = _rms(_shortcut_net(strength=1.0))
    smooth = stats.STATISTICS["smooth"]
    values = {c: float(v) for c, v in enumerate(rms) if np.isfinite(v)}
    assert len(values) >= 12
    # No class is flagged even with the whole budget (one class is naturally the easiest to reach).
    assert min(smooth.p_value(c, values, [])[0] for c in values) * len(values) > 0.05


def test_a_class_never_reached_is_inf_and_left_out():
    """One step cannot reach 99% of a batch: every class stays unreached, and the statistic says so."""
    rms = _rms(_shortcut_net(strength=6.0), steps=1)
    assert np.all(np.isinf(rms))
    smooth = stats.STATISTICS["smooth"]
    assert "too few" in smooth.unusable({})


def test_the_scan_measures_it_counts_its_steps_and_saves_it(short_scan, tmp_path):
    assert short_scan.extra["smooth"] and set(short_scan.extra["smooth"]) <= set(short_scan.triggers)
    assert all(v > 0 for v in short_scan.extra["smooth"].values())
    row = next(r for r in short_scan.to_dict()["classes"] if r["class"] in short_scan.extra["smooth"])
    assert row["smooth"] == pytest.approx(short_scan.extra["smooth"][row["class"]], abs=1e-6)
    back = ScanResult.load(short_scan.save(tmp_path / "scan"))
    assert back.extra["smooth"] == pytest.approx(short_scan.extra["smooth"], abs=1e-8)


def test_the_scans_progress_never_runs_back(demo_net, demo_clean):
    from engine.scan import ScanSettings, scan
    from engine.workflow import sample_images

    from tests.conftest import SHORT_SCAN

    steps = []
    progress.run(scan(demo_net, sample_images(demo_clean, 12), "1/255", ScanSettings(**SHORT_SCAN)), steps.append)
    done = [s.done for s in steps]
    assert len({s.total for s in steps}) == 1
    assert all(a <= b for a, b in zip(done, done[1:])) and done[-1] == steps[-1].total
    assert any("smooth" in s.stage for s in steps)
