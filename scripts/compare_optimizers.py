"""Adam vs L-BFGS for the same number of loss-and-gradient evaluations, from each start.

    python scripts/compare_optimizers.py                 # the test images, 100 evaluations
    python scripts/compare_optimizers.py --evaluations 300 --pooling avg

The images are the test suite's 64 x 96 content and texture, the weights random (seed 0) in
the official layout's shapes; settings are the tutorial's except those given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import nst_jax  # noqa: E402
from nst_jax.files import keras_h5

from conftest import eight_bit_image, texture_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument("--inits", nargs="+", default=["noise", "content"])
    parser.add_argument("--pooling", default="max")
    args = parser.parse_args()
    params = keras_h5.random_params(0)
    content, style = eight_bit_image(64, 96, seed=1), texture_image(64, 96)
    print("| init | optimizer | evaluations | loss at start | loss at end | seconds |")
    print("|---|---|---|---|---|---|")
    for init in args.inits:
        for opt in ("adam", "lbfgs"):
            # L-BFGS evaluates its start once, then once per line-search trial.
            steps = args.evaluations - (opt == "lbfgs")
            config = nst_jax.StyleConfig(
                steps=steps, steps_per_call=steps, optimizer=opt, init=init, pooling=args.pooling
            )
            start = time.perf_counter()
            r = nst_jax.stylize(content, style, params=params, config=config)
            seconds = time.perf_counter() - start
            print(
                f"| {init} | {opt} | {int(r.evaluations)} | {r.losses[0]:.4g} | "
                f"{r.losses[-1]:.4g} | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
