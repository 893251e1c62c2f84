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
from nst_jax.core.targets import fit_masks
from nst_jax.dataset import buckets, manifest, records
from nst_jax.dataset.lock import shard_lock
from nst_jax.dataset.plan import STATIC_SWEPT, Batch, Item, Plan, style_dims
from nst_jax.errors import ImageError, InputError
from nst_jax.files import atomic, image
from nst_jax.files.stream import prefetch
from nst_jax.run.style_cache import StyleCache
from nst_jax.run.stylize import stylize

STATUSES = ("done", "failed", "skipped")  # an outcome's; a record's are records.STATUSES


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one item: ``done`` (written now), ``failed`` (with the reason) or
    ``skipped`` (finished by an earlier run of the job: ``earlier`` says how, ``done`` or
    ``failed``, and ``reason`` why it failed)."""

    item: Item
    status: str
    reason: str | None = None
    earlier: str | None = None


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
      on_start: called once with the batches this run will run (the others were finished
        by earlier runs).
      on_batch: called with ``(batch, None, 0)`` as each batch starts, and with ``(batch,
        seconds, items run)`` after it.
      styles_kept: styles kept decoded (an LRU).
      continuing: whether the job was started before: a planned output found without its
        record is then this job's own (written before a kill), and is replaced.
      apply: replaces optimisation (a feed-forward model): ``apply(contents, style_sets)``
        stylises ``(N, H, W, 3)`` contents, each with its item's style indices, in one pass.
      apply_factory: makes ``apply`` in another process (a Ray actor): a picklable callable
        of no arguments, shipped instead of ``apply``.
      max_pixels: an input larger than this, in its file, is refused (``None``: no limit):
        a content fails its item; a style stops the job with an ``ImageError`` (the
        command refuses it before any work).
    """

    params: Any
    config: StyleConfig
    metadata: dict | None = None
    masks: list | None = None
    style_masks: list | None = None
    replace: bool = False
    workers: int = 2
    on_event: Callable | None = None
    on_start: Callable | None = None
    on_batch: Callable | None = None
    styles_kept: int = 64
    continuing: bool = False
    apply: Callable | None = None
    apply_factory: Callable | None = None
    max_pixels: int | None = image.MAX_PIXELS


def run_job(
    plan: Plan,
    resources: Resources,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
) -> Iterator[Outcome]:
    """Run part ``shard`` of ``plan``, yielding an :class:`Outcome` per item as it is met:
    planning failures, items finished before (skipped), then each batch's results.

    The job must have been started (:func:`nst_jax.dataset.start`: its manifest written);
    one run at a time may run a shard (:func:`nst_jax.dataset.lock.shard_lock`: a second
    is refused in one line). ``retry_failed``: items that failed before are run again
    (an item whose input changed since is run again anyway).

    Raises:
      TypeError, ValueError: an argument of the wrong type or range, named.
      InputError: the job not started in its folder, the shard already running, or
        ``resources.max_pixels`` not a pixel limit.
    """
    check_run(plan, resources, shard)
    with shard_lock(plan.out, shard):
        finished = records.finished(plan, records.read_records(plan), retry_failed)
        known, todo = unfinished(plan, shard, finished)
        if resources.on_start is not None:
            resources.on_start(todo)
        yield from known
        # What a killed run of this shard left half-written (its own items only: another
        # shard may be writing its own now).
        atomic.remove_stale_parts(plan.items[i].output for batch in todo for i in batch.items)
        yield from _run_batches(plan, resources, shard, todo, finished)
        records.write_index(plan, shard, records.read_records(plan))


def _run_batches(plan, resources: Resources, shard, todo: list, finished: dict):
    runner = BatchRunner(plan, resources, finished)
    load = lambda batch: load_batch(plan, batch, resources.max_pixels)  # noqa: E731
    for batch, loaded in prefetch(todo, load, resources.workers):
        if resources.on_batch is not None:
            resources.on_batch(batch, None, 0)  # a batch starts (maybe compiling)
        began = time.monotonic()
        outcomes = runner(batch, loaded)
        records.append(plan, shard, [record(plan, o) for o in outcomes if o.status != "skipped"])
        if resources.on_batch is not None:
            ran = sum(1 for o in outcomes if o.status != "failed")
            resources.on_batch(batch, time.monotonic() - began, ran)
        yield from outcomes


def check_run(plan: Plan, resources: Resources, shard) -> None:
    """The arguments of :func:`run_job`, checked where they enter."""
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan (dataset.plan_job), got {type(plan).__name__}")
    if not isinstance(resources, Resources):
        raise TypeError(f"resources must be a Resources, got {type(resources).__name__}")
    whole = isinstance(shard, tuple) and len(shard) == 2
    if not whole or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard):
        raise TypeError(f"shard must be (index, count), two integers, got {shard!r}")
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    image.check_max_pixels(resources.max_pixels)
    stored = manifest.read_plan(plan.out)
    if stored is None:
        raise InputError(f"{manifest.describe(plan.out)}: no manifest: start the job first "
                         "(dataset.start(plan))")  # fmt: skip
    manifest.check_same(plan, stored, batches=True)


def unfinished(plan: Plan, shard: tuple[int, int], finished: dict):
    """This shard's outcomes known before any work (planning failures, items finished
    before), and its batches still to run."""
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
    belong to no batch, so each shard takes every count-th of them. Those recorded by an
    earlier run are skipped, the others recorded now."""
    failed = [item for item in plan.items if item.batch < 0][shard[0] :: shard[1]]
    fresh = [Outcome(item, "failed", item.reason) for item in failed if item.index not in finished]
    records.append(plan, shard, [record(plan, o) for o in fresh])
    yield from fresh
    yield from (_skipped(it, finished[it.index]) for it in failed if it.index in finished)


def _skipped(item: Item, earlier: dict) -> Outcome:
    """An item finished before: skipped, with how it finished then."""
    return Outcome(item, "skipped", earlier.get("reason"), earlier.get("status"))


def record(plan: Plan, outcome: Outcome) -> dict:
    """The record of an outcome (:func:`nst_jax.dataset.records.record`)."""
    return records.record(plan, outcome.item, outcome.status, outcome.reason)


def load_batch(
    plan: Plan, batch: Batch, max_pixels: int | None = image.MAX_PIXELS
) -> list[tuple[Item, np.ndarray | None, str | None]]:
    """Each item of ``batch`` decoded (refused over ``max_pixels``) and fitted to the
    batch's shape, or its reason."""
    job = plan.settings["job"]
    loaded = []
    for index in batch.items:
        item = plan.items[index]
        try:
            if job["buckets"] == "fixed":
                pixels = image.decode(item.input, max_pixels)
                pixels = buckets.fit(pixels, batch.shape, job["fit"])
            else:
                pixels = image.load(item.input, job["max_dim"], max_pixels)
                pixels = buckets.fit(pixels, batch.shape, "grid")
            loaded.append((item, pixels, None))
        except ImageError as e:
            loaded.append((item, None, str(e).removeprefix(f"{item.input}: ")))
    return loaded


class _Styles:
    """The job's style images, decoded when first needed and kept (an LRU)."""

    def __init__(self, plan: Plan, resources: Resources):
        self.plan, self.kept = plan, resources.styles_kept
        self.config, self.max_dim = resources.config, plan.settings["job"]["max_dim"]
        self.max_pixels = resources.max_pixels
        self.loaded: collections.OrderedDict = collections.OrderedDict()

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self.loaded:
            dims = style_dims(self.config, len(self.plan.styles), self.max_dim)
            self.loaded[index] = image.load(self.plan.styles[index], dims[index], self.max_pixels)
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
        _write(plan, item, result_image, resources)
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
        masks = np.asarray(fit_masks(resources.masks, *batch.shape))
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


def _write(plan: Plan, item: Item, pixels: np.ndarray, resources: Resources) -> None:
    """The item's result at its own shape (back from its bucket's), with provenance naming
    the style(s) it used."""
    if pixels.shape[:2] != tuple(item.shape):
        pixels = image.resize(np.clip(pixels, 0.0, 1.0), *item.shape)
    meta = None
    if resources.metadata is not None:
        own = {"content": item.input, "setting": dict(item.setting), "seed": item.seed}
        own["style"] = [plan.styles[s] for s in item.styles]
        config = {**resources.metadata.get("config", {}), **dict(item.setting)}
        meta = {**resources.metadata, **own, "config": {**config, "seed": item.seed}}
    replace = resources.replace or resources.continuing
    image.save(item.output, pixels, metadata=meta, replace=replace)
