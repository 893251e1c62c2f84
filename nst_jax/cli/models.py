"""``nst-jax models import|fetch|export``: published style networks as model folders
(:mod:`nst_jax.feedforward.onnx_import`), and models as ONNX files
(:mod:`nst_jax.feedforward.onnx_export`)."""

from __future__ import annotations

import argparse

from nst_jax.cli import values
from nst_jax.files.published_models import MEMBERS


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="import or fetch published style networks as models")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    imp = msub.add_parser(
        "import", help="import a network from its ONNX files into a model folder",
        description="Magenta's 26-style network (one file) or the arbitrary-style network "
        "(its predictor and transformer files). Quantised weights are dequantised.",
    )  # fmt: skip
    imp.add_argument("files", nargs="+", metavar="FILE", help="the network's ONNX files")
    imp.add_argument("-o", "--output", required=True, metavar="MODEL", help="the model folder")
    imp.add_argument("--force", action="store_true", help="replace the model in MODEL")
    fetch = msub.add_parser(
        "fetch", help="download a published network (SHA-256 checked) and import it"
    )
    fetch.add_argument("name", choices=sorted(MEMBERS), help="the network")
    fetch.add_argument("-o", "--output", metavar="MODEL",
                       help="the model folder (default models/NAME)")  # fmt: skip
    fetch.add_argument("--force", action="store_true", help="replace the model in MODEL")
    export = msub.add_parser(
        "export", help="write a model (trained or imported) as one ONNX file",
        description="Float32 NCHW images in [0, 1], any size; the inputs per method are in "
        "nst_jax.feedforward.onnx_export's docstring.",
    )  # fmt: skip
    export.add_argument("model", metavar="MODEL", help="the model folder")
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx file")
    export.add_argument("--batch", type=values.positive_int,
                        help="a fixed batch size (default: dynamic)")  # fmt: skip
    export.add_argument("--weights", metavar="PATH",
                        help="adain: the VGG19 weights the model was trained with")  # fmt: skip
    export.add_argument("--force", action="store_true", help="replace FILE")


def cmd_import(args: argparse.Namespace, *_) -> int:
    from nst_jax.feedforward.onnx_import import import_model

    record = import_model(args.files, args.output, force=args.force)
    print(_summary(args.output, record))
    return 0


def cmd_fetch(args: argparse.Namespace, *_) -> int:
    from nst_jax.feedforward.onnx_import import fetch_model

    output = args.output or f"models/{args.name}"
    record = fetch_model(args.name, output, force=args.force)
    print(_summary(output, record))
    return 0


def cmd_export(args: argparse.Namespace, *_) -> int:
    from nst_jax.session.models import export_onnx

    written, method = export_onnx(args.model, args.output, args.weights, args.batch, args.force)
    batch = args.batch or "dynamic"
    print(f"exported {method} -> {written} (batch {batch}, float32 NCHW in [0, 1])")
    return 0


def _summary(folder: str, record: dict) -> str:
    files = ", ".join(source["file"] for source in record["sources"])
    return f"imported {record['method']} ({files}; {record['licence']}) -> {folder}"
