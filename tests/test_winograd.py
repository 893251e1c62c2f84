"""Winograd F(2x2, 3x3) convolution against the NumPy direct convolution and lax's gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.core import conv as convolution
from nst_jax.core import layers as vgg_layers
from nst_jax.core import winograd
from nst_jax.run import multiscale, plan

import reference
from conftest import compiles_recorded

# Odd and even sides (an odd side pads the last tile), 1 x 1, and one output channel.
SHAPES = [(7, 10, 3, 5), (8, 8, 4, 4), (1, 1, 2, 3), (5, 2, 6, 1)]


def linear_reference(x, kernel):
    """Direct SAME 3x3 cross-correlation in float64, from ``reference.conv3x3_same_relu``:
    ``relu(z) - relu(-z) == z`` undoes its ReLU."""
    zero = np.zeros(kernel.shape[-1])
    return reference.conv3x3_same_relu(x, kernel, zero) - reference.conv3x3_same_relu(
        x, -kernel, zero
    )


def lax_conv(x, kernel):
    return jax.lax.conv_general_dilated(
        x[None], kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def inputs(shape, dtype, seed=0):
    h, w, c, o = shape
    rng = np.random.default_rng(seed)
    return rng.normal(size=(h, w, c)).astype(dtype), rng.normal(size=(3, 3, c, o)).astype(dtype)


# Jitted: one compile per shape instead of one per operation (eager dispatch compiles each of
# the transforms' many small ops), which keeps these tests at a second each.
winograd_conv = jax.jit(lambda x, k: winograd.conv3x3(x, winograd.transform_kernel(k)))


def relative_error(actual, expected):
    expected = np.asarray(expected, np.float64)
    return np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_conv3x3_matches_direct_convolution(shape):
    """float64: equal to rounding (measured <= 4e-16, bound 1e-13); float32: the transforms'
    extra additions cost a little precision (measured <= 2e-7 relative, bound 1e-6)."""
    x, kernel = inputs(shape, np.float64)
    expected = linear_reference(x, kernel)
    with jax.enable_x64(True):
        got = winograd_conv(jnp.asarray(x), jnp.asarray(kernel))
        assert got.dtype == jnp.float64
        assert relative_error(got, expected) <= 1e-13
    x32, kernel32 = x.astype(np.float32), kernel.astype(np.float32)
    got32 = winograd_conv(jnp.asarray(x32), jnp.asarray(kernel32))
    assert got32.shape == expected.shape
    assert relative_error(got32, expected) <= 1e-6


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_conv3x3_gradients_match_lax(shape):
    """The custom VJP's input gradient (Winograd with the rotated kernel) and kernel gradient
    (through ``transform_kernel``) equal autodiff of lax's convolution, in float64 (measured
    <= 2e-15 relative, bound 1e-12). A nonlinear loss, so the cotangent is not uniform."""
    x, kernel = inputs(shape, np.float64, seed=1)
    with jax.enable_x64(True):
        x, kernel = jnp.asarray(x), jnp.asarray(kernel)

        def loss(conv):
            return lambda x, k: jnp.sum(jnp.sin(conv(x, k)) * (1 + jnp.arange(k.shape[-1])))

        by_winograd = lambda x, k: winograd.conv3x3(x, winograd.transform_kernel(k))  # noqa: E731
        ours = jax.jit(jax.grad(loss(by_winograd), (0, 1)))
        theirs = jax.jit(jax.grad(loss(lax_conv), (0, 1)))
        for got, expected in zip(ours(x, kernel), theirs(x, kernel), strict=True):
            assert relative_error(got, expected) <= 1e-12


@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_the_rotated_kernel_gives_the_same_gradient(shape):
    """``rotate_kernel``'s layout changes how the input gradient's products read the kernel,
    not what they compute: in float64 the gradient equals the one from ``u`` alone (measured
    0 difference, bound 1e-13 relative), and no gradient flows to ``r``."""
    x, kernel = inputs(shape, np.float64, seed=2)
    with jax.enable_x64(True):
        u = winograd.transform_kernel(jnp.asarray(kernel))
        r = winograd.rotate_kernel(jax.tree.map(np.asarray, u))
        assert isinstance(r[0][0], np.ndarray) and r[0][0].flags.c_contiguous

        def loss(x, r):
            return jnp.sum(jnp.sin(winograd.conv3x3(x, u, r)))

        plain = jax.jit(jax.grad(lambda x: loss(x, None)))(jnp.asarray(x))
        given, r_gradient = jax.jit(jax.grad(loss, (0, 1)))(jnp.asarray(x), r)
        assert relative_error(given, plain) <= 1e-13
        assert all(not np.any(leaf) for leaf in jax.tree.leaves(r_gradient))


def test_a_wrong_rotated_kernel_is_refused_in_one_line():
    x, kernel = inputs((6, 6, 4, 5), np.float32)
    u = winograd.transform_kernel(jnp.asarray(kernel))
    for wrong in (u, winograd.rotate_kernel(u)[:3], ()):  # u itself: (4, 5), not (5, 4)
        with pytest.raises(ValueError, match=r"^r: expected rotate_kernel\(u\)"):
            jax.grad(lambda x, r=wrong: jnp.sum(winograd.conv3x3(x, u, r)))(jnp.asarray(x))
    for wrong in (None, "abcd", u[:2], [[np.ones(2)] * 4] * 4):
        with pytest.raises(ValueError, match="^u: expected transform_kernel's result"):
            winograd.rotate_kernel(wrong)


def test_conv3x3_batches_under_vmap():
    x, kernel = inputs((6, 5, 4, 3), np.float32)
    batch = jnp.stack([jnp.asarray(x), -2 * jnp.asarray(x)])
    u = winograd.transform_kernel(jnp.asarray(kernel))
    got = jax.vmap(winograd.conv3x3, in_axes=(0, None))(batch, u)
    for image, out in zip(batch, got, strict=True):
        np.testing.assert_allclose(out, winograd.conv3x3(image, u), rtol=1e-6, atol=1e-6)


def test_prepare_params_transforms_every_layer_from_min_channels(numpy_params):
    params = jax.tree.map(jnp.asarray, numpy_params)
    prepared = convolution.prepare_params(params, "winograd")
    for name, (kernel_shape, _) in vgg_layers.conv_shapes().items():
        leaves = prepared[name]
        if kernel_shape[2] >= convolution.WINOGRAD_MIN_CHANNELS:
            assert set(leaves) == {"winograd", "winograd_rotated", "bias"}, name
            shapes = jax.tree.map(jnp.shape, leaves["winograd"])
            assert shapes == ((kernel_shape[2:],) * 4,) * 4, name
            rotated = jax.tree.map(jnp.shape, leaves["winograd_rotated"])
            assert rotated == ((kernel_shape[:1:-1],) * 4,) * 4, name
        else:
            assert leaves is params[name], name
    assert "kernel" in prepared["block1_conv1"]  # 3 input channels: direct
    assert convolution.prepare_params(params, "direct") is params
    # A forward pass only (a feed-forward model's encoder): no input gradient's kernels.
    forward = convolution.prepare_params(params, "winograd", input_gradient=False)
    assert set(forward["block5_conv4"]) == {"winograd", "bias"}
    np.testing.assert_array_equal(
        forward["block5_conv4"]["winograd"][1][2], prepared["block5_conv4"]["winograd"][1][2]
    )
    with pytest.raises(ValueError, match="input_gradient: expected True or False, got 'no'"):
        convolution.prepare_params(params, "winograd", input_gradient="no")
    on_cpu = jax.default_backend() == "cpu"
    assert convolution.resolve_conv("auto") == ("winograd" if on_cpu else "direct")
    long_run = convolution.WINOGRAD_MIN_PIXEL_STEPS
    assert convolution.resolve_conv("auto", long_run) == ("winograd" if on_cpu else "direct")
    assert convolution.resolve_conv("auto", long_run - 1) == "direct"  # compile time would dominate
    assert convolution.resolve_conv("winograd", 1) == "winograd"
    with pytest.raises(ValueError, match="unknown convolution method 'fft'"):
        convolution.prepare_params(params, "fft")


@pytest.mark.slow
def test_stylize_is_the_same_either_way(params, content_image, style_image):
    """A whole run in float64, Winograd vs direct: the same losses and image to rounding
    (measured ~1e-15 relative, bound 1e-10), so ``conv`` changes speed, not results."""
    runs = {}
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        for conv in ("direct", "winograd"):
            cfg = nst_jax.StyleConfig(steps=3, steps_per_call=3, conv=conv)
            # A 32 x 48 crop: float64 programs compile slowly, and every layer is still hit.
            content = jnp.asarray(content_image[:32, :48], jnp.float64)
            runs[conv] = nst_jax.stylize(content, style_image, params=params64, config=cfg)
    np.testing.assert_allclose(runs["winograd"].losses, runs["direct"].losses, rtol=1e-10)
    np.testing.assert_allclose(runs["winograd"].image, runs["direct"].image, rtol=0, atol=1e-10)


def test_pixel_steps_count_every_scale_and_image():
    cfg = nst_jax.StyleConfig(steps=10, scales=2, coarse_steps=4)
    # scale_shapes(64, 96) is [(45, 68), (64, 96)]: coarse by 1/sqrt(2), rounded.
    assert multiscale.scale_shapes(64, 96, cfg) == [(45, 68), (64, 96)]
    assert plan.pixel_steps(cfg, 3, 64, 96) == 3 * (4 * 45 * 68 + 10 * 64 * 96)


def test_config_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="conv must be one of auto, direct, winograd"):
        nst_jax.StyleConfig(conv="fft")


def test_host_and_traced_kernel_transforms_agree(params):
    """Concrete kernels are transformed by NumPy, traced ones (``memory.step_bytes``) by
    XLA: the same adds and halvings, so the same bits. Kernels that were not committed to
    a device stay uncommitted, so the first step is placed like the later ones."""
    on_host = convolution.prepare_params(params, "winograd")
    traced = jax.jit(lambda p: convolution.prepare_params(p, "winograd"))(params)
    jax.tree.map(np.testing.assert_array_equal, on_host, traced)
    assert not on_host["block2_conv1"]["winograd"][1][2].committed


@pytest.mark.slow
def test_a_run_compiles_its_step_once(params, content_image, style_image):
    """Three steps, one compilation of the step (committed kernels once made the second step
    compile again, costing a warm start 0.5 s)."""
    with compiles_recorded() as compiled:
        cfg = nst_jax.StyleConfig(steps=3, steps_per_call=3, conv="winograd")
        # 26 x 42: a shape no other test compiles, so the step is compiled here.
        nst_jax.stylize(content_image[:26, :42], style_image, params=params, config=cfg)
    assert compiled.count("jit(batched_step)") == 1
