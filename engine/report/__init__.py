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
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.io.datasets import ImageSet, PoisonedSet
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.report.request import AuditRequest, reproduce_lines  # noqa: F401  (the report's API)
from engine.workflow.requests import by_name

GENERATOR = "badnet-inspector audit report"  # in every report's <meta name="generator">: how we know our own
FRRS = (0.01, 0.05)
PREVIEW_FACES = 6
MAX_CHECKED = 200
DETECTION_IMAGES = 2000  # faces of each set per-image detection uses, at most (0: all)
SCAN_COMPUTED = "computed for this report"
CALIBRATED_HERE = "calibrated for this report on the clean data, with the defaults"


@dataclass
class DataFile:
    """A data file the audit read: its role, path, image count, content digest, file hash and target."""
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
    model: dict  # facts of the model: its file name, never the folder it sits in (a report travels)
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
    versions: dict = field(default_factory=dict)  # everything that computed it: engine.versions.versions()
    private: list = field(default_factory=list)  # the folders of the files read: never printed (see render)


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
    """This tool's version, as the report states it."""
    from engine.versions import tool_version

    return tool_version()


def file_name(path) -> str:
    """What a report shows of a path: its last part (a file's or a folder's name)."""
    return str(by_name(path))


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
    """The model's file, hash, format, layers and parameter count, for the report."""
    layers = [(layer.name, type(layer).__name__) for layer in net.model.layers]
    params = int(sum(int(np.prod(w.shape)) for w in net.model.weights))
    return {"path": file_name(net.path), "sha256": net.sha256, "format": net.format,
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
    from engine.scoring import predict

    clean = workflow.fit_to_model(clean, net)
    poisoned = workflow.fit_sets(poisoned, net)
    scaling, _ = yield from workflow.choose_scaling(net, scaling, clean)
    from engine.versions import versions

    out = Audit(created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), version=version(),
                model=model_facts(net), data=[], scaling=scaling, commands=list(commands or []),
                versions=versions())
    out.private = private_folders([net.path, clean.source] + [p.images.source for p in poisoned]
                                  + ([images.source] if images is not None else [])
                                  + [getattr(cal, "source", None) for cal, _ in calibrations or []]
                                  + [getattr(scan, "source", None), getattr(scan, "model_path", None)]
                                  + [getattr(g, "repaired_path", None) for g in repaired or []])
    out.data.append(DataFile("clean", file_name(clean.source), len(clean), clean.digest, _file_sha256(clean.source)))
    for p in poisoned:
        out.data.append(DataFile("poisoned", file_name(p.images.source), len(p.images), p.images.digest,
                                 _file_sha256(p.images.source), p.target))
    if images is not None:
        if len(images) > MAX_CHECKED:
            out.notes.append(f"checked images: the first {MAX_CHECKED} of {len(images)} are shown")
            images = images.subset(np.arange(MAX_CHECKED))
        images = workflow.fit_to_model(images, net)
        out.data.append(DataFile("checked images", file_name(images.source), len(images), images.digest,
                                 _file_sha256(images.source)))

    # 1. The verdict: the trigger scan, read or computed.
    if scan is None:
        scan = yield from workflow.ScanRequest(scan_images).job(net, clean, scaling)
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
        compared = yield from workflow.CompareRequest(frrs=FRRS).job(net, clean, poisoned, scaling,
                                                                      repaired=repaired or ())
        out.comparisons, out.defenses = compared.results, compared.defenses
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
                + ". The audit line under 'How to reproduce' draws the same faces; --detection-sample all uses "
                "every face (compare always does).")
    return drawn, sets, line


def shell_line(words: list[str]) -> str:
    """Words as one shell command line, each quoted as the shell needs."""
    return " ".join(shlex.quote(str(w)) for w in words)


def private_folders(paths) -> list[str]:
    """The folders the given files sit in (absolute, longest first): what a report must not print."""
    out = set()
    for p in paths:
        if not p:
            continue
        try:
            resolved = Path(str(p)).resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        for folder in (resolved.parent, Path(str(p)).absolute().parent):
            if str(folder) not in ("/", "") and len(folder.parts) > 1:
                out.add(str(folder))
    return sorted(out, key=len, reverse=True)


def render(audit: Audit) -> str:
    """The report as one HTML page, with no folder of the machine that made it: file names and
    digests identify the files, and a page that travels should not tell where they were kept."""
    import html as _html

    from engine.report.page import page

    text = page(audit)
    forms = {f for folder in audit.private for f in (folder, _html.escape(folder), _html.escape(folder, quote=False))}
    if not forms:
        return text
    # Embedded pictures (base64 may spell anything) are kept as they are; the rest is scrubbed.
    parts = re.split(r'(data:[a-z/+]+;base64,[A-Za-z0-9+/=]+)', text)
    for i in range(0, len(parts), 2):
        for form in sorted(forms, key=len, reverse=True):
            parts[i] = parts[i].replace(form + "/", "").replace(form, ".")
    return "".join(parts)


MARKER = f'<meta name="generator" content="{GENERATOR}">'


def is_report_text(text: str) -> bool:
    """Whether an HTML text is one of our audit reports (so it may be replaced)."""
    return MARKER in text[:4096]


def is_report(path: Path) -> bool:
    """Is the file at ``path`` one of our reports (so it may be replaced)? Its first 4 KiB say."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return is_report_text(head.decode("utf-8", errors="replace"))


def check_report_output(path: str | Path) -> Path:
    """Fail before any long work if a report cannot be written to ``path``."""
    from engine.io.files import check_output

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(path, "an audit report is an .html file")
    return check_output(path, is_report, "BadNet Inspector audit report")


def write(audit: Audit, path: str | Path) -> Path:
    """Render and write atomically: a failure leaves no file and any previous report intact."""
    from engine.io.files import atomic_open

    path = check_report_output(path)
    text = render(audit)
    with atomic_open(path) as fh:
        fh.write(text)
    return path


def findings(audit: Audit) -> dict:
    """The audit's results as plain data (``audit --json``; docs/formats.md): the verdict and the
    scan's ranked classes, the files by name and digest, every detector's figures on each set,
    the defenses side by side, the calibrations' flagged shares, the checked images' verdicts."""
    scan = audit.scan
    out = {
        "created": audit.created,
        "versions": dict(audit.versions),
        "model": {k: audit.model[k] for k in ("path", "sha256", "format", "input", "classes", "parameters")},
        "scaling": audit.scaling,
        "files": [{"role": d.role, "name": d.path, "count": d.count, "digest": d.digest,
                   "sha256": d.file_sha256, "target": d.target} for d in audit.data],
        "scan": None if scan is None else {
            "source": audit.scan_source, "outcome": scan.outcome, "flagged": list(scan.flagged),
            "line": scan.summary(), "n_clean": scan.n_clean, "false_alarm": scan.alpha,
            "classes": [r for r in scan.rows() if r["refined"] or r["flagged"]][:20]},
        "detection_sample": audit.detection_images,
        "sampled": audit.sampled,
        "comparisons": [c.to_dict() for c in audit.comparisons],
        "defenses": [r.to_dict() for r in audit.defenses],
        "calibrations": [],
        "checked": [],
        "commands": list(audit.commands),
    }
    for cal, where, scores in audit.calibrations:
        out["calibrations"].append({"detector": cal.detector, "summary": cal.summary(), "where": where,
                                    "frr": cal.frr, "method": cal.method, "sets": calibration_shares(cal, scores)})
    cals = {cal.detector: cal for cal, _, _ in audit.calibrations}
    for item in audit.checked:
        out["checked"].append({"name": file_name(item.name), "predicted": int(item.predicted),
                               "confidence": float(item.confidence), "verdicts": checked_verdicts(item, cals)})
    return out


def calibration_shares(cal, scores) -> list[dict]:
    """What a calibration flags of each scored set: the share of all its images and, for a
    poisoned set, detection over the images the BadNet sends to the target with how many those
    are (engine.evaluation.metrics.detection). The page and ``audit --json`` both show these."""
    from engine.evaluation.metrics import detection

    rows = []
    for s in scores:
        hit = cal.labels(s.scores.predicted, s.scores.values) == cal.poisoned_label
        row = {"name": s.name, "kind": s.kind, "n": int(len(hit)),
               "flagged_share_of_all": float(hit.mean()) if len(hit) else None}
        if s.target is not None:
            row["detection"], row["n_sent_to_target"] = detection(hit, s.scores.predicted, s.target)
        rows.append(row)
    return rows


def checked_verdicts(item, cals: dict) -> dict:
    """A checked image's verdict under each calibration that scored it: by detector name, its
    score, its label (N = poisoned) and whether it is flagged."""
    out = {}
    for name, score in item.scores.items():
        cal = cals.get(name)
        if cal is not None:
            label = int(cal.labels(item.classes.get(name, item.predicted), score))
            out[name] = {"score": float(score), "label": label, "poisoned": label == cal.poisoned_label}
    return out
