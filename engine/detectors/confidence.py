"""The project's founding idea: a poisoned image reaches less confidence than its class does.

With ``fine_tune_epochs`` > 0 it is the report's last idea as written: fit a copy of the network
on the clean data first, take each class's threshold from that copy's confidence, and judge with
the copy (its class, its confidence). The copy's weights are what fitting learnt; they are saved
in the calibration, so a calibration file still stands on its own.
"""

from __future__ import annotations

import hashlib

import numpy as np

from engine.io.datasets import ImageSet
from engine.detectors import Detector, Scores, ScoreScale, Setting, register
from engine.io.codec import decode_arrays, encode_arrays
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job
from engine.scoring import predict
from engine.training import fine_tune

FINE_TUNE_LEARNING_RATE = 1e-4


@register
class ConfidenceDetector(Detector):
    """The founding idea: the top-class confidence is the score, optionally from a copy fine-tuned on clean faces."""
    name = "confidence"
    title = "Confidence"
    summary = ("Flag an image whose top-1 confidence is below its class's threshold. Real BadNets give "
               "triggered images confidence ~1.0, so this often fails; the histograms show why.")
    scale = ScoreScale("top-1 confidence", "Confidence", stretched=True, lo=0.0, hi=1.0, decimals=6)
    colour = (31, 119, 180)
    order = 0
    settings = (
        Setting("fine_tune_epochs", "fine-tuning epochs", int, 0, 0, 100,
                "first fit a copy of the network on the clean data for this many epochs and judge with the "
                "copy (the report's last idea); 0: the network as it is"),
    )

    def __init__(self, weights: list | None = None, base_sha256: str | None = None, **params):
        super().__init__(**params)
        self.weights = weights  # the fine-tuned copy's weights, when fitted
        self.base_sha256 = base_sha256  # the network they were fitted from
        self._copy = None

    def state(self) -> dict:
        if self.weights is None:
            return {}
        return {"base_sha256": self.base_sha256, "weights": encode_arrays(self.weights)}

    @classmethod
    def from_saved(cls, params: dict, state: dict) -> ConfidenceDetector:
        raw = state.get("weights")
        weights = None if raw is None else decode_arrays(raw, "the fine-tuned copy's weights")
        return cls(weights=weights, base_sha256=state.get("base_sha256"), **params)

    def fitted(self) -> bool:
        return self.fine_tune_epochs == 0 or self.weights is not None

    def check_model(self, net: BadNet) -> None:
        if self.fine_tune_epochs > 0 and self.weights is None:
            raise InputError(None, "the fine-tuned copy's weights are missing: calibrate again")
        if self.weights is not None:
            if self.base_sha256 != net.sha256:
                raise InputError(None, "the fine-tuned copy was made from another model")
            shapes = [tuple(w.shape) for w in net.model.get_weights()]
            if [tuple(w.shape) for w in self.weights] != shapes:
                raise InputError(None, "the fine-tuned copy's weights do not fit the model")

    def fit(self, net: BadNet, clean: ImageSet, scaling: str) -> Job[None]:
        if self.fine_tune_epochs == 0:
            return None

        model = net.copy_model()
        yield from fine_tune(model, lambda m: None, clean, scaling, self.fine_tune_epochs,
                             learning_rate=FINE_TUNE_LEARNING_RATE, from_logits=not net.outputs_probabilities)
        self.weights = [np.asarray(w, np.float32) for w in model.get_weights()]
        self.base_sha256 = net.sha256
        self._copy = None

    def judged_by(self, net: BadNet) -> BadNet:
        """The network whose answers are scored: ``net``, or the fine-tuned copy of it."""
        if self.fine_tune_epochs == 0 and self.weights is None:
            return net
        self.check_model(net)
        if self._copy is None or self._copy[0] != net.sha256:
            model = net.copy_model(self.weights)
            digest = hashlib.sha256(b"".join(w.tobytes() for w in self.weights)).hexdigest()
            copy = BadNet(model, net.path, net.format, f"{net.sha256}+finetuned:{digest}", net.trusted,
                          net.outputs_probabilities)
            self._copy = (net.sha256, copy)
        return self._copy[1]

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        preds = yield from predict(self.judged_by(net), images, scaling)
        return Scores(preds.labels, preds.confidences)
