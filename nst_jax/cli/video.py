"""``nst-jax video IN --style S -o OUT``: the options parsed into one
:class:`~nst_jax.session.VideoRequest`, the clip stylised (:func:`nst_jax.session.run_video`)
and reported."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nst_jax.cli import values
from nst_jax.cli.options import (
    HelpFormatter,
    add_common,
    add_config_options,
    add_field_options,
    add_max_pixels,
    config_from_args,
    given,
    reword,
)
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError
from nst_jax.files import image
from nst_jax.video.settings import VideoSettings


def add_parser(sub: Any) -> None:
    """The ``video`` command's options (the style settings are ``stylize``'s)."""
    p = sub.add_parser(
        "video",
        help="stylise a video with temporal consistency",
        description="Stylise each frame of IN with the style of STYLE, held to the previous "
        "stylised frames by optical flow (Ruder et al. 2016).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="a video file or a folder of frames")
    p.add_argument("--style", "-s", action="append", metavar="STYLE", help="style image")
    p.set_defaults(per_style=None)  # --style-scale is then every style's
    add_common(p, "a video file or a folder of frames")
    p.add_argument("--max-dim", type=values.positive_int, default=image.DEFAULT_MAX_DIM,
                   help="longest side of the frames")  # fmt: skip
    add_max_pixels(p)
    p.add_argument("--fps", type=values.positive, help="frame rate of OUT (default: IN's, 24)")
    add_field_options(p.add_argument_group("video"), VideoSettings)
    p.add_argument("--resume", action="store_true", help="continue a killed run's frames")
    p.add_argument("--force", action="store_true", help="start over, replacing OUT")
    add_config_options(p)
    models = p.add_argument_group("feed-forward models (nst-jax train, nst-jax models)")
    models.add_argument("--model", metavar="MODEL",
                        help="each frame in one pass of a model (no optimisation)")  # fmt: skip
    models.add_argument("--alpha", type=values.number,
                        help="adain, arbitrary: content (0) to style (1); default 1")  # fmt: skip
    models.add_argument("--style-index", type=int, action="append", metavar="I",
                        help="magenta26: a built-in style (repeat for a blend)")  # fmt: skip


def cmd_video(args: argparse.Namespace, control) -> int:
    """The ``video`` command; returns the exit status."""
    from nst_jax import session
    from nst_jax.session import plugins

    if args.model is not None:
        _refuse_optimisation(args)
    elif not args.style or not args.output:
        raise InputError("IN, --style and -o are required")
    elif args.style_index or args.alpha is not None:
        raise InputError("--style-index and --alpha apply a model: give --model")
    if not args.output:
        raise InputError("-o is required")
    session.process.check_backend()
    try:
        request = session.VideoRequest(
            args.input, tuple(args.style or ()), args.output, config=config_from_args(args),
            settings=VideoSettings(**given(args, VideoSettings)), max_dim=args.max_dim,
            max_pixels=args.max_pixels,
            fps=args.fps, resume=args.resume, force=args.force, weights=args.weights,
            progress=not args.quiet, plugins=plugins.loaded(), model=args.model,
            style_index=tuple(args.style_index or ()), alpha=args.alpha,
        )  # fmt: skip
    except ValueError as e:
        raise InputError(reword(str(e))) from None
    run = session.run_model_video if args.model is not None else session.run_video
    outcome = run(request, control)
    summary = outcome.summary
    if summary is None:
        message = f"the finished frames are kept in {outcome.output}; rerun with --resume"
        return control.interrupted(message)
    timing = ", ".join(f"{name} {value:.3f} s" for name, value in summary.seconds.items())
    if args.model is not None:
        print(
            f"{summary.frames} frames -> {outcome.output}" + (f" ({timing} a frame)" * bool(timing))
        )
        return control.ended()
    terms = ", ".join(f"{name} {value:.4g}" for name, value in summary.terms.items())
    print(
        f"{summary.frames} frames -> {outcome.output}\nwarping error "
        f"{summary.warping_error:.6g} (mean over consecutive frames); mean terms: {terms}"
        + (f"\nper frame: {timing}" if timing else ""),
        file=sys.stdout,
    )
    return control.ended()


def _refuse_optimisation(args: argparse.Namespace) -> None:
    """With ``--model``, optimisation's and the flow's settings are refused (one line)."""
    refused = [
        "--" + name.replace("_", "-")
        for name in [*given(args, StyleConfig), *given(args, VideoSettings)]
        if name not in ("style_blend", "conv")
    ]
    if refused:
        raise InputError(f"{', '.join(refused)}: optimisation's settings; --model stylises "
                         "each frame in one pass")  # fmt: skip
