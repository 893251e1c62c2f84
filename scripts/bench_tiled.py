"""Print sizes: seconds per step and peak RSS of ``nst-jax stylize``, tiled and untiled.

    python scripts/bench_tiled.py --sizes 1024 2048 4096 8192     # tiled (--tile auto)
    python scripts/bench_tiled.py --sizes 1024 2048 --tile off     # untiled, where it fits
    python scripts/bench_tiled.py --cost 1024 --tile 512 --repeats 3   # tiled/untiled ratio

Each run is the command itself in its own process (peak RSS is that run's alone): a square
N x N content (the chelsea sample resized), the hubble style, random weights in the official
layout (the real ones' shapes, so the real speed), ``--steps-per-call 1`` and a ``--log``
whose timestamps give each step's seconds. The first step includes compiling and the
targets; "s/step" is the median of the later steps (or the only step, marked).
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

ROOT = Path(__file__).resolve().parent.parent


def _inputs(folder: Path, size: int) -> tuple[Path, Path]:
    from nst_jax.files import image, keras_h5

    content = folder / f"content_{size}.png"
    if not content.exists():
        pixels = image.resize(image.decode(ROOT / "samples" / "chelsea.jpg"), size, size)
        image.save(content, pixels)
    weights_file = folder / "vgg19_notop.h5"
    if not weights_file.exists():
        keras_h5.write_keras_h5(keras_h5.random_params(0), weights_file, naming="official")
    return content, weights_file


def run(folder: Path, size: int, steps: int, tile: str, extra: list[str]) -> dict:
    """One ``nst-jax stylize`` run in a child process: step seconds, peak RSS, stderr."""
    content, weights_file = _inputs(folder, size)
    log = folder / f"log_{size}_{tile}_{time.monotonic_ns()}.jsonl"
    command = [
        sys.executable, "-m", "nst_jax.cli.console", "stylize", str(content),
        "--style", str(ROOT / "samples" / "hubble.jpg"), "--max-dim", str(size),
        "--steps", str(steps), "--steps-per-call", "1", "--tile", tile, "--log", str(log),
        "--weights", str(weights_file), "--compile-cache", "off", "-q", "--force",
        "-o", str(folder / f"out_{size}.png"), *extra,
    ]  # fmt: skip
    # A wrapper process per run: RUSAGE_CHILDREN is then this run's peak alone.
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
        "capture_output=True, text=True); sys.stderr.write(r.stderr); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True,
                          text=True)  # fmt: skip
    wall = time.perf_counter() - start
    rss_kib, code = done.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{size} px --tile {tile} failed:\n{done.stderr}")
    seconds = [json.loads(line)["seconds"] for line in log.read_text().splitlines()]
    steps_s = [b - a for a, b in zip(seconds[:-1], seconds[1:], strict=True)] or seconds[:1]
    return {
        "size": size,
        "tile": tile,
        "s_per_step": statistics.median(steps_s),
        "only_first": len(seconds) == 1,
        "peak_rss_gib": int(rss_kib) / 2**20,
        "wall_s": wall,
        "said": done.stderr.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--tile", default="auto")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cost", type=int, help="side-by-side tiled/untiled at this size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", help="inputs and outputs (default: a temporary folder)")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="nst_bench_tiled_"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"# {time.strftime('%Y-%m-%d')}  {' '.join(sys.argv)}")
    if args.cost:
        ratios = []
        for _ in range(args.repeats):  # interleaved: both see the same machine state
            tiled = run(folder, args.cost, args.steps, args.tile, [])
            untiled = run(folder, args.cost, args.steps, "off", [])
            ratios.append(tiled["s_per_step"] / untiled["s_per_step"])
            print(
                f"tiled {tiled['s_per_step']:.2f} s/step, untiled "
                f"{untiled['s_per_step']:.2f} s/step, ratio {ratios[-1]:.2f}",
                flush=True,
            )
        print(f"median ratio {statistics.median(ratios):.2f} over {len(ratios)} pairs")
        return
    print("| size | tile | s/step | peak RSS GiB | wall s |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        r = run(folder, size, args.steps, args.tile, [])
        mark = " (first step, with compile)" if r["only_first"] else ""
        chosen = r["said"].split("runs in ")[-1] if "runs in" in r["said"] else args.tile
        print(f"| {size} | {chosen} | {r['s_per_step']:.1f}{mark} | {r['peak_rss_gib']:.1f} "
              f"| {r['wall_s']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
