"""JAX's persistent compilation cache, so a second run on the same shapes skips compiling.

The CLI turns it on by default in ``<nst_jax cache>/jax-compile`` (``$NST_JAX_CACHE_DIR`` or
``~/.cache/nst_jax``); ``--compile-cache DIR`` moves it, ``--compile-cache off`` (or
``NST_JAX_COMPILE_CACHE=off``) disables it. Library users call :func:`enable` themselves.

JAX writes an entry in place (``Path.write_bytes``) and never replaces one that exists: a
process killed while writing leaves a cut entry that every later run fails to read, warns
about and compiles again. :func:`remove_damaged` finds such entries by their compressed
stream (JAX compresses each) and removes them, so the next compilation writes a whole one;
the command calls it when JAX warns. Only zlib entries are checked (JAX's choice unless
``zstandard`` is installed).
"""

from __future__ import annotations

import glob
import os
import stat
import zlib
from pathlib import Path

import jax

from nst_jax.files.weights import cache_dir

OFF = ("off", "0", "none", "")
# JAX's LRUCache names an entry <cache key>-cache, the key starting with the module's name.
ENTRY_SUFFIX = "-cache"


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


def _whole(payload: bytes) -> bool:
    """Whether a zlib-compressed entry reaches its stream's end. An empty one is cut (JAX
    opens the file before writing: a kill in between leaves it empty); entries in another
    format (zstd, where JAX finds it installed) are left to JAX."""
    if not payload:
        return False
    if payload[:1] != b"\x78":  # zlib's header at the default window size
        return True
    stream = zlib.decompressobj()
    try:
        while payload and not stream.eof:  # in pieces, so the output held stays small
            stream.decompress(payload[: 1 << 20], 1 << 24)
            payload = stream.unconsumed_tail + payload[1 << 20 :]
    except zlib.error:
        return False
    return stream.eof


def remove_damaged(folder: str | os.PathLike, module_name: str) -> list[Path]:
    """Remove the entries of ``module_name`` in the cache ``folder`` whose compressed data
    is cut short or corrupt (module docstring); returns those removed.

    Raises:
      TypeError: ``module_name`` is not a string.
    """
    if not isinstance(module_name, str):
        raise TypeError(f"module_name must be a string, got {type(module_name).__name__}")
    removed = []
    for entry in sorted(Path(folder).glob(f"{glob.escape(module_name)}-*{ENTRY_SUFFIX}")):
        try:
            if not stat.S_ISREG(entry.stat().st_mode):
                continue  # a folder, or a pipe that reading would wait on for ever
            whole = _whole(entry.read_bytes())
        except OSError:
            continue  # gone, or unreadable: nothing this can mend
        if not whole:
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
