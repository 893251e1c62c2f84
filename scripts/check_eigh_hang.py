"""Does ``jax.jit(jax.vmap(...))`` of the style distances finish? Batched LAPACK
eigendecompositions (``jnp.linalg``) against ``nst_jax.core.linalg``'s, one matrix at a time.

    python scripts/check_eigh_hang.py --trials 6            # both, 6 processes each
    python scripts/check_eigh_hang.py --trials 6 --only library
    python scripts/check_eigh_hang.py --trials 6 --statistics w2    # the W2 distance alone

Each trial is a fresh process that loads random VGG19 weights of the official shapes and
calls the compiled distances (``nst_jax.metrics.style_distances``: Gram, mean/std and W2,
each summed over the layers) of 16 random 64 px textures to a style 4 times; a trial that
has not finished within ``--timeout`` seconds counts as hung (its CPU is then idle).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

TRIAL = """
import sys
import jax, jax.numpy as jnp
import nst_jax
from nst_jax import metrics
from nst_jax.core import linalg
from nst_jax.video.synthetic import texture
if sys.argv[2] == "batched":  # jnp.linalg's own batching rule: one LAPACK call per batch
    linalg.eigh = lambda m: tuple(jnp.linalg.eigh(m))
    linalg.eigvalsh = jnp.linalg.eigvalsh
vgg = nst_jax.load_vgg19(sys.argv[1])
style = jnp.asarray(texture(64, 64, 30_000, 1.0))
layers = nst_jax.StyleConfig().style_layers
def summed(x):  # as scripts/compare_methods.py scores: each statistic summed over layers
    found = metrics.style_distances(vgg, x, style, layers)
    return {k: sum(v.values()) for k, v in found.items() if sys.argv[3] in ("all", k)}
distances = jax.jit(jax.vmap(summed))
for call in range(4):
    x = jnp.stack([texture(64, 64, 100 * call + i, 2.0) for i in range(16)])
    jax.block_until_ready(distances(x))
"""


def trials(weights: str, kind: str, which: str, count: int, timeout: float) -> list:
    """Seconds each trial took, ``None`` for a hung one."""
    out = []
    for _ in range(count):
        began = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-c", TRIAL, weights, kind, which], check=True,
                           timeout=timeout, capture_output=True)  # fmt: skip
            out.append(time.perf_counter() - began)
        except subprocess.TimeoutExpired:
            out.append(None)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--only", choices=("batched", "library"))
    p.add_argument("--statistics", choices=("all", "w2"), default="all",
                   help="the distances in the program: all three, or W2 alone")  # fmt: skip
    args = p.parse_args()
    from nst_jax.files import keras_h5

    with tempfile.TemporaryDirectory() as tmp:
        weights = f"{tmp}/vgg19.h5"
        keras_h5.write_keras_h5(keras_h5.random_params(0), weights, naming="official")
        for kind in [args.only] if args.only else ["batched", "library"]:
            times = trials(weights, kind, args.statistics, args.trials, args.timeout)
            done = sorted(t for t in times if t is not None)
            median = f"{done[len(done) // 2]:.1f} s" if done else "-"
            print(f"{kind}: {times.count(None)} of {len(times)} hung "
                  f"(over {args.timeout:.0f} s); finished ones' median {median}")  # fmt: skip


if __name__ == "__main__":
    main()
