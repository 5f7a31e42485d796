"""The audit as a request: what the CLI's ``audit`` and the window's *Save audit report* both
run. It composes the requests it needs (the scan, the comparison, a calibration) and says each
of them, and itself, as the report's "how to reproduce" lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from engine.detectors.calibration import Calibration
from engine.io.datasets import ImageSet, PoisonedSet
from engine.io.models import BadNet
from engine.progress import Job
from engine.workflow.comparing import CompareRequest
from engine.workflow.opening import load_scan, read_images
from engine.workflow.requests import (CalibrateRequest, Request, ScanRequest, Sources, by_name, command_line,
                                      sample_text, warn_about)


@dataclass(frozen=True)
class AuditRequest(Request):
    """One HTML report to ``output`` of everything found about a network. Named files are read
    (``calibrations``, a ``scan`` folder, ``repaired`` bundles, ``images`` to check); what is not
    given is computed: the scan on ``scan_sample`` clean faces, a calibration of the default
    detector; per-image detection on ``detection_sample`` faces of each set (None: the defaults)."""

    command: ClassVar[str] = "audit"
    takes_poisoned: ClassVar[bool] = True

    output: Path | None = None
    calibrations: tuple[Path, ...] = ()
    scan: Path | None = None
    repaired: tuple[Path, ...] = ()
    images: tuple[Path, ...] = ()
    scan_sample: int | None = None
    detection_sample: int | None = None

    def check(self) -> Path:
        """The report's place (an .html file, new or one of our reports), before any long work."""
        from engine.report import check_report_output

        return check_report_output(self.output)

    def job(self, net: BadNet, clean: ImageSet, sets: list[PoisonedSet], scaling: str, checked=None, *,
            calibrations: list | None = None, scan=None, scan_source: str = "", repaired: list | None = None,
            images: ImageSet | None = None, sources: Sources | None = None) -> Job:
        """The audit on open data, written to ``output``; the window hands in what it has
        (``calibrations`` as (Calibration, where it came from) pairs, a ScanResult, RepairedNets,
        checked images) and ``sources``, the files behind them, for the reproduce lines."""
        from engine import report

        out = checked if checked is not None else self.check()
        commands = reproduce_lines(self, sources or Sources.of(net, clean, sets), scaling)
        audit = yield from report.audit_job(net, clean, sets, scaling, calibrations=calibrations, scan=scan,
                                            scan_source=scan_source, repaired=repaired, images=images,
                                            scan_images=self.scan_sample, detection_images=self.detection_sample,
                                            commands=commands)
        report.write(audit, out)
        return audit

    def from_sources(self, sources, scaling, note, checked):
        sources.require()
        calibrations = [(Calibration.load(c), f"loaded from {Path(c).name}") for c in self.calibrations]
        beside = CompareRequest(repaired=self.repaired)  # the repaired networks, read and checked as compare does
        bundles = beside.read_bundles()
        net, clean, sets = sources.open_all(note)
        scan = load_scan(self.scan, net) if self.scan else None
        repaired = beside.open_repaired(net, scaling, sources.trust, bundles)
        images = None
        if self.images:
            images = read_images(list(self.images), net)
            warn_about(images, note)
        return (yield from self.job(net, clean, sets, scaling, checked, calibrations=calibrations, scan=scan,
                                    scan_source=f"read from {Path(self.scan).name}" if self.scan else "",
                                    repaired=repaired, images=images,
                                    sources=Sources.of(net, clean, sets, sources.trust)))  # the files opened

    def words(self) -> list[str]:
        out = [w for c in self.calibrations for w in ("--calibration", str(c))]
        out += ["--scan", str(self.scan)] if self.scan else (
            [] if self.scan_sample is None else ["--scan-sample", sample_text(self.scan_sample)])
        out += [] if self.detection_sample is None else ["--detection-sample", sample_text(self.detection_sample)]
        out += [w for r in self.repaired for w in ("--repaired", str(r))]
        out += [w for i in self.images for w in ("--images", str(i))]
        return out + ["-o", str(self.output)]


def reproduce_lines(audit: AuditRequest, sources: Sources, scaling: str) -> list[str]:
    """The lines that recompute a report's figures, with the installed command and the files by
    name only (run them in the folder that holds the files): the scan, the comparison, the
    calibration and the audit itself, each said by its request."""
    from engine.report import FRRS, shell_line
    from engine.scan import SCAN_IMAGES

    files = sources.named()
    scan_n = SCAN_IMAGES if audit.scan_sample is None else audit.scan_sample
    repaired = tuple(by_name(r) for r in audit.repaired)
    lines = [ScanRequest(scan_n, output=Path("scan-out"))]
    if files.poisoned or sources.demo:
        lines.append(CompareRequest(frrs=FRRS, repaired=repaired))
    lines.append(CalibrateRequest(output=Path("calibration.json")))
    lines.append(AuditRequest(by_name(audit.output), tuple(by_name(c) for c in audit.calibrations),
                              by_name(audit.scan), repaired, tuple(by_name(i) for i in audit.images),
                              scan_n, audit.detection_sample))
    return [shell_line(command_line(r, files, scaling)) for r in lines]
