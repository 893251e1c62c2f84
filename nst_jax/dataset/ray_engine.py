"""Running a planned job's batches on a Ray cluster (``pip install 'nst_jax[ray]'``).

Ray is the engine, not a home-made one: each worker is a Ray actor that holds the params and
its compiled programs (one actor per GPU in the cluster, or as many as asked), the driver
hands it batches, and Ray restarts an actor that dies and retries its task
(``max_restarts``, ``max_task_retries``). The manifest, the outputs and continuing by
rerunning are the local engine's: workers write each result atomically where the plan says
(a file system every node sees), and the driver records what they return.

Submit to a running cluster with ``--ray-address auto`` (or ``HEAD:6379``) on a node of it,
or ``ray://HEAD:10001`` from elsewhere (Ray Client: the ``ray`` extra installs
``ray[client]``); without an address a local cluster is started for the run. The driver
connects before anything is written: a cluster that is not there is one line.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import signal
import warnings
from collections.abc import Callable, Iterator

from nst_jax.dataset import manifest, records
from nst_jax.dataset.engine import (
    BatchRunner,
    Outcome,
    Resources,
    check_run,
    load_batch,
    record,
    unfinished,
)
from nst_jax.dataset.lock import shard_lock
from nst_jax.dataset.plan import Plan
from nst_jax.errors import InputError, shown

RETRIES = 2  # restarts of a dead actor, and retries of the batch it was running
IN_FLIGHT = 2  # batches queued per actor: one running, one waiting


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'nst_jax[ray]'") from None
    return ray


class _Worker:
    """One Ray actor: reads the job from its folder's manifest and loads the weights once
    (or makes a model's ``apply`` with ``resources.apply_factory``), then runs the batches
    it is given (its constructor's arguments stay small)."""

    def __init__(self, out: str, resources: Resources, weights_path: str | None, setup=None):
        from nst_jax.files import weights

        if setup is not None:
            setup()  # plug-ins register their terms before the job's settings are read
        self.plan = manifest.load_plan(out)
        finished = records.finished(self.plan, records.read_records(self.plan))
        if resources.apply_factory is not None:
            resources.apply = resources.apply_factory()
        else:
            resources.params = weights.load_weights(weights_path, resources.config.extractor)
        self.runner = BatchRunner(self.plan, resources, finished)
        self.max_pixels = resources.max_pixels

    def run(self, index: int) -> list[Outcome]:
        batch = self.plan.batches[index]
        return self.runner(batch, load_batch(self.plan, batch, self.max_pixels))


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (``None``: start a local one for the run).

    Raises:
      InputError: Ray missing, or no cluster there (one line).
    """
    ray = _ray()
    check_reachable(address)
    # ray.init installs signal handlers of its own in the driver: the caller's (the
    # command's, which stop a job at a safe point) are put back.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with warnings.catch_warnings():
        # Ray starts its processes with fork-exec; JAX warns about any fork.
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        try:
            ray.init(
                address=address, ignore_reinit_error=True, include_dashboard=False,
                log_to_driver=False, logging_level=logging.ERROR,
            )  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError, ImportError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"--ray-address {shown(address)}: {reason}") from None
        finally:
            for signum, handler in handlers.items():
                if handler is not None and signal.getsignal(signum) is not handler:
                    signal.signal(signum, handler)


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Refuse at once a ``[ray://]HOST:PORT`` where nothing accepts a connection: Ray's
    client would retry for 30 s before saying so. ``None`` and ``auto`` are Ray's to find.

    Raises:
      InputError: nothing listens there (one line).
    """
    import socket

    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # not HOST:PORT: Ray's own parsing says what is wrong
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError, OverflowError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise InputError(f"--ray-address {shown(address)}: nothing answers ({reason})") from None


def run_job_on_ray(
    plan: Plan,
    resources: Resources,
    shard: tuple[int, int] = (0, 1),
    *,
    weights_path: str | None,
    address: str | None = None,
    actors: int | None = None,
    retry_failed: bool = False,
    setup: Callable[[], None] | None = None,
) -> Iterator[Outcome]:
    """:func:`nst_jax.dataset.run_job` with the batches run by Ray actors.

    Args:
      plan: the job (its manifest written: :func:`nst_jax.dataset.start`).
      resources: as for the local engine; the params are loaded by each actor from
        ``weights_path`` instead of sent (a model's ``apply`` made by each actor from
        ``resources.apply_factory``).
      shard: the part of the plan to run.
      weights_path: the VGG19 weights file, readable on every node (``None`` for a model
        that needs none).
      address: a running cluster's address, or None: a local one (:func:`connect`).
      actors: workers; default one per GPU of the cluster, else one.
      retry_failed: as :func:`nst_jax.dataset.run_job`'s.
      setup: run first in every actor (a picklable callable): the plug-ins' loading.
    """
    check_run(plan, resources, shard)
    connect(address)
    ray = _ray()
    with shard_lock(plan.out, shard):
        finished = records.finished(plan, records.read_records(plan), retry_failed)
        known, todo = unfinished(plan, shard, finished)
        if resources.on_start is not None:
            resources.on_start(todo)
        yield from known
        gpus = int(ray.cluster_resources().get("GPU", 0))
        spec = ray.remote(num_gpus=1 if gpus else 0, max_restarts=RETRIES, max_task_retries=RETRIES)
        # Not the params (each actor loads its own) nor the driver's hooks.
        shipped = dataclasses.replace(resources, params=None, on_event=None, on_batch=None,
                                      on_start=None, apply=None)  # fmt: skip
        workers = [spec(_Worker).remote(str(plan.out), shipped, weights_path, setup)
                   for _ in range(actors or max(gpus, 1))]  # fmt: skip
        yield from _drive(ray, plan, shard, workers, todo)
        records.write_index(plan, shard, records.read_records(plan))


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
        records.append(plan, shard, [record(plan, o) for o in outcomes if o.status != "skipped"])
        yield from outcomes
