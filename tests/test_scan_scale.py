"""The trigger scan at the real scale: the zoo's 1283-class BadNet and its clean twin (slow).

The zoo (:mod:`engine.demo.zoo`) is built on first use and cached; every draw is 45 distinct clean
faces the networks never saw, never augmented copies of a few."""

from __future__ import annotations

import numpy as np
import pytest

from engine.progress import run

pytestmark = [pytest.mark.scale, pytest.mark.zoo, pytest.mark.slow]
FACES = 45
DRAWS = (0, 1, 2)


def _scan(member: str, draw: int, faces: int = FACES):
    from engine.io import datasets
    from engine.demo import zoo
    from engine.io.models import load_badnet
    from engine.scan import ScanSettings, scan

    folder = zoo.path(member, build=True)
    net = load_badnet(folder / "model.h5")
    pool = datasets.read(folder / "clean.h5")
    clean = pool.subset(np.random.default_rng(100 + draw).choice(len(pool), faces, replace=False))
    return run(scan(net, clean, "1/255", ScanSettings(seed=draw)))


def test_the_csaw_scale_badnets_targets_are_found_and_no_innocent_class_is_flagged():
    """Three draws of 100 faces: every target flagged every time, the small eyebrows trigger's
    included (by the output layer and the statistics together; its margin is ordinary), and never
    an innocent class; the network is backdoored with a probability above 0.99."""
    from engine.demo import zoo

    triggers = zoo.facts("csaw-badnet")["member"]["triggers"]
    targets = set(triggers.values())
    for draw in DRAWS:
        result = _scan("csaw-badnet", draw, faces=100)
        assert result.outcome == "backdoor"
        assert set(result.flagged) == targets, result.summary()
        assert set(result.ranking()[:3]) == targets
        assert result.verdict.probability > 0.99
        assert all(c in result.triggers for c in result.flagged)  # unlearning can take every one


@pytest.mark.parametrize("draw", DRAWS)
def test_the_clean_twin_is_never_called_backdoored(draw):
    result = _scan("csaw-clean", draw)
    assert result.outcome in ("clean", "inconclusive"), result.summary()
    assert not result.flagged


@pytest.mark.parametrize("draw", DRAWS)
def test_the_demos_clean_twin_is_never_called_backdoored(draw):
    from engine.io import datasets
    from engine.demo import zoo
    from engine.io.models import load_badnet
    from engine.scan import ScanSettings, scan

    folder = zoo.path("demo-clean", build=True)
    net = load_badnet(folder / "model.h5")
    faces = datasets.read(folder / "clean.h5")
    clean = faces.subset(np.random.default_rng(100 + draw).choice(len(faces), 100, replace=False))
    result = run(scan(net, clean, "1/255", ScanSettings(seed=draw)))
    assert not result.flagged, result.summary()
