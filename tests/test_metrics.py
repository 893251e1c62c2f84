"""nst_jax.metrics: feature distances against NumPy in float64, SSIM and PSNR (dm-pix)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import metrics
from nst_jax.core import geometry, targets

from conftest import assert_refused

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


def rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)


# The minimum sides: block5 (the tutorial's content layer, the last style layer) comes after
# 4 of VGG19's 2x2 pools, block3_conv1 (CFSD's relu3_1) after 2 (geometry.smallest_side,
# which the stylize command's targets.min_side uses too).
@pytest.mark.parametrize(
    ("call", "message", "layers"),
    [
        (lambda p: metrics.content_distance(p, rgb(12, 96), rgb(12, 96)), "a is 96x12",
         "block5_conv2"),
        (lambda p: metrics.style_distances(p, rgb(32, 32), rgb(8, 40)), "b is 40x8",
         "block5_conv1"),
        (lambda p: metrics.cfsd(p, rgb(2, 8), rgb(2, 8)), "content is 8x2", "block3_conv1"),
    ],
)  # fmt: skip
def test_vgg_metrics_refuse_images_too_small_for_their_layers(params, call, message, layers):
    need = 2 ** geometry.pools_before((layers,), geometry.LAYERS)
    assert need == targets.min_side(
        nst_jax.ObjectiveConfig(content_layers=(layers,), style_layers=(layers,))
    )
    with pytest.raises(metrics.ImageTooSmallError, match=f"^{message} px.* >= {need} px") as e:
        call(params)  # was nan: the mean of an empty map
    assert isinstance(e.value, ValueError) and e.value.need == need


def test_score_names_the_file_too_small_for_the_layers(tmp_path, weights_h5, capsys):
    """A 96x12 pair at --max-dim 64 is 8x64 px: one line naming the result, exit 2 (was a
    CSV row of nan and exit 0)."""
    rng = np.random.default_rng(0)
    for kind, (height, width) in (("c", (96, 12)), ("s", (64, 64)), ("r", (96, 12))):
        (tmp_path / kind).mkdir()
        pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / kind / "00.png")
    argv = ["score", *(tmp_path / k for k in "csr"), "--weights", weights_h5, "--max-dim", "64",
            "-o", tmp_path / "s.csv", "-q"]  # fmt: skip
    assert_refused(tmp_path, argv, tmp_path / "r" / "00.png", "8x64 px", ">= 16 px", capsys=capsys)


FRAME, FLOW, WEIGHTS = rgb(8, 8), np.zeros((8, 8, 2), np.float32), np.ones((8, 8), np.float32)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ((FRAME, FRAME, FLOW, WEIGHTS[:4]), "weights"),  # was JAX's "incompatible shapes"
        ((FRAME, FRAME, FLOW[..., :1], WEIGHTS), "backward_flow"),
        ((FRAME, FRAME[:4], FLOW, WEIGHTS), "previous"),
    ],
)
def test_warping_error_checks_the_shapes_against_the_frame(arguments, name):
    with pytest.raises(ValueError, match=f"^{name}: expected shape"):
        metrics.warping_error(*arguments)


@pytest.mark.parametrize(
    ("frames", "backward", "forward", "name"),
    [
        ([FRAME, FRAME, FRAME], [FLOW], [FLOW, FLOW], "backward"),  # was an IndexError
        ([FRAME, FRAME], [FLOW], [FLOW, FLOW], "forward"),
        ([], [], [], "frames"),  # was nan
        ([FRAME], [], [], "frames"),  # was nan
        ([FRAME, FRAME[:4]], [FLOW], [FLOW], r"frames\[1\]"),
    ],
)
def test_clip_warping_error_checks_the_counts(frames, backward, forward, name):
    with pytest.raises(ValueError, match=f"^{name}: "):
        metrics.clip_warping_error(frames, backward, forward)


def test_warping_errors_refuse_non_finite_values():
    holed = FLOW.copy()
    holed[3, 4, 0] = np.nan  # was a nan error, silently
    with pytest.raises(ValueError, match="^backward_flow: has non-finite"):
        metrics.warping_error(FRAME, FRAME, holed, WEIGHTS)
    with pytest.raises(ValueError, match="^weights: has non-finite"):
        metrics.warping_error(FRAME, FRAME, FLOW, np.full_like(WEIGHTS, np.inf))
    with pytest.raises(ValueError, match="^frame: has non-finite"):
        metrics.warping_error(np.full_like(FRAME, np.inf), FRAME, FLOW, WEIGHTS)
    with pytest.raises(ValueError, match=r"^forward\[0\]: has non-finite"):
        metrics.clip_warping_error([FRAME, FRAME], [FLOW], [holed])
    # Under jit the values are not concrete: the shapes are still checked.
    assert float(jax.jit(metrics.warping_error)(FRAME, FRAME, FLOW, WEIGHTS)) == 0.0


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda p: metrics.content_distance(p, "x", "y"), "a"),  # were JAX's dtype errors
        (lambda p: metrics.ssim(FRAME, "b"), "b"),
        (lambda p: metrics.art_fid("a", 0.5), "fid_value"),  # was NumPy's ufunc error
        (lambda p: metrics.art_fid(0.5, [0.1, 0.2]), "lpips_mean"),
        (lambda p: metrics.warping_error(FRAME, FRAME, FLOW, "w"), "weights"),
        (lambda p: metrics.clip_warping_error(FRAME, None, None), "backward"),
        (lambda p: metrics.fid([["a"]], np.zeros((2, 2))), "features_a"),
    ],
)
def test_metrics_refuse_what_is_not_numbers_naming_the_argument(params, call, name):
    with pytest.raises(TypeError, match=f"^{name}"):
        call(params)


def test_style_distances_refuse_empty_terms(params):
    for terms in ((), []):  # was {}
        with pytest.raises(ValueError, match="^terms"):
            metrics.style_distances(params, FRAME, FRAME, ("block1_conv1",), terms=terms)
