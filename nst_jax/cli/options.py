"""The ``nst-jax`` argument parser. Every :class:`~nst_jax.StyleConfig` field is an option of
``stylize``, generated from the field itself (name, default, help), so the two never drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Sequence

from nst_jax.cli import values
from nst_jax.config import StyleConfig
from nst_jax.files import compile_cache, image
from nst_jax.presets import PRESETS

EXIT_INPUT = 2
DEFAULT_MAX_DIM = 512  # the tutorial's


# Settings the library names in its messages that are options here without a field of
# StyleConfig (loader arguments).
_LOADER_SETTINGS = ("max_dim", "max_pixels")
# Library words for what the command takes as options.
_PHRASES = {
    "style images": "--style images",
    "tile=None": "--tile off",
    "a masked run": "a --mask run",
}


def reword(message: str) -> str:
    """A library message in the command's words: each setting the library names, as a field
    (``style_blend``) or a field and a value (``max_dim=512``, ``remat=True``), becomes the
    option that sets it (``--style-blend``, ``--max-dim 512``, ``--remat``)."""
    for words, option in _PHRASES.items():  # once: a reworded message stays as it is
        message = re.sub(rf"(?<![\w-]){re.escape(words)}", option, message)
    names = "|".join([*(f.name for f in dataclasses.fields(StyleConfig)), *_LOADER_SETTINGS])

    def option(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        flag = "--" + name.replace("_", "-")
        if value is None and "_" not in name:
            return name  # a plain word ("tile", "steps") in the text, not a setting
        return flag if value in (None, "True") else f"{flag} {value}"

    # Not inside a word, a path or a file name (style_weight.png).
    pattern = rf"(?<![\w./-])({names})(?:=([\w.]+))?(?![\w-]|\.\w)"
    return re.sub(pattern, option, message)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (no usage block), with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or not action.option_strings or action.nargs == 0:
            return text
        default = "none" if action.default is None else action.default
        return f"{text} (default: {default})"


class _StyleAction(argparse.Action):
    """``--style``: the file, and a fresh set of per-style settings for the options after it."""

    def __call__(self, parser, namespace, value, option_string=None):
        namespace.style = [*(namespace.style or []), value]
        namespace.per_style = [*(namespace.per_style or []), {}]


class _PerStyleAction(argparse.Action):
    """An option that sets something of the ``--style`` given before it. ``--style-scale``
    before any ``--style`` is the setting of every style (``StyleConfig.style_scale``)."""

    def __call__(self, parser, namespace, value, option_string=None):
        if not namespace.per_style:
            if self.dest == "style_scale":
                namespace.style_scale = value
                return
            parser.error(f"{option_string} sets the --style before it: give that --style first")
        own = namespace.per_style[-1]
        if self.dest in own:
            parser.error(f"{option_string} is given twice for --style {namespace.style[-1]}")
        own[self.dest] = value


_PARSERS = {
    "layers": values.layers,
    "floats": values.numbers,
    "sweep": values.sweep,
    "tile": values.tile,
}
_METAVARS = {"layers": "LAYER,...", "floats": "W,...", "sweep": "X[,X,...]", "tile": "auto|N|off"}


def _field_option(field: dataclasses.Field) -> tuple[str, dict]:
    """The option of one config field: its name and ``add_argument`` keywords."""
    meta, default = field.metadata, field.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    extra = "; comma-separated values sweep it, one result each" if meta["kind"] == "sweep" else ""
    kwargs: dict = {
        "dest": field.name,
        "default": None,  # None: the --preset's value
        "help": f"{meta['help']}{extra} (default: {'none' if shown is None else shown})",
    }
    if meta["kind"] in _PARSERS:
        kwargs.update(type=_PARSERS[meta["kind"]], metavar=_METAVARS[meta["kind"]])
    elif meta["choices"]:
        kwargs.update(type=values.optimizer_name if field.name == "optimizer" else values.word)
        kwargs.update(choices=meta["choices"])
    elif isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif field.type.startswith("int"):  # counts and sizes, but any integer seed
        kwargs["type"] = int if field.name == "seed" else values.positive_int
    elif field.type.startswith("float"):
        kwargs["type"] = values.positive if meta["kind"] == "positive" else values.number
    return "--" + field.name.replace("_", "-"), kwargs


def add_config_options(parser: argparse.ArgumentParser, only: Sequence[str] = ()) -> None:
    """``--preset`` and one option per :class:`StyleConfig` field (or the fields ``only``
    names), each ``None`` by default: the preset's."""
    group = parser.add_argument_group("settings (each defaults to the --preset's value)")
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tutorial",
        help="starting settings: tutorial (the TensorFlow tutorial's) or gatys (Gatys et al. "
        "2016, weights converted); the options below override them",
    )
    for field in dataclasses.fields(StyleConfig):
        if field.metadata["kind"] == "per_style" or (only and field.name not in only):
            continue  # per-style ones are set by the options that follow each --style
        name, kwargs = _field_option(field)
        if field.name == "style_scale":
            kwargs.update(
                action=_PerStyleAction,
                help=kwargs["help"].replace(
                    " (default", "; after a --style: that style's only (default", 1
                ),
            )
        elif field.name == "style_loss":
            kwargs.update(type=values.style_loss_names, metavar="LOSS[,LOSS,...]", choices=None)
            kwargs["help"] = kwargs["help"].replace(
                " (default", "; comma-separated losses: one result each (default", 1
            )
        group.add_argument(name, **kwargs)


def config_from_args(args: argparse.Namespace) -> StyleConfig:
    """The preset with every config option the command line gave replacing its field.

    Per-style settings become ``style_weights``/``style_scales`` (one value per ``--style``);
    a list of style losses runs the first here (:func:`style_losses` gives them all).
    """
    changes = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(StyleConfig)
        if getattr(args, field.name, None) is not None
    }
    if isinstance(changes.get("style_loss"), tuple):
        changes["style_loss"] = changes["style_loss"][0]
    per_style = getattr(args, "per_style", None) or []
    if any("per_style_weight" in own for own in per_style):
        changes["style_weights"] = tuple(own.get("per_style_weight", 1.0) for own in per_style)
    if any("style_scale" in own for own in per_style):
        changes["style_scales"] = tuple(own.get("style_scale") for own in per_style)
    return PRESETS[args.preset].replace(**changes)


def style_losses(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The style losses a ``--style-loss`` list sweeps, or ``None`` for one loss."""
    losses = getattr(args, "style_loss", None)
    return losses if isinstance(losses, tuple) and len(losses) > 1 else None


def style_masks(args: argparse.Namespace) -> list[str | None] | None:
    """Each ``--style``'s ``--style-mask``, or ``None`` when none is given."""
    per_style = getattr(args, "per_style", None) or []
    if not any("style_mask" in own for own in per_style):
        return None
    return [own.get("style_mask") for own in per_style]


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """Contents, styles with their own settings, and the content's regions."""
    p.add_argument("content", metavar="CONTENT", nargs="*", help="content images or folders")
    p.add_argument(
        "--style",
        "-s",
        action=_StyleAction,
        metavar="STYLE",
        help="style image; repeat for one result per style (or one blend: --style-blend, or "
        "one region each: --mask)",
    )
    p.set_defaults(per_style=None)
    p.add_argument(
        "--per-style-weight",
        dest="per_style_weight",
        action=_PerStyleAction,
        type=values.non_negative,
        metavar="W",
        help="after a --style: that style's multiplier of --style-weight (its region's weight "
        "with --mask)",
    )
    p.add_argument(
        "--style-mask",
        dest="style_mask",
        action=_PerStyleAction,
        metavar="PNG",
        help="after a --style: the part of that style image (white) whose Grams are matched",
    )
    masks = p.add_mutually_exclusive_group()
    masks.add_argument(
        "--mask",
        action="append",
        metavar="PNG",
        help="spatial control: the content region (white; grey is partial) of the --style of "
        "the same rank; one --mask per --style; resized to the content's size",
    )
    masks.add_argument(
        "--mask-labels",
        metavar="PNG",
        help="spatial control from one label image: each colour but black is a region, "
        "ordered by (R, G, B) value (grey levels dark to light), the k-th for the k-th --style",
    )


def _add_outputs(p: argparse.ArgumentParser) -> None:
    """Where results go, and how inputs are loaded."""
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
        "--max-dim",
        type=values.positive_int,
        help=f"longest side of content and style after loading, in px (default: {DEFAULT_MAX_DIM})",
    )
    p.add_argument(
        "--batch-size",
        type=values.positive_int,
        default=8,
        help="most images stylised at once (images of equal size share a batch)",
    )
    p.add_argument("--weights", metavar="PATH", help="VGG19 weights (.h5 or converted file)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="say each phase of the run on stderr, with the seconds since the start",
    )


def _add_jobs(p: argparse.ArgumentParser) -> None:
    """Options of a job of many results (a dataset): its inputs, styles, shapes, shards."""
    g = p.add_argument_group("jobs of many results (continued by rerunning the command)")
    g.add_argument("--files-from", metavar="LIST", help="content files, one per line")
    g.add_argument(
        "--styles-per-image",
        type=values.positive_int,
        metavar="K",
        help="K of the --style images per content, chosen by a hash of its name and --seed "
        "(default: every style)",
    )
    g.add_argument(
        "--size",
        type=values.size,
        metavar="WxH",
        help="every result this size (--fit) (default: each keeps its aspect, run at one of a "
        "few shapes)",
    )
    g.add_argument("--fit", choices=("crop", "pad"), default="crop", help="how --size is filled")
    g.add_argument("--shard", type=values.shard, metavar="I/N", help="run part I of N of the job")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="run the batches here, or as Ray tasks (pip install 'nst_jax[ray]')",
    )
    g.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (default: local)")
    g.add_argument(
        "--ray-workers",
        type=values.positive_int,
        metavar="N",
        help="Ray actors running batches (default: one per GPU of the cluster, else one)",
    )
    g.add_argument(
        "--workers",
        type=values.positive_int,
        default=2,
        help="threads decoding images ahead of the run",
    )


def _add_resources(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("resources")
    r.add_argument(
        "--memory-limit",
        type=values.positive,
        metavar="GIB",
        help="refuse runs estimated to need more, or tile them (--tile auto: the largest "
        "scale's tile then holds for every scale) (default: the memory available)",
    )
    r.add_argument(
        "--compile-cache",
        metavar="DIR|off",
        help="persistent compilation cache; a second run on the same shapes skips compiling "
        f"(default: {compile_cache.default_dir()}, or $NST_JAX_COMPILE_CACHE)",
    )
    r.add_argument(
        "--max-pixels",
        type=values.positive_int,
        default=image.MAX_PIXELS,
        help="refuse larger inputs (decompression bombs)",
    )


def _add_watch(p: argparse.ArgumentParser) -> None:
    """Options of long single-image runs: checkpoints, resume, previews, logs, provenance."""
    g = p.add_argument_group("long runs (one result at a time)")
    g.add_argument(
        "--checkpoint-every",
        type=values.positive_int,
        metavar="N",
        help="write OUT.ckpt/ every N steps (and on exit)",
    )
    g.add_argument("--resume", action="store_true", help="continue from OUT.ckpt/")
    g.add_argument(
        "--save-every",
        type=values.positive_int,
        metavar="N",
        help="write OUT_0100.png ... every N steps",
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
        help="replay the settings (and, unless given, the inputs) stored in a PNG written by "
        "nst-jax; options given here override them; -o is required",
    )
    g.add_argument("--force", action="store_true", help="replace existing outputs (never an input)")


def build_parser(more_commands: Sequence[Callable] = ()) -> argparse.ArgumentParser:
    """The ``nst-jax`` argument parser; each of ``more_commands`` adds its command's
    subparser (``add_parser(sub)``), so commands built on these options can register."""
    parser = Parser(prog="nst-jax", description="Neural style transfer in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "stylize",
        help="stylise an image",
        description="Optimise CONTENT to take on the style of STYLE (Gatys et al.).",
        formatter_class=_HelpFormatter,
    )
    _add_inputs(p)
    _add_outputs(p)
    _add_jobs(p)
    add_config_options(p)
    _add_resources(p)
    _add_watch(p)
    weights = sub.add_parser("weights", help="fetch, convert or describe VGG19 weights")
    wsub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    wsub.add_parser("fetch", help="download the official Keras file and convert it")
    convert = wsub.add_parser("convert", help="convert a Keras .h5 to the Flax-native file")
    convert.add_argument("source", metavar="IN")
    convert.add_argument("dest", metavar="OUT", nargs="?")
    convert.add_argument("--force", action="store_true", help="replace an existing OUT")
    info = wsub.add_parser("info", help="describe a weights file (default: the one found)")
    info.add_argument("path", metavar="PATH", nargs="?")
    info = sub.add_parser("info", help="print the provenance stored in an output PNG")
    info.add_argument("path", metavar="PNG")
    for add_parser in more_commands:
        add_parser(sub)
    return parser
