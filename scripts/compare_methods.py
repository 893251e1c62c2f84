"""Optimisation, Johnson and AdaIN on the same held-out contents: objective, metrics, time.

    python scripts/compare_methods.py                     # 64 px, 200 training steps
    python scripts/compare_methods.py --preset gatys      # Gatys et al.'s objective
    python scripts/compare_methods.py --style texture     # a style like the contents
    python scripts/compare_methods.py --weights PATH      # real VGG19 weights
    python scripts/compare_methods.py --widths 32 16      # the slim Johnson model beside

Without ``--weights``, VGG19 weights of the official shapes are drawn at random (seed 0):
the figures then measure the machinery (does training lower the objective, what does each
method cost), not the look of a style. The training images are smooth random textures
(``nst_jax.video.synthetic.texture``), written as PNGs and read by the training loader; the
held-out contents are textures of the same kind, cropped by the same loader, so they come
from the training crops' distribution. The style (``--style palette``, the default) is a
texture drawn in two colours, dark blue to orange, unlike the contents' full-colour noise;
``--style texture`` is a finer texture of the contents' own kind, which the content image
already nearly matches.

``--widths`` trains a Johnson network of each first-layer width on the same budget (steps,
batch, data), for the slim preset (``--width 16``: a quarter of the multiply-adds) beside the
paper's 32; ``--no-adain`` leaves AdaIN out.

``--preset`` picks the objective's terms (layers, weights, pooling) for training and
scoring; optimisation is always Adam from the content (the tutorial's optimiser), so its
rows show how far a step of the reference method gets on that objective.

For each method it reports, as means over the held-out contents:
- the project's objective (``nst_jax.loss_fn`` with each content's own targets), beside the
  content image's own objective (the starting point of optimisation);
- AdaIN's training loss on held-out (content, style) pairs, beside the content image's and
  the untrained decoder's;
- content distance (block5_conv2), style distances (Gram and mean/std, summed over the
  style layers), SSIM and PSNR against the content, and seconds per image.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import nst_jax
from nst_jax import metrics
from nst_jax.core.step import make_step_fn
from nst_jax.feedforward import adain, data, objective, train
from nst_jax.feedforward.model import Model, apply_model
from nst_jax.files import image, keras_h5
from nst_jax.video.synthetic import texture

CONFIG = nst_jax.StyleConfig()  # the objective; main() sets it from --preset


def write_textures(folder: Path, count: int, side: int, first_seed: int, blur: float) -> list:
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = texture(side, side, first_seed + i, blur)
        Image.fromarray(image.to_uint8(pixels)).save(folder / f"{i:04d}.png")
    return data.image_files(folder).files


def palette_style(side: int, seed: int) -> np.ndarray:
    """A smooth texture mapped onto a dark blue to orange ramp: a style whose colours and
    statistics differ from the contents', as a painting's differ from a photograph's."""
    ramp = texture(side, side, seed, 3.0)[..., :1]
    dark, light = np.array([0.08, 0.12, 0.45]), np.array([1.0, 0.62, 0.12])
    return (dark * (1 - ramp) + light * ramp).astype(np.float32)


def train_model(method, args, vgg, contents, styles, targets, width: int = 32):
    rate = args.learning_rate if method == "johnson" else None
    settings = train.TrainSettings(
        method,
        steps=args.train_steps,
        batch_size=args.batch,
        size=args.size,
        learning_rate=rate,
        width=width,
    ).resolved()
    batches = train.step_batches(settings, contents, styles, 0)
    times, losses = [], []

    def on_step(event):  # the hook (nst_jax.events): an event after each step
        losses.append(float(event.loss))
        times.append(time.perf_counter())

    began = time.perf_counter()
    state = train.fit(settings, train.init_state(settings), vgg, batches, targets, CONFIG, on_step)
    per_step = float(np.median(np.diff(times)))
    print(f"{method} (width {width}): {settings.steps} steps of batch {settings.batch_size} "
          f"at {settings.size} px in {time.perf_counter() - began:.1f} s (first step, compiling, "
          f"{times[0] - began:.1f} s); {1 / per_step:.2f} steps/s after it; training loss, "
          f"mean of the first 10 steps {np.mean(losses[:10]):.4g}, of the last 10 "
          f"{np.mean(losses[-10:]):.4g}")  # fmt: skip
    return Model(settings, {}, jax.device_get(state["params"])), settings


def stacked_targets(vgg, contents, style):
    """Each content's targets (``make_targets`` checks its inputs, so it runs unjitted)."""
    each = [nst_jax.make_targets(vgg, content, style, CONFIG) for content in contents]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *each)


@jax.jit
def _objectives(vgg, images, targets):
    return jax.vmap(lambda x, t: nst_jax.loss_fn(vgg, x, t, CONFIG)[0])(images, targets)


def objective_of(vgg, images, targets) -> float:
    """The mean objective of ``images``, each against its content's stacked targets
    (compiled once: every row's images have the held-out contents' shape)."""
    return float(jnp.mean(_objectives(vgg, images, targets)))


def optimise(vgg, contents, targets, stops):
    """Adam from the contents, vmapped; the images and seconds at each stop."""
    tx = nst_jax.make_optimizer(CONFIG)
    step = jax.jit(jax.vmap(make_step_fn(CONFIG, tx), in_axes=(None, 0, 0, 0)))
    x, state = contents, jax.vmap(tx.init)(contents)
    x, state, _, _ = step(vgg, targets, x, state)  # compiled (and one step) outside the clock
    x, state = contents, jax.vmap(tx.init)(contents)
    found, began = {}, time.perf_counter()
    for done in range(1, max(stops) + 1):
        x, state, _, _ = step(vgg, targets, x, state)
        if done in stops:
            jax.block_until_ready(x)
            found[done] = (x, time.perf_counter() - began)
    return found


def timed(apply, repeats: int = 3):
    apply()  # compiled outside the clock
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(apply())
        times.append(time.perf_counter() - began)
    return apply(), float(np.median(times))


def adain_loss_of(decoder_params, vgg, contents, styles, outputs=None) -> float:
    """AdaIN's loss of the pairs; with ``outputs``, of those images as the decoded ones."""
    if outputs is None:
        loss = jax.jit(objective.adain_batch_loss)(decoder_params, vgg, contents, styles)
        return float(loss[0])

    def one(output, content, style):
        layer = adain.ENCODER_LAYER
        target = adain.adain(adain.encode(vgg, content)[layer], adain.encode(vgg, style)[layer])
        ours, theirs = (adain.encode(vgg, x, adain.STYLE_LAYERS) for x in (output, style))
        style_term = sum(
            jnp.mean((a - b) ** 2)
            for n in adain.STYLE_LAYERS
            for a, b in zip(adain.mean_std(ours[n]), adain.mean_std(theirs[n]), strict=True)
        )
        return jnp.mean((ours[layer] - target) ** 2) + 10.0 * style_term

    return float(jnp.mean(jax.jit(jax.vmap(one))(outputs, contents, styles)))


@jax.jit
def _scores(vgg, images, contents, style):
    def one(x, content):
        distances = metrics.style_distances(vgg, x, style, CONFIG.style_layers)
        return {
            "content": sum(metrics.content_distance(vgg, x, content).values()),
            **{k: sum(distances[k].values()) for k in ("gram", "mean_std")},
            "ssim": metrics.ssim(x, content),
            "psnr": metrics.psnr(x, content),
        }

    return jax.vmap(one)(images, contents)


def scores(vgg, images, contents, style) -> dict:
    return {k: float(jnp.mean(v)) for k, v in _scores(vgg, images, contents, style).items()}


def report(rows: list) -> None:
    keys = ["objective", "content", "gram", "mean_std", "ssim", "psnr", "s/image"]
    print("| method | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{values[k]:.4g}" for k in keys) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="VGG19 weights (default: random, official shapes)")
    p.add_argument("--images", type=int, default=64, help="training images")
    p.add_argument("--held-out", type=int, default=16, help="held-out contents")
    p.add_argument("--size", type=int, default=64, help="crop and held-out side")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--learning-rate", type=float, help="Johnson's (default: the paper's 1e-3)")
    p.add_argument("--opt-steps", default="10,50,200,1000", help="optimisation's stops")
    p.add_argument("--preset", choices=sorted(nst_jax.PRESETS), default="tutorial",
                   help="the objective's terms (default: the tutorial's)")  # fmt: skip
    p.add_argument("--style", choices=("palette", "texture"), default="palette",
                   help="the Johnson model's and the comparison's style (see above)")  # fmt: skip
    p.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[32],
        help="Johnson networks' first-layer widths (the slim preset: 16)",
    )
    p.add_argument("--no-adain", action="store_true", help="leave AdaIN out")
    args = p.parse_args()
    global CONFIG
    adam = nst_jax.StyleConfig()
    CONFIG = nst_jax.PRESETS[args.preset].replace(
        optimizer=adam.optimizer, init=adam.init, learning_rate=adam.learning_rate
    )
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


def run(args, tmp: Path) -> None:
    path = args.weights
    if path is None:
        path = tmp / "vgg19.h5"
        keras_h5.write_keras_h5(keras_h5.random_params(0), path, naming="official")
    vgg = nst_jax.load_vgg19(path)
    side = args.size * 3 // 2  # crops vary: the loader scales the shorter side to --size
    contents = write_textures(tmp / "data", args.images, side, 0, 2.0)
    styles = write_textures(tmp / "styles", 16, side, 10_000, 1.0)
    held_files = write_textures(tmp / "held", args.held_out, side, 20_000, 2.0)
    held = jnp.stack([data.load_crop(f, args.size, seed=1, stream=9, step=0, slot=i)
                      for i, f in enumerate(held_files)])  # fmt: skip
    style = jnp.asarray(
        palette_style(args.size, 30_000)
        if args.style == "palette"
        else texture(args.size, args.size, 30_000, 1.0)
    )
    held_styles = jnp.stack([texture(args.size, args.size, 40_000 + i, 1.0)
                             for i in range(args.held_out)])  # fmt: skip
    targets = nst_jax.make_targets(vgg, held[0], style, CONFIG)
    johnsons = {w: train_model("johnson", args, vgg, contents, None, targets, w)[0]
                for w in args.widths}  # fmt: skip
    adain_model, adain_settings = (
        (None, None) if args.no_adain
        else train_model("adain", args, vgg, contents, styles, None)
    )  # fmt: skip
    compare(args, vgg, held, style, held_styles, johnsons, adain_model, adain_settings)


def compare(args, vgg, held, style, held_styles, johnsons, adain_model, adain_settings):
    count = len(held)
    targets = stacked_targets(vgg, held, style)
    rows = [("content image", {**scores(vgg, held, held, style), "s/image": 0.0,
                               "objective": objective_of(vgg, held, targets)})]  # fmt: skip
    stops = [int(s) for s in args.opt_steps.split(",")]
    for steps, (x, seconds) in optimise(vgg, held, targets, stops).items():
        row = {**scores(vgg, x, held, style), "objective": objective_of(vgg, x, targets)}
        rows.append((f"optimisation, {steps} steps", {**row, "s/image": seconds / count}))
    for width, johnson_model in johnsons.items():
        untrained = Model(johnson_model.settings, {}, train.init_params(johnson_model.settings))
        for name, model in (("untrained", untrained), ("trained", johnson_model)):
            out, seconds = timed(lambda m=model: apply_model(m, held))
            row = {**scores(vgg, out, held, style), "objective": objective_of(vgg, out, targets)}
            rows.append((f"Johnson width {width}, {name}", {**row, "s/image": seconds / count}))
    if adain_model is None:
        return report(rows)
    out, seconds = timed(lambda: apply_model(adain_model, held, vgg, [style]))
    row = {**scores(vgg, out, held, style), "objective": objective_of(vgg, out, targets)}
    rows.append(("AdaIN (alpha 1)", {**row, "s/image": seconds / count}))
    report(rows)
    untrained = train.init_params(adain_settings)
    print(
        f"AdaIN loss on {count} held-out (content, style) pairs: content image "
        f"{adain_loss_of(None, vgg, held, held_styles, held):.6g}, untrained decoder "
        f"{adain_loss_of(untrained, vgg, held, held_styles):.6g}, trained decoder "
        f"{adain_loss_of(adain_model.params, vgg, held, held_styles):.6g}"
    )


if __name__ == "__main__":
    main()
