"""What is loaded: the BadNet, clean data, poisoned sets with their targets, and input scaling."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine import workflow
from engine.io.datasets import ImageSet, PoisonedSet
from engine.progress import Progress


class DataController(QObject):
    modelLoading = Signal(str)  # path
    modelChanged = Signal(object)  # BadNet
    modelLoadEnded = Signal(str)  # a model's loading ended: "done" | "cancelled" | "failed" | "stale"
    cleanChanged = Signal(object)  # ImageSet
    poisonedChanged = Signal(object)  # list[PoisonedSet]
    scalingChanged = Signal(str)

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.net = None
        self.clean: ImageSet | None = None
        self.poisoned: list[PoisonedSet] = []
        self.scaling = "1/255"
        self.resolved_scaling: str | None = None  # what "auto" chose

    @property
    def effective_scaling(self) -> str:
        cal = self.session.calib.active
        if cal is not None:
            return cal.scaling
        return self.resolved_scaling or (self.scaling if self.scaling != "auto" else "1/255")

    def open_model(self, path: str | Path, trust: bool = False) -> None:
        path = Path(path)
        self.modelLoading.emit(str(path))

        def job():
            yield Progress(0, 1, f"loading {path.name}")
            net = workflow.open_model(path, trust)
            yield Progress(1, 1, f"loaded {path.name}")
            return net

        self.session.runner.submit(f"Load model {path.name}", job, self._set_model,
                                   on_finished=self.modelLoadEnded.emit)

    def _set_model(self, net) -> None:
        self.net = net
        self.resolved_scaling = None
        self.session.runner.new_generation()
        self.session.message.emit(
            f"model {net.path}: {net.format}, input {'x'.join(map(str, net.input_shape))}, "
            f"{net.num_classes} classes, sha256 {net.sha256[:12]}…"
        )
        for line in net.notes:
            self.session.message.emit(f"note: {line}")
        dropped = []
        if self.clean is not None and not _fits(self.clean, net):
            dropped.append(f"clean data {self.clean.source}")
            self.clean = None
        fits = [p.target < net.num_classes and _fits(p.images, net) for p in self.poisoned]
        keep = [p for p, ok in zip(self.poisoned, fits) if ok]
        dropped += [f"poisoned set {p.name}" for p, ok in zip(self.poisoned, fits) if not ok]
        if dropped:
            self.session.message.emit(f"no longer fit the new model, removed: {', '.join(dropped)}")
        self.poisoned = keep
        self.modelChanged.emit(net)
        if dropped:
            self.cleanChanged.emit(self.clean)
            self.poisonedChanged.emit(list(self.poisoned))

    def open_clean(self, path: str | Path) -> None:
        path = Path(path)
        self.session.runner.submit(f"Read clean data {path.name}", lambda: self._read_job(path), self._set_clean)

    def _set_clean(self, images: ImageSet) -> None:
        self.clean = images
        self._log_set("clean data", images)
        self.cleanChanged.emit(images)

    def add_poisoned(self, path: str | Path, target: int) -> None:
        path = Path(path)

        def factory():
            if self.net is not None:
                workflow.check_target(self.net, target, path)
            return self._read_job(path)

        def done(images: ImageSet) -> None:
            self.poisoned.append(PoisonedSet(images, int(target)))
            self._log_set(f"poisoned set (target {target})", images)
            self.poisonedChanged.emit(list(self.poisoned))

        self.session.runner.submit(f"Read poisoned data {path.name}", factory, done)

    def remove_poisoned(self, index: int) -> None:
        if 0 <= index < len(self.poisoned):
            gone = self.poisoned.pop(index)
            self.session.message.emit(f"removed poisoned set {gone.name}")
            self.poisonedChanged.emit(list(self.poisoned))

    def set_scaling(self, scaling: str) -> None:
        if scaling != self.scaling:
            self.scaling = scaling
            self.resolved_scaling = None
            self.scalingChanged.emit(scaling)

    def _read_job(self, path: Path):
        net = self.net  # read and checked for the model loaded when the job starts

        def job():
            yield Progress(0, 1, f"reading {path.name}")
            images = workflow.read_set(path, net)
            yield Progress(1, 1, f"read {path.name}")
            return images

        return job()

    def _log_set(self, what: str, images: ImageSet) -> None:
        labelled = "labelled" if images.labels is not None else "unlabelled"
        self.session.message.emit(f"{what}: {images.source}, {len(images)} {labelled} images")
        for w in images.warnings:
            self.session.message.emit(f"warning: {w}")


def _fits(images: ImageSet, net) -> bool:
    """Its labels are classes of ``net`` (sizes are fitted when used)."""
    from engine.io.datasets import check_labels_in_range
    from engine.errors import InputError

    try:
        check_labels_in_range(images, net.num_classes)
    except InputError:
        return False
    return True
