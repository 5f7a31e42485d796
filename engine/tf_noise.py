"""TensorFlow's C++ log lines that tell our users nothing, kept off the terminal of the CLI and the window.

Two kinds reach the terminal whatever ``TF_CPP_MIN_LOG_LEVEL`` says:

- start-up notices written before TensorFlow's logging is initialised (absl's "All log messages
  before absl::InitializeLog() ...", oneDNN's "custom operations are on", the CPU feature notice),
  once per shared library that TensorFlow loads, so twice;
- at every new graph, ``tfg_optimizer_hook ... Node .../activation_1/Relu has an empty op name``
  and ``remapper failed: ... Op type not registered ''``. Their cause is inside TensorFlow, not in
  a file or in how we rebuild a network: with oneDNN on, Grappler's remapper fuses a Dense layer's
  MatMul + bias + Add + ReLU (DeepID's ``fc_1 + fc_2 -> activation_1``) into a node that its MLIR
  passes then cannot read. Every DeepID network shows it (the demo, the CSAW full model, a
  weights-only one rebuilt), a Dense without bias does not, and the passes that fail are skipped,
  so answers are unaffected. Switching the remapper off silences it but made a plain prediction
  of the CSAW network about twice as slow here; switching oneDNN off changes the numerics. So
  the lines are filtered, nothing else.

:func:`install` puts a filter between the process's standard error (file descriptor 2, where the
C++ code writes) and the terminal: a thread passes on every line except those above. Only a real
command-line or window process installs it (``main.py``, the ``badnet-inspector`` script), never
an import, so tests and users of the engine as a library see everything.
"""

from __future__ import annotations

import atexit
import os
import re
import threading

NOISE = (
    re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(rb"[IW]\d{4} [^\]]*\] oneDNN custom operations are on"),
    re.compile(rb"[IW]\d{4} [^\]]*cpu_feature_guard\.cc:\d+\]"),
    re.compile(rb"To enable the following instructions: .* in other operations, rebuild TensorFlow"),
    re.compile(rb"E\d{4} [^\]]*tfg_optimizer_hook\.cc:\d+\] .*(has an empty op name|Op type not registered '')"),
    re.compile(rb"E\d{4} [^\]]*meta_optimizer\.cc:\d+\] .*(remapper|tfg_optimizer).* failed: .*"
               rb"(Op type not registered ''|has an empty op name)"),
    re.compile(rb"\twhen importing GraphDef to MLIR module in GrapplerHook"),
)

_installed: tuple[int, threading.Thread] | None = None


def is_noise(line: bytes) -> bool:
    """Whether one line (without its newline) is TensorFlow chatter to drop."""
    return any(p.match(line) for p in NOISE)


def _pump(read_fd: int, out_fd: int) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
        if kept:
            os.write(out_fd, kept)
    if pending and not is_noise(pending):
        os.write(out_fd, pending)
    os.close(read_fd)


def install() -> bool:
    """Filter file descriptor 2 from now until the process ends; False where it cannot (no fd 2)."""
    global _installed
    if _installed is not None:
        return True
    try:
        terminal = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except OSError:
        return False
    thread = threading.Thread(target=_pump, args=(read_fd, terminal), name="tf-noise-filter", daemon=True)
    thread.start()
    _installed = (terminal, thread)
    atexit.register(_uninstall)
    return True


def terminal_fd() -> int | None:
    """The descriptor of the real standard error the filter writes to (None when not installed):
    for output that must reach the terminal unfiltered, such as a progress bar's redraws."""
    return None if _installed is None else _installed[0]


def _uninstall() -> None:
    """Put the terminal back on fd 2 and let the filter pass on what it still holds."""
    global _installed
    if _installed is None:
        return
    terminal, thread = _installed
    _installed = None
    try:
        import sys

        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    os.dup2(terminal, 2)  # the pipe's last writer closes: the thread reads to the end
    thread.join(timeout=2.0)
