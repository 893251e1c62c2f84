"""The command's progress bar: image-steps, the current loss, and the closing line's timing."""

from __future__ import annotations

import sys
import time

from nst_jax.run.state import RunState


class Progress:
    """A tqdm bar over image-steps showing the current loss; timing for the closing line.

    Called with each chunk's :class:`RunState`; a step count that does not grow means the
    next batch has started.
    """

    def __init__(self, total: int, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", disable=quiet, file=sys.stderr, leave=False)
        self.start = time.perf_counter()
        self.first_chunk: tuple[int, float] | None = None  # (image-steps, time) incl. compile
        self.done = 0
        self.last_step = 0

    def __call__(self, state: RunState) -> None:
        steps = state.step - self.last_step if state.step > self.last_step else state.step
        self.last_step = state.step
        images = state.losses.shape[0]
        self.done += steps * images
        if self.first_chunk is None:
            self.first_chunk = (self.done, time.perf_counter())
        self.bar.set_postfix(loss=f"{float(state.losses[:, -1].mean()):.4g}", refresh=False)
        self.bar.update(steps * images)

    def tile(self, done: int, total: int) -> None:
        """Within a tiled step (minutes at print sizes): which tile of the step's pass 2."""
        self.bar.set_postfix_str(f"tile {done}/{total}")

    def summary(self, images: int, steps: int) -> str:
        """Image-steps per second after the first chunk, and the first chunk's time, which
        includes compilation (near zero with a warm persistent compilation cache)."""
        self.bar.close()
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
    of a new shape runs; it stops the job at a chunk's end after a signal."""

    def __init__(self, plan, shard: tuple[int, int], quiet: bool, signals):
        from tqdm import tqdm

        from nst_jax.dataset import Progress as Counts

        self.counts, self.signals = Counts(plan, shard), signals
        self.bar = tqdm(
            total=self.counts.total, unit="image", disable=quiet, file=sys.stderr, leave=False
        )
        self.compiling = False

    def on_chunk(self, state: RunState) -> None:
        """``stylize``'s hook: the run owns outputs from its first chunk; a signal ends the
        job here (the results of finished batches are kept, this batch's are not written)."""
        from nst_jax.cli.watch import RunInterruptedError

        self.signals.own_outputs()
        if self.signals.received is not None:
            raise RunInterruptedError(
                self.signals.received, "the results written so far are kept; rerun to continue"
            )

    def on_batch(self, batch, seconds: float | None, items: int) -> None:
        key = batch.key
        if seconds is None:  # a batch starts: a new shape compiles its program first
            if key not in self.counts.programs:
                height, width = batch.shape
                self.bar.set_postfix_str(f"compiling the {width}x{height} px program")
            return
        self.counts.batch(key, seconds, items)
        rate, eta = self.counts.images_per_second, self.counts.eta()
        if rate is not None:
            self.bar.set_postfix_str(f"{rate:.2f} images/s, ETA {eta:.0f} s", refresh=False)

    def add(self, outcome) -> None:
        self.counts.add(outcome)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        self.counts.write()

    def line(self) -> str:
        """This run's closing words: its counts and steady rate."""
        c, rate = self.counts.counts, self.counts.images_per_second
        speed = f", {rate:.2f} images/s after compiles" if rate is not None else ""
        return f"{c['done']} done, {c['failed']} failed, {c['skipped']} skipped{speed}"
