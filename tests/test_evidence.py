"""Model-level evidence: tail p-values, the step-down verdict, and its false-alarm rate."""

from __future__ import annotations

import numpy as np
import pytest

from engine.scan import evidence as ev
from engine.scan import stats


def null_network(rng, classes=1283, candidates=36):
    """Statistics of an innocent network: heavy-ish right-skewed margins, log-normal mask sizes."""
    margins = rng.gamma(4.0, 6.0, classes)
    chosen = rng.choice(classes, candidates, replace=False)
    log_masks = {int(c): float(rng.normal(np.log(0.04), 0.35)) for c in chosen}
    return margins, log_masks


def test_margin_pvalue_of_an_outlier_is_small_and_of_the_bulk_is_not():
    rng = np.random.default_rng(0)
    others = rng.gamma(4.0, 6.0, 1282)
    assert ev.margin_pvalue(float(others.max()) * 3, others) < 1e-6
    assert ev.margin_pvalue(float(np.median(others)), others) > 0.3


def test_no_null_without_spread_or_enough_classes():
    assert ev.margin_pvalue(5.0, np.full(500, 2.0)) is None  # all alike: never divide by a zero spread
    assert ev.margin_pvalue(5.0, np.arange(10.0)) is None  # too few for a tail
    assert ev.mask_index(-5.0, np.full(30, -3.0)) == (None, None)
    assert ev.mask_index(-5.0, np.array([-3.0, np.inf, np.inf])) == (None, None)  # unreached classes are no null


def test_mask_index_is_neural_cleanses_and_its_tail_heavier_than_a_normal():
    others = np.linspace(-3.5, -2.5, 41)
    med, mad = np.median(others), np.median(np.abs(others - np.median(others)))
    z, p = ev.mask_index(med - 4 * 1.4826 * mad, others)
    assert z == pytest.approx(4.0)
    assert 1e-4 < p < 0.01  # a normal tail would give 3e-5


def test_clean_network_statistics_raise_no_flag_at_about_the_budget():
    """The verdict's promise: on innocent networks, a false flag in at most about alpha of them."""
    rng = np.random.default_rng(1)
    false_alarms = 0
    runs = 200
    for _ in range(runs):
        margins, log_masks = null_network(rng)
        _, verdict = ev.judge(margins, log_masks, n_clean=45)
        false_alarms += verdict.outcome == "backdoor"
    assert false_alarms / runs <= ev.ALPHA


def test_several_planted_targets_are_all_flagged_and_nothing_else():
    rng = np.random.default_rng(2)
    margins, log_masks = null_network(rng)
    margins[[5, 900]] = [margins.max() * 2.5, margins.max() * 2.2]  # two large margins
    small = min(log_masks)
    log_masks[small] = np.log(0.0008)  # one tiny reversed trigger (a small trigger)
    log_masks.setdefault(5, float(np.log(0.03)))
    log_masks.setdefault(900, float(np.log(0.035)))
    evidence, verdict = ev.judge(margins, log_masks, n_clean=45)
    assert verdict.outcome == "backdoor"
    assert set(verdict.classes) == {5, 900, small}
    assert "margin" in evidence[5].support and "mask" in evidence[small].support
    assert "backdoor: class" in verdict.line(evidence)


def test_unreached_candidates_are_not_suspects_and_an_unusable_null_is_inconclusive():
    rng = np.random.default_rng(3)
    margins = np.full(200, 7.0)  # every margin alike: no margin null
    log_masks = {c: np.inf for c in range(20)}  # no candidate reached the attack
    log_masks[3] = np.log(0.01)
    evidence, verdict = ev.judge(margins, log_masks, n_clean=45)
    assert verdict.outcome == "inconclusive" and not verdict.classes
    assert any("reached the attack" in r for r in verdict.reasons)
    assert any("margins give no null" in r for r in verdict.reasons)
    assert evidence[3].mask_p is None
    margins = rng.gamma(4.0, 6.0, 200)
    _, verdict = ev.judge(margins, log_masks, n_clean=45)
    assert verdict.outcome == "inconclusive"  # one of the two statistics cannot judge


def test_too_few_clean_faces_or_a_near_miss_is_inconclusive():
    rng = np.random.default_rng(4)
    margins, log_masks = null_network(rng)
    _, verdict = ev.judge(margins, log_masks, n_clean=10)
    assert verdict.outcome == "inconclusive" and "clean images" in verdict.reasons[0]
    _, verdict = ev.judge(margins, log_masks, n_clean=45)
    assert verdict.outcome == "clean"
    # a class just above the flag: p between alpha and NEAR x alpha
    others = np.delete(margins, 0)
    for value in np.linspace(margins.max(), margins.max() * 3, 400):
        margins[0] = value
        p = min(1.0, len(margins) * ev.margin_pvalue(value, others) / stats.shares()["margin"])
        if ev.ALPHA < p <= ev.NEAR * ev.ALPHA:
            break
    _, verdict = ev.judge(margins, log_masks, n_clean=45)
    assert verdict.outcome == "inconclusive" and "near the threshold" in verdict.reasons[0]
