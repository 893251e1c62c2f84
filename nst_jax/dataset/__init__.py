"""Dataset jobs: stylise thousands of images, streamed, resumable, sharded, on one machine
or a Ray cluster.

A job is planned from file names and image headers (:func:`plan_job`), its manifest written
into its output folder before any pixel work (:func:`start`), then run batch by batch
(:func:`run_job`, or :func:`nst_jax.dataset.ray_engine.run_job_on_ray`), each result
written and recorded as it finishes. Rerunning the same job continues it::

    from nst_jax import dataset

    plan = dataset.plan_job(["photos/"], ["style.jpg"], "out/", config)
    dataset.start(plan)  # the manifest, before any pixel work
    resources = dataset.Resources(params, config)
    for outcome in dataset.run_job(plan, resources, shard=(0, 1)):
        print(outcome.item.output, outcome.status)
"""

from __future__ import annotations

from nst_jax.dataset.engine import Outcome, Resources, run_job
from nst_jax.dataset.jobs import Progress, start, summary
from nst_jax.dataset.manifest import read_plan, read_records
from nst_jax.dataset.plan import Batch, Item, JobSettings, Plan, plan_job

__all__ = [
    "Batch",
    "Item",
    "JobSettings",
    "Outcome",
    "Plan",
    "Progress",
    "Resources",
    "plan_job",
    "read_plan",
    "read_records",
    "run_job",
    "start",
    "summary",
]
