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
