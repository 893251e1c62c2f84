"""How the ``nst-jax`` command ends on SIGINT and SIGTERM: exit status 130 or 143, one line.

**Before the run owns any output** (settings, path and memory checks, loading, compiling,
until its first chunk ends) the process ends at once, with ``os._exit``: nothing has been
written (the checks only read, and their write probes are unnamed temporary files). A normal
Python exit there is what crashed: JAX compiles on a thread pool of its own while the main
thread waits, and an interrupt unwound the main thread and finalised the interpreter, which
destroyed the PjRt client under a compile thread still building its executable
(``SingleDeviceSharding::Create`` on a freed device: SIGSEGV, exit 139). ``os._exit`` skips
finalisation. A watcher thread woken through ``signal.set_wakeup_fd`` ends the process even
while the main thread waits inside such a compile.

**Once the run owns outputs**, a signal is recorded and the run stops at the next safe point
(the end of a chunk): it saves what it promised (the image and checkpoint of a single-result
run; the results of finished batches), says so in one line and ends with the signal's
status. A signal that arrives after the last chunk still ends with that status, once the
results are written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from nst_jax.session.control import Control

EXIT_BY_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Signals(Control):
    """The command's signal handling (module docstring), made by :func:`handling`: the
    lifecycles' :class:`~nst_jax.session.Control`, which also prints their notes."""

    def __init__(self, verbose: bool = False):
        self.received: int | None = None
        self.owning = False
        self.verbose = verbose
        self.start = time.monotonic()

    def phase(self, name: str) -> None:
        """Say (with ``--verbose``) that the command starts ``name``, with the seconds since it
        started: the command's own log of its phases."""
        if self.verbose:
            seconds = time.monotonic() - self.start
            print(f"nst-jax: phase {name} at {seconds:.3f} s", file=sys.stderr, flush=True)

    def own_outputs(self) -> None:
        """From now on the run writes: a signal waits for the next safe point."""
        if not self.owning:
            self.owning = True
            self.phase("owning outputs")

    def handle(self, signum: int) -> None:
        """A signal arrived: end at once before the run owns outputs, else record it."""
        if not self.owning:
            end_now(signum)
        self.received = signum

    def status(self) -> int | None:
        """The exit status the received signal asks for, or ``None``."""
        return None if self.received is None else EXIT_BY_SIGNAL[self.received]

    def stop_requested(self) -> bool:
        return self.received is not None

    def note(self, text: str) -> None:
        from nst_jax.cli.options import reword

        print(f"nst-jax: {reword(text)}", file=sys.stderr)

    def interrupted(self, message: str) -> int:
        """One line: the signal and what the run kept (``message``); the exit status."""
        name = signal.Signals(self.received).name if self.received else "stopped"
        print(f"nst-jax: {name} {message}", file=sys.stderr)
        return EXIT_BY_SIGNAL.get(self.received, 1)

    def ended(self) -> int:
        """0, or the status of a signal that came after the last step (the results are
        written: the line says so)."""
        if self.received is None:
            return 0
        name = signal.Signals(self.received).name
        print(f"nst-jax: {name} after the last step: every result is written", file=sys.stderr)
        return EXIT_BY_SIGNAL[self.received]


_ENDING = threading.Lock()


def end_now(signum: int) -> None:
    """One line and the signal's exit status, at once (no interpreter finalisation). The
    Python handler and the watcher thread may both get here: the second waits for the end."""
    _ENDING.acquire()
    os.write(2, b"nst-jax: interrupted\n")
    os._exit(EXIT_BY_SIGNAL.get(signum, 1))


@contextlib.contextmanager
def handling(verbose: bool = False) -> Iterator[Signals]:
    """SIGINT and SIGTERM handled as the module docstring says while the block runs; the
    handlers before it are put back after it (the command may run inside a test)."""
    signals = Signals(verbose)
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    previous = {signum: signal.getsignal(signum) for signum in EXIT_BY_SIGNAL}
    previous_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)

    def python_handler(signum, frame):  # the main thread, between bytecodes
        signals.handle(signum)

    def watch() -> None:  # at once, even while the main thread waits inside a compile
        while data := os.read(reader, 1):
            signals.handle(data[0])

    for signum in EXIT_BY_SIGNAL:
        signal.signal(signum, python_handler)
    watcher = threading.Thread(target=watch, name="nst-jax-signals", daemon=True)
    watcher.start()
    try:
        yield signals
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(writer)  # the watcher reads end-of-file and returns
        watcher.join()
        os.close(reader)
