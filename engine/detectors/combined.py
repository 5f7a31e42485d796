"""One detector from several, under one false-rejection budget.

Flagging an image when any of several calibrated detectors flags it adds up their false-rejection
rates. This detector instead fits its members on the clean data and keeps each member's sorted
clean scores. An image's score under a member becomes a p-value: the share of clean images that
score at or below it, interpolated between the clean scores (the j-th lowest clean score has
``j / (n + 1)``, with an exponential lower tail fitted to the lowest clean scores), so scores on
different scales (entropy in bits, a drift in [0, 1]) compare without tuning, and a score far
below every clean one gets a much smaller p-value than one just below them, however few the
clean images. The member p-values then become one score, by either rule:

- ``fisher`` (the default): Fisher's method, ``-2 * sum(log p)`` read against the chi-square
  distribution with twice as many degrees of freedom as members. A trigger that drives one
  member's p-value far down is caught as under a union of members, and one that leaves two
  members somewhat low is caught too, which a union misses;
- ``bonferroni``: the smallest member p-value divided by the member's weight (weights sum to 1),
  capped at 1: the union of the members' tails (calibrations saved before the rule existed).

Either way the calibration then sets one threshold on that score at the user's target rate, so
the whole detector rejects about that share of clean images.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from engine.io.datasets import ImageSet
from engine.detectors import (DETECTORS, Detector, Scores, ScoreScale, Setting, make_detector, register,
                              score_by_variants)
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress


@register
class CombinedDetector(Detector):
    """Several detectors under one false-rejection budget (the module's docstring says how)."""
    name = "combined"
    title = "Combined"
    summary = ("Several detectors (Transplant and SCALE-UP unless you choose others) under one "
               "false-rejection budget: each score becomes its rank among the clean scores (a p-value), "
               "the p-values are combined (Fisher's method), one threshold for the whole.")
    scale = ScoreScale("combined clean-data p-value (members' p-values combined)", "Combined p-value",
                       lo=0.0, hi=1.0, stretched_low=True)
    colour = (148, 103, 189)
    order = 30
    needs_fit = True
    DEFAULT_MEMBERS = ("transplant", "scaleup")
    RULES = ("fisher", "bonferroni")
    settings = (
        Setting("members", "members", list, DEFAULT_MEMBERS, 0, 0, "detectors to combine, by name"),
        Setting("rule", "rule", str, "fisher", 0, 0,
                "how member p-values combine: fisher (their product, read against chi-square) or "
                "bonferroni (the smallest, divided by its weight)", choices=RULES),
        Setting("weights", "weights", tuple, (), 0.0, 1e6,
                "bonferroni only: a weight per member (normalised to sum to 1; empty: each member's own, "
                "Transplant 2, the others 1)", low_open=True),
    )

    def __init__(self, member_params: dict | None = None, clean_scores: dict | None = None,
                 member_state: dict | None = None, **params):
        if params.get("weights") in ("", [], ()):
            params["weights"] = None
        super().__init__(**params)
        names = list(self.members)
        for n in names:
            if n == self.name or n not in DETECTORS:
                others = ", ".join(d for d in DETECTORS if d != self.name)
                raise InputError(None, f"Combined member {n!r} is not a detector to combine; choose from {others}")
        if len(set(names)) != len(names):
            raise InputError(None, f"Combined members {', '.join(names)} name a detector twice")
        if self.weights and len(self.weights) != len(names):
            raise InputError(None, f"Combined has {len(names)} members but {len(self.weights)} weights")
        member_params = member_params or {}
        member_state = member_state or {}
        self.parts = [make_detector(n, member_params.get(n), member_state.get(n)) for n in names]
        w = np.asarray(self.weights if self.weights else [p.combine_weight for p in self.parts], dtype=np.float64)
        self.normalised_weights = w / w.sum()
        self.clean_scores = clean_scores  # member name -> sorted clean scores

    def params(self) -> dict:
        out = super().params()
        if self.rule == "bonferroni":
            out["weights"] = [float(w) for w in self.normalised_weights]
        else:  # Fisher's rule weighs every member alike
            del out["weights"]
        out["member_params"] = {p.name: p.params() for p in self.parts}
        return out

    def state(self) -> dict:
        if self.clean_scores is None:
            return {}
        return {
            "members": {p.name: p.state() for p in self.parts},
            "clean_scores": {n: base64.b64encode(np.asarray(v, dtype="<f8").tobytes()).decode("ascii")
                             for n, v in self.clean_scores.items()},
        }

    @classmethod
    def from_saved(cls, params: dict, state: dict) -> CombinedDetector:
        raw = state.get("clean_scores")
        if not isinstance(raw, dict) or not isinstance(state.get("members", {}), dict):
            raise ValueError("Combined state has no clean scores for its members")
        clean = {}
        for name, text in raw.items():
            try:
                values = np.frombuffer(base64.b64decode(str(text), validate=True), dtype="<f8")
            except (binascii.Error, ValueError):
                raise ValueError(f"Combined clean scores of {name} are not valid base64") from None
            if len(values) == 0 or not np.isfinite(values).all() or np.any(np.diff(values) < 0):
                raise ValueError(f"Combined clean scores of {name} are not sorted finite numbers")
            clean[name] = values
        params = dict(params)
        params.setdefault("rule", "bonferroni")  # saved before Fisher's rule: its thresholds are Bonferroni's
        detector = cls(member_params=params.pop("member_params", None), clean_scores=clean,
                       member_state=state.get("members"), **params)
        if set(clean) != {p.name for p in detector.parts}:
            raise ValueError("Combined clean scores do not match its members")
        return detector

    def fitted(self) -> bool:
        return self.clean_scores is not None and all(p.fitted() for p in self.parts)

    def check_model(self, net: BadNet) -> None:
        for p in self.parts:
            p.check_model(net)

    def fit(self, net: BadNet, clean: ImageSet, scaling: str) -> Job[None]:
        """Fit every member on the clean data and keep its sorted clean scores."""
        for p in self.parts:
            yield Progress(0, 1, f"Combined: fitting {p.title}")
            yield from p.fit(net, clean, scaling)
        each = yield from self.member_scores(net, clean, scaling)
        self.clean_scores = {n: np.sort(np.asarray(v.values, dtype=np.float64)) for n, v in each.items()}

    def p_values(self, member: str, values: np.ndarray) -> np.ndarray:
        """Share of clean images scoring at or below each value (low = suspicious).

        Between the clean scores it is their rank, interpolated: the j-th lowest of n has
        j / (n + 1). Below the k-th lowest clean score u (k = max(3, n / 10)) the lower tail is an
        exponential fitted to the clean scores under u (its scale is their mean distance below
        u), so a score far below every clean one gets a p-value far below 1 / (n + 1): with 45
        clean images ranks alone cannot say less than 2%, too coarse to share a 5% budget among
        members.
        """
        clean = self.clean_scores[member]
        values = np.asarray(values, dtype=np.float64)
        n = len(clean)
        fp = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
        p = np.interp(values, clean, fp, right=1.0)
        k = min(n, max(3, int(np.ceil(0.1 * n))))
        u = float(clean[k - 1])
        beta = float(np.mean(u - clean[:k])) * k / max(1, k - 1)
        if not beta > 0:  # ties under u: a step at u instead of a tail
            beta = max(1e-12, 1e-6 * (float(clean[-1]) - float(clean[0])))
        below = values < u
        p[below] = fp[k - 1] * np.exp(-(u - values[below]) / beta)
        return p

    def member_scores(self, net: BadNet, images: ImageSet, scaling: str) -> Job[dict[str, Scores]]:
        """Every member's scores; members that score by variants run together, one call per batch."""
        out = {}
        plans = {p.name: p.variants(net, images, scaling) for p in self.parts}
        joint = [n for n, plan in plans.items() if plan is not None]
        if joint:
            scores = yield from score_by_variants(net, images, scaling, [plans[n] for n in joint])
            out.update(zip(joint, scores))
        for p in self.parts:
            if p.name not in out:
                out[p.name] = yield from p.score(net, images, scaling)
        return {p.name: out[p.name] for p in self.parts}

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        if self.clean_scores is None:
            raise InputError(None, "Combined has no clean scores: calibrate it on clean data first")
        each = yield from self.member_scores(net, images, scaling)
        p = [self.p_values(part.name, each[part.name].values) for part in self.parts]
        return Scores(each[self.parts[0].name].predicted, self.combine(p))

    def combine(self, p: list[np.ndarray]) -> np.ndarray:
        """One score in (0, 1] per image from the members' p-values (low = suspicious)."""
        if self.rule == "bonferroni":
            combined = np.ones(len(p[0]))
            for values, w in zip(p, self.normalised_weights):
                combined = np.minimum(combined, values / w)
            return np.minimum(combined, 1.0)
        return fisher(p)


def fisher(p: list[np.ndarray]) -> np.ndarray:
    """Fisher's method: the chance that k independent uniform p-values have a product as small,
    ``P(chi2 with 2k degrees >= -2 sum log p)``, which for even degrees is
    ``exp(-h) * sum_{j<k} h**j / j!`` with ``h = -sum log p`` (no special functions needed)."""
    h = -np.sum(np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1.0)), axis=0)
    term = np.ones_like(h)
    total = np.ones_like(h)
    for j in range(1, len(p)):
        term = term * h / j
        total += term
    return np.clip(np.exp(np.log(total) - h), 0.0, 1.0)
