"""What watching a run costs: the progress bar and the JSON-lines log vs a bare run, at 128 px.

Both variants run interleaved in one process (after a warm-up that compiles everything), and
the medians are compared:

    python scripts/bench_watch.py [--size 128] [--steps 100] [--repeats 5]

"watched" is what `nst-jax stylize --log run.jsonl` does: the library's watcher
(`nst_jax.session.Watcher`) with its tqdm bar updated every chunk, plus the loss terms (which
the step computes anyway) appended to a log file at each chunk end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--steps-per-call", type=int, default=50, help="the CLI's default")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from nst_jax import StyleConfig, session, stylize
    from nst_jax.files import image, keras_h5

    params = keras_h5.random_params(0)
    content = image.resize(image.decode(ROOT / "samples" / "chelsea.jpg"), args.size, args.size)
    style = image.load(ROOT / "samples" / "hubble.jpg", args.size)
    config = StyleConfig(steps=args.steps, steps_per_call=args.steps_per_call)

    def bare() -> None:
        stylize(content, style, params=params, config=config)

    hook_seconds = [0.0]

    def timed(fn):
        """``fn``, with the time spent in it added to ``hook_seconds``."""

        def wrapper(*a):
            start = time.perf_counter()
            fn(*a)
            hook_seconds[0] += time.perf_counter() - start

        return wrapper

    def watched() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            watcher = session.Watcher(progress=True, log=Path(tmp) / "run.jsonl")
            stylize(content, style, params=params, config=config, on_event=timed(watcher))
            watcher.finish()

    times: dict[str, list[float]] = {"bare": [], "watched": []}
    for run in (bare, watched):  # warm-up: compile everything first
        run()
    hook_seconds[0] = 0.0
    # ABBA order, so a slow drift of the machine favours neither variant.
    order = [("bare", bare), ("watched", watched)]
    for i in range(args.repeats):
        for name, run in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    bare_s, watched_s = (statistics.median(times[k]) for k in ("bare", "watched"))
    print(f"{args.size} px, {args.steps} steps, chunks of {args.steps_per_call}, "
          f"median of {args.repeats} interleaved runs (ABBA order):")  # fmt: skip
    for name in ("bare", "watched"):
        all_runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"  {name:8s}{statistics.median(times[name]):.2f} s  (all: {all_runs})")
    print(f"  difference of medians {100 * (watched_s / bare_s - 1):+.2f}%")
    in_hooks = hook_seconds[0] / args.repeats
    share = 100 * in_hooks / watched_s
    print(f"  inside the progress and log hooks: {1000 * in_hooks:.1f} ms a run ({share:.3f}%)")


if __name__ == "__main__":
    main()
