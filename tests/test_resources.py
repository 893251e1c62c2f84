"""Resources: remat, the memory estimate and refusal, the persistent compilation cache."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.cli import main as cli
from nst_jax.config import StyleConfig
from nst_jax.files import compile_cache
from nst_jax.run import memory, tile_memory

from conftest import compiles_recorded

FAST = StyleConfig(steps=2, steps_per_call=2)


@pytest.mark.slow
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
    fixed = memory.process_rss_bytes()  # what the process holds; the rest grows with size
    half = fixed + (needed - fixed) // 2
    # remat is suggested only off CPU, where it can save memory; the library names settings.
    hint = "" if jax.default_backend() == "cpu" else ", or remat=True"
    with pytest.raises(MemoryError, match=rf"about max_dim=\d+ fits{hint}$"):
        memory.check_fits(FAST, 1, 64, 96, available=half)
    assert memory.check_fits(FAST, 1, 64, 96, available=needed * 2) >= needed


def test_whole_image_arrays_over_the_memory_are_refused_without_compiling(monkeypatch):
    """``check_whole_arrays_fit``: the process plus the whole-image arrays every step holds
    over the memory is refused from arithmetic, naming a size at which this check passes
    (and 2% more at which it does not); room for them passes; unknown memory passes."""
    monkeypatch.setattr(memory, "process_rss_bytes", lambda: 2**30)
    config = StyleConfig(tile="auto")
    check = functools.partial(tile_memory.check_whole_arrays_fit, config, 1)
    # 1500 x 1000 px: 10 float32 RGB images are 180 MB, so 100 MB of room is too little.
    available = 2**30 + 100 * 2**20

    with compiles_recorded() as compiled, pytest.raises(MemoryError) as caught:
        check(1000, 1500, available, "big.png")
    assert compiled == []
    refused = [str(caught.value)]
    assert refused[0].startswith("big.png: 1500x1000 px needs more than 1.2 GiB in any tiles "
                                 "(what the process holds, 1.0 GiB, and the whole-image arrays, "
                                 "0.2 GiB), 1.1 GiB available; at most about max_dim=")  # fmt: skip
    side = int(refused[0].split("at most about max_dim=")[1].split()[0])
    check(side * 2 // 3, side, available)  # the size named passes this check
    with pytest.raises(MemoryError):
        check(int(side * 1.02) * 2 // 3, int(side * 1.02), available)
    check(1000, 1500, 2**31)
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    check(1000, 1500, None)  # memory unknown: nothing to refuse by
    with pytest.raises(MemoryError, match="no image size fits$"):
        check(1000, 1500, 2**29)  # less than the process holds
    with pytest.raises(ValueError, match="must be positive, got 1, 0, 1500"):
        check(0, 1500, 2**29)


@pytest.mark.slow
def test_a_size_past_the_whole_arrays_check_is_refused_by_the_tiled_estimate(monkeypatch):
    """Room for the whole-image arrays (4 * (10 * 1500 * 1000 * 3 + block2_conv2's 750 * 500
    * 128) bytes, 354.8 MiB) but not for a window's pass besides (5 MiB left): the estimate
    compiles the window's programs and refuses naming the smallest tile tried."""
    monkeypatch.setattr(memory, "process_rss_bytes", lambda: 2**30)
    # Untiled, it would not fit either (XLA's figure for this step is over 1 GiB): stated
    # rather than compiled, for the suite's time.
    monkeypatch.setattr(memory, "estimate_bytes", lambda *args: 2**40)
    config = StyleConfig(tile="auto", content_layers=("block2_conv2",),
                         style_layers=("block1_conv1", "block2_conv1"))  # fmt: skip
    with pytest.raises(MemoryError, match=r"needs about [\d.]+ GiB even in \d+ px tiles, "):
        tile_memory.fitting_tile(config, 1, 1000, 1500, available=2**30 + 360 * 2**20)


@pytest.mark.slow
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
    with pytest.raises(MemoryError, match=r"or conv=direct \(less memory, slower\)$"):
        memory.fitting_config(auto.replace(conv="winograd"), 1, 64, 96, available=between)


@pytest.mark.slow
def test_cli_refuses_before_any_work(tmp_path, weights_h5, content_image, style_image, capsys):
    for name, array in (("c.png", content_image), ("s.png", style_image)):
        nst_jax.image.save(tmp_path / name, array)
    out = tmp_path / "out.png"
    argv = ["stylize", str(tmp_path / "c.png"), "--style", str(tmp_path / "s.png"),
            "-o", str(out), "--weights", weights_h5, "--memory-limit", "0.01",
            "--steps", "2", "--steps-per-call", "2", "--compile-cache", "off"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GiB available" in err and "fits" in err
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
    code = (
        "import jax, jax.numpy as jnp; from nst_jax.files import compile_cache; "
        f"compile_cache.enable({str(tmp_path / 'cache')!r}); "
        "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert any((tmp_path / "cache").iterdir())


def test_damaged_cache_entries_are_found_by_their_stream(tmp_path):
    """A zlib entry cut short or corrupted is removed; a whole one, another module's and a
    payload in another format (zstd's magic) are kept."""
    program = bytes(range(256)) * 4000
    whole = zlib.compress(program)
    corrupt = bytearray(whole)
    corrupt[len(corrupt) // 2] ^= 0xFF
    entries = {
        "jit_f-aaa-cache": whole,
        "jit_f-bbb-cache": whole[: len(whole) // 2],
        "jit_f-ccc-cache": bytes(corrupt),
        "jit_f-ddd-cache": b"\x28\xb5\x2f\xfd" + b"\0" * 10,
        "jit_g-eee-cache": whole[:10],
        "jit_f-fff-atime": b"\0" * 8,
        "jit_f-ggg-cache": b"",  # opened, then killed before the first byte
    }
    for name, payload in entries.items():
        (tmp_path / name).write_bytes(payload)
    (tmp_path / "jit_f-hhh-cache").mkdir()
    os.mkfifo(tmp_path / "jit_f-iii-cache")  # reading it would wait for a writer for ever
    damaged = ["jit_f-bbb-cache", "jit_f-ccc-cache", "jit_f-ggg-cache"]
    removed = compile_cache.remove_damaged(tmp_path, "jit_f")
    assert sorted(p.name for p in removed) == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(n for n in entries if n not in damaged), "jit_f-hhh-cache", "jit_f-iii-cache"]
    )
    assert compile_cache.remove_damaged(tmp_path, "jit_[g]") == []  # glob characters literal
    assert compile_cache.remove_damaged(tmp_path / "missing", "jit_g") == []
    with pytest.raises(TypeError, match="module_name"):
        compile_cache.remove_damaged(tmp_path, None)


def test_a_cut_cache_entry_is_mended_with_one_line(tmp_path):
    """In processes of their own: JAX's entries cut short (a run killed while writing them)
    are read with JAX's warning; the command's hook removes them, says so once, and the
    programs are cached whole again (JAX would otherwise keep the cut entries for ever)."""
    cache = tmp_path / "cache"
    code = (
        "import warnings, jax, jax.numpy as jnp; from nst_jax.cli import main; "
        "from nst_jax.files import compile_cache; "
        f"compile_cache.enable({str(cache)!r}); "
        "warnings.showwarning = main._mending_cache(warnings.showwarning); "
        "[jax.jit(f)(jnp.ones(3)).block_until_ready() for f in (jnp.sin, jnp.cos)]"
    )
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert run().stderr == ""
    entries = sorted(cache.glob("*-cache"))
    assert len(entries) >= 2, entries  # sin, cos and the programs of jnp.ones
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:40])
    err = run().stderr
    assert err.count("\n") == 1 and "removed a damaged entry" in err and str(cache) in err, err
    assert sorted(cache.glob("*-cache")) == entries
    assert all(len(e.read_bytes()) > 40 for e in entries)  # written whole again
    assert run().stderr == ""
