"""Repairs: any registered repair (fine-pruning, magnitude pruning, unlearning, the N+1 network, ...)
run as a job, and the repaired network it builds (the verdict source "repaired network G"). Every
repaired network made or loaded for this model is kept, so the comparison can list them all."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.errors import InputError
from engine.progress import Progress


class RepairController(QObject):
    outcomeChanged = Signal(object)  # RepairOutcome | None: what the last repair made
    repairedChanged = Signal(object)  # RepairedNet | None
    knownChanged = Signal()  # the list of repaired networks changed

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.result = None
        self.repaired = None  # RepairedNet with B' loaded: the one that gives verdicts
        self.known: dict[str, object] = {}  # B' path -> RepairedNet, every one made or loaded for this model

    def _require(self, what: str):
        return self.session.require(what, clean="labelled clean data")

    def run(self, method: str, params: dict | None = None, outdir: str | Path | None = None,
            sets: list[int] | None = None) -> None:
        """Queue ``method`` with ``params`` (its settings; missing ones take its defaults) into
        ``outdir``. ``sets``: the indices of the loaded poisoned sets a repair that learns from
        poisoned faces takes (None: all). A repair that uses a trigger scan takes the loaded one."""
        from engine.repairs import repair_class
        from engine.workflow import RepairRequest

        outdir = Path(outdir)
        request = RepairRequest(method, dict(params or {}), outdir)

        def factory():
            checked = request.check()
            repair = checked[0]
            data = self._require(repair.phrase())
            chosen = [p for i, p in enumerate(data.poisoned) if sets is None or not repair.needs_poisoned or i in sets]
            scan = self.session.scan.result if repair.uses_scan else None
            return request.job(data.net, data.clean, chosen, data.effective_scaling, scan, checked=checked)

        def done(outcome) -> None:
            for line in outcome.lines:
                self.session.message.emit(line)
            if outcome.scan is not None and self.session.scan.result is None:
                self.session.scan.set_result(outcome.scan, None)
            self._finished(outcome, outcome.bundle, f"results in {outdir}")

        self.session.runner.submit(repair_class(method).title, factory, done)

    def _finished(self, result, bundle, where: str) -> None:
        self.result = result
        self.session.message.emit(where)
        self.outcomeChanged.emit(result)
        if bundle is not None:
            self.set_repaired(bundle)

    def load_repaired(self, path: str | Path) -> None:
        from engine.repairs.bundle import RepairedNet

        try:
            g = RepairedNet.load(path)
        except InputError as err:
            self.session.error.emit(str(err))
            return

        def factory():
            net = self.session.data.net
            if net is None:
                raise InputError(path, f"built for {g.badnet_path}; open that model first")
            g.check_model(net)

            def job():
                yield Progress(0, 1, "loading B'")
                g.load_repaired()
                return g

            return job()

        self.session.runner.submit("Load repaired network", factory, self.set_repaired)

    def load_nplus1(self, path: str | Path) -> None:
        """A hand-made N+1 network for the loaded BadNet; the user says its last class means poisoned."""
        from engine.repairs.bundle import RepairedNet

        def factory():
            data = self.session.data
            if data.net is None:
                raise InputError(path, "open the BadNet it belongs to first")

            def job():
                yield Progress(0, 1, "loading the N+1 network")
                return RepairedNet.hand_made_nplus1(path, data.effective_scaling, data.net)

            return job()

        self.session.runner.submit("Load N+1 network", factory, self.set_repaired)

    def set_repaired(self, g) -> None:
        self.repaired = g
        if g is not None:
            from engine.evaluation.compare import describe_repair

            title, note, _ = describe_repair(g)
            self.session.message.emit(f"repaired network G: {title}, {Path(g.repaired_path).name} ({note})")
            self.known[str(Path(g.repaired_path).resolve())] = g
            self.knownChanged.emit()
        self.repairedChanged.emit(g)

    def model_changed(self, net) -> None:
        if self.repaired is not None and self.repaired.badnet_sha256 != net.sha256:
            self.session.message.emit("the repaired network belonged to the previous model; cleared")
            self.set_repaired(None)
        stale = [k for k, g in self.known.items() if g.badnet_sha256 != net.sha256]
        for k in stale:
            del self.known[k]
        if stale:
            self.knownChanged.emit()
        if self.result is not None:
            self.result = None
            self.outcomeChanged.emit(None)
