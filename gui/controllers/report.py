"""The audit report from the window: what is loaded and computed, the rest computed in a job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine.errors import InputError


class ReportController(QObject):
    saved = Signal(str)  # the report's path

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session

    def save(self, path: str | Path) -> bool:
        """Queue the audit: the loaded model and sets, the window's calibrations, its scan, its
        repaired network and its checked images; a scan and a calibration are computed when
        there are none. The file is written at the end of the job, atomically: a cancelled or
        failed audit leaves nothing. False when the path is refused at once."""
        from engine import report

        path = Path(path)
        try:
            report.check_report_output(path)
        except InputError as err:
            self.session.error.emit(str(err))
            return False
        s = self.session

        def factory():
            data = s.require("writing an audit report", clean="clean data")
            net, clean, sets = data.net, data.clean, list(data.poisoned)
            cals = [(cal, "made in the window" if name in s.calib.unsaved
                     else f"from {Path(cal.source).name if cal.source else 'the window'}")
                    for name, cal in s.calib.calibrations.items()]
            scan = s.scan.result if s.scan.result is not None and s.scan.result.model_sha256 == net.sha256 else None
            where = f"read from {Path(s.scan.folder).name}" if scan is not None and getattr(s.scan, "folder", None) else "run in the window"
            repaired = [s.repair.repaired] if s.repair.repaired is not None else []
            rows = list(s.check.rows)
            images = None
            if rows:
                from engine.io.datasets import ImageSet

                images = ImageSet(np.stack([r.image for r in rows]), None, [r.name for r in rows],
                                  "images checked in the window")
            scaling = data.effective_scaling

            def job():
                audit = yield from report.audit_job(net, clean, sets, scaling, calibrations=cals, scan=scan,
                                                    scan_source=where, repaired=repaired, images=images,
                                                    commands=_commands(
                                                        net, clean, sets, scaling, path,
                                                        getattr(s.scan, "folder", None) if scan is not None else None,
                                                        [c.source for c, _ in cals if c.source]))
                report.write(audit, path)
                return str(path), net, audit

            return job()

        def done(result) -> None:
            written, net, audit = result
            s.message.emit(f"saved audit report {written}: {audit.scan.summary() if audit.scan else 'no scan'}")
            self._adopt(net, audit)
            self.saved.emit(written)

        s.runner.submit(f"Audit report {path.name}", factory, done)
        return True

    def _adopt(self, net, audit) -> None:
        """What the audit computed because the window lacked it becomes the window's (its scan in
        the Trigger scan tab, its calibration in the histograms), unless the model changed or the
        window made its own meanwhile: the work is not thrown away."""
        from engine import report

        s = self.session
        if s.data.net is not net:
            return
        if audit.scan is not None and audit.scan_source == report.SCAN_COMPUTED and s.scan.result is None:
            s.scan.set_result(audit.scan, None)
        if not s.calib.calibrations:
            for cal, where, scores in audit.calibrations:
                if where == report.CALIBRATED_HERE:
                    s.calib.adopt(cal, scores)
                    if audit.sampled:  # the audit scored a draw of each set; the window shows every face
                        s.calib.score_sets([cal.detector])


def _commands(net, clean, sets, scaling, path, scan_folder=None, calibrations=()) -> list[str]:
    """The report's reproduce lines; a repaired network made in the window has no bundle file the
    lines could name, so none is given."""
    from engine.report import reproduce_lines

    return reproduce_lines(str(net.path), clean.source, [(p.images.source, p.target) for p in sets], scaling,
                           str(path), scan=scan_folder, calibrations=list(calibrations))
