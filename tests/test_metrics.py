"""nst_jax.metrics: feature distances against NumPy in float64, SSIM and PSNR (dm-pix)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import metrics

pytest.importorskip("dm_pix")

LAYERS = ("block1_conv1", "block2_conv1")


@pytest.mark.slow
def test_feature_distances_match_numpy_in_float64(params64):
    # Bound 1e-12 relative: the same float64 features on both sides, reduced in NumPy here.
    rng = np.random.default_rng(0)
    a, b = rng.random((24, 32, 3)), rng.random((16, 20, 3))
    with jax.enable_x64(True):
        fa, fb = (nst_jax.vgg19_features(params64, jnp.asarray(x), LAYERS) for x in (a, b))
        styles = metrics.style_distances(params64, a, b, LAYERS)
        same = metrics.style_distances(params64, a, a, LAYERS)
        content = metrics.content_distance(params64, a, a[::-1].copy(), LAYERS)
        flipped = nst_jax.vgg19_features(params64, jnp.asarray(a[::-1].copy()), LAYERS)
    for layer in LAYERS:
        x, y = (np.asarray(f[layer]).reshape(-1, f[layer].shape[-1]) for f in (fa, fb))
        grams = [m.T @ m / len(m) for m in (x, y)]
        expected = np.mean((grams[0] - grams[1]) ** 2)
        assert abs(float(styles["gram"][layer]) - expected) <= 1e-12 * expected
        moments = [np.stack([m.mean(0), np.sqrt(m.var(0) + 1e-5)]) for m in (x, y)]
        expected = np.mean((moments[0] - moments[1]) ** 2)
        assert abs(float(styles["mean_std"][layer]) - expected) <= 1e-12 * expected
        assert float(styles["w2"][layer]) > 0
        for name in ("gram", "mean_std"):
            assert float(same[name][layer]) == 0
        # W2 of a Gaussian with itself: 0 up to the square root's rounding.
        assert abs(float(same["w2"][layer])) <= 1e-9 * float(styles["w2"][layer])
        diff = np.mean((np.asarray(fa[layer]) - np.asarray(flipped[layer])) ** 2)
        assert abs(float(content[layer]) - diff) <= 1e-12 * diff


def test_ssim_and_psnr():
    # PSNR's reference: 10 log10(1 / MSE) for images in [0, 1]; float32, so 1e-4 dB.
    rng = np.random.default_rng(1)
    image = rng.random((32, 32, 3)).astype(np.float32)
    noisy = np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1).astype(np.float32)
    mse = np.mean((image.astype(np.float64) - noisy) ** 2)
    assert abs(float(metrics.psnr(image, noisy)) - 10 * np.log10(1 / mse)) <= 1e-4
    assert float(metrics.ssim(image, image)) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.ssim(image, noisy)) < 0.99
