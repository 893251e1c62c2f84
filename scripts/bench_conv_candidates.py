"""The candidates for each kind of convolution in the feed-forward networks, on this machine.

    python scripts/bench_conv_candidates.py            # every layer kind, 5 repeats
    python scripts/bench_conv_candidates.py --network  # Johnson 512 px: compile and run, HLO

For each layer kind of Johnson's network and AdaIN's decoder at 512 px (one image), the
median ms of each way to compute it, each jitted on its own: XLA's convolution (``direct``),
im2col (the patches as one matrix, then one matrix product), space-to-depth over blocks then
XLA's or Winograd's 3x3 convolution (:mod:`nst_jax.core.blockconv`), Winograd on a padded
input (:func:`nst_jax.core.winograd.conv3x3_valid`), and for upsampling, the sub-pixel form
(:func:`nst_jax.feedforward.layers.upsampled_conv`). ``--network`` times Johnson's whole
network by each method, compilation and a call, and counts the compiled program's
instructions (are padding, normalisation and upsampling fused around the convolutions?).
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import blockconv, winograd
from nst_jax.core.conv import conv2d
from nst_jax.feedforward import johnson
from nst_jax.feedforward.layers import reflect_pad, upsample_nearest, upsampled_conv


def median_ms(call, *args, repeats: int) -> float:
    jax.block_until_ready(call(*args))
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(call(*args))
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def direct(x, kernel, stride=1):
    return jax.lax.conv_general_dilated(
        x[None], kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def im2col(x, kernel, stride=1):
    k = kernel.shape[0]
    h, w = (x.shape[0] - k) // stride + 1, (x.shape[1] - k) // stride + 1
    cols = [x[i : i + stride * h : stride, j : j + stride * w : stride]
            for i in range(k) for j in range(k)]  # fmt: skip
    patches = jnp.concatenate(cols, -1).reshape(h * w, -1)
    return (patches @ kernel.reshape(-1, kernel.shape[-1])).reshape(h, w, -1)


def blocks_direct(x, kernel):
    return blockconv.conv_by_blocks(x, kernel, (kernel.shape[0] - 1) // 2, direct)


def strided_blocks(x, kernel):
    """Stride 2 as a 2x2 convolution over 2-pixel blocks (space-to-depth)."""
    c, o = kernel.shape[2:]
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    blocked = padded.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, o)
    x = jnp.pad(x, ((0, x.shape[0] % 2), (0, x.shape[1] % 2), (0, 0)))
    return direct(blockconv.space_to_depth(x, 2), blocked)


# (name, output side, in channels, out channels, kernel, stride, upsampled)
LAYERS = [
    ("Johnson first, 9x9", 512, 3, 32, 9, 1, False),
    ("Johnson last, 9x9", 512, 32, 3, 9, 1, False),
    ("Johnson down 1, stride 2", 256, 32, 64, 3, 2, False),
    ("Johnson down 2, stride 2", 128, 64, 128, 3, 2, False),
    ("Johnson residual, 3x3", 128, 128, 128, 3, 1, False),
    ("Johnson up 1, 3x3", 256, 128, 64, 3, 1, True),
    ("Johnson up 2, 3x3", 512, 64, 32, 3, 1, True),
    ("AdaIN decoder last, 3x3", 512, 64, 3, 3, 1, False),
]


def candidates(k: int, stride: int, upsampled: bool) -> dict:
    if upsampled:
        return {
            "direct": lambda x, g: direct(reflect_pad(upsample_nearest(x), 1), g),
            "winograd on the upsampled": lambda x, g: conv2d(
                reflect_pad(upsample_nearest(x), 1), g, 1, "winograd"
            ),
            "sub-pixel winograd": lambda x, g: upsampled_conv(x, g, "winograd"),
        }
    if stride == 2:
        return {"direct": lambda x, g: direct(x, g, 2), "im2col": lambda x, g: im2col(x, g, 2),
                "blocks + direct 2x2": strided_blocks}  # fmt: skip
    found = {"direct": direct, "im2col": im2col}
    if k == 3:
        found["winograd"] = lambda x, g: winograd.conv3x3_valid(x, winograd.transform_kernel(g))
    else:
        found["blocks + direct"] = blocks_direct
        found["blocks + winograd"] = lambda x, g: conv2d(x, g, 1, "winograd")
    return found


def bench_layers(repeats: int) -> None:
    rng = np.random.default_rng(0)
    for name, side, c, o, k, stride, upsampled in LAYERS:
        source = side // 2 if upsampled else (side - 1) * stride + k
        x = jnp.asarray(rng.random((source, source, c)), jnp.float32)
        kernel = jnp.asarray(rng.normal(0, 1 / np.sqrt(k * k * c), (k, k, c, o)), jnp.float32)
        reference = None
        cells = []
        for label, call in candidates(k, stride, upsampled).items():
            call = jax.jit(call)
            out = call(x, kernel)
            reference = out if reference is None else reference
            error = float(jnp.max(jnp.abs(out - reference)))
            cells.append(f"{label} {median_ms(call, x, kernel, repeats=repeats):.0f} "
                         f"(differs {error:.0e})")  # fmt: skip
        print(f"{name}, {side} px out, {c}->{o}: " + "; ".join(cells), flush=True)


def bench_network(repeats: int) -> None:
    image = jnp.asarray(np.random.default_rng(0).random((512, 512, 3)), jnp.float32)
    params = johnson.TransformerNet().init(jax.random.key(0), image[:16, :16])
    for conv in ("direct", "winograd"):
        net = johnson.TransformerNet(conv=conv)
        began = time.perf_counter()
        compiled = jax.jit(net.apply).lower(params, image).compile()
        seconds = time.perf_counter() - began
        ms = median_ms(compiled, params, image, repeats=repeats)
        ops = collections.Counter(re.findall(r"= \S+ (\w[\w-]*)\(", compiled.as_text()))
        kinds = ", ".join(f"{n} {ops[n]}" for n in ("fusion", "convolution", "dot", "copy",
                                                     "pad", "transpose", "reduce"))  # fmt: skip
        print(f"Johnson 512 px, conv={conv}: compile {seconds:.2f} s, a call {ms:.0f} ms; "
              f"top-level instructions: {kinds}", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--network", action="store_true", help="the whole network, and its HLO")
    args = p.parse_args()
    print(f"{jax.devices()[0].device_kind}, {jax.default_backend()}", flush=True)
    (bench_network if args.network else bench_layers)(args.repeats)


if __name__ == "__main__":
    main()
