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
