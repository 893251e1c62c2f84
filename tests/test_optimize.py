"""The optimisation loop: first-step loss, jitted vs eager steps, progress, Keras Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nst_jax
from nst_jax import optimize, vgg

import reference

# Every test uses this chunk size and 64 x 96 images so one compiled program serves them all.
STEPS_PER_CALL = 10


def config(**changes):
    return nst_jax.StyleConfig(steps_per_call=STEPS_PER_CALL, **changes)


@pytest.fixture(scope="module")
def run50(params, content_image, style_image):
    return nst_jax.stylize(content_image, style_image, params=params, config=config(steps=50))


def per_image_targets(plan, params, content, style):
    return {
        "content": vgg.image_features(params, jnp.asarray(content), plan.content_layers),
        "style": optimize.style_grams(plan, params, jnp.asarray(style)),
    }


def scalar_hparams(cfg):
    return {name: jnp.float32(getattr(cfg, name)) for name in optimize.HPARAMS}


def test_first_loss_is_the_content_image_loss(run50, numpy_params, content_image, style_image):
    # Step 1 evaluates the content image itself; recompute its loss in float64 NumPy.
    cfg = config()
    expected, _ = reference.tutorial_loss(
        numpy_params, content_image, content_image, style_image,
        cfg.content_layers, cfg.style_layers,
        cfg.content_weight, cfg.style_weight, cfg.tv_weight,
    )  # fmt: skip
    print(f"step-1 loss: nst_jax {run50.losses[0]:.8g}, NumPy float64 {expected:.8g}")
    np.testing.assert_allclose(run50.losses[0], expected, rtol=1e-5)


def eager_losses(params, content, style, cfg, n_steps):
    """``n_steps`` of ``optimize.step`` in a plain Python loop, op by op (no jit anywhere)."""
    plan = optimize.Plan.from_config(cfg)
    targets = per_image_targets(plan, params, content, style)
    hparams = {k: jnp.asarray(v, content.dtype) for k, v in scalar_hparams(cfg).items()}
    image = jnp.asarray(content)
    state = optimize.make_optimizer(plan, hparams["learning_rate"]).init(image)
    history = []
    with jax.disable_jit():
        for _ in range(n_steps):
            image, state, losses = optimize.step(plan, params, targets, hparams, image, state)
            history.append(float(losses["total"]))
    return np.array(history)


@pytest.fixture(scope="module")
def eager64(params, noisy_content, style_image):
    """20 eager float64 steps (about 2 s each): computed once for both loop kinds."""
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        content = jnp.asarray(noisy_content, jnp.float64)
        style = jnp.asarray(style_image, jnp.float64)
        return eager_losses(params64, content, style, config(), 20)


@pytest.mark.parametrize("loop", ["host", "device"])
def test_jitted_loop_equals_eager_single_steps_float64(
    params, noisy_content, style_image, eager64, loop
):
    # Adam is scale-invariant: a pixel whose gradient is near 0 moves by about the learning rate
    # in whichever direction rounding tips it, so two correct float32 programs that round
    # differently (XLA fuses the jitted loop, not the op-by-op one) drift apart by ~1e-4 after
    # a handful of steps. In float64 the rounding is 1e-16 and the comparison isolates what
    # this test is about: the compiled loop computes exactly the steps it claims to.
    # Both chunk loops are checked: "host" (CPU default) and "device" (accelerator default).
    cfg = config(steps=20, loop=loop)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        content = jnp.asarray(noisy_content, jnp.float64)
        style = jnp.asarray(style_image, jnp.float64)
        jitted = nst_jax.stylize(content, style, params=params64, config=cfg)
    assert jitted.image.dtype == jnp.float64
    rel = np.max(np.abs(jitted.losses - eager64) / eager64)
    print(f"float64 {loop} loop vs eager, max relative difference over 20 steps: {rel:.2e}")
    np.testing.assert_allclose(jitted.losses, eager64, rtol=1e-4)


@pytest.mark.parametrize("loop", ["host", "device"])
def test_jitted_loop_equals_eager_single_steps_float32(params, noisy_content, style_image, loop):
    # float32, as users run it: identical until rounding differences are amplified (above).
    cfg = config(steps=10, loop=loop)
    jitted = nst_jax.stylize(noisy_content, style_image, params=params, config=cfg)
    eager = eager_losses(params, jnp.asarray(noisy_content), style_image, config(), 4)
    rel = np.abs(jitted.losses[:4] - eager) / eager
    print(f"float32 {loop} loop vs eager, relative difference of steps 1-4: {rel}")
    np.testing.assert_allclose(jitted.losses[:4], eager, rtol=1e-5)


def test_style_term_falls(params, run50, content_image, style_image):
    cfg = config()
    plan = optimize.Plan.from_config(cfg)
    targets = per_image_targets(plan, params, content_image, style_image)
    terms = jax.jit(optimize.loss_terms, static_argnums=0)
    before = terms(plan, params, jnp.asarray(content_image), targets, scalar_hparams(cfg))["style"]
    after = terms(plan, params, run50.image, targets, scalar_hparams(cfg))["style"]
    print(f"style term: step 1 {float(before):.6g}, after 50 steps {float(after):.6g}")
    assert float(after) < float(before)


def test_result_is_an_image_of_the_content_shape(run50, content_image):
    assert run50.image.shape == content_image.shape
    assert run50.image.dtype == jnp.float32
    assert run50.losses.shape == (50,)
    assert float(run50.image.min()) >= 0.0 and float(run50.image.max()) <= 1.0
    assert np.all(np.isfinite(run50.losses))


def test_uneven_last_chunk_and_progress(params, run50, content_image, style_image):
    # 23 steps = chunks of 10, 10, 3; the same compiled program runs the short chunk.
    calls = []
    result = nst_jax.stylize(
        content_image, style_image, params=params, config=config(steps=23),
        callback=lambda done, chunk: calls.append((done, chunk.shape)),
    )  # fmt: skip
    assert calls == [(10, (1, 10)), (20, (1, 10)), (23, (1, 3))]
    np.testing.assert_allclose(result.losses, run50.losses[:23], rtol=1e-6)


def test_noise_init_is_seeded(params, content_image, style_image):
    a, b, c = (
        nst_jax.stylize(
            content_image, style_image, params=params,
            config=config(steps=1, init="noise", seed=seed),
        )
        for seed in (1, 1, 2)
    )  # fmt: skip
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.allclose(a.image, c.image)
    assert not np.allclose(a.image, content_image, atol=0.1)


def numpy_keras_adam(grads, lr, b1, b2, eps):
    """Keras' Adam update as its source writes it (keras/src/optimizers/adam.py)."""
    m = v = 0.0
    x, xs = 0.0, []
    for t, g in enumerate(grads, start=1):
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        x = x - m * alpha / (np.sqrt(v) + eps)
        xs.append(x)
    return np.array(xs)


def test_keras_adam_matches_keras_formula():
    grads = np.array([0.3, -0.1, 0.05, 0.2, -0.4], np.float32)
    opt = nst_jax.keras_adam(0.02, 0.99, 0.999, 0.1)
    x = jnp.zeros(())
    state = opt.init(x)
    xs = []
    for g in grads:
        updates, state = opt.update(jnp.float32(g), state)
        x = optax.apply_updates(x, updates)
        xs.append(float(x))
    np.testing.assert_allclose(xs, numpy_keras_adam(grads, 0.02, 0.99, 0.999, 0.1), rtol=1e-5)


def test_keras_adam_differs_from_optax_adam_with_large_epsilon():
    # With eps = 0.1 the placement of epsilon matters (design.md); with eps -> 0 it does not.
    g = jnp.float32(0.3)
    for eps, differ in ((0.1, True), (1e-12, False)):
        keras_update, _ = nst_jax.keras_adam(0.02, 0.99, 0.999, eps).update(
            g, nst_jax.keras_adam(0.02, 0.99, 0.999, eps).init(g)
        )
        optax_update, _ = optax.adam(0.02, 0.99, 0.999, eps).update(
            g, optax.adam(0.02, 0.99, 0.999, eps).init(g)
        )
        assert (abs(float(keras_update) - float(optax_update)) > 1e-4) == differ


def test_small_image_is_refused(params, style_image):
    with pytest.raises(ValueError, match="both sides >= 16"):
        nst_jax.stylize(np.zeros((8, 40, 3)), style_image, params=params, config=config(steps=1))
