"""A stylisation of many results: a dataset job (:mod:`nst_jax.dataset`) with its lifecycle,
what ``nst-jax stylize`` runs when a request makes more than one result.

Planned from the inputs' headers, its manifest written into the output folder before any
pixel work, then streamed batch by batch: each result written and recorded as it finishes,
each unreadable input reported as it is met. Running the same request again continues a
stopped job; ``shard=(I, N)`` runs part I of N; ``engine="ray"`` runs the batches on a Ray
cluster. Asked to stop, the job ends at its next chunk: the finished batches' results are
kept (:class:`~nst_jax.session.control.Stopped`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from nst_jax import dataset
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError, OutputError, shown
from nst_jax.files import image, weights
from nst_jax.session import inputs, outputs, plugins, process
from nst_jax.session.control import Control, Stopped
from nst_jax.session.memory import check_style_memory, plan_memory
from nst_jax.session.progress import JobProgress
from nst_jax.session.request import StylizeRequest, checked, metadata

# The sheets a job wrote, in its manifest folder: a rerun redraws them without --force.
SHEET_RECORD = "sheets.json"


class JobOutcome(NamedTuple):
    """What a job's run did.

    Attributes:
      line: this run's counts and steady rate.
      whole: the whole job's counts from its records: ``done``, ``failed``, ``pending``.
      own: the same of this run's shard alone (its exit status is its own items').
      notes: the memory plan's and the cache's lines.
    """

    line: str
    whole: dict[str, int]
    own: dict[str, int]
    notes: tuple[str, ...] = ()


def run_job_request(
    request: StylizeRequest,
    control: Control | None = None,
    report: Callable[[dataset.Outcome], None] = lambda outcome: None,
) -> JobOutcome:
    """Run (or continue) ``request``'s job; ``report`` hears of every item as it is met.

    Raises:
      InputError: refused before any work (one line).
      Stopped: asked to stop; the results written so far are kept.
    """
    control = control or Control()
    request = checked(request)
    network = inputs.network(request.config)
    weights_path = weights.find_weights(request.weights, network)
    meta = metadata(request, weights.md5sum(weights_path))
    control.phase("planning")
    masks = {"mask": meta["mask"], "mask_labels": request.mask_labels}
    extra = {
        "weights_md5": meta["weights_md5"],
        "masks": {**masks, "style_mask": meta["style_mask"]},
    } | plugins.plugin_records(request.plugins)
    plan = job_plan(request, extra)
    control.phase("checking outputs")
    check_job_outputs(request, plan, inputs.input_paths(request, weights_path))
    control.phase("checking memory")
    config, notes = _memory(request, plan)
    notes += passed_over(plan)
    continuing = start_job(request, plan)
    notes += [n for n in [process.enable_cache(request.compile_cache)] if n]
    for note in notes:
        control.note(note)
    control.phase("loading weights")
    resources = dataset.Resources(
        weights.load_weights(weights_path, network),
        config,
        metadata=meta,
        replace=request.force,
        workers=request.workers,
        continuing=continuing,
        masks=inputs.load_regions(
            request.masks, request.mask_labels, len(request.styles), request.max_pixels
        ),
        style_masks=inputs.load_style_masks(request.style_masks, request.max_pixels),
        max_pixels=request.max_pixels,
    )
    control.phase("running")
    outcome = execute(request, plan, resources, control, report, weights_path)
    return outcome._replace(notes=tuple(notes))


def job_plan(request: StylizeRequest, extra_settings: dict, styles=None) -> dataset.Plan:
    """The job's plan (from headers; nothing decoded); ``styles`` made already, or the
    request's."""
    job = dataclasses.replace(
        request.job, style_losses=request.style_losses, regions=request.masked
    )
    return dataset.plan_job(
        list(request.contents), styles or list(request.styles), request.output, request.config, job,
        request.files_from, extra_settings=extra_settings, styles_from=request.styles_from,
    )  # fmt: skip


def passed_over(plan: dataset.Plan) -> list[str]:
    """One line on the files the walk passed over (not images, not regular files)."""
    if not plan.passed:
        return []
    return [inputs.passed_note(plan.passed, ", not inputs")]


def shard_of(request: StylizeRequest) -> tuple[int, int]:
    """``request.shard``, or this host's part of a ``jax.distributed`` run.

    ``NST_JAX_DISTRIBUTED=1`` calls ``jax.distributed.initialize()`` with JAX's own cluster
    detection (Cloud TPU pod slices, Slurm, Open MPI). Elsewhere set
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` on every host. Each host then runs its part of the plan, as a shard
    would.
    """
    if request.shard is not None:
        return request.shard
    import jax

    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    elif env.get("NST_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
    return jax.process_index(), jax.process_count()


def check_job_outputs(request: StylizeRequest, plan: dataset.Plan, reads: list) -> None:
    """Before any work: the output folder can take the results, none would replace an input,
    and the sheet is a writable image path."""
    watching = request.watching()
    if watching:
        name = "--" + watching[0].replace("_", "-")
        raise InputError(f"{name}: one result at a time, and this job has many")
    out = Path(request.output)
    if out.suffix.lower() in image.SAVE_FORMATS:
        raise InputError(f"{out}: {len(plan.items)} results need an output folder, not a file")
    for content in map(Path, request.contents):
        if content.is_dir() and out.is_dir() and os.path.samefile(content, out):
            raise InputError(f"{shown(out)}: is the content folder; results go to another one")
    reads = [(Path(it.input), "content") for it in plan.items] + list(reads)
    results = [it.output for it in plan.items]
    planned = [outputs.Output(dataset.manifest.folder(out) / "plan.json", "the manifest", True)]
    if request.sheet:
        sheet = image.check_output_path(request.sheet)
        record = dataset.manifest.folder(out) / SHEET_RECORD
        planned.append(outputs.check_job_sheet(sheet, results, record, request.force))
    outputs.check_outputs(planned, reads, resume=True)
    outputs.check_job_outputs(results, reads)
    for path in dataset.manifest.folder(out).glob("*-of-*"):  # records, indexes, stats, locks
        if path.is_symlink() or not path.is_file():
            raise OutputError(f"{shown(path)}: the job's own file is not a regular file")
    process.check_chosen_cache(request.compile_cache)


def _memory(request: StylizeRequest, plan: dataset.Plan) -> tuple[StyleConfig, list[str]]:
    """The largest batch must fit (one compile, reused by the run), and the styles; the
    config to run (untiled where that fits, as :func:`plan_memory` decides)."""
    config = request.config
    if not plan.batches:
        return config, []
    largest = max(plan.batches, key=lambda b: b.shape[0] * b.shape[1])
    shapes = [(plan.items[largest.items[0]].input, request.job.batch_size, *largest.shape)]
    memory_plan = plan_memory(shapes, config, request.memory_limit)
    config = memory_plan.config
    styles = inputs.planned_styles(request.styles, config, request.max_dim, request.max_pixels)
    check_style_memory(styles, shapes, config, request.memory_limit)
    return config, list(memory_plan.notes)


def start_job(request, plan: dataset.Plan) -> bool:
    """Start the job's folder (or find it started: then ``True``, a continuation), after
    joining its Ray cluster where it runs on one, so that a cluster that is not there is
    refused before anything is written."""
    if request.engine == "ray":
        from nst_jax.dataset import ray_engine

        ray_engine.connect(request.ray_address)
    return dataset.start(plan, force=request.force)


def execute(request, plan, resources: dataset.Resources, control: Control, report, weights_path):
    """Run the job's batches with a progress bar, each outcome reported as it is met; the
    sheet and the summary at the end.

    Raises:
      Stopped: asked to stop (checked at each chunk's end).
    """
    shard = shard_of(request)
    progress = JobProgress(plan, shard, not request.progress)

    def on_event(event) -> None:
        control.own_outputs()  # a job owns outputs from its first chunk
        if control.stop_requested():
            raise Stopped("the results written so far are kept; rerun to continue")

    resources.on_event, resources.on_batch = on_event, progress.on_batch
    resources.on_start = progress.on_start
    try:
        for outcome in _engine(request, plan, resources, shard, weights_path):
            progress.add(outcome)
            report(outcome)
    finally:
        progress.close()
    if request.sheet:
        record = dataset.manifest.folder(request.output) / SHEET_RECORD
        _write_sheet(request.sheet, plan, record, request.max_pixels)
    return JobOutcome(progress.line(), dataset.summary(plan), dataset.summary(plan, shard))


def _engine(request, plan, resources, shard, weights_path):
    if request.engine == "ray":
        from nst_jax.dataset import ray_engine

        return ray_engine.run_job_on_ray(
            plan, resources, shard, weights_path=weights_path and str(weights_path),
            address=request.ray_address, actors=request.ray_workers,
            retry_failed=request.retry_failed,
            setup=functools.partial(plugins.load_same, request.plugins),
        )  # fmt: skip
    return dataset.run_job(plan, resources, shard, retry_failed=request.retry_failed)


def _write_sheet(path: str, plan: dataset.Plan, record: Path, max_pixels: int | None) -> None:
    """Every result written, a row for each input's results."""
    done = [it.output for it in plan.items if Path(it.output).exists()]
    if done:
        per_input = len(plan.items) // max(1, len({it.input for it in plan.items}))
        outputs.write_job_sheet(path, done, per_input, record, max_pixels)
