"""``nst-jax stylize``: the settings checked, then one result (:mod:`nst_jax.cli.single`:
checkpoints, resume, previews) or a job of many (:mod:`nst_jax.cli.jobs`: planned, streamed,
continued by rerunning).

One result: one content file, and one style (or a blend of several, or one per region),
with no sweep, written to ``-o`` with an image extension. Everything else is a job into the
folder ``-o``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nst_jax.cli import jobs, preflight, single
from nst_jax.cli.options import (
    DEFAULT_MAX_DIM,
    config_from_args,
    reword,
    style_losses,
    style_masks,
)
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError
from nst_jax.files import image, weights


def cmd_stylize(args: argparse.Namespace) -> int:
    """The ``stylize`` command; returns the exit status."""
    if args.model is not None:
        from nst_jax.cli import models

        return models.run(args)
    if args.from_png:
        from nst_jax.cli import provenance

        if not args.output:
            raise InputError(f"{args.from_png}: --from replays settings; give -o for the result")
        provenance.apply(args)
    if not (args.content or args.files_from) or not args.style or not args.output:
        raise InputError("CONTENT, --style and -o are required (or --from PNG and -o)")
    args.max_dim = args.max_dim or DEFAULT_MAX_DIM
    args.signals.phase("checking settings")
    preflight.check_backend()
    config = _config(args)
    weights_path = weights.find_weights(args.weights)
    meta = _metadata(args, config, weights_path)
    if one_result(args, config):
        return single.run(args, config, weights_path, meta)
    return jobs.run(args, config, weights_path, meta)


def one_result(args, config: StyleConfig) -> bool:
    """Whether the command makes a single result (module docstring). An ``-o`` with an image
    extension, or another extension and not a folder, names one file: an unknown extension
    is refused here, a folder named like an image by the output checks, and a job of several
    results into a file by the job's own check."""
    blended = config.style_blend is not None or args.mask or args.mask_labels
    styles = 1 if blended else len(args.style)
    single = (
        len(args.content) == 1
        and not args.files_from
        and not Path(args.content[0]).is_dir()
        and styles == 1
        and config.sweep_size is None
        and style_losses(args) is None
    )
    output = Path(args.output)
    suffix = output.suffix.lower()
    names_a_file = suffix in image.SAVE_FORMATS or (suffix != "" and not output.is_dir())
    if single and names_a_file and suffix not in image.SAVE_FORMATS:
        image.check_output_path(output)  # one line: the unknown extension
    return single and names_a_file


def _config(args: argparse.Namespace) -> StyleConfig:
    """The run's settings, checked by the library's own rules (reworded as options)."""
    masked = bool(args.mask or args.mask_labels)
    try:
        config = config_from_args(args)
        config.check_style_count(len(args.style))
        _check_mask_count(args)
        # A sweep of style losses: each loss's settings obey the rules.
        each = [config.replace(style_loss=loss) for loss in style_losses(args) or ()] or [config]
        untiled = args.tile is None and config.tile is None
        if untiled and all(c.untileable(masked) is None for c in each):
            config = config.replace(tile="auto")  # tile what would not fit, rather than refuse
        reasons = [c.unmaskable() for c in each] if masked else []
        reason = next((r for r in reasons if r is not None), None)
    except ValueError as e:
        raise InputError(reword(str(e))) from None
    if style_masks(args) is not None and not masked:
        raise InputError(
            "--style-mask chooses a style's part for a content region: give --mask or --mask-labels"
        )
    if reason is not None:
        raise InputError(reword(reason))
    return config


def _check_mask_count(args: argparse.Namespace) -> None:
    """One ``--mask`` per ``--style`` (a label image's regions are counted when it is read)."""
    if args.mask and len(args.mask) != len(args.style):
        raise InputError(
            f"{len(args.mask)} mask regions for {len(args.style)} --style images: "
            "give one style per region"
        )


def _metadata(args: argparse.Namespace, config: StyleConfig, weights_path: Path) -> dict:
    """Provenance stored in each PNG result (and a checkpoint's settings)."""
    return {
        "command": args.argv,
        "config": dataclasses.asdict(config),
        "max_dim": args.max_dim,
        "weights_md5": weights.md5sum(weights_path),
        "style": [str(s) for s in args.style],
        "mask": args.mask,
        "mask_labels": args.mask_labels,
        "style_mask": style_masks(args),
    }
