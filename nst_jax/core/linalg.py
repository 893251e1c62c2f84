"""Symmetric eigendecompositions that run one matrix at a time under ``jax.vmap``.

Batched, ``jnp.linalg.eigh`` lowers to one LAPACK custom call over the whole batch, which
XLA:CPU (jax 0.10) may spread over its intra-op thread pool. In a program with other work
competing for that pool, the call can stop making progress, the CPU idle: on 2-core
machines the vmapped style distances (Gram, mean/std and W2 in one program) hung in every
trial of ``scripts/check_eigh_hang.py``. Under ``vmap`` these functions therefore loop over
the batch (:func:`jax.custom_batching.sequential_vmap`), each LAPACK call a single matrix;
the matrices are small (one per style layer, at most 512 x 512), and the loop's cost was
within noise there (``scripts/README.md``). Unbatched they are ``jnp.linalg``'s own.

They are not reverse-differentiable (``sequential_vmap`` is not): the losses differentiate
eigenvalues through their own JVP rules (:func:`nst_jax.core.losses.w2_distance`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_batching.sequential_vmap
def eigh(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(eigenvalues ascending, eigenvectors as columns)`` of a symmetric matrix."""
    values, vectors = jnp.linalg.eigh(matrix)
    return values, vectors


@jax.custom_batching.sequential_vmap
def eigvalsh(matrix: jax.Array) -> jax.Array:
    """The eigenvalues of a symmetric matrix, ascending."""
    return jnp.linalg.eigvalsh(matrix)


def psd_sqrt(matrix: jax.Array) -> jax.Array:
    """The square root of a symmetric positive semi-definite matrix (eigenvalues below 0,
    rounding's, are taken as 0)."""
    values, vectors = eigh(matrix)
    return (vectors * jnp.sqrt(jnp.maximum(values, 0.0))) @ vectors.T
