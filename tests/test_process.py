"""nst_jax and the process it runs in: the library changes nothing in it; the settings a
program (the CLI, a benchmark) chooses for itself are added, never imposed."""

from __future__ import annotations

import jax
import pytest

NO_SIDE_EFFECTS = """
import gc, logging, os, sys
import numpy as np
from PIL import Image
before = (dict(os.environ), Image.MAX_IMAGE_PIXELS, gc.isenabled(), gc.get_freeze_count(),
          logging.root.level, list(logging.root.handlers))
import nst_jax
from nst_jax.files import keras_h5
from nst_jax.cli import main as cli
from nst_jax.core import vgg
from jax._src import xla_bridge  # private, but the one place that says it
assert not xla_bridge.backends_are_initialized(), "importing nst_jax started a JAX backend"
image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
config = nst_jax.StyleConfig(steps=2, steps_per_call=1, style_layers=("block1_conv1",),
                             content_layers=("block2_conv1",))
nst_jax.stylize(image, image, params=keras_h5.random_params(0), config=config)
# The command's lifecycle called from Python (a notebook's run_single) leaves JAX's
# settings alone too: the persistent compilation cache is the command's choice.
import jax, tempfile
from pathlib import Path
from nst_jax import session
folder = Path(tempfile.mkdtemp())
Image.fromarray((image * 255).astype(np.uint8)).save(folder / "c.png")
keras_h5.write_keras_h5(keras_h5.random_params(0), folder / "w.h5", naming="official")
cache_settings = lambda: [getattr(jax.config, "jax_" + name) for name in (
    "compilation_cache_dir", "persistent_cache_min_compile_time_secs",
    "persistent_cache_min_entry_size_bytes")]
before += (cache_settings(),)
session.run_single(session.StylizeRequest(
    contents=(str(folder / "c.png"),), styles=(str(folder / "c.png"),),
    output=str(folder / "out.png"), config=config, weights=str(folder / "w.h5")))
assert (folder / "out.png").is_file()
after = (dict(os.environ), Image.MAX_IMAGE_PIXELS, gc.isenabled(), gc.get_freeze_count(),
         logging.root.level, list(logging.root.handlers), cache_settings())
for name, a, b in zip(("environ", "MAX_IMAGE_PIXELS", "gc enabled", "gc freeze count",
                       "log level", "log handlers", "JAX's compilation cache"), before, after):
    assert a == b, f"{name} changed: {a!r} -> {b!r}"
print("unchanged")
"""


@pytest.mark.slow
def test_import_and_stylize_leave_the_process_as_it_was(monkeypatch):
    """In a fresh interpreter: os.environ, Pillow's pixel limit, the garbage collector and the
    logging configuration are the same after ``import nst_jax``, a ``stylize`` call and a
    ``session.run_single`` (and JAX's compilation cache settings after the latter); and the
    import starts no JAX backend, so a program can still set XLA_FLAGS after it."""
    import subprocess
    import sys

    # As in a user's shell: the suite's own "off" would hide a cache turned on by default.
    monkeypatch.delenv("NST_JAX_COMPILE_CACHE")

    done = subprocess.run(
        [sys.executable, "-c", NO_SIDE_EFFECTS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("unchanged")


def test_program_xla_flags_never_override_the_users(monkeypatch):
    """configure_for_program's flags are added to XLA_FLAGS, never in place of the user's."""
    from nst_jax.session import process

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert process.set_xla_flags().split() == list(process.XLA_FLAGS)
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot --xla_force_host_platform_device_count=2"
    monkeypatch.setenv("XLA_FLAGS", mine)
    assert process.set_xla_flags() == f"{mine} {process.XLA_FLAGS[0]}"


def test_memory_is_trimmed_after_real_compilations_only(monkeypatch):
    from nst_jax.session import process

    calls = []
    monkeypatch.setattr(process, "_malloc_trim", lambda: calls.append)
    listener = process.trim_after_compiles()
    try:
        event = "/jax/core/compile/backend_compile_duration"  # JAX's name for it
        jax.monitoring.record_event_duration_secs(event, 0.01, fun_name="jit(small)")
        jax.monitoring.record_event_duration_secs("/jax/other", 5.0)
        assert calls == []
        jax.monitoring.record_event_duration_secs(event, 2.0, fun_name="jit(step)")
        assert calls == [0]  # malloc_trim(0): trim every arena, keep no padding
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
