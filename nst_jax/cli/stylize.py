"""``nst-jax stylize``: plan every output and check it, check memory, then run the jobs.

The order is what keeps a user's files safe and faults cheap: settings and the weights' path
are checked first, then every path the run will write (before any image is decoded), then the
memory the largest batch needs (from the images' headers, before any image is resized), and
only then are images loaded and the work done.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from nst_jax.cli import checkpoint, jobs, outputs, preflight, watch
from nst_jax.cli.options import (
    DEFAULT_MAX_DIM,
    config_from_args,
    reword,
    style_losses,
    style_masks,
)
from nst_jax.cli.progress import Progress
from nst_jax.config import INITS, StyleConfig
from nst_jax.errors import InputError, OutputError
from nst_jax.files import compile_cache, image, weights
from nst_jax.run import multiscale
from nst_jax.run.state import DivergedError, RunState

WATCH_OPTIONS = ("checkpoint_every", "resume", "save_every", "log", "plot", "animate")


def _config(args: argparse.Namespace) -> StyleConfig:
    """The run's settings, checked by the library's own rules (reworded as options)."""
    masked = bool(args.mask or args.mask_labels)
    try:
        config = config_from_args(args)
        config.check_style_count(len(args.style))
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


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _single_result_outputs(args, result: Path, steps: list[int], config) -> list:
    """The files a single-result run writes besides its result: checkpoint, previews, log,
    plot, animation (all the run's own: ``--resume`` may replace them)."""
    Out = outputs.Output  # noqa: N806
    planned = [Out(checkpoint.directory(result) / checkpoint.FILE, "the checkpoint", True)]
    if args.save_every:
        for step in watch.preview_steps(steps, config.steps_per_call, args.save_every):
            planned.append(Out(watch.preview_path(result, step), "--save-every", True))
    for option in ("log", "plot", "animate"):
        if getattr(args, option):
            planned.append(Out(Path(getattr(args, option)), f"--{option}", True))
    return planned


def _plan(args, config: StyleConfig, job_list, results: dict, sheet: Path | None, weights_path):
    """Check every planned output against the inputs and each other (before any work)."""
    single = len(job_list) == 1
    planned = [outputs.Output(path, "-o", single) for path in results.values()]
    if sheet is not None:
        planned.append(outputs.Output(sheet, "--sheet"))
    if single:
        size = image.probe_size(job_list[0].content)
        if size is not None:
            shape = image.scaled_shape(*size, args.max_dim)
            steps = multiscale.scale_steps(*shape, config)
            planned += _single_result_outputs(args, next(iter(results.values())), steps, config)
    inputs = [(job.content, "content") for job in job_list]
    inputs += [(Path(s), "--style") for s in args.style]
    inputs += [(Path(m), "--mask") for m in _mask_files(args)]
    inputs.append((weights_path, "--weights"))
    if config.init not in INITS:
        inputs.append((Path(config.init), "--init"))
    outputs.check_outputs(planned, inputs, force=args.force, resume=args.resume)
    cache = compile_cache.resolve(args.compile_cache)
    if cache is not None:
        try:
            outputs.check_folder(cache, "--compile-cache")
        except OutputError as e:
            if compile_cache.chosen(args.compile_cache):
                raise
            # The default cache only saves compile time: a run goes on without it.
            print(f"nst-jax: warning: no compilation cache: {e}", file=sys.stderr)
            return None
    return cache


def cmd_stylize(args: argparse.Namespace) -> int:
    """The ``stylize`` command; returns the exit status."""
    if args.from_png:
        from nst_jax.cli import provenance

        if not args.output:
            raise InputError(f"{args.from_png}: --from replays settings; give -o for the result")
        provenance.apply(args)
    if not args.content or not args.style or not args.output:
        raise InputError("CONTENT, --style and -o are required (or --from PNG and -o)")
    args.max_dim = args.max_dim or DEFAULT_MAX_DIM
    args.signals.phase("checking settings")
    preflight.check_backend()
    config = _config(args)
    weights_path = weights.find_weights(args.weights)
    index, count = jobs.init_distributed()
    # A label image's regions are counted when it is read (jobs.load checks them).
    regions = len(args.mask) if args.mask else len(args.style) if args.mask_labels else None
    planned = jobs.plan(
        args.content,
        args.style,
        config,
        index,
        count,
        regions=regions,
        style_losses=style_losses(args),
    )
    results = outputs.output_paths(planned, args.output, f".{args.format}")
    sheet = _sheet_path(args.sheet, index, count) if args.sheet else None
    asked = [name for name in WATCH_OPTIONS if getattr(args, name)]
    if len(planned) != 1 and asked:
        names = ", ".join("--" + name.replace("_", "-") for name in asked)
        raise InputError(f"{names}: one result at a time, and this run has {len(planned)}")
    if len(planned) == 1:
        watch.check_extras(_path(args.plot), _path(args.animate), args.save_every)
    args.signals.phase("checking outputs")
    cache = _plan(args, config, planned, results, sheet, weights_path)
    args.signals.phase("checking memory")
    shapes = jobs.planned_shapes(planned, config, args.max_dim, args.batch_size)
    config = preflight.check_memory(shapes, config, args.memory_limit)
    styles = jobs.planned_styles(args.style, config, args.max_dim, args.max_pixels)
    preflight.check_style_memory(styles, shapes, config, args.memory_limit)
    if cache is not None:
        compile_cache.enable(cache)
    args.signals.phase("loading images")
    work = jobs.load(
        planned,
        args.style,
        config,
        args.max_dim,
        args.batch_size,
        args.max_pixels,
        masks=args.mask,
        mask_labels=args.mask_labels,
        style_masks=style_masks(args),
    )
    if work.jobs:
        status = _run(args, work, results, sheet, weights_path)
        if status:
            return status
    for error in work.errors:
        print(f"nst-jax: error: {reword(error)}", file=sys.stderr)
    return 2 if work.errors else 0


def _input_roles(args, job, init: str) -> list[tuple[str, Path]]:
    """Every input file with its role and rank (``--style #2``, ``--mask #1``,
    ``--style-mask #2``): a checkpoint keyed so tells a file moved to another role or rank
    from the same file where it was."""
    roles = [("content", job.content)]
    roles += [(f"--style #{k}", Path(s)) for k, s in enumerate(args.style, start=1)]
    roles += [(f"--mask #{k}", Path(m)) for k, m in enumerate(args.mask or [], start=1)]
    if args.mask_labels:
        roles.append(("--mask-labels", Path(args.mask_labels)))
    for k, m in enumerate(style_masks(args) or [], start=1):
        if m is not None:
            roles.append((f"--style-mask #{k}", Path(m)))
    if init not in INITS:
        roles.append(("--init", Path(init)))
    return roles


def _mask_files(args) -> list[str]:
    """Every mask file the run reads (content regions, labels, styles' own regions)."""
    files = [*(args.mask or []), *([args.mask_labels] if args.mask_labels else [])]
    return files + [m for m in style_masks(args) or [] if m is not None]


def _sheet_path(path: str, process_index: int, process_count: int) -> Path:
    """The sheet's path; with several hosts each writes its own, ``NAME.hostI.EXT``."""
    sheet = image.check_output_path(path)
    return sheet.with_suffix(f".host{process_index}{sheet.suffix}") if process_count > 1 else sheet


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


def _run(args, work, results, sheet, weights_path) -> int:
    """Load weights, run every batch, write the sheet; the exit status."""
    args.signals.phase("loading weights")
    params = weights.load_vgg19(weights_path)
    metadata = _metadata(args, work.config, weights_path)
    steps = [
        multiscale.total_steps(*work.contents[j.content].shape[:2], work.config) for j in work.jobs
    ]
    progress = Progress(sum(steps), args.quiet)
    options, watcher = {"on_chunk": _guarded(progress, args.signals)}, None
    if len(work.jobs) == 1:
        watcher = _watcher(args, results[work.jobs[0]], work, metadata)
        options = _watch_options(args, watcher, progress, steps[0])
    if work.config.tile is not None:
        options["on_tile"] = progress.tile
    thumbnails = []
    args.signals.phase("running")
    try:
        replace = args.force or args.resume
        runs = jobs.run(work, results, params=params, metadata=metadata, replace=replace, **options)
        for job, result in runs:
            if sheet is not None:
                thumbnails.append((image.thumbnail(result, 192), job.name))
    except watch.RunInterruptedError as e:
        progress.bar.close()
        print(f"nst-jax: {e}", file=sys.stderr)
        return e.exit_status
    except DivergedError as e:
        last = watcher.last_checkpoint if watcher is not None else None
        raise InputError(f"{e}; last good checkpoint: {last or 'none'}") from None
    except ValueError as e:
        if "resume" not in options:
            raise
        raise InputError(f"{watcher.checkpoint_dir}: does not fit this run ({e})") from None
    if watcher is not None:
        watcher.finish(watcher.final_state, _path(args.plot))
    if sheet is not None:
        columns = min(len(thumbnails), len(work.styles) * len(jobs.settings(work.config)))
        images, labels = zip(*thumbnails, strict=True)
        image.save(sheet, image.contact_sheet(list(images), list(labels), columns))
    destination = next(iter(results.values())) if len(results) == 1 else Path(args.output)
    print(f"{progress.summary(len(work.jobs), max(steps))} -> {destination}")
    if args.signals.status() is not None:  # after the last chunk: the results are written
        name = signal.Signals(args.signals.received).name
        print(f"nst-jax: {name} after the last step: every result is written", file=sys.stderr)
        return args.signals.status()
    return 0


def _guarded(progress: Progress, signals) -> Callable[[RunState], None]:
    """The ``on_chunk`` hook of a run of many results: progress, and, after a signal, the
    end of the run at this chunk (the results of finished batches are written; this
    batch's are not begun)."""

    def on_chunk(state: RunState) -> None:
        signals.own_outputs()
        progress(state)
        if signals.received is not None:
            raise watch.RunInterruptedError(
                signals.received, f"at step {state.step}: the results written so far are kept"
            )

    return on_chunk


def _watcher(args, result: Path, work, metadata: dict) -> watch.Watcher:
    """The hook of a single-result run (so Ctrl-C always saves the image and a checkpoint).
    Its checkpoints record every input's SHA-256, so ``--resume`` notices a replaced file."""
    job = work.jobs[0]
    meta = jobs.job_metadata(job, metadata)
    roles = _input_roles(args, job, work.config.init)
    meta["sha256"] = {name: checkpoint.sha256(path) for name, path in roles}
    return watch.Watcher(
        output=result,
        meta=meta,
        signals=args.signals,
        checkpoint_every=args.checkpoint_every,
        save_every=args.save_every,
        log=_path(args.log),
        animate=_path(args.animate),
        append_log=args.resume,
    )


def _watch_options(args, watcher: watch.Watcher, progress: Progress, total: int) -> dict:
    """``stylize`` options of a watched run: progress and the watcher on each chunk, and the
    checkpoint to resume from (checked against this run before any work)."""

    def on_chunk(state: RunState) -> None:
        watcher.signals.own_outputs()
        progress(state)
        watcher(state)

    options = {"on_chunk": on_chunk}
    if args.resume:
        folder = watcher.checkpoint_dir
        saved, meta = checkpoint.load(folder)
        checkpoint.check_compatible(meta, watcher.meta, folder)
        if saved.step > total:
            raise InputError(
                f"{folder}: the checkpoint is at step {saved.step}, past this run's {total} "
                "steps; give --steps at least that"
            )
        watcher.last_step, watcher.final_state = saved.step, saved
        progress.last_step = saved.step
        options["resume"] = saved
    return options
