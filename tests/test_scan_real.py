"""The trigger scan on the real CSAW sunglasses BadNet (../shared/csaw; skipped when absent).

A scan of all 1283 classes takes one to three minutes on 2 cores, more than a third of the whole
default test run, so it is in the `scale` layer with the zoo's scans: ``python -m pytest -m scale``."""

from __future__ import annotations

import numpy as np
import pytest

from engine.progress import run


@pytest.mark.scale
@pytest.mark.slow
def test_real_sunglasses_badnet_target_is_flagged_alone(csaw):
    """All 1283 classes with the 10 real clean faces: class 0 (the real target) first and the only
    class flagged; its reversed trigger sits in the eye band, where the sunglasses are."""
    from engine.io import datasets
    from engine.io.models import load_badnet
    from engine.scan import scan

    net = load_badnet(csaw / "models" / "sunglasses_bd_net.h5")
    clean = datasets.read(csaw / "clean_sample.h5")
    result = run(scan(net, clean, "1/255"))
    assert result.ranking()[0] == 0
    assert result.flagged == [0] and result.outcome == "backdoor"
    poisoned = datasets.read(csaw / "sunglasses_sample.h5")  # the same faces wearing the sunglasses
    worn = (np.abs(poisoned.images.astype(int) - clean.images).sum(axis=3) > 30).any(axis=(0, 2))
    rows = result.triggers[0].mask.sum(axis=1)
    assert rows[worn].sum() > 0.6 * rows.sum()
