"""``nst-jax stylize`` of one result: checkpoints, ``--resume``, previews, the log, the plot.

The order keeps a user's files safe and faults cheap: every path the run will write is
checked, then the memory the image needs (from its header), and only then are images loaded
and the work done. A signal once the run owns its output saves the image and a checkpoint.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import numpy as np

from nst_jax.cli import checkpoint, loading, outputs, preflight, watch
from nst_jax.cli.options import style_masks
from nst_jax.cli.progress import Progress
from nst_jax.config import INITS, StyleConfig
from nst_jax.errors import InputError
from nst_jax.files import image, weights
from nst_jax.run import multiscale
from nst_jax.run.state import DivergedError, RunState
from nst_jax.run.stylize import stylize


def run(args: argparse.Namespace, config: StyleConfig, weights_path: Path, meta: dict) -> int:
    """The single-result command; returns the exit status."""
    content, result = Path(args.content[0]), Path(args.output)
    args.signals.phase("checking outputs")
    shape = _check_outputs(args, config, content, result, weights_path)
    preflight.check_chosen_cache(args)
    args.signals.phase("checking memory")
    if shape is not None:
        loading.check_size(content, shape, config, args.max_dim)
        config = preflight.check_memory([(content, 1, *shape)], config, args.memory_limit)
        styles = loading.planned_styles(args.style, config, args.max_dim, args.max_pixels)
        preflight.check_style_memory(styles, [(content, 1, *shape)], config, args.memory_limit)
    preflight.enable_cache(args)
    args.signals.phase("loading images")
    images = _load(args, config, content)
    args.signals.phase("loading weights")
    params = weights.load_vgg19(weights_path)
    meta = {**meta, "content": str(content), "setting": {}}
    roles = _input_roles(args, content, config.init)
    meta["sha256"] = {name: checkpoint.sha256(path) for name, path in roles}
    return _stylize(args, config, images, params, meta, result)


def _check_outputs(args, config, content: Path, result: Path, weights_path) -> tuple | None:
    """Check the result and the run's own files (checkpoint, previews, log, plot,
    animation) against the inputs and each other; the content's shape from its header."""
    watch.check_extras(_path(args.plot), _path(args.animate), args.save_every)
    image.check_output_path(result)
    planned = [outputs.Output(result, "-o", True)]
    if args.sheet:
        planned.append(outputs.Output(image.check_output_path(args.sheet), "--sheet"))
    size = image.probe_size(content)
    shape = None if size is None else image.scaled_shape(*size, args.max_dim)
    if shape is not None:
        steps = multiscale.scale_steps(*shape, config)
        planned += _own_outputs(args, result, steps, config)
    inputs = [(content, "content"), *loading.input_paths(args, config, weights_path)]
    outputs.check_outputs(planned, inputs, force=args.force, resume=args.resume)
    if shape is not None and min(shape) < 1:
        shape = None
    return shape


def _own_outputs(args, result: Path, steps: list[int], config) -> list:
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


def _load(args, config: StyleConfig, content: Path) -> dict:
    """The run's images, each fault one line naming its file."""
    pixels = image.load(content, args.max_dim, args.max_pixels)
    loading.check_size(content, pixels.shape, config, args.max_dim)
    styles = loading.load_styles(args.style, config, args.max_dim, args.max_pixels)
    regions = loading.load_regions(args.mask, args.mask_labels, len(args.style), args.max_pixels)
    own = loading.load_style_masks(style_masks(args), args.max_pixels)
    loading.check_init(config, args.max_pixels)
    return {"content": pixels, "styles": styles, "masks": regions, "style_masks": own}


def _input_roles(args, content: Path, init: str) -> list[tuple[str, Path]]:
    """Every input file with its role and rank (``--style #2``, ``--mask #1``,
    ``--style-mask #2``): a checkpoint keyed so tells a file moved to another role or rank
    from the same file where it was."""
    roles = [("content", content)]
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


def _stylize(args, config: StyleConfig, images: dict, params, meta: dict, result: Path) -> int:
    """Run with the watcher on every chunk, write the result; the exit status."""
    content = images["content"]
    total = multiscale.total_steps(*content.shape[:2], config)
    progress = Progress(total, args.quiet)
    watcher = _watcher(args, result, meta)
    options = _watch_options(args, watcher, progress, total)
    if config.tile is not None:
        options["on_tile"] = progress.tile
    masks = images["masks"]
    style = images["styles"] if masks is not None or config.style_blend else images["styles"][0]
    args.signals.phase("running")
    try:
        masks, own = _stack(masks), images["style_masks"]
        done = stylize(
            content, style, params=params, config=config, masks=masks, style_masks=own, **options
        )
    except watch.RunInterruptedError as e:
        progress.bar.close()
        print(f"nst-jax: {e}", file=sys.stderr)
        return e.exit_status
    except DivergedError as e:
        last = watcher.last_checkpoint or "none"
        raise InputError(f"{e}; last good checkpoint: {last}") from None
    except ValueError as e:
        if "resume" not in options:
            raise
        raise InputError(f"{watcher.checkpoint_dir}: does not fit this run ({e})") from None
    image.save(result, done.image, metadata=meta, replace=args.force or args.resume)
    watcher.finish(watcher.final_state, _path(args.plot))
    if args.sheet:
        outputs.write_sheet(args.sheet, [result], 1)
    print(f"{progress.summary(1, total)} -> {result}")
    return ended(args)


def ended(args) -> int:
    """0, or the status of a signal that came after the last step (the results are
    written: the line says so)."""
    if args.signals.status() is None:
        return 0
    name = signal.Signals(args.signals.received).name
    print(f"nst-jax: {name} after the last step: every result is written", file=sys.stderr)
    return args.signals.status()


def _stack(masks):
    return None if masks is None else np.stack(masks)


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _watcher(args, result: Path, meta: dict) -> watch.Watcher:
    """The hook of a single-result run (so a signal always saves the image and a
    checkpoint). Its checkpoints record every input's SHA-256, so ``--resume`` notices a
    replaced file."""
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
