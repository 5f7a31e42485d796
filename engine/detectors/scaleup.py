"""SCALE-UP (Guo et al., ICLR 2023): a trigger's prediction survives amplifying the pixels."""

from __future__ import annotations

import numpy as np

from engine.io.datasets import ImageSet
from engine.detectors import Detector, Scores, ScoreScale, Setting, Variants, register, score_by_variants
from engine.io.models import BadNet
from engine.progress import Job
from engine.scoring import SCALINGS, PredictionCache

PIXEL_MAX = 255.0


@register
class ScaleUpDetector(Detector):
    """Each input's pixel values are multiplied by each factor and clipped to the pixel range; the
    copies go through the network with the input as one batch. A clean image's prediction drifts
    as it washes out; a triggered one keeps being sent to the target (the paper's "scaled
    prediction consistency").

    The paper scores the share of copies that keep the original class, which takes only
    ``len(factors) + 1`` values, too coarse to set a threshold at a chosen false-rejection rate.
    The score here is continuous: the drift, 1 minus the mean probability the copies give the
    original class. Low drift is suspicious, as low scores are for every detector here.
    """

    name = "scaleup"
    title = "SCALE-UP"
    summary = ("Multiply the image's pixels by several factors; a trigger keeps forcing its class, so "
               "the scaled copies' predictions barely drift.")
    scale = ScoreScale("SCALE-UP drift (1 - mean probability of the original class over scaled copies)",
                       "SCALE-UP drift", lo=0.0, hi=1.0)
    colour = (44, 160, 44)
    order = 20
    DEFAULT_FACTORS = (3.0, 5.0, 7.0, 9.0, 11.0)
    settings = (
        Setting("factors", "scale factors", tuple, DEFAULT_FACTORS, 1.0, 255.0,
                "pixel values are multiplied by each factor and clipped (one network call per input)",
                low_open=True),
    )

    def variants(self, net: BadNet, images: ImageSet, scaling: str) -> Variants:
        factors = np.asarray(self.factors, dtype=np.float32)
        top = np.float32(PIXEL_MAX * SCALINGS[scaling])  # the pixel range's top in model input units

        def scaled(x, start):
            return np.minimum(x[:, None] * factors[None, :, None, None, None], top)

        def drift(p, start):
            own = p[:, 0].argmax(axis=1)
            kept = np.take_along_axis(p[:, 1:], own[:, None, None], axis=2)[..., 0]  # (images, copies)
            return 1.0 - kept.mean(axis=1, dtype=np.float64)

        key = (net.sha256, images.digest, scaling, self.name, tuple(self.factors))
        return Variants(len(factors), scaled, drift, "SCALE-UP: scaling and predicting", SCALEUP_CACHE, key)

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        return (yield from score_by_variants(net, images, scaling, [self.variants(net, images, scaling)]))[0]


SCALEUP_CACHE = PredictionCache(64)  # scores per (model, data, scaling, factors)
