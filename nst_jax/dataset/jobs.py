"""Starting a job in its output folder, counting its progress, and summing it up.

:func:`start` writes the manifest of a new job, or checks that the folder's manifest is this
job's when one is there (a rerun continues it). :class:`Progress` counts a shard's outcomes
and times its batches, leaving out the batches that compiled a program (the first of each
shape), so its rate and ETA are the steady ones; it writes ``stats-I-of-N.json`` beside the
manifest.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

from nst_jax.dataset import manifest
from nst_jax.dataset.engine import STATUSES, Outcome
from nst_jax.dataset.plan import Plan
from nst_jax.errors import OutputError, shown
from nst_jax.files.atomic import atomic_write


def start(plan: Plan, force: bool = False) -> bool:
    """Make ``plan.out`` this job's folder; returns whether the job continues one begun.

    A folder without a manifest gets this plan's, once none of the planned outputs is in
    the way (``force``: they are replaced). A folder with this job's manifest continues it.
    A folder with another job's is refused, naming the first setting that differs
    (``force``: it is replaced, its records dropped).

    Raises:
      InputError: another job's manifest, or outputs in the way (one line).
    """
    stored = manifest.read_plan(plan.out)
    if stored is not None and not force:
        manifest.check_same(plan, stored)
        return True
    if stored is not None:
        for path in manifest.folder(plan.out).glob("done-*-of-*.jsonl"):
            path.unlink()
    elif not force:
        _refuse_existing(plan)
    manifest.write_plan(plan)
    return False


def _refuse_existing(plan: Plan) -> None:
    existing = [it.output for it in plan.items if Path(it.output).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"{shown(existing[0])}: exists{more}; --force replaces it")


class Progress:
    """A shard's counts, its steady rate and its stats file (module docstring)."""

    def __init__(self, plan: Plan, shard: tuple[int, int]):
        self.plan, self.shard = plan, shard
        self.counts: collections.Counter = collections.Counter()
        self.start = time.monotonic()
        self.steady_seconds, self.steady_items, self.compiles = 0.0, 0, 0
        self.programs: set = set()
        self.total = sum(len(b.items) for b in plan.shard(*shard))
        self.total += len([it for it in plan.items if it.batch < 0][shard[0] :: shard[1]])

    def batch(self, key, seconds: float, items: int) -> None:
        """A batch of ``items`` took ``seconds``; the first of each program ``key`` also
        compiled it, so its time is left out of the rate."""
        if key in self.programs:
            self.steady_seconds += seconds
            self.steady_items += items
        else:
            self.programs.add(key)
            self.compiles += 1

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1

    @property
    def images_per_second(self) -> float | None:
        """Items per second over the batches that compiled nothing (None before one)."""
        return self.steady_items / self.steady_seconds if self.steady_seconds else None

    def eta(self) -> float | None:
        """Seconds left at the steady rate (compiles to come not counted)."""
        rate = self.images_per_second
        left = self.total - sum(self.counts.values())
        return None if rate is None else left / rate

    def stats(self) -> dict:
        return {
            **{status: self.counts[status] for status in STATUSES},
            "items": self.total,
            "images_per_second": self.images_per_second,
            "seconds": round(time.monotonic() - self.start, 3),
            "compiles": self.compiles,
            "failures": self.counts["failed"],
        }

    def write(self) -> Path:
        """The shard's stats file beside the manifest, written atomically."""
        index, count = self.shard
        path = manifest.folder(self.plan.out) / f"stats-{index}-of-{count}.json"
        text = json.dumps(self.stats(), indent=2, sort_keys=True)
        return atomic_write(path, lambda tmp: tmp.write_text(text))


def summary(plan: Plan) -> dict[str, int]:
    """The whole job's state from its manifest (every shard's records): items done,
    failed, and not yet finished."""
    finished = manifest.finished(plan, manifest.read_records(plan.out))
    counts = collections.Counter(record["status"] for record in finished.values())
    return {
        "done": counts["done"],
        "failed": counts["failed"],
        "pending": len(plan.items) - len(finished),
    }
