"""Running a planned job here: each of this shard's batches not yet done is loaded by
background workers while the previous one runs, stylised as one program, and its results
written (atomically) and recorded in the manifest as they finish.

An item whose input cannot be read fails on its own, recorded with the reason; its batch
goes on without it, padded to its planned slots (as a bucket's last batch is), so its
program is unchanged. A batch's result does not depend on where a job was interrupted:
batches are fixed by the plan, and one not wholly done is run again whole, so a continued
job writes the bytes an uninterrupted one would.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from nst_jax.config import StyleConfig
from nst_jax.core.targets import resize_masks
from nst_jax.dataset import buckets, manifest
from nst_jax.dataset.plan import STATIC_SWEPT, Batch, Item, Plan, style_dims
from nst_jax.errors import ImageError
from nst_jax.files import atomic, image
from nst_jax.files.stream import prefetch
from nst_jax.run.style_cache import StyleCache
from nst_jax.run.stylize import stylize

STATUSES = ("done", "failed", "skipped")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one item: ``done`` (written now), ``failed`` (with the reason) or
    ``skipped`` (done by an earlier run of the job)."""

    item: Item
    status: str
    reason: str | None = None


@dataclasses.dataclass
class Resources:
    """What running a job needs besides its plan.

    Attributes:
      params: VGG19 params.
      config: the run's settings (sweeps as tuples, as planned).
      metadata: provenance stored in each PNG result (the item's own values added).
      masks: ``(H, W)`` content regions, one per style, or None.
      style_masks: each style's own region, or None.
      replace: whether results replace existing files (``--force``).
      workers: threads decoding inputs ahead of the run.
      on_event: ``stylize``'s hook for every batch (progress, stopping: :mod:`nst_jax.events`).
      on_batch: called with ``(batch, None, 0)`` as each batch starts, and with ``(batch,
        seconds, items run)`` after it.
      styles_kept: styles kept decoded (an LRU).
      continuing: whether the job was started before: a planned output found without its
        record is then this job's own (written before a kill), and is replaced.
      apply: replaces optimisation (a feed-forward model): ``apply(contents, style_sets)``
        stylises ``(N, H, W, 3)`` contents, each with its item's style indices, in one pass.
    """

    params: Any
    config: StyleConfig
    metadata: dict | None = None
    masks: list | None = None
    style_masks: list | None = None
    replace: bool = False
    workers: int = 2
    on_event: Callable | None = None
    on_batch: Callable | None = None
    styles_kept: int = 64
    continuing: bool = False
    apply: Callable | None = None


def run_job(plan: Plan, resources: Resources, shard: tuple[int, int] = (0, 1)):
    """Run part ``shard`` of ``plan`` (the manifest written first, by the caller: see
    :func:`nst_jax.dataset.start`), yielding an :class:`Outcome` per item as it is met:
    planning failures, items done before (skipped), then each batch's results."""
    finished = manifest.finished(plan, manifest.read_records(plan.out))
    known, todo = unfinished(plan, shard, finished)
    yield from known
    # What a killed run of this shard left half-written (its own items only: another shard
    # may be writing its own now).
    atomic.remove_stale_parts(plan.items[i].output for batch in todo for i in batch.items)
    runner = BatchRunner(plan, resources, finished)
    load = lambda batch: load_batch(plan, batch)  # noqa: E731
    for batch, loaded in prefetch(todo, load, resources.workers):
        if resources.on_batch is not None:
            resources.on_batch(batch, None, 0)  # a batch starts (maybe compiling)
        began = time.monotonic()
        outcomes = runner(batch, loaded)
        manifest.append(plan.out, shard, [record(o) for o in outcomes])
        if resources.on_batch is not None:
            ran = sum(1 for o in outcomes if o.status != "failed")
            resources.on_batch(batch, time.monotonic() - began, ran)
        yield from outcomes


def unfinished(plan: Plan, shard: tuple[int, int], finished: dict):
    """This shard's outcomes known before any work (planning failures, items done before),
    and its batches still to run."""
    mine = plan.shard(*shard)
    known = list(_met_at_planning(plan, finished, shard))
    todo = []
    for batch in mine:
        if all(index in finished for index in batch.items):
            known += [_skipped(plan.items[i], finished[i]) for i in batch.items]
        else:
            todo.append(batch)
    return known, todo


def _met_at_planning(plan: Plan, finished: dict, shard) -> Iterator[Outcome]:
    """This shard's share of the items that failed at planning (unreadable headers): they
    belong to no batch, so each shard takes every count-th of them."""
    failed = [item for item in plan.items if item.batch < 0][shard[0] :: shard[1]]
    fresh = [item for item in failed if item.index not in finished]
    manifest.append(plan.out, shard, [record(Outcome(it, "failed", it.reason)) for it in fresh])
    yield from (Outcome(it, "failed", it.reason) for it in failed)


def _skipped(item: Item, record: dict) -> Outcome:
    status = "skipped" if record.get("status") == "done" else "failed"
    return Outcome(item, status, record.get("reason"))


def record(outcome: Outcome) -> dict:
    """The manifest's record of an outcome (a done item's output hashed)."""
    record = {"item": outcome.item.index, "status": outcome.status}
    if outcome.status == "failed":
        record["reason"] = outcome.reason
    else:
        record["sha256"], record["size"] = manifest.file_digest(outcome.item.output)
    return record


def load_batch(plan: Plan, batch: Batch) -> list[tuple[Item, np.ndarray | None, str | None]]:
    """Each item of ``batch`` decoded and fitted to the batch's shape, or its reason."""
    job = plan.settings["job"]
    loaded = []
    for index in batch.items:
        item = plan.items[index]
        try:
            if job["buckets"] == "fixed":
                pixels = buckets.fit(image.decode(item.input), batch.shape, job["fit"])
            else:
                pixels = buckets.fit(image.load(item.input, job["max_dim"]), batch.shape, "grid")
            loaded.append((item, pixels, None))
        except ImageError as e:
            loaded.append((item, None, str(e).removeprefix(f"{item.input}: ")))
    return loaded


class _Styles:
    """The job's style images, decoded when first needed and kept (an LRU)."""

    def __init__(self, plan: Plan, resources: Resources):
        self.plan, self.kept = plan, resources.styles_kept
        self.config, self.max_dim = resources.config, plan.settings["job"]["max_dim"]
        self.loaded: collections.OrderedDict = collections.OrderedDict()

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self.loaded:
            dims = style_dims(self.config, len(self.plan.styles), self.max_dim)
            self.loaded[index] = image.load(self.plan.styles[index], dims[index])
            if len(self.loaded) > self.kept:
                self.loaded.popitem(last=False)
        self.loaded.move_to_end(index)
        return self.loaded[index]


class BatchRunner:
    """Runs batches of one job with one set of params: its styles kept decoded, their
    targets cached, across batches."""

    def __init__(self, plan: Plan, resources: Resources, finished: dict):
        self.plan, self.resources, self.finished = plan, resources, finished
        self.styles, self.cache = _Styles(plan, resources), StyleCache()

    def __call__(self, batch: Batch, loaded) -> list[Outcome]:
        """Stylise a batch's loaded items (:func:`load_batch`) and write their results."""
        r = self.resources
        return _run_batch(self.plan, batch, loaded, r, self.styles, self.cache, self.finished)


def _run_batch(plan, batch: Batch, loaded, resources: Resources, styles, cache, finished):
    """Stylise a batch's readable items (padded to the planned size) and write those not
    finished before (a batch redone whole gives them the same bytes again)."""
    outcomes = [Outcome(item, "failed", why) for item, px, why in loaded if px is None]
    ready = [(item, px) for item, px, _ in loaded if px is not None]
    if not ready:
        return outcomes
    padded = ready + [ready[-1]] * (batch.slots - len(ready))
    items = [item for item, _ in padded]
    contents = np.stack([px for _, px in padded])
    if resources.apply is not None:
        results = resources.apply(contents, [item.styles for item in items])
    else:
        results = _optimise(plan, batch, items, contents, resources, styles, cache)
    for (item, _), result_image in zip(ready, np.asarray(results), strict=False):
        if item.index in finished:
            outcomes.append(_skipped(item, finished[item.index]))
            continue
        _write(item, result_image, resources)
        outcomes.append(Outcome(item, "done"))
    return outcomes


def _optimise(plan, batch: Batch, items: list[Item], contents, resources, styles, cache):
    """The batch's results by optimisation (:func:`nst_jax.stylize`)."""
    config = batch_config(resources.config, items, batch, len(plan.styles))
    shared = config.style_blend is not None or resources.masks is not None
    style = (
        [styles[s] for s in range(len(plan.styles))]
        if shared
        else [styles[item.styles[0]] for item in items]
    )
    masks = None
    if resources.masks is not None:
        fitted = [resize_masks(m[None], *batch.shape)[0] for m in resources.masks]
        masks = np.stack([np.asarray(m) for m in fitted])
    return stylize(
        contents,
        style,
        params=resources.params,
        config=config,
        masks=masks,
        style_masks=resources.style_masks if masks is not None else None,
        on_event=resources.on_event,
        style_cache=cache,
    ).image


def batch_config(config: StyleConfig, items: list[Item], batch: Batch, n_styles: int):
    """``config`` for one batch: each swept field as its items' values (one value for a
    setting that changes the program), per-style settings as each item's style's, and
    each item's own seed."""
    swept = {field for item in items for field, _ in item.setting}
    changes = {f: tuple(dict(item.setting)[f] for item in items) for f in swept}
    for field in STATIC_SWEPT:
        if field in changes:
            changes[field] = changes[field][0]  # batches hold one program
    if len(items[0].styles) == 1 and n_styles > 1:
        for field in ("style_weights", "style_scales"):
            if getattr(config, field) is not None:
                changes[field] = tuple(getattr(config, field)[it.styles[0]] for it in items)
    changes["seed"] = tuple(item.seed for item in items)
    return config.replace(**changes)


def _write(item: Item, pixels: np.ndarray, resources: Resources) -> None:
    """The item's result at its own shape (back from its bucket's), with provenance."""
    if pixels.shape[:2] != tuple(item.shape):
        pixels = image.resize(np.clip(pixels, 0.0, 1.0), *item.shape)
    meta = None
    if resources.metadata is not None:
        own = {"content": item.input, "setting": dict(item.setting), "seed": item.seed}
        config = {**resources.metadata.get("config", {}), **dict(item.setting)}
        meta = {**resources.metadata, **own, "config": {**config, "seed": item.seed}}
    replace = resources.replace or resources.continuing
    image.save(item.output, pixels, metadata=meta, replace=replace)
