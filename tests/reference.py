"""Independent NumPy references for the tests: no JAX, no Flax, float64 throughout.

Written from the definitions (Simonyan & Zisserman's VGG19, Keras' caffe preprocessing, the
tutorial's losses), not from nst_jax's code, so agreement is evidence rather than repetition.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BGR_MEAN = np.array([103.939, 116.779, 123.68])
BLOCK_SIZES = (2, 2, 4, 4, 4)


def preprocess(image: np.ndarray) -> np.ndarray:
    """Keras caffe mode: scale to 0..255, RGB -> BGR, subtract the BGR mean."""
    return image.astype(np.float64)[..., ::-1] * 255.0 - BGR_MEAN


def conv3x3_same_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Direct 3x3 convolution (cross-correlation, as every DL framework), zero padding 1, ReLU."""
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    windows = sliding_window_view(padded, (3, 3), axis=(0, 1))  # (h, w, cin, 3, 3)
    out = np.einsum("hwcij,ijco->hwo", windows, kernel.astype(np.float64)) + bias
    return np.maximum(out, 0.0)


def max_pool2x2(x: np.ndarray) -> np.ndarray:
    """2x2 max pool, stride 2, VALID: odd trailing rows/columns are dropped."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return x.reshape(h // 2, 2, w // 2, 2, -1).max(axis=(1, 3))


def vgg19_all(params: dict, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every conv (after ReLU) and pool output of VGG19 for one (H, W, 3) RGB image in [0, 1]."""
    x = preprocess(image)
    out = {}
    for b, n in enumerate(BLOCK_SIZES, start=1):
        for c in range(1, n + 1):
            name = f"block{b}_conv{c}"
            x = conv3x3_same_relu(x, params[name]["kernel"], params[name]["bias"])
            out[name] = x
        x = max_pool2x2(x)
        out[f"block{b}_pool"] = x
    return out


def gram(f: np.ndarray) -> np.ndarray:
    h, w, c = f.shape
    flat = f.reshape(h * w, c).astype(np.float64)
    return flat.T @ flat / (h * w)


def total_variation(image: np.ndarray) -> float:
    """tf.image.total_variation: sum of absolute neighbour differences over both axes."""
    x = image.astype(np.float64)
    return float(np.abs(np.diff(x, axis=0)).sum() + np.abs(np.diff(x, axis=1)).sum())


def tutorial_loss(params, image, content, style, content_layers, style_layers, cw, sw, tvw):
    """The tutorial's total loss of ``image`` for the given targets, in float64."""
    fi, fc, fs = (vgg19_all(params, x) for x in (image, content, style))
    content_term = (
        cw
        / len(content_layers)
        * sum(np.mean((fi[name] - fc[name]) ** 2) for name in content_layers)
    )
    style_term = (
        sw
        / len(style_layers)
        * sum(np.mean((gram(fi[name]) - gram(fs[name])) ** 2) for name in style_layers)
    )
    return content_term + style_term + tvw * total_variation(image), style_term


def moments(f: np.ndarray) -> np.ndarray:
    """Each channel's mean and standard deviation over positions, sqrt(var + 1e-5) as
    AdaIN (Huang & Belongie 2017) takes it."""
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    return np.stack([flat.mean(0), np.sqrt(flat.var(0) + 1e-5)])


def psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def w2_squared(f: np.ndarray, s: np.ndarray) -> float:
    """Squared Wasserstein-2 distance between the Gaussians of two maps' positions, by the
    textbook formula |mu_a - mu_b|^2 + tr(A + B - 2 (A^1/2 B A^1/2)^1/2)."""
    a, b = (x.reshape(-1, x.shape[-1]).astype(np.float64) for x in (f, s))
    cov_a, cov_b = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    root_a = psd_sqrt(cov_a)
    cross = np.trace(psd_sqrt(root_a @ cov_b @ root_a))
    mean = np.sum((a.mean(0) - b.mean(0)) ** 2)
    return float(mean + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def mrf_distance(f: np.ndarray, s: np.ndarray) -> float:
    """Mean squared difference of each 3x3 patch of f from the style patch of highest
    normalised cross-correlation (Li & Wand 2016)."""
    patches = [
        sliding_window_view(x.astype(np.float64), (3, 3), axis=(0, 1)).reshape(
            (x.shape[0] - 2) * (x.shape[1] - 2), -1
        )
        for x in (f, s)
    ]
    mine, theirs = patches
    unit = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    nearest = np.argmax(mine @ unit.T, axis=1)
    return float(np.mean((mine - theirs[nearest]) ** 2))
