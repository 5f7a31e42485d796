"""Run engine generators off the GUI thread, one at a time (Keras ``predict`` is not thread safe).

Each submitted job is a :class:`RunningJob` shaped like superqt's ``GeneratorWorker``: ``started``,
``yielded`` (the engine's ``Progress``), ``returned`` (the result, on the GUI thread), ``errored``
(a one-line message) and ``finished`` signals, and ``quit()``, honoured at the job's next yield.
A job records the runner's generation when it starts; a result that comes back after the
generation moved on (a newer model was loaded) is dropped: the one rule for stale results.

Why not ``superqt.create_worker``: its workers run on ``QThreadPool`` threads, and PySide gives a
pool thread a fresh Python thread state for every runnable. TensorFlow's pybind11 layer caches
one thread state per OS thread, so once the pool reuses a thread for a second job, TensorFlow
takes the GIL with a dead thread state and the process crashes (seen here: a model loaded in one
job, chunked HDF5 read in a second, predict in a third). All jobs therefore run on one long-lived
Python thread, whose thread state lives as long as it does; results still come back through
queued Qt signals, as with superqt's workers.

Slots connected to any signal here return None: PySide6 6.12.0 drops a reference to every bool
a Python slot returns, and on Python 3.11 the interpreter aborts once ``True``'s count reaches
zero (pyproject.toml keeps PySide6 below 6.12 for that reason too).

While that thread lives, Python's cyclic garbage collector runs only on the GUI thread (see
:class:`GuiThreadCollector`): a collection triggered on the job thread may destroy Qt widgets
there, which crashes Qt (seen here in the test suite).
"""

from __future__ import annotations

import sys

import gc
import logging
import queue
import threading
import traceback
from collections import deque
from collections.abc import Callable, Generator

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from engine.errors import InputError, first_line
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


class RunningJob(QObject):
    """One engine generator run on the job thread; signals arrive on the GUI thread."""

    started = Signal()
    yielded = Signal(object)  # Progress
    returned = Signal(object)  # the generator's return value (not emitted for stale results)
    errored = Signal(str)  # a one-line message for the user
    finished = Signal(str)  # outcome: "done" | "cancelled" | "failed" | "stale"

    def __init__(self, title: str, factory: Callable[[], Generator], parent: QObject | None = None):
        super().__init__(parent)
        self.title = title
        self.factory = factory
        self.generation: int | None = None
        self.outcome = "done"
        self.on_result: Callable[[object], None] | None = None
        self.on_error: Callable[[str], None] | None = None
        self._quit = threading.Event()

    def quit(self) -> None:
        """Stop at the next yield; the result is dropped."""
        self.outcome = "cancelled"
        self._quit.set()

    @property
    def abort_requested(self) -> bool:
        return self._quit.is_set()


class _Bridge(QObject):
    """Signals emitted from the job thread, delivered on the GUI thread (queued)."""

    yielded = Signal(object, object)
    returned = Signal(object, object)
    errored = Signal(object, object)
    ended = Signal(object)


def import_tensorflow() -> None:
    """Import TensorFlow and Keras now, on the calling (GUI) thread, before the window is shown.

    Imported lazily by the first job, TensorFlow's start-up (its native libraries loaded and
    initialised under the GIL) froze the window's event loop for about a second while the demo
    loaded (``bench/window.py``: the load phase's longest stall 1,345 ms, 308 ms with TensorFlow
    imported first; a model load alone: 1,060 ms, 21 ms), so a user's first drag or click
    stuttered. Imported before the window appears, the same seconds are spent while nothing is on
    screen yet, once per process.

    TensorFlow's eager context and its CPU kernels start on first use, also under the GIL: the
    first model a job loaded still froze the loop for 220-340 ms (a 10 ms timer's event took
    248 ms, offscreen, the worker inside Keras's weight loading). One tiny convolution here
    starts them too.

    Then the objects alive at start-up (some 350,000: TensorFlow's, Keras's, Qt's, the window's)
    are moved out of the garbage collector's reach (``gc.freeze``): they live as long as the
    process, and a full collection walking them took 150-270 ms under the GIL, whichever thread
    happened to trigger it, a stall of the event loop at some allocation of a job."""
    global _RUNTIME_READY
    if _RUNTIME_READY:
        return
    import gc

    import keras

    layer = keras.layers.Conv2D(1, 2)
    layer(keras.ops.zeros((1, 3, 3, 1)))
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)
    _RUNTIME_READY = True


_RUNTIME_READY = False  # once per process: later windows' objects are not frozen
# How long a thread holding the GIL runs before the other may take it (Python's default is 5 ms).
# With a job building or running a network, the GUI thread waited up to that long for every one
# of the many times it re-enters Python while handling an event: 45-70 ms stalls at the end of a
# calibration or a repair on the real CSAW BadNet (bench/window.py --csaw).
SWITCH_INTERVAL = 0.0002


class JobRunner(QObject):
    """A FIFO of jobs, run one at a time on a dedicated Python thread."""

    started = Signal(str)  # title
    progress = Signal(object)  # Progress
    finished = Signal(str, str)  # title, outcome: "done" | "cancelled" | "failed" | "stale"
    failed = Signal(str, str)  # title, one-line message
    idle = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._queue: deque[RunningJob] = deque()
        self._current: RunningJob | None = None
        self.generation = 0
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

    def new_generation(self) -> int:
        """Results of jobs started before this call are stale from now on."""
        self.generation += 1
        return self.generation

    def submit(self, title: str, factory: Callable[[], Generator], on_result: Callable[[object], None] | None = None,
               on_error: Callable[[str], None] | None = None, on_started: Callable[[], None] | None = None,
               on_finished: Callable[[str], None] | None = None) -> RunningJob:
        """Queue ``factory``: called on the GUI thread when the job's turn comes (so what it reads is
        current), it returns the generator to run. ``on_result`` gets its return value;
        ``on_started`` and ``on_finished`` (its outcome) are how a controller announces its own job
        (connected before the job can start, which may be at once)."""
        job = RunningJob(title, factory)  # no Qt parent: freed once the runner and the caller let go
        job.on_result, job.on_error = on_result, on_error  # called directly, so their errors are caught
        if on_started is not None:
            job.started.connect(on_started)
        if on_finished is not None:
            job.finished.connect(on_finished)
        self._queue.append(job)
        if self._current is None:
            self._start_next()
        return job

    def cancel(self) -> None:
        """Stop the running job at its next yield; queued jobs still run."""
        if self._current is not None:
            self._current.quit()

    def cancel_all(self) -> None:
        self._queue.clear()
        self.cancel()

    def shutdown(self, msecs: int = 30_000) -> bool:
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
        job = self._current = self._queue.popleft()
        job.generation = self.generation
        try:
            generator = job.factory()  # on the GUI thread: what the factory snapshots is consistent
        except Exception as err:  # noqa: BLE001  (any failure ends this job, never the queue)
            self._fail(job, self._message(job, err))
            self._finish(job)
            return
        if self._thread is None or not self._thread.is_alive():
            GuiThreadCollector.acquire()
            self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
            self._thread.start()
        job.started.emit()
        self.started.emit(job.title)
        self._inbox.put((job, generator))

    @Slot(object, object)
    def _on_yielded(self, job: RunningJob, step) -> None:
        if job is self._current and isinstance(step, Progress) and job.outcome != "cancelled":
            job.yielded.emit(step)
            self.progress.emit(step)

    @Slot(object, object)
    def _on_returned(self, job: RunningJob, value) -> None:
        if job is not self._current or job.outcome == "cancelled":
            return
        if job.generation != self.generation:
            job.outcome = "stale"
            return
        try:
            if job.on_result is not None:
                job.on_result(value)
        except Exception as err:  # noqa: BLE001  (a bug in a result slot must not take the window down)
            self._fail(job, self._message(job, err))
            return
        job.returned.emit(value)

    @Slot(object, object)
    def _on_errored(self, job: RunningJob, err: Exception) -> None:
        if job is self._current:
            self._fail(job, self._message(job, err))

    @Slot(object)
    def _on_ended(self, job: RunningJob) -> None:
        if job is self._current:
            self._finish(job)

    def _message(self, job: RunningJob, err: BaseException) -> str:
        """One line for the user: an InputError as it is; anything else is a bug of ours, logged
        with its traceback and shown without internals."""
        if isinstance(err, InputError):
            return str(err)
        log.error("%s failed:\n%s", job.title, "".join(traceback.format_exception(err)))
        return f"{job.title} failed: an internal error ({first_line(err)[:120]}); details are in the log"

    def _fail(self, job: RunningJob, message: str) -> None:
        job.outcome = "failed"
        if job.on_error is not None:
            job.on_error(message)
        job.errored.emit(message)
        self.failed.emit(job.title, message)

    def _finish(self, job: RunningJob) -> None:
        self._current = None
        job.finished.emit(job.outcome)
        self.finished.emit(job.title, job.outcome)
        self._start_next()

    # --- job thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        bridge = self._bridge
        while True:
            item = self._inbox.get()
            if item is None:
                return
            job, generator = item
            try:
                while True:
                    if job.abort_requested:
                        generator.close()  # runs the generator's cleanup at the yield it was at
                        break
                    try:
                        step = next(generator)
                    except StopIteration as stop:
                        bridge.returned.emit(job, stop.value)
                        break
                    bridge.yielded.emit(job, step)
            except Exception as err:  # noqa: BLE001  (reported on the GUI thread)
                try:
                    bridge.errored.emit(job, err)
                except RuntimeError:  # the window is gone
                    return
            try:
                bridge.ended.emit(job)
            except RuntimeError:
                return
