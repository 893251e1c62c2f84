"""Losses against closed-form NumPy computations (float64), jitted and not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import losses

import reference

REL_TOL = 1e-6  # acceptance bound; float32 sums over a few thousand terms stay well inside


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(7)
    return {
        "a": rng.normal(size=(5, 7, 4)).astype(np.float32),
        "b": rng.normal(size=(3, 2, 6)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def targets():
    rng = np.random.default_rng(8)
    return {
        "a": rng.normal(size=(5, 7, 4)).astype(np.float32),
        "b": rng.normal(size=(3, 2, 6)).astype(np.float32),
    }


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_gram_matrix_closed_form(maps, jit):
    fn = jax.jit(losses.gram_matrix) if jit else losses.gram_matrix
    f = maps["a"]
    # G[c, d] = sum_ij F[i,j,c] F[i,j,d] / (h w), written as explicit loops' worth of einsum.
    expected = np.einsum("ijc,ijd->cd", f.astype(np.float64), f.astype(np.float64)) / (5 * 7)
    np.testing.assert_allclose(fn(f), expected, rtol=REL_TOL, atol=0)
    np.testing.assert_allclose(fn(f), reference.gram(f), rtol=REL_TOL)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_content_loss_closed_form(maps, targets, jit):
    fn = jax.jit(losses.content_loss) if jit else losses.content_loss
    expected = (
        3.5 / 2 * sum(np.mean((maps[k].astype(np.float64) - targets[k]) ** 2) for k in ("a", "b"))
    )
    np.testing.assert_allclose(fn(maps, targets, 3.5), expected, rtol=REL_TOL)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_style_loss_closed_form(maps, targets, jit):
    fn = jax.jit(losses.style_loss) if jit else losses.style_loss
    grams = {k: losses.gram_matrix(v) for k, v in maps.items()}
    target_grams = {k: losses.gram_matrix(v) for k, v in targets.items()}
    expected = (
        0.01
        / 2
        * sum(
            np.mean((reference.gram(maps[k]) - reference.gram(targets[k])) ** 2) for k in ("a", "b")
        )
    )
    np.testing.assert_allclose(fn(grams, target_grams, 0.01), expected, rtol=REL_TOL)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_total_variation_is_sum_of_absolute_differences(jit):
    image = np.random.default_rng(9).random((6, 9, 3)).astype(np.float32)
    fn = jax.jit(losses.total_variation_loss) if jit else losses.total_variation_loss
    # The definition, as explicit loops over neighbouring pixel pairs.
    expected = 0.0
    for i in range(6):
        for j in range(9):
            for c in range(3):
                if i + 1 < 6:
                    expected += abs(float(image[i + 1, j, c]) - float(image[i, j, c]))
                if j + 1 < 9:
                    expected += abs(float(image[i, j + 1, c]) - float(image[i, j, c]))
    np.testing.assert_allclose(fn(image, 30.0), 30.0 * expected, rtol=REL_TOL)
    np.testing.assert_allclose(fn(image), reference.total_variation(image), rtol=REL_TOL)


def test_tf_abs_subgradient_is_zero_at_zero():
    # tf.abs's gradient is sign(x): 0 at 0 (jnp.abs's is 1 there).
    grad = jax.grad(lambda x: losses.tf_abs(x).sum())(jnp.array([-2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(grad, [-1.0, 0.0, 1.0])


def test_total_variation_gradient_on_flat_image_is_zero():
    # A constant image has every difference 0: TensorFlow's gradient is exactly 0 there.
    grad = jax.grad(losses.total_variation_loss)(jnp.full((4, 5, 3), 0.5))
    np.testing.assert_array_equal(grad, np.zeros((4, 5, 3)))


def test_losses_are_zero_at_their_targets(maps):
    grams = {k: losses.gram_matrix(v) for k, v in maps.items()}
    assert float(losses.content_loss(maps, maps, 1e4)) == 0.0
    assert float(losses.style_loss(grams, grams, 1e-2)) == 0.0


def test_shape_errors_quote_the_shape(maps, targets):
    with pytest.raises(ValueError, match=r"\(5, 7\)"):
        losses.gram_matrix(np.zeros((5, 7)))
    with pytest.raises(ValueError, match="do not match"):
        losses.content_loss(maps, {"a": targets["a"]})
    with pytest.raises(ValueError, match=r"\(5, 7, 4\)"):
        losses.content_loss({"a": maps["a"]}, {"a": targets["b"]})
    with pytest.raises(ValueError, match="Gram"):
        losses.style_loss(maps, targets)


def test_gram_derivatives_closed_form(maps):
    """Gram's custom JVP and the gradient it implies, against the product rule in float64:
    dG = (F^T dF + dF^T F) / n, and d<W, G>/dF = F (W + W^T) / n, with n = h * w."""
    f = maps["a"].astype(np.float64)
    rng = np.random.default_rng(9)
    df = rng.normal(size=f.shape)
    weights = rng.normal(size=(4, 4))
    flat, dflat, n = f.reshape(-1, 4), df.reshape(-1, 4), 5 * 7

    _, tangent = jax.jvp(losses.gram_matrix, (maps["a"],), (df.astype(np.float32),))
    expected_tangent = (flat.T @ dflat + dflat.T @ flat) / n
    np.testing.assert_allclose(tangent, expected_tangent, rtol=1e-5, atol=1e-6)

    grad = jax.grad(lambda x: jnp.sum(weights.astype(np.float32) * losses.gram_matrix(x)))(
        maps["a"]
    )
    expected_grad = (flat @ (weights + weights.T) / n).reshape(f.shape)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)


# --- The other style losses against float64 NumPy (tests/reference.py) ----------------------


def style_targets_of(loss: str, targets):
    make = {"mean_std": losses.feature_moments, "w2": losses.w2_target, "mrf": losses.mrf_target}
    return {k: make[loss](jnp.asarray(v)) for k, v in targets.items()}


def image_statistics(loss: str, maps):
    make = {"mean_std": losses.feature_moments, "w2": losses.gaussian_stats, "mrf": lambda f: f}
    return {k: make[loss](jnp.asarray(v)) for k, v in maps.items()}


LOSS_FNS = {"mean_std": losses.mean_std_loss, "w2": losses.w2_loss, "mrf": losses.mrf_loss}


def expected_style(loss: str, maps, targets, weight: float) -> float:
    distance = {
        "mean_std": lambda f, s: np.mean((reference.moments(f) - reference.moments(s)) ** 2),
        "w2": reference.w2_squared,
        "mrf": reference.mrf_distance,
    }[loss]
    return weight / len(maps) * sum(distance(maps[k], targets[k]) for k in maps)


@pytest.fixture(scope="module")
def wide_maps():
    """Maps with enough positions for 3x3 patches and full-rank covariances."""
    rng = np.random.default_rng(9)
    return {"a": rng.normal(size=(6, 8, 4)), "b": rng.normal(size=(5, 9, 3))}


@pytest.fixture(scope="module")
def wide_targets():
    rng = np.random.default_rng(10)
    return {"a": rng.normal(size=(7, 6, 4)), "b": rng.normal(size=(6, 7, 3)) + 0.5}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("loss", ["mean_std", "w2", "mrf"])
def test_other_style_losses_match_numpy(wide_maps, wide_targets, loss, jit):
    """Each equals its float64 NumPy reference within 1e-6 relative, computed in float64 (the
    eigendecomposition and the patch match are then free of float32 rounding)."""
    with jax.enable_x64(True):
        fn = jax.jit(LOSS_FNS[loss]) if jit else LOSS_FNS[loss]
        value = fn(image_statistics(loss, wide_maps), style_targets_of(loss, wide_targets), 0.7)
    expected = expected_style(loss, wide_maps, wide_targets, 0.7)
    print(f"{loss}: nst_jax {float(value):.10g}, NumPy {expected:.10g}")
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)


def test_w2_of_identical_features_is_zero_and_its_gradient_is_finite_rank_deficient():
    """6 positions, 16 channels: a covariance of rank 5. W2 to itself is 0 (to 1e-6 of the
    covariance's trace), and the gradient is finite (the eigenvalue floor)."""
    rng = np.random.default_rng(11)
    features = jnp.asarray(rng.normal(size=(2, 3, 16)), jnp.float32)
    target = losses.w2_target(features)
    scale = float(jnp.trace(target["cov"]))
    distance = losses.w2_distance(losses.gaussian_stats(features), target)
    assert abs(float(distance)) <= 1e-6 * scale, (float(distance), scale)
    other = jnp.asarray(rng.normal(size=(2, 3, 16)), jnp.float32)
    grad = jax.grad(lambda f: losses.w2_distance(losses.gaussian_stats(f), target))(other)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def test_mean_std_is_invariant_to_permuting_positions(wide_maps, wide_targets):
    f = wide_maps["a"].astype(np.float32)
    shuffled = np.random.default_rng(12).permutation(f.reshape(-1, 4)).reshape(f.shape)
    target = {"a": losses.feature_moments(jnp.asarray(wide_targets["a"], jnp.float32))}
    a = losses.mean_std_loss({"a": losses.feature_moments(jnp.asarray(f))}, target)
    b = losses.mean_std_loss({"a": losses.feature_moments(jnp.asarray(shuffled))}, target)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)  # the same sums, reordered
