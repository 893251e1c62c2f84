"""How far a batched run drifts from the same images run alone, float32 vs float64.

Two correct programs that round differently (a batch of 4 convolves with other blockings than
a batch of 1) diverge under the tutorial's Adam, which turns rounding noise in near-zero
gradients into full-size steps. This prints the max abs pixel difference after k steps:

    python scripts/float32_drift.py [--steps 1 2 5 10 20]

Random official-shape weights, 64 x 96 8-bit test images, the tutorial's settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import nst_jax  # noqa: E402
from nst_jax.files import keras_h5

from conftest import eight_bit_image, texture_image  # noqa: E402


def drift(dtype, steps: int) -> float:
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), keras_h5.random_params(0))
    contents = jnp.asarray(np.stack([eight_bit_image(64, 96, seed=i) for i in range(4)]), dtype)
    style = jnp.asarray(texture_image(64, 96), dtype)
    config = nst_jax.StyleConfig(steps=steps, steps_per_call=10)
    batch = nst_jax.stylize(contents, style, params=params, config=config).image
    alone = [nst_jax.stylize(c, style, params=params, config=config).image for c in contents]
    return float(np.max(np.abs(np.asarray(batch) - np.stack(alone))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    parser.add_argument("--float64", action="store_true", help="also run in float64 (slow)")
    args = parser.parse_args()
    print("| steps | float32 max abs pixel diff |" + (" float64 |" if args.float64 else ""))
    for steps in args.steps:
        row = f"| {steps} | {drift(jnp.float32, steps):.2e} |"
        if args.float64:
            with jax.enable_x64(True):
                row += f" {drift(jnp.float64, steps):.2e} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
