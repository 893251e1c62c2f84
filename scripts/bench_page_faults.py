"""Does the step lose time to fresh memory pages? Each step's faults, kernel time and speed.

    python scripts/bench_page_faults.py --size 256 --rounds 6

XLA:CPU allocates one block for a step's temporaries at every call, and glibc maps blocks
that large anew each time (``mmap``/``munmap``), so every step first touches fresh pages.
This runs the tutorial's step (random VGG19 weights, Winograd) in child processes, three
ways, interleaved over ``--rounds`` rounds:

- ``default``: the C library's defaults, as the ``nst-jax`` command runs;
- ``mallopt``: one malloc arena, no mapped blocks and a 2 GiB trim threshold, set with
  ``mallopt`` before JAX starts, so a freed block stays in the heap for the next step;
- ``hugetlb``: ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (transparent huge pages for
  malloc's memory; glibc reads it only when a process starts).

Each child reports its median ms over ``--steps`` steps after 3 warm ones, and the minor page
faults and kernel (sys) seconds per step from ``getrusage``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
VARIANTS = ("default", "mallopt", "hugetlb")


def child(variant: str, size: int, steps: int) -> None:
    if variant == "mallopt":
        libc = ctypes.CDLL("libc.so.6")
        for option, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)):
            if libc.mallopt(option, value) != 1:
                raise SystemExit(f"mallopt({option}, {value}) failed")
    from bench_winograd_f4 import problem  # imports JAX: after mallopt

    from nst_jax.session import process

    process.configure_for_program()
    step, (params, targets, x, state) = problem(size, "winograd")
    for _ in range(3):
        x, state, _, _ = step(params, targets, x, state)
        x.block_until_ready()
    before, times = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(steps):
        t = time.perf_counter()
        x, state, _, _ = step(params, targets, x, state)
        x.block_until_ready()
        times.append(1000 * (time.perf_counter() - t))
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults = (after.ru_minflt - before.ru_minflt) / steps
    sys_s = (after.ru_stime - before.ru_stime) / steps
    print(json.dumps({"ms": statistics.median(times), "faults": faults, "sys_s": sys_s}))


def child_run(variant: str, size: int, steps: int) -> dict:
    env = dict(os.environ)
    if variant == "hugetlb":
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    argv = [sys.executable, __file__, "child", variant, str(size), str(steps)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        return child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=9)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for i in range(args.rounds):
        for variant in VARIANTS[i % 3 :] + VARIANTS[: i % 3]:  # rotate the order
            runs[variant].append(child_run(variant, args.size, args.steps))
    for variant, rows in runs.items():
        ms = [round(r["ms"]) for r in rows]
        print(
            f"{args.size} px, {variant}: median {statistics.median(ms):.0f} ms/step {ms}; "
            f"minor faults/step {statistics.median(r['faults'] for r in rows):.0f}, "
            f"sys {1000 * statistics.median(r['sys_s'] for r in rows):.0f} ms/step"
        )


if __name__ == "__main__":
    main()
