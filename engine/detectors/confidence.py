"""The project's founding idea: a poisoned image reaches less confidence than its class does."""

from __future__ import annotations

from engine.data_io import ImageSet
from engine.detectors import Detector, Scores, ScoreScale, register
from engine.model_io import BadNet
from engine.progress import Job
from engine.scoring import predict


@register
class ConfidenceDetector(Detector):
    name = "confidence"
    title = "Confidence"
    summary = ("Flag an image whose top-1 confidence is below its class's threshold. Real BadNets give "
               "triggered images confidence ~1.0, so this often fails; the histograms show why.")
    scale = ScoreScale("top-1 confidence", "Confidence", stretched=True, lo=0.0, hi=1.0, decimals=6)
    colour = (31, 119, 180)
    order = 0

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        preds = yield from predict(net, images, scaling)
        return Scores(preds.labels, preds.confidences)
