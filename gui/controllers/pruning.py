"""Fine-pruning: the sweep, the pruned models it saves and the repaired network G."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine import workflow
from engine.errors import InputError
from engine.progress import Progress


class PruningController(QObject):
    sweepChanged = Signal(object)  # FinePruneResult | None
    repairedChanged = Signal(object)  # RepairedNet | None

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.result = None
        self.repaired = None  # RepairedNet with B' loaded

    def run(self, outdir: str | Path, layer: str | None = None, drops=(2.0, 4.0, 10.0), epochs: int = 2) -> None:
        """Queue fine-pruning of the model on the clean data; results go to ``outdir``."""
        outdir = Path(outdir)
        data = self.session.data

        def factory():
            if data.net is None:
                raise InputError(None, "load a model before pruning")
            if data.clean is None:
                raise InputError(None, "load labelled clean data before pruning")
            job = workflow.prune_job(data.net, data.clean, list(data.poisoned), outdir, layer, tuple(drops), epochs,
                                     data.effective_scaling)
            return _and_load_repaired(job)

        def done(result) -> None:
            self.result = result
            for line in result.notes:
                self.session.message.emit(line)
            self.session.message.emit(f"fine-pruning results in {outdir}")
            self.sweepChanged.emit(result)
            if result.chosen is not None:
                self.set_repaired(result.chosen)

        self.session.runner.submit("Fine-prune", factory, done)

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

    def set_repaired(self, g) -> None:
        self.repaired = g
        if g is not None:
            how = (f"unlearning classes {', '.join(map(str, g.choice.get('trigger_classes', [])))}"
                   if g.choice.get("method") == "unlearning" else f"fine-pruning, drop {g.choice.get('drop', '?')}%")
            self.session.message.emit(f"repaired network G: B' = {g.repaired_path} ({how})")
        self.repairedChanged.emit(g)

    def model_changed(self, net) -> None:
        if self.repaired is not None and self.repaired.badnet_sha256 != net.sha256:
            self.session.message.emit("the repaired network belonged to the previous model; cleared")
            self.set_repaired(None)
        if self.result is not None:
            self.result = None
            self.sweepChanged.emit(None)


def _and_load_repaired(job):
    result = yield from job
    if result.chosen is not None:
        result.chosen.load_repaired()  # off the GUI thread
    return result
