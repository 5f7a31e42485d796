"""Batched inference: progress, stopping between batches, caching, input scaling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import progress, scoring
from engine.io.datasets import ImageSet
from engine.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def count_forward_calls(monkeypatch):
    calls = []
    real = scoring.forward

    def counting(net, x):
        calls.append(len(x))
        return real(net, x)

    monkeypatch.setattr(scoring, "forward", counting)
    return calls


def test_engine_imports_no_qt():
    # In a fresh process: pytest-qt has already imported Qt into this one.
    code = (
        "import sys, engine.detectors.calibration, engine.io.datasets, engine.scoring, engine.evaluation.metrics, engine.demo, engine.workflow, "
        "engine.detectors, engine.evaluation.compare, engine.repairs, cli.commands, main\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'superqt')])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_predict_yields_progress_and_caches(demo_net, demo_clean, monkeypatch, fresh_caches):
    scoring.CACHE.clear()
    calls = count_forward_calls(monkeypatch)
    steps = []
    first = progress.run(scoring.predict(demo_net, demo_clean, "1/255", batch_size=100), steps.append)
    assert sum(calls) == len(demo_clean) and max(calls) == 100
    assert steps[-1].done == steps[-1].total == len(demo_clean)
    assert [s.done for s in steps] == sorted(s.done for s in steps)
    again = progress.run(scoring.predict(demo_net, demo_clean, "1/255"))
    assert sum(calls) == len(demo_clean)  # no second pass
    assert again is first
    progress.run(scoring.predict(demo_net, demo_clean, "raw"))
    assert sum(calls) == 2 * len(demo_clean)  # another scaling is another pass


def test_predict_stops_between_batches(demo_net, demo_clean, monkeypatch, fresh_caches):
    scoring.CACHE.clear()
    calls = count_forward_calls(monkeypatch)
    job = scoring.predict(demo_net, demo_clean, "1/255", batch_size=50)
    next(job)
    next(job)
    job.close()  # what Cancel does: the generator ends at its next yield
    assert calls == [50]
    assert len(scoring.CACHE) == 0  # a stopped pass caches nothing


def test_predictions_match_plain_keras(demo_net, demo_test):
    preds = progress.run(scoring.predict(demo_net, demo_test, "1/255"))
    plain = demo_net.model.predict(demo_test.images.astype(np.float32) / 255, verbose=0)
    np.testing.assert_array_equal(preds.labels, plain.argmax(1))
    np.testing.assert_allclose(preds.confidences, plain.max(1), rtol=1e-5)


def test_auto_scaling_chooses_what_the_model_was_trained_on(demo_net, demo_clean):
    chosen, reason = progress.run(scoring.resolve_scaling(demo_net, "auto", demo_clean))
    assert chosen == "1/255"
    assert "1/255 gives" in reason and "raw gives" in reason


def test_auto_scaling_needs_labels(demo_net, demo_clean):
    unlabelled = ImageSet(demo_clean.images[:4], None, demo_clean.names[:4], "unlabelled.h5")
    with pytest.raises(InputError, match="unlabelled.h5: has no labels"):
        progress.run(scoring.resolve_scaling(demo_net, "auto", unlabelled))


def test_wrong_image_size_is_an_error(demo_net):
    small = ImageSet(np.zeros((2, 32, 32, 3), np.uint8), None, ["a", "b"], "small.npz")
    with pytest.raises(InputError, match="small.npz: images are"):
        progress.run(scoring.predict(demo_net, small, "1/255"))
