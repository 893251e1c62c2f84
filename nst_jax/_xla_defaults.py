"""XLA settings nst_jax prefers, applied when the package is imported.

XLA:CPU's default scheduler orders work for concurrency and keeps many more buffers alive at
once; its memory-minimising scheduler ran nst_jax's step as fast (512 px, 2 cores: 3739 vs
3782 ms) with 27% less peak memory (1254 vs 1725 MiB; ``scripts/bench.py --estimate``).

Applied only if ``XLA_FLAGS`` does not already mention the flag, and not at all with
``NST_JAX_XLA_DEFAULTS=0``. XLA reads ``XLA_FLAGS`` when its first backend starts, so this has
no effect if JAX computed anything before nst_jax was imported.
"""

import os

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

if os.environ.get("NST_JAX_XLA_DEFAULTS", "1") != "0":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in _flags:
        os.environ["XLA_FLAGS"] = f"{_flags} {SCHEDULER_FLAG}".strip()
