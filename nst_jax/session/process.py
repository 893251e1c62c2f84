"""The process a run lives in: settings only a program may choose for itself, the JAX
backend, and the persistent compilation cache.

The ``nst-jax`` command and the benchmark scripts call :func:`configure_for_program` first
thing; ``import nst_jax`` and ``stylize`` never touch the process (its environment,
Pillow's limits, the garbage collector, logging), so a library user who wants these calls
it too.

- XLA:CPU flags, through ``XLA_FLAGS``, which XLA reads once, when its first backend starts
  (so before any JAX computation). JAX's per-function ``compiler_options`` were measured to
  leave these two without effect, hence the environment (figures: scripts/README.md,
  "Design measurements"):

  - ``--xla_cpu_enable_concurrency_optimized_scheduler=false``: the memory-minimising
    scheduler runs the step as fast as the default one with less peak memory.
  - ``--xla_cpu_experimental_ynn_fusion_type=individual_convolution,reduce``: the YNNPACK
    library keeps convolutions and reductions, and the Winograd step's 400-odd channel
    products run on XLA's own dot emitter, which was faster for them and builds no kernels
    at a program's first run. Reductions stay with YNNPACK because XLA's own float32 sums
    were less exact.

  A flag ``XLA_FLAGS`` already names is left as the user set it.
- After each real compilation, the memory the compiler freed is handed back to the operating
  system (glibc's ``malloc_trim``). Left in the C heap it stays in the resident set under the
  step's own working memory.
- Objects alive at start-up are frozen out of the garbage collector's reach: tracing a step
  makes tens of thousands of small objects, which set off full collections over everything
  JAX and Flax keep alive (a third of a warm start's tracing time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

import jax

from nst_jax.errors import InputError, OutputError
from nst_jax.files import compile_cache
from nst_jax.session.outputs import check_folder

XLA_FLAGS = (
    "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    "--xla_cpu_experimental_ynn_fusion_type=individual_convolution,reduce",
)
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# Compilations (or cache loads) shorter than this leave too little behind to be worth a trim.
_TRIM_AFTER_S = 0.1
_configured = False


def set_xla_flags() -> str:
    """Add nst_jax's XLA:CPU flags to ``XLA_FLAGS`` (those it does not name already); returns
    the new value. Has effect only before JAX's first computation."""
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in XLA_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags
    return flags


def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` where the C library is another (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim_after_compiles():
    """Hand the C heap back to the system after each real compilation; returns the JAX
    monitoring listener registered (``None`` where there is no ``malloc_trim``)."""
    trim = _malloc_trim()
    if trim is None:
        return None

    def after_event(event: str, duration: float, **_) -> None:
        if event == _COMPILE_EVENT and duration >= _TRIM_AFTER_S:
            trim(0)

    jax.monitoring.register_event_duration_secs_listener(after_event)
    return after_event


def configure_for_program() -> None:
    """XLA flags, the heap trim and a garbage-collector freeze, for a program (the CLI, a
    benchmark) that calls it before any JAX computation; never called by the library.
    Idempotent."""
    global _configured
    if _configured:
        return
    _configured = True
    set_xla_flags()
    trim_after_compiles()
    gc.freeze()


def check_backend() -> None:
    """Refuse, in one line, a JAX backend that cannot start (``JAX_PLATFORMS=gpu`` on a
    machine without one), before any work."""
    try:
        jax.devices()
    except RuntimeError as e:
        platforms = os.environ.get("JAX_PLATFORMS", "")
        raise InputError(f"JAX_PLATFORMS={platforms!r}: {str(e).splitlines()[0]}") from None


def check_chosen_cache(option: str | None) -> None:
    """A compilation cache folder given (``option``, or ``$NST_JAX_COMPILE_CACHE``) must be
    writable: checked with the outputs, before any work."""
    cache = compile_cache.resolve(option)
    if cache is not None and compile_cache.chosen(option):
        check_folder(cache, "--compile-cache")


def enable_cache(option: str | None) -> str | None:
    """Turn on the persistent compilation cache (``option``: a folder, ``off``, or ``None``
    for the default); returns a warning when the default cannot be used (it only costs
    compile time, so the run goes on). A chosen folder that cannot be written was refused
    with the outputs (:func:`check_chosen_cache`)."""
    cache = compile_cache.resolve(option)
    if cache is None:
        return None
    try:
        check_folder(cache, "--compile-cache")
    except OutputError as e:
        if compile_cache.chosen(option):
            raise
        return f"warning: no compilation cache: {e}"
    compile_cache.enable(cache)
    return None
