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

from nst_jax import compile_cache, image, multiscale, weights
from nst_jax.atomic import nearest_existing_parent
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError
from nst_jax.options import EXIT_INPUT, build_parser, config_from_args
from nst_jax.run import DivergedError, RunState


def _cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(image.read_provenance(args.path), indent=2, sort_keys=True))
    return 0


def _config_from_args(args: argparse.Namespace) -> StyleConfig:
    try:
        config = config_from_args(args)
    except ValueError as e:
        raise InputError(str(e)) from None
    if config.style_blend is not None and len(config.style_blend) != len(args.style):
        counts = f"{len(config.style_blend)} weights for {len(args.style)} --style images"
        raise InputError(f"--style-blend has {counts}")
    return config


class _Progress:
    """A tqdm bar over image-steps showing the current loss; timing for the closing line.

    Called with each chunk's :class:`RunState`; a step count that does not grow means the
    next batch has started.
    """

    def __init__(self, total: int, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", disable=quiet, file=sys.stderr, leave=False)
        self.start = time.perf_counter()
        self.first_chunk: tuple[int, float] | None = None  # (image-steps, time) incl. compile
        self.done = 0
        self.last_step = 0

    def __call__(self, state: RunState) -> None:
        steps = state.step - self.last_step if state.step > self.last_step else state.step
        self.last_step = state.step
        images = state.losses.shape[0]
        self.done += steps * images
        if self.first_chunk is None:
            self.first_chunk = (self.done, time.perf_counter())
        self.bar.set_postfix(loss=f"{float(state.losses[:, -1].mean()):.4g}", refresh=False)
        self.bar.update(steps * images)

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
    from nst_jax import batch

    if args.from_png:
        return main(image.read_provenance(args.from_png)["command"])
    if not args.content or not args.style or not args.output:
        raise InputError("CONTENT, --style and -o are required (or --from PNG)")
    config = _config_from_args(args)
    index, count = batch.init_distributed()
    sheet = _sheet_path(args.sheet, index, count) if args.sheet else None
    work = batch.prepare(
        args.content,
        args.style,
        config,
        args.max_dim,
        args.batch_size,
        index,
        count,
        max_pixels=args.max_pixels,
    )
    outputs = batch.output_paths(work.jobs, args.output, f".{args.format}")
    _refuse_overwriting_inputs(outputs, args)
    watcher = _watcher(args, work, outputs)
    if work.jobs:
        status = _stylize_jobs(args, work, outputs, watcher, sheet)
        if status:
            return status
    for error in work.errors:
        print(f"nst-jax: error: {error}", file=sys.stderr)
    return EXIT_INPUT if work.errors else 0


def _stylize_jobs(args: argparse.Namespace, work, outputs, watcher, sheet) -> int:
    """Load weights, check memory, run every batch, write the sheet; the exit status."""
    from nst_jax import batch, watch

    weights_path = weights.find_weights(args.weights)
    cache = compile_cache.resolve(args.compile_cache)
    if cache is not None:
        compile_cache.enable(cache)
    params = weights.load_vgg19(weights_path)
    config = _check_memory(work, work.config, args.memory_limit)
    work = dataclasses.replace(work, config=config)
    metadata = {
        "command": args.argv,
        "config": dataclasses.asdict(config),
        "max_dim": args.max_dim,
        "weights_md5": weights.md5sum(weights_path),
        "style": [str(s) for s in args.style],
    }
    steps = [multiscale.total_steps(*work.contents[j.content].shape[:2], config) for j in work.jobs]
    progress = _Progress(sum(steps), args.quiet)
    options = {"on_chunk": progress}
    if watcher is not None:
        watcher.meta = batch.job_metadata(work.jobs[0], metadata)
        options = _watch_options(args, watcher, progress)
    thumbnails = []
    try:
        for job, result in batch.run(work, outputs, params=params, metadata=metadata, **options):
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
    return 0


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


def _watch_options(args: argparse.Namespace, watcher, progress) -> dict:
    """``stylize`` options of a watched run: progress and the watcher on each chunk, and the
    checkpoint to resume from."""
    from nst_jax import checkpoint

    def on_chunk(state: RunState) -> None:
        progress(state)
        watcher(state)

    options = {"on_chunk": on_chunk}
    if args.resume:
        saved, meta = checkpoint.load(watcher.checkpoint_dir)
        checkpoint.check_compatible(meta, watcher.meta, watcher.checkpoint_dir)
        watcher.last_step, watcher.final_state = saved.step, saved
        progress.last_step = saved.step
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


COMMANDS = {
    ("stylize", None): _cmd_stylize,
    ("info", None): _cmd_info,
    ("weights", "fetch"): _cmd_weights_fetch,
    ("weights", "convert"): _cmd_weights_convert,
    ("weights", "info"): _cmd_weights_info,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nst-jax``; returns the exit status."""
    from PIL import Image

    from nst_jax import process

    process.configure_for_program()
    # The CLI's own pixel limit (--max-pixels) is the one that counts, checked per file.
    Image.MAX_IMAGE_PIXELS = None
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # stored in outputs' provenance, for --from
    command = COMMANDS[(args.command, getattr(args, "weights_command", None))]
    try:
        return command(args)
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
