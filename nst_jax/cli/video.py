"""``nst-jax video IN --style S -o OUT``: a clip stylised frame by frame with temporal
consistency (:mod:`nst_jax.video`).

IN is a video file or a folder of frames; OUT a video (``.mp4``, ``.mov``, ``.mkv``,
``.m4v``) or a folder of frames. A video's frames are made in ``OUT.frames/`` beside it and
kept (a run continues from them with ``--resume``); the video is encoded from them at the
end, at IN's frame rate (or ``--fps``), with IN's audio track where it has one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from nst_jax.cli import loading, outputs, preflight
from nst_jax.cli.options import DEFAULT_MAX_DIM, add_config_options, config_from_args, reword
from nst_jax.cli.watch import RunInterruptedError
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError, shown
from nst_jax.files import image, weights
from nst_jax.video import flow, frames
from nst_jax.video.flow import METHODS
from nst_jax.video.settings import TEMPORAL_WEIGHT, VideoSettings, check_offsets


def flow_offsets(text: str) -> tuple[int, ...]:
    """``--flow-offsets``: comma-separated distinct positive integers holding 1."""
    try:
        return check_offsets([int(part) for part in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected distinct positive integers holding 1 (such as 1,2,4), got {text!r}"
        ) from None


def add_parser(sub: Any) -> None:
    """The ``video`` command's options (the style settings are ``stylize``'s)."""
    from nst_jax.cli import values

    p = sub.add_parser(
        "video",
        help="stylise a video with temporal consistency",
        description="Stylise each frame of IN with the style of STYLE, held to the previous "
        "stylised frames by optical flow (Ruder et al. 2016).",
    )
    p.add_argument("input", metavar="IN", help="a video file or a folder of frames")
    p.add_argument("--style", "-s", action="append", metavar="STYLE", help="style image")
    p.set_defaults(per_style=None)  # --style-scale is then every style's
    p.add_argument("-o", "--output", metavar="OUT", help="a video file or a folder of frames")
    p.add_argument("--max-dim", type=values.positive_int, help="longest side of the frames")
    p.add_argument("--fps", type=values.positive, help="frame rate of OUT (default: IN's, 24)")
    p.add_argument("--flow", choices=METHODS, default="dis", help="optical flow (default dis)")
    p.add_argument(
        "--flow-offsets",
        type=flow_offsets,
        default=(1,),
        metavar="J[,J...]",
        help="earlier frames each frame is held to: 1 (default) or a long-term set like 1,2,4",
    )
    p.add_argument(
        "--temporal-weight",
        type=values.non_negative,
        default=TEMPORAL_WEIGHT,
        metavar="W",
        help=f"weight of the temporal loss; 0 turns it off (default {TEMPORAL_WEIGHT:.4g})",
    )
    p.add_argument("--resume", action="store_true", help="continue a killed run's frames")
    p.add_argument("--force", action="store_true", help="start over, replacing OUT")
    p.add_argument("--weights", metavar="PATH", help="VGG19 weights file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="log the command's phases")
    add_config_options(p)


def cmd_video(args: argparse.Namespace) -> int:
    """The ``video`` command; returns the exit status."""
    from nst_jax.video import job

    if not args.style or not args.output:
        raise InputError("IN, --style and -o are required")
    args.signals.phase("checking settings")
    preflight.check_backend()
    flow.require()
    config = _config(args)
    settings = VideoSettings(args.temporal_weight, args.flow_offsets, args.flow)
    max_dim = args.max_dim or DEFAULT_MAX_DIM
    clip = frames.probe(args.input)
    shape = (*image.scaled_shape(*clip.size, max_dim), 3)
    loading.check_size(clip.path, shape, config, max_dim)
    out, folder = _places(args, clip)
    if out is not None:
        frames.ffmpeg()  # installed, before the run rather than after it
    weights_path = weights.find_weights(args.weights)
    loading.planned_styles(args.style, config, max_dim, image.MAX_PIXELS)
    styles = loading.load_styles(args.style, config, max_dim, image.MAX_PIXELS)
    record = _record(args, clip, config, settings, max_dim, weights_path)
    start = job.check_folder(folder, record, args.resume, args.force)
    if out is not None and out.exists() and not args.force:
        raise InputError(f"{shown(out)}: exists; --force replaces it")
    args.signals.phase("loading weights")
    params = weights.load_vgg19(weights_path)
    if args.force:
        job.start_over(folder)
    summary = _run(args, params, clip, styles, config, settings, folder, record, start, max_dim)
    if summary is None or isinstance(summary, int):
        return summary or 0
    if out is not None:
        fps = args.fps or clip.fps or frames.DEFAULT_FPS
        audio = clip.path if clip.audio else None
        frames.write_video(folder, clip.count, fps, out, audio)
    _report(summary, out or folder)
    return args.signals.status() or 0


def _config(args: argparse.Namespace) -> StyleConfig:
    """The style settings; those a frame loop cannot honour are refused in one line."""
    try:
        config = config_from_args(args)
        config.check_style_count(len(args.style))
    except ValueError as e:
        raise InputError(reword(str(e))) from None
    unsupported = {
        "--scales": config.scales != 1,
        "--tile": config.tile is not None,
        "--preserve-color": config.preserve_color != "none",
        "a sweep": config.sweep_size is not None,
        "--init other than content or noise": config.init not in ("content", "noise"),
        "--tol": config.tol is not None,
        "--average": config.average is not None,
    }
    refused = [name for name, used in unsupported.items() if used]
    if refused:
        raise InputError(f"video does not support {', '.join(refused)}")
    if len(args.style) > 1 and config.style_blend is None:
        raise InputError("video takes one style, or several blended with --style-blend")
    return config


def _places(args, clip: frames.Clip) -> tuple[Path | None, Path]:
    """``(video or None, frames folder)`` of OUT, checked against IN before any work."""
    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix in frames.VIDEO_SUFFIXES and not out.is_dir():
        video, folder = out, out.with_name(out.name + ".frames")
    elif suffix == "" or out.is_dir():
        video, folder = None, out
    else:
        raise InputError(
            f"{shown(out)}: OUT is a folder of frames or a video "
            f"({', '.join(frames.VIDEO_SUFFIXES)})"
        )
    source = clip.path.resolve()
    for path in filter(None, (video, folder)):
        same = path.exists() and os.path.samefile(path, clip.path)  # links, case-folding
        if same or path.resolve() == source:
            raise InputError(f"{shown(path)}: OUT is IN; inputs are never replaced")
        if clip.frames is not None and source in path.resolve().parents:
            raise InputError(f"{shown(path)}: OUT lies inside the frames folder IN")
    inputs = [(clip.path, "IN"), *((Path(s), "--style") for s in args.style)]
    planned = [outputs.Output(video, "the video")] if video is not None else []
    outputs.check_outputs(planned, inputs, force=True)
    outputs.check_folder(folder, "the frames")
    return video, folder


def _record(args, clip, config, settings: VideoSettings, max_dim, weights_path) -> dict:
    """What the frames depend on (``OUT/.nst-jax/video.json``): a run continues only on
    the same record."""
    import jax

    from nst_jax.cli import checkpoint
    from nst_jax.video import job

    styles = [checkpoint.sha256(style) for style in args.style]
    return {
        "version": job.RECORD_VERSION,
        "backend": jax.default_backend(),  # another backend rounds differently
        "clip": {"path": str(clip.path.resolve()), "frames": clip.count, "size": clip.size},
        "config": dataclasses.asdict(config),
        "video": settings._asdict(),
        "max_dim": max_dim,
        "styles_sha256": styles,
        "weights_md5": weights.md5sum(weights_path),
    }


def _run(args, params, clip, styles, config, settings, folder, record, start, max_dim):
    """The frame loop with a progress bar; a signal stops it after the current step."""
    from tqdm import tqdm

    from nst_jax.video import job

    total = (clip.count - start) * config.steps
    bar = tqdm(total=total, unit="step", disable=args.quiet, file=sys.stderr, leave=False)

    def tick() -> None:
        bar.update(1)
        if args.signals.received is not None:
            raise RunInterruptedError(
                args.signals.received,
                f"the finished frames are kept in {folder}; rerun with --resume to continue",
            )

    def on_frame(result) -> None:
        bar.set_postfix_str(f"frame {result.index + 1}/{clip.count}", refresh=False)

    args.signals.phase("running")
    args.signals.own_outputs()
    style = styles[0] if len(styles) == 1 else styles
    try:
        return job.run_job(
            params, clip, style, config, settings, folder, record, start, max_dim, tick, on_frame
        )
    except RunInterruptedError as e:
        bar.close()
        print(f"nst-jax: {e}", file=sys.stderr)
        return e.exit_status
    finally:
        bar.close()


def _report(summary, out: Path) -> None:
    terms = ", ".join(f"{name} {value:.4g}" for name, value in summary.terms.items())
    timing = ", ".join(f"{name} {value:.3f} s" for name, value in summary.seconds.items())
    print(
        f"{summary.frames} frames -> {out}\nwarping error {summary.warping_error:.6g} "
        f"(mean over consecutive frames); mean terms: {terms}"
        + (f"\nper frame: {timing}" if timing else "")
    )
