"""What a run will do, worked out before it starts: its work in pixel-steps, and the params
prepared for the convolution method that work calls for."""

from __future__ import annotations

from nst_jax.config import StyleConfig
from nst_jax.core import conv
from nst_jax.core.objective import Params, used_layers
from nst_jax.run import multiscale


def pixel_steps(config: StyleConfig, n: int, height: int, width: int) -> int:
    """Images x pixels x steps of a run, over all its scales: what ``conv="auto"`` weighs
    against Winograd's longer compile (:func:`nst_jax.core.conv.resolve_conv`)."""
    shapes = multiscale.scale_shapes(height, width, config)
    steps = multiscale.scale_steps(height, width, config)
    return n * sum(s * h * w for s, (h, w) in zip(steps, shapes, strict=True))


def step_params(
    params: Params, config: StyleConfig, n: int, height: int, width: int, every_layer: bool = False
) -> Params:
    """``params`` prepared for the step's convolutions (Winograd on CPU for long runs), for
    the layers ``config`` uses, or with ``every_layer`` for all of them (a custom loss may
    read any layer)."""
    work = pixel_steps(config, n, height, width)
    layers = None if every_layer else used_layers(config)
    return conv.prepare_params(
        params, config.conv, pixel_steps=work, layers=layers, extractor=config.extractor
    )
