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
        from engine.report import AuditRequest
        from engine.workflow import Sources

        path = Path(path)
        try:
            checked = AuditRequest(path).check()
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
            folder = getattr(s.scan, "folder", None) if scan is not None else None
            where = f"read from {Path(folder).name}" if folder else "run in the window"
            repaired = [s.repair.repaired] if s.repair.repaired is not None else []
            rows = list(s.check.rows)
            images = None
            if rows:
                from engine.io.datasets import ImageSet

                images = ImageSet(np.stack([r.image for r in rows]), None, [r.name for r in rows],
                                  "images checked in the window")
            # What the reproduce lines can name: saved calibrations and the scan's folder (a
            # repaired network made in the window has no bundle file to name).
            request = AuditRequest(path, tuple(Path(c.source) for c, _ in cals if c.source),
                                   None if folder is None else Path(folder))

            def job():
                audit = yield from request.job(net, clean, sets, data.effective_scaling, checked, calibrations=cals,
                                               scan=scan, scan_source=where, repaired=repaired, images=images,
                                               sources=Sources.of(net, clean, sets))
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

