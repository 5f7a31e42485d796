"""Calibrated model-level evidence: per-class p-values against the other classes, and one verdict.

The trigger scan measures two statistics per class (see :mod:`engine.scan`). Neither has a
known distribution, but each class is one draw, and the other classes of the same network,
measured the same way, say what an innocent class looks like:

- **Largest margin** (MM-BD): every class is measured, so its null is the other classes. Only
  the upper tail matters, and it is modelled as peaks over a threshold: the ``tail`` largest
  other margins above the next one, ``u``, are fitted with an exponential (the generalised
  Pareto with shape 0, which has a heavier tail than a normal's, so the test errs on the safe
  side), and ``p(x) = (tail / n) exp(-(x - u) / beta)`` above ``u``.
- **Smallest reversed-trigger mask** (Neural Cleanse): only the candidates are refined, and the
  other candidates, chosen the same way, are its null (like with like: a class chosen for its
  margin is compared with the other classes chosen for theirs). On the log of the mask's size,
  Neural Cleanse's anomaly index ``z = (median - x) / (1.4826 MAD)`` is reported, and the
  p-value is a Laplace (double-exponential) tail with the same median and MAD,
  ``p = exp(-(median - x) ln 2 / MAD) / 2``: some innocent classes are easy to reach (a face
  with one distinctive feature), so the lower tail is heavier than a normal's, and a normal
  tail flagged one of them on our CSAW-scale BadNet at an index of 5.

A class's combined p-value is a weighted Bonferroni over both families: ``min(C p_margin /
w_margin, M p_mask / w_mask)`` for C classes and M candidates (weights sum to 1), so flagging
every class whose combined p-value is at most ``alpha`` keeps the chance of flagging any
innocent class of a clean network at about ``alpha`` or less. Flags are found step-down: the
strongest class is tested against the others, and once flagged it leaves the margins' null, so
several backdoors do not hide one another there (a few huge margins would stretch the fitted
tail). The masks' median and MAD are robust to a few outliers, so their null keeps every other
candidate: taking flagged targets out of it shrank the MAD enough, on our CSAW-scale BadNet, to
flag an innocent class whose reversed trigger borrowed a piece of the lipstick trigger.

A null that cannot be estimated (too few reached classes, no spread) is not evidence: that
statistic drops out and the verdict says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ALPHA = 0.05  # family-wise false-alarm budget per network
NEAR = 4.0  # a best combined p-value within NEAR x alpha is "near the threshold"
MARGIN_TAIL = 64  # other classes' largest margins fitted as the upper tail
MIN_NULL = 8  # fewer usable classes than this in a null: the statistic cannot be estimated
MAD_CONSISTENCY = 1.4826
MIN_CLEAN_CONFIDENT = 20  # fewer clean faces: "no evidence" becomes "inconclusive"
WEIGHTS = {"margin": 0.5, "mask": 0.5}
MAX_FLAGS = 16


def margin_pvalue(value: float, others: np.ndarray, tail: int = MARGIN_TAIL) -> float | None:
    """One-sided p-value of a margin this large among ``others`` (peaks over threshold), or None
    when the others cannot give a tail (too few, or no spread)."""
    others = np.sort(others[np.isfinite(others)])[::-1]
    n = len(others)
    m = min(tail, n // 4)
    if m < MIN_NULL or not np.isfinite(value):
        return None
    u = others[m]
    beta = float(np.mean(others[:m] - u))
    if not beta > 0:
        return None
    if value <= u:  # inside the bulk: its rank among the others is all there is to say
        return float(min(1.0, (np.sum(others >= value) + 1) / (n + 1)))
    return float((m / n) * math.exp(-(value - u) / beta))


def mask_index(value: float, others: np.ndarray) -> tuple[float | None, float | None]:
    """(anomaly index, one-sided Laplace-tail p-value) of a log mask size this small among
    ``others`` (log sizes of the other refined classes that reached the attack; unreached ones
    are left out: a class no mask reaches is not a suspect, nor evidence about the others)."""
    others = others[np.isfinite(others)]
    if len(others) < MIN_NULL or not np.isfinite(value):
        return None, None
    median = float(np.median(others))
    mad = float(np.median(np.abs(others - median)))
    if not mad > 0:
        return None, None
    z = (median - value) / (MAD_CONSISTENCY * mad)
    below = (median - value) * math.log(2.0) / mad
    return z, (0.5 * math.exp(-below) if below >= 0 else 1.0 - 0.5 * math.exp(below))


@dataclass
class ClassEvidence:
    """One class's model-level statistics: its margin and mask size, their p-values, the combined
    p-value and which statistics carry a flag."""
    label: int
    margin: float
    margin_p: float | None = None
    log_mask: float | None = None  # None: not refined; inf: refined but never reached the attack
    mask_z: float | None = None
    mask_p: float | None = None
    combined: float = 1.0  # family-wise: at most alpha is flagged
    support: list[str] = field(default_factory=list)  # which statistics carry the flag


@dataclass
class ScanVerdict:
    """The scan's verdict: backdoor (with its classes), no evidence, or inconclusive, and why."""
    outcome: str  # "backdoor", "clean" (no evidence of a backdoor), "inconclusive"
    classes: list[int]
    reasons: list[str]
    alpha: float = ALPHA

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


def judge(margins: np.ndarray, log_masks: dict[int, float], n_clean: int, alpha: float = ALPHA,
          weights: dict[str, float] | None = None) -> tuple[dict[int, ClassEvidence], ScanVerdict]:
    """Per-class evidence and the verdict for one network.

    ``margins`` (C,): every class's largest margin. ``log_masks``: the refined candidates' log
    mask sizes (``inf`` for a class that never reached the attack)."""
    weights = weights or WEIGHTS
    num_classes = len(margins)
    candidates = sorted(log_masks)
    sizes = np.array([log_masks[c] for c in candidates], dtype=float)
    evidence = {c: ClassEvidence(c, float(margins[c]), log_mask=log_masks.get(c))
                for c in set(candidates) | set(np.argsort(-margins)[:MAX_FLAGS].tolist())}
    flagged: list[int] = []
    margin_usable = mask_usable = True
    for _ in range(MAX_FLAGS + 1):
        keep = np.ones(num_classes, bool)
        keep[flagged] = False
        for c, e in evidence.items():
            if c in flagged:
                continue
            mine = keep.copy()
            mine[c] = False
            e.margin_p = margin_pvalue(float(margins[c]), margins[mine])
            if c in log_masks:
                others = sizes[np.asarray(candidates) != c]
                e.mask_z, e.mask_p = mask_index(float(log_masks[c]), others)
            tests = {}
            if e.margin_p is not None:
                tests["margin"] = min(1.0, num_classes * e.margin_p / weights["margin"])
            if e.mask_p is not None:
                tests["mask"] = min(1.0, len(candidates) * e.mask_p / weights["mask"])
            e.combined = min(tests.values(), default=1.0)
            e.support = [name for name, p in tests.items() if p <= alpha]
        margin_usable = any(e.margin_p is not None for c, e in evidence.items() if c not in flagged)
        mask_usable = any(e.mask_p is not None for c, e in evidence.items() if c not in flagged)
        open_ = [e for c, e in evidence.items() if c not in flagged]
        if not open_:
            break
        best = min(open_, key=lambda e: (e.combined, -e.margin))
        if best.combined > alpha or len(flagged) >= MAX_FLAGS:
            break
        flagged.append(best.label)

    reasons = []
    if not margin_usable:
        reasons.append("the other classes' margins give no null (too few, or all alike)")
    if candidates and not mask_usable:
        reached = int(np.sum(np.isfinite(sizes)))
        reasons.append(f"only {reached} of {len(candidates)} refined classes reached the attack, too few for "
                       "a reference of mask sizes")
    if flagged:
        return evidence, ScanVerdict("backdoor", flagged, reasons, alpha)
    open_ = sorted(evidence.values(), key=lambda e: e.combined)
    if not margin_usable and not mask_usable:
        return evidence, ScanVerdict("inconclusive", [], reasons, alpha)
    if open_ and open_[0].combined <= NEAR * alpha:
        reasons.insert(0, f"class {open_[0].label} is near the threshold (p = {p_text(open_[0].combined)}, "
                          f"flagged at {alpha:g})")
        return evidence, ScanVerdict("inconclusive", [], reasons, alpha)
    if n_clean < MIN_CLEAN_CONFIDENT:
        reasons.insert(0, f"only {n_clean} clean images (at least {MIN_CLEAN_CONFIDENT} to rule a backdoor out)")
        return evidence, ScanVerdict("inconclusive", [], reasons, alpha)
    if reasons:
        return evidence, ScanVerdict("inconclusive", [], reasons, alpha)
    best = open_[0] if open_ else None
    note = [f"smallest p = {p_text(best.combined)} for class {best.label}, flagged at {alpha:g}"] if best else []
    return evidence, ScanVerdict("clean", [], note, alpha)


def p_text(p: float | None) -> str:
    """The one way a p-value is written (the CLI, the window, the report): three decimals down to
    0.001, then two significant digits in scientific notation; "n/a" when there is none."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if p >= 0.001:
        return f"{p:.3f}"
    return f"{p:.1e}"

