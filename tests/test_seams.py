"""The research seams: a custom loss through the whole engine, a registered style term,
early stopping, inputs checked at the API boundary, and targets saved and loaded.

Exactness is shown in float64 (``jax.experimental.enable_x64``): float32 rounding differs
between a batch and its images run alone, and between machines.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scripts_loader import load_script

import nst_jax
from nst_jax.core import losses, vgg

from conftest import into

# block3 layers keep the programs small; 5 steps in chunks of 5.
LAYERS = {"content_layers": ("block3_conv2",), "style_layers": ("block1_conv1", "block3_conv1")}
CONFIG = nst_jax.StyleConfig(steps=5, steps_per_call=5, conv="direct", **LAYERS)


def edge_loss(params, x, targets, config):
    """The tutorial's loss plus a penalty on the image's mean brightness (a custom term)."""
    loss, terms = nst_jax.loss_fn(params, x, targets, config)
    brightness = 10.0 * jnp.square(jnp.mean(x) - 0.5)
    return loss + brightness, {**terms, "brightness": brightness}


def own_loop(params, content, style, config, loss=edge_loss):
    """The README's own loop, with ``loss`` in the step (the reference for the engine)."""
    targets = nst_jax.make_targets(params, content, style, config)
    tx = nst_jax.make_optimizer(config)
    step = jax.jit(nst_jax.make_step_fn(config, tx, loss=loss))
    x, state, history = jnp.asarray(content), tx.init(jnp.asarray(content)), []
    for _ in range(config.steps):
        x, state, value, _ = step(params, targets, x, state)
        history.append(float(value))
    return np.asarray(x), np.array(history)


@pytest.fixture(scope="module")
def f64(params64, content_image, style_image):
    """float64 params and images (x64 on while the module's tests run)."""
    with jax.enable_x64(True):
        yield params64, content_image.astype(np.float64)[:32, :48], style_image.astype(np.float64)


@pytest.mark.slow
def test_a_custom_loss_gets_the_engine_and_equals_an_own_loop(f64):
    params, content, style = f64
    x, history = own_loop(params, content, style, CONFIG)
    result = nst_jax.stylize(content, style, params=params, config=CONFIG, loss=edge_loss)
    np.testing.assert_allclose(result.image, x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.losses, history, rtol=1e-9)


@pytest.mark.slow
def test_a_custom_loss_in_a_batch_with_a_sweep_equals_own_loops(f64):
    params, content, style = f64
    swept = CONFIG.replace(style_weight=(1e-2, 1e-1))
    contents = np.stack([content, content[::-1]])
    result = nst_jax.stylize(contents, style, params=params, config=swept, loss=edge_loss)
    for i, weight in enumerate((1e-2, 1e-1)):
        x, history = own_loop(params, contents[i], style, CONFIG.replace(style_weight=weight))
        np.testing.assert_allclose(result.image[i], x, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result.losses[i], history, rtol=1e-9)


def test_the_custom_terms_reach_the_hook(params, content_image, style_image):
    seen = []
    config = CONFIG.replace(steps=2, steps_per_call=2)
    nst_jax.stylize(content_image, style_image, params=params, config=config, loss=edge_loss,
                    on_event=into(seen))  # fmt: skip
    assert set(seen[-1].terms) == {"content", "style", "tv", "brightness", "total"}


def test_tiling_refuses_a_custom_loss_in_one_line(params, content_image, style_image):
    config = CONFIG.replace(tile=48)
    with pytest.raises(ValueError, match="custom loss") as caught:
        nst_jax.stylize(content_image, style_image, params=params, config=config, loss=edge_loss)
    assert "\n" not in str(caught.value)


def test_a_loss_of_the_wrong_shape_is_refused_before_any_step(params, content_image, style_image):
    def bad(params, x, targets, config):
        return jnp.ones(3), {}

    with pytest.raises(ValueError, match="loss must return"):
        nst_jax.stylize(content_image, style_image, params=params, config=CONFIG, loss=bad)


# --- A registered style term --------------------------------------------------------------


def test_own_style_loss_script_registers_a_term_and_runs_vgg_once(
    params, content_image, style_image, monkeypatch
):
    script = load_script("own_style_loss")
    calls = []
    original = vgg.image_features

    def counted(*args, **kwargs):
        calls.append(1)  # once per trace of the step's loss: VGG passes per step
        return original(*args, **kwargs)

    monkeypatch.setattr(vgg, "image_features", counted)
    config = CONFIG.replace(style_loss=script.NAME, steps=2, steps_per_call=2, style_weight=1.0)
    step = jax.jit(nst_jax.make_step_fn(config, nst_jax.make_optimizer(config)))
    targets = nst_jax.make_targets(params, content_image, style_image, config)
    calls.clear()
    x = jnp.asarray(content_image)
    step.lower(params, targets, x, nst_jax.make_optimizer(config).init(x))
    assert len(calls) == 1
    # A run on the new term moves the image's covariances towards the style's.
    result = nst_jax.stylize(content_image, style_image, params=params, config=config)

    def distance(x):
        feats = nst_jax.vgg19_features(params, jnp.asarray(x), config.style_layers)
        target = nst_jax.vgg19_features(params, jnp.asarray(style_image), config.style_layers)
        covariance = script.covariance
        return sum(
            float(jnp.sum((covariance(feats[n]) - covariance(target[n])) ** 2)) for n in feats
        )

    assert distance(result.image) < distance(content_image)


def test_an_unknown_or_built_in_name_is_refused():
    with pytest.raises(ValueError, match="unknown style_loss 'nope'"):
        nst_jax.StyleConfig(style_loss="nope")
    with pytest.raises(ValueError, match="built in"):
        nst_jax.register_style_term("gram", nst_jax.StyleTerm(abs, abs, abs))


# --- Early stopping -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_hook_stops_the_run_and_stylize_returns_the_result_so_far(
    params, content_image, style_image
):
    def stop_at_15(state):
        if state.step >= 15:
            raise nst_jax.StopRun

    config = CONFIG.replace(steps=100)
    contents = np.stack([content_image, content_image[:, ::-1]])
    result = nst_jax.stylize(contents, style_image, params=params, config=config,
                             on_event=lambda e: stop_at_15(e.state))  # fmt: skip
    assert result.losses.shape == (2, 15)
    assert np.all(np.isfinite(result.image))


@pytest.mark.slow
def test_tol_freezes_each_image_of_a_batch_on_its_own(f64):
    """Three images; the third starts where it has nothing to gain (its content is also its
    style), so its loss flattens first and it freezes while the others go on. Each equals
    its own run with the same ``tol``."""
    params, content, style = f64
    config = CONFIG.replace(steps=60, steps_per_call=10, tol=1e-2, tol_window=5)
    contents = np.stack([content, content[::-1], style[:32, :48]])
    styles = [style, style, style[:32, :48]]
    batch = nst_jax.stylize(contents, styles, params=params, config=config)
    alone = [
        nst_jax.stylize(c, s, params=params, config=config)
        for c, s in zip(contents, styles, strict=True)
    ]
    stopped = [len(run.losses) for run in alone]
    print("steps each image ran alone:", stopped)
    assert min(stopped) < max(stopped)  # one image converged before another
    for i, run in enumerate(alone):
        np.testing.assert_allclose(batch.image[i], run.image, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(batch.losses[i, : stopped[i]], run.losses, rtol=1e-9)
        frozen = batch.losses[i, stopped[i] - 1 :]
        assert np.all(frozen == frozen[0])  # the frozen image's loss stays where it stopped


# --- Inputs checked at the API boundary -----------------------------------------------------


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("uint8", "uint8"),
        ("0-255", "[0, 1]"),
        ("4 channels", "3 channels"),
        ("2-D", "(H, W, 3)"),
        ("NaN", "non-finite"),
    ],
)
def test_bad_images_are_one_line_errors_naming_the_argument(
    params, content_image, style_image, case, fragment
):
    bad = {
        "uint8": (content_image * 255).astype(np.uint8),
        "0-255": content_image * 255,
        "4 channels": np.concatenate([content_image, content_image[..., :1]], -1),
        "2-D": content_image[..., 0],
        "NaN": np.where(content_image > 0.5, np.nan, content_image).astype(np.float32),
    }[case]
    for call in (
        lambda: nst_jax.stylize(bad, style_image, params=params, config=CONFIG),
        lambda: nst_jax.make_targets(params, bad, style_image, CONFIG),
    ):
        with pytest.raises(ValueError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and message.startswith("content") and fragment in message


@pytest.mark.slow
def test_a_list_of_sizes_is_grouped_and_returned_in_order(f64):
    params, content, style = f64
    config = CONFIG.replace(steps=3, steps_per_call=3)
    images = [content, content[:16, :32], content[::-1]]
    result = nst_jax.stylize(images, style, params=params, config=config)
    for i, item in enumerate(images):
        alone = nst_jax.stylize(item, style, params=params, config=config)
        np.testing.assert_allclose(result.image[i], alone.image, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result.losses[i], alone.losses, rtol=1e-9)


@pytest.mark.slow
def test_the_result_dtype_follows_the_input(params, content_image, style_image):
    config = CONFIG.replace(steps=1, steps_per_call=1)
    result = nst_jax.stylize(content_image, style_image, params=params, config=config)
    assert result.image.dtype == np.float32
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        result = nst_jax.stylize(
            content_image.astype(np.float64), style_image, params=params64, config=config
        )
        assert result.image.dtype == np.float64


def test_jax_grad_through_stylize_is_refused_pointing_to_the_own_loop(
    params, content_image, style_image
):
    def final_loss(content):
        return nst_jax.stylize(content, style_image, params=params, config=CONFIG).losses[-1]

    with pytest.raises(TypeError, match="own loop") as caught:
        jax.grad(final_loss)(jnp.asarray(content_image))
    assert "\n" not in str(caught.value)


# --- make_step and make_step_fn, targets on disk -------------------------------------------


def test_make_step_and_make_step_fn_return_the_same_tuple(params, content_image, style_image):
    targets = nst_jax.make_targets(params, content_image, style_image, CONFIG)
    tx = nst_jax.make_optimizer(CONFIG)
    x = jnp.asarray(content_image)
    # Shapes only (jax.eval_shape): the tuples' structure is the point, not their values.
    jitted = jax.eval_shape(nst_jax.make_step(CONFIG, tx), params, targets, x, tx.init(x))
    plain = jax.eval_shape(nst_jax.make_step_fn(CONFIG, tx), params, targets, x, tx.init(x))
    assert len(jitted) == len(plain) == 4
    assert jax.tree.structure(jitted) == jax.tree.structure(plain)


@pytest.mark.parametrize("style_loss", ["gram", "w2"])
def test_targets_round_trip_bit_for_bit_and_drive_the_step(
    tmp_path, params, content_image, style_image, style_loss
):
    config = CONFIG.replace(style_loss=style_loss)
    targets = nst_jax.make_targets(params, content_image, style_image, config)
    path = nst_jax.save_targets(tmp_path / "targets.msgpack", targets)
    loaded = nst_jax.load_targets(path)
    assert jax.tree.structure(loaded) == jax.tree.structure(jax.tree.map(np.asarray, targets))
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(targets), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, np.asarray(b))
    tx = nst_jax.make_optimizer(config)
    step = nst_jax.make_step(config, tx)
    x = jnp.asarray(content_image)
    assert float(step(params, loaded, x, tx.init(x))[2]) == float(
        step(params, targets, x, tx.init(x))[2]
    )


def test_damaged_targets_are_one_line(tmp_path):
    path = tmp_path / "t.msgpack"
    path.write_bytes(b"\x85not msgpack")
    with pytest.raises(nst_jax.InputError) as caught:
        nst_jax.load_targets(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_losses_of_the_registry_are_the_modules(params):
    # The built-in terms are the functions nst_jax.losses documents.
    assert nst_jax.style_term("gram").loss is losses.style_loss
    assert nst_jax.style_term("mean_std").statistic is losses.feature_moments
