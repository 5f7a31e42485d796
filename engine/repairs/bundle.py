"""The repaired-network bundle every repair writes: a second network B' that decides, beside the
BadNet B, what is poisoned.

Two rules. ``disagree`` (fine-pruning's G, unlearning, magnitude pruning): run B and B'; where they
disagree the answer is N. ``nplus1`` (the report's extra-output network): B' has N+1 outputs and its own answer is the
verdict, class N meaning *poisoned*; a hand-made N+1 network stands alone (B' judges itself).

A bundle is JSON naming both model files with their SHA-256, the input scaling, the rule and how
B' was made. It works wherever a calibration does: ``judge(net, images)`` gives the same
:class:`Verdicts`, with score 1 where the image passes and 0 where it is flagged (threshold 0.5).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.detectors.calibration import Verdicts
from engine.io.files import write_json_atomic
from engine.io.datasets import ImageSet
from engine.errors import InputError, first_line
from engine.io.files import read_json_file
from engine.io.models import BadNet, load_badnet, sha256_file
from engine.progress import Job
from engine.scoring import SCALINGS, predict

FILE_KIND = "badnet-inspector/repaired"
RULES = ("disagree", "nplus1")


@dataclass
class RepairedNet:
    """A repaired network G beside its BadNet B: the two paths and hashes, how G was made, and the
    rule that turns their answers into a verdict (N = poisoned); saved as repaired.json."""
    badnet_path: str
    badnet_sha256: str
    repaired_path: str
    repaired_sha256: str
    scaling: str
    num_classes: int
    choice: dict = field(default_factory=dict)
    repaired: BadNet | None = None  # B', loaded on first use
    rule: str = "disagree"  # see RULES

    @classmethod
    def hand_made_nplus1(cls, path: str | Path, scaling: str, badnet: BadNet | None = None,
                         trust: bool = False) -> RepairedNet:
        """A hand-made N+1 network (such as the report's ``*_processed_model.h5``), its last class
        taken to mean *poisoned* because the user says so. Beside ``badnet`` (which must have one
        class fewer), or on its own when no BadNet is given."""
        net = load_badnet(path, trust=trust)
        if net.num_classes < 3:
            raise InputError(path, f"has {net.num_classes} outputs; an N+1 network needs N >= 2 classes and one more")
        if badnet is not None and badnet.num_classes != net.num_classes - 1:
            raise InputError(path, f"has {net.num_classes} outputs; as the N+1 network of {badnet.path.name} "
                             f"({badnet.num_classes} classes) it should have {badnet.num_classes + 1}")
        b = badnet or net
        return cls(str(b.path), b.sha256, str(net.path), net.sha256, scaling, net.num_classes - 1,
                   {"method": "nplus1", "hand_made": True}, net, rule="nplus1")

    @property
    def is_standalone(self) -> bool:
        return self.rule == "nplus1" and self.badnet_sha256 == self.repaired_sha256

    @property
    def method(self) -> str:
        """The repair that made it (bundles of the first fine-pruning runs record no method)."""
        return str(self.choice.get("method") or "fine-pruning")

    @property
    def title(self) -> str:
        from engine.repairs import repair_class

        return repair_class(self.method).bundle_title(self.choice)

    def describe(self) -> tuple[str, str, tuple[str, ...]]:
        """(title, how it was made, the poisoned sets it was trained on)."""
        from engine.repairs import repair_class

        trained = tuple(self.choice.get("trained_on") or ())
        return self.title, repair_class(self.method).describe(self.choice), trained

    # What the CLI and the GUI ask of any defense (a Calibration answers the same).
    @property
    def model_path(self) -> str:
        return self.badnet_path

    @property
    def model_sha256(self) -> str:
        return self.badnet_sha256

    @property
    def poisoned_label(self) -> int:
        return self.num_classes

    def check_model(self, net: BadNet) -> None:
        if net.sha256 != self.badnet_sha256:
            raise InputError(
                net.path,
                f"this repaired network was built for another model (sha256 {self.badnet_sha256[:12]}…, "
                f"this file is {net.sha256[:12]}…)",
            )
        expected = self.num_classes + (1 if self.is_standalone else 0)
        if net.num_classes != expected:
            raise InputError(net.path, f"has {net.num_classes} classes; the repaired network was built for "
                             f"{expected}")

    def load_repaired(self, trust: bool = False) -> BadNet:
        if self.repaired is None:
            net = load_badnet(self.repaired_path, trust=trust)
            if net.sha256 != self.repaired_sha256:
                raise InputError(net.path, "the pruned model B' changed since the repaired network was built")
            wanted = self.num_classes + (1 if self.rule == "nplus1" else 0)
            if net.num_classes != wanted:
                what = "N+1 network" if self.rule == "nplus1" else "B'"
                raise InputError(net.path, f"the {what} has {net.num_classes} classes; it should have {wanted}")
            self.repaired = net
        return self.repaired

    def labels(self, b, second):
        """The verdict (arrays or single values). ``disagree``: B's class where B and B' agree, N
        where they do not. ``nplus1``: B''s own answer (N: poisoned)."""
        if self.rule == "nplus1":
            return np.asarray(second)
        b = np.asarray(b)
        return np.where(b == np.asarray(second), b, self.poisoned_label)

    def passes(self, b, second):
        """1.0 where the image passes (not flagged), 0.0 where the rule flags it."""
        return (np.asarray(self.labels(b, second)) != self.poisoned_label).astype(np.float64)

    def judge(self, net: BadNet, images: ImageSet) -> Job[Verdicts]:
        self.check_model(net)
        repaired = self.load_repaired()
        second = yield from predict(repaired, images, self.scaling)
        b = second if self.rule == "nplus1" else (yield from predict(net, images, self.scaling))
        labels = self.labels(b.labels, second.labels)
        passes = self.passes(b.labels, second.labels)
        return Verdicts(list(images.names), b.labels, passes, np.full(len(passes), 0.5), labels, self.poisoned_label)

    def to_dict(self, relative_to: Path) -> dict:
        def rel(p: str) -> str:
            return os.path.relpath(Path(p).resolve(), relative_to.resolve())

        return {
            "kind": FILE_KIND,
            "version": 1,
            "badnet": {"path": rel(self.badnet_path), "sha256": self.badnet_sha256},
            "repaired": {"path": rel(self.repaired_path), "sha256": self.repaired_sha256},
            "scaling": self.scaling,
            "num_classes": self.num_classes,
            "poisoned_label": self.num_classes,
            "rule": self.rule,
            "choice": self.choice,
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        write_json_atomic(path, self.to_dict(path.parent))

    @classmethod
    def load(cls, path: str | Path) -> RepairedNet:
        path = Path(path)
        raw = read_json_file(path, FILE_KIND, "repaired-network")
        try:
            def resolve(p: str) -> str:
                q = Path(p)
                return str(q if q.is_absolute() else (path.parent / q).resolve())

            if not isinstance(raw["badnet"], dict) or not isinstance(raw["repaired"], dict):
                raise TypeError("'badnet' and 'repaired' must be objects")
            num_classes = int(raw["num_classes"])
            if num_classes < 2:
                raise ValueError(f"{num_classes} classes")
            rule = str(raw.get("rule", "disagree"))
            if rule not in RULES:
                raise InputError(path, f"unknown rule {rule!r} (known: {', '.join(RULES)})")
            if str(raw["scaling"]) not in SCALINGS:
                raise InputError(path, f"unknown input scaling {raw['scaling']!r}")
            for key in ("badnet", "repaired"):
                if not isinstance(raw[key].get("path"), str) or not _SHA256.fullmatch(str(raw[key].get("sha256"))):
                    raise ValueError(f"'{key}' needs a path and a SHA-256")
            choice = raw.get("choice") or {}
            if not isinstance(choice, dict):
                raise TypeError("'choice' must be an object")
            check_choice(choice, num_classes)
            from engine.repairs import ALIASES, REPAIRS

            method = str(choice.get("method") or "fine-pruning")
            if ALIASES.get(method, method) not in REPAIRS:
                raise InputError(path, f"made by an unknown repair {method!r} (known: {', '.join(REPAIRS)})")
            return cls(
                badnet_path=resolve(raw["badnet"]["path"]),
                badnet_sha256=str(raw["badnet"]["sha256"]),
                repaired_path=resolve(raw["repaired"]["path"]),
                repaired_sha256=str(raw["repaired"]["sha256"]),
                scaling=str(raw["scaling"]),
                num_classes=num_classes,
                choice=dict(choice),
                rule=rule,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise InputError(path, f"damaged repaired-network file ({first_line(err)})") from None


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _finite(v, lo: float = -np.inf, hi: float = np.inf) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))
            and lo <= v <= hi)


def _whole(v, lo: int = 0, hi: int = 10**9) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_choice(choice: dict, num_classes: int) -> None:
    """Raise ValueError where a bundle's record of how B' was made holds what the tool cannot use.

    Only the keys the tool reads are checked (the rest is a record for people): a bundle is checked
    completely when it is opened, so a damaged one never replaces a good one."""
    checks = {
        "method": lambda v: isinstance(v, str),
        "hand_made": lambda v: isinstance(v, bool),
        "trained_on": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
        "train_layers": lambda v: v in ("output", "all"),
        "epochs": _whole,
        "trigger_classes": lambda v: isinstance(v, list) and all(_whole(c, 0, num_classes - 1) for c in v),
        "sparsity": lambda v: _finite(v, 0.0, 1.0),
        "layer": lambda v: isinstance(v, str),
        "drop": lambda v: _finite(v, 0.0, 100.0),
        "clean_digest": lambda v: isinstance(v, str),
        "reason": lambda v: isinstance(v, str),
        "attack_success": lambda v: isinstance(v, dict) and all(
            isinstance(k, str) and _finite(a, 0.0, 1.0) for k, a in v.items()),
        "fine_tuned": lambda v: isinstance(v, bool) or (isinstance(v, dict) and _whole(v.get("epochs"))),
    }
    for key, ok in checks.items():
        if key in choice and not ok(choice[key]):
            raise ValueError(f"choice.{key} {choice[key]!r} is not what a repaired network records")


def save_model(model, path: Path) -> Path:
    """Save a full Keras HDF5 file (what the CSAW models are), atomically."""
    import logging

    tmp = path.with_name(f".tmp_{path.name}")
    quiet = logging.getLogger("absl")  # Keras's advice to prefer .keras: the CSAW files are HDF5, on purpose
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model.save(tmp, include_optimizer=False)
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise InputError(path, f"could not save the model ({first_line(err)})") from None
    finally:
        quiet.setLevel(level)
    return path


def write_bundle(stage: Path, net: BadNet, saved: Path, choice: dict, scaling: str,
                 rule: str = "disagree") -> RepairedNet:
    """The bundle of B' (saved by :func:`save_model` as ``saved``), written as ``repaired.json`` in
    ``stage`` (a staging folder)."""
    bundle = RepairedNet(str(net.path), net.sha256, str(saved), sha256_file(saved), scaling, net.num_classes,
                         dict(choice), rule=rule)
    bundle.save(stage / "repaired.json")
    return bundle


def write_repair_folder(outdir: Path, repair, net: BadNet, model, model_name: str, choice: dict,
                        scaling: str) -> RepairedNet:
    """B' and its bundle in ``outdir``, written whole through a staging folder (nothing half-made):
    what a repair that makes one network writes."""
    from engine.io.files import staged_folder

    with staged_folder(outdir, repair.is_output, f"{repair.phrase()} results") as stage:
        bundle = write_bundle(stage, net, save_model(model, stage / model_name), choice, scaling, repair.rule)
    return moved(bundle, outdir)


def moved(bundle: RepairedNet, outdir: Path) -> RepairedNet:
    """The bundle with B' at its place in ``outdir`` (after the staging folder was moved there)."""
    bundle.repaired_path = str(Path(outdir) / Path(bundle.repaired_path).name)
    return bundle
