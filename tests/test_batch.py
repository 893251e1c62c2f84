"""Batches: several contents and styles, hyperparameter sweeps, and sharding over devices.

Batch-vs-single comparisons over 20 steps run in float64. In float32 the two are equally correct
but round differently (XLA picks other convolution blockings for a batch of 4 than for 1), and
the tutorial's Adam turns rounding noise in near-zero gradients into full-size steps: measured
max abs pixel differences after 20 steps are 0.1-0.25 (scripts/float32_drift.py prints them).
In float64 the rounding is 1e-16, and the comparison isolates what batching must guarantee: the
same computation for every image. The first float32 steps are compared too.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.run import batching, devices, rows

from conftest import eight_bit_image, texture_image

STEPS = 20
PIXEL_TOL = 1e-5  # acceptance bound on max abs pixel difference
HEIGHT, WIDTH = 16, 24  # the smallest size block5_conv2 takes: these tests run many float64 steps


# The float64 comparisons stop at block3: XLA:CPU's float64 convolutions with 512 channels
# (blocks 4-5) are ~30x slower than the rest, and what batching must guarantee does not depend
# on depth. The float32 test below uses the tutorial's layers.
SHALLOW = {
    "content_layers": ("block3_conv2",),
    "style_layers": ("block1_conv1", "block2_conv1", "block3_conv1"),
}


def config(**changes):
    return nst_jax.StyleConfig(**{"steps": STEPS, "steps_per_call": 10, **SHALLOW, **changes})


@pytest.fixture(scope="module")
def contents():
    return np.stack([eight_bit_image(HEIGHT, WIDTH, seed=10 + i) for i in range(4)])


@pytest.fixture(scope="module")
def styles():
    """Four different styles of four different sizes."""
    sizes = [(16, 24), (20, 20), (24, 16), (18, 30)]
    return [np.roll(texture_image(h, w), 7 * i, axis=1) for i, (h, w) in enumerate(sizes)]


def run64(params64, content, style, cfg):
    with jax.enable_x64(True):
        result = nst_jax.stylize(
            jnp.asarray(content, jnp.float64),
            [jnp.asarray(s, jnp.float64) for s in style] if isinstance(style, list) else style,
            params=params64,
            config=cfg,
        )
        return np.asarray(result.image), result.losses


@pytest.mark.slow
def test_batch_of_contents_and_styles_equals_each_alone(params64, contents, styles):
    batch_images, batch_losses = run64(params64, contents, styles, config())
    assert batch_images.shape == (4, HEIGHT, WIDTH, 3) and batch_losses.shape == (4, STEPS)
    diffs = []
    for i in range(4):
        alone_image, alone_losses = run64(params64, contents[i], [styles[i]], config())
        diffs.append(np.max(np.abs(batch_images[i] - alone_image)))
        np.testing.assert_allclose(batch_losses[i], alone_losses, rtol=1e-9)
    print("float64 batch vs alone, max abs pixel difference per image:", diffs)
    assert max(diffs) <= PIXEL_TOL
    # And the images really are different problems (no accidental broadcasting):
    assert np.min(np.abs(batch_losses[:, 0] - batch_losses[0, 0])[1:]) > 0


@pytest.mark.slow
def test_float32_batch_matches_alone_on_first_steps(params, contents, styles):
    cfg = nst_jax.StyleConfig(steps=2, steps_per_call=10)
    batch = nst_jax.stylize(contents, styles, params=params, config=cfg)
    for i in range(4):
        alone = nst_jax.stylize(contents[i], styles[i], params=params, config=cfg)
        # Step 1 is one float32 evaluation, step 2 may drift (test_core.py's bounds).
        np.testing.assert_allclose(batch.losses[i][0], alone.losses[0], rtol=1e-5)
        np.testing.assert_allclose(batch.losses[i], alone.losses, rtol=5e-3)


def compiled_steps(cfg) -> int:
    """Programs compiled so far for the batched step (or, on accelerators, the chunk loop)
    of ``cfg``'s settings."""
    device = batching.resolve_loop(cfg.loop) == "device"
    program = batching.batch_chunk if device else batching.batch_step
    return program(cfg, nst_jax.make_optimizer(cfg))._cache_size()


@pytest.mark.slow
def test_sweep_equals_separate_runs_and_compiles_once(params64, contents, styles):
    weights = (1e-3, 1e-2, 1e-1)
    before = compiled_steps(config())
    sweep_images, sweep_losses = run64(
        params64, contents[0], styles[0], config(style_weight=weights)
    )
    compiled_for_sweep = compiled_steps(config()) - before
    assert sweep_images.shape == (3, HEIGHT, WIDTH, 3)
    before = compiled_steps(config())
    for i, weight in enumerate(weights):
        image, losses = run64(params64, contents[0], styles[0], config(style_weight=weight))
        assert np.max(np.abs(sweep_images[i] - image)) <= PIXEL_TOL
        np.testing.assert_allclose(sweep_losses[i], losses, rtol=1e-9)
    compiled_for_three_runs = compiled_steps(config()) - before
    print(
        f"compilations: sweep {compiled_for_sweep}, three separate runs {compiled_for_three_runs}"
    )
    assert compiled_for_sweep == 1  # one program for all three settings
    assert compiled_for_three_runs <= 1  # weights are traced, so no recompile per value
    assert not np.allclose(sweep_images[0], sweep_images[2])


def test_sweep_length_must_match_batch(params, contents, styles):
    with pytest.raises(ValueError, match="3 values for a batch of 4"):
        nst_jax.stylize(contents, styles[0], params=params, config=config(tv_weight=(1, 2, 3)))
    with pytest.raises(ValueError, match="different lengths"):
        config(tv_weight=(1, 2, 3), learning_rate=(0.1, 0.2))


def test_style_count_must_match(params, contents, styles):
    with pytest.raises(ValueError, match="3 style images for 4"):
        nst_jax.stylize(contents, styles[:3], params=params, config=config())


SHARDED_SCRIPT = Path(__file__).with_name("sharded_run.py")


def run_on_four_cpu_devices(script: Path, weights_h5: str) -> dict:
    """The JSON report of ``script`` run in its own process over four CPU devices:
    XLA_FLAGS must be set before JAX starts (also on a machine whose default is a GPU)."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    result = subprocess.run(
        [sys.executable, str(script), weights_h5],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sharded_over_four_cpu_devices_equals_unsharded(weights_h5):
    report = run_on_four_cpu_devices(SHARDED_SCRIPT, weights_h5)
    print("sharded run:", report)
    assert report["devices"] == 4
    assert report["shards"] == 4  # the batch really was split over the four devices
    assert report["max_abs_pixel_difference"] <= PIXEL_TOL
    assert report["resume_difference"] <= 1e-12  # resumed from step 10 of the sharded run


@pytest.mark.parametrize("style_loss", ["w2", "mean_std"])
@pytest.mark.slow
def test_a_weight_sweep_with_another_style_loss_compiles_once(params, contents, styles, style_loss):
    """Style weights stay traced whatever the style loss: three settings, one program."""
    cfg = nst_jax.StyleConfig(
        steps=2, steps_per_call=10, style_loss=style_loss, style_weight=(1e-3, 1e-2, 1e-1)
    )
    before = compiled_steps(cfg)
    result = nst_jax.stylize(contents[0], styles[0], params=params, config=cfg)
    assert compiled_steps(cfg) - before == 1
    assert result.image.shape == (3, HEIGHT, WIDTH, 3) and np.all(np.isfinite(result.losses))
    assert not np.allclose(result.image[0], result.image[2])


SHARDED_ROWS_SCRIPT = Path(__file__).with_name("sharded_rows.py")


@pytest.mark.slow
def test_one_image_split_by_rows_over_four_cpu_devices_equals_unsharded(weights_h5):
    # In its own process, as above: 128 x 96 px, 2 steps, the borders exchanged explicitly
    # (rows.py; scripts/README.md records 512 x 768 px over 10 steps). Bounds: float64
    # equality (1e-9) of the run, and of the Winograd branch's gradient (1e-9 relative); each
    # device's float32 temporaries below 0.75x one device's (measured 0.65 at 128 x 96, where
    # the part that is not split weighs most; 0.39 direct and 0.28 Winograd at 512 x 768).
    report = run_on_four_cpu_devices(SHARDED_ROWS_SCRIPT, weights_h5)
    print("rows sharded run:", report)
    assert report["devices"] == 4 and report["shards"] == 4 and report["exchanged"]
    assert report["max_abs_pixel_difference"] <= 1e-9
    assert report["winograd_gradient_difference"] <= 1e-9
    assert report["temp_ratio"] <= 0.75
    # A tiled step's windows dealt over the 4 devices (4 windows, one each) give
    # one device's loss and gradient: the same sums in the same order, so float64's 1e-10
    # and 1e-9 (test_tiling.py's bounds); the gradient stays on the image's device.
    assert report["dealt_devices"] == [4, 4] and report["gradient_devices"] == 1
    assert report["dealt_loss_difference"] <= 1e-10
    assert report["dealt_gradient_difference"] <= 1e-9
    # One image that fits no device untiled: with tiles, whole on one device rather than
    # padded to a batch of 4 (host devices share one memory, so its windows are not dealt
    # over them); without, split by rows.
    assert report["tiled_mesh"] is None and report["tiled_window_devices"] is None
    assert report["untiled_mesh"] == ["rows"]
    # Three tiled images on the 4 devices' batch mesh: the padding image is not stepped.
    assert report["padded_batch_windows"] == 3 * 2


def test_a_tiled_image_deals_its_windows_over_accelerators_only():
    # Accelerators have a memory each: a window on each at once. Host devices share one.
    gpus = [SimpleNamespace(platform="gpu") for _ in range(4)]
    assert devices.tile_devices(gpus, None, 1) == tuple(gpus)
    assert devices.tile_devices(gpus[:1], None, 1) is None  # one device: nothing to deal
    assert devices.tile_devices(gpus, None, 2) is None  # a batch: each image on its device
    cpus = [SimpleNamespace(platform="cpu") for _ in range(4)]
    assert devices.tile_devices(cpus, None, 1) is None


def test_rows_are_exchanged_explicitly_only_where_no_pool_pairs_two_devices_rows():
    # rows.exchanges: each device's rows must be a multiple of the pooling grid of the
    # deepest layer used (16 px to block5_conv2, 4 px to block3_conv1: geometry.tile_alignment).
    default = nst_jax.StyleConfig()
    assert rows.exchanges(default, 1, 128, 4)  # 32 rows each
    assert not rows.exchanges(default, 1, 96, 4)  # 24 rows each: the partitioner's
    assert not rows.exchanges(default, 1, 128, 1)
    assert not rows.exchanges(default, 2, 128, 4)  # a batch: the partitioner's
    shallow = nst_jax.StyleConfig(content_layers=("block3_conv1",), style_layers=("block1_conv1",))
    assert rows.exchanges(shallow, 1, 96, 4)
    assert not rows.exchanges(nst_jax.StyleConfig(style_loss="mean_std"), 1, 128, 4)
    assert not rows.exchanges(nst_jax.StyleConfig(normalize_gradients=True), 1, 128, 4)
