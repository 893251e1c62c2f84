"""nst_jax beside the tutorial's TensorFlow and a PyTorch port: same images, weights, settings.

    pip install -e '.[peers]'        # tensorflow-cpu and torch==2.13.0 (CPU build)
    python scripts/bench_peers.py --sizes 256 512 --steps 5 --repeats 5

Each implementation runs in its own long-lived worker process (so each has its own peak RSS)
and the parent interleaves them: every round asks each worker in turn for ``--steps`` timed
steps, so machine noise falls on all of them alike. Reported: median ms per step (min-max),
peak RSS, the ratio to the faster baseline, achieved GFLOP/s (analytic FLOPs of one step:
forward to the deepest layer, input-only backward, Grams) against the fp32 matrix-multiply peak
measured here (``jnp.matmul`` and NumPy, 4096 x 4096, best of several), and whether the first
steps' losses agree (relative 1e-2; the first step, before any update, to 1e-4). The FLOPs are
the direct algorithm's, so for Winograd (fewer multiplications) the rate is an effective one.

``--only torch nst_jax nst_jax_direct nst_jax_from128 nst_jax_from256 nst_jax_from512`` adds
nst_jax with Winograd only from 128, 256 or 512 input channels: the speed-memory trade-off
between its two convolution methods.

The TensorFlow worker is the tutorial's own code (``scripts/tutorial_tf.py``). The PyTorch
worker builds VGG19 by hand from the same ``.h5`` and uses Keras-form Adam, so its trajectory
is the tutorial's too. Neither TensorFlow nor torch is a runtime dependency of nst_jax.
The peers' workers never import nst_jax (the images come as ``.npy`` files, the weights are
read with h5py): JAX's pages in their processes had added about 160 MiB to their peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

CONTENT_LAYERS = ["block5_conv2"]
STYLE_LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]
# nst_jax runs as users run it (conv="auto": Winograd on CPU) and, beside it, with direct
# convolutions (the same FLOPs as the peers, so its GFLOP/s is a true efficiency).
WORKERS = ("tensorflow", "torch", "nst_jax", "nst_jax_direct")
# Opt-in (--only): Winograd only in layers with at least N input channels, between the
# default (N = 64) and direct. Winograd's tile planes cost memory where activations are large
# (early blocks) and its kernels where they are wide (late blocks), so these measure the
# speed-memory trade-off between nst_jax's two convolution methods.
SWEEP = ("nst_jax_from128", "nst_jax_from256", "nst_jax_from512")
# VGG19's layer order and Keras' BGR mean, for the PyTorch worker, which must not import
# nst_jax (tests/test_bench_peers.py checks these against nst_jax.vgg).
LAYERS = tuple(
    name
    for b, n in enumerate((2, 2, 4, 4, 4), start=1)
    for name in [f"block{b}_conv{c}" for c in range(1, n + 1)] + [f"block{b}_pool"]
)
BGR_MEAN = (103.939, 116.779, 123.68)


def images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's content (chelsea, size x size) and style (hubble, longest side size)."""
    from nst_jax.files import image

    content = image.resize(image.decode(ROOT / "samples" / "chelsea.jpg"), size, size)
    return content, image.load(ROOT / "samples" / "hubble.jpg", size)


def step_gflop(size: int) -> float:
    """Analytic GFLOP of one step at ``size`` x ``size``: convolutions up to the deepest layer
    used (block5_conv2) forward and their input gradients backward, plus the Grams."""
    from nst_jax.core import layers as vgg_layers

    flops, side = 0.0, size
    for name in vgg_layers.LAYERS[: vgg_layers.LAYERS.index("block5_conv2") + 1]:
        if name.endswith("_pool"):
            side //= 2
            continue
        (kh, kw, cin, cout), _ = vgg_layers.conv_shapes()[name]
        conv = 2.0 * side * side * kh * kw * cin * cout
        flops += 2 * conv  # forward, and the input gradient
        if name in STYLE_LAYERS:
            flops += 3 * 2.0 * side * side * cout * cout  # Gram forward + its backward
    return flops / 1e9


def matmul_peak(repeats: int = 5, n: int = 4096) -> dict[str, float]:
    """Best-of-``repeats`` fp32 GFLOP/s of an n x n matrix product: NumPy and jnp.matmul."""
    import jax
    import jax.numpy as jnp

    a = np.random.default_rng(0).random((n, n), np.float32)
    b = np.random.default_rng(1).random((n, n), np.float32)
    flop = 2.0 * n**3
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul)
    mm(ja, jb).block_until_ready()
    candidates = {"numpy": lambda: a @ b, "jnp": lambda: mm(ja, jb).block_until_ready()}
    best = {}
    for name, fn in candidates.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        best[name] = flop / min(times) / 1e9
    return best


# --- workers: each prepares, runs two warm-up steps (their losses are reported), then answers
# "run K" with the milliseconds per step of K more steps, and "quit" with its peak RSS.


def _tensorflow_worker(weights: str, content: np.ndarray, style: np.ndarray):
    import tutorial_tf

    train_step, _ = tutorial_tf.tutorial_train_step(weights, content, style)
    return lambda: float(np.squeeze(train_step().numpy()))


def _read_h5(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{layer: (kernel HWIO, bias)}`` from a Keras HDF5 file, by its ``layer_names`` and
    ``weight_names`` attributes. The peers read the file themselves: importing nst_jax would
    import JAX into their processes and add its pages to their peak RSS."""
    import h5py

    def names(node, attr):
        return [n.decode() if isinstance(n, bytes) else str(n) for n in node.attrs.get(attr, [])]

    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        return {
            layer: tuple(np.asarray(root[layer][w]) for w in names(root[layer], "weight_names"))
            for layer in names(root, "layer_names")
            if "_conv" in layer
        }


def _torch_worker(weights: str, content: np.ndarray, style: np.ndarray):
    import torch
    import torch.nn.functional as F  # noqa: N812

    # The GPU where there is one (as nst_jax's JAX uses it), else the CPU.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    convs = {  # HWIO -> OIHW
        name: (
            torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).to(device),
            torch.from_numpy(bias).to(device),
        )
        for name, (kernel, bias) in _read_h5(weights).items()
    }
    mean = torch.tensor(BGR_MEAN).view(1, 3, 1, 1).to(device)
    wanted = set(STYLE_LAYERS + CONTENT_LAYERS)
    last = max(LAYERS.index(n) for n in wanted)

    def features(x):  # x: (1, 3, H, W) RGB in [0, 1]
        x = x.flip(1) * 255.0 - mean  # caffe: RGB -> BGR, minus the mean
        out = {}
        for name in LAYERS[: last + 1]:
            if name.endswith("_pool"):
                x = F.max_pool2d(x, 2, 2)
            else:
                x = F.relu(F.conv2d(x, *convs[name], padding=1))
            if name in wanted:
                out[name] = x
        return out

    def gram(f):
        _, c, h, w = f.shape
        f = f.reshape(c, h * w)
        return f @ f.T / (h * w)

    def to_nchw(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].to(device)

    with torch.no_grad():
        style_targets = {
            n: gram(f) for n, f in features(to_nchw(style)).items() if n in STYLE_LAYERS
        }
        content_targets = {n: features(to_nchw(content))[n] for n in CONTENT_LAYERS}
    image = to_nchw(content).clone().requires_grad_(True)
    m, v = torch.zeros_like(image), torch.zeros_like(image)
    lr, b1, b2, eps = 0.02, 0.99, 0.999, 0.1
    count = [0]

    def step() -> float:
        f = features(image)
        style_loss = sum(torch.mean((gram(f[n]) - style_targets[n]) ** 2) for n in STYLE_LAYERS)
        content_loss = sum(torch.mean((f[n] - content_targets[n]) ** 2) for n in CONTENT_LAYERS)
        tv = (image[..., 1:, :] - image[..., :-1, :]).abs().sum() + (
            image[..., :, 1:] - image[..., :, :-1]
        ).abs().sum()
        loss = 1e-2 / 5 * style_loss + 1e4 * content_loss + 30 * tv
        (grad,) = torch.autograd.grad(loss, image)
        with torch.no_grad():  # Keras' Adam: epsilon on sqrt(v) before bias correction
            count[0] += 1
            t = count[0]
            m.add_((grad - m) * (1 - b1))
            v.add_((grad * grad - v) * (1 - b2))
            alpha = lr * (1 - b2**t) ** 0.5 / (1 - b1**t)
            image.sub_(m * alpha / (v.sqrt() + eps))
            image.clamp_(0.0, 1.0)
        return float(loss.detach())

    return step


def winograd_from(kind: str) -> int | None:
    """The input-channel threshold of a ``SWEEP`` worker (``None`` for the others)."""
    prefix = "nst_jax_from"
    return int(kind[len(prefix) :]) if kind.startswith(prefix) else None


def _nst_jax_worker(
    weights: str,
    content: np.ndarray,
    style: np.ndarray,
    chunk: int,
    conv: str,
    min_channels: int | None = None,
):
    """nst_jax runs through ``stylize`` itself; its ``on_event`` hook is where it waits for
    the parent, so the timed steps are exactly what users run."""
    import functools

    import nst_jax
    from nst_jax.core import conv as conv_choice
    from nst_jax.session import process

    process.configure_for_program()  # as the nst-jax command does for itself
    if min_channels is not None:
        # The threshold is a tuning constant of nst_jax, not a user setting; this worker
        # process alone overrides it, to measure it.
        conv_choice.prepare_params = functools.partial(
            conv_choice.prepare_params, min_channels=min_channels
        )

    params = nst_jax.load_vgg19(weights)
    config = nst_jax.StyleConfig(steps=10**6, steps_per_call=chunk, conv=conv)
    state = {"start": time.perf_counter(), "first": True}

    def on_event(event) -> None:
        run_state = event.state
        elapsed = time.perf_counter() - state["start"]
        if state["first"]:  # the two warm-up steps (chunk == 2 for them: see below)
            _reply({"losses": [float(x) for x in run_state.losses[0, :2]]})
            state["first"] = False
        else:
            _reply({"ms_per_step": 1000 * elapsed / chunk})
        _wait_for_run(chunk)
        state["start"] = time.perf_counter()

    nst_jax.stylize(content, style, params=params, config=config, on_event=on_event)


def _reply(message: dict) -> None:
    print(json.dumps(message), flush=True)


def _wait_for_run(chunk: int) -> None:
    line = sys.stdin.readline().split()
    if not line or line[0] == "quit":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _reply({"peak_rss_mib": peak})
        sys.exit(0)
    assert int(line[1]) == chunk, "nst_jax's chunk length is fixed when it starts"


def worker(kind: str, weights: str, image_dir: str, steps: int) -> None:
    content, style = (np.load(Path(image_dir) / f"{name}.npy") for name in ("content", "style"))
    if kind.startswith("nst_jax"):
        # Two warm-up chunks would be 2 * steps; one chunk of `steps` is the warm-up instead,
        # and its first two losses are the reported ones.
        conv = "direct" if kind == "nst_jax_direct" else "auto"
        _nst_jax_worker(weights, content, style, steps, conv, winograd_from(kind))
        return
    step = _tensorflow_worker(weights, content, style) if kind == "tensorflow" else None
    step = step or _torch_worker(weights, content, style)
    _reply({"losses": [step(), step()]})
    while True:
        line = sys.stdin.readline().split()
        if not line or line[0] == "quit":
            _reply({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
            return
        k = int(line[1])
        start = time.perf_counter()
        for _ in range(k):
            step()
        _reply({"ms_per_step": 1000 * (time.perf_counter() - start) / k})


class Worker:
    def __init__(self, kind: str, weights: str, image_dir: str, steps: int):
        argv = [sys.executable, __file__, "--worker", kind, "--weights", weights,
                "--images", image_dir, "--steps", str(steps)]  # fmt: skip
        self.kind = kind
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.losses = self._read()["losses"]
        self.times: list[float] = []

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.kind} worker died")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, steps: int) -> None:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        self.times.append(self._read()["ms_per_step"])

    def quit(self) -> float:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        peak = self._read()["peak_rss_mib"]
        self.proc.wait()
        return peak


def compare(size: int, steps: int, repeats: int, weights: str, kinds, tmp: str) -> dict:
    # The images are decoded here and handed over as .npy files, so that the peers' workers
    # import only NumPy, h5py and their own framework.
    image_dir = Path(tmp) / f"images{size}"
    image_dir.mkdir()
    for name, array in zip(("content", "style"), images(size), strict=True):
        np.save(image_dir / f"{name}.npy", array)
    workers = [Worker(kind, weights, str(image_dir), steps) for kind in kinds]
    for _ in range(repeats):
        for w in workers:
            w.run(steps)
    rows = {}
    for w in workers:
        rows[w.kind] = {
            "ms": statistics.median(w.times),
            "ms_min": min(w.times),
            "ms_max": max(w.times),
            "losses": w.losses,
            "peak_rss_mib": w.quit(),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--weights", help="weights file (default: a random official-layout one)")
    parser.add_argument("--only", nargs="+", choices=WORKERS + SWEEP, default=list(WORKERS))
    parser.add_argument("--worker", choices=WORKERS + SWEEP, help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:  # the warm-up chunk's first two losses are the ones compared
        parser.error(f"--steps must be at least 2, got {args.steps}")
    if args.worker:
        worker(args.worker, args.weights, args.images, args.steps)
        return

    peak = matmul_peak()
    best_peak = max(peak.values())
    print(f"fp32 matmul 4096: numpy {peak['numpy']:.0f} GFLOP/s, jnp {peak['jnp']:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            from nst_jax.files import keras_h5

            weights = str(Path(tmp) / "vgg19_random.h5")
            keras_h5.write_keras_h5(keras_h5.random_params(0), weights)
        print("| size | implementation | ms/step median (min-max) | vs faster baseline | "
              "GFLOP/s | of matmul peak | peak RSS MiB (vs torch) | "
              "step-1 loss (rel. to nst_jax) | step-2 loss (rel.) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            rows = compare(size, args.steps, args.repeats, weights, args.only, tmp)
            baselines = [rows[k]["ms"] for k in ("tensorflow", "torch") if k in rows]
            fastest = min(baselines) if baselines else None
            torch_rss = rows["torch"]["peak_rss_mib"] if "torch" in rows else float("nan")
            ours = rows.get("nst_jax")
            gflop = step_gflop(size)
            for kind, r in rows.items():
                rel = [
                    abs(a - b) / abs(b) for a, b in zip(r["losses"], ours["losses"], strict=True)
                ] if ours else [float("nan")] * 2  # fmt: skip
                ratio = f"{r['ms'] / fastest:.2f}" if fastest else "-"
                rss = f"{r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] / torch_rss:.2f})"
                achieved = gflop / (r["ms"] / 1000)
                print(
                    f"| {size} | {kind} | {_ms(r['ms'])} ({_ms(r['ms_min'])}-{_ms(r['ms_max'])}) | "
                    f"{ratio} | {achieved:.0f} | {achieved / best_peak:.0%} | "
                    f"{rss} | {r['losses'][0]:.7g} ({rel[0]:.1e}) | "
                    f"{r['losses'][1]:.7g} ({rel[1]:.1e}) |",
                    flush=True,
                )
            if ours:
                ok = all(
                    abs(a - b) / abs(b) <= 1e-2
                    for r in rows.values()
                    for a, b in zip(r["losses"], ours["losses"], strict=True)
                )
                print(f"first two steps' losses agree within 1e-2: {'yes' if ok else 'NO'}")


def _ms(ms: float) -> str:
    """Milliseconds to three significant digits (GPU steps take a few), whole above 100."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


if __name__ == "__main__":
    main()
