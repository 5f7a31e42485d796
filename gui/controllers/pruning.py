"""Pruning and repair: fine-pruning's channel sweep, magnitude pruning's sparsity sweep, the N+1
network, and the repaired network they build (the verdict source "repaired network G"). Every
repaired network made or loaded for this model is kept, so the comparison can list them all."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine import workflow
from engine.errors import InputError
from engine.progress import Progress

METHODS = ("channels", "magnitude", "nplus1")


class PruningController(QObject):
    sweepChanged = Signal(object)  # FinePruneResult | MagnitudeResult | NPlusOneResult | None
    repairedChanged = Signal(object)  # RepairedNet | None
    knownChanged = Signal()  # the list of repaired networks changed

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.result = None
        self.repaired = None  # RepairedNet with B' loaded: the one that gives verdicts
        self.known: dict[str, object] = {}  # B' path -> RepairedNet, every one made or loaded for this model

    def _require(self, what: str):
        data = self.session.data
        if data.net is None:
            raise InputError(None, f"load a model before {what}")
        if data.clean is None:
            raise InputError(None, f"load labelled clean data before {what}")
        return data

    def run(self, outdir: str | Path, layer: str | None = None, drops=(2.0, 4.0, 10.0), epochs: int = 2) -> None:
        """Queue fine-pruning of the model on the clean data; results go to ``outdir``."""
        outdir = Path(outdir)

        def factory():
            data = self._require("pruning")
            job = workflow.prune_job(data.net, data.clean, list(data.poisoned), outdir, layer, tuple(drops), epochs,
                                     data.effective_scaling)
            return _and_load_repaired(job)

        def done(result) -> None:
            for line in result.notes:
                self.session.message.emit(line)
            self._finished(result, result.chosen, f"fine-pruning results in {outdir}")

        self.session.runner.submit("Fine-prune", factory, done)

    def run_magnitude(self, outdir: str | Path, sparsity: float = 0.7, epochs: int = 0) -> None:
        """Queue magnitude pruning (the report's first try): sweep, prune, fine-tune, G."""
        outdir = Path(outdir)

        def factory():
            data = self._require("magnitude pruning")
            return workflow.magnitude_job(data.net, data.clean, list(data.poisoned), outdir, data.effective_scaling,
                                          sparsity, epochs)

        def done(result) -> None:
            for line in result.lines():
                self.session.message.emit(line)
            self._finished(result, result.bundle, f"magnitude-pruning results in {outdir}")

        self.session.runner.submit("Magnitude pruning", factory, done)

    def run_nplus1(self, outdir: str | Path, epochs: int = 40, sets: list[int] | None = None,
                   train_layers: str = "output") -> None:
        """Queue training of the N+1 network on the clean data and the loaded poisoned sets
        (``sets``: their indices; None: all)."""
        outdir = Path(outdir)

        def factory():
            data = self._require("training the N+1 network")
            chosen = [p for i, p in enumerate(data.poisoned) if sets is None or i in sets]
            return workflow.nplus1_job(data.net, data.clean, chosen, outdir, data.effective_scaling, epochs,
                                       train_layers=train_layers)

        def done(result) -> None:
            for line in result.lines():
                self.session.message.emit(line)
            self._finished(result, result.bundle, f"N+1 network in {outdir}")

        self.session.runner.submit("Train the N+1 network", factory, done)

    def _finished(self, result, bundle, where: str) -> None:
        self.result = result
        self.session.message.emit(where)
        self.sweepChanged.emit(result)
        if bundle is not None:
            self.set_repaired(bundle)

    def load_repaired(self, path: str | Path) -> None:
        from engine.repair import RepairedNet

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
        from engine.repair import RepairedNet

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
            from engine.compare import describe_repair

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
            self.sweepChanged.emit(None)


def _and_load_repaired(job):
    result = yield from job
    if result.chosen is not None:
        result.chosen.load_repaired()  # off the GUI thread
    return result
