"""The research core: targets, loss_fn, the optimiser and the step, and stylize built on them.

float32 bounds (these run on any x86-64 CPU, whose float32 kernels round differently: AVX2,
AVX-512 with or without bf16):
- one step's loss, an evaluation of the same function, is bounded by float32 rounding of sums
  over ~1e5 products: rtol 1e-5 (measured at most 1.1e-7 across machines);
- later steps drift: Adam is scale-invariant, so a pixel whose gradient is near 0 moves by
  about the learning rate in whichever direction rounding tips it, and two correct programs
  that round differently part by ~1e-4 in a few steps (measured up to 4.6e-4 at step 3 on an
  AVX-512 machine): rtol 5e-3, ten times that.
Exactness is asserted in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scripts_loader import load_script

import nst_jax

import reference

# Every test uses this chunk size and 64 x 96 images so one compiled program serves them all.
STEPS_PER_CALL = 10
FIRST_STEP_RTOL = 1e-5  # one evaluation in float32 (module docstring)
DRIFT_RTOL = 5e-3  # later float32 steps (module docstring)


def config(**changes):
    return nst_jax.StyleConfig(steps_per_call=STEPS_PER_CALL, **changes)


@pytest.fixture(scope="module")
def run50(params, content_image, style_image):
    return nst_jax.stylize(content_image, style_image, params=params, config=config(steps=50))


def as64(*images):
    """Images in float64 (call under ``jax.enable_x64``)."""
    return tuple(jnp.asarray(im, jnp.float64) for im in images)


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
    """``n_steps`` of scripts/own_loop.py's loop on the public core, op by op (no jit)."""
    with jax.disable_jit():
        return (
            load_script("own_loop")
            .own_loop(params, content, style, cfg.replace(steps=n_steps))["losses"]
            .astype(np.float64)
        )


@pytest.fixture(scope="module")
def eager64(params64, noisy_content, style_image):
    """2 eager float64 steps (a few seconds each): computed once for both loop kinds."""
    with jax.enable_x64(True):
        return eager_losses(params64, *as64(noisy_content, style_image), config(), 2)


@pytest.fixture(scope="module")
def eager32(params, noisy_content, style_image):
    """2 eager float32 steps, once for both loop kinds."""
    return eager_losses(params, jnp.asarray(noisy_content), style_image, config(), 2)


@pytest.mark.parametrize("loop", ["host", "device"])
@pytest.mark.slow
def test_jitted_loop_equals_eager_single_steps_float64(
    params64, noisy_content, style_image, eager64, loop
):
    # Adam is scale-invariant: a pixel whose gradient is near 0 moves by about the learning rate
    # in whichever direction rounding tips it, so two correct float32 programs that round
    # differently (XLA fuses the jitted loop, not the op-by-op one) drift apart by ~1e-4 after
    # a handful of steps. In float64 the rounding is 1e-16 and the comparison isolates what
    # this test is about: the compiled loop computes exactly the steps it claims to.
    # Both chunk loops are checked: "host" (CPU default) and "device" (accelerator default).
    cfg = config(steps=STEPS_PER_CALL, loop=loop)  # one chunk, the other tests' program
    with jax.enable_x64(True):
        content, style = as64(noisy_content, style_image)
        jitted = nst_jax.stylize(content, style, params=params64, config=cfg)
    assert jitted.image.dtype == jnp.float64
    first = jitted.losses[: len(eager64)]
    rel = np.max(np.abs(first - eager64) / eager64)
    steps = len(eager64)
    print(f"float64 {loop} loop vs eager, max relative difference over {steps} steps: {rel:.2e}")
    np.testing.assert_allclose(first, eager64, rtol=1e-4)


@pytest.mark.parametrize("loop", ["host", "device"])
@pytest.mark.slow
def test_jitted_loop_equals_eager_single_steps_float32(
    params, noisy_content, style_image, eager32, loop
):
    # float32, as users run it: step 1 tight, later steps within the drift bound (docstring).
    cfg = config(steps=10, loop=loop)
    jitted = nst_jax.stylize(noisy_content, style_image, params=params, config=cfg)
    eager = eager32
    rel = np.abs(jitted.losses[:2] - eager) / eager
    print(f"float32 {loop} loop vs eager, relative difference of steps 1-2: {rel}")
    assert rel[0] <= FIRST_STEP_RTOL, rel
    assert np.all(rel <= DRIFT_RTOL), rel


def test_style_term_falls(params, run50, content_image, style_image):
    cfg = config()
    targets = nst_jax.make_targets(params, content_image, style_image, cfg)
    terms = jax.jit(nst_jax.loss_fn, static_argnums=3)
    before = terms(params, jnp.asarray(content_image), targets, cfg)[1]["style"]
    after = terms(params, run50.image, targets, cfg)[1]["style"]
    print(f"style term: step 1 {float(before):.6g}, after 50 steps {float(after):.6g}")
    assert float(after) < float(before)


def test_result_is_an_image_of_the_content_shape(run50, content_image):
    assert run50.image.shape == content_image.shape
    assert run50.image.dtype == jnp.float32
    assert run50.losses.shape == (50,)
    assert float(run50.image.min()) >= 0.0 and float(run50.image.max()) <= 1.0
    assert np.all(np.isfinite(run50.losses))


@pytest.mark.slow
def test_uneven_last_chunk_and_progress(params, run50, content_image, style_image):
    # 23 steps = chunks of 10, 10, 3; the same compiled program runs the short chunk.
    calls = []
    result = nst_jax.stylize(
        content_image, style_image, params=params, config=config(steps=23),
        on_event=lambda e: calls.append((e.state.step, e.state.losses.shape)),
    )  # fmt: skip
    assert calls == [(10, (1, 10)), (20, (1, 20)), (23, (1, 23))]
    # The same program on the same inputs: identical up to XLA's run-to-run determinism.
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
    # With eps = 0.1 the placement of epsilon matters; with eps -> 0 it does not.
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


def test_keras_adam_is_a_chain_that_takes_a_schedule():
    # optax's form: scale_by_keras_adam, then scale_by_learning_rate (a schedule works).
    x = jnp.zeros(())
    constant = nst_jax.keras_adam(0.02, 0.99, 0.999, 0.1)
    schedule = nst_jax.keras_adam(optax.constant_schedule(0.02), 0.99, 0.999, 0.1)
    a, _ = constant.update(jnp.float32(0.3), constant.init(x))
    b, _ = schedule.update(jnp.float32(0.3), schedule.init(x))
    assert float(a) == float(b)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.slow
def test_grad_of_loss_fn_is_what_the_step_applies(params, content_image, style_image, jit):
    """An optimiser that stores its gradient in its state shows what make_step applied."""
    cfg = config()

    def keep_gradient(updates, state, params=None):
        return jax.tree.map(jnp.zeros_like, updates), updates

    tx = optax.GradientTransformation(lambda x: jnp.zeros_like(x), keep_gradient)
    targets = nst_jax.make_targets(params, content_image, style_image, cfg)
    x = jnp.asarray(content_image) * 0.9 + 0.05
    grad_fn = jax.grad(lambda x: nst_jax.loss_fn(params, x, targets, cfg)[0])
    if jit:
        grad_fn = jax.jit(grad_fn)
        applied = nst_jax.make_step(cfg, tx)(params, targets, x, tx.init(x))[1]
    else:
        with jax.disable_jit():
            applied = nst_jax.make_step_fn(cfg, tx)(params, targets, x, tx.init(x))[1]
    expected = grad_fn(x)
    scale = float(jnp.abs(expected).max())
    # The same function differentiated twice: float32 rounding of one gradient evaluation.
    np.testing.assert_allclose(applied, expected, rtol=1e-6, atol=1e-6 * scale)


def test_make_targets_and_loss_fn_give_stylize_first_loss(
    params, run50, content_image, style_image
):
    cfg = config()
    targets = nst_jax.make_targets(params, content_image, style_image, cfg)
    loss, terms = jax.jit(nst_jax.loss_fn, static_argnums=3)(
        params, jnp.asarray(content_image), targets, cfg
    )
    assert set(terms) == {"content", "style", "tv"}
    # One float32 evaluation of the same function on the same image (module docstring).
    np.testing.assert_allclose(float(loss), run50.losses[0], rtol=FIRST_STEP_RTOL)
    np.testing.assert_allclose(float(loss), sum(float(t) for t in terms.values()), rtol=1e-6)


@pytest.mark.slow
def test_own_loop_script_reproduces_stylize(params64, content_image, style_image):
    """scripts/own_loop.py, public names only, equals stylize step for step (float64)."""
    own_loop = load_script("own_loop")
    cfg = config(steps=5)
    with jax.enable_x64(True):
        content, style = as64(content_image, style_image)
        ours = own_loop.own_loop(params64, content, style, cfg)
        theirs = nst_jax.stylize(content, style, params=params64, config=cfg)
    np.testing.assert_allclose(ours["losses"], theirs.losses, rtol=1e-6)
    np.testing.assert_allclose(ours["image"], theirs.image, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_optimizer_transformation_and_lr_sweep(params, content_image, style_image):
    """stylize takes any optax transformation; a learning-rate sweep is one program."""
    cfg = config(steps=3)
    given = nst_jax.stylize(
        content_image, style_image, params=params, config=cfg,
        optimizer=optax.adam(0.02, b1=0.99, b2=0.999, eps=0.1),
    )  # fmt: skip
    named = nst_jax.stylize(
        content_image, style_image, params=params, config=cfg.replace(optimizer="optax_adam")
    )
    assert given.losses[0] == named.losses[0]  # the same image, the same program
    np.testing.assert_allclose(given.losses, named.losses, rtol=DRIFT_RTOL)
    swept = nst_jax.stylize(
        content_image, style_image, params=params, config=cfg.replace(learning_rate=(0.0, 0.02))
    )
    alone = nst_jax.stylize(content_image, style_image, params=params, config=cfg)
    np.testing.assert_allclose(swept.image[0], content_image, atol=0)  # rate 0: unchanged
    np.testing.assert_allclose(swept.losses[1], alone.losses, rtol=DRIFT_RTOL)


@pytest.mark.slow
def test_optax_adam_would_not_reproduce_the_tutorial(params64, content_image, style_image):
    """optax.adam adds epsilon after bias correction: with the tutorial's eps = 0.1, step 2
    differs from Keras' form by a formula, not by rounding (float64: rounding is ~1e-15)."""
    with jax.enable_x64(True):
        content, style = as64(content_image, style_image)
        keras, optax_form = (
            nst_jax.stylize(content, style, params=params64, config=config(steps=2, optimizer=o))
            for o in ("adam", "optax_adam")
        )
    assert keras.losses[0] == optax_form.losses[0]  # the same image before any update
    assert abs(keras.losses[1] - optax_form.losses[1]) / keras.losses[1] > 1e-5
