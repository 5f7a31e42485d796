"""The smallest smooth universal perturbation (in the spirit of L-RED, Xiang et al. 2020): how
large a pattern added to every face, smooth at a scale of a few pixels, must be to send clean
faces to a class (:mod:`engine.scan.perturbation`). For triggers that are not a patch: a blend, a
sinusoid, a low-frequency field, a warp change the whole face a little, and the network has learnt
to follow that small change to its target.

Measured for the same candidates as the mask (the classes the scan refines), with the other
candidates as the null (like with like). The statistic is the log of the pattern's RMS; its
p-value is a Laplace (double-exponential) lower tail with the other candidates' median and MAD,
as the mask's. Classes no pattern reached are left out. Measured on the zoos (docs/scan.md):
alone it ranks every working target of both zoos first among ~30 candidates but the random-position
patch's (2nd), the global triggers' included (50 identities, draw 0: blended p 0.008,
low-frequency 5e-5, WaNet 0.02), and the real sunglasses BadNet's (p 0.001).
"""

from __future__ import annotations

import numpy as np

from engine.progress import run
from engine.scan.stats import Column, Statistic, laplace_tail, p_text, register, rounded

STEPS = 150


@register
class SmoothPerturbation(Statistic):
    """The smallest smooth universal perturbation's RMS, against the other refined candidates'."""

    name = "smooth"
    title = "Smallest smooth perturbation"
    summary = "how large a smooth pattern added to every face must be to send clean faces to the class"
    weight = 0.5
    order = 25
    steps = STEPS
    columns = (Column("smooth", "Smooth", lambda v: f"{255 * v:.1f}", report="smooth perturbation",
                      tip="The smallest smooth pattern that, added to every clean face, sends them to the class: "
                          "its RMS in grey levels (0-255)"),
               Column("smooth_p", "smooth p", p_text, report="smooth p", table=False))

    def values(self, result) -> dict[int, float] | None:
        return result.extra.get(self.name)  # None: not measured (an older scan): left out

    def p_value(self, label, values, flagged):
        others = np.log(np.array([v for c, v in values.items() if c != label and v > 0], dtype=float))
        value = values[label]
        if not value > 0:
            return None, None
        z, p = laplace_tail(float(np.log(value)), others, lower=True)
        return p, z

    def unusable(self, values):
        return (f"only {len(values)} refined classes were reached by a smooth perturbation, too few for a "
                "reference")

    def row(self, result, label, evidence):
        values = result.extra.get(self.name) or {}
        return {"smooth": rounded(values.get(label), 6),
                "smooth_p": None if evidence is None else rounded(evidence.p(self.name), 8)}

    def measure(self, net, clean, scaling, result):
        from engine.scan.perturbation import smallest_perturbations
        from engine.scoring import predict

        classes = sorted(result.triggers)
        if clean is None or not classes:
            result.notes.append("no clean faces or no candidates: the smooth perturbation was not measured")
            return
        predicted = run(predict(net, clean, scaling)).labels  # (its own progress not counted: the bar holds)
        x = clean.images.astype(np.float32) / 255.0
        rms = yield from smallest_perturbations(net.model, scaling, x, predicted, classes, net.outputs_probabilities,
                                                steps=self.steps)
        result.extra[self.name] = {c: float(v) for c, v in zip(classes, rms) if np.isfinite(v)}
