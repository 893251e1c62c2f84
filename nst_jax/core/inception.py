"""Inception-v3's 2048 pooled features, as ArtFID computes FID with them (Wright & Ommer,
"ArtFID: Quantitative Evaluation of Neural Style Transfer", GCPR 2022).

ArtFID's network is torchvision's ``Inception3`` (Szegedy et al., "Rethinking the Inception
Architecture for Computer Vision", CVPR 2016) with two classifier heads, fine-tuned on art;
its features are the average of ``Mixed_7c`` over the positions, for an image in [0, 1] at
its own size (no resize, no normalisation: ``transform_input=False``). Every block here is
torchvision's, by its attribute names: a ``BasicConv2d`` is a convolution without bias,
batch normalisation (eps 0.001, running statistics) and ReLU; average pools count the zero
padding (``count_include_pad=True``), as ArtFID's copy does, unlike pytorch-fid's.

Params: ``{"Mixed_5b.branch1x1": {"kernel": (kh, kw, in, out), "gamma", "beta", "mean",
"var": (out,)}, ...}``, one entry per ``BasicConv2d`` by its torchvision path
(:mod:`nst_jax.files.score_weights` converts ArtFID's checkpoint).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BN_EPS = 1e-3
MIN_SIDE = 75  # torchvision's smallest input for Inception3
FEATURES = 2048

# Each stem conv: (name, in, out, kernel (kh, kw), stride, padding (ph, pw)).
STEM = (
    ("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)),
    ("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
    ("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)),
    ("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0)),
    ("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0)),
)
# The mixed blocks: (name, kind, in channels, its parameter: pool features or c7).
MIXED = (
    ("Mixed_5b", "A", 192, 32), ("Mixed_5c", "A", 256, 64), ("Mixed_5d", "A", 288, 64),
    ("Mixed_6a", "B", 288, 0), ("Mixed_6b", "C", 768, 128), ("Mixed_6c", "C", 768, 160),
    ("Mixed_6d", "C", 768, 160), ("Mixed_6e", "C", 768, 192), ("Mixed_7a", "D", 768, 0),
    ("Mixed_7b", "E", 1280, 0), ("Mixed_7c", "E", 2048, 0),
)  # fmt: skip
K1, K3, K5 = (1, 1), (3, 3), (5, 5)
K17, K71, K13, K31 = (1, 7), (7, 1), (1, 3), (3, 1)


def _branches(kind: str, cin: int, p: int) -> dict[str, tuple]:
    """Each ``BasicConv2d`` of a block: ``{branch: (in, out, kernel, stride, padding)}``."""
    pad = lambda k: (k[0] // 2, k[1] // 2)  # noqa: E731 - "same" padding of odd kernels
    same = lambda i, o, k: (i, o, k, 1, pad(k))  # noqa: E731
    if kind == "A":
        return {"branch1x1": same(cin, 64, K1), "branch5x5_1": same(cin, 48, K1),
                "branch5x5_2": same(48, 64, K5), "branch3x3dbl_1": same(cin, 64, K1),
                "branch3x3dbl_2": same(64, 96, K3), "branch3x3dbl_3": same(96, 96, K3),
                "branch_pool": same(cin, p, K1)}  # fmt: skip
    if kind == "B":
        return {"branch3x3": (cin, 384, K3, 2, (0, 0)), "branch3x3dbl_1": same(cin, 64, K1),
                "branch3x3dbl_2": same(64, 96, K3),
                "branch3x3dbl_3": (96, 96, K3, 2, (0, 0))}  # fmt: skip
    if kind == "C":
        return {"branch1x1": same(cin, 192, K1), "branch7x7_1": same(cin, p, K1),
                "branch7x7_2": same(p, p, K17), "branch7x7_3": same(p, 192, K71),
                "branch7x7dbl_1": same(cin, p, K1), "branch7x7dbl_2": same(p, p, K71),
                "branch7x7dbl_3": same(p, p, K17), "branch7x7dbl_4": same(p, p, K71),
                "branch7x7dbl_5": same(p, 192, K17), "branch_pool": same(cin, 192, K1)}  # fmt: skip
    if kind == "D":
        return {"branch3x3_1": same(cin, 192, K1), "branch3x3_2": (192, 320, K3, 2, (0, 0)),
                "branch7x7x3_1": same(cin, 192, K1), "branch7x7x3_2": same(192, 192, K17),
                "branch7x7x3_3": same(192, 192, K71),
                "branch7x7x3_4": (192, 192, K3, 2, (0, 0))}  # fmt: skip
    return {"branch1x1": same(cin, 320, K1), "branch3x3_1": same(cin, 384, K1),
            "branch3x3_2a": same(384, 384, K13), "branch3x3_2b": same(384, 384, K31),
            "branch3x3dbl_1": same(cin, 448, K1), "branch3x3dbl_2": same(448, 384, K3),
            "branch3x3dbl_3a": same(384, 384, K13), "branch3x3dbl_3b": same(384, 384, K31),
            "branch_pool": same(cin, 192, K1)}  # fmt: skip


def layout() -> dict[str, tuple]:
    """Every ``BasicConv2d`` by its torchvision path: ``(in, out, kernel, stride, padding)``."""
    convs = {name: (i, o, k, s, p) for name, i, o, k, s, p in STEM}
    for name, kind, cin, p in MIXED:
        convs |= {f"{name}.{b}": spec for b, spec in _branches(kind, cin, p).items()}
    return convs


LAYOUT = layout()


def param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """The shape of every parameter, for checking a converted file."""
    return {
        name: {"kernel": (*k, i, o), "gamma": (o,), "beta": (o,), "mean": (o,), "var": (o,)}
        for name, (i, o, k, _, _) in LAYOUT.items()
    }


def _conv(params: dict, name: str, x: jax.Array) -> jax.Array:
    _, _, _, stride, (ph, pw) = LAYOUT[name]
    p = {k: v.astype(x.dtype) for k, v in params[name].items()}
    y = jax.lax.conv_general_dilated(
        x[None], p["kernel"], (stride, stride), ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )[0]  # fmt: skip
    y = (y - p["mean"]) / jnp.sqrt(p["var"] + BN_EPS) * p["gamma"] + p["beta"]
    return jax.nn.relu(y)


def _max_pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (3, 3, 1), (2, 2, 1), "VALID")


def _avg_pool(x: jax.Array) -> jax.Array:
    # 3x3, stride 1, zero padding 1, divided by 9 everywhere (count_include_pad=True).
    padding = ((1, 1), (1, 1), (0, 0))
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, (3, 3, 1), (1, 1, 1), padding) / 9


def _mixed(params: dict, name: str, kind: str, x: jax.Array) -> jax.Array:
    c = lambda branch, y: _conv(params, f"{name}.{branch}", y)  # noqa: E731
    if kind == "A":
        dbl = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x)))
        outs = [c("branch1x1", x), c("branch5x5_2", c("branch5x5_1", x)), dbl,
                c("branch_pool", _avg_pool(x))]  # fmt: skip
    elif kind == "B":
        dbl = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x)))
        outs = [c("branch3x3", x), dbl, _max_pool(x)]
    elif kind == "C":
        b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x)))
        dbl = x
        for i in range(1, 6):
            dbl = c(f"branch7x7dbl_{i}", dbl)
        outs = [c("branch1x1", x), b7, dbl, c("branch_pool", _avg_pool(x))]
    elif kind == "D":
        b7 = c("branch7x7x3_4", c("branch7x7x3_3", c("branch7x7x3_2", c("branch7x7x3_1", x))))
        outs = [c("branch3x3_2", c("branch3x3_1", x)), b7, _max_pool(x)]
    else:
        b3, dbl = c("branch3x3_1", x), c("branch3x3dbl_2", c("branch3x3dbl_1", x))
        outs = [c("branch1x1", x), c("branch3x3_2a", b3), c("branch3x3_2b", b3),
                c("branch3x3dbl_3a", dbl), c("branch3x3dbl_3b", dbl),
                c("branch_pool", _avg_pool(x))]  # fmt: skip
    return jnp.concatenate(outs, axis=-1)


def inception_features(params: dict, image: jax.Array) -> jax.Array:
    """The ``(2048,)`` pooled ``Mixed_7c`` features of one ``(H, W, 3)`` image in [0, 1]
    (sides of at least :data:`MIN_SIDE`)."""
    x = image
    for index, (name, *_) in enumerate(STEM):
        x = _conv(params, name, x)
        if index in (2, 4):  # torchvision's maxpool1 and maxpool2
            x = _max_pool(x)
    for name, kind, _, _ in MIXED:
        x = _mixed(params, name, kind, x)
    return jnp.mean(x, axis=(0, 1))
