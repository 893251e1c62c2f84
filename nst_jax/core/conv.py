"""The choice of how convolutions are computed: VGG's, and every network's.

A convolution is computed directly (``lax.conv_general_dilated``) or by Winograd's
F(2x2, 3x3) algorithm (:mod:`nst_jax.core.winograd`), which XLA:CPU runs faster for every
layer but the first; GPU convolution libraries pick such algorithms themselves. The choice is
made once per run by :func:`prepare_params`, which puts each chosen layer's transformed
kernel in the params: the network's layer (:class:`nst_jax.core.conv3x3.Conv3x3`) reads the
method from the params it is given.

The feed-forward networks' convolutions go through :func:`conv2d`, which computes a VALID
convolution of a padded image by the chosen method; their params stay ``{kernel, bias}``
(trained kernels change every step, and their transforms are a small part of a step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np

from nst_jax.core import blockconv, extractors, winograd

Params = Mapping[str, Mapping[str, jax.Array]]

CONV_METHODS: tuple[str, ...] = ("auto", "direct", "winograd")

# The fewest input channels for which a layer uses Winograd: every layer but the first, whose
# 3 input channels make its products too thin to gain (whole-step timings per threshold:
# scripts/README.md, "Winograd F(2x2, 3x3)").
WINOGRAD_MIN_CHANNELS = 64

# "auto" uses Winograd only for runs long enough to repay its longer compile (a program
# several times larger) with its faster steps: images x pixels x steps, the break-even
# measured in scripts/README.md ("Winograd F(2x2, 3x3)").
WINOGRAD_MIN_PIXEL_STEPS = 1_200_000

# The feed-forward networks' break-even: Winograd's program compiles about 4.5 s longer and
# saves about 7 us a pixel of Johnson's network on a 2-core CPU (scripts/README.md, "One
# convolution engine"), so "auto" uses it from this many pixels a run applies or trains on.
NETWORK_WINOGRAD_MIN_PIXELS = 650_000


def resolve_conv(
    conv: str, pixel_steps: int | None = None, threshold: int = WINOGRAD_MIN_PIXEL_STEPS
) -> str:
    """The convolution method to use: ``"direct"`` or ``"winograd"``.

    Args:
      conv: ``"direct"``, ``"winograd"``, or ``"auto"``: Winograd on CPU for runs of at least
        ``WINOGRAD_MIN_PIXEL_STEPS`` pixel-steps, direct otherwise (GPU convolution libraries
        pick Winograd-style algorithms themselves, and a short run is mostly compile time).
      pixel_steps: images x pixels x steps of the run, over its scales (``None``: long).
      threshold: the pixel-steps from which ``"auto"`` takes Winograd
        (:data:`NETWORK_WINOGRAD_MIN_PIXELS` for the feed-forward networks).
    """
    if conv not in CONV_METHODS:
        raise ValueError(f"unknown convolution method {conv!r}; known: {', '.join(CONV_METHODS)}")
    if conv == "auto":
        long_run = pixel_steps is None or pixel_steps >= threshold
        return "winograd" if jax.default_backend() == "cpu" and long_run else "direct"
    return conv


def prepare_params(
    params: Params,
    conv: str = "auto",
    min_channels: int = WINOGRAD_MIN_CHANNELS,
    pixel_steps: int | None = None,
    layers: Sequence[str] | None = None,
    extractor: str = "vgg19",
    input_gradient: bool = True,
) -> Params:
    """Params made ready for the convolution method ``conv``, once per run.

    With ``"winograd"``, every layer with at least ``min_channels`` input channels has its
    ``kernel`` replaced by its Winograd transform, ``{winograd: 4 x 4 (in, out) arrays,
    winograd_rotated: 4 x 4 (out, in) arrays, bias}`` (the second for the input gradient), and
    the network computes it by :func:`nst_jax.core.winograd.conv3x3`. With ``"direct"``
    the params are returned as they are. Either way the features are the same up to float
    rounding.

    Args:
      params: ``{layer: {"kernel", "bias"}}`` as returned by ``nst_jax.load_vgg19``.
      conv: ``"auto"``, ``"direct"`` or ``"winograd"`` (see :func:`resolve_conv`).
      min_channels: input channels from which a layer uses Winograd.
      pixel_steps: images x pixels x steps of the run, for ``"auto"``.
      layers: the layers the run uses; with Winograd, params of later layers are left out
        (the transformed kernels are 16/9 the size of the originals). ``None`` keeps every
        layer: a custom loss may read any.
      extractor: the network the params are of (``"vgg19"``, ``"vgg16"``); another
        extractor's params are returned as they are (its own modules read them).
      input_gradient: whether gradients will be taken through the network; ``False`` (a
        forward pass only, as a feed-forward model's encoder) leaves ``winograd_rotated``
        out, which only the input gradient reads.
    """
    if not isinstance(input_gradient, bool):
        raise ValueError(f"input_gradient: expected True or False, got {input_gradient!r}")
    if resolve_conv(conv, pixel_steps) == "direct" or not extractors.has_known_fields(extractor):
        return params
    if layers is not None:
        network = extractors.network(extractor)
        last = max(map(network.index, extractors.check_layers(extractor, layers)))
        params = {
            name: leaves
            for name, leaves in params.items()
            if name not in network or network.index(name) <= last
        }
    chosen = {
        name: leaves["kernel"]
        for name, leaves in params.items()
        if "kernel" in leaves and leaves["kernel"].shape[2] >= min_channels
    }
    transformed = _transform_kernels(chosen, input_gradient)
    return {
        name: {**transformed[name], "bias": leaves["bias"]} if name in transformed else leaves
        for name, leaves in params.items()
    }


def _transform_kernels(kernels: Mapping[str, jax.Array], rotated: bool) -> dict[str, dict]:
    """Each kernel's Winograd leaves: its transform ``winograd`` and, with ``rotated``, the
    input gradient's ``winograd_rotated`` (:func:`nst_jax.core.winograd.rotate_kernel`)."""

    def leaves(kernel) -> dict:
        u = winograd.transform_kernel(kernel)
        if not rotated:
            return {"winograd": u}
        return {"winograd": u, "winograd_rotated": winograd.rotate_kernel(u)}

    try:
        host = {name: np.asarray(kernel) for name, kernel in kernels.items()}
    except jax.errors.TracerArrayConversionError:  # under a transformation (eval_shape, say)
        return {name: leaves(kernel) for name, kernel in kernels.items()}
    # Concrete kernels are transformed by NumPy and placed where they came from: a few
    # milliseconds of additions, where a jitted transform would cost a compilation (or a
    # cache load) at every start.
    return {
        name: jax.device_put(leaves(kernel), _placement(kernels[name]))
        for name, kernel in host.items()
    }


def _placement(array) -> jax.sharding.Sharding | None:
    # Only a committed array's sharding is kept: committing the kernels would commit the
    # step's outputs, and the second step (committed images) would be compiled again.
    return array.sharding if isinstance(array, jax.Array) and array.committed else None


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, method: str = "direct") -> jax.Array:
    """VALID convolution of one padded ``(H, W, C)`` image by an HWIO ``kernel``.

    With ``"winograd"`` (a method :func:`resolve_conv` gave): 3x3 stride-1 kernels by
    Winograd F(2x2, 3x3) (:func:`nst_jax.core.winograd.conv3x3_valid`); larger odd stride-1
    kernels as 3x3 convolutions over ``(k - 1) / 2``-pixel blocks, by Winograd too
    (:mod:`nst_jax.core.blockconv`); strided ones directly, where XLA's own convolution was
    as fast as every rewrite measured (scripts/README.md, "One convolution engine"). With
    ``"direct"``, ``lax.conv_general_dilated`` (``nn.Conv``'s computation). The methods agree
    up to float rounding.

    Args:
      x: the input, padded as the layer wants (reflection, say).
      kernel: ``(k, k, C, O)``.
      stride: the convolution's stride.
      method: ``"direct"`` or ``"winograd"``.

    Returns:
      ``((H - k) / stride + 1, (W - k) / stride + 1, O)``.
    """
    if method not in ("direct", "winograd"):
        raise ValueError(f"method must be 'direct' or 'winograd', got {method!r}")
    k = kernel.shape[0]
    if method == "winograd" and stride == 1 and k % 2 == 1 and k >= 3:
        if k == 3:
            return _winograd_valid(x, kernel)
        return blockconv.conv_by_blocks(x, kernel, (k - 1) // 2, _winograd_valid)
    return jax.lax.conv_general_dilated(
        x[None], kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def _winograd_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return winograd.conv3x3_valid(x, winograd.transform_kernel(kernel))
