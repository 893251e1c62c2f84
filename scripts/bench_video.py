"""Video measured: flow accuracy, temporal consistency, compiles, and seconds per frame.

    python scripts/bench_video.py flow          # DIS/Farneback on known motion, ms a pair
    python scripts/bench_video.py consistency   # 24 frames, 96 px: warping error on and off
    python scripts/bench_video.py speed         # 256 px: flow, steps and writing per frame

Random VGG19 weights of the official shapes (seed 0): the figures measure the machinery,
not the look of a style.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import nst_jax
from nst_jax.files import keras_h5
from nst_jax.session import process
from nst_jax.video import flow, frames, job, loop, synthetic
from nst_jax.video.settings import VideoSettings

SHIFT = (3.0, -2.0)
CLIPS = {
    "translated (3, -2) px": lambda n, size: synthetic.translated_clip(n, size, SHIFT),
    "rotated 2 deg": lambda n, size: synthetic.rotated_clip(n, size, 2.0),
}


def weights(folder: Path):
    path = folder / "vgg19.h5"
    keras_h5.write_keras_h5(keras_h5.random_params(0), path, naming="official")
    return path


def bench_flow(args) -> None:
    border = (slice(10, -10), slice(10, -10))
    for size in (96, 256):
        truths = {
            "translated (3, -2) px": np.broadcast_to(SHIFT, (size, size, 2)),
            "rotated 2 deg": synthetic.rotation_flow(size, 2.0),
        }
        for name, make in CLIPS.items():
            a, b = (flow.grey(f / 255.0) for f in make(2, size))
            for method in flow.METHODS:
                times = []
                for _ in range(args.repeats):
                    began = time.perf_counter()
                    estimate = flow.optical_flow(a, b, method)
                    times.append(time.perf_counter() - began)
                error = np.hypot(*(estimate - truths[name])[border].transpose(2, 0, 1))
                print(
                    f"{size} px, {name}, {method}: median error {np.median(error):.3f} px, "
                    f"{1000 * statistics.median(times):.1f} ms a pair"
                )


def run_clip(params, clip, style, config, settings):
    feeder = flow.FlowFeeder(iter(clip / np.float32(255)), 0, 0, settings.offsets, "dis")
    frames = loop.stylize_frames(params, feeder, style, config, settings, count=len(clip))
    results = list(frames)
    error = float(np.mean([r.warping_error for r in results[1:]]))
    mean = {k: float(np.mean([r.terms[k] for r in results])) for k in results[0].terms}
    return error, mean


def bench_consistency(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        params = nst_jax.load_vgg19(weights(Path(tmp)))
    config = nst_jax.StyleConfig(steps=args.steps)
    style = synthetic.texture(args.size, args.size, seed=5)[..., ::-1].copy()
    step = nst_jax.make_step(config, nst_jax.make_optimizer(config), loss=loop.video_loss)
    default = VideoSettings().temporal_weight
    for name, make in CLIPS.items():
        clip = make(args.frames, args.size)
        runs = {}
        for label, settings in (
            ("--temporal-weight 0", VideoSettings(temporal_weight=0.0)),
            (f"default ({default:.4g})", VideoSettings()),
            ("default, offsets 1,2,4", VideoSettings(offsets=(1, 2, 4))),
        ):
            before = step._cache_size()
            runs[label] = run_clip(params, clip, style, config, settings)
            compiled = step._cache_size() - before
            error, terms = runs[label]
            print(
                f"{name}, {label}: warping error {error:.4g}, content {terms['content']:.4g}, "
                f"style {terms['style']:.4g}, temporal {terms['temporal']:.4g}; "
                f"step compiled {compiled}x"
            )
        off = runs["--temporal-weight 0"][0]
        on = runs[f"default ({default:.4g})"][0]
        print(f"{name}: warping error ratio (default / off) {on / off:.4f}")


def bench_speed(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = nst_jax.load_vgg19(weights(root))
        source = root / "clip"
        source.mkdir()
        for index, frame in enumerate(synthetic.rotated_clip(args.frames, args.size, 2.0)):
            Image.fromarray(frame).save(source / f"{index:04d}.png")
        clip = frames.probe(source)
        style = synthetic.texture(args.size, args.size, seed=5)
        config = nst_jax.StyleConfig(steps=args.steps)
        for run in range(args.repeats):
            out = root / f"out{run}"
            began = time.perf_counter()
            settings = VideoSettings(offsets=tuple(args.offsets))
            summary = job.run_job(params, clip, style, config, settings, out, {"run": run})
            whole = (time.perf_counter() - began) / clip.count
            s = summary.seconds
            overlap = 1 - s["waited"] / s["flow"] if s["flow"] > 0 else float("nan")
            print(
                f"run {run}: {whole:.3f} s a frame ({args.steps} steps, {args.size} px, "
                f"offsets {args.offsets}): flow {s['flow']:.3f} s (on the workers, waited "
                f"{s['waited']:.3f} s: {100 * overlap:.0f}% overlapped), steps "
                f"{s['steps']:.3f} s, writing {s['write']:.3f} s"
            )


def main() -> None:
    process.configure_for_program()  # the XLA flags the nst-jax command runs with
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("flow", "consistency", "speed"))
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--offsets", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    defaults = {"consistency": (24, 96), "speed": (8, 256), "flow": (2, 96)}[args.what]
    args.frames = args.frames or defaults[0]
    args.size = args.size or defaults[1]
    {"flow": bench_flow, "consistency": bench_consistency, "speed": bench_speed}[args.what](args)


if __name__ == "__main__":
    main()
