"""Throughput of the feed-forward models beside optimisation, and training steps per second.

    python scripts/bench_feedforward.py apply      # images/s: Johnson, AdaIN; 256-1024 px
    python scripts/bench_feedforward.py optimise   # images/s at 300 Adam steps an image
    python scripts/bench_feedforward.py train      # training steps/s (256 px crops)

Random VGG19 weights of the official shapes (seed 0) and freshly initialised networks: speed
does not depend on the values. Each figure is the median of ``--repeats`` timed calls after
one call that compiles. Optimisation's images/s is ``batch / (300 * seconds per step)``,
from the median step.
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
from nst_jax.core.step import make_step_fn
from nst_jax.feedforward import train
from nst_jax.feedforward.model import Model, apply_model
from nst_jax.files import keras_h5

OPTIMISATION_STEPS = 300


def median_seconds(call, repeats: int) -> float:
    jax.block_until_ready(call())  # compiles
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def bench_apply(args, vgg) -> None:
    models = {m: train.TrainSettings(m, size=16).resolved() for m in train.METHODS}
    models = {m: Model(s, {}, train.init_params(s)) for m, s in models.items()}
    rng = np.random.default_rng(0)
    style = jnp.asarray(rng.random((256, 256, 3)), jnp.float32)
    for size in args.sizes:
        for batch in args.batches:
            contents = jnp.asarray(rng.random((batch, size, size, 3)), jnp.float32)
            for method, model in models.items():
                call = lambda m=model, c=contents: apply_model(m, c, vgg, [style])  # noqa: E731
                seconds = median_seconds(call, args.repeats)
                print(f"apply {method}, {size} px, batch {batch}: {batch / seconds:.3f} images/s "
                      f"({seconds:.3f} s a batch)", flush=True)  # fmt: skip


def bench_optimise(args, vgg) -> None:
    config = nst_jax.StyleConfig()
    tx = nst_jax.make_optimizer(config)
    step = jax.jit(jax.vmap(make_step_fn(config, tx), in_axes=(None, 0, 0, 0)))
    rng = np.random.default_rng(0)
    style = jnp.asarray(rng.random((256, 256, 3)), jnp.float32)
    for size in args.sizes:
        for batch in args.batches:
            if size * size * batch > args.max_pixels:
                print(f"optimise, {size} px, batch {batch}: skipped (over --max-pixels)")
                continue
            x = jnp.asarray(rng.random((batch, size, size, 3)), jnp.float32)
            each = [nst_jax.make_targets(vgg, c, style, config) for c in x]
            targets = jax.tree.map(lambda *leaves: jnp.stack(leaves), *each)
            state = jax.vmap(tx.init)(x)
            call = lambda t=targets, x=x, s=state: step(vgg, t, x, s)[0]  # noqa: E731
            seconds = median_seconds(call, args.repeats)
            rate = batch / (OPTIMISATION_STEPS * seconds)
            print(f"optimise {OPTIMISATION_STEPS} steps, {size} px, batch {batch}: {rate:.5f} "
                  f"images/s ({seconds:.3f} s a step)", flush=True)  # fmt: skip


def bench_train(args, vgg) -> None:
    rng = np.random.default_rng(0)
    for method in train.METHODS:
        settings = train.TrainSettings(method, steps=args.repeats + 1, size=args.train_size)
        settings = settings.resolved()
        batch, size = settings.batch_size, settings.size
        images = rng.random((args.repeats + 1, batch, size, size, 3)).astype(np.float32)
        styles = None if method == "johnson" else images[:, ::-1]
        batches = [(images[i], None if styles is None else styles[i]) for i in range(len(images))]
        config = nst_jax.StyleConfig()
        targets = nst_jax.make_targets(vgg, images[0, 0], images[0, 1], config)
        times = []

        def on_step(event, times=times):  # the hook (nst_jax.events): after each step
            jax.block_until_ready(event.state["params"])
            times.append(time.perf_counter())

        start = train.init_state(settings)
        train.fit(settings, start, vgg, iter(batches), targets if method == "johnson" else None,
                  config, on_step)  # fmt: skip
        seconds = statistics.median(np.diff(times))
        print(f"train {method}, batch {batch} at {size} px: {1 / seconds:.3f} steps/s "
              f"({seconds:.3f} s a step, {batch / seconds:.2f} images/s)", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("apply", "optimise", "train"))
    p.add_argument("--sizes", type=lambda t: [int(v) for v in t.split(",")],
                   default=[256, 512, 1024])  # fmt: skip
    p.add_argument("--batches", type=lambda t: [int(v) for v in t.split(",")], default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-pixels", type=int, default=512 * 512 * 8,
                   help="optimise: skip batches larger than this many pixels")  # fmt: skip
    p.add_argument("--train-size", type=int, default=256)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vgg19.h5"
        keras_h5.write_keras_h5(keras_h5.random_params(0), path, naming="official")
        vgg = nst_jax.load_vgg19(path)
    print(f"{jax.devices()[0].device_kind}, {jax.default_backend()}", flush=True)
    {"apply": bench_apply, "optimise": bench_optimise, "train": bench_train}[args.what](args, vgg)


if __name__ == "__main__":
    main()
