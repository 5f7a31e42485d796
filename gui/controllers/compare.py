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

        def factory():
            self.session.require("comparing detectors", clean="clean data")
            made = workflow.make_detectors(list(detectors), detectors)
            known = list(self.session.repair.known.values())
            repairs = [g for g in known if g.scaling == data.effective_scaling]
            for g in known:
                if g not in repairs:
                    self.session.message.emit(f"left out of the comparison: {g.title} ({g.repaired_path}) was made "
                                              f"with input scaling {g.scaling}, the window uses {data.effective_scaling}")
            return _with_defenses(data, made, repairs, tuple(frrs))

        def done(out) -> None:
            results, self.defenses = out
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


def _with_defenses(data, detectors, repairs, frrs):
    from engine.evaluation.compare import detector_rows

    results = yield from workflow.compare_job(data.net, data.clean, list(data.poisoned), detectors,
                                              data.effective_scaling, frrs)
    rows = yield from workflow.repairs_job(data.net, data.clean, list(data.poisoned), repairs,
                                           data.effective_scaling)
    return results, rows + detector_rows(results, frrs[-1])
