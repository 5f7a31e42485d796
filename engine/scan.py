"""The trigger scan: is this network backdoored, which class is the target, what is the trigger?

Neural Cleanse (Wang et al., IEEE S&P 2019) reverse-engineers, for every class, the smallest
mask and pattern that send clean images to it, and flags a class whose mask is anomalously small
(anomaly index = (median - size) / (1.4826 MAD) over the classes; above 2 is flagged). It
optimises one class at a time, which for 1283 classes takes hours. This scan does the same work
in two stages, the way K-Arm (Shen et al., ICML 2021) spends its effort:

1. **Screen** every class for a few Adam steps, 64 classes per network call (see
   :mod:`engine.trigger_opt`). A backdoor's target is reached almost at once (its cross-entropy
   falls to ~0 within a handful of steps while other classes' stays high), so the mean log
   cross-entropy over the second half of these steps ranks it near the top.
2. **Refine** the ``candidates`` best-screened classes *and* a random ``reference`` sample of all
   classes with the full Neural Cleanse schedule (no size penalty until the attack works, then
   the penalty weight raised while the reversed trigger flips >= 99% of the batch and lowered
   while it does not; the smallest mask that worked is kept; a class stops when its best mask
   stops shrinking). The median and MAD come from the reference sample, refined exactly like
   the candidates, so every anomaly index compares like with like. With at most
   ``candidates + reference`` classes, every class is refined (plain Neural Cleanse).

The reversed triggers are tested on held-out clean images the optimisation never saw. Results
are written atomically into a folder: ``scan.json`` (the ranked table), ``triggers.npz`` (masks
and patterns, what unlearning and the window use) and PNGs of each flagged class's mask,
pattern and mask x pattern.
"""

from __future__ import annotations

import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.data_io import ImageSet, npz_member_shape
from engine.errors import InputError, first_line
from engine.files import check_readable_file, read_json_file, staged_folder
from engine.model_io import BadNet
from engine.progress import Job, Progress
from engine.scoring import SCALINGS, forward, predict, to_model_input
from engine.trigger_opt import ChunkOptimizer, new_chunk, stamp

FILE_KIND = "badnet-inspector/scan"
ANOMALY_THRESHOLD = 2.0  # Neural Cleanse's
MIN_CLEAN = 4
MAD_CONSISTENCY = 1.4826
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class ScanSettings:
    screen_steps: int = 8
    screen_images: int = 4  # clean images per class per screening step
    screen_slots: int = 64  # classes per network call while screening
    candidates: int = 16
    reference: int = 16
    refine_steps: int = 200
    refine_min_steps: int = 60
    refine_images: int = 8
    patience: int = 40  # refinement stops when no best mask shrank by 1% for this many steps
    size_weight: float = 3.0  # lambda, on the mask's mean (its share of the image)
    success: float = 0.99  # the attack success a reversed trigger must reach in its batch
    holdout: float = 1 / 3
    learning_rate: float = 0.1
    seed: int = 0

    def check(self) -> None:
        for name in ("screen_steps", "screen_images", "screen_slots", "candidates", "refine_steps",
                     "refine_images", "patience"):
            if getattr(self, name) < 1:
                raise InputError(None, f"scan setting {name} must be at least 1")
        if self.reference < 3:
            raise InputError(None, "scan setting reference must be at least 3 (a median and a MAD)")


@dataclass
class ReversedTrigger:
    """One class's reversed trigger: ``mask`` (H, W) and ``pattern`` (H, W, 3), both in [0, 1]."""

    label: int
    mask: np.ndarray
    pattern: np.ndarray
    reached: bool  # did it ever flip >= success of a batch (else: the last mask, for show)
    attack_success: float | None = None  # on held-out clean images, other classes only
    anomaly: float | None = None

    @property
    def size(self) -> float:
        """The mask's share of the image (its L1 norm / pixels)."""
        return float(np.mean(self.mask))

    @property
    def l1(self) -> float:
        return float(np.sum(self.mask))

    def stamp(self, images: np.ndarray) -> np.ndarray:
        return stamp(images, self.mask, self.pattern)


@dataclass
class ScanResult:
    model_path: str
    model_sha256: str
    scaling: str
    num_classes: int
    image_shape: tuple[int, int]
    n_clean: int
    n_holdout: int
    screen_loss: np.ndarray  # (C,) mean log cross-entropy late in screening; low = easy to reach
    triggers: dict[int, ReversedTrigger]  # refined classes
    reference: list[int]  # classes whose refined sizes give the median and MAD
    median: float = float("nan")
    mad: float = float("nan")
    threshold: float = ANOMALY_THRESHOLD
    seconds: float = 0.0
    stage: str = "done"  # "screening", "refining", "done"
    notes: list[str] = field(default_factory=list)

    def snapshot(self) -> ScanResult:
        """A copy for another thread to read while the scan goes on (arrays and dicts copied)."""
        import dataclasses

        return dataclasses.replace(self, screen_loss=self.screen_loss.copy(), triggers=dict(self.triggers),
                                   reference=list(self.reference), notes=list(self.notes))

    @property
    def flagged(self) -> list[int]:
        """Classes whose anomaly index is above the threshold, most anomalous first."""
        return [c for c in self.ranking() if c in self.triggers and (self.triggers[c].anomaly or 0) > self.threshold]

    @property
    def backdoored(self) -> bool:
        return bool(self.flagged)

    def ranking(self) -> list[int]:
        """Refined classes by anomaly index (highest first), then the rest by screening objective."""
        refined = sorted(self.triggers, key=lambda c: (-_finite(self.triggers[c].anomaly, -math.inf),
                                                       self.triggers[c].size, c))
        rest = [int(c) for c in np.argsort(self.screen_loss, kind="stable") if int(c) not in self.triggers]
        return refined + rest

    def rows(self) -> list[dict]:
        """The ranked table: one dict per class (refined ones carry size, anomaly, attack success)."""
        out = []
        for rank, c in enumerate(self.ranking(), 1):
            t = self.triggers.get(c)
            out.append({
                "rank": rank,
                "class": c,
                "screen_loss": _round(self.screen_loss[c]),
                "refined": t is not None,
                "reference": c in self.reference,
                "mask_l1": None if t is None else round(t.l1, 3),
                "mask_share": None if t is None else round(t.size, 5),
                "reached": None if t is None else t.reached,
                "anomaly_index": None if t is None else _round(t.anomaly),
                "attack_success": None if t is None else _round(t.attack_success),
                "flagged": t is not None and (t.anomaly or 0) > self.threshold,
            })
        return out

    def summary(self) -> str:
        flagged = self.flagged
        if not flagged:
            top = self.ranking()[0]
            t = self.triggers.get(top)
            return (f"no class flagged (highest anomaly index {_fmt(t.anomaly if t else None)} for class {top}, "
                    f"threshold {self.threshold:g})")
        parts = [f"class {c} (anomaly index {self.triggers[c].anomaly:.2f}, mask {100 * self.triggers[c].size:.1f}% "
                 f"of the image, flips {_pct(self.triggers[c].attack_success)} of held-out clean faces)"
                 for c in flagged]
        return "backdoor suspected: " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "kind": FILE_KIND,
            "version": 1,
            "model": {"path": self.model_path, "sha256": self.model_sha256},
            "scaling": self.scaling,
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "n_clean": self.n_clean,
            "n_holdout": self.n_holdout,
            "threshold": self.threshold,
            "median_mask_l1": _round(self.median * self.pixels),
            "mad_mask_l1": _round(self.mad * self.pixels),
            "reference_classes": self.reference,
            "flagged": self.flagged,
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
            "classes": self.rows(),
        }

    @property
    def pixels(self) -> int:
        return int(self.image_shape[0] * self.image_shape[1])

    # --- files -------------------------------------------------------------------------

    def save(self, outdir: str | Path) -> Path:
        """Write scan.json, triggers.npz and the flagged classes' PNGs into ``outdir``, atomically."""
        from engine.calibration import write_json_atomic

        outdir = Path(outdir)
        with staged_folder(outdir, is_scan_output, "trigger-scan results") as stage:
            write_json_atomic(stage / "scan.json", self.to_dict())
            labels = sorted(self.triggers)
            np.savez_compressed(
                stage / "triggers.npz",
                labels=np.asarray(labels, dtype=np.int64),
                masks=np.stack([self.triggers[c].mask for c in labels]).astype(np.float32),
                patterns=np.stack([self.triggers[c].pattern for c in labels]).astype(np.float32),
                reached=np.asarray([self.triggers[c].reached for c in labels]),
                screen_loss=self.screen_loss.astype(np.float32),
            )
            for c in self.flagged or self.ranking()[:1]:
                save_trigger_pngs(self.triggers[c], stage)
        return outdir

    @classmethod
    def load(cls, folder: str | Path) -> ScanResult:
        """A scan folder (or its scan.json) written by :meth:`save`, checked."""
        folder = Path(folder)
        if folder.name == "scan.json":
            folder = folder.parent
        raw = read_json_file(folder / "scan.json", FILE_KIND, "trigger-scan")
        npz = check_readable_file(folder / "triggers.npz", "trigger-scan data file")
        try:
            shape = tuple(int(v) for v in raw["image_shape"])
            num_classes = int(raw["num_classes"])
            if len(shape) != 2 or not all(1 <= v <= 4096 for v in shape) or not 2 <= num_classes <= MAX_CLASSES:
                raise ValueError("image shape or number of classes out of range")
            if str(raw["scaling"]) not in SCALINGS:
                raise ValueError(f"unknown input scaling {raw['scaling']!r}")
            rows = {int(r["class"]): r for r in raw["classes"] if isinstance(r, dict)}
            with open(npz, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                # every array's size from its header first: nothing absurd is decompressed
                limits = {"labels": num_classes, "masks": num_classes * shape[0] * shape[1],
                          "patterns": 3 * num_classes * shape[0] * shape[1], "reached": num_classes,
                          "screen_loss": num_classes}
                for key, limit in limits.items():
                    if np.prod(npz_member_shape(data, key), dtype=float) > limit:
                        raise ValueError(f"'{key}' is larger than {num_classes} classes of {shape} images allow")
                labels = np.asarray(data["labels"], dtype=np.int64)
                masks = np.asarray(data["masks"], dtype=np.float32)
                patterns = np.asarray(data["patterns"], dtype=np.float32)
                reached = np.asarray(data["reached"], dtype=bool)
                screen = np.asarray(data["screen_loss"], dtype=np.float64)
            n = len(labels)
            if (masks.shape != (n, *shape) or patterns.shape != (n, *shape, 3) or reached.shape != (n,)
                    or screen.shape != (num_classes,)):
                raise ValueError("arrays of the wrong shape")
            if n and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError("a class out of range")
            for a in (masks, patterns):
                if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
                    raise ValueError("masks and patterns must be finite, in [0, 1]")
            screen = np.where(np.isfinite(screen), screen, np.inf)
            triggers = {}
            for i, c in enumerate(labels.tolist()):
                row = rows.get(c, {})
                triggers[c] = ReversedTrigger(c, masks[i], patterns[i], bool(reached[i]),
                                              _float_or_none(row.get("attack_success")),
                                              _float_or_none(row.get("anomaly_index")))
            pixels = shape[0] * shape[1]
            return cls(
                model_path=str(raw["model"]["path"]), model_sha256=str(raw["model"]["sha256"]),
                scaling=str(raw["scaling"]), num_classes=num_classes, image_shape=shape,
                n_clean=int(raw["n_clean"]), n_holdout=int(raw["n_holdout"]), screen_loss=screen,
                triggers=triggers, reference=[int(c) for c in raw["reference_classes"]],
                median=float(raw["median_mask_l1"] or "nan") / pixels, mad=float(raw["mad_mask_l1"] or "nan") / pixels,
                threshold=float(raw["threshold"]), seconds=float(raw["seconds"]),
                notes=[str(v) for v in raw.get("notes", [])],
            )
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, OSError, OverflowError, zipfile.BadZipFile) as err:
            raise InputError(folder, f"damaged trigger-scan results ({first_line(err)})") from None

    def check_model(self, net: BadNet) -> None:
        if net.sha256 != self.model_sha256:
            raise InputError(net.path, f"this scan was made for another model (sha256 {self.model_sha256[:12]}…)")


def is_scan_output(folder: Path) -> bool:
    """A folder an earlier scan wrote: scan.json of our kind, and only files named like ours."""
    import re

    from engine.files import is_json_of_kind

    ours = re.compile(r"scan\.json|triggers\.npz|class\d+_(mask|pattern|trigger)\.png")
    return is_json_of_kind(folder / "scan.json", FILE_KIND) and all(ours.fullmatch(p.name) for p in folder.iterdir())


def save_trigger_pngs(trigger: ReversedTrigger, folder: Path, zoom: int = 4) -> list[Path]:
    """class<c>_mask.png (grey), _pattern.png, _trigger.png (mask x pattern), enlarged ``zoom`` x."""
    from PIL import Image

    out = []
    m = trigger.mask[..., None]
    pictures = (("mask", np.repeat(m, 3, axis=2)), ("pattern", trigger.pattern), ("trigger", m * trigger.pattern))
    for name, pixels in pictures:
        img = Image.fromarray(np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8))
        img = img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
        path = folder / f"class{trigger.label}_{name}.png"
        img.save(path)
        out.append(path)
    return out


# --- the scan job ---------------------------------------------------------------------------


def check_clean(clean: ImageSet) -> None:
    if len(clean) < MIN_CLEAN:
        raise InputError(clean.source,
                         f"has {len(clean)} images; a trigger scan needs at least {MIN_CLEAN} clean images")


def scan(net: BadNet, clean: ImageSet, scaling: str, settings: ScanSettings = ScanSettings()) -> Job[ScanResult]:
    """Screen every class, refine the promising ones and a reference sample, test the triggers.

    Yields :class:`Progress` whose ``partial`` is the :class:`ScanResult` so far (screening
    objectives first, then refined classes as they settle)."""
    settings.check()
    check_clean(clean)
    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    num_classes = net.num_classes
    h, w, _ = net.input_shape
    # An image the network already puts in class c says nothing about reaching c: its own
    # prediction (not its label, which unlabelled data lacks) takes it out of c's loss.
    preds = yield from predict(net, clean, scaling)
    order = rng.permutation(len(clean))
    n_hold = max(1, round(settings.holdout * len(clean)))
    hold, fit = order[:n_hold], order[n_hold:]
    x_fit = clean.images[fit].astype(np.float32) / 255.0
    y_fit = preds.labels[fit]

    result = ScanResult(str(net.path), net.sha256, scaling, num_classes, (h, w), len(clean), int(n_hold),
                        np.full(num_classes, np.inf), {}, [], stage="screening")
    everything = num_classes <= settings.candidates + settings.reference
    refine_steps_total = settings.refine_steps
    screen_total = 0 if everything else -(-num_classes // settings.screen_slots) * settings.screen_steps
    total = screen_total + refine_steps_total + 1
    done = 0

    if everything:
        result.notes.append(f"{num_classes} classes: every class refined (plain Neural Cleanse)")
        chosen = list(range(num_classes))
        result.reference = list(chosen)
    else:
        chunks = -(-num_classes // settings.screen_slots)
        slots = -(-num_classes // chunks)  # balanced chunks: 1283 classes -> 21 x 62, not 20 x 64 + 3
        opt = ChunkOptimizer(net.model, scaling, slots, settings.screen_images, net.input_shape,
                             net.outputs_probabilities, settings.learning_rate)
        late = settings.screen_steps // 2
        for c0 in range(0, num_classes, slots):
            classes = np.arange(c0, min(num_classes, c0 + slots))
            state = new_chunk(classes, slots, (h, w), rng, settings.size_weight, mask_start=0.5)
            opt.load(state)
            objective = np.zeros(slots)
            for s in range(settings.screen_steps):
                idx = _draw(rng, len(fit), slots, settings.screen_images)
                ce, _, _ = opt.step(state, x_fit[idx], (y_fit[idx] != state.classes[:, None]).astype(np.float32))
                if s >= late:
                    objective += np.log(ce + 1e-6)
                done += 1
                yield Progress(done, total, f"screening {num_classes} classes")
            result.screen_loss[classes] = objective[: len(classes)] / (settings.screen_steps - late)
            yield Progress(done, total, f"screening {num_classes} classes", partial=result.snapshot())
        ranked = np.argsort(result.screen_loss, kind="stable")
        candidates = [int(c) for c in ranked[: settings.candidates]]
        result.reference = sorted(int(c) for c in rng.choice(num_classes, settings.reference, replace=False))
        chosen = sorted(set(candidates) | set(result.reference))
        result.notes.append(
            f"screened {num_classes} classes ({settings.screen_steps} steps each); refined the "
            f"{settings.candidates} most reachable and a random reference sample of {settings.reference}")

    result.stage = "refining"
    triggers = yield from _refine(net, scaling, x_fit, y_fit, np.asarray(chosen), settings, rng,
                                  lambda k, label, fresh: Progress(done + k, total, label,
                                                                   partial=result.snapshot() if fresh else None),
                                  result)
    done = screen_total + refine_steps_total
    yield Progress(done, total, "testing the reversed triggers")
    _test_on_holdout(net, clean, preds.labels, hold, scaling, triggers)
    result.triggers = triggers
    _anomaly(result)
    result.stage = "done"
    result.seconds = time.perf_counter() - started
    yield Progress(total, total, "scan done", partial=result.snapshot())
    return result


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
        if fresh:
            result.triggers = _triggers(classes, best, best_mask, best_pattern, state)
        yield progress(s + 1, f"refining {k} classes", fresh)
        if s + 1 >= settings.refine_min_steps and np.all(s - last_gain >= settings.patience):
            result.notes.append(f"refinement converged after {s + 1} steps")
            break
    return _triggers(classes, best, best_mask, best_pattern, state)


def _triggers(classes, best, best_mask, best_pattern, state) -> dict[int, ReversedTrigger]:
    out = {}
    masks = patterns = None
    for i, c in enumerate(classes.tolist()):
        if np.isfinite(best[i]):
            out[c] = ReversedTrigger(c, best_mask[i].copy(), best_pattern[i].copy(), True)
        else:  # never reached the success level: show where it got to, rank it as a whole-image mask
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


def _anomaly(result: ScanResult) -> None:
    """Neural Cleanse's anomaly index against the reference sample's median and MAD."""
    def size(c):
        t = result.triggers[c]
        return t.size if t.reached else 1.0

    ref = np.asarray([size(c) for c in result.reference if c in result.triggers])
    result.median = float(np.median(ref))
    result.mad = float(MAD_CONSISTENCY * np.median(np.abs(ref - result.median)))
    spread = max(result.mad, 1e-12)
    for c, t in result.triggers.items():
        t.anomaly = float((result.median - size(c)) / spread)


def _finite(v, default):
    return default if v is None or not np.isfinite(v) else v


def _round(v, digits: int = 4):
    if v is None or not np.isfinite(v):
        return None
    return round(float(v), digits)


def _float_or_none(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"
