"""Progress bars: a run's image-steps with the current loss and the closing line's timing
(:class:`Progress`), and a dataset job's items with its steady rate and ETA
(:class:`JobProgress`)."""

from __future__ import annotations

import sys
import time

import numpy as np

from nst_jax.events import Event


class Progress:
    """A tqdm bar over image-steps showing the current loss, and the closing line's timing.

    Called with each :class:`~nst_jax.events.Event` of a run (:class:`~nst_jax.session.
    Watcher` calls it); ``resume``: the step a continued run starts from.
    """

    def __init__(
        self, total: int, resume: int = 0, quiet: bool = False, start: float | None = None
    ):
        from tqdm import tqdm

        self.total, self.resume = total, resume
        self.bar = tqdm(unit="step", disable=quiet, file=sys.stderr, leave=False)
        # When the run began (``perf_counter``): a bar made at the first event would leave
        # the first chunk, compilation included, out of every figure.
        self.start = time.perf_counter() if start is None else start
        self.first_chunk: tuple[int, float] | None = None  # (image-steps, time) incl. compile
        self.done = 0
        self.last_step = resume

    def __call__(self, event: Event) -> None:
        images = int(np.size(event.loss))
        if self.bar.total is None:
            self.bar.reset(total=event.total * images)
            self.bar.update(self.resume * images)
        steps = event.step - self.last_step
        self.last_step = event.step
        self.done += steps * images
        if self.first_chunk is None:
            self.first_chunk = (self.done, time.perf_counter())
        self.bar.set_postfix(loss=f"{float(np.mean(event.loss)):.4g}", refresh=False)
        self.bar.update(steps * images)

    def tile(self, done: int, total: int) -> None:
        """Within a tiled step (minutes at print sizes): which tile of the step's pass 2."""
        self.bar.set_postfix_str(f"tile {done}/{total}")

    def close(self) -> None:
        self.bar.close()

    def summary(self, images: int, steps: int) -> str:
        """Image-steps per second after the first chunk, and the first chunk's time, which
        includes compilation (near zero with a warm persistent compilation cache)."""
        self.close()
        end = time.perf_counter()
        first_done, first_time = self.first_chunk or (0, self.start)
        if self.done > first_done:
            rate = (self.done - first_done) / (end - first_time)
        else:
            rate = self.done / (end - self.start)
        noun = "image" if images == 1 else "images"
        return (
            f"{images} {noun} x {steps} steps in {end - self.start:.1f} s "
            f"({rate:.2f} image-steps/s after compile; first chunk with compile "
            f"{first_time - self.start:.1f} s)"
        )


class JobProgress:
    """A job's bar over its items: done, failed and skipped, its steady images/s and ETA
    (:class:`nst_jax.dataset.Progress` leaves compiles out), and ``compiling`` while a batch
    of a new shape runs."""

    def __init__(self, plan, shard: tuple[int, int], quiet: bool):
        from tqdm import tqdm

        from nst_jax.dataset import Progress as Counts

        self.counts = Counts(plan, shard)
        # tqdm's own rate and ETA would count skipped items and leave out compiles to come:
        # the bar shows the job's own (Counts), and its total leaves skipped items out.
        form = "{l_bar}{bar}| {n_fmt}/{total_fmt} {postfix}"
        self.bar = tqdm(total=self.counts.total, unit="image", disable=quiet, file=sys.stderr,
                        leave=False, bar_format=form)  # fmt: skip

    def on_start(self, batches) -> None:
        self.counts.to_run(batches)

    def on_batch(self, batch, seconds: float | None, items: int) -> None:
        key = batch.key
        if seconds is None:  # a batch starts: a new shape compiles its program first
            if key not in self.counts.programs:
                height, width = batch.shape
                self.bar.set_postfix_str(f"compiling the {width}x{height} px program")
            return
        self.counts.batch(batch, seconds, items)
        rate, eta = self.counts.images_per_second, self.counts.eta()
        if rate is not None:
            self.bar.set_postfix_str(f"{rate:.2f} images/s, ETA {eta:.0f} s", refresh=False)

    def add(self, outcome) -> None:
        self.counts.add(outcome)
        if outcome.status == "skipped":  # finished before: no part of this run's work
            self.bar.total -= 1
            self.bar.refresh()
        else:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        self.counts.write()

    def line(self) -> str:
        """This run's closing words: its counts and steady rate."""
        c, rate = self.counts.counts, self.counts.images_per_second
        speed = f", {rate:.2f} images/s after compiles" if rate is not None else ""
        earlier = self.counts.earlier_failed
        failed_before = f" ({earlier} of them failed earlier)" if earlier else ""
        return (
            f"{c['done']} done, {c['failed']} failed, {c['skipped']} skipped{failed_before}{speed}"
        )
