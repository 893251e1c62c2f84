"""Benchmark the CLI's code path: compile time, ms per step, peak RSS, per image size.

Each size runs in its own process, so peak RSS is that size's alone. The weights are a random
file in the official layout (same shapes as the real ones, so the same speed); the images are
the shipped samples resized to N x N.

    python scripts/bench.py                       # 128, 256, 512 px, batch 1
    python scripts/bench.py --sizes 256 --repeats 5 --steps-per-call 10
    python scripts/bench.py --race 256            # coarse-to-fine vs single-scale Adam

Compile time is the wall time JAX reports spending on tracing, lowering and compiling (or
loading from the persistent cache) during the run: the union of its compile events' time spans,
so nested programs are not counted twice. "First chunk extra" is the first chunk's time minus
a steady chunk's: compilation plus everything else done once (the targets' forward passes, the
first run of each program). ms per step is a chunk's time over its step count: median, min
and max over ``--repeats`` chunks after the first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(
    size: int,
    batch: int,
    steps_per_call: int,
    repeats: int,
    weights: str,
    remat: bool = False,
    cache: str | None = None,
    estimate: bool = False,
    conv: str = "auto",
) -> dict:
    """Run stylize like the CLI does and time each compiled chunk.

    With ``cache``, JAX's persistent compilation cache is on in that folder (as in the CLI);
    with ``estimate``, the memory estimate is made first, as the CLI does before a run.
    ``conv`` "auto" is resolved as for a default-length (1000-step) CLI run: a benchmark's few
    steps must not switch "auto" to the short-run choice.
    """
    start = time.perf_counter()
    import jax

    from nst_jax import StyleConfig, load_vgg19, stylize
    from nst_jax.core.conv import resolve_conv
    from nst_jax.files import compile_cache, image
    from nst_jax.run import memory, plan
    from nst_jax.session import process

    process.configure_for_program()  # as the nst-jax command does for itself

    if cache:
        compile_cache.enable(cache)
    params = load_vgg19(weights)
    content = image.resize(image.decode(ROOT / "samples" / "chelsea.jpg"), size, size)
    style = image.load(ROOT / "samples" / "hubble.jpg", size)
    contents = content if batch == 1 else jax.numpy.stack([content] * batch)
    conv = resolve_conv(conv, plan.pixel_steps(StyleConfig(), batch, size, size))
    config = StyleConfig(
        steps=steps_per_call * (repeats + 1),
        steps_per_call=steps_per_call,
        remat=remat,
        conv=conv,
    )
    # XLA's own figure, without the checks' ALLOCATOR_SLACK: the comparison is of XLA's account.
    estimate_bytes = (
        memory.process_rss_bytes() + memory.step_bytes(config, batch, size, size)
        if estimate
        else None
    )
    spans: list[tuple[float, float]] = []

    def on_span(event: str, start: float, end: float, **_) -> None:
        if event.startswith("/jax/core/compile/"):  # tracing, lowering, backend compile
            spans.append((start, end))

    jax.monitoring.register_event_time_span_listener(on_span)
    marks = [time.perf_counter()]
    began = time.time()  # JAX's spans are in time.time()'s clock
    stylize(contents, style, params=params, config=config,
            on_event=lambda event: marks.append(time.perf_counter()))  # fmt: skip
    chunks = [b - a for a, b in zip(marks[1:], marks[2:], strict=False)]
    per_step = [1000 * c / steps_per_call for c in chunks]
    return {
        "size": size,
        "batch": batch,
        "backend": jax.default_backend(),
        "compile_s": _union_seconds([span for span in spans if span[0] >= began]),
        "first_extra_s": (marks[1] - marks[0]) - statistics.median(chunks),
        "startup_s": marks[0] - start,  # imports, weights, the estimate's compile
        "estimate_mib": estimate_bytes / 2**20 if estimate else None,
        "remat": remat,
        "conv": conv,
        "ms_per_step": statistics.median(per_step),
        "ms_min": min(per_step),
        "ms_max": max(per_step),
        "image_steps_per_s": batch * 1000 / statistics.median(per_step),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of ``(start, end)`` intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


class _OutOfTimeError(Exception):
    """Raised from the hook (on_event) to stop a run at its deadline."""


def _timed_run(content, style, params, config, deadline=None) -> list[tuple[float, int, float]]:
    """``(seconds since start, steps done, loss before the chunk's last step)`` per chunk;
    stopped after the first chunk past ``deadline`` seconds."""
    from nst_jax import stylize

    start, marks = time.perf_counter(), []

    def record(state):
        marks.append((time.perf_counter() - start, state.step, float(state.losses[:, -1].mean())))
        if deadline is not None and marks[-1][0] > deadline:
            raise _OutOfTimeError

    with contextlib.suppress(_OutOfTimeError):
        stylize(content, style, params=params, config=config, on_event=lambda e: record(e.state))
    return marks


def race(size: int, steps: int, scales: int, coarse_steps: int, weights: str) -> dict:
    """Seconds for single-scale Adam to do ``steps`` steps at ``size``, and for coarse-to-fine
    Adam (``scales`` sizes) to reach that run's last loss at full size, compile included.
    The coarse-to-fine run stops once it has taken as long as the single-scale one."""
    from nst_jax import StyleConfig, load_vgg19
    from nst_jax.files import image
    from nst_jax.run import multiscale

    params = load_vgg19(weights)
    content = image.resize(image.decode(ROOT / "samples" / "chelsea.jpg"), size, size)
    style = image.load(ROOT / "samples" / "hubble.jpg", size)
    single = StyleConfig(steps=steps, steps_per_call=25)
    base = _timed_run(content, style, params, single)
    target = base[-1][2]
    pyramid = single.replace(scales=scales, coarse_steps=coarse_steps)
    marks = _timed_run(content, style, params, pyramid, deadline=base[-1][0])
    final_from = (scales - 1) * coarse_steps  # steps done before the full-size scale
    reached = [t for t, done, loss in marks if done > final_from and loss <= target]
    return {
        "size": size,
        "shapes": multiscale.scale_shapes(size, size, pyramid),
        "single_s": base[-1][0],
        "target_loss": target,
        "pyramid_s": reached[0] if reached else None,
        "pyramid_final_loss": marks[-1][2],
        "pyramid_total_s": marks[-1][0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--steps-per-call", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed chunks after the first")
    parser.add_argument("--weights", help="weights file (default: a random official-layout one)")
    parser.add_argument("--race", type=int, metavar="SIZE", help="coarse-to-fine race at SIZE")
    parser.add_argument("--race-steps", type=int, default=1000, help="single-scale Adam steps")
    parser.add_argument("--scales", type=int, default=3, help="coarse-to-fine scales (race)")
    parser.add_argument("--coarse-steps", type=int, default=200, help="steps per coarse scale")
    parser.add_argument("--remat", action="store_true", help="jax.checkpoint per VGG block")
    parser.add_argument("--estimate", action="store_true", help="memory estimate vs peak RSS")
    parser.add_argument(
        "--conv", choices=("auto", "direct", "winograd"), default="auto",
        help="convolution method (auto: as a 1000-step CLI run would choose)",
    )  # fmt: skip
    parser.add_argument("--cache", help="persistent compilation cache folder for the runs")
    parser.add_argument(
        "--cache-check",
        action="store_true",
        help="run each size twice on a fresh compilation cache: compile time cold and warm",
    )
    parser.add_argument("--one", type=str, help=argparse.SUPPRESS)  # "size,batch": child mode
    args = parser.parse_args()

    if args.race:
        with tempfile.TemporaryDirectory() as tmp:
            weights = args.weights or _random_weights(tmp)
            r = race(args.race, args.race_steps, args.scales, args.coarse_steps, weights)
        print(json.dumps(r))
        reached = f"{r['pyramid_s']:.0f} s" if r["pyramid_s"] else "not reached"
        print(
            f"{r['size']} px: single-scale Adam {args.race_steps} steps {r['single_s']:.0f} s "
            f"(loss {r['target_loss']:.6g}); coarse-to-fine {r['shapes']} reached it in "
            f"{reached} (final loss {r['pyramid_final_loss']:.6g} at {r['pyramid_total_s']:.0f} s)"
        )
        return

    if args.one:
        size, batch = map(int, args.one.split(","))
        r = measure(size, batch, args.steps_per_call, args.repeats, args.weights,
                    args.remat, args.cache, args.estimate, args.conv)  # fmt: skip
        print(json.dumps(r))
        return

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or _random_weights(tmp)
        print(
            "| size | batch | conv | remat | compile s | first chunk extra s | startup s "
            "| ms/step median (min-max) | image-steps/s | peak RSS MiB | estimate MiB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            for batch in args.batches:
                cache = args.cache
                if args.cache_check:
                    cache = tempfile.mkdtemp(dir=tmp)  # cold: a new, empty cache
                for _ in range(2 if args.cache_check else 1):
                    child = [sys.executable, __file__, "--one", f"{size},{batch}",
                             "--weights", weights, "--steps-per-call", str(args.steps_per_call),
                             "--repeats", str(args.repeats), "--conv", args.conv]  # fmt: skip
                    child += ["--remat"] * args.remat + ["--estimate"] * args.estimate
                    child += ["--cache", cache] if cache else []
                    _print_row(_child(child))


def _child(argv: list[str]) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print_row(r: dict) -> None:
    if "error" in r:
        print(f"| failed: {r['error']} |", flush=True)
        return
    estimate = f"{r['estimate_mib']:.0f}" if r.get("estimate_mib") else "-"
    print(
        f"| {r['size']} | {r['batch']} | {r['conv']} | {'yes' if r['remat'] else 'no'} | "
        f"{r['compile_s']:.2f} | {r['first_extra_s']:.2f} | {r['startup_s']:.1f} | "
        f"{_ms(r['ms_per_step'])} ({_ms(r['ms_min'])}-{_ms(r['ms_max'])}) | "
        f"{r['image_steps_per_s']:.2f} | {r['peak_rss_mib']:.0f} | {estimate} |",
        flush=True,
    )


def _random_weights(folder: str) -> str:
    """A random weights file in the official layout (same shapes, so the same speed)."""
    from nst_jax.files import keras_h5

    path = str(Path(folder) / "vgg19_random.h5")
    keras_h5.write_keras_h5(keras_h5.random_params(0), path)
    return path


def _ms(ms: float) -> str:
    """Milliseconds to three significant digits (GPU steps take a few), whole above 100."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


if __name__ == "__main__":
    main()
