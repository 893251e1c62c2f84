"""FID's matrix root two ways, side by side in one run, on ArtFID's 2048 features.

    python scripts/bench_scores.py                 # 20 and 200 images a set, 3 repeats

``nst_jax.metrics.fid`` takes the trace of ``(S_a S_b)^(1/2)`` from the singular values of
``X_a X_b^T`` (or, with more images than features, from the eigenvalues of
``S_a^(1/2) S_b S_a^(1/2)``); pytorch-fid and ArtFID call ``scipy.linalg.sqrtm`` on the
2048 x 2048 product. Random features (a set's FID to itself, and to a shifted set) show
the time and how far each is from the exact value: 0 for a set to itself.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import linalg

from nst_jax import metrics


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID as pytorch-fid computes it (``calculate_frechet_distance``)."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sa @ sb)
    if not np.all(np.isfinite(root)):
        offset = np.eye(len(sa)) * 1e-6
        root = linalg.sqrtm((sa + offset) @ (sb + offset))
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(sa) + np.trace(sb) - 2 * np.trace(np.real(root)))


def timed(fn, *args) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,200")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| images | form | seconds (median) | FID(a, a) | FID(a, b) |\n|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        a = np.abs(rng.normal(size=(n, 2048)))  # post-ReLU averages are non-negative
        b = a + rng.normal(0.1, 0.05, size=a.shape)
        for name, fn in (("nst_jax", metrics.fid), ("scipy sqrtm", scipy_fid)):
            seconds = [timed(fn, a, b)[0] for _ in range(args.repeats)]
            same, other = fn(a, a), fn(a, b)
            print(f"| {n} | {name} | {statistics.median(seconds):.3f} | {same:.3g} | "
                  f"{other:.6g} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
