"""Detectors: each gives every image a predicted class and a score (low = suspicious).

A detector's calibration (see :mod:`engine.detectors.calibration`) turns scores into verdicts with one rule
shared by all detectors: an image whose score falls below its class's threshold is flagged.

A detector declares itself: its settings (:class:`Setting`: name, type, default, range, help),
how its score reads (:class:`ScoreScale`: axis label, unit, linear or stretched near 1), whether
it learns from clean data (:meth:`Detector.fit`, kept in :meth:`Detector.state` and saved with the
calibration), and its colour in plots. The CLI's options, the window's settings form, histogram
axes and comparison plots are built from these declarations. A new detector is one module in this
package that subclasses :class:`Detector` and decorates it with :func:`register`; every module
here is imported when the package is.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from engine.io.datasets import ImageSet
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.settings import Setting, apply_settings  # noqa: F401  (detectors declare their settings with it)


@dataclass(frozen=True)
class Scores:
    """Per image: the class the network predicts and the detector's score (low = suspicious)."""

    predicted: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.predicted)


@dataclass(frozen=True)
class ScoreScale:
    """How a detector's scores read, for axes, columns and messages."""

    label: str  # axis label: "top-1 confidence"
    short: str  # column header: "Confidence"
    unit: str = ""  # "bits"
    stretched: bool = False  # probabilities that pile up near 1: offer an axis stretched there
    stretched_low: bool = False  # values in (0, 1] that pile up near 0 (p-values): stretch there
    near_one: bool = False  # clean scores may pile up at 1: offer an axis stretched there after the linear one
    lo: float = 0.0
    hi: float | None = None  # None: the axis ends a little above the largest score seen
    decimals: int = 4

    def format(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"


class Detector(ABC):
    """A per-image detector: scores images (low = suspicious), may fit on clean data first, and
    declares its settings; one module each, registered with :func:`register`."""
    name: ClassVar[str]
    title: ClassVar[str]  # for people: "Confidence", "STRIP"
    summary: ClassVar[str]  # one or two sentences for tooltips and help
    scale: ClassVar[ScoreScale]
    settings: ClassVar[tuple[Setting, ...]] = ()
    needs_fit: ClassVar[bool] = False  # learns from clean data before scoring
    colour: ClassVar[tuple[int, int, int]] = (80, 80, 80)
    combine_weight: ClassVar[float] = 1.0  # its share of a combined detector's budget, unless the user says
    order: ClassVar[int] = 100  # position in lists and menus

    def __init__(self, **params):
        apply_settings(self, self.settings, params, self.title)

    def params(self) -> dict:
        """The settings, as saved with a calibration (lists for tuples, so JSON keeps them)."""
        return {s.name: list(getattr(self, s.name)) if s.is_list else getattr(self, s.name)
                for s in self.settings}

    def state(self) -> dict:
        """What :meth:`fit` learnt, as JSON-ready values (saved with the calibration)."""
        return {}

    @classmethod
    def from_saved(cls, params: dict, state: dict) -> Detector:
        """A detector from its saved settings and state; raise ValueError on damaged state."""
        return cls(**params)

    def fitted(self) -> bool:
        """Whether it has what scoring needs: a detector that learns from clean data has learnt it."""
        return not self.needs_fit

    def check_model(self, net: BadNet) -> None:
        """Raise InputError(None, ...) when what this detector learnt cannot serve ``net``."""

    def fit(self, net: BadNet, clean: ImageSet, scaling: str) -> Job[None]:
        """Learn what scoring needs from clean data; most detectors need nothing."""
        return None
        yield  # a generator like every long job

    @abstractmethod
    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]: ...

    def variants(self, net: BadNet, images: ImageSet, scaling: str) -> Variants | None:
        """A detector that scores an image by variants of it returns its plan here, so a combined
        detector can run it with other members' in one call; ``score`` then runs it alone."""
        return None


@dataclass(frozen=True)
class Variants:
    """How a detector scores images by running ``k`` variants of each through the network with it.

    ``make(x, start)`` gets a batch's model inputs ``x`` (b, H, W, 3) and the index of its first
    image, and returns the variants as (b, k, H, W, 3). ``reduce(p, start)`` gets the
    probabilities (b, k + 1, classes), the image's own first, and returns one score per image.
    ``cache`` and ``key`` keep the scores, so no pass runs twice.

    A plan that looks twice sets ``follow`` instead of using ``reduce``: ``follow(x, p, start)``
    gets the first look's probabilities and returns ``(more, finish)``: ``more`` the further
    variants the first look asked for, any number of them for the whole batch (m, H, W, 3), and
    ``finish(q)`` the batch's scores from their probabilities (m, classes). Transplant confirms
    only its most promising windows on every host this way, and STRIP blends further only the
    images whose first blends look suspicious.
    """

    k: int
    make: Callable
    reduce: Callable | None
    stage: str
    cache: object  # engine.scoring.PredictionCache
    key: tuple
    follow: Callable | None = None


def score_by_variants(net: BadNet, images: ImageSet, scaling: str, plans: list[Variants]) -> Job[list[Scores]]:
    """Scores under each plan, the plans not yet cached run together: each image and all their
    variants go through the network in one call per batch, so a combined detector costs what its
    members cost, not more. Returns one :class:`Scores` per plan (the image's own top classes and
    the plan's scores)."""
    from engine.scoring import BATCH_SIZE, check_size, forward, to_model_input

    out: list[Scores | None] = [p.cache.get(p.key) for p in plans]
    todo = [i for i, hit in enumerate(out) if hit is None]
    n = len(images)
    if not todo:
        yield Progress(n, n, " + ".join(p.stage for p in plans) + " (cached)")
        return out
    check_size(net, images.images, images.source)
    run = [plans[i] for i in todo]
    stage = " + ".join(p.stage for p in run)
    ks = [p.k for p in run]
    ends = np.cumsum([1] + ks)  # plan j's variants sit at columns ends[j] .. ends[j + 1] - 1
    total = int(ends[-1])
    per_batch = max(1, BATCH_SIZE // total)
    predicted = np.empty(n, dtype=np.int64)
    values = [np.empty(n, dtype=np.float64) for _ in run]
    yield Progress(0, n, stage)
    for start in range(0, n, per_batch):
        stop = min(n, start + per_batch)
        x = to_model_input(images.images[start:stop], scaling)
        batch = np.empty((stop - start, total, *x.shape[1:]), dtype=np.float32)
        batch[:, 0] = x
        for j, plan in enumerate(run):
            batch[:, ends[j]:ends[j + 1]] = plan.make(x, start)
        p = forward(net, batch.reshape(-1, *x.shape[1:])).reshape(stop - start, total, -1)
        predicted[start:stop] = p[:, 0].argmax(axis=1)
        second = []  # (plan index, its further variants, finish) of plans that look twice
        for j, plan in enumerate(run):
            own = np.concatenate([p[:, :1], p[:, ends[j]:ends[j + 1]]], axis=1)
            if plan.follow is None:
                values[j][start:stop] = plan.reduce(own, start)
            else:
                second.append((j, *plan.follow(x, own, start)))
        if second:  # every plan's second look in one call too
            more = [m for _, m, _ in second]
            sizes = np.cumsum([0] + [len(m) for m in more])
            q = forward(net, np.concatenate(more)) if sizes[-1] else np.zeros((0, p.shape[-1]), np.float32)
            for (j, _, finish), a, b in zip(second, sizes[:-1], sizes[1:]):
                values[j][start:stop] = finish(q[a:b])
        yield Progress(stop, n, stage)
    for i, plan, v in zip(todo, run, values):
        out[i] = Scores(predicted, v)
        plan.cache.put(plan.key, out[i])
    return out


class Prepared:
    """A detector's clean reference images (STRIP's blend images, Transplant's hosts) as scoring
    uses them: their digest and their model input, computed once per array and scaling rather
    than for every image a user drops in."""

    def __init__(self):
        self._array = None
        self._digest = ""
        self._inputs: dict[tuple, np.ndarray] = {}
        self._index: dict[bytes, int] = {}

    def _follow(self, images: np.ndarray) -> None:
        if images is not self._array:
            import hashlib

            self._array = images
            self._digest = hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).hexdigest()
            self._inputs = {}
            self._index = {r.tobytes(): j for j, r in enumerate(images)}

    def digest(self, images: np.ndarray) -> str:
        self._follow(images)
        return self._digest

    def inputs(self, images: np.ndarray, scaling: str, weight: float = 1.0) -> np.ndarray:
        """The images as the model's float input, times ``weight`` (read-only: shared between calls)."""
        from engine.scoring import to_model_input

        self._follow(images)
        key = (scaling, weight)
        if key not in self._inputs:
            x = to_model_input(images, scaling)
            if weight != 1.0:
                x *= np.float32(weight)
            x.flags.writeable = False
            self._inputs[key] = x
        return self._inputs[key]

    def not_itself(self, images: np.ndarray, references: np.ndarray) -> Callable[[int, int], np.ndarray]:
        """:func:`not_itself` with the references' index kept between calls."""
        self._follow(references)
        return not_itself(images, references, self._index)


def not_itself(images: np.ndarray, references: np.ndarray,
               index: dict[bytes, int] | None = None) -> Callable[[int, int], np.ndarray]:
    """For detectors whose variants use clean reference images (STRIP's blends, Transplant's
    hosts): ``mask(start, count)`` is a bool array (count, references), False where image
    ``start + i`` is itself reference j, so an image is never judged against itself (unless it
    is the only reference). ``index``: the references' bytes to their place, when kept."""
    if index is None:
        index = {r.tobytes(): j for j, r in enumerate(references)}

    def mask(start: int, count: int) -> np.ndarray:
        valid = np.ones((count, len(references)), dtype=bool)
        if len(references) > 1:
            for i, img in enumerate(images[start:start + count]):
                j = index.get(img.tobytes())
                if j is not None:
                    valid[i, j] = False
        return valid

    return mask


DETECTORS: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector known to the CLI, the window and calibration files."""
    if cls.name in DETECTORS and DETECTORS[cls.name] is not cls:
        raise RuntimeError(f"two detectors are named {cls.name!r}")
    DETECTORS[cls.name] = cls
    ordered = sorted(DETECTORS.items(), key=lambda kv: (kv[1].order, kv[0]))
    DETECTORS.clear()
    DETECTORS.update(ordered)
    return cls


def detector_class(name: str) -> type[Detector]:
    """The registered detector class of ``name``, or an InputError listing the detectors."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise InputError(None, f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}") from None


def make_detector(name: str, params: dict | None = None, state: dict | None = None) -> Detector:
    """A detector by name with checked settings (and, from a file, what it learnt)."""
    cls = detector_class(name)
    if not isinstance(params or {}, dict) or not isinstance(state or {}, dict):
        raise InputError(None, f"{cls.title} settings and state must be JSON objects")
    if state:
        return cls.from_saved(params or {}, state)
    return cls(**(params or {}))


def title_of(name: str) -> str:
    """A detector's title for people (the name itself when it is not registered)."""
    cls = DETECTORS.get(name)
    return cls.title if cls is not None else name


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_discover()
