"""Beyond the tutorial: L-BFGS, coarse-to-fine, colour control, blended styles, layer weights,
initialisations and presets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.config import StyleConfig
from nst_jax.core import objective
from nst_jax.core import targets as targets_mod
from nst_jax.presets import PRESETS, gatys_weights
from nst_jax.run import color, inputs, multiscale

from conftest import LIGHT_LAYERS, into

FAST = StyleConfig(steps=4, steps_per_call=2)


# --- L-BFGS -------------------------------------------------------------------------------


@pytest.mark.slow
def test_lbfgs_beats_adam_per_evaluation(params, content_image, style_image):
    """Acceptance 1: after the same loss-and-gradient evaluations (VGG forward + backward) on
    the 64 x 96 test images, L-BFGS's total loss is lower than Adam's (tutorial weights,
    Gatys et al.'s noise start). 20 evaluations here, for the suite's time: Adam 5.29e6,
    L-BFGS 4.28e6 (at 30: 4.96e6 and 4.02e6; at 50: 4.57e6 and 3.79e6); at 100
    (scripts/compare_optimizers.py) Adam 4.03e6, L-BFGS 3.57e6.

    From the content image (the tutorial's start) Adam is ahead instead with these random
    test weights (3.41e6 vs 3.48e6): `python scripts/compare_optimizers.py` prints both
    starts, and scripts/README.md records them.
    """
    losses = {}
    for opt, steps in (("adam", 20), ("lbfgs", 19)):
        # L-BFGS spends one evaluation on its start and one per line-search trial, so it gets
        # as many steps as fit in the same budget.
        # Chunks of 10, as the other tests: the compiled steps are theirs (the trajectory
        # does not depend on the chunking).
        config = StyleConfig(steps=steps, steps_per_call=10, optimizer=opt, init="noise")
        result = nst_jax.stylize(content_image, style_image, params=params, config=config)
        losses[opt] = (int(result.evaluations), float(result.losses[-1]))
        print(f"\n{opt}: {losses[opt][0]} evaluations, last loss {losses[opt][1]:.6g}")
    assert losses["lbfgs"][0] <= losses["adam"][0] == 20
    assert losses["lbfgs"][1] < 0.95 * losses["adam"][1]  # lower, and not a near-tie


@pytest.mark.slow
def test_lbfgs_counts_every_evaluation(params, content_image, style_image):
    """``evaluations`` equals the number of times the loss was really evaluated (counted by a
    host callback inside the compiled line search)."""
    calls = []
    original = objective.loss_fn

    def counted(*args, **kwargs):
        jax.debug.callback(lambda: calls.append(1))
        return original(*args, **kwargs)

    # A plan no other test uses, so the step is traced afresh with the counting loss; VGG19
    # to block 2, since counting does not depend on the depth.
    config = FAST.replace(
        optimizer="lbfgs", lbfgs_memory=3, steps=5, steps_per_call=5, **LIGHT_LAYERS
    )
    result = nst_jax.stylize(content_image, style_image, params=params, config=config, loss=counted)
    jax.effects_barrier()
    terms = 1  # the chunk's one forward pass for the log's loss terms
    assert int(result.evaluations) == len(calls) - terms
    assert result.evaluations >= 6  # the start plus at least one trial per step


@pytest.mark.slow
def test_lbfgs_stays_in_unit_range_and_reports_terms(params, content_image, style_image):
    config = FAST.replace(optimizer="lbfgs", init="noise")
    states = []
    result = nst_jax.stylize(
        content_image,
        style_image,
        params=params,
        config=config,
        on_event=into(states),
    )
    assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 1.0
    terms = states[-1].terms
    # The logged terms add up to the logged total (the loss before the last step).
    total = terms["content"] + terms["style"] + terms["tv"]
    np.testing.assert_allclose(total, terms["total"], rtol=1e-5)
    np.testing.assert_allclose(terms["total"], result.losses[-1:], rtol=1e-6)


# --- coarse to fine -----------------------------------------------------------------------


def test_scale_schedule():
    """Sizes grow by sqrt(2) (rounded), aspect kept; the last is the requested size."""
    assert multiscale.scale_shapes(256, 256, StyleConfig(scales=3)) == [
        (128, 128),
        (181, 181),
        (256, 256),
    ]
    assert multiscale.scale_shapes(300, 200, StyleConfig(scales=1)) == [(300, 200)]
    # min_size: as many scales as keep the first at least that long (256 / sqrt(2)^2 = 128).
    assert len(multiscale.scale_shapes(256, 192, StyleConfig(min_size=128))) == 3
    assert len(multiscale.scale_shapes(256, 192, StyleConfig(min_size=100))) == 3
    assert len(multiscale.scale_shapes(256, 192, StyleConfig(min_size=300))) == 1
    assert multiscale.total_steps(256, 256, StyleConfig(scales=3, steps=10, coarse_steps=4)) == 18


@pytest.mark.slow
def test_coarse_to_fine_ends_at_requested_size(params, content_image, style_image):
    config = FAST.replace(scales=2, coarse_steps=3, steps=2)
    chunks = []
    result = nst_jax.stylize(
        content_image,
        style_image,
        params=params,
        config=config,
        on_event=into(chunks),
    )
    assert result.image.shape == content_image.shape
    assert result.losses.shape == (5,)
    assert [(c.scale, c.step, c.images.shape[1:3]) for c in chunks] == [
        (0, 2, (45, 68)),
        (0, 3, (45, 68)),
        (1, 5, (64, 96)),
    ]
    # Adam's moments are carried, so its step count runs on across scales.
    assert int(jax.tree.leaves(chunks[-1].opt_states)[0][0]) == 5


@pytest.mark.slow
def test_coarse_to_fine_resumes_mid_scale(params, content_image, style_image):
    """A run resumed from its state at the first scale ends where the uninterrupted one does."""
    config = FAST.replace(scales=2, coarse_steps=4, steps=2)
    chunks = []
    whole = nst_jax.stylize(
        content_image,
        style_image,
        params=params,
        config=config,
        on_event=into(chunks),
    )
    resumed = nst_jax.stylize(
        content_image, style_image, params=params, config=config, resume=chunks[0]
    )
    np.testing.assert_array_equal(resumed.image, whole.image)
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    # The run copies what it resumes from (its first chunk donates its buffers), so the same
    # state resumes again: a sweep may branch from one saved state.
    again = nst_jax.stylize(
        content_image, style_image, params=params, config=config, resume=chunks[0]
    )
    np.testing.assert_array_equal(again.image, whole.image)


# --- colour -------------------------------------------------------------------------------


@pytest.mark.slow
def test_luminance_mode_keeps_content_chroma(params, content_image, style_image, tmp_path):
    """Acceptance 2: the output's YIQ chroma equals the content's within 1/255, in the float
    result and after saving to 8 bits."""
    config = FAST.replace(preserve_color="luminance", steps=6, steps_per_call=3)
    result = nst_jax.stylize(content_image, style_image, params=params, config=config)
    chroma = lambda im: np.asarray(color.rgb_to_yiq(jnp.asarray(im, jnp.float32)))[..., 1:]  # noqa: E731
    assert np.max(np.abs(chroma(result.image) - chroma(content_image))) <= 1 / 255
    path = tmp_path / "lum.png"
    nst_jax.image.save(path, np.asarray(result.image))
    saved = nst_jax.image.load(path)
    assert np.max(np.abs(chroma(saved) - chroma(content_image))) <= 1 / 255
    # The style did change the image: its luminance moved.
    assert np.max(np.abs(np.asarray(result.image) - content_image)) > 0.01


def test_recombine_moves_luminance_not_chroma_out_of_gamut():
    content = jnp.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # saturated red, blue
    bright = jnp.ones((1, 2, 3))  # a result whose luminance would push them out of gamut
    out = color.recombine(bright, content)
    assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6
    np.testing.assert_allclose(
        color.rgb_to_yiq(out)[..., 1:], color.rgb_to_yiq(content)[..., 1:], atol=1e-6
    )


def test_histogram_matching_equals_content_statistics(content_image, style_image):
    """Acceptance 2: mean and covariance of the matched style equal the content's within 1e-3."""
    matched = color.match_histogram(jnp.asarray(style_image), jnp.asarray(content_image))
    mean_m, cov_m = color.colour_stats(matched)
    # Expected values from NumPy directly, not from the function under test.
    pixels = content_image.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean_m, pixels.mean(0), atol=1e-3)
    np.testing.assert_allclose(cov_m, np.cov(pixels.T, bias=True), atol=1e-3)


@pytest.mark.slow
def test_histogram_mode_runs_on_matched_style(params, content_image, style_image):
    config = FAST.replace(preserve_color="histogram")
    matched = color.match_histogram(jnp.asarray(style_image), jnp.asarray(content_image))
    result = nst_jax.stylize(content_image, style_image, params=params, config=config)
    by_hand = nst_jax.stylize(content_image, matched, params=params, config=FAST)
    np.testing.assert_allclose(result.losses, by_hand.losses, rtol=1e-5)


# --- blends, layer weights, style scale ---------------------------------------------------


@pytest.mark.slow
def test_blend_one_zero_is_the_single_style_exactly(params, content_image, style_image):
    """Acceptance 3."""
    other = np.flipud(style_image).copy()
    single = nst_jax.stylize(content_image, style_image, params=params, config=FAST)
    blended = nst_jax.stylize(
        content_image,
        [style_image, other],
        params=params,
        config=FAST.replace(style_blend=(1, 0)),
    )
    np.testing.assert_array_equal(blended.image, single.image)
    np.testing.assert_array_equal(blended.losses, single.losses)


def test_blended_targets_are_weighted_grams(params, content_image, style_image):
    """The target is sum_k w_k G_k / sum_k w_k (0.7, 0.3 already sum to 1)."""
    other = np.fliplr(style_image).copy()
    a = targets_mod.style_targets(params, style_image, FAST)
    b = targets_mod.style_targets(params, other, FAST)
    config = FAST.replace(style_blend=(0.7, 0.3))
    targets = nst_jax.make_targets(params, content_image, [style_image, other], config)
    for layer in FAST.style_layers:
        expected = 0.7 * np.asarray(a[layer]) + 0.3 * np.asarray(b[layer])
        np.testing.assert_allclose(targets["style"][layer], expected, rtol=1e-5, atol=1e-6)


def test_blend_weights_must_match_style_count(params, content_image, style_image):
    with pytest.raises(ValueError, match="style_blend has 3 weights for 2 style images"):
        nst_jax.stylize(
            content_image,
            [style_image, style_image],
            params=params,
            config=FAST.replace(style_blend=(1, 1, 1)),
        )


@pytest.mark.slow
def test_layer_weights_scale_each_layer(params, content_image, style_image):
    """Weights (2, 0, 0, 0, 0) give twice the first layer's term alone (tutorial form: the
    sum is still divided by the number of layers, 5)."""
    image = jnp.asarray(content_image)

    def style_term(config):
        targets = nst_jax.make_targets(params, image, style_image, config)
        return float(nst_jax.loss_fn(params, image, targets, config)[1]["style"])

    all_layers = style_term(FAST.replace(style_layer_weights=(2, 0, 0, 0, 0)))
    one_layer = style_term(FAST.replace(style_layers=("block1_conv1",)))
    np.testing.assert_allclose(all_layers, 2 / 5 * one_layer, rtol=1e-5)


def test_style_scale_resizes_the_style_relative_to_content():
    style = jnp.zeros((100, 50, 3))
    assert inputs.scaled_style(style, (64, 96), 0.5).shape == (48, 24, 3)
    assert inputs.scaled_style(style, (64, 96), None) is style


# --- initialisation and presets -------------------------------------------------------------


def test_inits(params, content_image, style_image, tmp_path):
    def start(init, seed=0):
        config = FAST.replace(init=init, seed=seed)
        return np.asarray(
            inputs.initial_images(config, inputs.make_batch(content_image, style_image, config))
        )

    np.testing.assert_array_equal(start("content")[0], content_image)
    np.testing.assert_array_equal(start("style")[0], style_image)  # same size: no resize
    assert not np.array_equal(start("noise"), start("noise", seed=1))
    path = tmp_path / "start.png"
    nst_jax.image.save(path, style_image)
    np.testing.assert_allclose(start(str(path))[0], style_image, atol=0.5 / 255 + 1e-6)


def test_presets_are_valid_and_tutorial_is_the_default():
    assert PRESETS["tutorial"] == StyleConfig()
    gatys = PRESETS["gatys"]
    assert gatys.content_layers == ("block4_conv2",)
    assert gatys.style_layers == tuple(f"block{i}_conv1" for i in range(1, 6))
    assert gatys.optimizer == "lbfgs"
    # alpha/beta = 1e-3 in Gatys' normalisation; block4_conv2 of 512x512 is 64 x 64 x 512.
    assert gatys_weights() == (64 * 64 * 512 / 2, 1e3 / 4)
    assert sorted(PRESETS) == ["gatys", "tutorial"]  # each named for its published source


def test_old_optimizer_name_still_accepted():
    assert StyleConfig(optimizer="keras_adam").optimizer == "adam"
