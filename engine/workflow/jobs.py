"""The long work a user starts, as jobs (generators of Progress): calibrate, compare detectors and
defenses, scan, stamp a reversed trigger, explain images. Each checks its request once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.detectors.calibration import DEFAULT_FRR, DEFAULT_METHOD, Calibration, calibrate, check_frr, check_options
from engine.io.datasets import ImageSet, PoisonedSet
from engine.detectors import DETECTORS, Detector, make_detector
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scan import scan_job  # noqa: F401  (the workflow's API)
from engine.workflow.opening import choose_scaling, fit_sets, fit_to_model

# What a user gets without choosing: the detector that catches the triggers measured at DEFAULT_FRR
# (docs/detectors.md, "Calibration"); the founding confidence detector stays one choice away.
DEFAULT_DETECTOR = "combined"


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
    """Detectors by name, each with its own settings from ``params``."""
    params = params or {}
    return [make_detector(n, params.get(n)) for n in names]


def calibrate_job(net: BadNet, clean: ImageSet, scaling: str, detector: Detector, method: str = DEFAULT_METHOD,
                  frr: float = DEFAULT_FRR, min_samples: int | None = None,
                  sample: int | None = None) -> Job[tuple[Calibration, str]]:
    """Resolve the input scaling, fit and calibrate ``detector``: (calibration, scaling reason)."""
    check_options(method, frr, min_samples)
    clean = fit_to_model(clean, net)
    chosen, reason = yield from choose_scaling(net, scaling, clean)
    cal = yield from calibrate(net, clean, chosen, detector, method=method, frr=frr, min_samples=min_samples,
                               sample=sample)
    return cal, reason


def compare_job(net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], detectors: list[Detector], scaling: str,
                frrs: tuple[float, ...]):
    """Every detector on the clean and poisoned sets: ROC curves and detection at the rates."""
    from engine.evaluation.compare import compare

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
    from engine.evaluation.compare import repair_rows

    if not poisoned:
        raise InputError(None, "add a poisoned set (with its target) to compare defenses on")
    clean = fit_to_model(clean, net)
    sets = fit_sets(poisoned, net)
    for g in repairs:
        g.check_model(net)
    chosen, _ = yield from choose_scaling(net, scaling, clean)
    return (yield from repair_rows(net, clean, sets, list(repairs), chosen))


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
    from engine.io.files import write_png

    rows = []
    for e in explanations:
        trigger = scan.triggers[e.predicted] if scan is not None and e.predicted in scan.flagged else None
        rows.append(explanation_sheet(e, None if trigger is None else trigger.mask))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    return write_png(path, lambda tmp: Image.fromarray(sheet).save(tmp))
