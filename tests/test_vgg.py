"""VGG19 features against the independent NumPy reference in ``reference.py``."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.core import conv, geometry, vgg
from nst_jax.core import layers as vgg_layers

import reference

# float32 features vs a float64 reference through up to 16 conv layers; measured max relative
# error is about 1e-6, the acceptance bound is 1e-4.
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def odd_image():
    """37 x 53: non-square and odd, so every VALID pool drops a row or column somewhere."""
    return np.random.default_rng(3).random((37, 53, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def reference_features(numpy_params, odd_image):
    return reference.vgg19_all(numpy_params, odd_image)


def max_relative_error(actual, expected):
    """max |a - e| / max |e|: relative to the layer's scale, since ReLU makes many entries 0."""
    return float(
        np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected))
    )


@pytest.mark.parametrize("method", ["direct", "winograd"])
@pytest.mark.slow
def test_every_layer_matches_numpy_reference(params, odd_image, reference_features, method):
    prepared = conv.prepare_params(params, method)
    # Jitted: eagerly, each of Winograd's thousands of tile operations is compiled alone.
    features = jax.jit(nst_jax.vgg19_features, static_argnums=2)(
        prepared, jnp.asarray(odd_image)[None], tuple(vgg_layers.LAYERS)
    )
    errors = {}
    for name in vgg_layers.LAYERS:
        assert features[name].shape[1:] == reference_features[name].shape, name
        errors[name] = max_relative_error(features[name][0], reference_features[name])
    print("max relative error per layer:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) <= REL_TOL, errors
    assert len([n for n in errors if "conv" in n]) == 16


def test_reference_is_not_trivial(reference_features):
    # Guard against a vacuous comparison: deep layers must still carry signal.
    assert np.max(reference_features["block5_conv4"]) > 0
    assert np.mean(reference_features["block5_conv2"] > 0) > 0.01


@pytest.mark.slow
def test_jit_and_no_jit_agree(params, odd_image):
    layers = ("block1_conv1", "block3_conv2", "block5_conv2")
    images = jnp.asarray(odd_image)[None]
    jitted = jax.jit(nst_jax.vgg19_features, static_argnums=2)(params, images, layers)
    with jax.disable_jit():
        eager = nst_jax.vgg19_features(params, images, layers)
    for name in layers:
        np.testing.assert_allclose(
            jitted[name], eager[name], rtol=1e-5, atol=1e-4 * np.max(eager[name])
        )


@pytest.mark.slow
def test_batch_equals_items(params, odd_image):
    images = jnp.stack([odd_image, odd_image[::-1], 1 - odd_image])
    batch = nst_jax.vgg19_features(params, images, ("block4_conv1",))["block4_conv1"]
    for i in range(3):
        single = nst_jax.vgg19_features(params, images[i : i + 1], ("block4_conv1",))
        np.testing.assert_allclose(batch[i], single["block4_conv1"][0], rtol=1e-5, atol=1e-3)


def test_preprocess_is_caffe_mode_and_invertible():
    image = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    # By hand: BGR = (255, 127.5, 0) minus the BGR mean.
    expected = np.array([[[255 - 103.939, 127.5 - 116.779, 0 - 123.68]]])
    np.testing.assert_allclose(vgg.preprocess(jnp.asarray(image)), expected, rtol=1e-6)
    np.testing.assert_allclose(vgg.deprocess(vgg.preprocess(jnp.asarray(image))), image, atol=1e-6)


def test_only_layers_up_to_the_deepest_are_computed(params, odd_image):
    # Flax would fail on a missing param only if the layer were used, so params for blocks
    # 2-5 are dropped to prove block1 features need nothing deeper.
    block1 = {k: v for k, v in params.items() if k.startswith("block1")}
    out = nst_jax.vgg19_features(block1, jnp.asarray(odd_image)[None], ("block1_conv2",))
    assert set(out) == {"block1_conv2"}


def test_unknown_layer_is_refused(params, odd_image):
    with pytest.raises(ValueError, match="block6_conv1"):
        nst_jax.vgg19_features(params, jnp.asarray(odd_image)[None], ("block6_conv1",))


def test_bad_image_shape_is_quoted(params):
    with pytest.raises(ValueError, match=r"\(37, 53\)"):
        nst_jax.vgg19_features(params, jnp.zeros((37, 53)), ("block1_conv1",))


def test_pools_before():
    assert geometry.pools_before(["block1_conv1"]) == 0
    assert geometry.pools_before(["block5_conv2", "block1_conv1"]) == 4
    assert geometry.pools_before(["block5_pool"]) == 4


@pytest.mark.parametrize("shape", [(6, 8, 3), (7, 9, 2), (2, 5, 4, 3)], ids=str)
def test_pool_2x2_matches_reference_and_reduce_window(shape):
    """Values against NumPy (max: reference.max_pool2x2; avg: the mean of each 2x2 window), and
    the max-pool gradient against Flax's reduce_window pool (XLA's select_and_scatter),
    exactly, on input with many ties: values from {0, 1, 2}, as ReLU zeros and flat image areas
    make them. A tie's gradient goes to the window's first maximum in both."""
    x = np.random.default_rng(3).integers(0, 3, size=shape).astype(np.float32)
    if len(shape) == 3:
        np.testing.assert_array_equal(vgg.pool_2x2(x, "max"), reference.max_pool2x2(x))
    h, w = shape[-3] // 2 * 2, shape[-2] // 2 * 2
    windows = x[..., :h, :w, :].reshape(*shape[:-3], h // 2, 2, w // 2, 2, shape[-1])
    np.testing.assert_allclose(vgg.pool_2x2(x, "avg"), windows.mean(axis=(-4, -2)), rtol=1e-6)

    def flax_max(v):
        return nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")

    weights = np.random.default_rng(4).normal(size=flax_max(x).shape).astype(np.float32)
    ours = jax.grad(lambda v: jnp.sum(weights * vgg.pool_2x2(v, "max")))(x)
    flax = jax.grad(lambda v: jnp.sum(weights * flax_max(v)))(x)
    np.testing.assert_array_equal(ours, flax)
