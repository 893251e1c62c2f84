"""The ``nst-jax`` argument parser's shared parts. Every field of the library's settings
(:class:`~nst_jax.StyleConfig`, ``JobSettings``, ``TrainSettings``, ``VideoSettings``) is an
option generated from the field itself (name, one default, help), so the two never drift;
each option defaults to ``None``, which leaves the library's default (or the preset's).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Sequence

from nst_jax.cli import values
from nst_jax.config import StyleConfig
from nst_jax.files import image
from nst_jax.presets import PRESETS

EXIT_INPUT = 2
# Settings the library names in its messages that are options here without a field of
# StyleConfig (loader and job arguments).
_OTHER_SETTINGS = ("max_dim", "max_pixels", "style_masks", "mask_labels", "style_index")
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
    names = "|".join([*(f.name for f in dataclasses.fields(StyleConfig)), *_OTHER_SETTINGS])

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


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or not action.option_strings or action.nargs == 0:
            return text
        default = "none" if action.default is None else action.default
        return f"{text} (default: {default})"


_PARSERS = {
    "layers": (values.layers, "LAYER,..."),
    "floats": (values.numbers, "W,..."),
    "sweep": (values.sweep, "X[,X,...]"),
    "tile": (values.tile, "auto|N|off"),
    "size": (values.size, "WxH"),
    "offsets": (values.flow_offsets, "J[,J...]"),
    "positive": (values.positive, None),
}
# Kinds with no option of their own: set by other options.
NO_OPTION = ("per_style", "derived")


def field_option(field: dataclasses.Field) -> tuple[str, dict]:
    """The option of one settings field: its name and ``add_argument`` keywords."""
    meta, default = field.metadata, field.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    extra = "; comma-separated values sweep it, one result each" if meta["kind"] == "sweep" else ""
    help_text = meta["help"] if "default:" in meta["help"] else (
        f"{meta['help']}{extra} (default: {'none' if shown is None else shown})"
    )  # fmt: skip
    kwargs: dict = {"dest": field.name, "default": None, "help": help_text}
    if meta["kind"] in _PARSERS:
        parse, metavar = _PARSERS[meta["kind"]]
        kwargs.update(type=parse, **({"metavar": metavar} if metavar else {}))
    elif meta["choices"]:
        kwargs.update(type=values.optimizer_name if field.name == "optimizer" else values.word)
        kwargs.update(choices=meta["choices"])
    elif isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif field.type.startswith("int"):  # counts and sizes, but any integer seed
        kwargs["type"] = int if field.name == "seed" else values.positive_int
    elif field.type.startswith("float"):
        kwargs["type"] = values.number
    return meta.get("flag") or "--" + field.name.replace("_", "-"), kwargs


def add_field_options(group, cls: type, only: Sequence[str] = (), skip: Sequence[str] = ()):
    """One option per field of the settings class ``cls`` (those ``only`` names, none that
    ``skip`` names or whose kind has no option)."""
    for field in dataclasses.fields(cls):
        if field.metadata.get("kind") in NO_OPTION or field.name in skip:
            continue
        if only and field.name not in only:
            continue
        name, kwargs = field_option(field)
        group.add_argument(name, **kwargs)


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


def add_config_options(parser: argparse.ArgumentParser, cls: type = StyleConfig) -> None:
    """``--preset`` and one option per field of ``cls`` (``StyleConfig``, or a part of it
    such as ``ObjectiveConfig``), each ``None`` by default: the preset's."""
    group = parser.add_argument_group("settings (each defaults to the --preset's value)")
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tutorial",
        help="starting settings: tutorial (the TensorFlow tutorial's) or gatys (Gatys et al. "
        "2016, weights converted); the options below override them",
    )
    add_field_options(group, cls, skip=("style_scale", "style_loss"))
    fields = {field.name: field for field in dataclasses.fields(cls)}
    if "style_scale" in fields:
        name, kwargs = field_option(fields["style_scale"])
        own = "; after a --style: that style's only (default"
        kwargs["help"] = kwargs["help"].replace(" (default", own, 1)
        group.add_argument(name, action=_PerStyleAction, **kwargs)
    name, kwargs = field_option(fields["style_loss"])
    kwargs.update(type=values.style_loss_names, metavar="LOSS[,LOSS,...]")
    each = "; comma-separated losses: one result each (default"
    kwargs["help"] = kwargs["help"].replace(" (default", each, 1)
    group.add_argument(name, **kwargs)


def config_from_args(args: argparse.Namespace, base: StyleConfig | None = None) -> StyleConfig:
    """``base`` (default: the preset) with every config option the command line gave
    replacing its field.

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
    return (base or PRESETS[args.preset]).replace(**changes)


def style_losses(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The style losses a ``--style-loss`` list sweeps, or ``None`` for one loss."""
    losses = getattr(args, "style_loss", None)
    return losses if isinstance(losses, tuple) and len(losses) > 1 else None


def style_masks(args: argparse.Namespace) -> tuple[str | None, ...] | None:
    """Each ``--style``'s ``--style-mask``, or ``None`` when none is given."""
    per_style = getattr(args, "per_style", None) or []
    if not any("style_mask" in own for own in per_style):
        return None
    return tuple(own.get("style_mask") for own in per_style)


def add_styles(p: argparse.ArgumentParser) -> None:
    """``--style`` (repeatable) with the options that follow each: its own weight, scale and
    region."""
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


def add_common(p: argparse.ArgumentParser, output_help: str, required: bool = False) -> None:
    """The options every command has, with the same short forms: ``-o``, ``-q``, ``-v``,
    and ``--weights``."""
    p.add_argument("--output", "-o", metavar="OUT", required=required, help=output_help)
    p.add_argument("--weights", metavar="PATH", help="VGG19 weights (.h5 or converted file)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE_OR_MODULE",
        help="a .py file or module that registers style terms (nst_jax.register_style_term), "
        "loaded before the options are read; recorded with its SHA-256 in the results "
        "(repeatable)",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="say each phase of the run on stderr, with the seconds since the start",
    )


def add_max_pixels(group: argparse._ActionsContainer) -> None:
    """``--max-pixels``, for every command that reads images."""
    group.add_argument("--max-pixels", type=values.pixel_limit, default=image.MAX_PIXELS,
                       help="refuse larger inputs (decompression bombs); off: no limit "
                       f"(default {image.MAX_PIXELS}, Pillow's)")  # fmt: skip


def given(args: argparse.Namespace, cls: type, only: Sequence[str] = ()) -> dict:
    """The fields of ``cls`` the command line gave (``None`` options left out)."""
    names = [f.name for f in dataclasses.fields(cls) if not only or f.name in only]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
