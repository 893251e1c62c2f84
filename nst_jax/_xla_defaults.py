"""XLA settings nst_jax prefers, applied when the package is imported.

- XLA:CPU's default scheduler orders work for concurrency and keeps many more buffers alive at
  once; its memory-minimising scheduler ran nst_jax's step as fast (512 px, 2 cores: 3739 vs
  3782 ms) with 27% less peak memory (1254 vs 1725 MiB; ``scripts/bench.py --estimate``).
- XLA:CPU hands matrix multiplications, convolutions and reductions to the YNNPACK library by
  default; nst_jax keeps it for convolutions and reductions only
  (``--xla_cpu_experimental_ynn_fusion_type=individual_convolution,reduce``), so the
  Winograd step's 400-odd channel products run on Eigen. They ran faster (512 px step: 1765
  vs 1995 ms), and a program's first run no longer spends 0.5-1 s building YNNPACK kernels
  for them, which no compilation cache keeps (64 px Winograd step: first run 130 vs 643 ms).
  Convolutions stay with YNNPACK because without it float64 convolutions ran 10x slower
  (64 x 96 x 64: 83 vs 8.8 ms); reductions because XLA's own float32 sums were less exact
  (the total variation of a 64 x 96 test image: 1.1e-6 vs 2e-8 off its float64 value).
- After each real compilation, the memory the compiler freed is handed back to the operating
  system (glibc's ``malloc_trim``). Left in the C heap it stayed in the process's resident
  set, under the step's own working memory: a 512 px step's peak RSS was 224 MiB higher
  (1289 vs 1065 MiB).

The flags are applied only if ``XLA_FLAGS`` does not already mention them, and nothing here is
done with ``NST_JAX_XLA_DEFAULTS=0``. XLA reads ``XLA_FLAGS`` when its first backend starts, so
the flags have no effect if JAX computed anything before nst_jax was imported.
"""

import ctypes
import ctypes.util
import os

import jax

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution,reduce"
FLAGS = (SCHEDULER_FLAG, YNN_FLAG)

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# Compilations (or cache loads) shorter than this leave too little behind to be worth a trim.
_TRIM_AFTER_S = 0.1


def _apply_flags() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags


def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` where the C library is another (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _trim_after_compiles():
    """Register the listener that trims after each compilation; returns it (or ``None``)."""
    trim = _malloc_trim()
    if trim is None:
        return None

    def after_event(event: str, duration: float, **_) -> None:
        if event == _COMPILE_EVENT and duration >= _TRIM_AFTER_S:
            trim(0)

    jax.monitoring.register_event_duration_secs_listener(after_event)
    return after_event


if os.environ.get("NST_JAX_XLA_DEFAULTS", "1") != "0":
    _apply_flags()
    _trim_after_compiles()
