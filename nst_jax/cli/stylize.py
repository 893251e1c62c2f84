"""``nst-jax stylize``: the options parsed into one request, then one result
(:func:`nst_jax.session.run_single`), a job of many (:func:`nst_jax.session.run_job_request`)
or a trained model's pass (:func:`nst_jax.session.run_model`), reported.

Exit status: 0 when every result is made, 3 when a job finished but some inputs failed, 2
when refused before any work, 130/143 on a signal (what was written is kept).
"""

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
    add_styles,
    config_from_args,
    given,
    reword,
    style_losses,
    style_masks,
)
from nst_jax.config import StyleConfig
from nst_jax.dataset.plan import JobSettings
from nst_jax.errors import InputError, shown
from nst_jax.files import compile_cache

EXIT_SOME_FAILED = 3
WATCH = ("checkpoint_every", "resume", "save_every", "log", "plot", "animate")


def add_parser(sub: Any) -> None:
    """The ``stylize`` command's options."""
    p = sub.add_parser(
        "stylize",
        help="stylise an image",
        description="Optimise CONTENT to take on the style of STYLE (Gatys et al.).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("content", metavar="CONTENT", nargs="*", help="content images or folders")
    add_styles(p)
    masks = p.add_mutually_exclusive_group()
    masks.add_argument("--mask", action="append", metavar="PNG",
                       help="spatial control: the content region (white; grey is partial) of "
                       "the --style of the same rank; one --mask per --style")  # fmt: skip
    masks.add_argument("--mask-labels", metavar="PNG",
                       help="spatial control from one label image: each colour but black "
                       "is a region, ordered by (R, G, B), the k-th for --style k")  # fmt: skip
    add_common(p, "a .png/.jpg/.webp file for one result, else a folder (results keep names)")
    p.add_argument("--sheet", metavar="PATH", help="also write a labelled grid of all results")
    p.add_argument("--format", choices=("png", "jpg", "webp"),
                   default=JobSettings.ext.lstrip("."), help="a job's results' format")  # fmt: skip
    _add_jobs(p)
    add_config_options(p)
    _add_resources(p)
    _add_watch(p)
    models = p.add_argument_group("feed-forward models (nst-jax train)")
    models.add_argument("--model", metavar="MODEL",
                        help="apply a trained or imported model, no optimisation")  # fmt: skip
    models.add_argument(
        "--alpha", type=values.number,
        help="adain, arbitrary: content (0) to style (1); default 1",
    )  # fmt: skip
    models.add_argument("--style-index", type=int, action="append", metavar="I",
                        help="magenta26: a built-in style (repeat for several)")  # fmt: skip


def _add_jobs(p: argparse.ArgumentParser) -> None:
    """Options of a job of many results: JobSettings' fields, and how it runs."""
    g = p.add_argument_group("jobs of many results (continued by rerunning the command)")
    add_field_options(g, JobSettings)
    g.add_argument("--files-from", metavar="LIST", help="content files, one per line")
    g.add_argument("--styles-from", metavar="LIST", help="style files, one per line")
    g.add_argument("--retry-failed", action="store_true",
                   help="run the items that failed before again (an input changed since is "
                   "retried anyway)")  # fmt: skip
    g.add_argument("--shard", type=values.shard, metavar="I/N", help="run part I of N of the job")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run the batches here, or as Ray tasks (nst_jax[ray])")  # fmt: skip
    g.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (default: local)")
    g.add_argument("--ray-workers", type=values.positive_int, metavar="N",
                   help="Ray actors running batches (default: one per GPU, else one)")  # fmt: skip
    g.add_argument("--workers", type=values.positive_int, default=2,
                   help="threads decoding images ahead of the run")  # fmt: skip


def _add_resources(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("resources")
    r.add_argument("--memory-limit", type=values.positive, metavar="GIB",
                   help="refuse runs estimated to need more, or tile them (default: the "
                   "memory available)")  # fmt: skip
    r.add_argument("--compile-cache", metavar="DIR|off",
                   help="persistent compilation cache; a second run on the same shapes skips "
                   f"compiling (default: {compile_cache.default_dir()}, or "
                   "$NST_JAX_COMPILE_CACHE)")  # fmt: skip
    add_max_pixels(r)


def _add_watch(p: argparse.ArgumentParser) -> None:
    """Options of long single-image runs: checkpoints, resume, previews, logs, provenance."""
    g = p.add_argument_group("long runs (one result at a time)")
    g.add_argument("--checkpoint-every", type=values.positive_int, metavar="N",
                   help="write OUT.ckpt/ every N steps (and on exit)")  # fmt: skip
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT.ckpt/ (none there: a new run, so one command starts and continues)",
    )
    g.add_argument("--save-every", type=values.positive_int, metavar="N",
                   help="write OUT_0100.png ... every N steps")  # fmt: skip
    g.add_argument("--log", metavar="PATH", help="JSON lines: step, each loss term, seconds")
    g.add_argument("--plot", metavar="PATH", help="plot of the loss terms (needs matplotlib)")
    g.add_argument("--animate", metavar="PATH",
                   help=".gif (or .mp4, imageio-ffmpeg) of the --save-every images")  # fmt: skip
    g.add_argument("--from", dest="from_png", metavar="PNG",
                   help="replay the settings (and, unless given, the inputs) stored in "
                   "a PNG written by nst-jax; options given here override them")  # fmt: skip
    g.add_argument("--force", action="store_true", help="replace existing outputs (never an input)")


def request_from_args(args: argparse.Namespace, argv: list[str]):
    """The one :class:`~nst_jax.session.StylizeRequest` the options describe (``--from``'s
    record filling what the command line leaves out), and the replay's ignored words."""
    from nst_jax.session import StylizeRequest, checked, outputs, plugins
    from nst_jax.session.provenance import replay

    outputs.check_resume_or_force(args.resume, args.force)  # before a record is read
    stored = replay(args.from_png) if args.from_png else None
    if stored is not None and not args.output:
        raise InputError(f"{args.from_png}: --from replays settings; give -o for the result")
    styles = tuple(args.style or (stored.styles if stored else ()))
    own_masks = style_masks(args)
    if stored is not None and not args.style:
        own_masks = stored.style_masks
    masks, labels = tuple(args.mask or ()) or None, args.mask_labels
    if stored is not None and not masks and not labels:
        masks, labels = stored.masks, stored.mask_labels
    job_given = given(args, JobSettings)
    if stored is not None and stored.max_dim and "max_dim" not in job_given:
        job_given["max_dim"] = stored.max_dim
    try:
        config = config_from_args(args, stored.config if stored else None)
        job = JobSettings(**job_given, ext=f".{args.format}",
                          buckets="fixed" if args.size else "grid")  # fmt: skip
    except ValueError as e:
        raise InputError(reword(str(e))) from None
    request = StylizeRequest(
        contents=tuple(args.content or (stored.contents if stored else ())), styles=styles,
        output=args.output, config=config, job=job, files_from=args.files_from,
        styles_from=args.styles_from, retry_failed=args.retry_failed,
        style_losses=style_losses(args), masks=masks, mask_labels=labels,
        style_masks=own_masks, weights=args.weights, max_pixels=args.max_pixels,
        force=args.force, sheet=args.sheet, memory_limit=args.memory_limit,
        compile_cache=args.compile_cache, shard=args.shard, engine=args.engine,
        ray_address=args.ray_address, ray_workers=args.ray_workers, workers=args.workers,
        progress=not args.quiet, command=tuple(argv), plugins=plugins.loaded(),
        **{name: getattr(args, name) for name in WATCH},
    )  # fmt: skip
    if args.model is not None:
        return request, (stored.ignored if stored else ())
    if own_masks is not None and not (masks or labels):
        raise InputError(
            "--style-mask chooses a style's part for a content region: give --mask or --mask-labels"
        )
    return checked(request), (stored.ignored if stored else ())


def cmd_stylize(args: argparse.Namespace, argv: list[str], control) -> int:
    """The ``stylize`` command; returns the exit status."""
    from nst_jax import session

    if args.model is not None:
        return _cmd_model(args, argv, control)
    if args.style_index or args.alpha is not None:
        raise InputError("--style-index and --alpha apply a model: give --model")
    control.phase("checking settings")
    session.process.check_backend()
    request, ignored = request_from_args(args, argv)
    if ignored:
        print(f"nst-jax: {shown(args.from_png)}: not replayed: {shown(', '.join(ignored))}",
              file=sys.stderr)  # fmt: skip
    if session.is_single(request):
        return _single(request, control)
    return _job(request, control)


def _single(request, control) -> int:
    from nst_jax import session

    outcome = session.run_single(request, control)
    if outcome.stopped is not None:
        return control.interrupted(
            f"at step {outcome.stopped}: image saved to {outcome.output}, checkpoint to "
            f"{outcome.checkpoint}; add --resume to continue"
        )
    print(f"{outcome.summary} -> {outcome.output}")
    return control.ended()


def _job(request, control) -> int:
    from nst_jax import session

    try:
        outcome = session.run_job_request(request, control, _report_failure)
    except session.Stopped as e:
        return control.interrupted(str(e))
    return _job_ended(outcome, request.output, control)


def _job_ended(outcome, output: str, control) -> int:
    """The closing line; the status of this run's own items (a shard's, not the job's)."""
    whole = outcome.whole
    print(f"{outcome.line}; the job: {whole['done']} done, {whole['failed']} failed, "
          f"{whole['pending']} to do -> {output}")  # fmt: skip
    return control.ended() or (EXIT_SOME_FAILED if outcome.own["failed"] else 0)


def _report_failure(outcome) -> None:
    if outcome.status == "failed":
        # The record keeps the library's words; the line gives the command's options.
        print(f"nst-jax: {shown(outcome.item.input)}: {reword(outcome.reason)}", file=sys.stderr)


def _cmd_model(args: argparse.Namespace, argv: list[str], control) -> int:
    """``stylize --model``: optimisation's settings are refused, the rest applied."""
    from nst_jax import session

    refused = [
        "--" + name.replace("_", "-")
        for name in [*given(args, StyleConfig), *WATCH]
        if name not in ("style_blend", "seed") and getattr(args, name, None)
    ]
    refused += [o for o, v in (("--mask", args.mask), ("--mask-labels", args.mask_labels)) if v]
    if refused:
        raise InputError(
            f"{', '.join(refused)}: optimisation's settings; --model stylises in one pass"
        )
    if not (args.content or args.files_from) or not args.output:
        raise InputError("CONTENT and -o are required")
    request, _ = request_from_args(args, argv)
    model = session.ModelRequest(args.model, request, args.alpha, tuple(args.style_index or ()))
    try:
        outcome = session.run_model(model, control, _report_failure)
    except session.Stopped as e:
        return control.interrupted(str(e))
    if outcome.job is None:
        print(outcome.line)
        return 0
    return _job_ended(outcome.job, request.output, control)
