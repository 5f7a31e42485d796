"""Opening what a user names: a model, clean and poisoned sets (targets and labels checked, sets
sized for the model), a saved defense or scan; and the input scaling."""

from __future__ import annotations

from pathlib import Path


from engine.io import datasets
from engine.detectors.calibration import load_defenses
from engine.io.datasets import ImageSet, PoisonedSet
from engine.errors import InputError
from engine.io.models import BadNet, load_badnet
from engine.io.fitting import check_target, fit_sets, fit_to_model, sample_images  # noqa: F401  (the workflow's API)
from engine.scoring import choose_scaling  # noqa: F401  (the workflow's API)


def open_model(path: str | Path, trust: bool = False) -> BadNet:
    """A model file, loaded as untrusted unless ``trust``."""
    return load_badnet(Path(path), trust=trust)


def read_set(path: str | Path, net: BadNet | None = None) -> ImageSet:
    """Any image source, sized for ``net`` and its labels checked, when a model is given."""
    images = datasets.read(path, size=None if net is None else net.input_shape[:2])
    return images if net is None else fit_to_model(images, net)


def read_images(paths: list[str | Path], net: BadNet) -> ImageSet:
    """Image files or folders, sized for the model."""
    images = datasets.read_many([Path(p) for p in paths], size=net.input_shape[:2])
    return fit_to_model(images, net)


def open_poisoned(net: BadNet, path: str | Path, target: int) -> PoisonedSet:
    """A poisoned set with its target, the target checked first."""
    check_target(net, target, path)
    return PoisonedSet(read_set(path, net), int(target))


def open_sets(net: BadNet, clean: str | Path, poisoned: list[tuple[Path, int]]) -> tuple[ImageSet, list[PoisonedSet]]:
    """The clean set and the poisoned sets, every target checked before any data is read."""
    for path, target in poisoned:  # every target before reading any data
        check_target(net, target, path)
    return read_set(clean, net), [open_poisoned(net, path, target) for path, target in poisoned]


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
            raise InputError(nplus1, "give the N+1 network's input scaling ({scale} 1/255 or raw), not auto",
                             settings=("scale",))
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


def load_scan(path: str | Path, net: BadNet | None = None):
    """A scan folder written by ``scan``; checked against ``net`` when given."""
    from engine.scan import ScanResult

    result = ScanResult.load(path)
    if net is not None:
        result.check_model(net)
        if tuple(net.input_shape[:2]) != tuple(result.image_shape):
            raise InputError(path, f"triggers are {result.image_shape}, the model takes {net.input_shape[:2]}")
    return result
