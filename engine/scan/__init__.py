"""The trigger scan: is this network backdoored, which classes are targets, what is the trigger?

Two statistics per class, independent in what they rest on, combined under one false-alarm
budget (:mod:`engine.scan.evidence`):

1. **Largest margin** (MM-BD, Wang et al., IEEE S&P 2024; :mod:`engine.scan.margin`), data-free: for
   every class, the largest ``z_c - max_{j != c} z_j`` a gradient ascent from a random image
   reaches in a fixed number of steps. A backdoor's shortcut makes its target's margin an
   outlier among all classes. Every class is measured the same way, so the other classes are
   the null.
2. **Smallest reversed trigger** (Neural Cleanse, Wang et al., IEEE S&P 2019), on the user's
   clean faces: for the candidates (the classes with the largest margins, and those the clean
   faces already lean to, K-Arm's logit pre-selection, Shen et al., ICML 2021), the smallest mask
   and pattern that send the faces to the class, by Neural Cleanse's schedule (no size penalty
   until the reversed trigger flips 99% of its batch, then the penalty raised while it does and
   lowered while it does not; the smallest mask that worked is kept). All candidates are
   optimised in one batch (:mod:`engine.scan.trigger_opt`). A target's mask is anomalously small
   among the other candidates, chosen the same way.

The verdict is one of *backdoor: classes ...*, *no evidence of a backdoor*, or *inconclusive*
(why: a null that cannot be estimated, evidence near the threshold, too few clean faces). The
reversed triggers are tested on held-out clean faces the optimisation never saw. Results are
written atomically into a folder: ``scan.json`` (verdict and ranked table), ``triggers.npz``
(masks, patterns and the statistics, what unlearning and the window use) and PNGs of each
flagged class's mask, pattern and mask x pattern.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InputError, first_line
from engine.io.datasets import ImageSet, npz_member_shape
from engine.io.files import check_readable_file, read_json_file, staged_folder, write_json_atomic
from engine.io.fitting import fit_to_model
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scan import evidence as ev
from engine.scan import stats
from engine.scan.margin import MAX_BATCH as MARGIN_BATCH
from engine.scan.margin import max_margins
from engine.scan.stats import rounded
from engine.scan.trigger_opt import ChunkOptimizer, new_chunk, stamp
from engine.scoring import SCALINGS, choose_scaling, forward, probabilities, to_model_input
from engine.settings import Setting, apply_settings

FILE_KIND = "badnet-inspector/scan"
FILE_VERSION = 2
MIN_CLEAN = 4
MAX_CLASSES = 100_000
MAX_SHAPES = 8  # flagged classes whose trigger shape is drawn
SCAN_IMAGES = 300  # clean faces a scan uses unless told: refinement draws 10 a step, so more cost little
PRUNED = -6.0  # tanh-space value of a switched-off mask pixel (mask 6e-6)
STAGES = ("margins", "refining", "testing", "done")


@dataclass(frozen=True)
class ScanSettings:
    """How the trigger scan spends its work: margin steps and starts, candidates, mask steps, budget."""
    margin_steps: int = 20  # Adam steps of the margin ascent, the same for every class
    margin_restarts: int = 2  # random starts per class, their margins averaged
    margin_candidates: int = 24  # classes with the largest margins refined
    prior_candidates: int = 12  # classes the clean faces lean to most, refined too
    refine_steps: int = 150
    refine_min_steps: int = 60
    refine_images: int = 10  # clean images per class per refinement step
    patience: int = 40  # refinement stops when no best mask shrank by 1% for this many steps
    size_weight: float = 10.0  # lambda once the attack works, on the mask's mean (its share of the image)
    success: float = 0.99  # the attack success a reversed trigger must reach in its batch
    holdout: float = 1 / 3
    learning_rate: float = 0.1
    shape_steps: int = 150  # flagged classes: steps of the smooth inversion that shows the trigger's shape
    shape_budget: float = 0.15  # share of the image the shape's mask may cover unpenalised
    prune_below: float = 0.02  # every 10 steps, mask pixels below this are switched off (0: never)
    alpha: float = ev.ALPHA  # family-wise false-alarm budget
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict) -> ScanSettings:
        """Settings from the user's values of :data:`SETTINGS` (names as keys; absent or None: the
        default), each checked by its declaration, the rest at their defaults."""
        given = types.SimpleNamespace()
        apply_settings(given, SETTINGS, params, "Trigger scan")
        settings = cls(**vars(given))
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("margin_steps", "margin_restarts", "shape_steps", "refine_steps", "refine_images", "patience"):
            if getattr(self, name) < 1:
                raise InputError(None, f"scan setting {name} must be at least 1")
        if self.margin_candidates + self.prior_candidates < 1:
            raise InputError(None, "scan settings: at least one candidate class must be refined")
        if not 0 < self.alpha < 1:
            raise InputError(None, f"scan setting alpha must be between 0 and 1, not {self.alpha:g}")
        if not 0 < self.holdout < 1:
            raise InputError(None, f"scan setting holdout must be between 0 and 1, not {self.holdout:g}")


# The scan's user-visible settings: the CLI's options and the window's form are built from them.
SETTINGS = (
    Setting("margin_candidates", "candidates", int, ScanSettings.margin_candidates, 0, 1283,
            "classes with the largest margins whose triggers are reversed, besides those the clean faces lean "
            "to most", flag="candidates"),
    Setting("prior_candidates", "leaning candidates", int, ScanSettings.prior_candidates, 0, 1283,
            "classes the clean faces lean to most whose triggers are reversed too"),
    Setting("refine_steps", "refinement steps", int, ScanSettings.refine_steps, 1, 10_000,
            "steps of the trigger refinement at most", flag="steps"),
    Setting("margin_steps", "margin steps", int, ScanSettings.margin_steps, 1, 1000,
            "Adam steps of every class's margin ascent"),
    Setting("margin_restarts", "margin starts", int, ScanSettings.margin_restarts, 1, 16,
            "random starts per class, their margins averaged"),
    Setting("alpha", "false-alarm budget", float, ScanSettings.alpha, 0.0, 1.0,
            "family-wise: the chance of flagging any class of a clean network", low_open=True, high_open=True,
            rate=True, flag="false-alarm"),
)


@dataclass
class ReversedTrigger:
    """One class's reversed trigger: ``mask`` (H, W) and ``pattern`` (H, W, 3), both in [0, 1]."""

    label: int
    mask: np.ndarray
    pattern: np.ndarray
    reached: bool  # did it ever flip >= success of a batch (else: the last mask, for show)
    attack_success: float | None = None  # on held-out clean images, other classes only
    anomaly: float | None = None  # Neural Cleanse's anomaly index among the other candidates
    shape_mask: np.ndarray | None = None  # flagged classes: the trigger's shape (smooth inversion)
    shape_pattern: np.ndarray | None = None

    @property
    def size(self) -> float:
        """The mask's share of the image (its L1 norm / pixels)."""
        return float(np.mean(self.mask))

    @property
    def l1(self) -> float:
        return float(np.sum(self.mask))

    @property
    def log_size(self) -> float:
        """The statistic: log of the mask's share; inf for a class no mask reached."""
        return math.log(max(self.size, 1e-12)) if self.reached else math.inf

    def stamp(self, images: np.ndarray) -> np.ndarray:
        return stamp(images, self.mask, self.pattern)


@dataclass
class ScanResult:
    """A trigger scan's answer for one model: per-class evidence, reversed triggers, the verdict;
    saved as a folder (scan.json and triggers.npz)."""
    model_path: str
    model_sha256: str
    scaling: str
    num_classes: int
    image_shape: tuple[int, int]
    n_clean: int
    n_holdout: int
    margins: np.ndarray  # (C,) largest margin reached per class; NaN until measured
    prior: np.ndarray  # (C,) mean log probability of the class over clean faces of other classes
    triggers: dict[int, ReversedTrigger]  # refined classes
    alpha: float = ev.ALPHA
    evidence: dict[int, ev.ClassEvidence] = field(default_factory=dict)
    verdict: ev.ScanVerdict | None = None
    seconds: float = 0.0
    stage: str = "done"  # one of STAGES
    notes: list[str] = field(default_factory=list)
    extra: dict[str, dict[int, float]] = field(default_factory=dict)  # a statistic's own measured values

    def snapshot(self) -> ScanResult:
        """A copy for another thread to read while the scan goes on (arrays and dicts copied)."""
        return dataclasses.replace(self, margins=self.margins.copy(), prior=self.prior.copy(),
                                   triggers=dict(self.triggers), evidence=dict(self.evidence),
                                   notes=list(self.notes), extra={k: dict(v) for k, v in self.extra.items()})

    def judge(self) -> None:
        """Evidence per class and the verdict, from every registered statistic's values."""
        values = {s.name: s.values(self) for s in stats.active()}
        self.evidence, self.verdict = ev.judge_values(values, self.num_classes, self.n_clean, self.alpha)
        for c, t in self.triggers.items():
            t.anomaly = self.evidence[c].mask_z if c in self.evidence else None

    @property
    def flagged(self) -> list[int]:
        """Classes the verdict names as backdoor targets, strongest evidence first."""
        return list(self.verdict.classes) if self.verdict is not None else []

    @property
    def backdoored(self) -> bool:
        return bool(self.flagged)

    @property
    def outcome(self) -> str | None:
        """"backdoor", "clean", "inconclusive", or None while the scan runs."""
        return self.verdict.outcome if self.verdict is not None else None

    def ranking(self) -> list[int]:
        """Flagged classes, then the rest by combined p-value, then by margin (largest first)."""
        flagged = self.flagged
        margins = np.where(np.isfinite(self.margins), self.margins, -np.inf)

        def key(c):
            e = self.evidence.get(c)
            return (e.combined if e is not None else 1.0, -margins[c], c)

        rest = sorted((c for c in self.evidence if c not in flagged), key=key)
        seen = set(flagged) | set(rest)
        tail = [int(c) for c in np.argsort(-margins, kind="stable") if int(c) not in seen]
        return flagged + rest + tail

    def rows(self) -> list[dict]:
        """The ranked table: one dict per class (refined ones carry the mask and its index)."""
        out = []
        flagged = set(self.flagged)
        for rank, c in enumerate(self.ranking(), 1):
            t = self.triggers.get(c)
            e = self.evidence.get(c)
            row = {"rank": rank, "class": c, "prior": rounded(self.prior[c], 3), "refined": t is not None,
                   "reached": None if t is None else t.reached}
            for s in stats.active():  # each statistic's own columns
                row.update(s.row(self, c, e))
            out.append({
                **row,
                "p": None if e is None else rounded(e.combined, 8),
                "support": [] if e is None else list(e.support),
                "attack_success": None if t is None else rounded(t.attack_success),
                "flagged": c in flagged,
            })
        return out

    def summary(self) -> str:
        if self.verdict is None:
            return f"scan not finished ({self.stage})"
        line = self.verdict.line(self.evidence)
        if self.verdict.outcome == "backdoor":
            parts = []
            for c in self.flagged:
                t = self.triggers.get(c)
                if t is not None:
                    parts.append(f"class {c}: mask {100 * t.size:.1f}% of the image, flips "
                                 f"{_pct(t.attack_success)} of held-out clean faces")
            if parts:
                line += " — " + "; ".join(parts)
        return line

    def to_dict(self) -> dict:
        return {
            "kind": FILE_KIND,
            "version": FILE_VERSION,
            "model": {"path": self.model_path, "sha256": self.model_sha256},
            "scaling": self.scaling,
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "n_clean": self.n_clean,
            "n_holdout": self.n_holdout,
            "alpha": self.alpha,
            "verdict": None if self.verdict is None else {
                "outcome": self.verdict.outcome, "classes": self.flagged, "reasons": self.verdict.reasons,
                "line": self.summary()},
            "flagged": self.flagged,
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
            "extra": {name: {str(c): rounded(v, 8) for c, v in values.items()} for name, values in self.extra.items()},
            "classes": self.rows(),
        }

    @property
    def pixels(self) -> int:
        return int(self.image_shape[0] * self.image_shape[1])

    # --- files -------------------------------------------------------------------------

    def save(self, outdir: str | Path) -> Path:
        """Write scan.json, triggers.npz and the flagged classes' PNGs into ``outdir``, atomically."""

        outdir = Path(outdir)
        with staged_folder(outdir, is_scan_output, "trigger-scan results") as stage:
            write_json_atomic(stage / "scan.json", self.to_dict())
            labels = sorted(self.triggers)
            h, w = self.image_shape
            np.savez_compressed(
                stage / "triggers.npz",
                labels=np.asarray(labels, dtype=np.int64),
                masks=_stack([self.triggers[c].mask for c in labels], (h, w)),
                patterns=_stack([self.triggers[c].pattern for c in labels], (h, w, 3)),
                reached=np.asarray([self.triggers[c].reached for c in labels], dtype=bool),
                attack_success=np.asarray([_nan(self.triggers[c].attack_success) for c in labels], np.float64),
                margins=self.margins.astype(np.float64),
                prior=self.prior.astype(np.float64),
            )
            shaped = [c for c in labels if self.triggers[c].shape_mask is not None]
            np.savez_compressed(
                stage / "shapes.npz",
                labels=np.asarray(shaped, dtype=np.int64),
                masks=_stack([self.triggers[c].shape_mask for c in shaped], (h, w)),
                patterns=_stack([self.triggers[c].shape_pattern for c in shaped], (h, w, 3)),
            )
            for c in self.flagged or [c for c in self.ranking() if c in self.triggers][:1]:
                save_trigger_pngs(self.triggers[c], stage)
        return outdir

    @classmethod
    def load(cls, folder: str | Path) -> ScanResult:
        """A scan folder (or its scan.json) written by :meth:`save`, checked; the verdict is
        worked out again from the stored statistics, not taken from the file."""
        folder = Path(folder)
        if folder.name == "scan.json":
            folder = folder.parent
        elif folder.is_dir() and not (folder / "scan.json").exists():
            raise InputError(folder, "not a trigger-scan folder (no scan.json in it; 'scan -o DIR' writes one)")
        raw = read_json_file(folder / "scan.json", FILE_KIND, "trigger-scan")
        npz = check_readable_file(folder / "triggers.npz", "trigger-scan data file")
        shapes_npz = check_readable_file(folder / "shapes.npz", "trigger-scan data file")
        if raw.get("version") != FILE_VERSION:
            raise InputError(folder, f"was written by another version of the scan (version {raw.get('version')}, "
                                     f"this one reads {FILE_VERSION}); run the scan again")
        try:
            shape = tuple(int(v) for v in raw["image_shape"])
            num_classes = int(raw["num_classes"])
            if len(shape) != 2 or not all(1 <= v <= 4096 for v in shape) or not 2 <= num_classes <= MAX_CLASSES:
                raise ValueError("image shape or number of classes out of range")
            if str(raw["scaling"]) not in SCALINGS:
                raise ValueError(f"unknown input scaling {raw['scaling']!r}")
            alpha = float(raw["alpha"])
            n_clean, n_holdout = int(raw["n_clean"]), int(raw["n_holdout"])
            if not 0 < alpha < 1 or not 0 <= n_holdout <= n_clean:
                raise ValueError("alpha or image counts out of range")
            with open(npz, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                # every array's size from its header first: nothing absurd is decompressed
                limits = {"labels": num_classes, "masks": num_classes * shape[0] * shape[1],
                          "patterns": 3 * num_classes * shape[0] * shape[1], "reached": num_classes,
                          "attack_success": num_classes, "margins": num_classes, "prior": num_classes}
                for key, limit in limits.items():
                    if np.prod(npz_member_shape(data, key), dtype=float) > limit:
                        raise ValueError(f"'{key}' is larger than {num_classes} classes of {shape} images allow")
                labels = np.asarray(data["labels"], dtype=np.int64)
                masks = np.asarray(data["masks"], dtype=np.float32)
                patterns = np.asarray(data["patterns"], dtype=np.float32)
                reached = np.asarray(data["reached"], dtype=bool)
                success = np.asarray(data["attack_success"], dtype=np.float64)
                margins = np.asarray(data["margins"], dtype=np.float64)
                prior = np.asarray(data["prior"], dtype=np.float64)
            n = len(labels)
            if (masks.shape != (n, *shape) or patterns.shape != (n, *shape, 3) or reached.shape != (n,)
                    or success.shape != (n,) or margins.shape != (num_classes,) or prior.shape != (num_classes,)):
                raise ValueError("arrays of the wrong shape")
            if n and (labels.min() < 0 or labels.max() >= num_classes or len(np.unique(labels)) != n):
                raise ValueError("a class out of range or repeated")
            for a in (masks, patterns):
                if not np.all(np.isfinite(a)) or a.min(initial=0) < 0 or a.max(initial=0) > 1:
                    raise ValueError("masks and patterns must be finite, in [0, 1]")
            if not np.all(np.isfinite(margins)) or np.any(np.abs(margins) > 1e12):
                raise ValueError("margins must be finite")
            if np.any(np.isfinite(success) & ((success < 0) | (success > 1))):
                raise ValueError("attack success out of [0, 1]")
            prior = np.where(np.isfinite(prior), prior, -np.inf)
            triggers = {c: ReversedTrigger(c, masks[i], patterns[i], bool(reached[i]), _float_or_none(success[i]))
                        for i, c in enumerate(labels.tolist())}
            with open(shapes_npz, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                for key, limit in (("labels", n), ("masks", n * shape[0] * shape[1]),
                                   ("patterns", 3 * n * shape[0] * shape[1])):
                    if np.prod(npz_member_shape(data, key), dtype=float) > limit:
                        raise ValueError(f"shapes '{key}' is larger than {n} classes of {shape} images allow")
                shaped = np.asarray(data["labels"], dtype=np.int64)
                shape_masks = np.asarray(data["masks"], dtype=np.float32)
                shape_patterns = np.asarray(data["patterns"], dtype=np.float32)
            if shape_masks.shape != (len(shaped), *shape) or shape_patterns.shape != (len(shaped), *shape, 3):
                raise ValueError("shape arrays of the wrong shape")
            if not set(shaped.tolist()) <= set(triggers):
                raise ValueError("a trigger shape for a class that was not refined")
            for a in (shape_masks, shape_patterns):
                if not np.all(np.isfinite(a)) or a.min(initial=0) < 0 or a.max(initial=0) > 1:
                    raise ValueError("trigger shapes must be finite, in [0, 1]")
            for i, c in enumerate(shaped.tolist()):
                triggers[c].shape_mask, triggers[c].shape_pattern = shape_masks[i], shape_patterns[i]
            result = cls(
                model_path=str(raw["model"]["path"]), model_sha256=str(raw["model"]["sha256"]),
                scaling=str(raw["scaling"]), num_classes=num_classes, image_shape=shape,
                n_clean=n_clean, n_holdout=n_holdout, margins=margins, prior=prior, triggers=triggers,
                alpha=alpha, seconds=float(raw["seconds"]), notes=[str(v) for v in raw.get("notes", [])],
                extra=_extra(raw.get("extra", {}), num_classes),
            )
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, OSError, OverflowError, zipfile.BadZipFile) as err:
            raise InputError(folder, f"damaged trigger-scan results ({first_line(err)})") from None
        result.judge()
        return result

    def check_model(self, net: BadNet) -> None:
        if net.sha256 != self.model_sha256:
            raise InputError(net.path, f"this scan was made for another model (sha256 {self.model_sha256[:12]}…)")


def is_scan_output(folder: Path) -> bool:
    """A folder an earlier scan wrote: scan.json of our kind, and only files named like ours."""
    import re

    from engine.io.files import is_json_of_kind

    ours = re.compile(r"scan\.json|(triggers|shapes)\.npz|class\d+_(mask|pattern|trigger|shape)\.png")
    return is_json_of_kind(folder / "scan.json", FILE_KIND) and all(ours.fullmatch(p.name) for p in folder.iterdir())


def save_trigger_pngs(trigger: ReversedTrigger, folder: Path, zoom: int = 4) -> list[Path]:
    """class<c>_mask.png (grey), _pattern.png, _trigger.png (mask x pattern) and, when drawn,
    _shape.png (the smooth inversion's mask x pattern), enlarged ``zoom`` x."""
    from PIL import Image

    out = []
    m = trigger.mask[..., None]
    pictures = [("mask", np.repeat(m, 3, axis=2)), ("pattern", trigger.pattern), ("trigger", m * trigger.pattern)]
    if trigger.shape_mask is not None:
        pictures.append(("shape", trigger.shape_mask[..., None] * trigger.shape_pattern))
    for name, pixels in pictures:
        img = Image.fromarray(np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8))
        img = img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
        path = folder / f"class{trigger.label}_{name}.png"
        img.save(path)
        out.append(path)
    return out


# --- the scan job ---------------------------------------------------------------------------


def check_clean(clean: ImageSet) -> None:
    """A scan needs at least MIN_CLEAN clean images."""
    if len(clean) < MIN_CLEAN:
        raise InputError(clean.source,
                         f"has {len(clean)} images; a trigger scan needs at least {MIN_CLEAN} clean images")


def scan(net: BadNet, clean: ImageSet, scaling: str, settings: ScanSettings = ScanSettings()) -> Job[ScanResult]:
    """Margins of every class, the candidates' reversed triggers, the held-out test, the verdict.

    Yields :class:`Progress` whose ``partial`` is the :class:`ScanResult` so far (margins first,
    then refined classes as they settle)."""
    settings.check()
    check_clean(clean)
    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    num_classes = net.num_classes
    h, w, _ = net.input_shape
    # An image the network already puts in class c says nothing about reaching c: its own
    # prediction (not its label, which unlabelled data lacks) takes it out of c's loss.
    probs = yield from probabilities(net, clean.images, scaling)
    predicted = probs.argmax(axis=1)
    order = rng.permutation(len(clean))
    n_hold = min(len(clean) - 2, max(1, round(settings.holdout * len(clean))))
    hold, fit = order[:n_hold], order[n_hold:]
    x_fit = clean.images[fit].astype(np.float32) / 255.0
    y_fit = predicted[fit]

    result = ScanResult(str(net.path), net.sha256, scaling, num_classes, (h, w), len(clean), int(n_hold),
                        np.full(num_classes, np.nan), _prior(probs, predicted), {}, settings.alpha,
                        stage="margins")
    margin_total = settings.margin_steps * max(1, -(-num_classes * settings.margin_restarts // MARGIN_BATCH))
    total = margin_total + settings.refine_steps + settings.shape_steps + 2

    def margin_step(step: Progress) -> Progress:
        return Progress(step.done, total, "largest margins (every class)")

    job = max_margins(net, scaling, settings.margin_steps, settings.margin_restarts, seed=settings.seed)
    while True:
        try:
            step = next(job)
        except StopIteration as stop:
            result.margins = np.asarray(stop.value, dtype=np.float64)
            break
        yield margin_step(step)
    yield Progress(margin_total, total, "largest margins (every class)", partial=result.snapshot())

    chosen = _candidates(result.margins, result.prior, settings)
    result.stage = "refining"
    result.notes.append(
        f"margins of all {num_classes} classes ({settings.margin_restarts} x {settings.margin_steps} steps "
        f"each); refined "
        f"{len(chosen)} candidates: the {settings.margin_candidates} largest margins and the "
        f"{settings.prior_candidates} classes the clean faces lean to most")
    triggers = yield from _refine(net, scaling, x_fit, y_fit, np.asarray(chosen), settings, rng,
                                  lambda k, label, fresh: Progress(margin_total + k, total, label,
                                                                   partial=_provisional(result) if fresh else None),
                                  result)
    result.stage = "testing"
    yield Progress(margin_total + settings.refine_steps, total, "testing the reversed triggers")
    _test_on_holdout(net, clean, predicted, hold, scaling, triggers)
    result.triggers = triggers
    for statistic in stats.active():  # statistics that measure something of their own
        yield from statistic.measure(net, clean, scaling, result)
    result.judge()
    yield from _draw_shapes(net, scaling, clean, predicted, result, settings,
                            lambda k, label: Progress(margin_total + settings.refine_steps + 1 + k, total, label))
    result.stage = "done"
    result.seconds = time.perf_counter() - started
    yield Progress(total, total, "scan done", partial=result.snapshot())
    return result


def _draw_shapes(net, scaling, clean: ImageSet, predicted: np.ndarray, result: ScanResult, settings: ScanSettings,
                 progress, max_faces: int = 32) -> Job[None]:
    """The flagged classes' trigger shapes (:func:`engine.scan.trigger_opt.smooth_trigger`), on up to
    ``max_faces`` clean faces the network puts elsewhere."""
    from engine.scan.trigger_opt import smooth_trigger

    flagged = [c for c in result.flagged if c in result.triggers][:MAX_SHAPES]
    for i, c in enumerate(flagged):
        others = np.flatnonzero(predicted != c)[:max_faces]
        if not len(others):
            continue
        x = clean.images[others].astype(np.float32) / 255.0
        job = smooth_trigger(net.model, scaling, x, c, net.outputs_probabilities, settings.shape_budget,
                             steps=settings.shape_steps)
        while True:
            try:
                k = next(job)
            except StopIteration as stop:
                mask, pattern = stop.value
                break
            yield progress((i * settings.shape_steps + k) // len(flagged), f"drawing the shape of class {c}'s trigger")
        result.triggers[c].shape_mask, result.triggers[c].shape_pattern = mask, pattern


def _provisional(result: ScanResult) -> ScanResult:
    """A snapshot judged on the masks refined so far, for the window to show while the scan runs."""
    out = result.snapshot()
    out.judge()
    return out


def _prior(probs: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mean log probability of each class over the clean faces the network puts elsewhere: the
    classes clean faces already lean to (K-Arm's logit-based pre-selection)."""
    logp = np.log(np.clip(probs.astype(np.float64), 1e-30, 1.0))
    own = np.zeros_like(logp, dtype=bool)
    own[np.arange(len(predicted)), predicted] = True
    counts = np.maximum(1, len(predicted) - own.sum(axis=0))
    return np.where(own, 0.0, logp).sum(axis=0) / counts


def _candidates(margins: np.ndarray, prior: np.ndarray, settings: ScanSettings) -> list[int]:
    """The classes to refine: the largest margins and the strongest priors (every class when few)."""
    num_classes = len(margins)
    if num_classes <= settings.margin_candidates + settings.prior_candidates:
        return list(range(num_classes))
    by_margin = np.argsort(-np.where(np.isfinite(margins), margins, -np.inf), kind="stable")
    by_prior = np.argsort(-prior, kind="stable")
    chosen = list(dict.fromkeys([*by_margin[: settings.margin_candidates].tolist(),
                                 *by_prior[: settings.prior_candidates].tolist()]))
    return sorted(int(c) for c in chosen)


def _draw(rng, n: int, slots: int, per: int) -> np.ndarray:
    """(slots, per) image indices, each row without repeats where the set allows."""
    if n >= per:
        return np.argsort(rng.random((slots, n)), axis=1)[:, :per]
    return rng.integers(0, n, (slots, per))


def _refine(net, scaling, x_fit, y_fit, classes: np.ndarray, settings: ScanSettings, rng, progress,
            result: ScanResult) -> Job[dict[int, ReversedTrigger]]:
    """Neural Cleanse's schedule for ``classes``, all in one chunk: the smallest mask that reached
    ``settings.success`` on its batch, per class."""
    h, w = x_fit.shape[1:3]
    k = len(classes)
    opt = ChunkOptimizer(net.model, scaling, k, settings.refine_images, net.input_shape,
                         net.outputs_probabilities, settings.learning_rate)
    state = new_chunk(classes, k, (h, w), rng, 0.0, mask_start=0.5)
    state.lam = np.zeros(k, np.float32)  # no size penalty until the attack works
    opt.load(state)
    best = np.full(k, np.inf)
    best_mask = np.zeros((k, h, w), np.float32)
    best_pattern = np.zeros((k, h, w, 3), np.float32)
    up = np.zeros(k, int)
    down = np.zeros(k, int)
    last_gain = np.zeros(k, int)  # step at which each class's best last shrank by 1%
    for s in range(settings.refine_steps):
        idx = _draw(rng, len(x_fit), k, settings.refine_images)
        _, size, success = opt.step(state, x_fit[idx], (y_fit[idx] != classes[:, None]).astype(np.float32))
        ok = success >= settings.success
        better = ok & (size < best)
        if better.any():
            opt.store(state)
            masks, patterns = state.masks, state.patterns
            # (one Adam step past the judged ones; the held-out test judges what is kept)
            best_mask[better] = masks[better]
            best_pattern[better] = patterns[better]
            last_gain = np.where(better & (size < 0.99 * best), s, last_gain)
            best = np.where(better, size, best)
        lam = state.lam
        lam = np.where((lam == 0) & ok, settings.size_weight, lam)
        up = np.where(ok, up + 1, 0)
        down = np.where(ok, 0, down + 1)
        lam = np.where((lam > 0) & (up >= 5), lam * 1.5, lam)
        lam = np.where((lam > 0) & (down >= 5), lam / 1.5**1.5, lam)
        up = np.where(up >= 5, 0, up)
        down = np.where(down >= 5, 0, down)
        state.lam = lam.astype(np.float32)
        fresh = s % 10 == 9
        if fresh and settings.prune_below > 0 and np.any(lam > 0):
            _prune(opt, state, lam > 0, settings.prune_below)
        if fresh:
            result.triggers = _triggers(classes, best, best_mask, best_pattern, state)
        yield progress(s + 1, f"refining {k} candidate classes", fresh)
        if s + 1 >= settings.refine_min_steps and np.all(s - last_gain >= settings.patience):
            result.notes.append(f"refinement converged after {s + 1} steps")
            break
    return _triggers(classes, best, best_mask, best_pattern, state)


def _prune(opt: ChunkOptimizer, state, active: np.ndarray, below: float) -> None:
    """Switch off the pixels of the ``active`` masks that are nearly off already (< ``below``).

    Adam moves every parameter by about the learning rate per step, so a mask's faint
    background (thousands of pixels at 0.002-0.01 each, through tanh) takes a hundred steps to
    fade and can outweigh a small trigger's few pixels in the mask's L1; pruning it every ten
    steps lets the size reflect the pixels that matter sooner, the same way for every class."""
    opt.store(state)
    masks = state.masks
    off = (masks < below) & active[:, None, None]
    state.mask_param[..., 0][off] = PRUNED
    for moment in state.moments[:2]:  # the mask's Adam moments (first, second)
        moment[..., 0][off] = 0.0
    opt.load(state)


def _triggers(classes, best, best_mask, best_pattern, state) -> dict[int, ReversedTrigger]:
    out = {}
    masks = patterns = None
    for i, c in enumerate(classes.tolist()):
        if np.isfinite(best[i]):
            out[c] = ReversedTrigger(c, best_mask[i].copy(), best_pattern[i].copy(), True)
        else:  # never reached the success level: show where it got to; not a suspect
            if masks is None:
                masks, patterns = state.masks, state.patterns
            out[c] = ReversedTrigger(c, masks[i].astype(np.float32), patterns[i].astype(np.float32), False)
    return out


def _test_on_holdout(net, clean: ImageSet, predicted: np.ndarray, hold: np.ndarray, scaling: str,
                     triggers: dict[int, ReversedTrigger]) -> None:
    """Each trigger's attack success on held-out clean images the network puts in other classes."""
    images = clean.images[hold]
    for c, t in triggers.items():
        others = predicted[hold] != c
        if not others.any():
            continue
        p = forward(net, to_model_input(t.stamp(images[others]), scaling))
        t.attack_success = float(np.mean(p.argmax(axis=1) == c))


def _stack(arrays: list, shape: tuple) -> np.ndarray:
    """float32 (n, *shape), also for none."""
    return np.stack(arrays).astype(np.float32) if arrays else np.zeros((0, *shape), np.float32)


def _extra(raw, num_classes: int) -> dict[str, dict[int, float]]:
    """A statistic's own values from scan.json, checked: names to {class: finite number}."""
    if not isinstance(raw, dict) or len(raw) > 64:
        raise ValueError("'extra' must be an object of statistics")
    out = {}
    for name, values in raw.items():
        if not isinstance(values, dict) or len(values) > num_classes:
            raise ValueError(f"'extra' of {name!r} must map classes to numbers")
        out[str(name)] = {}
        for c, v in values.items():
            if v is None:  # not finite when it was written
                continue
            label = int(c)
            if not 0 <= label < num_classes or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"'extra' of {name!r}: class {c} or its value out of range")
            if np.isfinite(v):
                out[str(name)][label] = float(v)
    return out


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def _float_or_none(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def scan_job(net: BadNet, clean: ImageSet, scaling: str, settings: ScanSettings | None = None) -> Job[ScanResult]:
    """The whole-model trigger scan on ``clean`` (labels not needed), fitted to the model, at the
    input scaling asked for (or chosen, for ``auto``): a ScanResult."""
    clean = fit_to_model(clean, net)
    check_clean(clean)
    chosen, _ = yield from choose_scaling(net, scaling, clean)
    return (yield from scan(net, clean, chosen, settings or ScanSettings()))
