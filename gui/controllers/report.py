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
            report.check_output(path)
        except InputError as err:
            self.session.error.emit(str(err))
            return False
        s = self.session

        def factory():
            data = s.require("writing an audit report", clean="clean data")
            net, clean, sets = data.net, data.clean, list(data.poisoned)
            cals = [(cal, "made in the window" if name in s.calib.unsaved else f"from {cal.source or 'the window'}")
                    for name, cal in s.calib.calibrations.items()]
            scan = s.scan.result if s.scan.result is not None and s.scan.result.model_sha256 == net.sha256 else None
            where = f"from {s.scan.folder}" if scan is not None and getattr(s.scan, "folder", None) else "run in the window"
            repaired = [s.pruning.repaired] if s.pruning.repaired is not None else []
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
                                                    commands=_commands(net, clean, sets, scaling, path))
                report.write(audit, path)
                return str(path)

            return job()

        def done(written: str) -> None:
            s.message.emit(f"saved audit report {written}")
            self.saved.emit(written)

        s.runner.submit(f"Audit report {path.name}", factory, done)
        return True


def _commands(net, clean, sets, scaling, path) -> list[str]:
    from engine.report import command_line

    words = ["python", "main.py", "audit", "--model", str(net.path), "--clean", clean.source]
    for p in sets:
        words += ["--poisoned", f"{p.images.source}:{p.target}"]
    return [command_line(words + ["--scale", scaling, "-o", str(path)])]
