"""``nst-jax train``: a feed-forward model trained on a folder of images
(:mod:`nst_jax.feedforward`).

``--method johnson --style S`` trains Johnson et al.'s network for one style on the
project's objective; ``--method adain --styles DIR`` trains Huang & Belongie's decoder for
any style. The model folder ``-o MODEL/`` gets the training record (``train.json``), orbax
checkpoints (``checkpoints/``), the loss log (``log.jsonl``) and, at the end, the model
(``model.json``, ``params.msgpack``). A killed run continues with ``--resume`` to the same
params as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

from nst_jax.cli import outputs, preflight, training, values
from nst_jax.cli.options import add_config_options, config_from_args, reword
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError, shown
from nst_jax.files import weights

RECORD_VERSION = 1
OBJECTIVE = (
    "content_layers",
    "style_layers",
    "content_layer_weights",
    "style_layer_weights",
    "style_loss",
    "content_weight",
    "style_weight",
    "tv_weight",
    "pooling",
)


def add_parser(sub: Any) -> None:
    """The ``train`` command's options."""
    p = sub.add_parser(
        "train",
        help="train a feed-forward model (Johnson or AdaIN)",
        description="Train a network that stylises in one pass: Johnson et al.'s for one "
        "STYLE, or an AdaIN decoder for any style, on the images of --data.",
    )
    p.add_argument("--method", choices=("johnson", "adain"), required=True)
    p.add_argument("--data", metavar="DIR", required=True, help="folder of training images")
    p.add_argument("--style", metavar="STYLE", help="johnson: the style image")
    p.add_argument("--styles", metavar="DIR", help="adain: folder of style images")
    p.add_argument("-o", "--output", metavar="MODEL", required=True, help="the model folder")
    p.add_argument("--steps", type=values.positive_int, help="training steps (default: paper's)")
    p.add_argument("--batch-size", type=values.positive_int, help="images a step (paper's)")
    p.add_argument("--size", type=values.positive_int, default=256, help="crop side (256)")
    p.add_argument("--learning-rate", type=values.positive, help="Adam's rate (paper's)")
    p.add_argument("--decay", type=values.non_negative, help="rate / (1 + decay * step)")
    p.add_argument("--seed", type=int, default=0, help="initialisation, data order and crops")
    p.add_argument("--width", type=values.positive_int, default=32, help="johnson: channels")
    p.add_argument("--residual-blocks", type=values.positive_int, default=5, help="johnson")
    p.add_argument("--style-size", type=values.positive_int, help="johnson: style's long side")
    p.add_argument("--checkpoint-every", type=values.positive_int, default=500, metavar="N")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in MODEL")
    p.add_argument("--force", action="store_true", help="start over, replacing MODEL's run")
    p.add_argument("--plot", metavar="PATH", help="plot of the loss terms (needs matplotlib)")
    p.add_argument("--weights", metavar="PATH", help="VGG19 weights file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="log the command's phases")
    add_config_options(p, OBJECTIVE)


def cmd_train(args: argparse.Namespace) -> int:
    """The ``train`` command; returns the exit status."""
    from nst_jax.feedforward import data

    args.signals.phase("checking settings")
    preflight.check_backend()
    settings, config = _settings(args)
    folder = Path(args.output)
    contents = data.image_files(args.data, "--data")
    styles = data.image_files(args.styles, "--styles") if args.method == "adain" else None
    if args.method == "johnson":
        from nst_jax.files import image

        image.decode(args.style)  # a bad style is one line now, not after loading
    weights_path = weights.find_weights(args.weights)
    record = _record(args, settings, config, contents, styles, weights_path)
    _check_folder(folder, record, args)
    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        from nst_jax.cli import watch

        watch.check_extras(plot, None)
        outputs.check_outputs([outputs.Output(plot, "the plot")], [], force=True)
    if args.force:
        _start_over(folder)
    return training.run(args, settings, config, record, contents, styles, weights_path, plot)


def _settings(args: argparse.Namespace):
    """The training settings and the objective, checked (one line each)."""
    from nst_jax.feedforward.train import TrainSettings

    if (args.method == "johnson") != (args.style is not None):
        raise InputError("--style is johnson's (one style); adain takes --styles DIR")
    if (args.method == "adain") != (args.styles is not None):
        raise InputError("--styles DIR is adain's; johnson takes one --style")
    if args.resume and args.force:
        raise InputError("--resume continues a run, --force starts it over: give one")
    given = [f for f in OBJECTIVE if getattr(args, f) is not None and f != "style_weight"]
    if args.method == "adain" and given:
        options = ", ".join("--" + f.replace("_", "-") for f in given)
        raise InputError(f"{options}: johnson's objective; adain trains on its paper's loss")
    try:
        config = config_from_args(args) if args.method == "johnson" else None
        adain_weight = {} if args.style_weight is None else {"style_weight": args.style_weight}
        settings = TrainSettings(
            method=args.method,
            steps=args.steps,
            batch_size=args.batch_size,
            size=args.size,
            learning_rate=args.learning_rate,
            decay=args.decay,
            seed=args.seed,
            width=args.width,
            residual_blocks=args.residual_blocks,
            **(adain_weight if args.method == "adain" else {}),
        ).resolved()
    except ValueError as e:
        raise InputError(reword(str(e))) from None
    return settings, config


def files_digest(files: list[Path], folder: str) -> dict:
    """A folder's training files as the record keeps them: count and names' SHA-256."""
    names = "\n".join(p.relative_to(folder).as_posix() for p in files)
    return {"folder": str(Path(folder).resolve()), "files": len(files),
            "names_sha256": hashlib.sha256(names.encode()).hexdigest()}  # fmt: skip


def _record(args, settings, config: StyleConfig | None, contents, styles, weights_path) -> dict:
    """What the run depends on: ``--resume`` continues only the same record."""
    import jax

    from nst_jax.cli import checkpoint

    return {
        "version": RECORD_VERSION,
        "backend": jax.default_backend(),  # another backend rounds differently
        "settings": dataclasses.asdict(settings),
        "config": None if config is None else dataclasses.asdict(config),
        "style_size": args.style_size,
        "style_sha256": None if args.style is None else checkpoint.sha256(args.style),
        "data": files_digest(contents, args.data),
        "styles": None if styles is None else files_digest(styles, args.styles),
        "weights_md5": weights.md5sum(weights_path),
    }


def _check_folder(folder: Path, record: dict, args) -> None:
    """MODEL must be new, empty or this run's own (``--resume``, ``--force``)."""
    import json

    outputs.check_folder(folder, "the model")
    if not folder.exists() or not any(folder.iterdir()):
        if args.resume:
            raise InputError(f"{shown(folder)}: no training run to resume")
        return
    run_file = folder / training.RUN_FILE
    if not run_file.is_file():
        raise InputError(f"{shown(folder)}: not empty and not a training run; choose another -o")
    if args.force:
        return
    if not args.resume:
        raise InputError(f"{shown(folder)}: holds a training run; --resume continues it, "
                         "--force starts over")  # fmt: skip
    try:
        stored = json.loads(run_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"{shown(run_file)}: damaged training record ({e})") from None
    if not isinstance(stored, dict) or stored.keys() != record.keys():
        raise InputError(f"{shown(run_file)}: not a training record of this version")
    method = (stored.get("settings") or {}).get("method")
    if method != record["settings"]["method"]:
        raise InputError(f"{shown(folder)}: a {method} training run; --method "
                         f"{record['settings']['method']} cannot resume it")  # fmt: skip
    record = json.loads(json.dumps(record))  # tuples as the file holds them: lists
    changed = [key for key in record if stored[key] != record[key]]
    if changed:
        raise InputError(f"{shown(folder)}: --resume with other {', '.join(changed)} than the "
                         "run's; --force starts over")  # fmt: skip


def _start_over(folder: Path) -> None:
    """Remove the run's own files (nothing else) from MODEL."""
    for name in training.OWN_FILES:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
