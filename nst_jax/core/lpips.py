"""LPIPS, the learned perceptual image patch similarity (Zhang, Isola, Efros, Shechtman &
Wang, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018),
version 0.1 on AlexNet, as their ``lpips`` package computes it.

For two images in [0, 1]: each is mapped to [-1, 1] and scaled per channel
(``(x - SHIFT) / SCALE``); AlexNet's five ReLU outputs are taken (torchvision's AlexNet
``features``); at each, the features are divided by their norm over the channels (plus
1e-10), the squared difference is weighted per channel by the learned ``lin`` weights,
summed over the channels and averaged over the positions; LPIPS is the sum over the five.

Params (converted from the two published files by :mod:`nst_jax.files.score_weights`):
``{"conv1".."conv5": {"kernel": (kh, kw, in, out), "bias": (out,)}, "lin": {"lin1"..
"lin5": (c,)}}``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# torchvision's AlexNet features: (stride, padding) of each conv; max pools after 1 and 2.
CONVS = {"conv1": (4, 2), "conv2": (1, 2), "conv3": (1, 1), "conv4": (1, 1), "conv5": (1, 1)}
CHANNELS = {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256}
KERNELS = {"conv1": 11, "conv2": 5, "conv3": 3, "conv4": 3, "conv5": 3}
MIN_SIDE = 31  # smaller images leave no position after AlexNet's second pool
EPS = 1e-10


def param_shapes() -> dict[str, Any]:
    """The shape of every parameter, for checking a converted file."""
    shapes: dict[str, Any] = {"lin": {}}
    previous = 3
    for index, (name, channels) in enumerate(CHANNELS.items(), 1):
        k = KERNELS[name]
        shapes[name] = {"kernel": (k, k, previous, channels), "bias": (channels,)}
        shapes["lin"][f"lin{index}"] = (channels,)
        previous = channels
    return shapes


def _max_pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (3, 3, 1), (2, 2, 1), "VALID")


def alexnet_features(params: dict, image: jax.Array) -> list[jax.Array]:
    """The five ReLU outputs ``(h, w, c)`` of torchvision's AlexNet for one ``(H, W, 3)``
    input (already scaled)."""
    x, out = image, []
    for name, (stride, pad) in CONVS.items():
        if name in ("conv2", "conv3"):
            x = _max_pool(x)
        kernel = params[name]["kernel"].astype(x.dtype)
        x = jax.lax.conv_general_dilated(
            x[None], kernel, (stride, stride), ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )[0]  # fmt: skip
        x = jax.nn.relu(x + params[name]["bias"].astype(x.dtype))
        out.append(x)
    return out


def lpips_distance(params: dict, a: jax.Array, b: jax.Array) -> jax.Array:
    """LPIPS of two ``(H, W, 3)`` images in [0, 1] of one size (module docstring)."""
    shift, scale = (jnp.asarray(v, a.dtype) for v in (SHIFT, SCALE))
    fa, fb = (alexnet_features(params, (2 * x - 1 - shift) / scale) for x in (a, b))
    total = jnp.zeros((), a.dtype)
    for index, (x, y) in enumerate(zip(fa, fb, strict=True), 1):
        x, y = (f / (jnp.sqrt(jnp.sum(f**2, -1, keepdims=True)) + EPS) for f in (x, y))
        weighted = jnp.sum((x - y) ** 2 * params["lin"][f"lin{index}"].astype(a.dtype), -1)
        total = total + jnp.mean(weighted)
    return total
