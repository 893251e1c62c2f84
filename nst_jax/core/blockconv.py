"""Large kernels as 3x3 convolutions over blocks of pixels (space-to-depth).

A k x k convolution with k > 3 (the 9x9 convolutions at both ends of Johnson et al.'s
network) has few channels on one side, 3 in or 3 out, which makes XLA:CPU's convolution
thin and slow. Cut the image into ``b x b`` blocks and stack each block's pixels as channels
(space-to-depth, as in Shi et al., "Real-Time Single Image and Video Super-Resolution Using
an Efficient Sub-Pixel Convolutional Neural Network", 2016): the same convolution becomes a
``t x t`` convolution over blocks with ``b^2 C`` input and ``b^2 O`` output channels, whose
kernel holds the original weights at the offsets each (input pixel, output pixel) pair
needs and zeros elsewhere. With k = 9 and b = 4, t = 3: a 3x3 convolution of well-shaped
matrices, which Winograd's algorithm (:mod:`nst_jax.core.winograd`) computes; the result is
put back with depth-to-space. The zeros cost multiplications (1.8x for 9x9), which the
well-shaped products and Winograd's 2.25x more than repay (scripts/README.md, "One
convolution engine").

Everything here is differentiable ``jax.numpy``: the blocked kernel is a gather of the
original one, so training differentiates the original weights. Per image ``(H, W, C)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def span(kernel: int, block: int) -> int:
    """``t``: the blocks a ``block``-pixel output block reads with a ``kernel`` x ``kernel``
    stride-1 convolution, per axis."""
    return (block - 1 + kernel - 1) // block + 1


def _offsets(kernel: int, block: int) -> np.ndarray:
    """``(t, b, b)`` kernel row for (block offset, input pixel, output pixel); ``kernel``
    (the zero row appended to the kernel) where the pair is out of the kernel's reach."""
    t = span(kernel, block)
    offset = np.arange(t)[:, None, None] * block + np.arange(block)[None, :, None]
    d = offset - np.arange(block)[None, None, :]
    return np.where((d >= 0) & (d < kernel), d, kernel)


def block_kernel(kernel: jax.Array, block: int) -> jax.Array:
    """The ``(t, t, b^2 C, b^2 O)`` kernel over blocks of a ``(k, k, C, O)`` HWIO kernel
    (stride 1), for :func:`space_to_depth` inputs and :func:`depth_to_space` outputs."""
    k, _, c, o = kernel.shape
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # row and column k: zeros
    d = _offsets(k, block)
    t = d.shape[0]
    # (t, b_in, b_out) rows by (t, b_in, b_out) columns -> (T, S, p, q, i, j, C, O).
    rows = d[:, None, :, None, :, None]
    cols = d[None, :, None, :, None, :]
    blocked = padded[rows, cols]
    blocked = jnp.transpose(blocked, (0, 1, 2, 3, 6, 4, 5, 7))  # (T, S, p, q, C, i, j, O)
    return blocked.reshape(t, t, block * block * c, block * block * o)


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
    """``(b H, b W, C)`` -> ``(H, W, b^2 C)``, each block's pixels row by row."""
    h, w, c = x.shape
    x = x.reshape(h // block, block, w // block, block, c)
    return jnp.transpose(x, (0, 2, 1, 3, 4)).reshape(h // block, w // block, block * block * c)


def depth_to_space(y: jax.Array, block: int) -> jax.Array:
    """The inverse of :func:`space_to_depth`: ``(H, W, b^2 O)`` -> ``(b H, b W, O)``."""
    h, w, c = y.shape
    o = c // (block * block)
    y = y.reshape(h, w, block, block, o)
    return jnp.transpose(y, (0, 2, 1, 3, 4)).reshape(h * block, w * block, o)


def conv_by_blocks(x: jax.Array, kernel: jax.Array, block: int, conv3x3) -> jax.Array:
    """VALID stride-1 convolution of ``(H + k - 1, W + k - 1, C)`` by a ``(k, k, C, O)``
    kernel, computed over ``block`` x ``block`` blocks.

    Args:
      x: the input, already padded.
      kernel: HWIO kernel, with ``span(k, block) == 3``.
      block: the block's side.
      conv3x3: ``conv3x3(blocks, blocked_kernel)``, a VALID 3x3 convolution over blocks.

    Returns:
      ``(H, W, O)``.
    """
    k = kernel.shape[0]
    if span(k, block) != 3:
        raise ValueError(f"a {k}x{k} kernel over {block}-pixel blocks is not a 3x3 convolution")
    h, w = x.shape[0] - k + 1, x.shape[1] - k + 1
    rows, cols = -(-h // block) + 2, -(-w // block) + 2  # input blocks: outputs' + t - 1
    # Zeros past the input's end only reach the outputs cropped below.
    x = jnp.pad(x, ((0, rows * block - x.shape[0]), (0, cols * block - x.shape[1]), (0, 0)))
    y = depth_to_space(conv3x3(space_to_depth(x, block), block_kernel(kernel, block)), block)
    return y[:h, :w]
