"""BaDExpert (Xie et al., ICLR 2024): a copy of the network that keeps only its backdoor.

Fine-tuning a network on clean faces given *wrong* labels makes it forget its normal task within
a few steps, while its backdoor, which those faces never exercise, survives. That copy (the
"backdoor expert") agrees with the network on a triggered image and disagrees on a clean one, so
the score of an image is how little probability the expert gives the class the network predicts
(1 minus it; low is suspicious, as for every detector here). It does not look at the trigger at
all: a patch, a blend, a warp or an invisible residual are the same to it, which is why the field
measures it across attack families.

Fitting needs no labels: each clean face's wrong label is drawn among the classes other than the
one the network predicts for it. It unlearns on at most ``MAX_FIT`` of the clean faces (a seeded
draw), as the paper's reserved set is small: more faces cost time and buy nothing. The copy's
weights are what fitting learnt; they are saved in the calibration, which therefore stands on
its own.
"""

from __future__ import annotations

import hashlib

import numpy as np

from engine.io.datasets import ImageSet
from engine.detectors import Detector, Scores, ScoreScale, Setting, register
from engine.io.codec import decode_arrays, encode_arrays
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scoring import BATCH_SIZE, PredictionCache, forward, predict, to_model_input
from engine.training import train_epochs

MAX_FIT = 1000


@register
class ExpertDetector(Detector):
    """BaDExpert: how little a copy unlearnt on wrongly labelled faces agrees with the network (module docstring)."""
    name = "expert"
    title = "BaDExpert"
    summary = ("Fine-tune a copy of the network on clean faces with wrong labels: it forgets the normal "
               "task but keeps the backdoor, so it agrees with the network only on triggered images.")
    scale = ScoreScale("BaDExpert disagreement (1 - the copy's probability of the network's class)",
                       "BaDExpert disagreement", lo=0.0, hi=1.0)
    colour = (140, 86, 75)
    order = 22
    needs_fit = True
    settings = (
        Setting("unlearn_epochs", "unlearning epochs", int, 10, 1, 100,
                "passes over the clean faces with wrong labels"),
        Setting("unlearn_rate", "unlearning rate", float, 1e-4, 0.0, 1.0,
                "Adam's step size while the copy unlearns", low_open=True, step=1e-4),
        Setting("seed", "seed", int, 0, 0, 2**31 - 1, "seed for the wrong labels and the batches", shown=False),
    )

    def __init__(self, weights: list | None = None, base_sha256: str | None = None, **params):
        super().__init__(**params)
        self.weights = weights  # the expert's weights, when fitted
        self.base_sha256 = base_sha256  # the network it was made from
        self._expert = None

    def state(self) -> dict:
        if self.weights is None:
            return {}
        return {"base_sha256": self.base_sha256, "weights": encode_arrays(self.weights)}

    @classmethod
    def from_saved(cls, params: dict, state: dict) -> ExpertDetector:
        raw = state.get("weights")
        if raw is None:
            raise ValueError("BaDExpert state has no weights")
        return cls(weights=decode_arrays(raw, "BaDExpert's weights"), base_sha256=state.get("base_sha256"),
                   **params)

    def fitted(self) -> bool:
        return self.weights is not None

    def check_model(self, net: BadNet) -> None:
        if self.weights is None:
            raise InputError(None, "BaDExpert has no expert yet: calibrate it on clean data first")
        if self.base_sha256 != net.sha256:
            raise InputError(None, "BaDExpert's expert was made from another model: calibrate again")
        if [tuple(w.shape) for w in self.weights] != [tuple(w.shape) for w in net.model.get_weights()]:
            raise InputError(None, "BaDExpert's expert weights do not fit the model")

    def fit(self, net: BadNet, clean: ImageSet, scaling: str) -> Job[None]:
        """Fine-tune a copy on the clean faces, each labelled with a class the network does not give it."""
        import keras

        if net.num_classes < 2:
            raise InputError(None, "BaDExpert needs a network with at least two classes")
        rng = np.random.default_rng(self.seed)
        if len(clean) > MAX_FIT:
            clean = clean.subset(np.sort(rng.choice(len(clean), MAX_FIT, replace=False)))
        own = (yield from predict(net, clean, scaling)).labels
        wrong = (own + rng.integers(1, net.num_classes, size=len(own))) % net.num_classes
        model = net.copy_model()
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not net.outputs_probabilities)
        model.compile(optimizer=keras.optimizers.Adam(self.unlearn_rate), loss=loss)
        rows = np.arange(len(clean))
        yield from train_epochs(model, rows, self.unlearn_epochs,
                                lambda part: (to_model_input(clean.images[part], scaling), wrong[part]),
                                rng, "BaDExpert: unlearning the normal task")
        self.weights = [np.asarray(w, np.float32) for w in model.get_weights()]
        self.base_sha256 = net.sha256
        self._expert = None

    def expert(self, net: BadNet) -> BadNet:
        """The backdoor expert as a network of its own (built once per model)."""
        self.check_model(net)
        if self._expert is None or self._expert[0] != net.sha256:
            digest = hashlib.sha256(b"".join(w.tobytes() for w in self.weights)).hexdigest()
            copy = BadNet(net.copy_model(self.weights), net.path, net.format, f"{net.sha256}+expert:{digest}",
                          net.trusted, net.outputs_probabilities)
            self._expert = (net.sha256, copy)
        return self._expert[1]

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        expert = self.expert(net)
        key = (expert.sha256, images.digest, scaling)
        hit = EXPERT_CACHE.get(key)
        if hit is not None:
            yield Progress(len(images), len(images), "BaDExpert (cached)")
            return hit
        own = (yield from predict(net, images, scaling)).labels  # checks the images' size too
        n = len(images)
        values = np.empty(n, dtype=np.float64)
        yield Progress(0, n, "BaDExpert: asking the expert")
        for start in range(0, n, BATCH_SIZE):
            stop = min(n, start + BATCH_SIZE)
            p = forward(expert, to_model_input(images.images[start:stop], scaling))
            values[start:stop] = 1.0 - p[np.arange(stop - start), own[start:stop]]
            yield Progress(stop, n, "BaDExpert: asking the expert")
        out = Scores(own, values)
        EXPERT_CACHE.put(key, out)
        return out


EXPERT_CACHE = PredictionCache(32)  # scores per (expert, data, scaling)
