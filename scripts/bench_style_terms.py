"""The cost of each style term in one optimisation step, side by side in one run.

    python scripts/bench_style_terms.py                    # 64 and 256 px, batch 4
    python scripts/bench_style_terms.py --sizes 64 --repeats 9

Each term runs the same jitted, vmapped step (``nst_jax.make_step_fn`` under ``jax.vmap``,
batch 4, the tutorial's layers and Adam) on random images with random weights in the
official layout (same shapes, so the same speed). Rounds alternate the terms' order, and
each figure is the median over the rounds of a timed call of ``--steps`` steps, after a call
that compiles. The ratio is to ``gram`` in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax

TERMS = ("gram", "mean_std", "w2", "sw", "efdm", "moments")


def weights() -> dict:
    """Random weights in the official layout, read by the real loader."""
    from nst_jax.files import keras_h5

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.h5"
        keras_h5.write_keras_h5(keras_h5.random_params(0), path)
        return nst_jax.load_vgg19(path)


def make_run(params, term: str, size: int, batch: int, steps: int):
    """A compiled call of ``steps`` steps for ``batch`` images, and its arguments."""
    config = nst_jax.StyleConfig(style_loss=term)
    rng = np.random.default_rng(0)
    contents = jnp.asarray(rng.random((batch, size, size, 3), np.float32))
    style = jnp.asarray(rng.random((size, size, 3), np.float32))
    one = lambda c, i: nst_jax.make_targets(  # noqa: E731
        params, c, style, config, key=jax.random.fold_in(jax.random.key(0), i)
    )
    targets = jax.vmap(one)(contents, jnp.arange(batch))
    tx = nst_jax.make_optimizer(config)
    step = jax.vmap(nst_jax.make_step_fn(config, tx), in_axes=(None, 0, 0, 0, None))

    @jax.jit
    def run(params, targets, x, state):
        def body(t, carry):
            x, state, _ = carry
            x, state, loss, _ = step(params, targets, x, state, t)
            return x, state, loss

        return jax.lax.fori_loop(0, steps, body, (x, state, jnp.zeros(batch)))

    states = jax.vmap(tx.init)(contents)
    return run, (params, targets, contents, states)


def timed(run, args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(run(*args))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    params = weights()
    print(f"jax {jax.__version__}, {jax.default_backend()}, batch {args.batch}, "
          f"{args.steps} steps a call, median of {args.repeats} rounds")  # fmt: skip
    print("| px | term | ms per step | x gram |\n|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        runs = {term: make_run(params, term, size, args.batch, args.steps) for term in TERMS}
        for run, call_args in runs.values():
            timed(run, call_args)  # compile
        seconds = {term: [] for term in TERMS}
        for round_index in range(args.repeats):
            order = TERMS if round_index % 2 == 0 else TERMS[::-1]
            for term in order:
                seconds[term].append(timed(*runs[term]) / args.steps)
        gram = seconds["gram"]
        ratios = {t: statistics.median(a / g for a, g in zip(seconds[t], gram, strict=True))
                  for t in TERMS}  # fmt: skip
        for term in TERMS:
            ms = 1e3 * statistics.median(seconds[term])
            print(f"| {size} | {term} | {ms:.1f} | {ratios[term]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
