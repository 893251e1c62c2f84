"""Dataset jobs measured: memory against the dataset's size, time to the first result,
programs for mixed shapes, and throughput by image size and batch.

    python scripts/bench_dataset.py memory      # peak RSS: 2,000 small images against 200
    python scripts/bench_dataset.py first       # first result against a one-image run
    python scripts/bench_dataset.py buckets     # 300 mixed photos: programs, aspect change
    python scripts/bench_dataset.py throughput  # image-steps/s at 64/128/256 px, batch 1/4/8
    python scripts/bench_dataset.py throughput --sizes 224 --batches 32 --steps 300  # a GPU

Every run is the ``nst-jax`` command in a child process (random weights of the official
shapes, a compilation cache warmed first), so peak RSS is the job's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "nst_jax.cli"]
# The child's peak RSS, from a wrapper whose only child it is.
MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"
)


def photos(folder: Path, count: int, low: int, high: int, seed: int = 0) -> Path:
    """``count`` random photos with sides in ``[low, high)``, in nested folders."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        h, w = (int(v) for v in rng.integers(low, high, 2))
        sub = folder / f"part{k % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(sub / f"{k:05d}.png")
    return folder


def job(inputs, out, weights, cache, *extra) -> list[str]:
    return ["stylize", *map(str, inputs), "--style", str(ROOT / "samples" / "hubble.jpg"),
            "-o", str(out), "--weights", str(weights), "--compile-cache", str(cache), "-q",
            *extra]  # fmt: skip


def peak_rss_mib(argv) -> float:
    done = subprocess.run([sys.executable, "-c", MEASURE, *COMMAND, *argv],
                          capture_output=True, text=True)  # fmt: skip
    kib, code = done.stdout.split()[-2:]
    assert code in ("0", "3"), done.stderr
    return int(kib) / 1024


def memory(tmp: Path, weights: Path, cache: Path) -> None:
    settings = ["--max-dim", "32", "--steps", "2", "--batch-size", "8", "--conv", "direct"]
    rows = []
    for count in (200, 2000):
        tree = photos(tmp / f"tree{count}", count, 40, 80)
        peak_rss_mib(job([tree], tmp / f"warm{count}", weights, cache, *settings))
        rss = [peak_rss_mib(job([tree], tmp / f"out{count}_{k}", weights, cache, *settings))
               for k in range(3)]  # fmt: skip
        rows.append((count, statistics.median(rss)))
        print(f"{count} images: peak RSS {rss} MiB, median {rows[-1][1]:.0f}", flush=True)
    print(f"ratio 2000 / 200: {rows[1][1] / rows[0][1]:.3f}")


def first_result(tmp: Path, weights: Path, cache: Path) -> None:
    settings = ["--max-dim", "64", "--steps", "20", "--batch-size", "8"]
    tree = photos(tmp / "tree", 64, 64, 96)
    one = sorted(tree.rglob("*.png"))[0]
    subprocess.run([*COMMAND, *job([tree], tmp / "warm", weights, cache, *settings)], check=False)
    singles, firsts = [], []
    for k in range(3):
        started = time.monotonic()
        subprocess.run([*COMMAND, *job([one], tmp / f"one{k}.png", weights, cache, *settings)],
                       check=True)  # fmt: skip
        singles.append(time.monotonic() - started)
        out = tmp / f"job{k}"
        started = time.monotonic()
        process = subprocess.Popen([*COMMAND, *job([tree], out, weights, cache, *settings)])
        while not [p for p in out.rglob("*.png") if ".nst-jax" not in p.parts]:
            time.sleep(0.02)
        firsts.append(time.monotonic() - started)
        process.kill()  # the rest of the job is not measured
        process.wait()
    single, first = statistics.median(singles), statistics.median(firsts)
    print(f"one-image run {singles} s; first result of the job {firsts} s; ratio "
          f"{first / single:.2f}")  # fmt: skip


def buckets(tmp: Path) -> None:
    import nst_jax
    from nst_jax import dataset
    from nst_jax.dataset import buckets as grid

    tree = photos(tmp / "tree", 300, 120, 640, seed=3)
    plan = dataset.plan_job([str(tree)], [str(ROOT / "samples" / "hubble.jpg")], str(tmp / "o"),
                            nst_jax.StyleConfig(), dataset.JobSettings(max_dim=512))  # fmt: skip
    shapes = sorted({b.shape for b in plan.batches})
    programs = {b.key for b in plan.batches}  # one a bucket
    changes = [grid.aspect_change(plan.items[i].shape, b.shape) for b in plan.batches
               for i in b.items]  # fmt: skip
    distinct = len({it.shape for it in plan.items if it.shape})
    print(f"{distinct} distinct shapes -> {len(programs)} programs, shapes {shapes}")
    print(f"aspect change: median {statistics.median(changes):.3f}x, largest "
          f"{max(changes):.3f}x")  # fmt: skip


def throughput(tmp: Path, weights: Path, cache: Path, args) -> None:
    print("| size | batch | steps | images/s | image-steps/s |\n|---|---|---|---|---|")
    for size in args.sizes:
        # Two batches of the largest size, and the rate leaves out each program's first batch.
        tree = photos(tmp / f"tree{size}", 2 * max(args.batches), size, size + 1)
        for batch in args.batches:
            out = tmp / f"out{size}_{batch}"
            settings = ["--max-dim", str(size), "--steps", str(args.steps),
                        "--steps-per-call", str(min(args.steps, 100)),
                        "--batch-size", str(batch), "--size", f"{size}x{size}"]  # fmt: skip
            subprocess.run([*COMMAND, *job([tree], out, weights, cache, *settings)], check=True)
            rate = json.loads((out / ".nst-jax" / "stats-0-of-1.json").read_text())
            rate = rate["images_per_second"]
            print(f"| {size} | {batch} | {args.steps} | {rate:.3f} | {rate * args.steps:.2f} |",
                  flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("memory", "first", "buckets", "throughput"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256],
                        help="throughput: image sides")  # fmt: skip
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8],
                        help="throughput: batch sizes")  # fmt: skip
    parser.add_argument("--steps", type=int, default=6, help="throughput: steps an image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.what == "buckets":
            return buckets(tmp)
        from nst_jax.files import keras_h5

        weights = tmp / "w.h5"
        keras_h5.write_keras_h5(keras_h5.random_params(0), weights)
        if args.what == "throughput":
            return throughput(tmp, weights, tmp / "cache", args)
        run = {"memory": memory, "first": first_result}[args.what]
        run(tmp, weights, tmp / "cache")


if __name__ == "__main__":
    main()
