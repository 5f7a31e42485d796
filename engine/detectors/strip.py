"""STRIP (Gao et al., ACSAC 2019): a trigger survives being blended with other images."""

from __future__ import annotations


import numpy as np

from engine.io.datasets import ImageSet
from engine.detectors import (Detector, Prepared, Scores, ScoreScale, Setting, Variants, make_detector, register,
                              score_by_variants)
from engine.io.codec import decode_images, encode_images
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scoring import PredictionCache, check_size

MAX_BLENDS = 256
DEFAULT_FIRST_BLENDS = 8
EARLY_QUANTILE = 0.5  # inputs whose first blends leave them in the lower half of clean images get the rest
EARLY_SAMPLE = 200  # clean images the cut is set on


@register
class StripDetector(Detector):
    """Each input is blended with ``blends`` clean images, ``(1 - alpha) * input + alpha * clean``;
    the score is the mean Shannon entropy (bits) of the network's predictions on the blends. A
    clean face blended with other faces gives uncertain, varied predictions (high entropy); a
    triggered face keeps being sent to the target class (low entropy), so, as for every detector
    here, a low score is suspicious. The input and its blends go through the network as one
    batch, so one image costs one call, not ``blends`` calls. A blend of an image with itself
    (the image is one of the clean blend images) is left out of its mean.
    """

    name = "strip"
    title = "STRIP"
    summary = ("Blend the image with clean images; a trigger keeps forcing one class, so the "
               "predictions' entropy stays low.")
    scale = ScoreScale("STRIP entropy of blends (bits)", "STRIP entropy", unit="bits")
    colour = (214, 39, 40)
    order = 10
    needs_fit = True
    DEFAULT_BLENDS = 32
    DEFAULT_ALPHA = 0.5
    settings = (
        Setting("blends", "blend images", int, DEFAULT_BLENDS, 1, MAX_BLENDS,
                "clean images each input is blended with (one network call per input)"),
        Setting("alpha", "blend weight", float, DEFAULT_ALPHA, 0.0, 1.0,
                "weight of the clean image in a blend", low_open=True, high_open=True, step=0.05,
                flag="blend-weight"),
        Setting("first_blends", "first blends", int, DEFAULT_FIRST_BLENDS, 0, MAX_BLENDS,
                "blends every input gets; the rest only where these leave the entropy among the lower "
                f"{round(100 * EARLY_QUANTILE)}% of clean images' (0: every blend at once)"),
        Setting("seed", "seed", int, 0, 0, 2**31 - 1, "seed for picking the blend images", shown=False),
    )

    def __init__(self, overlays: np.ndarray | None = None, early_cut: float | None = None, **params):
        super().__init__(**params)
        self.overlays = None if overlays is None else np.ascontiguousarray(overlays, dtype=np.uint8)
        self.early_cut = early_cut  # entropy of the first blends at or above which they suffice
        self._prepared = Prepared()

    def state(self) -> dict:
        if self.overlays is None:
            return {}
        out = {"overlays": encode_images(self.overlays)}
        if self.early_cut is not None:
            out["early_cut"] = self.early_cut
        return out

    @classmethod
    def from_saved(cls, params: dict, state: dict) -> StripDetector:
        raw = state.get("overlays")
        overlays = None if raw is None else decode_images(raw, "STRIP blend images", MAX_BLENDS)
        cut = state.get("early_cut")
        if cut is not None and (isinstance(cut, bool) or not isinstance(cut, (int, float)) or not np.isfinite(cut)):
            raise ValueError(f"STRIP early cut {cut!r} is not a finite number")
        # A calibration saved before the first blends (no cut) blended every input fully: keep so.
        return cls(**params, overlays=overlays, early_cut=None if cut is None else float(cut))

    @property
    def early(self) -> int:
        """Blends of the first look, or 0 when every input gets every blend at once."""
        k = 0 if self.overlays is None else len(self.overlays)
        return self.first_blends if self.early_cut is not None and 0 < self.first_blends < k else 0

    def fitted(self) -> bool:
        return self.overlays is not None

    def check_model(self, net: BadNet) -> None:
        if self.overlays is not None and tuple(self.overlays.shape[1:]) != tuple(net.input_shape):
            h, w, _ = self.overlays.shape[1:]
            raise InputError(None, f"its STRIP blend images are {h}x{w}, the model takes "
                             f"{net.input_shape[0]}x{net.input_shape[1]} images")

    def fit(self, net: BadNet, clean: ImageSet, scaling: str) -> Job[None]:
        """Pick the blend images: ``blends`` clean images at random (seeded), all if fewer."""
        yield Progress(0, 1, "choosing STRIP blend images")
        if len(clean) == 0:
            raise InputError(clean.source, "no clean images to blend with")
        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(len(clean), size=min(self.blends, len(clean)), replace=False))
        self.overlays = clean.images[pick].copy()
        self.early_cut = None
        yield Progress(1, 1, "choosing STRIP blend images")
        if 0 < self.first_blends < len(self.overlays):
            # The cut: the EARLY_QUANTILE of clean images' entropy over the first blends alone, on
            # up to EARLY_SAMPLE of them. Below it an input gets the rest of its blends.
            sample = clean.subset(np.sort(rng.choice(len(clean), size=min(EARLY_SAMPLE, len(clean)), replace=False)))
            first = make_detector(self.name, {**self.params(), "blends": self.first_blends, "first_blends": 0},
                                  {"overlays": encode_images(self.overlays[:self.first_blends])})
            scores = yield from first.score(net, sample, scaling)
            self.early_cut = float(np.quantile(scores.values, EARLY_QUANTILE))

    @property
    def overlay_digest(self) -> str:
        return self._prepared.digest(self.overlays) if self.overlays is not None else ""

    def variants(self, net: BadNet, images: ImageSet, scaling: str) -> Variants:
        if self.overlays is None:
            raise InputError(None, "STRIP has no blend images: calibrate it on clean data first")
        check_size(net, self.overlays, "STRIP blend images")
        weighted = self._prepared.inputs(self.overlays, scaling, self.alpha)  # scaling is linear
        k = len(self.overlays)
        valid_blends = self._prepared.not_itself(images.images, self.overlays)
        keep = np.float32(1.0 - self.alpha)

        def blends(x, start):
            return (x * keep)[:, None] + weighted[None]

        def mean_entropy(p, start):
            h = _entropy_bits(p[:, 1:])  # (images, blends)
            valid = valid_blends(start, len(p))
            return (h * valid).sum(axis=1) / valid.sum(axis=1)

        key = (net.sha256, images.digest, scaling, self.name, self.alpha, self.overlay_digest, self.early,
               self.early_cut)
        stage = "STRIP: blending and predicting"
        f = self.early
        if not f:
            return Variants(k, blends, mean_entropy, stage, STRIP_CACHE, key)

        def first_blends(x, start):
            return (x * keep)[:, None] + weighted[None, :f]

        def follow(x, p, start):
            valid = valid_blends(start, len(p))
            h = _entropy_bits(p[:, 1:]) * valid[:, :f]
            counted = valid[:, :f].sum(axis=1)
            first = h.sum(axis=1) / np.maximum(counted, 1)
            rest = np.flatnonzero((first < self.early_cut) | (counted == 0))
            more = ((x[rest] * keep)[:, None] + weighted[None, f:]).reshape(-1, *x.shape[1:])

            def finish(q):
                out = first.copy()
                if not len(rest):
                    return out
                h_rest = _entropy_bits(q.reshape(len(rest), k - f, -1)) * valid[rest, f:]
                out[rest] = (h[rest].sum(axis=1) + h_rest.sum(axis=1)) / valid[rest].sum(axis=1)
                return out

            return more, finish

        return Variants(f, first_blends, None, stage, STRIP_CACHE, key, follow=follow)

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        return (yield from score_by_variants(net, images, scaling, [self.variants(net, images, scaling)]))[0]


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.maximum(-terms.sum(axis=-1), 0.0)


STRIP_CACHE = PredictionCache(64)  # STRIP scores per (model, data, scaling, blend settings)
