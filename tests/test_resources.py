"""Resources: remat, the memory estimate and refusal, the persistent compilation cache."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import cli, compile_cache, memory
from nst_jax.config import StyleConfig

FAST = StyleConfig(steps=2, steps_per_call=2)


def test_remat_gives_the_same_loss_and_gradient(params, content_image, style_image):
    """jax.checkpoint per block recomputes, it does not change the function (float32, 1e-5)."""
    image = jnp.asarray(content_image)
    results = []
    for remat in (False, True):
        config = FAST.replace(remat=remat)
        targets = nst_jax.make_targets(params, image, style_image, config)
        loss = functools.partial(
            lambda x, t, c: nst_jax.loss_fn(params, x, t, c)[0], t=targets, c=config
        )
        results.append(jax.jit(jax.value_and_grad(loss))(image + 0.01))
    (loss, grad), (loss_r, grad_r) = results
    np.testing.assert_allclose(loss_r, loss, rtol=1e-5)
    np.testing.assert_allclose(grad_r, grad, rtol=1e-4, atol=1e-5 * float(jnp.abs(grad).max()))


def test_estimate_refuses_a_size_that_does_not_fit():
    needed = memory.estimate_bytes(FAST, 1, 64, 96)
    # --remat is suggested only off CPU, where it can save memory.
    hint = "" if jax.default_backend() == "cpu" else ", or add --remat"
    with pytest.raises(MemoryError, match=rf"about --max-dim \d+ fits{hint}$"):
        memory.check_fits(FAST, 1, 64, 96, available=needed // 2)
    assert memory.check_fits(FAST, 1, 64, 96, available=needed * 2) >= needed


def test_auto_falls_back_to_direct_convolution_when_only_that_fits(monkeypatch):
    """Winograd's tile planes and transformed kernels need more memory; "auto" then runs the
    direct convolution instead of refusing, and explicit Winograd is refused with a hint.
    The process's own memory is held at 1 GiB: it moves by tens of MiB as the suite compiles,
    and this test is about XLA's figures for the two programs."""
    monkeypatch.setattr(memory, "process_rss_bytes", lambda: 2**30)
    # 200 steps at 64 x 96 are 1.2 M pixel-steps: long enough for "auto" to choose Winograd.
    auto = StyleConfig(steps=200, steps_per_call=2)
    assert memory.uses_winograd(auto, 1, 64, 96) == (jax.default_backend() == "cpu")
    if not memory.uses_winograd(auto, 1, 64, 96):
        pytest.skip("auto is direct off CPU")
    winograd = memory.estimate_bytes(auto, 1, 64, 96)
    direct = memory.estimate_bytes(auto.replace(conv="direct"), 1, 64, 96)
    assert winograd > direct + 32 * 2**20  # the transformed kernels alone are ~45 MiB more
    between = (winograd + direct) // 2
    assert memory.fitting_config(auto, 1, 64, 96, available=between).conv == "direct"
    assert memory.fitting_config(auto, 1, 64, 96, available=2 * winograd) is auto
    with pytest.raises(MemoryError, match=r"or --conv direct \(less memory, slower\)$"):
        memory.fitting_config(auto.replace(conv="winograd"), 1, 64, 96, available=between)


def test_cli_refuses_before_any_work(tmp_path, weights_h5, content_image, style_image, capsys):
    for name, array in (("c.png", content_image), ("s.png", style_image)):
        nst_jax.image.save(tmp_path / name, array)
    out = tmp_path / "out.png"
    argv = ["stylize", str(tmp_path / "c.png"), "--style", str(tmp_path / "s.png"),
            "-o", str(out), "--weights", weights_h5, "--memory-limit", "0.01",
            "--steps", "2", "--steps-per-call", "2", "--compile-cache", "off"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GiB available" in err and "--max-dim" in err
    assert str(tmp_path / "c.png") in err
    assert not out.exists() and not (tmp_path / "out.png.ckpt").exists()


def test_compile_cache_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("NST_JAX_COMPILE_CACHE", raising=False)
    assert compile_cache.resolve(None) == compile_cache.default_dir()
    assert compile_cache.resolve("off") is None
    assert compile_cache.resolve(str(tmp_path)) == tmp_path
    monkeypatch.setenv("NST_JAX_COMPILE_CACHE", "off")
    assert compile_cache.resolve(None) is None


def test_compile_cache_stores_programs(tmp_path):
    """In a process of its own (the cache is process-wide): a compiled program lands there."""
    import subprocess
    import sys

    code = (
        "import jax, jax.numpy as jnp; from nst_jax import compile_cache; "
        f"compile_cache.enable({str(tmp_path / 'cache')!r}); "
        "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert any((tmp_path / "cache").iterdir())


NO_SIDE_EFFECTS = """
import gc, logging, os, sys
import numpy as np
from PIL import Image
before = (dict(os.environ), Image.MAX_IMAGE_PIXELS, gc.isenabled(), gc.get_freeze_count(),
          logging.root.level, list(logging.root.handlers))
import nst_jax
from nst_jax import cli, vgg
from jax._src import xla_bridge  # private, but the one place that says it
assert not xla_bridge.backends_are_initialized(), "importing nst_jax started a JAX backend"
image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
config = nst_jax.StyleConfig(steps=2, steps_per_call=1, style_layers=("block1_conv1",),
                             content_layers=("block2_conv1",))
nst_jax.stylize(image, image, params=vgg.random_params(0), config=config)
after = (dict(os.environ), Image.MAX_IMAGE_PIXELS, gc.isenabled(), gc.get_freeze_count(),
         logging.root.level, list(logging.root.handlers))
for name, a, b in zip(("environ", "MAX_IMAGE_PIXELS", "gc enabled", "gc freeze count",
                       "log level", "log handlers"), before, after):
    assert a == b, f"{name} changed: {a!r} -> {b!r}"
print("unchanged")
"""


def test_import_and_stylize_leave_the_process_as_it_was():
    """In a fresh interpreter: os.environ, Pillow's pixel limit, the garbage collector and the
    logging configuration are the same after ``import nst_jax`` and a ``stylize`` call; and
    the import starts no JAX backend, so a program can still set XLA_FLAGS after it."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", NO_SIDE_EFFECTS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("unchanged")


def test_program_xla_flags_never_override_the_users(monkeypatch):
    """configure_for_program's flags are added to XLA_FLAGS, never in place of the user's."""
    from nst_jax import process

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert process.set_xla_flags().split() == list(process.XLA_FLAGS)
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot --xla_force_host_platform_device_count=2"
    monkeypatch.setenv("XLA_FLAGS", mine)
    assert process.set_xla_flags() == f"{mine} {process.XLA_FLAGS[0]}"


def test_memory_is_trimmed_after_real_compilations_only(monkeypatch):
    from nst_jax import process

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
