"""Tiled against untiled loss and gradient at the sizes of scripts/README.md's table.

    python scripts/check_tiling.py            # about 15 minutes on 2 CPU cores

For each image size, tile and content layer: the relative difference of the loss and of the
gradient (max abs difference over max abs) in float64 and float32; then 20 Adam steps tiled
and untiled in float64 (max abs pixel difference). Random VGG19 weights (seed 0) and
synthetic images: exactness does not depend on the values.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nst_jax  # noqa: E402
from nst_jax.files import keras_h5
from nst_jax.run import tiling  # noqa: E402
from nst_jax.session import process  # noqa: E402

SIZES = ((517, 771), (512, 512))
TILES = (128, 256)
CONTENT_LAYERS = ("block5_conv2", "block4_conv2")
STEPS = 20
STEP_SIZE = (256, 384)


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour waves plus noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    waves = 0.5 + 0.4 * np.sin(6 * x[..., None] + 4 * y[..., None] + rng.random(3) * 6.28)
    return np.clip(waves + rng.uniform(-0.05, 0.05, waves.shape), 0, 1)


def compare(params, dtype, shape, tile, content_layer) -> tuple[float, float]:
    config = nst_jax.StyleConfig(content_layers=(content_layer,))
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
    content, x = (jnp.asarray(photo(*shape, seed), dtype) for seed in (1, 2))
    style = jnp.asarray(photo(200, 300, 3), dtype)
    targets = nst_jax.make_targets(params, content, style, config)
    (loss, _), grad = jax.value_and_grad(nst_jax.loss_fn, 1, has_aux=True)(
        params, x, targets, config
    )
    (tiled_loss, _), tiled_grad = tiling.tiled_value_and_grad(params, x, targets, config, tile)
    loss_rel = abs(float(tiled_loss - loss)) / abs(float(loss))
    grad_rel = float(jnp.max(jnp.abs(tiled_grad - grad)) / jnp.max(jnp.abs(grad)))
    return loss_rel, grad_rel


def adam_steps(params) -> float:
    config = nst_jax.StyleConfig()
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    content = jnp.asarray(photo(*STEP_SIZE, 1), jnp.float64)
    style = jnp.asarray(photo(200, 300, 3), jnp.float64)
    targets = nst_jax.make_targets(params, content, style, config)
    tx = nst_jax.make_optimizer(config)
    step, tiled = nst_jax.make_step(config, tx), tiling.tiled_step(config, tx, 128)
    x, state = content, tx.init(content)
    y, tiled_state = jnp.array(content), tx.init(content)
    for _ in range(STEPS):
        x, state, _, _ = step(params, targets, x, state)
        y, tiled_state, _, _ = tiled(params, targets, y, tiled_state)
    return float(jnp.max(jnp.abs(x - y)))


def main() -> None:
    process.configure_for_program()
    jax.config.update("jax_enable_x64", True)
    params = keras_h5.random_params(0)
    print("| size | tile | content layer | float64 loss | float64 gradient | float32 loss "
          "| float32 gradient |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for shape in SIZES:
        for tile in TILES:
            for layer in CONTENT_LAYERS:
                f64 = compare(params, jnp.float64, shape, tile, layer)
                f32 = compare(params, jnp.float32, shape, tile, layer)
                print(f"| {shape[1]} x {shape[0]} | {tile} | {layer} | {f64[0]:.1e} | "
                      f"{f64[1]:.1e} | {f32[0]:.1e} | {f32[1]:.1e} |", flush=True)  # fmt: skip
    size = f"{STEP_SIZE[1]} x {STEP_SIZE[0]}"
    print(f"\n{STEPS} Adam steps, {size}, tile 128, float64: max abs pixel difference "
          f"{adam_steps(params):.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
