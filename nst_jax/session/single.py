"""One result of a stylisation by optimisation, watched: checkpoints, ``resume``, previews,
the log, the plot, and stopping when asked (what ``nst-jax stylize`` does for one result).

The order keeps a user's files safe and faults cheap: every path the run will write is
checked, then the memory the image needs (from its header), and only then are images loaded
and the work done. Stopped (``control.stop_requested()``), the run saves its image and a
checkpoint, and a later run with ``resume=True`` continues it to the same pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from nst_jax.config import StyleConfig
from nst_jax.core.targets import fit_masks
from nst_jax.dataset.plan import JobSettings
from nst_jax.errors import InputError
from nst_jax.events import DivergedError
from nst_jax.files import image, weights
from nst_jax.files.digest import sha256
from nst_jax.run import multiscale
from nst_jax.run.stylize import stylize
from nst_jax.session import checkpoint, inputs, outputs, process
from nst_jax.session.control import Control
from nst_jax.session.memory import check_style_memory, plan_memory
from nst_jax.session.request import StylizeRequest, checked, metadata
from nst_jax.session.watch import Watcher, check_extras, preview_path, preview_steps


class SingleOutcome(NamedTuple):
    """What a single-result run did.

    Attributes:
      output: the result's path (written, also when stopped).
      summary: the closing line (steps, time, rate).
      stopped: the step it stopped at when asked to stop, else ``None``.
      checkpoint: the checkpoint folder, when one was written.
      notes: the memory plan's and the cache's lines.
    """

    output: Path
    summary: str
    stopped: int | None
    checkpoint: Path | None
    notes: tuple[str, ...]


def run_single(request: StylizeRequest, control: Control | None = None) -> SingleOutcome:
    """Make ``request``'s one result (:func:`nst_jax.session.request.is_single`).

    Raises:
      InputError: a bad input, output or checkpoint, or a run that fits in no memory (one
        line); a divergence, naming the last good checkpoint.
    """
    control = control or Control()
    request = checked(request)
    check_no_job_options(request)
    content, result = Path(request.contents[0]), Path(request.output)
    network = inputs.network(request.config)
    weights_path = weights.find_weights(request.weights, network)
    meta = metadata(request, weights.md5sum(weights_path))
    control.phase("checking outputs")
    shape = _check_outputs(request, content, result, weights_path)
    process.check_chosen_cache(request.compile_cache)
    control.phase("checking memory")
    config, notes = request.config, []
    if shape is not None:
        inputs.check_size(content, shape, config, request.max_dim)
        plan = plan_memory([(content, 1, *shape)], config, request.memory_limit)
        config, notes = plan.config, list(plan.notes)
        styles = inputs.planned_styles(request.styles, config, request.max_dim, request.max_pixels)
        check_style_memory(styles, [(content, 1, *shape)], config, request.memory_limit)
    notes += [n for n in [process.enable_cache(request.compile_cache)] if n]
    for note in notes:
        control.note(note)
    control.phase("loading images")
    images = _load(request, config, content)
    control.phase("loading weights")
    params = weights.load_weights(weights_path, network)
    roles = inputs.input_roles(request, content)
    meta = {**meta, "content": str(content), "setting": {}}
    meta["sha256"] = {name: sha256(path) for name, path in roles}
    return _run(request, config, images, params, meta, control, tuple(notes))


# A job's settings and the options that set them: a single result honours none of them.
_JOB_OPTIONS = {"size": "--size", "fit": "--fit", "ext": "--format", "batch_size": "--batch-size",
                "styles_per_image": "--styles-per-image"}  # fmt: skip


def check_no_job_options(request: StylizeRequest) -> None:
    """Refuse, rather than drop, a job's options in a run of one result (``--size`` or
    ``--format`` would otherwise be silently not what the result is)."""
    default = JobSettings()
    given = [option for field, option in _JOB_OPTIONS.items()
             if getattr(request.job, field) != getattr(default, field)]  # fmt: skip
    given += [
        o for o, on in (("--shard", request.shard), ("--retry-failed", request.retry_failed)) if on
    ]
    if given:
        raise InputError(
            f"{given[0]}: a job's option; this run makes one result ({request.output})"
        )


def _check_outputs(request: StylizeRequest, content: Path, result: Path, weights_path):
    """Check the result and the run's own files (checkpoint, previews, log, plot,
    animation) against the inputs and each other; the content's shape from its header."""
    check_extras(_path(request.plot), _path(request.animate), request.save_every)
    image.check_output_path(result)
    # The result is the run's own only when there is a run to continue: resume with no
    # checkpoint starts afresh, and then an existing file at -o is not the run's.
    planned = [outputs.Output(result, "-o", resuming(request))]
    if request.sheet:
        planned.append(outputs.Output(image.check_output_path(request.sheet), "--sheet"))
    size = image.probe_size(content)
    shape = None if size is None else image.scaled_shape(*size, request.max_dim)
    if shape is not None:
        steps = multiscale.scale_steps(*shape, request.config)
        planned += _own_outputs(request, result, steps)
    reads = [(content, "content"), *inputs.input_paths(request, weights_path)]
    outputs.check_outputs(planned, reads, force=request.force, resume=request.resume)
    return None if shape is None or min(shape) < 1 else shape


def _previews(request: StylizeRequest, steps: list[int]) -> list[Path]:
    """The previews ``save_every`` writes when every scale runs its ``steps``."""
    if not request.save_every:
        return []
    ends = preview_steps(steps, request.config.steps_per_call, request.save_every)
    return [preview_path(Path(request.output), step) for step in ends]


def _own_outputs(request: StylizeRequest, result: Path, steps: list[int]) -> list:
    """The files a single-result run writes besides its result: checkpoint, previews, log,
    plot, animation (all the run's own: ``resume`` may replace them)."""
    Out = outputs.Output  # noqa: N806
    planned = [Out(checkpoint.directory(result) / checkpoint.FILE, "the checkpoint", True)]
    planned += [Out(path, "--save-every", True) for path in _previews(request, steps)]
    for option in ("log", "plot", "animate"):
        if getattr(request, option):
            planned.append(Out(Path(getattr(request, option)), f"--{option}", True))
    return planned


def _load(request: StylizeRequest, config: StyleConfig, content: Path) -> dict:
    """The run's images, each fault one line naming its file."""
    pixels = image.load(content, request.max_dim, request.max_pixels)
    inputs.check_size(content, pixels.shape, config, request.max_dim)
    styles = inputs.load_styles(request.styles, config, request.max_dim, request.max_pixels)
    regions = inputs.load_regions(
        request.masks, request.mask_labels, len(request.styles), request.max_pixels
    )
    own = inputs.load_style_masks(request.style_masks, request.max_pixels)
    inputs.check_init(config, request.max_pixels)
    return {"content": pixels, "styles": styles, "masks": regions, "style_masks": own}


def _run(request, config, images: dict, params, meta: dict, control: Control, notes):
    """Run with the watcher on every chunk, write the result."""
    result_path = Path(request.output)
    content = images["content"]
    steps = multiscale.scale_steps(*content.shape[:2], request.config)
    watcher, saved = _watcher(request, meta, control, frozenset(_previews(request, steps)))
    total = multiscale.total_steps(*content.shape[:2], config)
    if saved is not None and saved.step > total:
        raise InputError(
            f"{watcher.checkpoint.folder}: the checkpoint is at step {saved.step}, past this "
            f"run's {total} steps; give steps={saved.step} or more"
        )

    def on_event(event) -> None:
        control.own_outputs()
        watcher(event)

    masks = images["masks"]
    style = images["styles"] if masks is not None or config.style_blend else images["styles"][0]
    control.phase("running")
    try:
        done = stylize(
            content, style, params=params, config=config, on_event=on_event, resume=saved,
            masks=None if masks is None else fit_masks(masks, *content.shape[:2]),
            style_masks=images["style_masks"],
            on_tile=lambda done, count: watcher.bar and watcher.bar.tile(done, count),
        )  # fmt: skip
    except DivergedError as e:
        last = watcher.last_checkpoint or "none"
        raise InputError(f"{e}; last good checkpoint: {last}") from None
    except ValueError as e:
        if saved is None:
            raise
        raise InputError(f"{watcher.checkpoint.folder}: does not fit this run ({e})") from None
    image.save(result_path, done.image, metadata=meta, replace=request.force or request.resume)
    stopped = watcher.last_step if watcher.stopped else None
    if stopped is None:
        watcher.finish()
        if request.sheet:
            outputs.write_sheet(request.sheet, [result_path], 1, request.max_pixels)
    summary = watcher.summary(1, total)
    folder = watcher.checkpoint.folder if watcher.last_checkpoint else None
    return SingleOutcome(result_path, summary, stopped, folder, notes)


def _watcher(request: StylizeRequest, meta: dict, control: Control, previews: frozenset):
    """The watcher of a single result (a stop always saves the image and a checkpoint, which
    records every input's SHA-256 so ``resume`` notices a replaced file), and the state to
    resume from, checked against this run before any work."""
    saver = checkpoint.RunCheckpoint(checkpoint.directory(request.output), meta)
    saved = saver.load_compatible() if resuming(request) else None
    watcher = Watcher(
        progress=request.progress,
        log=_path(request.log),
        resume_step=None if saved is None else saved.step,
        output=Path(request.output),
        save_every=request.save_every,
        previews=previews,
        animate=_path(request.animate),
        checkpoint=saver,
        checkpoint_every=request.checkpoint_every,
        plot=_path(request.plot),
        stop=control.stop_requested,
    )
    return watcher, saved


def resuming(request: StylizeRequest) -> bool:
    """Whether the run continues from a checkpoint: ``resume`` and one is there (``resume``
    without one starts afresh, so the same command serves the first run and every rerun
    after a kill)."""
    saved = checkpoint.directory(request.output) / checkpoint.FILE
    return request.resume and os.path.lexists(saved)


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
