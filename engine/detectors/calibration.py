"""A calibration: a detector fitted on clean data with its per-class thresholds
(:mod:`engine.detectors.thresholds`), its JSON file, the verdicts it gives, and the job that
makes one.

A verdict's label is in [0, N]: the predicted class, or N (the number of
classes, 1283 for CSAW) when the image is flagged as poisoned.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.io.datasets import ImageSet
from engine.detectors import Detector, Scores, make_detector, title_of
from engine.errors import InputError, first_line
from engine.io.files import check_output, is_json_of_kind, read_json_file, write_json_atomic
from engine.io.models import BadNet
from engine.progress import Job
from engine.scoring import SCALINGS
from engine.detectors.thresholds import (CONFIDENCE, DEFAULT_FRR, DEFAULT_METHOD, DEFAULT_MIN_SAMPLES,  # noqa: F401
                                         METHODS, SAMPLE_PRECISION, check_frr, check_options, check_sample,
                                         default_min_samples, fit_thresholds, frr_interval, quantile_threshold,
                                         sample_size)

FILE_KIND = "badnet-inspector/calibration"
FILE_VERSION = 1
MAX_CLASSES = 1_000_000
SAMPLE_SEED = 0


@dataclass(frozen=True)
class Verdict:
    """One image's verdict under a calibration: its class, score and threshold, the label answered
    (the class, or N when flagged) and whether it is called poisoned."""
    name: str
    predicted: int
    score: float
    threshold: float
    label: int
    poisoned: bool


@dataclass(frozen=True)
class Verdicts:
    """Verdicts for a set of images, as arrays; ``labels`` are in [0, N], N = poisoned."""

    names: list[str]
    predicted: np.ndarray
    scores: np.ndarray
    thresholds: np.ndarray
    labels: np.ndarray
    poisoned_label: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def flagged(self) -> np.ndarray:
        return self.labels == self.poisoned_label

    def __getitem__(self, i: int) -> Verdict:
        return Verdict(
            self.names[i],
            int(self.predicted[i]),
            float(self.scores[i]),
            float(self.thresholds[i]),
            int(self.labels[i]),
            bool(self.labels[i] == self.poisoned_label),
        )


@dataclass
class Calibration:
    """A detector fitted and thresholded on clean data for one model: per-class thresholds at a
    target false-rejection rate, what the detector learnt, and the data it came from; saved as JSON."""
    detector: str
    detector_params: dict
    model_path: str
    model_sha256: str
    scaling: str
    num_classes: int
    method: str
    frr: float
    min_samples: int
    thresholds: np.ndarray
    counts: np.ndarray
    pooled: np.ndarray
    pooled_threshold: float
    data: dict = field(default_factory=dict)
    edited: bool = False
    created: str = ""
    detector_state: dict = field(default_factory=dict)  # what the detector learnt (STRIP's blend images)
    source: str | None = None  # the file it was loaded from, to name in messages
    _detector: Detector | None = field(default=None, repr=False, compare=False)

    @property
    def poisoned_label(self) -> int:
        return self.num_classes

    def make_detector(self) -> Detector:
        """The detector with its saved settings and state, decoded once (scoring does not change it)."""
        if self._detector is None:
            self._detector = make_detector(self.detector, self.detector_params, self.detector_state)
        return self._detector

    @property
    def detector_title(self) -> str:
        return title_of(self.detector)

    @property
    def own_thresholds(self) -> int:
        return int((~self.pooled).sum())

    def summary(self) -> str:
        """One line: what was calibrated, how, and how many classes have a threshold of their own."""
        def shown(v) -> str:
            return "/".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else f"{v}"

        params = ", ".join(f"{k.replace('_', ' ')} {shown(v)}" for k, v in self.detector_params.items()
                           if k != "seed" and not isinstance(v, dict) and v != 0)  # 0: a step that is off
        how = self.method + (f", target false rejection {self.frr:g}" if self.method == "quantile" else "")
        text = f"{self.detector_title}{f' ({params})' if params else ''}{self.data_summary()}"
        text = (text
                + f" ({how}, scaling {self.scaling}): {self.own_thresholds} of {self.num_classes} classes have "
                f"their own threshold, the rest use the pooled threshold {self.pooled_threshold:.6f}")
        return text + ("; thresholds edited by hand" if self.edited else "")

    def data_summary(self) -> str:
        """" on 1168 of 11547 clean images (a random sample; ...)", or "" when not recorded."""
        n, of, interval = self.data.get("n"), self.data.get("of"), self.data.get("frr_interval")
        if n is None:
            return ""
        text = f" on {n}" + (f" of {of}" if of is not None and of != n else "") + " clean images"
        notes = ["a random sample"] if of is not None and of != n else []
        if isinstance(interval, list) and len(interval) == 2 and self.method == "quantile":
            notes.append(f"false rejection of new clean images {100 * interval[0]:.1f}..{100 * interval[1]:.1f}% "
                         f"with {100 * CONFIDENCE:.0f}% confidence")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def set_threshold(self, cls: int, value: float) -> None:
        value = float(value)
        if not np.isfinite(value) or not 0 <= cls < self.num_classes:
            raise InputError(None, f"threshold {value} for class {cls} is not a finite value for a class")
        self.thresholds[cls] = value
        self.edited = True

    def set_all_thresholds(self, value: float) -> None:
        value = float(value)
        if not np.isfinite(value):
            raise InputError(None, f"threshold {value} is not a finite value")
        self.thresholds[:] = value
        self.edited = True

    def check_model(self, net: BadNet) -> None:
        """This calibration can judge ``net``'s outputs: same file, same classes, same input size."""
        if net.sha256 != self.model_sha256:
            raise InputError(
                net.path,
                f"this calibration was made for another model (sha256 {self.model_sha256[:12]}…, "
                f"this file is {net.sha256[:12]}…)",
            )
        where = self.source or "calibration"
        if net.num_classes != self.num_classes:
            raise InputError(where, f"has thresholds for {self.num_classes} classes; the model has {net.num_classes}")
        try:
            self.make_detector().check_model(net)
        except InputError as err:
            raise InputError(where, err.problem) from None

    def labels(self, predicted, scores):
        """The verdict rule: the predicted class, or N where the score is below its class's threshold.
        Works on arrays and on single values."""
        predicted = np.asarray(predicted, dtype=np.int64)
        return np.where(np.asarray(scores) < self.thresholds[predicted], self.poisoned_label, predicted)

    def verdicts(self, scores: Scores, names: list[str]) -> Verdicts:
        predicted = np.asarray(scores.predicted, dtype=np.int64)
        labels = self.labels(predicted, scores.values)
        return Verdicts(list(names), predicted, np.asarray(scores.values), self.thresholds[predicted], labels,
                        self.poisoned_label)

    def judge(self, net: BadNet, images: ImageSet) -> Job[Verdicts]:
        """Score a set with this calibration's detector and give a verdict per image."""
        self.check_model(net)
        scores = yield from self.make_detector().score(net, images, self.scaling)
        return self.verdicts(scores, images.names)

    # --- file ----------------------------------------------------------------------------

    def to_dict(self, relative_to: Path | None = None) -> dict:
        """The file's content, a copy: changing it never changes this calibration."""
        model_path = self.model_path
        if relative_to is not None:
            try:
                model_path = os.path.relpath(Path(self.model_path).resolve(), relative_to.resolve())
            except ValueError:  # another drive on Windows
                pass
        return copy.deepcopy({
            "kind": FILE_KIND,
            "version": FILE_VERSION,
            "created": self.created,
            "detector": self.detector,
            "detector_params": self.detector_params,
            "model": {"path": model_path, "sha256": self.model_sha256},
            "scaling": self.scaling,
            "num_classes": self.num_classes,
            "poisoned_label": self.poisoned_label,
            "method": self.method,
            "frr": self.frr,
            "min_samples": self.min_samples,
            "edited": self.edited,
            "pooled_threshold": self.pooled_threshold,
            "thresholds": [float(t) for t in self.thresholds],
            "counts": [int(c) for c in self.counts],
            "pooled_classes": [int(c) for c in np.flatnonzero(self.pooled)],
            "data": self.data,
            "detector_state": self.detector_state,
        })

    def save(self, path: str | Path) -> None:
        """Write atomically; never replace a file that is not a calibration."""
        path = check_calibration_output(path)
        write_json_atomic(path, self.to_dict(relative_to=path.parent))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        raw = read_json_file(path, FILE_KIND, "calibration")
        try:
            n = _whole(raw["num_classes"], "num_classes")
            if not 2 <= n <= MAX_CLASSES:
                raise ValueError(f"{n} classes is not a classifier's class count")
            thresholds = np.asarray(raw["thresholds"], dtype=np.float64)
            counts = np.asarray(raw["counts"], dtype=np.int64)
            if thresholds.shape != (n,) or counts.shape != (n,):
                raise ValueError(f"{thresholds.size} thresholds and {counts.size} counts for {n} classes")
            if not np.isfinite(thresholds).all():
                raise InputError(path, "thresholds hold NaN or infinite values")
            if (counts < 0).any():
                raise ValueError("negative counts")
            pooled_classes = np.asarray(raw.get("pooled_classes", []), dtype=np.int64).reshape(-1)
            if len(pooled_classes) and (pooled_classes.min() < 0 or pooled_classes.max() >= n):
                raise ValueError("pooled_classes names classes the calibration does not have")
            pooled = np.zeros(n, dtype=bool)
            pooled[pooled_classes] = True
            pooled_threshold = float(raw["pooled_threshold"])
            if not np.isfinite(pooled_threshold):
                raise InputError(path, "the pooled threshold is NaN or infinite")
            scaling = str(raw["scaling"])
            if scaling not in SCALINGS:
                raise InputError(path, f"unknown input scaling {scaling!r}; expected one of {', '.join(SCALINGS)}")
            method, frr, min_samples = str(raw["method"]), float(raw["frr"]), _whole(raw["min_samples"], "min_samples")
            check_options(method, frr, min_samples)
            if not isinstance(raw["model"], dict):
                raise TypeError("'model' is not an object")
            model_path = Path(str(raw["model"]["path"]))
            if not model_path.is_absolute():
                model_path = (path.parent / model_path).resolve()
            cal = cls(
                detector=str(raw["detector"]),
                detector_params=dict(raw.get("detector_params") or {}),
                model_path=str(model_path),
                model_sha256=str(raw["model"]["sha256"]),
                scaling=scaling,
                num_classes=n,
                method=method,
                frr=frr,
                min_samples=min_samples,
                thresholds=thresholds,
                counts=counts,
                pooled=pooled,
                pooled_threshold=pooled_threshold,
                data=dict(raw.get("data") or {}),
                edited=bool(raw.get("edited", False)),
                created=str(raw.get("created", "")),
                detector_state=dict(raw.get("detector_state") or {}),
                source=str(path),
            )
            detector = cal.make_detector()  # a damaged detector state fails here, not at first use
            if not detector.fitted():
                missing = [p.title for p in getattr(detector, "parts", [detector]) if not p.fitted()] or [
                    detector.title]
                raise InputError(None, f"what the {' and '.join(missing)} detector learnt on clean data is "
                                 "missing from its detector state; calibrate again")
            return cal
        except InputError as err:
            raise InputError(path, err.problem) from None
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as err:
            raise InputError(path, f"damaged calibration file ({type(err).__name__}: {first_line(err)})") from None


def _whole(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{what} {value!r} is not a whole number")
    return int(value)


def any_flags(labels, predicted, poisoned_label: int):
    """The 'any detector' rule: N where any detector's label is N, else the predicted class.
    ``labels`` has one row per detector (arrays, or single values per detector)."""
    flagged = np.any(np.asarray(labels) == poisoned_label, axis=0)
    return np.where(flagged, poisoned_label, predicted)


@dataclass
class AnyOf:
    """Several calibrations of one model used together: an image is flagged when any flags."""

    parts: list[Calibration]

    def __post_init__(self):
        if not self.parts:
            raise InputError(None, "no calibrations to combine")
        first = self.parts[0]
        for other in self.parts[1:]:
            if other.model_sha256 != first.model_sha256 or other.num_classes != first.num_classes:
                raise InputError(other.source, f"was made for another model than {first.source or 'the first calibration'}; "
                                 "combined calibrations must share a model")
            if other.scaling != first.scaling:
                raise InputError(other.source, f"uses input scaling {other.scaling}, {first.source or 'the first'} "
                                 f"uses {first.scaling}; combined calibrations must share it")

    @property
    def model_path(self) -> str:
        return self.parts[0].model_path

    @property
    def scaling(self) -> str:
        return self.parts[0].scaling

    @property
    def poisoned_label(self) -> int:
        return self.parts[0].poisoned_label

    @property
    def detector(self) -> str:
        return " or ".join(p.detector for p in self.parts)

    def check_model(self, net: BadNet) -> None:
        for part in self.parts:
            part.check_model(net)

    def judge(self, net: BadNet, images: ImageSet) -> Job[Verdicts]:
        """Each detector's verdicts, merged: N where any flags. Score and threshold shown are
        those of the first detector that flags (else the first detector's)."""
        each = []
        for part in self.parts:
            each.append((yield from part.judge(net, images)))
        flagged = np.stack([v.flagged for v in each])
        first = np.where(flagged.any(axis=0), flagged.argmax(axis=0), 0)
        rows = np.arange(len(images))
        scores = np.stack([v.scores for v in each])[first, rows]
        thresholds = np.stack([v.thresholds for v in each])[first, rows]
        predicted = each[0].predicted
        labels = any_flags([v.labels for v in each], predicted, self.poisoned_label)
        return Verdicts(list(images.names), predicted, scores, thresholds, labels, self.poisoned_label)


def load_defenses(paths: list[str | Path]) -> Calibration | AnyOf:
    """One calibration, or several combined with :class:`AnyOf`."""
    parts = [Calibration.load(p) for p in paths]
    return parts[0] if len(parts) == 1 else AnyOf(parts)


def calibrate(
    net: BadNet,
    clean: ImageSet,
    scaling: str = "1/255",
    detector: Detector | None = None,
    method: str = DEFAULT_METHOD,
    frr: float = DEFAULT_FRR,
    min_samples: int | None = None,
    sample: int | None = None,
) -> Job[Calibration]:
    """Learn per-class thresholds for ``detector`` (default: top-1 confidence) on clean data.
    ``min_samples`` None: :func:`default_min_samples`. ``sample``: calibrate on at most this
    many of the clean images, drawn at random (seeded); None: :func:`sample_size`; 0: all."""
    detector = detector or make_detector("confidence")
    check_options(method, frr, min_samples)  # before the long pass, not after
    check_sample(sample)
    if min_samples is None:
        min_samples = default_min_samples(method, frr)
    total = len(clean)
    limit = sample_size(method, frr) if sample is None else sample
    if limit and total > limit:
        clean = clean.subset(np.sort(np.random.default_rng(SAMPLE_SEED).choice(total, limit, replace=False)))
    yield from detector.fit(net, clean, scaling)
    scores = yield from detector.score(net, clean, scaling)
    thresholds, counts, pooled, pooled_threshold = fit_thresholds(
        scores.values, scores.predicted, net.num_classes, method, frr, min_samples
    )
    return Calibration(
        detector=detector.name,
        detector_params=detector.params(),
        model_path=str(net.path),
        model_sha256=net.sha256,
        scaling=scaling,
        num_classes=net.num_classes,
        method=method,
        frr=frr,
        min_samples=min_samples,
        thresholds=thresholds,
        counts=counts,
        pooled=pooled,
        pooled_threshold=pooled_threshold,
        data={"source": clean.source, "n": len(clean), "of": total, "digest": clean.digest,
              "frr_interval": list(frr_interval(len(clean), method, frr)) if len(clean) else None},
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        detector_state=detector.state(),
    )


def check_calibration_output(path: str | Path) -> Path:
    """Fail before any long work if a calibration cannot be written to ``path``."""
    return check_output(path, lambda p: is_json_of_kind(p, FILE_KIND), "calibration file")
