"""Is Winograd F(4x4, 3x3) worth it on this CPU? And what floor do the step's products set?

    python scripts/bench_winograd_f4.py floor --sizes 256 512   # FLOPs, peak, products' floor
    python scripts/bench_winograd_f4.py layers                  # one layer, F(2x2) vs F(4x4)
    python scripts/bench_winograd_f4.py step --sizes 256 512    # the whole step, both
    python scripts/bench_winograd_f4.py dots --sizes 256 512    # products: XLA's or YNNPACK's
    python scripts/bench_winograd_f4.py rotated --sizes 256 512 # input gradient's kernel layout
    python scripts/bench_winograd_f4.py bf16 --sizes 256        # products with bfloat16 inputs

nst_jax computes VGG's 3x3 convolutions on CPU by Winograd F(2x2, 3x3)
(:mod:`nst_jax.core.winograd`): 2.25x fewer multiplications than the direct algorithm.
F(4x4, 3x3) needs 4x fewer. This script holds a prototype of it (Toom-Cook at the points
0, 1, -1, 2, 1/2 and infinity, a set closed under ``p -> 1/p``, so that the input gradient
is F(4x4, 3x3) again with the same transformed kernel, its planes permuted and scaled by
powers of two) and measures it against the library's F(2x2, 3x3):

- ``floor``: the compiled step's FLOPs (XLA's cost analysis) by the direct and the Winograd
  program, this machine's float32 matrix-multiply peak (4096 x 4096, best of 5), and the time
  the Winograd program's channel products alone need at that peak.
- ``layers``: one layer's forward and input gradient, jitted, medians of calls; the float32
  forward's largest difference from a float64 direct convolution, over its largest value.
- ``step``: the whole step (tutorial's objective, random VGG19 weights) in child processes,
  F(4x4) in the layers with at most ``--f4-max-channels`` input channels, interleaved rounds:
  median ms, the first call's time (compilation) and the loss after the timed steps;
  ``--passes``: F(4x4) by :func:`conv_f4_passes`, its transforms in materialised passes.
- ``dots``: the F(2x2, 3x3) step in child processes with nst_jax's XLA flags (channel
  products by XLA's own dot emitter) against the products handed to YNNPACK, interleaved.
- ``rotated``: the F(2x2, 3x3) step in one process with the params ``prepare_params`` gives
  (the input gradient's kernels laid out as its products read them, ``winograd_rotated``)
  against the same params without those leaves (the products contract the forward kernel's
  second axis), calls interleaved: median ms of ``--rounds`` x ``--steps`` calls each.
- ``bf16``: the 16 channel products of one 3x3 layer per VGG block at the image size (its
  2x2 tiles by its channels), jitted alone, float32 against bfloat16 inputs accumulated in
  float32 (``preferred_element_type``), calls interleaved: median ms of each and their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax.core import winograd
from nst_jax.files import keras_h5
from nst_jax.session import process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conv_candidates import median_ms  # noqa: E402

F = Fraction
# Bt, G, At of F(4x4, 3x3) at 0, 1, -1, 2, 1/2, infinity; the rotation: the reversed kernel's
# transform row k is SCALE[k] times the kernel's row PERM[k].
BT = [[-1, F(5, 2), 0, F(-5, 2), 1, 0], [0, 1, F(-3, 2), F(-3, 2), 1, 0],
      [0, -1, F(7, 2), F(-7, 2), 1, 0], [0, F(1, 2), -1, F(-1, 2), 1, 0],
      [0, 2, -1, -2, 1, 0], [0, -1, F(5, 2), 0, F(-5, 2), 1]]  # fmt: skip
G = [[-1, 0, 0], [-1, -1, -1], [F(1, 9), F(-1, 9), F(1, 9)], [F(1, 9), F(2, 9), F(4, 9)],
     [F(16, 9), F(8, 9), F(4, 9)], [0, 0, 1]]  # fmt: skip
AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, F(1, 2), 0], [0, 1, 1, 4, F(1, 4), 0],
      [0, 1, -1, 8, F(1, 8), 1]]  # fmt: skip
PERM, SCALE = (5, 1, 2, 4, 3, 0), (-1, 1, 1, 0.25, 4, -1)


def combine(planes, matrix):
    """``matrix @ planes`` along one axis, written as additions and scalings."""
    out = []
    for row in matrix:
        terms = [(float(c), p) for c, p in zip(row, planes, strict=True) if c != 0]
        acc = None
        for c, p in terms:
            term = p if c == 1 else p * c
            acc = term if acc is None else acc + term
        out.append(acc)
    return out


def transform_kernel(kernel: np.ndarray):
    u = np.einsum("ia,jb,abco->ijco", np.array(G, float), np.array(G, float), kernel)
    return tuple(tuple(jnp.asarray(u[i, j], kernel.dtype) for j in range(6)) for i in range(6))


def conv_f4(x, u, rotated=False):
    """SAME 3x3 convolution of ``(H, W, C)`` by F(4x4, 3x3); ``rotated``: the input gradient's
    convolution (the kernel rotated 180 degrees, channels swapped)."""
    h, w, c = x.shape
    th, tw = -(-h // 4), -(-w // 4)
    xp = jnp.pad(x, ((1, 4 * th - h + 1), (1, 4 * tw - w + 1), (0, 0)))
    d = [[xp[i : i + 4 * th - 3 : 4, j : j + 4 * tw - 3 : 4] for j in range(6)] for i in range(6)]
    by_col = [combine([d[i][j] for i in range(6)], BT) for j in range(6)]
    v = [combine([by_col[j][k] for j in range(6)], BT) for k in range(6)]
    if rotated:
        m = [[(v[i][j] @ u[PERM[i]][PERM[j]].T) * (SCALE[i] * SCALE[j]) for j in range(6)]
             for i in range(6)]  # fmt: skip
    else:
        m = [[v[i][j] @ u[i][j] for j in range(6)] for i in range(6)]
    by_row = [combine(m[k], AT) for k in range(6)]
    out = [combine([by_row[k][b] for k in range(6)], AT) for b in range(4)]  # [column][row]
    y = jnp.stack([jnp.stack(out[b], 1) for b in range(4)], 3)  # (th, 4, tw, 4, O)
    return y.reshape(4 * th, 4 * tw, -1)[:h, :w]


def conv_f4_passes(x, u, rotated=False):
    """:func:`conv_f4` as two 1-D passes over whole rows, then columns, each materialised
    (``optimization_barrier``): XLA otherwise fuses every tile plane's whole expression into
    its own loop and reads the input about 45 times over."""
    h, w, c = x.shape
    th, tw = -(-h // 4), -(-w // 4)
    pads = ((1, 4 * th - h + 1, 0), (1, 4 * tw - w + 1, 0), (0, 0, 0))
    xp = jax.lax.optimization_barrier(jax.lax.pad(x, np.zeros((), x.dtype), pads))
    width = 4 * tw + 2
    rows = [jax.lax.slice(xp, (i, 0, 0), (i + 4 * th - 3, width, c), (4, 1, 1)) for i in range(6)]
    rows = jax.lax.optimization_barrier(combine(rows, BT))  # 6 x (th, width, c)

    def columns(r):
        return [jax.lax.slice(r, (0, j, 0), (th, j + 4 * tw - 3, c), (1, 4, 1)) for j in range(6)]

    v = [combine(columns(rows[k]), BT) for k in range(6)]
    dims = (((2,), (1,)), ((), ())) if rotated else (((2,), (0,)), ((), ()))

    def kernel(i, j):
        return u[PERM[i]][PERM[j]] if rotated else u[i][j]

    def product(i, j):
        m = jax.lax.dot_general(v[i][j], kernel(i, j), dims)
        return m * (SCALE[i] * SCALE[j]) if rotated and SCALE[i] * SCALE[j] != 1 else m

    m = [[product(i, j) for j in range(6)] for i in range(6)]
    by_row = jax.lax.optimization_barrier(
        [combine([m[k][col] for k in range(6)], AT) for col in range(6)]
    )  # [col][a]
    out = [[None] * 4 for _ in range(4)]
    for a in range(4):
        for b, plane in enumerate(combine([by_row[col][a] for col in range(6)], AT)):
            out[a][b] = plane  # output row 4t + a, column 4u + b
    o = out[0][0].shape[-1]
    column = lambda p: jax.lax.reshape(p, (th, 1, tw, 1, o))  # noqa: E731
    y = jax.lax.concatenate(
        [jax.lax.concatenate([column(out[a][b]) for b in range(4)], 3) for a in range(4)], 1
    )
    y = jax.lax.reshape(y, (4 * th, 4 * tw, o))
    return y if (4 * th, 4 * tw) == (h, w) else jax.lax.slice(y, (0, 0, 0), (h, w, o))


@jax.custom_vjp
def conv3x3_f4p(x, u):
    return conv_f4_passes(x, u)


conv3x3_f4p.defvjp(
    lambda x, u: (conv_f4_passes(x, u), u), lambda u, g: (conv_f4_passes(g, u, True), None)
)


@jax.custom_vjp
def conv3x3_f4(x, u):
    return conv_f4(x, u)


conv3x3_f4.defvjp(lambda x, u: (conv_f4(x, u), u), lambda u, g: (conv_f4(g, u, True), None))


def use_f4(max_channels: int, passes: bool = False) -> None:
    """Route nst_jax's Winograd layers with at most ``max_channels`` inputs through F(4x4)."""
    transform, conv = winograd.transform_kernel, winograd.conv3x3

    def chosen_transform(kernel):
        k = np.asarray(kernel)
        return transform_kernel(k) if k.shape[2] <= max_channels else transform(kernel)

    winograd.transform_kernel = chosen_transform
    f4 = conv3x3_f4p if passes else conv3x3_f4
    winograd.conv3x3 = lambda x, u: f4(x, u) if len(u) == 6 else conv(x, u)


def problem(size: int, conv: str):
    params = jax.tree.map(jnp.asarray, keras_h5.random_params(0))
    rng = np.random.default_rng(0)
    content, style = (jnp.asarray(rng.random((size, size, 3)), jnp.float32) for _ in range(2))
    config = nst_jax.StyleConfig()
    layers = [*config.content_layers, *config.style_layers]
    params = nst_jax.prepare_params(params, conv, layers=layers)
    targets = nst_jax.make_targets(params, content, style, config)
    tx = nst_jax.make_optimizer(config)
    return nst_jax.make_step(config, tx), (params, targets, content, tx.init(content))


def floor(sizes) -> None:
    a = jnp.asarray(np.random.default_rng(0).random((4096, 4096)), jnp.float32)
    peak = 2 * 4096**3 / median_ms(jax.jit(jnp.matmul), a, a, repeats=5) / 1e6
    print(f"float32 matmul peak: {peak:.0f} GFLOP/s")
    for size in sizes:
        flops = {}
        for conv in ("direct", "winograd"):
            step, args = problem(size, conv)
            flops[conv] = step.lower(*args).compile().cost_analysis()["flops"] / 1e9
        print(f"{size} px: step GFLOP direct {flops['direct']:.1f}, Winograd "
              f"{flops['winograd']:.1f}; Winograd's at the peak: "
              f"{1000 * flops['winograd'] / peak:.0f} ms")  # fmt: skip


def layer_time(conv, x, u, cotangent) -> float:
    """Median ms of one layer's forward and input gradient, jitted."""
    grad = jax.jit(jax.grad(lambda x, u: jnp.vdot(conv(x, u), cotangent)))
    return median_ms(grad, x, u, repeats=7)


def relative_error(y, x, kernel) -> float:
    """max |y - direct| / max |direct|, the direct convolution in float64."""
    with jax.enable_x64(True):
        x64, k64 = jnp.asarray(x, jnp.float64)[None], jnp.asarray(kernel, jnp.float64)
        dims = ("NHWC", "HWIO", "NHWC")
        ref = np.asarray(
            jax.lax.conv_general_dilated(x64, k64, (1, 1), "SAME", dimension_numbers=dims)[0]
        )
    return float(np.abs(np.asarray(y, np.float64) - ref).max() / np.abs(ref).max())


def layers() -> None:
    rng = np.random.default_rng(0)
    for side, c, o in [(256, 64, 64), (128, 128, 128), (64, 256, 256), (32, 512, 512)]:
        x = jnp.asarray(rng.standard_normal((side, side, c)), jnp.float32)
        k = (rng.standard_normal((3, 3, c, o)) / np.sqrt(9 * c)).astype(np.float32)
        cot = jnp.asarray(rng.standard_normal((side, side, o)), jnp.float32)
        u2, u4 = winograd.transform_kernel(jnp.asarray(k)), transform_kernel(k)
        f2, f4 = layer_time(winograd.conv3x3, x, u2, cot), layer_time(conv3x3_f4, x, u4, cot)
        e2 = relative_error(winograd.conv3x3(x, u2), x, k)
        e4 = relative_error(conv3x3_f4(x, u4), x, k)
        print(f"{side}x{side}x{c}->{o}: F(2x2) {f2:.1f} ms, F(4x4) {f4:.1f} ms ({f4 / f2:.2f}x); "
              f"float32 max error, relative: F(2x2) {e2:.1e}, F(4x4) {e4:.1e}")  # fmt: skip


def child(size: int, f4_max: int, steps: int, passes: int = 0) -> None:
    if f4_max:
        use_f4(f4_max, bool(passes))
    began = time.perf_counter()
    step, (params, targets, x, state) = problem(size, "winograd")
    x, state, loss, _ = step(params, targets, x, state)
    jax.block_until_ready(x)
    first = time.perf_counter() - began
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        x, state, loss, _ = step(params, targets, x, state)
        jax.block_until_ready(x)
        times.append(1000 * (time.perf_counter() - t))
    print(json.dumps({"ms": statistics.median(times), "first_s": first, "loss": float(loss)}))


def child_run(size: int, f4_max: int, steps: int, passes: bool = False, env=None) -> dict:
    """One :func:`child` process's result: median ms, first call's seconds, loss."""
    argv = [sys.executable, __file__, "child", str(size), str(f4_max), str(steps)]
    argv.append(str(int(passes)))
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def step_ab(sizes, f4_max: int, rounds: int, steps: int, passes: bool) -> None:
    for size in sizes:
        runs = {0: [], f4_max: []}
        for _ in range(rounds):
            for limit in runs:
                runs[limit].append(child_run(size, limit, steps, passes))
        for limit, name in ((0, "F(2x2)"), (f4_max, f"F(4x4) to {f4_max} ch")):
            ms = statistics.median(r["ms"] for r in runs[limit])
            first = statistics.median(r["first_s"] for r in runs[limit])
            print(f"{size} px {name}: {ms:.0f} ms/step, first call {first:.1f} s, "
                  f"loss {runs[limit][0]['loss']:.6e}")  # fmt: skip


YNN_DOTS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution,reduce"


def dots_ab(sizes, rounds: int, steps: int) -> None:
    """nst_jax's XLA flags against the same with the channel products on YNNPACK."""
    for size in sizes:
        runs: dict[str, list] = {"xla": [], "ynnpack": []}
        for _ in range(rounds):
            for name, runs_of in runs.items():
                env = dict(os.environ, XLA_FLAGS=YNN_DOTS if name == "ynnpack" else "")
                runs_of.append(child_run(size, 0, steps, env=env))
        for name, rows in runs.items():
            ms = [round(r["ms"]) for r in rows]
            first = statistics.median(r["first_s"] for r in rows)
            print(f"{size} px, products by {name}: {statistics.median(ms):.0f} ms/step {ms}, "
                  f"first call {first:.1f} s, loss {rows[0]['loss']:.6e}")  # fmt: skip


def without_rotated(params):
    """``params`` as prepared before the input gradient had kernels of its own."""
    return {
        name: {leaf: value for leaf, value in leaves.items() if leaf != "winograd_rotated"}
        for name, leaves in params.items()
    }


def rotated_ab(sizes, rounds: int, steps: int) -> None:
    for size in sizes:
        step, (params, targets, x, state) = problem(size, "winograd")
        variants = {"rotated kernels": params, "forward kernels only": without_rotated(params)}
        runs = {name: [x, state, []] for name in variants}
        for p in variants.values():  # compile each, and one warm call
            for _ in range(2):
                jax.block_until_ready(step(p, targets, x, state))
        for i in range(rounds * steps):
            for name in list(variants)[:: 1 if i % 2 else -1]:
                x_i, state_i, times = runs[name]
                t = time.perf_counter()
                x_i, state_i, _, _ = step(variants[name], targets, x_i, state_i)
                jax.block_until_ready(x_i)
                times.append(1000 * (time.perf_counter() - t))
                runs[name][:2] = x_i, state_i
        ms = {name: statistics.median(run[2]) for name, run in runs.items()}
        print(
            f"{size} px: "
            + ", ".join(f"{name} {v:.0f} ms/step" for name, v in ms.items())
            + f"; ratio {ms['rotated kernels'] / ms['forward kernels only']:.3f}"
        )


def bf16_ab(sizes, rounds: int, steps: int) -> None:
    """The Winograd products of one layer per block, float32 against bfloat16 inputs."""
    variants = {
        "float32": jax.jit(lambda v, u: jnp.einsum("pti,pio->pto", v, u)),
        "bfloat16 inputs": jax.jit(
            lambda v, u: jnp.einsum(
                "pti,pio->pto", v.astype(jnp.bfloat16), u.astype(jnp.bfloat16),
                preferred_element_type=jnp.float32,
            )
        ),
    }  # fmt: skip
    for size in sizes:
        totals = dict.fromkeys(variants, 0.0)
        for block, channels in enumerate((64, 128, 256, 512)):
            tiles = (size // 2 ** (block + 1)) ** 2
            key = jax.random.key(block)
            v = jax.random.normal(key, (16, tiles, channels), jnp.float32)
            u = jax.random.normal(key, (16, channels, channels), jnp.float32)
            times: dict[str, list] = {name: [] for name in variants}
            for f in variants.values():
                jax.block_until_ready(f(v, u))
            for i in range(rounds * steps):
                for name in list(variants)[:: 1 if i % 2 else -1]:
                    t = time.perf_counter()
                    jax.block_until_ready(variants[name](v, u))
                    times[name].append(1000 * (time.perf_counter() - t))
            ms = {name: statistics.median(t) for name, t in times.items()}
            for name in variants:
                totals[name] += ms[name]
            print(f"{size} px, block {block + 1} ({tiles} tiles, {channels} channels): "
                  + ", ".join(f"{name} {v:.1f} ms" for name, v in ms.items()))  # fmt: skip
        print(f"{size} px, sum: " + ", ".join(f"{n} {v:.1f} ms" for n, v in totals.items()))


def main() -> None:
    process.configure_for_program()
    if sys.argv[1:2] == ["child"]:
        return child(*map(int, sys.argv[2:6]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("floor", "layers", "step", "dots", "rotated", "bf16"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--f4-max-channels", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--passes", action="store_true", help="step: F(4x4) by conv_f4_passes")
    args = parser.parse_args()
    if args.what == "floor":
        floor(args.sizes)
    elif args.what == "layers":
        layers()
    elif args.what == "rotated":
        rotated_ab(args.sizes, args.rounds, args.steps)
    elif args.what == "bf16":
        bf16_ab(args.sizes, args.rounds, args.steps)
    elif args.what == "dots":
        dots_ab(args.sizes, args.rounds, args.steps)
    else:
        step_ab(args.sizes, args.f4_max_channels, args.rounds, args.steps, args.passes)


if __name__ == "__main__":
    main()
