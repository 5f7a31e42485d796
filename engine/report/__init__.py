"""The audit: everything the tool finds about one network, in one self-contained HTML report.

:func:`audit_job` gathers it (the trigger scan's verdict and reversed triggers, the model and
the data, every detector's ROC curves and operating points, the confidence histograms that show
why the founding idea fails, the chosen calibrations, every defense side by side, the checked
images) and computes what it is not given; :func:`render` turns it into one HTML page (pictures
embedded, no script, printable on A4) with a Jinja2 template that escapes every text; and
:func:`write` writes it atomically, never over a file that is not one of our reports.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.io.datasets import ImageSet, PoisonedSet
from engine.io.models import BadNet
from engine.progress import Job, Progress

GENERATOR = "badnet-inspector audit report"  # in every report's <meta name="generator">: how we know our own
FRRS = (0.01, 0.05)
PREVIEW_FACES = 6
MAX_CHECKED = 200
DETECTION_IMAGES = 2000  # faces of each set per-image detection uses, at most (0: all)
SCAN_COMPUTED = "computed for this report"
CALIBRATED_HERE = "calibrated for this report on the clean data, with the defaults"


@dataclass
class DataFile:
    role: str  # "clean", "poisoned", "checked images"
    path: str
    count: int
    digest: str  # the pixels' and labels' content digest (engine.io.datasets.ImageSet.digest)
    file_sha256: str | None  # the file's, when it is one file
    target: int | None = None


@dataclass
class Audit:
    """What a report shows; every field plain data, so the report renders the same anywhere."""

    created: str
    version: str
    model: dict
    data: list[DataFile]
    scaling: str
    scan: object | None = None  # engine.scan.ScanResult
    scan_source: str = ""  # the folder it was read from, or "computed for this report"
    previews: dict = field(default_factory=dict)  # shown class -> engine.workflow.stamp_and_count(limit=...)
    comparisons: list = field(default_factory=list)  # engine.evaluation.compare.Comparison
    frrs: tuple = FRRS
    defenses: list = field(default_factory=list)  # engine.evaluation.compare.DefenseRow
    confidences: dict = field(default_factory=dict)  # set name -> top-1 confidences (the founding idea)
    calibrations: list = field(default_factory=list)  # (Calibration, where it came from, list[SetScores])
    checked: list = field(default_factory=list)  # engine.workflow.CheckedImage
    maps: dict = field(default_factory=dict)  # checked image's index -> its sensitivity map, for flagged ones
    commands: list = field(default_factory=list)  # CLI lines that recompute each figure
    sampled: str = ""  # how the sets were drawn down for per-image detection, when they were
    detection_images: int = 0  # the most faces of each set per-image detection used (0: all)
    notes: list = field(default_factory=list)


def shown_triggers(scan) -> tuple[list[int], bool]:
    """The classes whose reversed triggers the report shows, and whether they are flagged: the
    flagged ones; when none is, the nearest candidate (the best-ranked class with a trigger), so a
    reader of an inconclusive or clean verdict sees what the scan found and can judge it."""
    if scan is None:
        return [], False
    flagged = [c for c in scan.flagged if c in scan.triggers]
    if flagged:
        return flagged, True
    if scan.outcome is None:
        return [], False
    nearest = next((c for c in scan.ranking() if c in scan.triggers), None)
    return ([] if nearest is None else [nearest]), False


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("badnet-inspector")
    except Exception:  # not installed: a checkout run in place
        return "unknown (not installed)"


def _file_sha256(path: str | None) -> str | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_facts(net: BadNet) -> dict:
    layers = [(layer.name, type(layer).__name__) for layer in net.model.layers]
    params = int(sum(int(np.prod(w.shape)) for w in net.model.weights))
    return {"path": str(net.path), "sha256": net.sha256, "format": net.format,
            "input": "x".join(str(d) for d in net.input_shape), "classes": net.num_classes,
            "layers": layers, "parameters": params, "notes": list(net.notes)}


def audit_job(net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], scaling: str, *,
              calibrations: list | None = None, scan=None, scan_source: str = "", repaired: list | None = None,
              images: ImageSet | None = None, scan_images: int | None = None,
              detection_images: int | None = None, commands: list[str] | None = None) -> Job[Audit]:
    """Everything for the report; what is not given is computed: the trigger scan (on up to
    ``scan_images`` clean faces), a calibration of the default detector, the comparison of every
    detector on each poisoned set, the defenses side by side, the checked images' verdicts.
    Per-image detection uses at most ``detection_images`` faces of each set, drawn at random
    (default :data:`DETECTION_IMAGES`; 0: all). ``calibrations``: (Calibration, where it came
    from) pairs."""
    from engine import workflow
    from engine.detectors import DETECTORS, make_detector
    from engine.evaluation.compare import compare, detector_rows
    from engine.scan import SCAN_IMAGES
    from engine.scoring import predict

    clean = workflow.fit_to_model(clean, net)
    poisoned = workflow.fit_sets(poisoned, net)
    scaling, _ = yield from workflow.choose_scaling(net, scaling, clean)
    out = Audit(created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), version=version(),
                model=model_facts(net), data=[], scaling=scaling, commands=list(commands or []))
    out.data.append(DataFile("clean", clean.source, len(clean), clean.digest, _file_sha256(clean.source)))
    for p in poisoned:
        out.data.append(DataFile("poisoned", p.images.source, len(p.images), p.images.digest,
                                 _file_sha256(p.images.source), p.target))
    if images is not None:
        if len(images) > MAX_CHECKED:
            out.notes.append(f"checked images: the first {MAX_CHECKED} of {len(images)} are shown")
            images = images.subset(np.arange(MAX_CHECKED))
        images = workflow.fit_to_model(images, net)
        out.data.append(DataFile("checked images", images.source, len(images), images.digest,
                                 _file_sha256(images.source)))

    # 1. The verdict: the trigger scan, read or computed.
    if scan is None:
        limit = SCAN_IMAGES if scan_images is None else scan_images
        scan = yield from workflow.scan_job(net, workflow.sample_images(clean, limit), scaling)
        scan_source = SCAN_COMPUTED
    else:
        scan.check_model(net)
    out.scan, out.scan_source = scan, scan_source
    for label in shown_triggers(scan)[0]:
        out.previews[label] = yield from workflow.stamp_and_count(net, clean, scan, label, limit=PREVIEW_FACES)

    # 4. Per-image detection: the founding idea's confidences, every detector's ROC, the calibrations,
    # on at most ``detection_images`` faces of each set (CSAW's full sets would take many minutes).
    limit = DETECTION_IMAGES if detection_images is None else detection_images
    clean, poisoned, out.sampled = _detection_sets(clean, poisoned, limit)
    out.detection_images = limit
    for name, images_ in [("clean", clean)] + [(p.name, p.images) for p in poisoned]:
        out.confidences[name] = (yield from predict(net, images_, scaling)).confidences
    if poisoned:
        detectors = [make_detector(n) for n in DETECTORS]
        out.comparisons = yield from compare(net, clean, poisoned, detectors, scaling, FRRS)
        out.defenses = detector_rows(out.comparisons, FRRS[-1])
        if repaired:
            out.defenses = (yield from workflow.repairs_job(net, clean, poisoned, repaired, scaling)) + out.defenses
    given = list(calibrations or [])
    if not given:
        cal, _ = yield from workflow.CalibrateRequest().job(net, clean, scaling)
        given = [(cal, CALIBRATED_HERE)]
    for cal, where in given:
        cal.check_model(net)
        scores = yield from workflow.score_sets(net, cal, clean, poisoned)
        out.calibrations.append((cal, where, scores))

    # 6. The checked images.
    if images is not None:
        cals = {cal.detector: cal for cal, _, _ in out.calibrations}
        out.checked = yield from workflow.check_images(net, images, scaling, cals)
        flagged = [i for i, item in enumerate(out.checked)
                   if any(int(cals[n].labels(item.classes.get(n, item.predicted), v)) == cals[n].poisoned_label
                          for n, v in item.scores.items() if n in cals)][:workflow.MAX_EXPLAINED]
        if flagged:
            maps = yield from workflow.explain_images(net, images.subset(flagged), scaling)
            out.maps = dict(zip(flagged, maps))
    yield Progress(1, 1, "audit gathered")
    return out


def _detection_sets(clean: ImageSet, poisoned: list[PoisonedSet], limit: int):
    """The sets per-image detection is measured on: each set larger than ``limit`` drawn down to
    ``limit`` faces at random (seed 0, the same draw every run), and a line saying so."""
    from engine import workflow

    drawn = workflow.sample_images(clean, limit)
    sets = [PoisonedSet(workflow.sample_images(p.images, limit), p.target) for p in poisoned]
    cut = [(name, len(a), len(b)) for name, a, b in [("clean", drawn, clean)]
           + [(p.name, q.images, p.images) for p, q in zip(poisoned, sets)] if len(a) < len(b)]
    line = ""
    if cut:
        line = (f"Per-image detection and the defenses are measured on {limit:,} faces of each set larger than "
                "that, drawn at random (seed 0): " + "; ".join(f"{n} {a:,} of {b:,}" for n, a, b in cut)
                + ". The audit line under 'How to reproduce' draws the same faces; --detection-images 0 uses "
                "every face (compare always does).")
    return drawn, sets, line


def command_line(words: list[str]) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def render(audit: Audit) -> str:
    """The report as one HTML page."""
    from engine.report.page import page

    return page(audit)


MARKER = f'<meta name="generator" content="{GENERATOR}">'


def is_report_text(text: str) -> bool:
    return MARKER in text[:4096]


def is_report(path: Path) -> bool:
    """Is the file at ``path`` one of our reports (so it may be replaced)? Its first 4 KiB say."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return is_report_text(head.decode("utf-8", errors="replace"))


def check_output(path: str | Path) -> Path:
    """Fail before any long work if a report cannot be written to ``path``."""
    from engine.io.files import check_output as check_file_output

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(path, "an audit report is an .html file")
    return check_file_output(path, is_report, "BadNet Inspector audit report")


def write(audit: Audit, path: str | Path) -> Path:
    """Render and write atomically: a failure leaves no file and any previous report intact."""
    from engine.io.files import atomic_open

    path = check_output(path)
    text = render(audit)
    with atomic_open(path) as fh:
        fh.write(text)
    return path
