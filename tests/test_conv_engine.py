"""The convolution engine of the feed-forward networks (``nst_jax.core.conv.conv2d``):
Winograd for 3x3 VALID convolutions, large kernels over blocks, and every network computed
by it equal to the direct path.

Expected values come from ``lax.conv_general_dilated`` (XLA's direct convolution, the
networks' computation before the engine) and from the networks with ``conv="direct"``.
Exactness is shown in float64, where both methods agree to rounding (about 1e-15
relative); the bound asked of the networks is 1e-10. Training differentiates the kernels:
each kind of convolution's kernel gradient is compared below, beside its input gradient.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import blockconv, winograd
from nst_jax.core.conv import NETWORK_WINOGRAD_MIN_PIXELS, conv2d, prepare_params
from nst_jax.feedforward import adain, johnson, train
from nst_jax.feedforward.layers import (
    ReflectConv,
    reflect_pad,
    upsample_nearest,
    upsampled_conv,
)
from nst_jax.feedforward.model import Model, apply_model

from conftest import random_params

EXACT = 1e-10  # float64: both methods round at about 1e-15 relative


def direct(x, kernel, stride=1):
    return jax.lax.conv_general_dilated(
        x[None], kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def draw(shape, seed):
    return np.random.default_rng(seed).normal(size=shape)


# Odd and even outputs, a 1 x 1 output, one output channel, 5x5 and 7x7 kernels, and a 9x9
# kernel to 3 channels (the end of Johnson's network).
CASES = [(9, 12, 3, 3, 5), (3, 3, 3, 4, 3), (6, 5, 3, 2, 1), (12, 13, 9, 8, 3), (9, 9, 5, 2, 2),
         (11, 10, 7, 3, 4)]  # fmt: skip


@functools.partial(jax.jit, static_argnums=0)
def outputs_and_gradients(method, x, kernel, weights):
    """The convolution and its gradients (input, kernel) for output gradient ``weights``."""
    f = functools.partial(conv2d, method=method) if method else direct
    return f(x, kernel), jax.grad(lambda x, g: jnp.sum(f(x, g) * weights), (0, 1))(x, kernel)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_winograd_method_equals_the_direct_convolution_and_its_gradients(case):
    h, w, k, c, o = case
    with jax.enable_x64(True):
        x, kernel = jnp.asarray(draw((h, w, c), 0)), jnp.asarray(draw((k, k, c, o), 1))
        weights = jnp.asarray(draw((h - k + 1, w - k + 1, o), 2))  # a gradient of every output
        ours = outputs_and_gradients("winograd", x, kernel, weights)
        theirs = outputs_and_gradients(None, x, kernel, weights)
        for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=EXACT)


@pytest.mark.parametrize("shape", [(5, 4, 3, 2), (1, 1, 2, 3), (2, 3, 4, 1)], ids=str)
def test_an_upsampling_convolution_equals_upsampling_then_the_convolution(shape):
    # Reference: the direct path, nearest upsampling, reflection padding and lax's
    # convolution; the sub-pixel form must agree on every border (odd, even, 1 pixel).
    h, w, c, o = shape
    with jax.enable_x64(True):
        x, kernel = jnp.asarray(draw((h, w, c), 0)), jnp.asarray(draw((3, 3, c, o), 1))
        weights = jnp.asarray(draw((2 * h, 2 * w, o), 2))

        @jax.jit
        def both(x, kernel):
            ours = upsampled_conv(x, kernel, "winograd")
            theirs = direct(reflect_pad(upsample_nearest(x), 1), kernel)
            grads = [
                jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * weights), (0, 1))(x, kernel)
                for f in (
                    lambda x, k: upsampled_conv(x, k, "winograd"),
                    lambda x, k: direct(reflect_pad(upsample_nearest(x), 1), k),
                )
            ]
            return (ours, grads[0]), (theirs, grads[1])

        ours, theirs = both(x, kernel)
        for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=EXACT)


def test_strided_convolutions_stay_direct_and_unknown_methods_are_refused():
    x, kernel = jnp.asarray(draw((9, 9, 2), 0), jnp.float32), jnp.ones((3, 3, 2, 4), jnp.float32)
    # Stride 2 is XLA's own convolution under either method: bit-identical.
    np.testing.assert_array_equal(conv2d(x, kernel, 2, "winograd"), direct(x, kernel, 2))
    with pytest.raises(ValueError, match="method"):
        conv2d(x, kernel, 1, "fast")
    with pytest.raises(ValueError, match="method"):
        conv2d(x, kernel, 2, "fast")
    with pytest.raises(ValueError, match="3x3 convolution"):
        blockconv.conv_by_blocks(x, kernel, 4, winograd.conv3x3_valid)


def test_the_blocked_kernel_holds_each_weight_at_its_offset():
    # Output pixel (i, j) of block (0, 0) reads input pixel (i + dy, j + dx): in blocks of 4,
    # input block (P, Q), position (p, q) with 4 P + p = i + dy, 4 Q + q = j + dx.
    kernel = jnp.asarray(draw((9, 9, 2, 3), 0))
    blocked = np.asarray(blockconv.block_kernel(kernel, 4)).reshape(3, 3, 4, 4, 2, 4, 4, 3)
    for i, j, dy, dx in [(0, 0, 0, 0), (3, 1, 8, 5), (2, 3, 7, 8)]:
        (P, p), (Q, q) = divmod(i + dy, 4), divmod(j + dx, 4)
        np.testing.assert_array_equal(blocked[P, Q, p, q, :, i, j], kernel[dy, dx])
    assert np.count_nonzero(blocked) == 16 * kernel.size  # every output pixel, every weight


def test_reflect_conv_keeps_nn_conv_params_and_initialisation():
    # Models trained before the engine hold nn.Conv's params: same paths, same values.
    class Before(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Conv(4, (3, 3), padding="VALID")(x[None])[0]

    x = jnp.zeros((6, 6, 2))
    before = Before().init(jax.random.key(7), x)
    after = ReflectConv(4, 3).init(jax.random.key(7), x)
    assert jax.tree.structure(before) == jax.tree.structure(after)
    for got, want in zip(jax.tree.leaves(after), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(got, want)


def assert_close_to_scale(got, want):
    """Each leaf within ``EXACT`` of the largest value of ``want``: a bias in front of an
    instance normalisation has no effect, so its gradient is rounding noise on both sides."""
    scale = max(float(np.max(np.abs(leaf))) for leaf in jax.tree.leaves(want))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=EXACT * scale)


@pytest.mark.slow
def test_every_network_equals_its_direct_path_in_float64(params64):
    with jax.enable_x64(True):
        image = jnp.asarray(np.random.default_rng(0).random((12, 16, 3)))
        net = johnson.TransformerNet(width=4, residual_blocks=1)
        p = random_params(net, image.shape, 1)
        fast = johnson.TransformerNet(width=4, residual_blocks=1, conv="winograd")
        np.testing.assert_allclose(
            jax.jit(fast.apply)(p, image), jax.jit(net.apply)(p, image), rtol=0, atol=EXACT
        )
        # AdaIN: the encoder (VGG19 prepared for Winograd) and the decoder.
        encode = jax.jit(lambda vgg, x: adain.encode(vgg, x)[adain.ENCODER_LAYER])
        vgg = prepare_params(params64, "winograd", layers=(adain.ENCODER_LAYER,))
        theirs = encode(params64, image[:8, :8])
        assert_close_to_scale(encode(vgg, image[:8, :8]), theirs)
        q = random_params(adain.Decoder(), (1, 2, 512), 2)
        out = jax.jit(adain.Decoder("winograd").apply)(q, theirs)
        assert_close_to_scale(out, jax.jit(adain.Decoder().apply)(q, theirs))


@pytest.mark.slow
def test_apply_model_resolves_auto_from_the_pixels_and_checks_its_arguments():
    settings = train.TrainSettings("johnson", size=16, width=4, residual_blocks=1).resolved()
    model = Model(settings, {}, train.init_params(settings))
    contents = jnp.asarray(np.random.default_rng(0).random((1, 16, 16, 3)), jnp.float32)
    small = apply_model(model, contents, conv="auto")  # 256 pixels: direct
    np.testing.assert_array_equal(small, apply_model(model, contents, conv="direct"))
    big = apply_model(model, contents, conv="auto", pixel_steps=NETWORK_WINOGRAD_MIN_PIXELS)
    fast = apply_model(model, contents, conv="winograd")
    np.testing.assert_array_equal(big, fast)  # a long job: Winograd, on CPU
    # float32: the two methods round differently, by about 1e-7 relative a layer; outputs
    # in (0, 1) after a sigmoid agree to far better than 1e-4.
    np.testing.assert_allclose(fast, small, rtol=0, atol=1e-4)
    for bad, match in [({"conv": "fast"}, "convolution"), ({"pixel_steps": 0}, "pixel_steps"),
                       ({"pixel_steps": 1.5}, "pixel_steps")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            apply_model(model, contents, **bad)


def test_training_chooses_winograd_only_for_long_runs():
    short = train.TrainSettings("johnson", steps=2, batch_size=1, size=16)
    long = train.TrainSettings("johnson", steps=1000, batch_size=4, size=256)
    assert train.training_conv(short) == "direct"
    assert train.training_conv(long) == ("winograd" if jax.default_backend() == "cpu" else "direct")
    assert train.training_conv(short, "winograd") == "winograd"
    with pytest.raises(ValueError, match="convolution"):
        train.training_conv(short, "fast")
