"""The trigger scan's result and its file format: the reversed triggers, the statistics behind
the verdict, the ranked table, and the folder a scan is saved in (``scan.json``, ``triggers.npz``,
``shapes.npz``, PNGs), written atomically and read back checked (a damaged or hostile folder is
one line, never a crash)."""

from __future__ import annotations

import dataclasses
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InputError, first_line
from engine.io.datasets import npz_member_shape
from engine.io.files import check_readable_file, read_json_file, staged_folder, write_json_atomic
from engine.io.models import BadNet
from engine.scan import evidence as ev
from engine.scan import stats
from engine.scan.stats import rounded
from engine.scan.trigger_opt import stamp
from engine.scoring import SCALINGS

FILE_KIND = "badnet-inspector/scan"
FILE_VERSION = 2
MAX_CLASSES = 100_000
STAGES = ("margins", "refining", "testing", "done")


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

    def judge(self, weights: dict[str, float] | None = None) -> None:
        """Evidence per class and the verdict, from every registered statistic's values
        (``weights``: budget weights by member, for benchmarks that compare rules; default theirs)."""
        values = {s.name: s.values(self) for s in stats.active()}
        self.evidence, self.verdict = ev.judge_values(values, self.num_classes, self.n_clean, self.alpha, weights)
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
        if self.verdict.probability is not None:
            line += f"; probability of a backdoor {ev.probability_text(self.verdict.probability)}"
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
                "probability": rounded(self.verdict.probability), "line": self.summary()},
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
