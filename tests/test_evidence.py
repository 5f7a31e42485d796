"""Model-level evidence: tail p-values, the step-down verdict, and its false-alarm rate."""

from __future__ import annotations

import numpy as np
import pytest

from engine.scan import evidence as ev


def null_network(rng, classes=1283, candidates=36):
    """Statistics of an innocent network: heavy-ish right-skewed margins, log-normal mask sizes."""
    margins = rng.gamma(4.0, 6.0, classes)
    chosen = rng.choice(classes, candidates, replace=False)
    log_masks = {int(c): float(rng.normal(np.log(0.04), 0.35)) for c in chosen}
    return margins, log_masks


def head_values(rng, classes=1283) -> dict[int, float]:
    """An innocent network's output-layer indices: robust z of a skewed, heavy-ish sum."""
    raw = rng.gumbel(0.0, 1.0, classes)
    med = np.median(raw)
    return {c: float(v) for c, v in enumerate((raw - med) / (1.4826 * np.median(np.abs(raw - med))))}


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


@pytest.mark.parametrize("more", [(), ("head",), ("head", "smooth")],
                         ids=["margin and mask", "with the output layer", "with the smooth perturbation too"])
def test_clean_network_statistics_raise_no_flag_at_about_the_budget(more):
    """The verdict's promise: on innocent networks, a false flag in at most about alpha of them,
    with two statistics and their combination, three and theirs, or all four and theirs."""
    rng = np.random.default_rng(1)
    false_alarms = 0
    runs = 200
    for _ in range(runs):
        margins, log_masks = null_network(rng)
        values = {"margin": {c: float(m) for c, m in enumerate(margins)}, "mask": log_masks}
        if "head" in more:
            values["head"] = head_values(rng)
        if "smooth" in more:  # the candidates' smooth perturbations: log-normal RMS, a few never reached
            values["smooth"] = {c: float(np.exp(rng.normal(np.log(0.03), 0.3))) for c in log_masks
                                if rng.random() > 0.1}
        _, verdict = ev.judge_values(values, len(margins), n_clean=45)
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
        p = min(1.0, len(margins) * ev.margin_pvalue(value, others) / ev.shares(["margin", "mask"])["margin"])
        if ev.ALPHA < p <= ev.NEAR * ev.ALPHA:
            break
    _, verdict = ev.judge(margins, log_masks, n_clean=45)
    assert verdict.outcome == "inconclusive" and "near the threshold" in verdict.reasons[0]


def test_fishers_combination_is_the_chi_square_tail():
    assert ev.fisher([0.3]) == pytest.approx(0.3)
    q = 0.01 * 0.2
    assert ev.fisher([0.01, 0.2]) == pytest.approx(q * (1 - np.log(q)))  # chi2 with 4 degrees of freedom
    assert ev.fisher([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert ev.fisher([0.0, 0.5]) < 1e-290  # a p of 0 does not break the logarithm


def test_a_target_every_statistic_leans_to_is_flagged_by_them_together():
    """A second target none of the statistics alone singles out: its margin second, its mask small,
    its output weights above the rest; Fisher's combination flags it, and nothing else."""
    rng = np.random.default_rng(6)
    margins, log_masks = null_network(rng)
    head = head_values(rng)
    margins[7] = margins.max() * 3  # a first target, flagged by its margin alone
    second = next(c for c in log_masks if c != 7)
    margins[second] = np.sort(margins)[-2] * 1.25
    log_masks[second] = float(np.median(list(log_masks.values())) - 0.7)
    head[second] = 6.0
    values = {"margin": {c: float(m) for c, m in enumerate(margins)}, "mask": log_masks, "head": head}
    alone, _ = ev.judge_values(values, len(margins), n_clean=45, weights={"margin": 1, "mask": 1, "head": 1})
    assert alone[second].combined > ev.ALPHA  # no statistic alone flags it
    evidence, verdict = ev.judge_values(values, len(margins), n_clean=45)
    assert verdict.classes == [7, second]
    assert evidence[second].support == [ev.TOGETHER]


def test_the_probability_of_a_backdoor_falls_with_the_evidence_and_is_said_with_the_verdict():
    ps = [1e-12, 1e-6, 1e-3, 0.01, 0.05, 0.2, 1.0]
    probabilities = [ev.backdoor_probability(p) for p in ps]
    assert all(a > b for a, b in zip(probabilities, probabilities[1:]))
    # No evidence at all: the odds are the alternative's density at 1 (its shape) times the prior's.
    assert probabilities[-1] == pytest.approx(ev.BACKDOOR_SHAPE / (1 + ev.BACKDOOR_SHAPE))
    assert ev.backdoor_probability(0.05, prior=0.1) < ev.backdoor_probability(0.05) < 1.0
    assert [ev.probability_text(v) for v in (0.999, 0.004, 0.5, None)] == ["> 0.99", "< 0.01", "0.50", "n/a"]

    rng = np.random.default_rng(7)
    margins, log_masks = null_network(rng)
    margins[3] = margins.max() * 4
    evidence, verdict = ev.judge(margins, log_masks, n_clean=45)
    assert verdict.classes == [3]
    assert verdict.probability == pytest.approx(ev.backdoor_probability(evidence[3].combined))
    margins = np.full(200, 7.0)  # no statistic can judge: no probability either
    _, verdict = ev.judge(margins, {c: np.inf for c in range(20)}, n_clean=45)
    assert verdict.outcome == "inconclusive" and verdict.probability is None
