"""Winograd F(2x2, 3x3) convolution: VGG's 3x3 SAME convolutions in fewer multiplications.

A direct 3x3 convolution spends 36 multiplications per 2x2 block of outputs and input channel;
Winograd's minimal filtering algorithm (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016) spends 16. The image is cut into overlapping 4x4 tiles (stride 2) and
each tile is transformed, ``V = Bt d B``; the kernel is transformed once, ``U = G g Gt``; the
product becomes 16 independent matrix products ``M[k, l] = V[k, l] @ U[k, l]`` over channels;
and each 2x2 output block is ``At M A``. The transforms only add and subtract, so nearly all the
time is in the 16 products, which XLA:CPU runs as ordinary matrix multiplications.

Why here: on a CPU nst_jax's step is the convolutions and their input gradients, and those
already ran at 80-90% of the machine's matrix-multiply peak, so only fewer multiplications
could make it faster (scripts/README.md, "Winograd F(2x2, 3x3)"). On XLA:CPU the whole step
runs faster with every layer but the first by Winograd
(:data:`nst_jax.core.conv.WINOGRAD_MIN_CHANNELS`). GPU libraries choose Winograd-style
algorithms themselves, so nst_jax uses this on CPU only (see
:func:`nst_jax.core.conv.resolve_conv`).

Precision: the transforms' constants are 0, 1 and 1/2, exact in floating point; in float32 the
result differs from a direct convolution by about 1e-7 relative (tests bound it).

All functions take one ``(H, W, C)`` image; batch them with ``jax.vmap``.
"""

from __future__ import annotations

import jax
import numpy as np

# The kernel transform maps tile rows (k) and columns (l) of U through this permutation when
# the kernel is rotated by 180 degrees: G @ reversed(g) == P @ G @ g, with P swapping 0 and 3.
_ROTATED = (3, 1, 2, 0)

# The tile code below is written with lax primitives rather than jax.numpy: a VGG step traces
# about 3000 of them, and tracing (which no compilation cache saves) is most of a warm start.


def _input_rows(d0, d1, d2, d3):
    """``Bt @ d`` along one axis for the four rows (or columns) of a 4x4 tile."""
    sub, add = jax.lax.sub, jax.lax.add
    return sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)


def _output_rows(m0, m1, m2, m3):
    """``At @ m`` along one axis: four transformed rows (or columns) -> two outputs."""
    sub, add = jax.lax.sub, jax.lax.add
    return add(add(m0, m1), m2), sub(sub(m1, m2), m3)


def _kernel_rows(g0, g1, g2):
    """``G @ g`` along one axis: three kernel rows (or columns) -> four."""
    return g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2


WinogradKernel = tuple[tuple[jax.Array, ...], ...]


def transform_kernel(kernel: jax.Array) -> WinogradKernel:
    """``(3, 3, C, O)`` HWIO kernel -> Winograd kernel ``U = G g Gt``: 4 x 4 ``(C, O)`` arrays.

    Done once per run, not per step: the weights do not change while an image is optimised.
    Sixteen separate arrays rather than one ``(4, 4, C, O)``: XLA copies a slice of an array
    before multiplying by it, so a stacked kernel costs a copy of every layer's kernel in
    each step's temporaries.
    """
    rows = _kernel_rows(kernel[0], kernel[1], kernel[2])  # each (3, C, O)
    return tuple(_kernel_rows(r[0], r[1], r[2]) for r in rows)


def rotate_kernel(u: WinogradKernel) -> WinogradKernel:
    """The Winograd kernel of the input gradient, ``R[i, j] = U[P i, P j].T``: 4 x 4 ``(O, C)``
    arrays, for :func:`conv3x3`'s ``r`` (see there).

    Made once per run with the kernel's transform (:func:`nst_jax.core.conv.prepare_params`);
    NumPy arrays stay NumPy, so the transposes are real copies rather than views.

    Raises:
      ValueError: ``u`` is not laid out as :func:`transform_kernel`'s result.
    """
    if not _is_winograd_kernel(u):
        raise ValueError("u: expected transform_kernel's result, 4 x 4 (in, out) matrices")

    def rotated(a):
        return np.ascontiguousarray(a.T) if isinstance(a, np.ndarray) else a.T

    return tuple(tuple(rotated(u[_ROTATED[i]][_ROTATED[j]]) for j in range(4)) for i in range(4))


def _tiles(x: jax.Array, border: int = 1) -> tuple[list[list[jax.Array]], int, int]:
    """The 16 transformed tile planes ``V[k][l]``, each ``(th, tw, C)``, of a 3x3
    convolution's input, and the tile counts ``th, tw`` (the output padded up to even).

    ``border`` is the zero padding each side: 1 for SAME, 0 for VALID (an input already
    padded, by reflection say, whose output is 2 smaller).
    """
    h, w, c = x.shape
    h, w = h + 2 * border - 2, w + 2 * border - 2  # the output's size
    th, tw = -(-h // 2), -(-w // 2)
    # The border, plus one more row/column where the output's side is odd.
    pads = ((border, 2 * th - h + border, 0), (border, 2 * tw - w + border, 0), (0, 0, 0))
    xp = jax.lax.pad(x, np.zeros((), x.dtype), pads)

    def element(i: int, j: int) -> jax.Array:  # element (i, j) of every tile: a strided view
        return jax.lax.slice(xp, (i, j, 0), (2 * th - 1 + i, 2 * tw - 1 + j, c), (2, 2, 1))

    d = [[element(i, j) for j in range(4)] for i in range(4)]
    by_row = [_input_rows(*[d[i][j] for i in range(4)]) for j in range(4)]  # [j][k]
    return [list(_input_rows(*[by_row[j][k] for j in range(4)])) for k in range(4)], th, tw


def _untile(m: list[list[jax.Array]], h: int, w: int) -> jax.Array:
    """``At M A`` of every tile, put back in place: ``M[k][l]`` ``(th, tw, O)`` -> ``(h, w, O)``."""
    th, tw, o = m[0][0].shape
    by_row = [_output_rows(*m[k]) for k in range(4)]  # [k][j], j the output column
    out = [_output_rows(*[by_row[k][j] for k in range(4)]) for j in range(2)]  # [j][i]
    # (th, 2, tw, 2, O): output row 2t + i, column 2u + j.
    column = lambda a: jax.lax.reshape(a, (th, 1, tw, 1, o))  # noqa: E731
    rows = [jax.lax.concatenate([column(out[j][i]) for j in range(2)], 3) for i in range(2)]
    y = jax.lax.reshape(jax.lax.concatenate(rows, 1), (2 * th, 2 * tw, o))
    return y if (2 * th, 2 * tw) == (h, w) else jax.lax.slice(y, (0, 0, 0), (h, w, o))


def _products(v: list[list[jax.Array]], u: WinogradKernel, rotated: bool) -> list[list[jax.Array]]:
    """The 16 channel products ``V[i][j] @ U[i, j]``, each ``(th, tw, C)`` by ``(C, O)``.

    With ``rotated``, the products of the input gradient: ``V[i][j] @ U[P i, P j].T``, the
    transformed kernel of the kernel rotated by 180 degrees with its channels swapped.
    Sixteen unrolled products, not one batched ``einsum``: XLA:CPU runs 16 matrix
    multiplications faster than the batched one. The tile axes are not flattened first: XLA
    does that itself, for free, and the reshapes would add to the traced operations.
    """

    def product(i: int, j: int) -> jax.Array:
        if rotated:  # contract the kernel's output channels
            kernel, contract = u[_ROTATED[i]][_ROTATED[j]], (((2,), (1,)), ((), ()))
        else:
            kernel, contract = u[i][j], (((2,), (0,)), ((), ()))
        return jax.lax.dot_general(v[i][j], kernel, contract)

    return [[product(i, j) for j in range(4)] for i in range(4)]


def _conv(x: jax.Array, u: WinogradKernel, rotated: bool = False, border: int = 1) -> jax.Array:
    v, _, _ = _tiles(x, border)
    shrink = 2 - 2 * border
    return _untile(_products(v, u, rotated), x.shape[0] - shrink, x.shape[1] - shrink)


@jax.custom_vjp
def conv3x3(x: jax.Array, u: WinogradKernel, r: WinogradKernel | None = None) -> jax.Array:
    """SAME, stride-1 3x3 convolution of one image (no bias), by Winograd F(2x2, 3x3).

    Equal, up to rounding, to ``lax.conv_general_dilated`` with the kernel ``g`` whose
    transform is ``u``.

    Args:
      x: ``(H, W, C)`` input.
      u: the transformed kernel from :func:`transform_kernel`, 4 x 4 ``(C, O)`` arrays.
      r: optionally ``rotate_kernel(u)``, made once per run: the input gradient's products
        then take their kernels as laid out in memory. Without it they contract ``u``'s
        second axis, which XLA:CPU multiplies more slowly where the maps are small and the
        channels many (scripts/README.md, "The input gradient's kernels"). ``r`` is a
        constant: no gradient flows to it.

    Returns:
      ``(H, W, O)``.

    Raises:
      ValueError: ``r`` is not shaped as ``rotate_kernel(u)``.
    """
    _check_rotated(u, r)
    return _conv(x, u)


def _check_rotated(u: WinogradKernel, r: WinogradKernel | None) -> None:
    if r is None:
        return
    expected, leaves = tuple(reversed(np.shape(u[0][0]))), jax.tree.leaves(r)
    if not _is_winograd_kernel(r) or any(np.shape(a) != expected for a in leaves):
        got = f"{len(leaves)} arrays of shape {np.shape(leaves[0])}" if leaves else repr(r)
        raise ValueError(
            f"r: expected rotate_kernel(u), 4 x 4 arrays of shape {expected}; got {got}"
        )


def _is_winograd_kernel(u) -> bool:
    """Whether ``u`` is laid out as :func:`transform_kernel`'s result: 4 x 4 matrices."""
    rows = u if isinstance(u, (tuple, list)) and len(u) == 4 else ()
    return len(rows) == 4 and all(
        isinstance(row, (tuple, list))
        and len(row) == 4
        and all(np.ndim(a) == 2 and not isinstance(a, (str, bytes)) for a in row)
        for row in rows
    )


def _conv3x3_fwd(x, u, r):
    # With symbolic zeros each leaf comes as (value, perturbed): the kernel gradient, and the
    # input it needs kept, are only made when the kernel is differentiated. When only the
    # image is optimised they would be dropped by XLA anyway, but tracing them cost a quarter
    # of the step's trace time, which no compilation cache saves.
    wants_kernel = any(leaf.perturbed for leaf in jax.tree.leaves(u, is_leaf=_is_primal))
    x, u, r = x.value, *jax.tree.map(lambda leaf: leaf.value, (u, r), is_leaf=_is_primal)
    _check_rotated(u, r)
    return _conv(x, u), (x if wants_kernel else None, u, r)


def _is_primal(leaf) -> bool:
    return isinstance(leaf, jax.custom_derivatives.CustomVJPPrimal)


def _conv3x3_bwd(residuals, g):
    x, u, r = residuals
    if isinstance(g, jax.custom_derivatives.SymbolicZero):  # the output was not used
        return None, None, None
    # The input gradient of a SAME 3x3 convolution is the SAME 3x3 convolution of the output
    # gradient with the kernel rotated 180 degrees and its channels swapped: Winograd again,
    # instead of the transposes of the forward's slices and pads that autodiff would write.
    dx = _conv(g, u, rotated=True) if r is None else _conv(g, r)
    return dx, None if x is None else _kernel_gradient(x, g, border=1), None


def _kernel_gradient(x: jax.Array, g: jax.Array, border: int) -> WinogradKernel:
    """``dU[i, j] = V[i][j].T @ dM[i][j]``, with ``dM`` the transpose of the output
    transform applied to the output gradient ``g``."""
    v, th, tw = _tiles(x, border)
    m_shape = jax.ShapeDtypeStruct((th, tw, g.shape[-1]), g.dtype)
    untile = lambda m: _untile(m, g.shape[0], g.shape[1])  # noqa: E731
    (dm,) = jax.linear_transpose(untile, [[m_shape] * 4 for _ in range(4)])(g)
    flat = lambda a: a.reshape(th * tw, -1)  # noqa: E731
    return tuple(tuple(flat(v[i][j]).T @ flat(dm[i][j]) for j in range(4)) for i in range(4))


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd, symbolic_zeros=True)


@jax.custom_vjp
def conv3x3_valid(x: jax.Array, u: WinogradKernel) -> jax.Array:
    """VALID, stride-1 3x3 convolution of one image already padded (by reflection, say):
    ``(H + 2, W + 2, C)`` -> ``(H, W, O)``, by Winograd F(2x2, 3x3).

    Both gradients are Winograd again: the input's is the SAME convolution of the output
    gradient, zero-padded by one pixel, with the rotated kernel; the kernel's is taken
    tile by tile (the feed-forward networks train their kernels through it).
    """
    return _conv(x, u, border=0)


def _conv3x3_valid_fwd(x, u):
    return _conv(x, u, border=0), (x, u)


def _conv3x3_valid_bwd(residuals, g):
    x, u = residuals
    padded = jax.lax.pad(g, np.zeros((), g.dtype), ((1, 1, 0), (1, 1, 0), (0, 0, 0)))
    return _conv(padded, u, rotated=True), _kernel_gradient(x, g, border=0)


conv3x3_valid.defvjp(_conv3x3_valid_fwd, _conv3x3_valid_bwd)
