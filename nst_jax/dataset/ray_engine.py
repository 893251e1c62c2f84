"""Running a planned job's batches on a Ray cluster (``pip install 'nst_jax[ray]'``).

Ray is the engine, not a home-made one: each worker is a Ray actor that holds the params and
its compiled programs (one actor per GPU in the cluster, or as many as asked), the driver
hands it batches, and Ray restarts an actor that dies and retries its task
(``max_restarts``, ``max_task_retries``). The manifest, the outputs and continuing by
rerunning are the local engine's: workers write each result atomically where the plan says
(a file system every node sees), and the driver records what they return.

Submit to a running cluster with ``--ray-address ray://HEAD:10001`` (or ``auto`` on a node
of it); without an address a local cluster is started for the run.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import warnings
from collections.abc import Iterator

from nst_jax.dataset import manifest
from nst_jax.dataset.engine import BatchRunner, Outcome, Resources, load_batch, record, unfinished
from nst_jax.dataset.plan import Plan
from nst_jax.errors import InputError

RETRIES = 2  # restarts of a dead actor, and retries of the batch it was running
IN_FLIGHT = 2  # batches queued per actor: one running, one waiting


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'nst_jax[ray]'") from None
    return ray


class _Worker:
    """One Ray actor: reads the job from its folder's manifest and loads the weights once,
    then runs the batches it is given (its constructor's arguments stay small)."""

    def __init__(self, out: str, resources: Resources, weights_path: str):
        from nst_jax.files import weights

        self.plan = manifest.load_plan(out)
        finished = manifest.finished(self.plan, manifest.read_records(out))
        resources.params = weights.load_vgg19(weights_path)
        self.runner = BatchRunner(self.plan, resources, finished)

    def run(self, index: int) -> list[Outcome]:
        batch = self.plan.batches[index]
        return self.runner(batch, load_batch(self.plan, batch))


def run_job_on_ray(
    plan: Plan,
    resources: Resources,
    shard: tuple[int, int] = (0, 1),
    *,
    weights_path: str,
    address: str | None = None,
    actors: int | None = None,
) -> Iterator[Outcome]:
    """:func:`nst_jax.dataset.run_job` with the batches run by Ray actors.

    Args:
      plan: the job (its manifest written: :func:`nst_jax.dataset.start`).
      resources: as for the local engine; the params are loaded by each actor from
        ``weights_path`` instead of sent.
      shard: the part of the plan to run.
      weights_path: the VGG19 weights file, readable on every node.
      address: a running cluster's address, or None: a local one.
      actors: workers; default one per GPU of the cluster, else one.
    """
    ray = _ray()
    with warnings.catch_warnings():
        # Ray starts its processes with fork-exec; JAX warns about any fork.
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(
            address=address,
            ignore_reinit_error=True,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    finished = manifest.finished(plan, manifest.read_records(plan.out))
    known, todo = unfinished(plan, shard, finished)
    yield from known
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = actors or max(gpus, 1)
    spec = ray.remote(num_gpus=1 if gpus else 0, max_restarts=RETRIES, max_task_retries=RETRIES)
    # Not the params (each actor loads its own) nor the driver's hooks.
    shipped = dataclasses.replace(resources, params=None, on_event=None, on_batch=None)
    workers = [spec(_Worker).remote(str(plan.out), shipped, weights_path) for _ in range(count)]
    yield from _drive(ray, plan, shard, workers, todo)


def _drive(ray, plan: Plan, shard, workers: list, todo: list) -> Iterator[Outcome]:
    """Keep every actor busy with up to :data:`IN_FLIGHT` batches; record and yield each
    batch's outcomes as it finishes."""
    queue = collections.deque(todo)
    running = {}
    while queue or running:
        for k, worker in enumerate(workers):
            while queue and sum(1 for w in running.values() if w == k) < IN_FLIGHT:
                running[worker.run.remote(queue.popleft().index)] = k
        (ready,), _ = ray.wait(list(running), num_returns=1)
        running.pop(ready)
        outcomes = ray.get(ready)
        manifest.append(plan.out, shard, [record(o) for o in outcomes])
        yield from outcomes
