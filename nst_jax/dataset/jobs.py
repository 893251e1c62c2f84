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

from nst_jax.dataset import manifest, records
from nst_jax.dataset.engine import STATUSES, Outcome
from nst_jax.dataset.plan import Plan
from nst_jax.errors import OutputError, shown
from nst_jax.files.atomic import atomic_write


def start(plan: Plan, force: bool = False) -> bool:
    """Make ``plan.out`` this job's folder; returns whether the job continues one begun.

    A folder without a manifest gets this plan's, once none of the planned outputs is in
    the way. A folder with this job's manifest continues it, and ``plan`` becomes the one
    the manifest holds (its batches are what earlier runs ran; an input that failed at
    planning and reads now gets a batch of its own: :func:`nst_jax.dataset.manifest.
    continued`). A folder with another job's is refused, naming the first setting, style or
    input that differs. ``force`` starts the job over: its manifest written afresh, earlier
    records dropped, outputs replaced.

    Raises:
      InputError: another job's manifest, or outputs in the way (one line).
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan (dataset.plan_job), got {type(plan).__name__}")
    records.check_own_folder(plan.out)
    if force:
        for pattern in ("done-*-of-*.jsonl", "index-*-of-*.csv", "stats-*-of-*.json"):
            for path in manifest.folder(plan.out).glob(pattern):
                path.unlink()
        manifest.write_plan(plan)
        return False
    stored = manifest.read_plan(plan.out)
    if stored is not None:
        manifest.check_same(plan, stored)
        job = manifest.continued(plan, manifest.load_plan(plan.out))
        if json.loads(json.dumps(manifest.plan_record(job))) != stored:  # fixed inputs added
            manifest.write_plan(job)
        plan.items, plan.batches = job.items, job.batches
        return True
    _refuse_existing(plan)
    manifest.write_plan(plan)
    return False


def _refuse_existing(plan: Plan) -> None:
    existing = [it.output for it in plan.items if Path(it.output).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"{shown(existing[0])}: exists{more}; --force replaces it")


class Progress:
    """A shard's counts in this run, its steady rate, its ETA and its stats file.

    The rate leaves out the batches that compiled a program (the first of each shape), and
    the ETA adds the compiles still to come (their mean time, for each program not yet
    compiled among the batches left). Items finished by earlier runs count as skipped, and
    leave the ETA alone.
    """

    def __init__(self, plan: Plan, shard: tuple[int, int]):
        self.plan, self.shard = plan, shard
        self.counts: collections.Counter = collections.Counter()
        self.earlier_failed = 0
        self.start = time.monotonic()
        self.steady_seconds, self.steady_items = 0.0, 0
        self.compile_seconds: list[float] = []
        self.programs: set = set()
        self.left: list = []  # batches still to run, once known
        self.total = len(records.shard_items(plan, shard))

    def to_run(self, batches: list) -> None:
        """The batches this run will run (the others were finished before)."""
        self.left = list(batches)

    def batch(self, batch, seconds: float, items: int) -> None:
        """``batch`` ran ``items`` in ``seconds``; the first of each program also compiled
        it, so its time is left out of the rate (and kept as a compile's)."""
        self.left = [b for b in self.left if b.index != batch.index]
        if batch.key in self.programs:
            self.steady_seconds += seconds
            self.steady_items += items
        else:
            self.programs.add(batch.key)
            self.compile_seconds.append(seconds)

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        self.earlier_failed += outcome.status == "skipped" and outcome.earlier == "failed"

    @property
    def images_per_second(self) -> float | None:
        """Items per second over the batches that compiled nothing (None before one)."""
        return self.steady_items / self.steady_seconds if self.steady_seconds else None

    def eta(self) -> float | None:
        """Seconds left: the items left at the steady rate, and the compiles to come."""
        rate = self.images_per_second
        if rate is None:
            return None
        left = self.total - sum(self.counts.values())
        programs = {b.key for b in self.left} - self.programs
        per_compile = max(0.0, sum(self.compile_seconds) / len(self.compile_seconds) - 1 / rate)
        return left / rate + len(programs) * per_compile

    def stats(self) -> dict:
        return {
            **{status: self.counts[status] for status in STATUSES},
            "earlier_failed": self.earlier_failed,
            "items": self.total,
            "images_per_second": self.images_per_second,
            "seconds": round(time.monotonic() - self.start, 3),
            "compiles": len(self.programs),
            "failures": self.counts["failed"],
        }

    def write(self) -> Path:
        """The shard's stats file beside the manifest, written atomically."""
        index, count = self.shard
        path = manifest.folder(self.plan.out) / f"stats-{index}-of-{count}.json"
        text = json.dumps(self.stats(), indent=2, sort_keys=True)
        return atomic_write(path, lambda tmp: tmp.write_text(text))


def summary(plan: Plan, shard: tuple[int, int] | None = None) -> dict[str, int]:
    """The job's state from its trusted records (every shard's): items done, failed, and
    not yet finished; of shard ``shard``'s items alone when given."""
    finished = records.finished(plan, records.read_records(plan))
    mine = records.shard_items(plan, shard) if shard is not None else range(len(plan.items))
    counts = collections.Counter(finished[i]["status"] for i in mine if i in finished)
    pending = len(mine) - sum(counts.values())
    return {"done": counts["done"], "failed": counts["failed"], "pending": pending}
