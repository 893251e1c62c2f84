"""JAX's persistent compilation cache, so a second run on the same shapes skips compiling.

The CLI turns it on by default in ``<nst_jax cache>/jax-compile`` (``$NST_JAX_CACHE_DIR`` or
``~/.cache/nst_jax``); ``--compile-cache DIR`` moves it, ``--compile-cache off`` (or
``NST_JAX_COMPILE_CACHE=off``) disables it. Library users call :func:`enable` themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from nst_jax.files.weights import cache_dir

OFF = ("off", "0", "none", "")


def default_dir() -> Path:
    """``jax-compile`` in nst_jax's cache folder."""
    return cache_dir() / "jax-compile"


def resolve(option: str | None) -> Path | None:
    """The cache folder from an option value or ``$NST_JAX_COMPILE_CACHE``; ``None``: off."""
    value = option if option is not None else os.environ.get("NST_JAX_COMPILE_CACHE")
    if value is None:
        return default_dir()
    return None if value.strip().lower() in OFF else Path(value).expanduser()


def chosen(option: str | None) -> bool:
    """Whether the cache folder was chosen (``--compile-cache`` or
    ``$NST_JAX_COMPILE_CACHE``) rather than the default."""
    return option is not None or os.environ.get("NST_JAX_COMPILE_CACHE") is not None


def enable(folder: str | os.PathLike) -> Path:
    """Cache every compiled program in ``folder`` (created if missing).

    Every program is cached, however quick to compile: a run compiles several small ones
    (targets, optimizer start) besides the step, and together they are most of a second.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
