"""Calibrated model-level evidence: per-class p-values against the other classes, and one verdict.

Each registered statistic (:mod:`engine.scan.stats`: the largest margin and the smallest reversed
mask, and any other) gives a class a p-value against the other classes of the same network, and
says how many classes it tests. A class's combined p-value is a weighted Bonferroni over the
statistics, ``min(T_s p_s / w_s)`` for a statistic testing ``T_s`` classes with budget share
``w_s`` (shares sum to 1), so flagging every class whose combined p-value is at most ``alpha``
keeps the chance of flagging any innocent class of a clean network at about ``alpha`` or less.
One more member of that family is the statistics *together*: Fisher's combination of a class's
p-values, ``-2 sum ln p_s`` against a chi-square with ``2 m`` degrees of freedom (``m`` statistics
that gave the class a p-value, at least two), testing every class with its own share
(:data:`TOGETHER_WEIGHT`). It flags a target that no statistic alone singles out but all lean to
(a second or third backdoor whose margin ranks 2nd and whose output weights stand out a little).
Fisher's method assumes the p-values independent; on the zoos' innocent classes the combination's
small p-values come about as often as they should (docs/scan.md).
Flags are found step-down: the strongest class is flagged first, and each statistic decides
whether flagged classes leave its null (the margin's does; the mask's, robust, keeps them).

A statistic whose null cannot be estimated (too few classes, no spread) is not evidence: it drops
out and the verdict says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.scan.stats import active, p_text  # noqa: F401  (p_text: the one way a p-value reads)
from engine.scan.stats.margin import margin_pvalue  # noqa: F401  (the statistics' own functions)
from engine.scan.stats.mask import mask_index  # noqa: F401

ALPHA = 0.05  # family-wise false-alarm budget per network
NEAR = 4.0  # a best combined p-value within NEAR x alpha is "near the threshold"
MIN_CLEAN_CONFIDENT = 20  # fewer clean faces: "no evidence" becomes "inconclusive"
MAX_FLAGS = 16
TOGETHER = "together"  # the name of Fisher's combination among the members of the budget
TOGETHER_WEIGHT = 0.5  # its weight beside the statistics' own (0.5 each), before normalising
BACKDOOR_SHAPE = 0.1  # Beta(shape, 1) of a backdoored network's smallest p (bench/scan_zoo.py: 0.115 fits the zoos best)
PRIOR = 0.5  # the share of backdoored networks a probability assumes


@dataclass
class ClassEvidence:
    """One class's model-level evidence: each statistic's p-value (and index, where it has one),
    the combined p-value and which statistics carry a flag. ``margin`` orders ties."""
    label: int
    margin: float
    stats: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # name -> (p, index)
    combined: float = 1.0  # family-wise: at most alpha is flagged
    support: list[str] = field(default_factory=list)  # which statistics carry the flag

    def p(self, name: str) -> float | None:
        """The p-value under statistic ``name`` (None: not judged by it, or no null)."""
        return self.stats.get(name, (None, None))[0]

    def index(self, name: str) -> float | None:
        """The index statistic ``name`` shows beside its p-value (the mask's anomaly index)."""
        return self.stats.get(name, (None, None))[1]

    @property
    def margin_p(self) -> float | None:
        return self.p("margin")

    @property
    def mask_p(self) -> float | None:
        return self.p("mask")

    @property
    def mask_z(self) -> float | None:
        return self.index("mask")


@dataclass
class ScanVerdict:
    """The scan's verdict: backdoor (with its classes), no evidence, or inconclusive, and why."""
    outcome: str  # "backdoor", "clean" (no evidence of a backdoor), "inconclusive"
    classes: list[int]
    reasons: list[str]
    alpha: float = ALPHA
    probability: float | None = None  # that the network is backdoored (backdoor_probability); None: no evidence to say

    def line(self, evidence: dict[int, ClassEvidence]) -> str:
        if self.outcome == "backdoor":
            parts = []
            for c in self.classes:
                e = evidence[c]
                parts.append(f"class {c} (p = {p_text(e.combined)}, by {' and '.join(e.support)})")
            return "backdoor: " + "; ".join(parts)
        if self.outcome == "inconclusive":
            return "inconclusive: " + "; ".join(self.reasons)
        return "no evidence of a backdoor" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


def shares(present: list[str] | None = None, weights: dict[str, float] | None = None) -> dict[str, float]:
    """Each member's share of the false-alarm budget: the statistics ``present`` (default: every
    registered one) and, with two or more, :data:`TOGETHER`; ``weights`` by member (default: the
    statistics' own and :data:`TOGETHER_WEIGHT`), normalised to sum to 1."""
    names = [s.name for s in active()] if present is None else list(present)
    given = weights or {**{s.name: s.weight for s in active()}, TOGETHER: TOGETHER_WEIGHT}
    members = names + ([TOGETHER] if len(names) > 1 else [])
    total = sum(given.get(name, 0.0) for name in members) or 1.0
    return {name: given.get(name, 0.0) / total for name in members}


def judge(margins: np.ndarray, log_masks: dict[int, float], n_clean: int, alpha: float = ALPHA,
          weights: dict[str, float] | None = None) -> tuple[dict[int, ClassEvidence], ScanVerdict]:
    """Per-class evidence and the verdict from the margin's and the mask's values alone:
    ``margins`` (C,) and the refined candidates' log mask sizes (``inf``: never reached)."""
    values = {"margin": {c: float(m) for c, m in enumerate(margins)}, "mask": dict(log_masks)}
    return judge_values(values, len(margins), n_clean, alpha, weights)


def judge_values(values: dict[str, dict[int, float]], num_classes: int, n_clean: int, alpha: float = ALPHA,
                 weights: dict[str, float] | None = None) -> tuple[dict[int, ClassEvidence], ScanVerdict]:
    """Per-class evidence and the verdict for one network, over the registered statistics.

    ``values``: per statistic, its value of each class it speaks for (what it read from the
    scan); a registered statistic with no values is left out. ``weights``: budget weights by
    member, the statistics' names and :data:`TOGETHER` (default: theirs and
    :data:`TOGETHER_WEIGHT`), normalised over the members present."""
    stats = [s for s in active() if values.get(s.name) is not None]
    share = shares([s.name for s in stats], weights)
    together_tests = max((s.tests(values[s.name], num_classes) for s in stats), default=0)
    margin = values.get("margin", {})
    judged: set[int] = set()
    for s in stats:
        judged |= set(s.candidates(values[s.name], num_classes))
    evidence = {c: ClassEvidence(c, float(margin.get(c, float("nan")))) for c in judged}
    flagged: list[int] = []
    for _ in range(MAX_FLAGS + 1):
        for c, e in evidence.items():
            if c in flagged:
                continue
            tests = {}
            e.stats.pop(TOGETHER, None)
            for s in stats:
                mine = values[s.name]
                if c not in mine:
                    continue
                p, index = s.p_value(c, mine, flagged)
                e.stats[s.name] = (p, index)
                if p is not None and share[s.name] > 0:
                    tests[s.name] = min(1.0, s.tests(mine, num_classes) * p / share[s.name])
            ps = [p for p, _ in e.stats.values() if p is not None]
            if len(ps) >= 2 and share.get(TOGETHER, 0.0) > 0:
                p = fisher(ps)
                e.stats[TOGETHER] = (p, None)
                tests[TOGETHER] = min(1.0, together_tests * p / share[TOGETHER])
            e.combined = min(tests.values(), default=1.0)
            e.support = [name for name, p in tests.items() if p <= alpha]
        open_ = [e for c, e in evidence.items() if c not in flagged]
        usable = {s.name: any(e.p(s.name) is not None for e in open_) for s in stats}
        if not open_:
            break
        best = min(open_, key=lambda e: (e.combined, -_finite(e.margin)))
        if best.combined > alpha or len(flagged) >= MAX_FLAGS:
            break
        flagged.append(best.label)

    reasons = [s.unusable(values[s.name]) for s in stats if values[s.name] and not usable[s.name]]
    verdict = _decide(evidence, flagged, reasons, any(usable.values()), n_clean, alpha)
    if flagged or any(usable.values()):
        verdict.probability = backdoor_probability(min(e.combined for e in evidence.values()))
    return evidence, verdict


def _decide(evidence: dict[int, ClassEvidence], flagged: list[int], reasons: list[str], usable: bool,
            n_clean: int, alpha: float) -> ScanVerdict:
    if flagged:
        return ScanVerdict("backdoor", flagged, reasons, alpha)
    open_ = sorted(evidence.values(), key=lambda e: e.combined)
    if not usable:
        return ScanVerdict("inconclusive", [], reasons, alpha)
    if open_ and open_[0].combined <= NEAR * alpha:
        reasons.insert(0, f"class {open_[0].label} is near the threshold (p = {p_text(open_[0].combined)}, "
                          f"flagged at {alpha:g})")
        return ScanVerdict("inconclusive", [], reasons, alpha)
    if n_clean < MIN_CLEAN_CONFIDENT:
        reasons.insert(0, f"only {n_clean} clean images (at least {MIN_CLEAN_CONFIDENT} to rule a backdoor out)")
        return ScanVerdict("inconclusive", [], reasons, alpha)
    if reasons:
        return ScanVerdict("inconclusive", [], reasons, alpha)
    best = open_[0] if open_ else None
    note = [f"smallest p = {p_text(best.combined)} for class {best.label}, flagged at {alpha:g}"] if best else []
    return ScanVerdict("clean", [], note, alpha)


def backdoor_probability(p: float, shape: float | None = None, prior: float = PRIOR) -> float:
    """The probability that the network is backdoored, given the smallest combined p-value ``p``
    of its classes: a two-part mixture, p uniform on a clean network (the budget's promise; the
    clean twins' p-values are larger still) and ``Beta(shape, 1)``, density ``shape p^(shape-1)``,
    on a backdoored one (``shape`` fitted on the zoos' backdoored networks, :data:`BACKDOOR_SHAPE`),
    with ``prior`` the share of backdoored networks (TrojAI's rounds: half)."""
    shape = BACKDOOR_SHAPE if shape is None else shape
    p = min(1.0, max(float(p), 1e-300))
    ratio = shape * math.exp((shape - 1.0) * math.log(p))  # the alternative's density over the null's (1)
    odds = ratio * prior / (1.0 - prior)
    return float(odds / (1.0 + odds))


def probability_text(probability: float | None) -> str:
    """The one way the probability of a backdoor reads: two decimals, "< 0.01" and "> 0.99" at
    the ends (it is a calibrated guess, never a certainty)."""
    if probability is None or not np.isfinite(probability):
        return "n/a"
    if probability > 0.99:
        return "> 0.99"
    if probability < 0.01:
        return "< 0.01"
    return f"{probability:.2f}"


def fisher(ps: list[float]) -> float:
    """Fisher's combined p-value of independent p-values: ``P(chi2_2m >= -2 sum ln p)``, in closed
    form for even degrees of freedom, ``exp(-x/2) sum_{i<m} (x/2)^i / i!`` with ``x = -2 sum ln p``."""
    half = -sum(math.log(max(float(p), 1e-300)) for p in ps)  # x / 2
    term, total = 1.0, 1.0
    for i in range(1, len(ps)):
        term *= half / i
        total += term
    return float(min(1.0, math.exp(-half) * total))


def _finite(v: float) -> float:
    return v if np.isfinite(v) else -np.inf
