"""The ``nst-jax`` command: argument parsing and progress reporting, nothing else.

Every action is a library call a notebook could make. Exit status: 0 on success, 2 on bad
input or missing weights (one line on stderr), 1 on an internal error, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from nst_jax import compile_cache, image, multiscale, vgg, weights
from nst_jax.atomic import nearest_existing_parent
from nst_jax.config import (
    INITS,
    OPTIMIZER_ALIASES,
    OPTIMIZERS,
    POOLINGS,
    PRESERVE_COLOR,
    PRESETS,
    StyleConfig,
)
from nst_jax.errors import InputError
from nst_jax.optimize import DivergedError
from nst_jax.vgg import LAYERS

EXIT_INPUT = 2
DEFAULTS = StyleConfig()


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (no usage block), with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already states it (the
    preset-controlled options state the tutorial's value, since their argparse default is
    ``None``: the preset fills it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or not action.option_strings or action.nargs == 0:
            return text
        default = "none" if action.default is None else action.default
        return f"{text} (default: {default})"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _add_stylize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stylize",
        help="stylise an image",
        description="Optimise CONTENT to take on the style of STYLE (Gatys et al.).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("content", metavar="CONTENT", nargs="*", help="content images or folders")
    p.add_argument(
        "--style",
        "-s",
        action="append",
        metavar="STYLE",
        help="style image; repeat for one result per style (or one blend: --style-blend)",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="OUT",
        help="a .png/.jpg/.webp file for one result, else a folder (results keep input names)",
    )
    p.add_argument(
        "--format",
        choices=("png", "jpg", "webp"),
        default="png",
        help="format of results written into an output folder",
    )
    p.add_argument("--sheet", metavar="PATH", help="also write a labelled grid of all results")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=8,
        help="most images stylised at once (images of equal size share a batch)",
    )
    _add_algorithm_options(p)
    p.add_argument("--weights", metavar="PATH", help="VGG19 weights (.h5 or converted file)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_watch_options(p)
    p.set_defaults(func=_cmd_stylize)


def _default(field: str) -> str:
    value = getattr(DEFAULTS, field)
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    return f"(default: {value}; a --preset may change it)"


def _add_algorithm_options(p: argparse.ArgumentParser) -> None:
    """Options that set :class:`StyleConfig` fields. Their argparse default is ``None`` so that
    a preset fills what the command line leaves out; ``--help`` shows the tutorial's values."""
    g = p.add_argument_group("algorithm (defaults: the tutorial preset)")
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tutorial",
        help="starting settings; other options override them (default: tutorial)",
    )
    g.add_argument(
        "--steps", type=_positive_int, help=f"steps at the full-size scale {_default('steps')}"
    )
    g.add_argument(
        "--max-dim",
        type=_positive_int,
        help=f"longest side of content and style after loading, in px {_default('max_dim')}",
    )
    for option, help_text in (
        ("content_weight", "weight of the content term"),
        ("style_weight", "weight of the style (Gram) term"),
        ("tv_weight", "weight of the total-variation term"),
        ("learning_rate", "Adam learning rate"),
    ):
        g.add_argument(
            f"--{option.replace('_', '-')}",
            type=_sweep,
            help=f"{help_text}; comma-separated values sweep it (one result each) "
            f"{_default(option)}",
        )
    g.add_argument(
        "--optimizer",
        type=_optimizer,
        metavar="{" + ",".join(OPTIMIZERS) + "}",
        help="adam: Keras' Adam, as the tutorial; optax_adam: optax.adam (epsilon after bias "
        "correction); lbfgs: optax L-BFGS with zoom line search, image projected into [0, 1] "
        f"{_default('optimizer')}",
    )
    g.add_argument(
        "--lbfgs-memory",
        type=_positive_int,
        help=f"past steps L-BFGS keeps {_default('lbfgs_memory')}",
    )
    g.add_argument(
        "--init",
        metavar="{" + ",".join(INITS) + ",PATH}",
        help=f"starting image: content, noise (from --seed), style, or an image file "
        f"{_default('init')}",
    )
    g.add_argument("--seed", type=int, help=f"seed for noise init {_default('seed')}")
    g.add_argument("--pooling", choices=POOLINGS, help=f"VGG pooling {_default('pooling')}")
    g.add_argument(
        "--content-layers",
        type=_layers,
        metavar="LAYER[:W],...",
        help=f"content layers, each with an optional weight {_default('content_layers')}",
    )
    g.add_argument(
        "--style-layers",
        type=_layers,
        metavar="LAYER[:W],...",
        help=f"style layers, each with an optional weight {_default('style_layers')}",
    )
    g.add_argument(
        "--scales",
        type=_positive_int,
        help="coarse-to-fine: optimise at N sizes growing by sqrt(2), the last full size "
        f"{_default('scales')}",
    )
    g.add_argument(
        "--min-size",
        type=_positive_int,
        metavar="PX",
        help="coarse-to-fine from this longest side (instead of --scales) (default: none)",
    )
    g.add_argument(
        "--coarse-steps",
        type=_positive_int,
        metavar="N",
        help="steps at each scale before the last (default: --steps)",
    )
    g.add_argument(
        "--preserve-color",
        choices=PRESERVE_COLOR,
        help="keep the content's colours: luminance-only transfer, or the style's colours "
        f"matched to the content's {_default('preserve_color')}",
    )
    g.add_argument(
        "--style-blend",
        type=_weights,
        metavar="W,W,...",
        help="blend the --style images into one style, one weight each (default: none: one "
        "result per style)",
    )
    g.add_argument(
        "--style-scale",
        type=_positive_float,
        metavar="F",
        help="style resized to F times the content's longest side (default: none: --max-dim)",
    )
    g.add_argument(
        "--steps-per-call",
        type=_positive_int,
        help=f"steps per compiled call, and the progress interval {_default('steps_per_call')}",
    )
    r = p.add_argument_group("resources")
    r.add_argument(
        "--remat",
        action="store_const",
        const=True,
        help="recompute VGG block activations in the backward pass: large images fit in less "
        "memory, steps take ~1/3 longer (default: off)",
    )
    r.add_argument(
        "--conv",
        choices=vgg.CONV_METHODS,
        help="how convolutions are computed: Winograd F(2x2,3x3) (fewer multiplications, same "
        "result up to float rounding; compiles ~5 s longer), direct, or auto: Winograd on CPU "
        f"when the run is long enough to repay that, else direct {_default('conv')}",
    )
    r.add_argument(
        "--memory-limit",
        type=_positive_float,
        metavar="GIB",
        help="refuse runs estimated to need more (default: the memory available)",
    )
    r.add_argument(
        "--compile-cache",
        metavar="DIR|off",
        help="persistent compilation cache; a second run on the same shapes skips compiling "
        f"(default: {compile_cache.default_dir()}, or $NST_JAX_COMPILE_CACHE)",
    )


def _optimizer(text: str) -> str:
    name = OPTIMIZER_ALIASES.get(text, text)
    if name not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(OPTIMIZERS)}, got {text!r}")
    return name


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _weights(text: str) -> tuple[float, ...]:
    """Comma-separated numbers >= 0."""
    return tuple(_non_negative_float(part) for part in text.split(","))


def _layers(text: str) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """``LAYER[:WEIGHT],...`` -> (layer names, weights or ``None`` when none is given)."""
    names, weights, weighted = [], [], False
    for part in text.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in LAYERS:
            raise argparse.ArgumentTypeError(
                f"unknown VGG19 layer {name!r}; known: {', '.join(LAYERS)}"
            )
        names.append(name)
        weighted = weighted or bool(weight)
        weights.append(_non_negative_float(weight) if weight else 1.0)
    return tuple(names), tuple(weights) if weighted else None


def _add_watch_options(p: argparse.ArgumentParser) -> None:
    """Options of long single-image runs: checkpoints, resume, previews, logs, provenance."""
    g = p.add_argument_group("long runs (one result at a time)")
    g.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="write OUT.ckpt/ every N steps (and on exit)",
    )
    g.add_argument("--resume", action="store_true", help="continue from OUT.ckpt/")
    g.add_argument(
        "--save-every", type=_positive_int, metavar="N", help="write OUT_0100.png ... every N steps"
    )
    g.add_argument("--log", metavar="PATH", help="JSON lines: step, each loss term, seconds")
    g.add_argument("--plot", metavar="PATH", help="plot of the loss terms (needs matplotlib)")
    g.add_argument(
        "--animate",
        metavar="PATH",
        help=".gif (or .mp4 with imageio-ffmpeg) of the --save-every images",
    )
    g.add_argument(
        "--from",
        dest="from_png",
        metavar="PNG",
        help="rerun the command stored in a PNG written by nst-jax",
    )
    g.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=image.MAX_PIXELS,
        help="refuse larger inputs (decompression bombs)",
    )
    g.add_argument("--force", action="store_true", help="allow the output to replace an input")


def _sweep(text: str) -> float | tuple[float, ...]:
    """One number >= 0, or a comma-separated list of them (a sweep)."""
    values = tuple(_non_negative_float(part) for part in text.split(","))
    return values[0] if len(values) == 1 else values


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="fetch, convert or describe VGG19 weights")
    wsub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    fetch = wsub.add_parser("fetch", help="download the official Keras file and convert it")
    fetch.set_defaults(func=_cmd_weights_fetch)
    convert = wsub.add_parser("convert", help="convert a Keras .h5 to the Flax-native file")
    convert.add_argument("source", metavar="IN")
    convert.add_argument("dest", metavar="OUT", nargs="?")
    convert.set_defaults(func=_cmd_weights_convert)
    info = wsub.add_parser("info", help="describe a weights file (default: the one found)")
    info.add_argument("path", metavar="PATH", nargs="?")
    info.set_defaults(func=_cmd_weights_info)


def build_parser() -> argparse.ArgumentParser:
    """The ``nst-jax`` argument parser."""
    parser = _Parser(prog="nst-jax", description="Neural style transfer in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_stylize(sub)
    _add_weights(sub)
    info = sub.add_parser("info", help="print the provenance stored in an output PNG")
    info.add_argument("path", metavar="PNG")
    info.set_defaults(func=_cmd_info)
    return parser


def _cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(image.read_provenance(args.path), indent=2, sort_keys=True))
    return 0


def _config_from_args(args: argparse.Namespace) -> StyleConfig:
    try:
        return _make_config(args)
    except ValueError as e:
        raise InputError(str(e)) from None


CONFIG_OPTIONS = (
    "steps",
    "max_dim",
    "content_weight",
    "style_weight",
    "tv_weight",
    "learning_rate",
    "optimizer",
    "lbfgs_memory",
    "init",
    "seed",
    "pooling",
    "scales",
    "min_size",
    "coarse_steps",
    "preserve_color",
    "style_blend",
    "style_scale",
    "steps_per_call",
    "remat",
    "conv",
)


def _make_config(args: argparse.Namespace) -> StyleConfig:
    """The preset, with every option the command line gave replacing its field."""
    changes = {f: getattr(args, f) for f in CONFIG_OPTIONS if getattr(args, f) is not None}
    for kind in ("content", "style"):
        layers = getattr(args, f"{kind}_layers")
        if layers is not None:
            changes[f"{kind}_layers"], changes[f"{kind}_layer_weights"] = layers
    if args.style_blend is not None and len(args.style_blend) != len(args.style):
        counts = f"{len(args.style_blend)} weights for {len(args.style)} --style images"
        raise ValueError(f"--style-blend has {counts}")
    return PRESETS[args.preset].replace(**changes)


class _Progress:
    """A tqdm bar over image-steps showing the current loss; timing for the closing line."""

    def __init__(self, total: int, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", disable=quiet, file=sys.stderr, leave=False)
        self.start = time.perf_counter()
        self.first_chunk: tuple[int, float] | None = None  # (image-steps, time) incl. compile
        self.done = 0

    def __call__(self, steps: int, chunk_losses) -> None:
        self.done += steps * chunk_losses.shape[0]
        if self.first_chunk is None:
            self.first_chunk = (self.done, time.perf_counter())
        self.bar.set_postfix(loss=f"{float(chunk_losses[..., -1].mean()):.4g}", refresh=False)
        self.bar.update(steps * chunk_losses.shape[0])

    def summary(self, images: int, steps: int) -> str:
        """Image-steps per second after the first chunk, and the first chunk's time, which
        includes compilation (near zero with a warm persistent compilation cache)."""
        self.bar.close()
        end = time.perf_counter()
        first_done, first_time = self.first_chunk or (0, self.start)
        if self.done > first_done:
            rate = (self.done - first_done) / (end - first_time)
        else:
            rate = self.done / (end - self.start)
        noun = "image" if images == 1 else "images"
        return (
            f"{images} {noun} x {steps} steps in {end - self.start:.1f} s "
            f"({rate:.2f} image-steps/s after compile; first chunk with compile "
            f"{first_time - self.start:.1f} s)"
        )


def _sheet_path(path: str, process_index: int, process_count: int) -> Path:
    """The sheet's path; with several hosts each writes its own, ``NAME.hostI.EXT``."""
    sheet = image.check_output_path(path)
    return sheet.with_suffix(f".host{process_index}{sheet.suffix}") if process_count > 1 else sheet


def _cmd_stylize(args: argparse.Namespace) -> int:
    from nst_jax import batch, watch

    if args.from_png:
        return main(image.read_provenance(args.from_png)["command"])
    if not args.content or not args.style or not args.output:
        raise InputError("CONTENT, --style and -o are required (or --from PNG)")
    config = _config_from_args(args)
    index, count = batch.init_distributed()
    sheet = _sheet_path(args.sheet, index, count) if args.sheet else None
    work = batch.prepare(
        args.content, args.style, config, args.batch_size, index, count, max_pixels=args.max_pixels
    )
    outputs = batch.output_paths(work.jobs, args.output, f".{args.format}")
    _refuse_overwriting_inputs(outputs, args)
    watcher = _watcher(args, work, outputs)
    if work.jobs:
        weights_path = weights.find_weights(args.weights)
        cache = compile_cache.resolve(args.compile_cache)
        if cache is not None:
            compile_cache.enable(cache)
        params = weights.load_vgg19(weights_path)
        config = _check_memory(work, config, args.memory_limit)
        work = dataclasses.replace(work, config=config)
        metadata = {
            "command": args.argv,
            "config": dataclasses.asdict(config),
            "weights_md5": weights.md5sum(weights_path),
            "style": [str(s) for s in args.style],
        }
        options = {}
        if watcher is not None:
            watcher.meta = batch.job_metadata(work.jobs[0], metadata)
            options = _watch_options(args, watcher)
        steps = [
            multiscale.total_steps(*work.contents[job.content].shape[:2], config)
            for job in work.jobs
        ]
        progress = _Progress(sum(steps), args.quiet)
        thumbnails = []
        try:
            for job, result in batch.run(
                work, outputs, params=params, callback=progress, metadata=metadata, **options
            ):
                if sheet is not None:
                    thumbnails.append((image.thumbnail(result, 192), job.name))
        except watch.RunInterruptedError as e:
            progress.bar.close()
            print(f"nst-jax: {e}", file=sys.stderr)
            return e.exit_status
        except DivergedError as e:
            last = watcher.last_checkpoint if watcher is not None else None
            raise InputError(f"{e}; last good checkpoint: {last or 'none'}") from None
        if watcher is not None:
            watcher.finish(watcher.final_state, _path(args.plot))
        if sheet is not None:
            columns = min(len(thumbnails), len(work.styles) * len(batch.settings(config)))
            images, labels = zip(*thumbnails, strict=True)
            image.save(sheet, image.contact_sheet(list(images), list(labels), columns))
        destination = next(iter(outputs.values())) if len(outputs) == 1 else Path(args.output)
        print(f"{progress.summary(len(work.jobs), max(steps))} -> {destination}")
    for error in work.errors:
        print(f"nst-jax: error: {error}", file=sys.stderr)
    return EXIT_INPUT if work.errors else 0


def _check_memory(work, config: StyleConfig, limit_gib: float | None) -> StyleConfig:
    """Refuse, before any work, a batch whose estimated memory exceeds what is available.

    Returns the config to run: with ``--conv auto``, the direct convolution where only that
    fits (said in one line on stderr)."""
    from nst_jax import memory

    available = int(limit_gib * memory.GIB) if limit_gib else None
    checked = set()
    for jobs in work.batches:
        shape = (len(jobs), *work.contents[jobs[0].content].shape[:2])
        if shape in checked:
            continue
        checked.add(shape)
        what = str(jobs[0].content)
        try:
            fitting = memory.fitting_config(config, *shape, available=available, what=what)
        except MemoryError as e:
            raise InputError(str(e)) from None
        if fitting.conv != config.conv:
            print(f"nst-jax: {what}: Winograd would not fit in memory; using --conv direct",
                  file=sys.stderr)  # fmt: skip
            config = fitting
    return config


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


WATCH_OPTIONS = ("checkpoint_every", "resume", "save_every", "log", "plot", "animate")


def _watcher(args: argparse.Namespace, work, outputs):
    """A :class:`nst_jax.watch.Watcher` for every single-result run (so Ctrl-C always saves the
    image and a checkpoint); ``None`` for several results, which the watch options refuse."""
    from nst_jax import watch

    asked = [name for name in WATCH_OPTIONS if getattr(args, name)]
    if len(work.jobs) != 1:
        if asked:
            names = ", ".join("--" + name.replace("_", "-") for name in asked)
            raise InputError(f"{names}: one result at a time, and this run has {len(work.jobs)}")
        return None
    watch.check_extras(_path(args.plot), _path(args.animate))
    for target in filter(None, (args.log, args.plot, args.animate)):
        parent = nearest_existing_parent(target)
        if not parent.is_dir():
            raise InputError(f"{target}: {parent} is not a directory")
    if args.log and not args.resume:
        Path(args.log).unlink(missing_ok=True)  # a fresh log per run; a resumed one goes on
    return watch.Watcher(
        output=next(iter(outputs.values())),
        meta={},
        checkpoint_every=args.checkpoint_every,
        save_every=args.save_every,
        log=_path(args.log),
        animate=_path(args.animate),
    )


def _watch_options(args: argparse.Namespace, watcher) -> dict:
    """``stylize`` options of a watched run: the hook, terms for logs, a checkpoint to resume."""
    from nst_jax import checkpoint

    options = {"on_chunk": watcher}
    if args.resume:
        saved, meta = checkpoint.load(watcher.checkpoint_dir)
        checkpoint.check_compatible(meta, watcher.meta, watcher.checkpoint_dir)
        watcher.last_step, watcher.final_state = saved.step, saved
        options["resume"] = saved
    watcher.install_signal_handlers()
    return options


def _refuse_overwriting_inputs(outputs, args: argparse.Namespace) -> None:
    """An output may not replace an input file unless ``--force`` says so."""
    if args.force:
        return
    inputs = {Path(p).resolve() for p in [*args.content, *args.style]}
    for path in outputs.values():
        if path.resolve() in inputs:
            raise InputError(f"{path}: is also an input; refusing to overwrite it without --force")


def _cmd_weights_fetch(args: argparse.Namespace) -> int:
    downloaded, converted = weights.fetch()
    print(f"official weights: {downloaded}\nconverted: {converted}")
    return 0


def _cmd_weights_convert(args: argparse.Namespace) -> int:
    print(f"converted: {weights.convert(args.source, args.dest)}")
    return 0


def _cmd_weights_info(args: argparse.Namespace) -> int:
    for key, value in weights.info(args.path).items():
        print(f"{key}: {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nst-jax``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # stored in outputs' provenance, for --from
    try:
        return args.func(args)
    except InputError as e:
        print(f"nst-jax: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("nst-jax: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("nst-jax: internal error (the traceback above helps a bug report)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
