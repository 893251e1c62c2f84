"""Write a run checkpoint with another commit's code (``PYTHONPATH`` its ``nst_jax``), for
the test that today's code resumes it:
``python tests/old_checkpoint.py FOLDER CONTENT.npy STYLE.npy``.

The run: float64, the test weights (seed 0), the two images (the test's
``eight_bit_image(32, 32, seed=1)`` and ``texture_image(32, 32)``),
``StyleConfig(steps=6, steps_per_call=3, conv="direct")``, saved after the first chunk
(step 3) by ``nst_jax.cli.checkpoint.save(folder, state, meta)`` with meta
``{"config": dataclasses.asdict(config)}``: what commit 59cd4d2 wrote.
"""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax.cli import checkpoint
from nst_jax.files import keras_h5

WEIGHTS_SEED = 0


def main(folder: str, content_path: str, style_path: str) -> None:
    jax.config.update("jax_enable_x64", True)
    config = nst_jax.StyleConfig(steps=6, steps_per_call=3, conv="direct")
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64),
                          keras_h5.random_params(WEIGHTS_SEED))  # fmt: skip
    content, style = (np.load(p).astype(np.float64) for p in (content_path, style_path))
    states = []
    nst_jax.stylize(content, style, params=params, config=config, on_chunk=states.append)
    Path(folder).mkdir(parents=True, exist_ok=True)
    checkpoint.save(folder, states[0], {"config": dataclasses.asdict(config)})


if __name__ == "__main__":
    main(*sys.argv[1:4])
