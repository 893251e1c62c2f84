"""Process-wide settings that only a program may choose for itself: the ``nst-jax`` command
and the benchmark scripts call :func:`configure_for_program`; ``import nst_jax`` and
``stylize`` never touch the process (its environment, Pillow's limits, the garbage collector,
logging).

- After each real compilation, the memory the compiler freed is handed back to the operating
  system (glibc's ``malloc_trim``). Left in the C heap it stays in the process's resident set
  under the step's own working memory (512 px: about 220 MiB of peak RSS).
- Objects alive at start-up are frozen out of the garbage collector's reach: tracing a step
  makes tens of thousands of small objects, which set off full collections over everything
  JAX and Flax keep alive (a third of a warm start's tracing time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import jax

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# Compilations (or cache loads) shorter than this leave too little behind to be worth a trim.
_TRIM_AFTER_S = 0.1
_configured = False


def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` where the C library is another (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def configure_for_program() -> None:
    """Trim the C heap after each compilation and freeze start-up objects out of the garbage
    collector. For programs (the CLI, benchmarks), never called by the library; idempotent."""
    global _configured
    if _configured:
        return
    _configured = True
    trim = _malloc_trim()
    if trim is not None:

        def after_event(event: str, duration: float, **_) -> None:
            if event == _COMPILE_EVENT and duration >= _TRIM_AFTER_S:
                trim(0)

        jax.monitoring.register_event_duration_secs_listener(after_event)
    gc.freeze()
