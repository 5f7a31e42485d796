"""Detector comparison on the loaded sets: ROC curves, AUC, detection at fixed rates; and every
defense side by side (the detectors at the last rate, each repaired network made or loaded)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine import workflow


class CompareController(QObject):
    comparisonChanged = Signal(object)  # list[Comparison] | None

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.results = None
        self.defenses = None  # list[DefenseRow]: the BadNet undefended, each repaired network, each detector

    def run(self, detectors: dict[str, dict | None], frrs=(0.01, 0.05)) -> None:
        """Queue a comparison of ``detectors`` (name -> settings) on the clean set against every
        poisoned set."""
        data = self.session.data
        request = workflow.CompareRequest(tuple(detectors), {n: dict(p or {}) for n, p in detectors.items()},
                                          tuple(frrs))

        def factory():
            self.session.require("comparing detectors", clean="clean data")
            checked = request.check()
            # Every repaired network the window knows, each judged at the scaling it was made with.
            repaired = list(self.session.repair.known.values())
            return request.job(data.net, data.clean, list(data.poisoned), data.effective_scaling, checked, repaired)

        def done(out) -> None:
            results, self.defenses = out.results, out.defenses
            self.results = results
            for r in results:
                at = ", ".join(f"{100 * p.detection:.1f}% at {100 * p.target_frr:g}% FRR" for p in r.points)
                self.session.message.emit(f"{r.title} on {r.poisoned}: AUC {r.auc:.3f}; detection {at}")
            self.comparisonChanged.emit(results)

        self.session.runner.submit("Compare detectors", factory, done)

    def clear(self) -> None:
        if self.results is not None:
            self.results = None
            self.defenses = None
            self.comparisonChanged.emit(None)

