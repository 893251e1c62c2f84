"""Feature extractors: a network of the user's own runs through the whole engine, VGG16
loads and matches Keras, and params or settings that do not fit the extractor are refused
in one line.

Exactness is shown in float64: the expected values come from the same computation written
out as the user's own loop (``make_targets``, ``make_step``), so they agree to rounding
(bound 1e-9, the float64 margin over a few dozen Adam steps).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.core import extractors, geometry, layers
from nst_jax.core.extractors import Extractor
from nst_jax.events import StopRun
from nst_jax.files import keras_h5, weights
from nst_jax.run import tiling

EXACT = 1e-9


class ThreeBlocks(nn.Module):
    """A small CNN of the test's own: three 3x3 conv blocks, average pools between."""

    @nn.compact
    def __call__(self, x):
        out = {}
        for i, channels in enumerate((8, 16, 16), start=1):
            x = nn.relu(nn.Conv(channels, (3, 3), name=f"conv{i}")(x))
            out[f"block{i}"] = x
            if i < 3:
                x = nn.avg_pool(x, (2, 2), (2, 2))
        return out


NET = ThreeBlocks()


def three_block_features(params, image, layers):
    out = NET.apply({"params": params}, image)
    return {name: out[name] for name in layers}


@pytest.fixture(scope="module")
def own():
    """The CNN registered as "three_blocks", with float64 params."""
    params = NET.init(jax.random.key(0), jnp.zeros((16, 16, 3)))["params"]
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    shapes = jax.tree.map(lambda a: a.shape, params)
    layer_names = ("block1", "block2", "block3")
    extractors.register_extractor(
        "three_blocks", Extractor(three_block_features, layer_names, shapes)
    )
    return params


def own_config(**changes):
    settings = dict(
        extractor="three_blocks",
        content_layers=("block3",),
        style_layers=("block1", "block2"),
        steps=6,
        steps_per_call=3,
        style_weight=1.0,
    )
    return nst_jax.StyleConfig(**{**settings, **changes})


def images(seed: int, n: int | None = None):
    rng = np.random.default_rng(seed)
    shape = (20, 24, 3) if n is None else (n, 20, 24, 3)
    return rng.random(shape)


def own_loop(params, content, style, config):
    """The research core composed by hand: make_targets, make_step, t from 0."""
    tx = nst_jax.make_optimizer(config)
    step = nst_jax.make_step(config, tx)
    targets = nst_jax.make_targets(params, content, style, config)
    x, state, losses = jnp.asarray(content), tx.init(jnp.asarray(content)), []
    for t in range(config.steps):
        x, state, loss, _ = step(params, targets, x, state, t)
        losses.append(float(loss))
    return x, np.asarray(losses)


@pytest.mark.slow
def test_stylize_on_an_own_cnn_equals_the_own_loop(own):
    config = own_config()
    with jax.enable_x64(True):
        content, style = images(0), images(1)[:16]
        result = nst_jax.stylize(content, style, params=own, config=config)
        expected, losses = own_loop(own, content, style, config)
        assert result.image.dtype == jnp.float64
        np.testing.assert_allclose(result.losses, losses, rtol=EXACT)
        assert float(jnp.max(jnp.abs(result.image - expected))) <= EXACT
        assert losses[-1] < losses[0]  # the run does optimise


@pytest.mark.slow
def test_an_own_cnn_batches_and_resumes(own):
    config = own_config()
    with jax.enable_x64(True):
        contents, style = images(2, n=2), images(3)
        batch = nst_jax.stylize(contents, style, params=own, config=config)
        for i in range(2):
            alone = nst_jax.stylize(contents[i], style, params=own, config=config)
            assert float(jnp.max(jnp.abs(batch.image[i] - alone.image))) <= EXACT
        states = []

        def stop_after_first(event):
            states.append(event.state)
            raise StopRun

        nst_jax.stylize(contents, style, params=own, config=config, on_event=stop_after_first)
        assert states[-1].step == 3
        resumed = nst_jax.stylize(contents, style, params=own, config=config, resume=states[-1])
        np.testing.assert_array_equal(np.asarray(resumed.image), np.asarray(batch.image))


def test_an_own_cnn_is_refused_what_needs_known_receptive_fields(own):
    content, style = images(4).astype(np.float32), images(5).astype(np.float32)
    with pytest.raises(ValueError, match="tiled runs need an extractor of known receptive"):
        own_config(tile=64)
    with pytest.raises(ValueError, match="pooling avg replaces VGG's pools"):
        own_config(pooling="avg")
    masks = np.ones((1, 20, 24), np.float32)
    with pytest.raises(ValueError, match="a masked run needs an extractor of known receptive"):
        nst_jax.stylize(content, [style], params=own, config=own_config(), masks=masks)
    with pytest.raises(ValueError, match=r"unknown three_blocks layer\(s\) block5_conv2"):
        nst_jax.StyleConfig(extractor="three_blocks")
    assert nst_jax.prepare_params(own, "winograd", extractor="three_blocks") is own


def test_params_of_another_network_are_one_line_naming_the_layer(own, params):
    content, style = images(6).astype(np.float32), images(7).astype(np.float32)
    with pytest.raises(ValueError, match=r"params: no conv1 for extractor three_blocks"):
        nst_jax.stylize(content, style, params=params, config=own_config(steps=1))
    with pytest.raises(ValueError, match=r"params: no block1_conv1 for extractor vgg19"):
        nst_jax.make_targets(own, content, style, nst_jax.StyleConfig())
    vgg16 = keras_h5.random_params(0, layers.VGG16_BLOCKS)
    with pytest.raises(ValueError, match="these are vgg16's params; give extractor='vgg16'"):
        nst_jax.make_targets(vgg16, content, style, nst_jax.StyleConfig())


def test_registering_is_checked():
    extractor = Extractor(three_block_features, ("a",))
    for name, bad, message in [
        ("vgg16", extractor, "built in"),
        ("not a name", extractor, "identifier"),
        ("broken", Extractor(None, ("a",)), "features must be a callable"),
        ("twice_named", Extractor(three_block_features, ("a", "a")), "distinct names"),
        ("shapeless", Extractor(three_block_features, ("a",), {"a": 3}), "param_shapes"),
    ]:
        with pytest.raises(ValueError, match=message):
            extractors.register_extractor(name, bad)
    with pytest.raises(ValueError, match="^extractor=nope: unknown extractor; known: vgg19"):
        nst_jax.StyleConfig(extractor="nope")  # named before the layers, which are its
    with pytest.raises(ValueError, match=r"^extractor=3: unknown"):
        nst_jax.StyleConfig(extractor=3)


# --- VGG16 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    numpy_params = keras_h5.random_params(0, layers.VGG16_BLOCKS)
    path = tmp_path_factory.mktemp("vgg16") / weights.NETWORKS["vgg16"].official
    keras_h5.write_keras_h5(numpy_params, path, naming="official", blocks=layers.VGG16_BLOCKS)
    return path, numpy_params


def test_vgg16_features_equal_keras_vgg16_on_the_same_file(vgg16_file):
    tf = pytest.importorskip("tensorflow")
    path, _ = vgg16_file
    image = np.random.default_rng(8).random((37, 53, 3)).astype(np.float32)
    keras = tf.keras.applications.VGG16(include_top=False, weights=str(path))
    names = [name for name in extractors.extractor("vgg16").layers]
    probe = tf.keras.Model(keras.input, [keras.get_layer(n).output for n in names])
    expected = probe(tf.keras.applications.vgg16.preprocess_input(image[None] * 255.0))
    config = nst_jax.StyleConfig(extractor="vgg16")
    params = nst_jax.load_vgg16(path)
    ours = extractors.extract(params, jnp.asarray(image), names, config)
    for name, want in zip(names, expected, strict=True):
        want = np.asarray(want)[0]
        # Relative to the layer's scale, as VGG19's bound (tests/test_vgg.py): 1e-4.
        error = np.max(np.abs(np.asarray(ours[name]) - want)) / np.max(np.abs(want))
        assert error <= 1e-4, (name, error)


def test_vgg16_loads_converts_and_refuses_vgg19_files(vgg16_file, weights_h5, tmp_path):
    path, numpy_params = vgg16_file
    converted = weights.convert(path, tmp_path / "v16.msgpack", network="vgg16")
    loaded = nst_jax.load_vgg16(converted)
    assert set(loaded) == set(layers.conv_layers(layers.VGG16_BLOCKS))
    np.testing.assert_array_equal(
        loaded["block5_conv3"]["kernel"], numpy_params["block5_conv3"]["kernel"]
    )
    with pytest.raises(nst_jax.WeightsError, match="these are VGG19's weights"):
        nst_jax.load_vgg16(weights_h5)
    with pytest.raises(nst_jax.WeightsError, match="give --extractor vgg16"):
        nst_jax.load_vgg19(path)


@pytest.mark.slow
def test_vgg16_tiles_equal_the_whole_image_in_float64(vgg16_file):
    _, numpy_params = vgg16_file
    config = nst_jax.StyleConfig(
        extractor="vgg16", style_weight=1.0, content_layers=("block4_conv3",)
    )
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), numpy_params)
        x = jnp.asarray(np.random.default_rng(9).random((72, 88, 3)))
        targets = nst_jax.make_targets(params, x[::-1], x[:, ::-1], config)
        # Jitted: eagerly, each of the network's operations would be compiled on its own.
        value_and_grad = jax.value_and_grad(nst_jax.loss_fn, argnums=1, has_aux=True)
        whole = jax.jit(value_and_grad, static_argnums=3)(params, x, targets, config)
        tile = geometry.smallest_tile(
            config.content_layers + config.style_layers, extractors.network("vgg16")
        )
        tiled = tiling.tiled_value_and_grad(params, x, targets, config, tile)
        np.testing.assert_allclose(tiled[0][0], whole[0][0], rtol=EXACT)
        assert float(jnp.max(jnp.abs(tiled[1] - whole[1]))) <= EXACT * float(
            jnp.max(jnp.abs(whole[1]))
        )
        assert tile < 72  # more than one tile


# --- A custom loss under Winograd -----------------------------------------------------------


def deep_reading_loss(params, x, targets, config):
    """The objective plus a term on block5_conv2, a layer outside config's layers."""
    value, terms = nst_jax.loss_fn(params, x, targets, config)
    deep = extractors.extract(params, x, ("block5_conv2",), config)["block5_conv2"]
    return value + 1e-3 * jnp.mean(deep), terms


@pytest.mark.slow
def test_a_custom_loss_gets_every_layer_it_reads_under_winograd(params, content_image, style_image):
    config = nst_jax.StyleConfig(
        steps=2,
        steps_per_call=2,
        conv="winograd",
        style_layers=("block1_conv1",),
        content_layers=("block2_conv1",),
    )
    result = nst_jax.stylize(
        content_image, style_image, params=params, config=config, loss=deep_reading_loss
    )
    assert np.isfinite(result.losses).all()
    prepared = nst_jax.prepare_params(params, "winograd", layers=("block2_conv1",))
    targets = nst_jax.make_targets(params, content_image, style_image, config)
    with pytest.raises(
        ValueError,
        match=r"no block2_conv2 for extractor vgg19 \(needed for block5_conv2\): "
        r"prepare_params\(layers=...\) left it out.*layers=None",
    ):
        deep_reading_loss(prepared, jnp.asarray(content_image), targets, config)
