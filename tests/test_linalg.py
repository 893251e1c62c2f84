"""``nst_jax.core.linalg``: eigendecompositions that loop over a ``vmap``'s batch.

Batched LAPACK eigendecompositions hung XLA:CPU's thread pool intermittently on these 2-core
machines (``python scripts/check_eigh_hang.py``; figures in ``scripts/README.md``). A hang is
not a test one can wait for, so the tests check the mechanism instead: under ``vmap`` every
LAPACK call in the compiled program takes a single matrix, and the results are the unbatched
routine's, bit for bit.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import linalg, losses
from nst_jax.run import color


def spd_batch(count: int, n: int, seed: int) -> jnp.ndarray:
    """``count`` random symmetric positive semi-definite ``n x n`` float64 matrices."""
    a = np.random.default_rng(seed).normal(size=(count, n + 2, n))
    return jnp.asarray(np.einsum("bpi,bpj->bij", a, a) / (n + 2))


def lapack_operands(program_text: str) -> list[str]:
    """The operand types of the program's LAPACK eigendecomposition calls (``syevd``)."""
    calls = re.findall(r"custom_call @lapack_\w*syevd\w*\(.*?:\s*\((tensor<[^>]*>)", program_text)
    return calls


def test_vmapped_results_are_the_unbatched_routines_bit_for_bit():
    """Same LAPACK routine on the same matrix, so equality is exact (float64)."""
    with jax.enable_x64(True):
        batch = spd_batch(3, 5, 0)
        values, vectors = jax.jit(jax.vmap(linalg.eigh))(batch)
        roots = jax.jit(jax.vmap(linalg.psd_sqrt))(batch)
        for k in range(len(batch)):
            want_values, want_vectors = jnp.linalg.eigh(batch[k])
            np.testing.assert_array_equal(values[k], want_values)
            np.testing.assert_array_equal(vectors[k], want_vectors)
            np.testing.assert_array_equal(
                jax.vmap(linalg.eigvalsh)(batch)[k], jnp.linalg.eigvalsh(batch[k])
            )
        # psd_sqrt squares back to the matrix: float64 rounding of a 5 x 5 product, 1e-12.
        np.testing.assert_allclose(roots @ roots, batch, rtol=0, atol=1e-12)


def test_w2_and_colour_matching_call_lapack_one_matrix_at_a_time():
    """The W2 loss's gradient and the colour matching, vmapped over 4 images: each LAPACK
    call in the lowered program is ``(n, n)``, none ``(4, n, n)``. ``jnp.linalg`` itself
    would batch them (checked first, so the test can tell the two apart)."""
    rng = np.random.default_rng(1)
    features = jnp.asarray(rng.normal(size=(4, 3, 5, 8)), jnp.float32)
    target = losses.w2_target(features[0])
    batched = jax.jit(jax.vmap(jnp.linalg.eigvalsh)).lower(spd_batch(4, 8, 2).astype(jnp.float32))
    assert lapack_operands(batched.as_text()) == ["tensor<4x8x8xf32>"]

    def w2(f):
        return losses.w2_distance(losses.gaussian_stats(f), target)

    programs = {
        "w2 gradient": jax.jit(jax.vmap(jax.grad(w2))).lower(features),
        "w2 target": jax.jit(jax.vmap(losses.w2_target)).lower(features),
        "colour": jax.jit(jax.vmap(color.match_histogram, in_axes=(None, 0))).lower(
            jnp.full((6, 6, 3), 0.5) + 0.1 * jnp.eye(6)[..., None], features[..., :3]
        ),
    }
    for name, lowered in programs.items():
        operands = lapack_operands(lowered.as_text())
        assert operands, name
        assert all(re.fullmatch(r"tensor<\d+x\d+xf32>", t) for t in operands), (name, operands)
