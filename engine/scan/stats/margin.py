"""The largest margin (MM-BD, Wang et al., IEEE S&P 2024): how far clean faces of other classes
can be pushed towards a class, measured for every class by the scan's margin ascent.

Every class is measured, so its null is the other classes. Only the upper tail matters, and it is
modelled as peaks over a threshold: the ``tail`` largest other margins above the next one, ``u``,
are fitted with an exponential (the generalised Pareto with shape 0, heavier-tailed than a
normal, so the test errs on the safe side), and ``p(x) = (tail / n) exp(-(x - u) / beta)`` above
``u``. Step-down: a flagged class leaves the others' null, so several backdoors do not hide one
another (a few huge margins would stretch the fitted tail).
"""

from __future__ import annotations

import math

import numpy as np

from engine.scan.stats import MIN_NULL, Column, Statistic, p_text, register, rounded

MARGIN_TAIL = 64  # other classes' largest margins fitted as the upper tail
MAX_JUDGED = 16  # classes with the largest margins that are judged (more cannot be flagged)


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


@register
class LargestMargin(Statistic):
    """MM-BD's largest margin, against the other classes' (peaks over threshold)."""

    name = "margin"
    title = "Largest margin (MM-BD)"
    summary = "how far clean faces of other classes can be pushed towards the class"
    weight = 0.5
    order = 10
    columns = (Column("margin", "Margin", lambda v: f"{v:.1f}",
                      tip="The largest logit margin over the other classes a random image reaches (MM-BD); a "
                          "backdoor's target is an outlier among all classes"),
               Column("margin_p", "margin p", p_text, report="margin p", table=False))

    def values(self, result) -> dict[int, float]:
        return {c: float(m) for c, m in enumerate(result.margins)}

    def candidates(self, values: dict[int, float], num_classes: int) -> list[int]:
        order = sorted(values, key=lambda c: -values[c] if np.isfinite(values[c]) else np.inf)
        return order[:MAX_JUDGED]

    def p_value(self, label, values, flagged):
        skip = set(flagged) | {label}
        others = np.array([v for c, v in values.items() if c not in skip], dtype=float)
        return margin_pvalue(values[label], others), None

    def tests(self, values, num_classes):
        return num_classes

    def unusable(self, values):
        return "the other classes' margins give no null (too few, or all alike)"

    def row(self, result, label, evidence):
        p = None if evidence is None else evidence.p(self.name)
        return {"margin": rounded(result.margins[label], 2), "margin_p": rounded(p, 8)}
