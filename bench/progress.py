"""What the command line's progress bar costs: a real job (the demo's confidence calibration on
every clean face, one network pass) and a job of many tiny steps, each run with the bar drawn on
a pseudo-terminal (ours) and with no display at all (the plain way), taking turns, in one run.

Target (issue 29): the bar adds at most a few percent to a real job. It redraws at most ten times
a second from rich's own thread, so a job's steps only update a counter.
"""

from __future__ import annotations

import os
import pty
import statistics
import threading
import time

from _common import ROOT  # noqa: F401  (puts the project on sys.path)

from cli import console  # noqa: E402
from engine.progress import Progress, run  # noqa: E402


def tiny_steps(n: int):
    for i in range(n):
        yield Progress(i + 1, n, "tiny steps")
    return n


def demo_calibration():
    from engine import workflow
    from engine.demo import DEMO_CLEAN_VALIDATION
    from engine.workflow import CalibrateRequest

    request = CalibrateRequest(detector="confidence", sample=0)
    return workflow.run(request, workflow.Sources(clean=DEMO_CLEAN_VALIDATION), "1/255")


def drain(fd: int) -> None:
    """Read the terminal's other end, as a terminal would, so the bar never blocks on a full pipe."""
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def timed(make, with_bar: bool, terminal) -> float:
    start = time.perf_counter()
    if with_bar:
        bar = console.Bar(terminal)
        try:
            run(make(), bar)
        finally:
            bar.close()
    else:
        run(make())
    return time.perf_counter() - start


def main() -> None:
    parent, child = pty.openpty()
    threading.Thread(target=drain, args=(parent,), daemon=True).start()
    terminal = os.fdopen(child, "w", buffering=1)
    assert terminal.isatty()
    os.environ.setdefault("TERM", "xterm")
    demo_calibration_job = demo_calibration
    run(demo_calibration_job())  # the network traced and its predictions cached once, for both ways
    from engine import scoring

    for name, make, repeats in (("tiny steps (200,000 yields)", lambda: tiny_steps(200_000), 5),
                                ("demo calibration, confidence, every clean face", demo_calibration_job, 5)):
        ours, plain = [], []
        for _ in range(repeats):
            scoring.CACHE.clear()
            plain.append(timed(make, False, terminal))
            scoring.CACHE.clear()
            ours.append(timed(make, True, terminal))
        o, p = statistics.median(ours), statistics.median(plain)
        print(f"{name}: with the bar {o * 1000:8.1f} ms, no display {p * 1000:8.1f} ms, ratio {o / p:.3f}")


if __name__ == "__main__":
    main()
