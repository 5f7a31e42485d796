"""The smallest reversed-trigger mask (Neural Cleanse, Wang et al., IEEE S&P 2019): the share of
the image a reversed trigger needs to send clean faces to a class, measured for the candidates
the scan refines.

Only the candidates are refined, and the other candidates, chosen the same way, are the null
(like with like). On the log of the mask's size, Neural Cleanse's anomaly index
``z = (median - x) / (1.4826 MAD)`` is shown, and the p-value is a Laplace (double-exponential)
tail with the same median and MAD, ``p = exp(-(median - x) ln 2 / MAD) / 2``: some innocent
classes are easy to reach, so the lower tail is heavier than a normal's (a normal tail flagged
one at an index of 5 on our CSAW-scale BadNet). The median and MAD are robust to a few outliers,
so the null keeps every other candidate, flagged or not (taking flagged targets out shrank the
MAD enough to flag an innocent class whose trigger borrowed a piece of the lipstick trigger).
Classes no mask reached are left out of the null: they are not suspects, nor evidence.
"""

from __future__ import annotations

import numpy as np

from engine.scan.stats import Column, Statistic, laplace_tail, p_text, register, rounded


def mask_index(value: float, others: np.ndarray) -> tuple[float | None, float | None]:
    """(anomaly index, one-sided Laplace-tail p-value) of a log mask size this small among
    ``others`` (log sizes of the other refined classes that reached the attack)."""
    return laplace_tail(value, others, lower=True)


@register
class SmallestMask(Statistic):
    """Neural Cleanse's reversed-trigger mask size, against the other refined candidates'."""

    name = "mask"
    title = "Smallest reversed-trigger mask (Neural Cleanse)"
    summary = "the share of the image a reversed trigger needs to send clean faces to the class"
    weight = 0.5
    order = 20
    columns = (Column("mask_share", "Mask", lambda v: f"{100 * v:.2f}%", report="mask share",
                      tip="The reversed trigger's mask: its L1 norm as a share of the image's pixels"),
               Column("anomaly_index", "Index", lambda v: f"{v:.2f}",
                      tip="Neural Cleanse's anomaly index among the refined candidates: (median - log mask) / "
                          "(1.4826 MAD)"),
               Column("mask_p", "mask p", p_text, report="mask p", table=False))

    def values(self, result) -> dict[int, float]:
        return {c: float(t.log_size) for c, t in result.triggers.items()}

    def p_value(self, label, values, flagged):
        others = np.array([v for c, v in values.items() if c != label], dtype=float)
        z, p = mask_index(values[label], others)
        return p, z

    def unusable(self, values):
        reached = int(sum(np.isfinite(v) for v in values.values()))
        return (f"only {reached} of {len(values)} refined classes reached the attack, too few for a reference "
                "of mask sizes")

    def row(self, result, label, evidence):
        t = result.triggers.get(label)
        return {"mask_l1": None if t is None else round(t.l1, 3),
                "mask_share": None if t is None else round(t.size, 5),
                "anomaly_index": None if evidence is None else rounded(evidence.index(self.name)),
                "mask_p": None if evidence is None else rounded(evidence.p(self.name), 8)}
