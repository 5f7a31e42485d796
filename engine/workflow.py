"""What a user does, as the CLI and the window both do it: open a model and its sets, calibrate,
check images, compare detectors, fine-prune, load a defense. Plain values in, engine objects or
generators out; the CLI prints what they return, the window's controllers run them in its worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import data_io
from engine.calibration import Calibration, calibrate, check_frr, check_options, load_defenses
from engine.data_io import ImageSet, PoisonedSet
from engine.detectors import DETECTORS, Detector, Scores, detector_class, make_detector
from engine.errors import InputError
from engine.model_io import BadNet, load_badnet
from engine.progress import Job, Progress
from engine.scoring import predict, resolve_scaling

CLEAN = "clean"
POISONED = "poisoned"
VERDICT_SOURCES = ("calibration", "any", "repaired")  # the active detector, any calibrated one, G
# What a user gets without choosing: the detector and target false-rejection rate that catch the
# triggers measured (docs/detectors.md, "Calibration"); the founding confidence detector stays one choice away.
DEFAULT_DETECTOR = "combined"
DEFAULT_FRR = 0.05


# --- opening files ----------------------------------------------------------------------


def open_model(path: str | Path, trust: bool = False) -> BadNet:
    return load_badnet(Path(path), trust=trust)


def check_target(net: BadNet, target, source: str | Path | None = None) -> int:
    """An attack's target must be a class of the model."""
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < net.num_classes:
        what = f"target {target}" if source is not None else f"--target {target}"
        raise InputError(source, f"{what} is not a class of this model (0..{net.num_classes - 1})")
    return int(target)


def fit_to_model(images: ImageSet, net: BadNet) -> ImageSet:
    """The set at the model's input size (a warning names the source when it is resized), with
    labels checked against the model's classes."""
    data_io.check_labels_in_range(images, net.num_classes)
    return images.resized(net.input_shape[:2])


def fit_sets(poisoned: list[PoisonedSet], net: BadNet) -> list[PoisonedSet]:
    """Poisoned sets fitted to the model, their targets checked."""
    return [PoisonedSet(fit_to_model(p.images, net), check_target(net, p.target, p.images.source)) for p in poisoned]


def read_set(path: str | Path, net: BadNet | None = None) -> ImageSet:
    """Any image source, sized for ``net`` and its labels checked, when a model is given."""
    images = data_io.read(path, size=None if net is None else net.input_shape[:2])
    return images if net is None else fit_to_model(images, net)


def read_images(paths: list[str | Path], net: BadNet) -> ImageSet:
    images = data_io.read_many([Path(p) for p in paths], size=net.input_shape[:2])
    return fit_to_model(images, net)


def open_poisoned(net: BadNet, path: str | Path, target: int) -> PoisonedSet:
    check_target(net, target, path)
    return PoisonedSet(read_set(path, net), int(target))


def open_sets(net: BadNet, clean: str | Path, poisoned: list[tuple[Path, int]]) -> tuple[ImageSet, list[PoisonedSet]]:
    for path, target in poisoned:  # every target before reading any data
        check_target(net, target, path)
    return read_set(clean, net), [open_poisoned(net, path, target) for path, target in poisoned]


def choose_scaling(net: BadNet, scaling: str, labelled: ImageSet | None) -> Job[tuple[str, str]]:
    """(scaling, reason): as asked, or for ``auto`` the one with higher accuracy on labelled data."""
    if scaling == "auto" and labelled is not None and labelled.labels is None:
        labelled = None
    return (yield from resolve_scaling(net, scaling, labelled))


# --- options ------------------------------------------------------------------------------


def parse_numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise InputError(None, f"{option} {text!r}: give numbers separated by commas") from None
    if not values:
        raise InputError(None, f"{option} {text!r} is empty")
    if not all(np.isfinite(values)):
        raise InputError(None, f"{option} {text!r}: give finite numbers")
    return values


def parse_frrs(text: str, option: str = "--frr") -> tuple[float, ...]:
    """False-rejection rates given in percent, as shares."""
    values = parse_numbers(text, option)
    for v in values:
        if not 0 <= v < 100:
            raise InputError(None, f"{option} {text!r}: each rate must be a percentage in [0, 100)")
    return tuple(v / 100.0 for v in values)


def parse_detector_names(text: str, option: str = "--detectors") -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise InputError(None, f"{option} {text!r}: name at least one detector ({', '.join(DETECTORS)})")
    for n in names:
        detector_class(n)
    return list(dict.fromkeys(names))


def detector_params(names: list[str], given: dict[str, object]) -> dict[str, dict]:
    """Per chosen detector, the settings given by name (``{"blends": 16}``). A setting of a
    member of a chosen combining detector (one with a ``members`` setting) goes to that member. A
    setting that no chosen detector or member has is an error naming the detectors that do."""
    out = {n: {} for n in names}
    members = {}
    for n in names:
        member_setting = next((s for s in DETECTORS[n].settings if s.name == "members"), None)
        if member_setting is not None:
            chosen_members = given.get("members") or member_setting.default
            members[n] = member_setting.check(chosen_members, DETECTORS[n].title)
    for key, value in given.items():
        if value is None:
            continue
        owners = [n for n, cls in DETECTORS.items() if any(s.name == key for s in cls.settings)]
        chosen = [n for n in owners if n in names]
        via = [(c, m) for c, ms in members.items() for m in ms if m in owners]
        if not chosen and not via:
            option = "--" + key.replace("_", "-")
            raise InputError(None, f"{option} is a setting of {', '.join(DETECTORS[n].title for n in owners)}; "
                             f"add that detector")
        for n in chosen:
            out[n][key] = value
        for combiner, member in via:
            out[combiner].setdefault("member_params", {}).setdefault(member, {})[key] = value
    return out


def make_detectors(names: list[str], params: dict[str, dict] | None = None) -> list[Detector]:
    params = params or {}
    return [make_detector(n, params.get(n)) for n in names]


# --- calibration ------------------------------------------------------------------------


def calibrate_job(net: BadNet, clean: ImageSet, scaling: str, detector: Detector, method: str = "quantile",
                  frr: float = DEFAULT_FRR, min_samples: int | None = None) -> Job[tuple[Calibration, str]]:
    """Resolve the input scaling, fit and calibrate ``detector``: (calibration, scaling reason)."""
    check_options(method, frr, min_samples)
    clean = fit_to_model(clean, net)
    chosen, reason = yield from choose_scaling(net, scaling, clean)
    cal = yield from calibrate(net, clean, chosen, detector, method=method, frr=frr, min_samples=min_samples)
    return cal, reason


def load_defense(calibrations: list[str | Path] | None = None, repaired: str | Path | None = None,
                 model: str | Path | None = None, trust: bool = False, scale: str | None = None,
                 on_model=None, nplus1: str | Path | None = None):
    """The calibration(s) or repaired network named, and the BadNet it defends (``model`` may point
    at the BadNet if it moved; its fingerprint must match). Several calibrations are combined:
    an image is flagged when any flags it. ``nplus1``: a hand-made N+1 network whose last class
    means poisoned, judging beside ``model`` or, without it, on its own (it is then the model).
    ``on_model(path)`` is told before a model loads."""
    from engine.repairs.bundle import RepairedNet

    if nplus1 is not None:
        if scale == "auto":
            raise InputError(nplus1, "give the N+1 network's input scaling (--scale 1/255 or raw), not auto")
        badnet = None
        if model is not None:
            if on_model is not None:
                on_model(Path(model))
            badnet = open_model(model, trust)
        if on_model is not None:
            on_model(Path(nplus1))
        defense = RepairedNet.hand_made_nplus1(nplus1, scale or "1/255", badnet, trust)
        return defense, badnet if badnet is not None else defense.repaired
    if repaired is not None:
        defense, source = RepairedNet.load(repaired), repaired
    elif calibrations:
        defense, source = load_defenses(list(calibrations)), calibrations[0]
    else:
        raise InputError(None, "give a calibration or a repaired network")
    path = Path(model) if model else Path(defense.model_path)
    if on_model is not None:
        on_model(path)
    net = open_model(path, trust)
    defense.check_model(net)
    if repaired is not None:
        if on_model is not None:
            on_model(Path(defense.repaired_path))
        defense.load_repaired(trust=trust)
    if scale not in (None, defense.scaling):
        raise InputError(source, f"was made with input scaling {defense.scaling}, not {scale}")
    return defense, net


# --- scores of whole sets (histograms) -------------------------------------------------


@dataclass(frozen=True)
class SetScores:
    """Scores of one loaded set under one detector."""

    name: str
    kind: str  # CLEAN or POISONED
    target: int | None
    scores: Scores


def score_sets(net: BadNet, cal: Calibration, clean: ImageSet | None, poisoned: list[PoisonedSet]) -> Job[list[SetScores]]:
    """The clean set's and each poisoned set's scores under ``cal``'s detector (cached passes)."""
    detector = cal.make_detector()
    out = []
    if clean is not None:
        out.append(SetScores(CLEAN, CLEAN, None, (yield from detector.score(net, fit_to_model(clean, net), cal.scaling))))
    for p in poisoned:
        scores = yield from detector.score(net, fit_to_model(p.images, net), cal.scaling)
        out.append(SetScores(p.name, POISONED, p.target, scores))
    return out


# --- checking images --------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedImage:
    """One checked image: its pixels, the network's class, its top-1 confidence and every
    calibrated detector's score."""

    name: str
    image: np.ndarray
    predicted: int
    confidence: float
    scores: dict  # detector name -> score, for every calibrated detector
    label: int | None  # from the file name or data set, when it carries one
    repaired: int | None = None  # B''s class, when a repaired network G is loaded
    classes: dict = field(default_factory=dict)  # detector name -> the class it judged, where not `predicted`


def check_images(net: BadNet, images: ImageSet, scaling: str, calibrations: dict[str, Calibration],
                 repaired=None) -> Job[list[CheckedImage]]:
    """Every calibrated detector's score for each image (each with its calibration's scaling),
    the top-1 confidence always, and B''s class when a repaired network is given."""
    images = fit_to_model(images, net)
    conf = yield from predict(net, images, scaling)
    scores = [{} for _ in range(len(images))]
    classes = [{} for _ in range(len(images))]
    for name, cal in calibrations.items():
        cal.check_model(net)
        if name == "confidence" and cal.scaling == scaling and not cal.detector_params.get("fine_tune_epochs"):
            values, judged = conf.confidences, conf.labels
        else:
            scored = yield from cal.make_detector().score(net, images, cal.scaling)
            values, judged = scored.values, scored.predicted
        for row, own, v, c, b in zip(scores, classes, values, judged, conf.labels):
            row[name] = float(v)
            if int(c) != int(b):  # a detector that judges with another network (a fine-tuned copy)
                own[name] = int(c)
    if repaired is not None:
        b_prime = [int(c) for c in (yield from predict(repaired.load_repaired(), images, repaired.scaling)).labels]
    else:
        b_prime = [None] * len(images)
    labels = images.labels if images.labels is not None else [None] * len(images)
    return [
        CheckedImage(name, img, int(c), float(p), s, None if lab is None else int(lab), bp, own)
        for name, img, c, p, s, lab, bp, own in zip(images.names, images.images, conf.labels, conf.confidences,
                                                    scores, labels, b_prime, classes)
    ]


def check_paths(net: BadNet, paths: list[Path], scaling: str, calibrations: dict[str, Calibration],
                repaired=None) -> Job[tuple[list[CheckedImage], list[str]]]:
    """Read and check each path on its own: (rows, one-line problems and warnings)."""
    rows, problems = [], []
    for i, path in enumerate(paths):
        yield Progress(i, len(paths), f"reading {path.name}")
        try:
            images = read_set(path, net)
        except InputError as err:
            problems.append(str(err))
            continue
        problems.extend(images.warnings)
        rows.extend((yield from check_images(net, images, scaling, calibrations, repaired)))
    yield Progress(len(paths), len(paths), "checked")
    return rows, problems


@dataclass(frozen=True)
class RowVerdict:
    """One defense's word on one image: score against threshold, and the label in [0, N]."""

    score: float | None
    threshold: float | None
    label: int | None
    poisoned_label: int | None

    @property
    def ready(self) -> bool:
        return self.label is not None

    @property
    def poisoned(self) -> bool:
        return self.label is not None and self.label == self.poisoned_label


NO_VERDICT = RowVerdict(None, None, None, None)


@dataclass
class VerdictRules:
    """The rules that turn a checked image's scores into verdicts, for every loaded defense."""

    calibrations: dict[str, Calibration] = field(default_factory=dict)
    active: str | None = None  # the detector whose calibration is shown and edited
    repaired: object | None = None  # RepairedNet
    source: str = "calibration"  # see VERDICT_SOURCES

    def detector(self, row: CheckedImage, name: str) -> RowVerdict:
        """One calibrated detector; the score alone when it is not calibrated."""
        cal = self.calibrations.get(name)
        score = row.confidence if name == "confidence" and name not in row.scores else row.scores.get(name)
        if cal is None or score is None:
            return RowVerdict(score, None, None, None)
        judged = row.classes.get(name, row.predicted)
        label = int(cal.labels(judged, score))
        return RowVerdict(score, float(cal.thresholds[judged]), label, cal.poisoned_label)

    def g(self, row: CheckedImage) -> RowVerdict:
        """The repaired network's verdict (G: N where B and B' disagree; N+1: B''s own answer)."""
        if self.repaired is None or row.repaired is None:
            return NO_VERDICT
        passes = float(self.repaired.passes(row.predicted, row.repaired))
        return RowVerdict(passes, 0.5, int(self.repaired.labels(row.predicted, row.repaired)),
                          self.repaired.poisoned_label)

    def any(self, row: CheckedImage) -> RowVerdict:
        """N when any calibrated detector flags the image."""
        from engine.calibration import any_flags

        each = [self.detector(row, d) for d in self.calibrations]
        each = [v for v in each if v.ready]
        if not each:
            return NO_VERDICT
        n = each[0].poisoned_label
        first = next((v for v in each if v.poisoned), each[0])
        label = int(any_flags([v.label for v in each], row.predicted, n))
        return RowVerdict(first.score, first.threshold, label, n)

    def verdict(self, row: CheckedImage) -> RowVerdict:
        """The verdict of the chosen source: the active detector, any detector, or G."""
        if self.source == "repaired":
            return self.g(row)
        if self.source == "any":
            return self.any(row)
        if self.active is None or self.active not in self.calibrations:
            return NO_VERDICT
        return self.detector(row, self.active)

    @property
    def source_name(self) -> str:
        return {"calibration": self.active or "", "any": "any", "repaired": "G"}[self.source]


def checked_csv(rows: list[CheckedImage], rules: VerdictRules) -> tuple[list[str], list[list]]:
    """(header, rows) of the image-check CSV: every calibrated detector's columns."""
    detectors = [d for d in DETECTORS if d in rules.calibrations]
    header = ["path", "predicted", "confidence"]
    for d in detectors:
        header += [f"{d}_score", f"{d}_threshold", f"{d}_label"]
    header += ["verdict_label", "poisoned", "verdict_by", "g_label", "file_label"]

    def cell(value, fmt="{:.6f}"):
        return "" if value is None else fmt.format(value)

    out = []
    for r in rows:
        v = rules.verdict(r)
        row = [r.name, r.predicted, f"{r.confidence:.6f}"]
        for d in detectors:
            dv = rules.detector(r, d)
            row += [cell(dv.score), cell(dv.threshold), cell(dv.label, "{}")]
        row += [cell(v.label, "{}"), "" if not v.ready else int(v.poisoned), rules.source_name,
                cell(rules.g(r).label, "{}"), cell(r.label, "{}")]
        out.append(row)
    return header, out


# --- comparison and fine-pruning --------------------------------------------------------


def compare_job(net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], detectors: list[Detector], scaling: str,
                frrs: tuple[float, ...]):
    from engine.compare import compare

    if not poisoned:
        raise InputError(None, "add a poisoned set (with its target) to compare detectors on")
    for f in frrs:
        check_frr(f)
    clean = fit_to_model(clean, net)
    sets = fit_sets(poisoned, net)
    chosen, _ = yield from choose_scaling(net, scaling, clean)
    return (yield from compare(net, clean, sets, detectors, chosen, tuple(frrs)))


def repairs_job(net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], repairs: list, scaling: str):
    """The BadNet undefended and each repaired network (RepairedNet) on the same sets: DefenseRows."""
    from engine.compare import repair_rows

    if not poisoned:
        raise InputError(None, "add a poisoned set (with its target) to compare defenses on")
    clean = fit_to_model(clean, net)
    sets = fit_sets(poisoned, net)
    for g in repairs:
        g.check_model(net)
    chosen, _ = yield from choose_scaling(net, scaling, clean)
    return (yield from repair_rows(net, clean, sets, list(repairs), chosen))


# --- the trigger scan, unlearning and per-image explanations ---------------------------------


def scan_job(net: BadNet, clean: ImageSet, scaling: str, settings=None):
    """The whole-model trigger scan on ``clean`` (labels not needed): a ScanResult."""
    from engine.scan import ScanSettings, check_clean, scan

    clean = fit_to_model(clean, net)
    check_clean(clean)
    chosen, _ = yield from choose_scaling(net, scaling, clean)
    return (yield from scan(net, clean, chosen, settings or ScanSettings()))


def load_scan(path: str | Path, net: BadNet | None = None):
    """A scan folder written by ``scan``; checked against ``net`` when given."""
    from engine.scan import ScanResult

    result = ScanResult.load(path)
    if net is not None:
        result.check_model(net)
        if tuple(net.input_shape[:2]) != tuple(result.image_shape):
            raise InputError(path, f"triggers are {result.image_shape}, the model takes {net.input_shape[:2]}")
    return result


def sample_images(images: ImageSet, limit: int, seed: int = 0) -> ImageSet:
    """At most ``limit`` images drawn at random without replacement (all when ``limit`` is 0)."""
    if not limit or len(images) <= limit:
        return images
    idx = np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
    return images.subset(idx)


def stamp_and_count(net: BadNet, clean: ImageSet, result, label: int, limit: int | None = None) -> Job[dict]:
    """Stamp ``label``'s reversed trigger (a ScanResult's) on the clean faces the network gives
    another class and count how many it sends to ``label``; with ``limit``, a few faces of
    different classes, kept with their stamped copies for a preview."""
    from engine.scoring import predict

    trigger = result.triggers[label]
    clean = fit_to_model(clean, net)
    before = (yield from predict(net, clean, result.scaling)).labels  # cached: the clean set was predicted before
    others = np.flatnonzero(before != label)
    if limit is not None:  # a few faces of different classes, for the preview
        _, first = np.unique(before[others], return_index=True)
        others = others[np.sort(first)][:limit] if len(first) >= limit else others[:limit]
    stamped = trigger.stamp(clean.images[others])
    after = np.zeros(0, int)
    if len(others):
        stamped_set = ImageSet(stamped, None, [f"stamped[{i}]" for i in others], f"{clean.source} stamped")
        after = (yield from predict(net, stamped_set, result.scaling)).labels
    return {
        "label": label,
        "n": len(others),
        "flipped": int(np.sum(after == label)),
        "faces": clean.images[others] if limit is not None else None,
        "stamped": stamped if limit is not None else None,
        "before": before[others].tolist(),
        "after": after.tolist(),
    }


MAX_EXPLAINED = 50


def explain_images(net: BadNet, images: ImageSet, scaling: str) -> Job:
    """A sensitivity map per image (see engine.explain): a list of Explanation."""
    from engine.explain import explain

    images = fit_to_model(images, net)
    if len(images) > MAX_EXPLAINED:
        raise InputError(images.source, f"has {len(images)} images; explain at most {MAX_EXPLAINED} at a time")
    out = []
    for i, img in enumerate(images.images):
        yield Progress(i, len(images), "explaining")
        out.append(explain(net, img, scaling))
    yield Progress(len(images), len(images), "explained")
    return out


def write_explanations(path: str | Path, explanations: list, scan=None) -> Path:
    """One PNG: a row per image (image | heat | the scan's mask, when it flagged the predicted class)."""
    from PIL import Image

    from engine.explain import explanation_sheet
    from engine.files import write_png

    rows = []
    for e in explanations:
        trigger = scan.triggers[e.predicted] if scan is not None and e.predicted in scan.flagged else None
        rows.append(explanation_sheet(e, None if trigger is None else trigger.mask))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    return write_png(path, lambda tmp: Image.fromarray(sheet).save(tmp))
