"""Watching and protecting a long run: checkpoints, interrupts, intermediate images, a JSON-lines
log, a loss plot and an animation. All of it hangs off ``stylize``'s ``on_chunk`` hook, so it
runs between compiled chunks and never inside the jitted step.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from nst_jax.cli import checkpoint
from nst_jax.cli.signals import EXIT_BY_SIGNAL, Signals
from nst_jax.errors import InputError, OutputError
from nst_jax.files import image
from nst_jax.files.atomic import atomic_write
from nst_jax.run.state import RunState

# The options that watch one result's run (refused for a job of many results).
WATCH_OPTIONS = ("checkpoint_every", "resume", "save_every", "log", "plot", "animate")


class RunInterruptedError(Exception):
    """Raised between chunks after a SIGINT/SIGTERM, once what the run promised is saved;
    its message is the one line the command prints."""

    def __init__(self, signum: int, message: str):
        super().__init__(f"{signal.Signals(signum).name} {message}")
        self.exit_status = EXIT_BY_SIGNAL.get(signum, 1)


def _crossed(previous: int, step: int, every: int | None) -> bool:
    """Whether a multiple of ``every`` lies in ``(previous, step]``."""
    return bool(every) and step // every > previous // every


@dataclasses.dataclass
class Watcher:
    """The ``on_chunk`` hook of a single-image run.

    Attributes:
      output: the final image's path; checkpoints go to ``OUT.ckpt/``, intermediate images to
        ``OUT_0100.png`` beside it.
      meta: settings, weights hash and inputs, stored with each checkpoint and in the output.
      checkpoint_every: steps between checkpoints (``None``: only on interrupt and at the end).
      save_every: steps between intermediate images.
      log: JSON-lines file, one line per chunk: step, each loss term and their total before
        that step (as ``losses``), seconds.
      animate: ``.gif`` (Pillow) or ``.mp4`` (needs imageio-ffmpeg) of the intermediate images.
      append_log: continue the log (a resumed run) rather than start it afresh.
    """

    output: Path
    meta: dict[str, Any]
    checkpoint_every: int | None = None
    save_every: int | None = None
    log: Path | None = None
    animate: Path | None = None
    append_log: bool = False
    last_step: int = 0
    last_checkpoint: Path | None = None
    final_state: RunState | None = None
    frames: list[np.ndarray] = dataclasses.field(default_factory=list)
    records: list[dict[str, float]] = dataclasses.field(default_factory=list)
    signals: Signals | None = None
    start: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint.directory(self.output)

    def __call__(self, state: RunState) -> None:
        self.final_state = state
        self._log(state)
        if _crossed(self.last_step, state.step, self.save_every):
            frame = np.asarray(state.images[0])
            path = preview_path(self.output, state.step)
            image.save(path, frame)
            if self.animate is not None:
                self.frames.append(image.thumbnail(frame, 512))
        if _crossed(self.last_step, state.step, self.checkpoint_every):
            self.save_checkpoint(state)
        self.last_step = state.step
        received = None if self.signals is None else self.signals.received
        if received is not None:
            image.save(self.output, np.asarray(state.images[0]), metadata=self.meta)
            self.save_checkpoint(state)
            raise RunInterruptedError(
                received,
                f"at step {state.step}: image saved to {self.output}, checkpoint to "
                f"{self.checkpoint_dir}; add --resume to continue",
            )

    def save_checkpoint(self, state: RunState) -> None:
        self.last_checkpoint = checkpoint.save(self.checkpoint_dir, state, self.meta)

    def _log(self, state: RunState) -> None:
        # The terms the step computed for its last image: the loss before step `state.step`.
        record = {
            "step": state.step,
            **{name: float(value[0]) for name, value in state.terms.items()},
            "seconds": round(time.perf_counter() - self.start, 3),
        }
        self.records.append(record)
        if self.log is not None:
            # A fresh run's log starts empty at its first record (not earlier: a run refused
            # before any work leaves the old log alone); a resumed run's log goes on.
            mode = "a" if self.append_log or len(self.records) > 1 else "w"
            try:
                with self.log.open(mode) as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                raise OutputError(f"{self.log}: cannot write ({e.strerror})") from None

    def finish(self, state: RunState, plot: Path | None = None) -> None:
        """Final checkpoint (if checkpointing), plot and animation."""
        if self.checkpoint_every:
            self.save_checkpoint(state)
        if plot is not None:
            plot_losses(self.records, plot)
        if self.animate is not None and self.frames:
            write_animation(self.frames, self.animate)


def preview_path(output: Path, step: int) -> Path:
    """Where ``--save-every`` writes the image after ``step``: ``OUT_0100.png`` beside OUT."""
    return output.with_name(f"{output.stem}_{step:04d}.png")


def preview_steps(scale_steps: list[int], steps_per_call: int, every: int) -> list[int]:
    """The steps after which ``--save-every every`` writes an image: the ends of the chunks
    (``steps_per_call`` long, restarted at each scale) that cross a multiple of ``every``."""
    ends, done = [], 0
    for steps in scale_steps:
        end = done + steps
        while done < end:
            done = min(done + steps_per_call, end)
            ends.append(done)
    previous, chosen = 0, []
    for step in ends:
        if _crossed(previous, step, every):
            chosen.append(step)
        previous = step
    return chosen


def check_extras(plot: Path | None, animate: Path | None, save_every: int | None = None) -> None:
    """Fail before any work when an optional library a requested output needs is missing, or
    when ``--animate`` has no frames to show (it animates the ``--save-every`` images)."""
    if animate is not None and not save_every:
        raise InputError(f"{animate}: --animate shows the --save-every images; add --save-every N")
    if plot is not None:
        _require("matplotlib", "--plot")
    if animate is not None:
        if animate.suffix.lower() not in (".gif", ".mp4"):
            raise InputError(f"{animate}: --animate writes .gif or .mp4")
        if animate.suffix.lower() == ".mp4":
            _require("imageio_ffmpeg", "--animate .mp4")


def _require(module: str, option: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"{option} needs {module}: pip install 'nst_jax[viz]'")


def plot_losses(records: list[dict], path: Path, terms=("total", "style", "content", "tv")) -> None:
    """Each loss term against steps, log scale, written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in records]
    for term in terms:
        ax.plot(steps, [max(r[term], 1e-30) for r in records], label=term)
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)


def write_animation(frames: list[np.ndarray], path: Path) -> None:
    """A GIF (Pillow) or MP4 (imageio-ffmpeg) of the frames, written atomically."""
    from PIL import Image

    pictures = [Image.fromarray(image.to_uint8(f)) for f in frames]
    if path.suffix.lower() == ".gif":
        atomic_write(
            path,
            lambda tmp: pictures[0].save(
                tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=200, loop=0
            ),
        )
        return
    import imageio.v2 as imageio

    def write(tmp: Path) -> None:
        with imageio.get_writer(tmp, format="FFMPEG", fps=5) as writer:
            for picture in pictures:
                writer.append_data(np.asarray(picture))

    atomic_write(path, write)
