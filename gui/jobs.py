"""Run engine generators off the GUI thread, one at a time (Keras ``predict`` is not thread safe).

Each job is a generator from the engine: its ``Progress`` yields drive a progress bar, its return
value goes to a result slot on the GUI thread, a raised error becomes a one-line message. Cancel
sets a flag; the job stops at its next yield and its result is dropped.

Why not ``superqt.create_worker``: its workers run on ``QThreadPool`` threads, and PySide gives a
pool thread a fresh Python thread state for every runnable. TensorFlow's pybind11 layer caches
one thread state per OS thread, so once the pool reuses a thread for a second job, TensorFlow
takes the GIL with a dead thread state and the process crashes (seen here: a model loaded in one
job, chunked HDF5 read in a second, predict in a third). All jobs therefore run on one long-lived
Python thread, whose thread state lives as long as it does; results still come back through
queued Qt signals, as with superqt's workers.

While that thread lives, Python's cyclic garbage collector runs only on the GUI thread (see
:class:`GuiThreadCollector`): a collection triggered on the job thread may destroy Qt widgets
there, which crashes Qt (seen here in the test suite).
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import traceback
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from engine.errors import InputError
from engine.progress import Progress

log = logging.getLogger(__name__)
THREAD_NAME = "badnet-inspector-jobs"


class GuiThreadCollector:
    """Automatic GC off while job threads run; a GUI-thread timer collects by the usual thresholds."""

    _users = 0
    _timer: QTimer | None = None

    @classmethod
    def acquire(cls) -> None:
        if cls._users == 0:
            gc.disable()
            cls._timer = QTimer()
            cls._timer.timeout.connect(cls.collect)
            cls._timer.start(250)
        cls._users += 1

    @classmethod
    def release(cls) -> None:
        cls._users = max(0, cls._users - 1)
        if cls._users == 0 and cls._timer is not None:
            cls._timer.stop()
            cls._timer = None
            gc.enable()

    @staticmethod
    def collect() -> None:
        counts, limits = gc.get_count(), gc.get_threshold()
        generation = max((g for g in range(3) if counts[g] > limits[g]), default=None)
        if generation is not None:
            gc.collect(generation)


@dataclass
class JobSpec:
    title: str
    factory: Callable[[], Generator]
    on_result: Callable[[object], None]
    on_error: Callable[[str], None] | None = None


class _Bridge(QObject):
    """Signals emitted from the job thread, delivered on the GUI thread (queued)."""

    yielded = Signal(int, object)
    returned = Signal(int, object)
    errored = Signal(int, object)
    ended = Signal(int, bool)  # job id, cancelled


class JobRunner(QObject):
    """A FIFO of jobs, run one at a time on a dedicated Python thread."""

    started = Signal(str)  # title
    progress = Signal(object)  # Progress
    finished = Signal(str, str)  # title, outcome: "done" | "cancelled" | "failed"
    failed = Signal(str, str)  # title, one-line message
    idle = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._queue: deque[JobSpec] = deque()
        self._current: JobSpec | None = None
        self._current_id = 0
        self._outcome = "done"
        self._cancel = threading.Event()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._bridge = _Bridge(self)
        self._bridge.yielded.connect(self._on_yielded)
        self._bridge.returned.connect(self._on_returned)
        self._bridge.errored.connect(self._on_errored)
        self._bridge.ended.connect(self._on_ended)

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def current_title(self) -> str | None:
        return self._current.title if self._current else None

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, title: str, factory, on_result, on_error=None) -> None:
        self._queue.append(JobSpec(title, factory, on_result, on_error))
        if self._current is None:
            self._start_next()

    def cancel(self) -> None:
        """Stop the running job at its next yield; queued jobs still run."""
        if self._current is not None:
            self._outcome = "cancelled"
            self._cancel.set()

    def cancel_all(self) -> None:
        self._queue.clear()
        self.cancel()

    def wait(self, msecs: int = 30_000) -> bool:
        """Cancel everything and end the job thread (on close, in tests). True if it ended."""
        self.cancel_all()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._inbox.put(None)
        thread.join(msecs / 1000)
        self._current = None
        if thread.is_alive():
            return False
        GuiThreadCollector.release()
        return True

    # --- GUI thread -------------------------------------------------------------------------

    def _start_next(self) -> None:
        if not self._queue:
            self._current = None
            self.idle.emit()
            return
        spec = self._current = self._queue.popleft()
        self._current_id += 1
        self._outcome = "done"
        self._cancel.clear()
        try:
            job = spec.factory()  # on the GUI thread: what the factory snapshots is consistent
        except InputError as err:
            self._fail(spec, str(err))
            self._finish(spec)
            return
        if self._thread is None or not self._thread.is_alive():
            GuiThreadCollector.acquire()
            self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
            self._thread.start()
        self.started.emit(spec.title)
        self._inbox.put((self._current_id, job))

    @Slot(int, object)
    def _on_yielded(self, job_id: int, step) -> None:
        if job_id == self._current_id and isinstance(step, Progress) and self._outcome != "cancelled":
            self.progress.emit(step)

    @Slot(int, object)
    def _on_returned(self, job_id: int, value) -> None:
        spec = self._current
        if job_id != self._current_id or spec is None or self._outcome == "cancelled":
            return
        try:
            spec.on_result(value)
        except InputError as err:
            self._fail(spec, str(err))
        except Exception as err:  # a bug in a result slot must not take the window down
            log.error("result of %s failed:\n%s", spec.title, traceback.format_exc())
            self._fail(spec, f"{spec.title}: unexpected {type(err).__name__}: {err}")

    @Slot(int, object)
    def _on_errored(self, job_id: int, err: Exception) -> None:
        spec = self._current
        if job_id != self._current_id or spec is None:
            return
        if isinstance(err, InputError):
            message = str(err)
        else:
            log.error("%s failed:\n%s", spec.title, "".join(traceback.format_exception(err)))
            message = f"{spec.title}: unexpected {type(err).__name__}: {err}"
        self._fail(spec, message)

    @Slot(int, bool)
    def _on_ended(self, job_id: int, cancelled: bool) -> None:
        if job_id != self._current_id or self._current is None:
            return
        if cancelled:
            self._outcome = "cancelled"
        self._finish(self._current)

    def _fail(self, spec: JobSpec, message: str) -> None:
        self._outcome = "failed"
        if spec.on_error is not None:
            spec.on_error(message)
        self.failed.emit(spec.title, message)

    def _finish(self, spec: JobSpec) -> None:
        self._current = None
        self.finished.emit(spec.title, self._outcome)
        self._start_next()

    # --- job thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        bridge = self._bridge
        while True:
            item = self._inbox.get()
            if item is None:
                return
            job_id, job = item
            cancelled = False
            try:
                while True:
                    if self._cancel.is_set():
                        job.close()  # runs the generator's cleanup; it ends at the yield it was at
                        cancelled = True
                        break
                    try:
                        step = next(job)
                    except StopIteration as stop:
                        bridge.returned.emit(job_id, stop.value)
                        break
                    bridge.yielded.emit(job_id, step)
            except Exception as err:
                try:
                    bridge.errored.emit(job_id, err)
                except RuntimeError:  # the window is gone
                    return
            try:
                bridge.ended.emit(job_id, cancelled)
            except RuntimeError:
                return
