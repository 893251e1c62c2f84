"""The feed-forward networks beside the same networks in PyTorch: apply and one training step.

    pip install -e '.[peers]'         # torch==2.13.0 (CPU build)
    python scripts/bench_networks.py --sizes 256 512 1024 --batches 1 8 --repeats 5
    python scripts/bench_networks.py --train-only --repeats 5
    python scripts/bench_networks.py --width 16 --sizes 512   # the slim Johnson network

Cases: Johnson's network and AdaIN (VGG19 encoder to block4_conv1 with caffe preprocessing,
AdaIN, the paper's decoder; the style encoded once, as a job does) applied to a batch; one
training step of each (256 px crops, batch 4; Johnson on nst_jax's default objective, VGG19
to block5_conv2 with Grams and total variation; AdaIN on its paper's loss; Adam). Both sides
get the same random params (nst_jax's initialisation, seed 0) and random VGG19 weights of the
official shapes (seed 0), from one ``.npz``.

Each side runs in its own long-lived worker process and the parent interleaves them: every
round asks each worker in turn for one timed call, so machine noise falls on both alike.
Reported per case: median ms (min-max) of each side, the ratio nst_jax / PyTorch, and the
largest difference of the two sides' first outputs (apply) or first losses (train, relative).
nst_jax runs as its users' jobs run it (``conv="auto"`` for a job of 1000 images, or a
training run: Winograd on CPU) and, with ``--direct``, with XLA's own convolutions beside it.
The PyTorch worker never imports nst_jax.
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

ROOT = Path(__file__).resolve().parent.parent
BGR_MEAN = (103.939, 116.779, 123.68)  # Keras' caffe preprocessing (checked in the tests)
VGG_BLOCKS = (2, 2, 4, 4, 4)
ADAIN_DECODER = ((256, False), (256, True), (256, False), (256, False), (128, False))
ADAIN_DECODER += ((128, True), (64, False), (64, True))
ADAIN_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1")
JOHNSON_STYLE_LAYERS = ADAIN_STYLE_LAYERS + ("block5_conv1",)
TRAIN_SIZE, TRAIN_BATCH = 256, 4


def vgg_layers() -> list[str]:
    return [
        name
        for b, n in enumerate(VGG_BLOCKS, start=1)
        for name in [f"block{b}_conv{c}" for c in range(1, n + 1)] + [f"block{b}_pool"]
    ]


# ---------------------------------------------------------------------------- PyTorch side


def torch_side(params: dict, case: dict):
    """``call() -> output`` of one case in PyTorch (float32, NCHW, 2 threads)."""
    import torch

    torch.set_num_threads(2)
    F = torch.nn.functional
    t = {k: torch.from_numpy(v) for k, v in params.items()}

    def conv(prefix, x, stride=1):
        kernel = t[f"{prefix}/Conv_0/kernel"].permute(3, 2, 0, 1).contiguous()
        pad = kernel.shape[-1] // 2
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), kernel, t[f"{prefix}/Conv_0/bias"],
                        stride=stride)  # fmt: skip

    def norm(prefix, x):
        return F.instance_norm(x, weight=t[f"{prefix}/scale"], bias=t[f"{prefix}/bias"], eps=1e-5)

    def up(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def johnson(p, x):
        def cn(i, x, stride=1):
            return F.relu(norm(f"{p}InstanceNorm_{i}", conv(f"{p}ReflectConv_{i}", x, stride)))

        x = cn(2, cn(1, cn(0, x), 2), 2)
        for b in range(5):
            r = f"{p}ResidualBlock_{b}/"
            y = F.relu(norm(f"{r}InstanceNorm_0", conv(f"{r}ReflectConv_0", x)))
            x = x + norm(f"{r}InstanceNorm_1", conv(f"{r}ReflectConv_1", y))
        x = cn(4, up(cn(3, up(x))))
        return torch.sigmoid(conv(f"{p}ReflectConv_5", x))

    def vgg(x, layers):
        mean = torch.tensor(BGR_MEAN).view(1, 3, 1, 1)
        x, out = x.flip(1) * 255 - mean, {}
        for name in vgg_layers()[: max(vgg_layers().index(n) for n in layers) + 1]:
            if name.endswith("_pool"):
                x = F.max_pool2d(x, 2)
            else:
                kernel = t[f"vgg/{name}/kernel"].permute(3, 2, 0, 1).contiguous()
                x = F.relu(F.conv2d(x, kernel, t[f"vgg/{name}/bias"], padding=1))
            if name in layers:
                out[name] = x
        return out

    def decoder(p, x):
        for k, (_, upsample) in enumerate(ADAIN_DECODER):
            x = F.relu(conv(f"{p}ReflectConv_{k}", up(x) if upsample else x))
        return conv(f"{p}ReflectConv_8", x)

    def mean_std(f):
        return f.mean((2, 3), keepdim=True), (f.var((2, 3), keepdim=True) + 1e-5).sqrt()

    def adain(c, s):
        (cm, cs), (sm, ss) = mean_std(c), mean_std(s)
        return (c - cm) / cs * ss + sm

    def gram(f):
        flat = f.flatten(2)
        return flat @ flat.transpose(1, 2) / flat.shape[-1]

    sides = {"johnson": johnson, "vgg": vgg, "decoder": decoder, "adain": adain,
             "mean_std": mean_std, "gram": gram}  # fmt: skip
    return _torch_call(torch, t, sides, case)


def _torch_call(torch, t, nets, case):
    rng = np.random.default_rng(1)
    size, batch = case["size"], case["batch"]
    x = torch.from_numpy(rng.random((batch, 3, size, size), np.float32))
    style = torch.from_numpy(rng.random((1, 3, 256, 256), np.float32))
    if case["mode"] == "apply":
        if case["net"] == "johnson":
            return lambda: _no_grad(torch, lambda: nets["johnson"]("params/", x))
        with torch.no_grad():
            s = nets["vgg"](style, ["block4_conv1"])["block4_conv1"]

        def adain_apply():
            c = nets["vgg"](x, ["block4_conv1"])["block4_conv1"]
            return nets["decoder"]("params/", nets["adain"](c, s)).clamp(0, 1)

        return lambda: _no_grad(torch, adain_apply)
    return _torch_train(torch, t, nets, case["net"], x, style)


def _no_grad(torch, call):
    with torch.no_grad():
        return call().permute(0, 2, 3, 1).numpy()


def _torch_train(torch, t, nets, net, x, style):
    trained = [v.requires_grad_(True) for k, v in t.items() if k.startswith("params/")]
    opt = torch.optim.Adam(trained, lr=1e-3)
    vgg, gram, mean_std = nets["vgg"], nets["gram"], nets["mean_std"]
    if net == "johnson":
        with torch.no_grad():
            wanted = {n: gram(f) for n, f in vgg(style, JOHNSON_STYLE_LAYERS).items()}

        def loss():
            out = nets["johnson"]("params/", x)
            ours = vgg(out, JOHNSON_STYLE_LAYERS + ("block5_conv2",))
            with torch.no_grad():
                content = vgg(x, ["block5_conv2"])["block5_conv2"]
            c = ((ours["block5_conv2"] - content) ** 2).mean()
            s = sum(((gram(ours[n]) - wanted[n]) ** 2).mean() for n in JOHNSON_STYLE_LAYERS)
            tv = (out[..., 1:, :] - out[..., :-1, :]).abs().sum() + \
                (out[..., 1:] - out[..., :-1]).abs().sum()  # fmt: skip
            return 1e4 * c + 1e-2 / 5 * s + 30 * tv / len(x)
    else:
        styles = style.expand(len(x), -1, 256, 256)[..., : x.shape[2], : x.shape[3]]

        def loss():
            with torch.no_grad():
                theirs = vgg(styles, ADAIN_STYLE_LAYERS)
                target = nets["adain"](vgg(x, ["block4_conv1"])["block4_conv1"],
                                       theirs["block4_conv1"])  # fmt: skip
            ours = vgg(nets["decoder"]("params/", target), ADAIN_STYLE_LAYERS)
            c = ((ours["block4_conv1"] - target) ** 2).mean()
            pairs = [(mean_std(ours[n]), mean_std(theirs[n])) for n in ADAIN_STYLE_LAYERS]
            s = sum(((a - b) ** 2).mean() for p, q in pairs for a, b in zip(p, q, strict=True))
            return c + 10 * s

    def step():
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        return np.asarray(value.item())

    return step


# ---------------------------------------------------------------------------- nst_jax side


def jax_side(params: dict, case: dict, conv: str):
    """``call() -> output`` of one case in nst_jax, as its users call it."""
    import jax.numpy as jnp

    import nst_jax
    from nst_jax.feedforward import objective, train
    from nst_jax.feedforward.model import Model, apply_model, encode_styles

    rng = np.random.default_rng(1)
    size, batch = case["size"], case["batch"]
    x = jnp.asarray(np.moveaxis(rng.random((batch, 3, size, size), np.float32), 1, -1))
    style = jnp.asarray(np.moveaxis(rng.random((1, 3, 256, 256), np.float32), 1, -1)[0])
    vgg = _unflatten({k[4:]: v for k, v in params.items() if k.startswith("vgg/")})
    net = {"params": _unflatten({k[7:]: v for k, v in params.items() if k.startswith("params/")})}
    first = net["params"]["ReflectConv_0"]["Conv_0"]["kernel"]  # Johnson's width, or AdaIN's
    width = first.shape[-1] if case["net"] == "johnson" else 32
    settings = train.TrainSettings(case["net"], steps=10**6, batch_size=TRAIN_BATCH,
                                   size=TRAIN_SIZE, width=width).resolved()  # fmt: skip
    if case["mode"] == "apply":
        model = Model(settings, {}, net)
        encoded = encode_styles(vgg, [style])
        job = 1000 * size * size  # as a dataset job of 1000 images calls it ("auto" decides)
        return lambda: np.asarray(
            apply_model(model, x, vgg, style_features=encoded, conv=conv, pixel_steps=job)
        )
    conv = train.training_conv(settings, conv)
    config = nst_jax.StyleConfig() if case["net"] == "johnson" else None
    step = objective.make_train_step(train.make_loss(settings, config, conv),
                                     train.make_optimizer(settings))  # fmt: skip
    vgg = train.prepare_vgg(settings, vgg, config, conv)
    if config is not None:
        extra = nst_jax.make_targets(vgg, x[0], style, config)
    else:
        extra = jnp.broadcast_to(style[:size, :size], x.shape)
    state = {"params": net, "opt": train.make_optimizer(settings).init(net)}

    def call():
        state["params"], state["opt"], value, _ = step(state["params"], state["opt"], vgg, x,
                                                       extra)  # fmt: skip
        return np.asarray(value)

    return call


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *path, leaf = key.split("/")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


# ---------------------------------------------------------------------------- the parent


def worker(kind: str, params_path: str) -> None:
    params = dict(np.load(params_path))
    call = None
    for line in sys.stdin:
        message = json.loads(line)
        if "case" in message:
            case = message["case"]
            ours = {k: v for k, v in params.items() if k.startswith(("vgg/", case["net"] + "/"))}
            ours = {k.replace(case["net"] + "/", "params/"): v for k, v in ours.items()}
            call = (
                torch_side(ours, case)
                if kind == "torch"
                else jax_side(ours, case, "direct" if kind == "nst_jax_direct" else "auto")
            )
            out = call()  # compiles; the first output is the one compared
            np.save(message["out"], out)
        else:
            began = time.perf_counter()
            call()
            print(json.dumps({"ms": 1000 * (time.perf_counter() - began)}), flush=True)
            continue
        print(json.dumps({"ready": True}), flush=True)


class Worker:
    def __init__(self, kind: str, params_path: str):
        self.kind = kind
        argv = [sys.executable, __file__, "--worker", kind, "--params", params_path]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, message: dict) -> dict:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.kind} worker died")
            if line.startswith("{"):
                return json.loads(line)


def write_params(path: Path, width: int = 32) -> None:
    """Both networks' params (nst_jax's initialisation, seed 0; Johnson's of ``width``) and
    random VGG19 weights."""
    import jax

    from nst_jax.feedforward import train
    from nst_jax.files import keras_h5

    flat = {}
    for method in train.METHODS:
        settings = train.TrainSettings(method, size=16, width=width)
        params = train.init_params(settings)["params"]
        for keys, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            flat[method + "/" + "/".join(k.key for k in keys)] = np.asarray(leaf)
    for layer, leaves in keras_h5.random_params(0).items():
        for name, leaf in leaves.items():
            flat[f"vgg/{layer}/{name}"] = np.asarray(leaf, np.float32)
    np.savez(path, **flat)


def cases(args) -> list[dict]:
    found = [] if args.train_only else [
        {"mode": "apply", "net": net, "size": size, "batch": batch}
        for size in args.sizes for batch in args.batches for net in ("johnson", "adain")
        if size * size * batch <= args.max_pixels
    ]  # fmt: skip
    found += [{"mode": "train", "net": n, "size": TRAIN_SIZE, "batch": TRAIN_BATCH}
              for n in ("johnson", "adain")]  # fmt: skip
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds a case")
    p.add_argument("--max-pixels", type=int, default=512 * 512 * 8, help="skip larger batches")
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--direct", action="store_true", help="nst_jax with direct convolutions too")
    p.add_argument("--width", type=int, default=32, help="Johnson's width (the slim preset: 16)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.params)
    with tempfile.TemporaryDirectory() as tmp:
        write_params(Path(tmp) / "params.npz", args.width)
        kinds = ["nst_jax", "torch"] + (["nst_jax_direct"] if args.direct else [])
        workers = [Worker(kind, str(Path(tmp) / "params.npz")) for kind in kinds]
        for case in cases(args):
            report(case, workers, args.repeats, Path(tmp))
        for w in workers:
            w.proc.stdin.close()
            w.proc.wait()


def report(case: dict, workers: list[Worker], repeats: int, tmp: Path) -> None:
    outs = {w.kind: tmp / f"{w.kind}.npy" for w in workers}
    for w in workers:
        w.ask({"case": case, "out": str(outs[w.kind])})
    times: dict[str, list[float]] = {w.kind: [] for w in workers}
    for _ in range(repeats):
        for w in workers:
            times[w.kind].append(w.ask({"run": 1})["ms"])
    first = {kind: np.load(path) for kind, path in outs.items()}
    diff = float(np.max(np.abs(first["nst_jax"] - first["torch"])))
    if case["mode"] == "train":
        diff /= float(np.abs(first["torch"]))
    ms = {kind: statistics.median(t) for kind, t in times.items()}
    cells = [f"{k} {ms[k]:.0f} ms ({min(t):.0f}-{max(t):.0f})" for k, t in times.items()]
    name = f"{case['mode']} {case['net']} {case['size']} px, batch {case['batch']}"
    print(f"{name}: {', '.join(cells)}; nst_jax/torch {ms['nst_jax'] / ms['torch']:.2f}; "
          f"first {'outputs' if case['mode'] == 'apply' else 'losses (relative)'} differ by "
          f"{diff:.1e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
