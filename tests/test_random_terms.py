"""Randomness and step in the objective, extra targets, crossed sweeps, and the distribution
losses on sorts (sliced Wasserstein, EFDM, central moments).

Determinism is shown bit for bit (the same program on the same inputs); a batch against its
images run alone in float64 (bound 1e-9: a batch of two runs the vmapped program, one image
the per-image one, which round differently); the losses against NumPy written from the
papers' formulas, in float64 (bound 1e-12).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.core import sorts
from nst_jax.core.targets import objective_key, step_targets
from nst_jax.events import StopRun
from nst_jax.files.targets import load_targets, save_targets

from conftest import LIGHT_LAYERS

EXACT = 1e-9


def sw_config(**changes):
    # VGG19 to block 2 (conftest.LIGHT_LAYERS): these tests are about the draws, resuming
    # and batching, which do not depend on the depth; the default objective is tested in
    # test_core and against the tutorial's code, SW's formula in test_losses.
    settings = dict(style_loss="sw", steps=6, steps_per_call=3, style_weight=1e-3, seed=3)
    return nst_jax.StyleConfig(**{**LIGHT_LAYERS, **settings, **changes})


def small(image, n=None):
    return np.asarray(image[:32, :40]) if n is None else np.stack([image[:32, :40]] * n)


@pytest.mark.slow
def test_sw_draws_new_directions_every_step_the_same_for_one_seed(
    params, content_image, style_image
):
    config = sw_config()
    content = small(content_image)
    targets = nst_jax.make_targets(params, content, style_image, config)
    x = jnp.asarray(content) * 0.9

    @jax.jit  # one program for every step's value (op by op, VGG took seconds a call)
    def style_term(t):
        return nst_jax.loss_fn(params, x, step_targets(targets, t), config)[1]["style"]

    def value(t):
        return float(style_term(t))

    assert value(0) != value(1)  # a step's projections are its own
    assert value(4) == value(4)
    one = nst_jax.stylize(content, style_image, params=params, config=config)
    two = nst_jax.stylize(content, style_image, params=params, config=config)
    np.testing.assert_array_equal(np.asarray(one.image), np.asarray(two.image))
    other = nst_jax.stylize(content, style_image, params=params, config=config.replace(seed=4))
    assert not np.array_equal(np.asarray(one.image), np.asarray(other.image))


@pytest.mark.slow
def test_sw_killed_then_resumed_equals_the_uninterrupted_run(params, content_image, style_image):
    config = sw_config(steps=9)
    content = small(content_image, n=2)
    whole = nst_jax.stylize(content, style_image, params=params, config=config)
    states = []

    def stop(event):
        states.append(event.state)
        raise StopRun

    nst_jax.stylize(content, style_image, params=params, config=config, on_event=stop)
    resumed = nst_jax.stylize(content, style_image, params=params, config=config, resume=states[0])
    np.testing.assert_array_equal(np.asarray(resumed.image), np.asarray(whole.image))
    np.testing.assert_array_equal(resumed.losses, whole.losses)


@pytest.mark.slow
def test_sw_batch_images_equal_their_own_runs_in_float64(params64, content_image, style_image):
    config = sw_config(seed=(3, 5))
    with jax.enable_x64(True):
        contents = np.stack([content_image[:32, :40], content_image[32:, 56:]]).astype(np.float64)
        style = style_image.astype(np.float64)
        batch = nst_jax.stylize(contents, style, params=params64, config=config)
        for i, seed in enumerate((3, 5)):
            alone = nst_jax.stylize(
                contents[i], style, params=params64, config=config.replace(seed=seed)
            )
            assert float(jnp.max(jnp.abs(batch.image[i] - alone.image))) <= EXACT
            np.testing.assert_allclose(batch.losses[i], alone.losses, rtol=EXACT)


def keyed_loss(params, x, targets, config):
    """The objective plus a term on noise drawn from the step's key and an extra target."""
    value, terms = nst_jax.loss_fn(params, x, targets, config)
    noise = jax.random.uniform(targets["key"], x.shape, x.dtype)
    extra = 1e9 * jnp.mean((x - noise * targets["tint"]) ** 2)  # dominates: the image follows it
    return value + extra, {**terms, "extra": extra}


@pytest.mark.slow
def test_a_custom_loss_gets_its_key_and_per_image_extra_targets(params, content_image, style_image):
    config = nst_jax.StyleConfig(steps=4, steps_per_call=2, seed=(1, 2))
    contents = small(content_image, n=2)
    tints = np.asarray([[0.2, 0.5, 0.9], [0.9, 0.1, 0.3]], np.float32)
    batch = nst_jax.stylize(
        contents,
        style_image,
        params=params,
        config=config,
        loss=keyed_loss,
        extra_targets={"tint": tints},
    )
    for i in range(2):
        alone = nst_jax.stylize(
            contents[i],
            style_image,
            params=params,
            config=config.replace(seed=i + 1),
            loss=keyed_loss,
            extra_targets={"tint": tints[i]},
        )
        np.testing.assert_allclose(np.asarray(batch.image[i]), np.asarray(alone.image), atol=1e-5)
    assert not np.allclose(np.asarray(batch.image[0]), np.asarray(batch.image[1]), atol=1e-3)
    with pytest.raises(ValueError, match=r"extra_targets\['tint'\]: one entry per image"):
        nst_jax.stylize(
            contents,
            style_image,
            params=params,
            config=config,
            loss=keyed_loss,
            extra_targets={"tint": tints[0]},
        )
    with pytest.raises(ValueError, match="'key' is a name of the targets' own"):
        nst_jax.make_targets(
            params, contents[0], style_image, config.replace(seed=0), extra={"key": 1}
        )


@pytest.mark.slow
def test_targets_with_keys_and_ints_save_and_load(params, content_image, style_image, tmp_path):
    config = sw_config()
    targets = nst_jax.make_targets(
        params,
        small(content_image),
        style_image,
        config,
        extra={"bins": np.arange(5), "keys": jax.random.split(jax.random.key(7), 3)},
    )
    path = save_targets(tmp_path / "t.msgpack", targets)
    loaded = load_targets(path)
    for name in ("key",):
        np.testing.assert_array_equal(
            jax.random.key_data(loaded[name]), jax.random.key_data(targets[name])
        )
    np.testing.assert_array_equal(
        jax.random.key_data(loaded["keys"]), jax.random.key_data(targets["keys"])
    )
    np.testing.assert_array_equal(loaded["bins"], np.arange(5))
    x = jnp.asarray(small(content_image))
    assert (
        nst_jax.loss_fn(params, x, loaded, config)[0]
        == nst_jax.loss_fn(params, x, targets, config)[0]
    )
    data = path.read_bytes().replace(b"threefry2x32", b"threefry9x99")
    path.write_bytes(data)
    with pytest.raises(nst_jax.InputError, match="targets/key is not a PRNG key"):
        load_targets(path)


@pytest.mark.slow
def test_a_product_sweep_crosses_contents_with_values(params, content_image, style_image):
    weights = (1e-3, 1e-2, 1e-1)
    config = nst_jax.StyleConfig(steps=2, steps_per_call=2, style_weight=weights)
    contents = np.stack([content_image[:32, :40], content_image[32:, 56:]])
    crossed = nst_jax.stylize(contents, style_image, params=params, config=config, sweep="product")
    assert crossed.image.shape == (6, 32, 40, 3)
    zipped = nst_jax.stylize(
        np.repeat(contents, 3, axis=0),
        style_image,
        params=params,
        config=config.replace(style_weight=weights * 2),
    )
    np.testing.assert_array_equal(np.asarray(crossed.image), np.asarray(zipped.image))
    with pytest.raises(ValueError, match="sweep must be one of zip, product"):
        nst_jax.stylize(contents, style_image, params=params, config=config, sweep="cross")


def test_a_traced_setting_points_to_the_targets_weights():
    with pytest.raises(
        TypeError, match=r'put a value to differentiate or sweep in targets\["weights"\]'
    ):
        jax.grad(lambda w: nst_jax.StyleConfig(style_weight=w).steps)(1.0)


# --- The losses against their formulas ------------------------------------------------------


def test_quantiles_are_the_values_for_equal_sizes_and_interpolate_otherwise():
    values = np.sort(np.random.default_rng(0).random((7, 3)), axis=0)
    with jax.enable_x64(True):
        np.testing.assert_array_equal(sorts.quantiles(jnp.asarray(values), 7), values)
        resampled = np.asarray(sorts.quantiles(jnp.asarray(values), 14))
    # 14 quantiles of 7 sorted values: NumPy's interpolation at the same positions.
    positions = (np.arange(14) + 0.5) / 14 * 7 - 0.5
    expected = np.stack(
        [np.interp(positions, np.arange(7), values[:, k]) for k in range(3)], axis=1
    )
    np.testing.assert_allclose(resampled, expected, rtol=1e-12)


def test_efdm_equals_the_papers_rank_matching(params64):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 5, 4)), rng.normal(size=(6, 5, 4))
    with jax.enable_x64(True):
        ours = float(sorts.efdm_distance(jnp.asarray(x), sorts.sorted_features(jnp.asarray(y))))
    # Zhang et al.'s: mse(x, sorted_style[rank(x)]) per channel.
    flat_x, flat_y = x.reshape(-1, 4), np.sort(y.reshape(-1, 4), axis=0)
    ranks = np.argsort(np.argsort(flat_x, axis=0), axis=0)
    target = np.take_along_axis(flat_y, ranks, axis=0)
    assert abs(ours - np.mean((flat_x - target) ** 2)) <= 1e-12 * max(1.0, ours)


def test_sw_is_the_mean_squared_difference_of_sorted_projections():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(4, 5, 3)), rng.normal(size=(20, 3))
    key = jax.random.key(0)
    with jax.enable_x64(True):
        ours = float(sorts.sw_distance(jnp.asarray(x), jnp.asarray(y), key))
        directions = np.asarray(sorts.random_directions(key, 3, jnp.float64))
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-12)
    # Heitz et al.'s: project, sort, compare (equal sample counts: x has 20 positions).
    px = np.sort(x.reshape(-1, 3) @ directions.T, axis=0)
    py = np.sort(y @ directions.T, axis=0)
    assert abs(ours - np.mean((px - py) ** 2)) <= 1e-12 * max(1.0, ours)


def test_moments_match_their_formula_and_have_a_gradient_at_a_match():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4, 4, 3)), rng.normal(size=(6, 5, 3))
    with jax.enable_x64(True):
        mx, my = sorts.sigmoid_moments(jnp.asarray(x)), sorts.sigmoid_moments(jnp.asarray(y))
        ours = float(sorts.moments_distance(mx, my))
        at_match = jax.grad(lambda f: sorts.moments_distance(sorts.sigmoid_moments(f), mx))(
            jnp.asarray(x)
        )

    def moments(a):
        bounded = 1 / (1 + np.exp(-a.reshape(-1, 3)))
        mean = bounded.mean(0)
        return [mean] + [((bounded - mean) ** k).mean(0) for k in (2, 3, 4, 5)]

    expected = sum(np.linalg.norm(a - b) for a, b in zip(moments(x), moments(y), strict=True))
    assert abs(ours - expected) <= 1e-12 * expected
    assert np.all(np.isfinite(at_match)) and not np.any(at_match)


def test_objective_keys_are_the_seeds_second_stream():
    key = objective_key(3)
    expected = jax.random.fold_in(jax.random.key(3), 1)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(expected))
