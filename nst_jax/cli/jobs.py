"""``nst-jax stylize`` of many results: a dataset job (:mod:`nst_jax.dataset`).

Planned from the inputs' headers, its manifest written into ``-o OUT/`` before any pixel
work, then streamed batch by batch: each result written and recorded as it finishes, each
unreadable input one line as it is met. Rerunning the same command continues a stopped job;
``--shard I/N`` runs part I of N; ``--engine ray`` runs the batches on a Ray cluster.

Exit status: 0 when every item is done, 3 when the job finished but some inputs failed, 2
when it was refused before any work, 130/143 on a signal (the results written are kept).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nst_jax import dataset
from nst_jax.cli import loading, outputs, preflight, single, watch
from nst_jax.cli.options import style_losses, style_masks
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError, shown
from nst_jax.files import image, weights

EXIT_SOME_FAILED = 3


def run(args: argparse.Namespace, config: StyleConfig, weights_path: Path, meta: dict) -> int:
    """The job command; returns the exit status."""
    shard = shard_of(args)
    args.weights_path = weights_path
    args.signals.phase("planning")
    plan = dataset.plan_job(
        args.content,
        args.style,
        args.output,
        config,
        job_settings(args),
        args.files_from,
        extra_settings={"weights_md5": meta["weights_md5"], "masks": _mask_settings(args)},
    )
    args.signals.phase("checking outputs")
    check_outputs(args, plan, config, weights_path)
    args.signals.phase("checking memory")
    config = _check_memory(args, plan, config)
    continuing = dataset.start(plan, force=args.force)
    preflight.enable_cache(args)
    args.signals.phase("loading weights")
    resources = dataset.Resources(
        weights.load_vgg19(weights_path),
        config,
        metadata=meta,
        replace=args.force,
        workers=args.workers,
        continuing=continuing,
        masks=loading.load_regions(args.mask, args.mask_labels, len(args.style), args.max_pixels),
        style_masks=loading.load_style_masks(style_masks(args), args.max_pixels),
    )
    args.signals.phase("running")
    return report(args, plan, resources, shard)


def job_settings(args) -> dataset.JobSettings:
    size = None if args.size is None else (args.size[1], args.size[0])
    return dataset.JobSettings(
        max_dim=args.max_dim,
        batch_size=args.batch_size,
        styles_per_image=args.styles_per_image,
        buckets="fixed" if size is not None else "grid",
        size=size,
        fit=args.fit,
        ext=f".{args.format}",
        style_losses=style_losses(args),
        regions=bool(args.mask or args.mask_labels),
    )


def _mask_settings(args) -> dict:
    return {"mask": args.mask, "mask_labels": args.mask_labels, "style_mask": style_masks(args)}


def shard_of(args) -> tuple[int, int]:
    """``--shard I/N``, or this host's part of a ``jax.distributed`` run."""
    if args.shard is not None:
        return args.shard
    return _init_distributed()


def _init_distributed() -> tuple[int, int]:
    """Join a multi-host run if asked to; ``(process index, process count)``.

    ``NST_JAX_DISTRIBUTED=1`` calls ``jax.distributed.initialize()`` with JAX's own cluster
    detection (Cloud TPU pod slices, Slurm, Open MPI). Elsewhere set
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` on every host. Each host then runs its part of the plan, as
    ``--shard`` would.
    """
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


def check_outputs(args, plan: dataset.Plan, config: StyleConfig, weights_path) -> None:
    """Before any work: the output folder can take the results, none would replace an input,
    and the sheet is a writable image path."""
    for option in watch.WATCH_OPTIONS:
        if getattr(args, option):
            name = "--" + option.replace("_", "-")
            raise InputError(f"{name}: one result at a time, and this job has many")
    out = Path(args.output)
    if out.suffix.lower() in image.SAVE_FORMATS:
        raise InputError(f"{out}: {len(plan.items)} results need an output folder, not a file")
    inputs = [(Path(it.input), "content") for it in plan.items]
    inputs += loading.input_paths(args, config, weights_path)
    planned = [outputs.Output(dataset.manifest.folder(out) / "plan.json", "the manifest", True)]
    if args.sheet:
        planned.append(outputs.Output(image.check_output_path(args.sheet), "--sheet"))
    outputs.check_outputs(planned, inputs, force=True)
    outputs.check_job_outputs([it.output for it in plan.items], inputs)
    preflight.check_chosen_cache(args)


def _check_memory(args, plan: dataset.Plan, config: StyleConfig) -> StyleConfig:
    """The largest batch must fit (one compile, reused by the run), and the styles; the
    config to run (untiled where that fits, as :func:`preflight.check_memory` says)."""
    if not plan.batches:
        return config
    largest = max(plan.batches, key=lambda b: b.shape[0] * b.shape[1])
    shapes = [(plan.items[largest.items[0]].input, args.batch_size, *largest.shape)]
    config = preflight.check_memory(shapes, config, args.memory_limit)
    styles = loading.planned_styles(args.style, config, args.max_dim, args.max_pixels)
    preflight.check_style_memory(styles, shapes, config, args.memory_limit)
    return config


def report(args, plan: dataset.Plan, resources: dataset.Resources, shard) -> int:
    """Run the job, saying each failure as it is met; the summary line and exit status."""
    from nst_jax.cli.progress import JobProgress

    progress = JobProgress(plan, shard, args.quiet, args.signals)
    resources.on_chunk, resources.on_batch = progress.on_chunk, progress.on_batch
    runner = _engine(args, plan, resources, shard)
    try:
        for outcome in runner:
            progress.add(outcome)
            if outcome.status == "failed":
                print(f"nst-jax: {shown(outcome.item.input)}: {outcome.reason}", file=sys.stderr)
    except watch.RunInterruptedError as e:
        progress.close()
        print(f"nst-jax: {e}", file=sys.stderr)
        return e.exit_status
    progress.close()
    if args.sheet:
        _write_sheet(args.sheet, plan)
    whole = dataset.summary(plan)
    print(
        f"{progress.line()}; the job: {whole['done']} done, {whole['failed']} failed, "
        f"{whole['pending']} to do -> {args.output}"
    )
    status = single.ended(args)
    return status or (EXIT_SOME_FAILED if whole["failed"] else 0)


def _engine(args, plan, resources, shard):
    if args.engine == "ray":
        from nst_jax.dataset import ray_engine

        return ray_engine.run_job_on_ray(
            plan,
            resources,
            shard,
            weights_path=str(args.weights_path),
            address=args.ray_address,
            actors=args.ray_workers,
        )
    return dataset.run_job(plan, resources, shard)


def _write_sheet(path: str, plan: dataset.Plan) -> None:
    """Every result written, a row for each input's results."""
    done = [it.output for it in plan.items if Path(it.output).exists()]
    if done:
        per_input = len(plan.items) // max(1, len({it.input for it in plan.items}))
        outputs.write_sheet(path, done, per_input)
