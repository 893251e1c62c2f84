"""One watcher for every driver: progress, a JSON-lines log, previews, an animation, a loss
plot, checkpoints on a cadence, and stopping when asked. It is a hook
(:mod:`nst_jax.events`), so it runs between compiled pieces of work, never inside the
jitted step, for ``stylize``, the frame loop and training alike::

    watcher = Watcher(log=Path("run.jsonl"), checkpoint=RunCheckpoint("out.ckpt", meta),
                      checkpoint_every=100)
    result = nst_jax.stylize(content, style, params=params, config=config, on_event=watcher)
    watcher.finish()
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nst_jax.errors import InputError, OutputError
from nst_jax.events import Event, StopRun
from nst_jax.files import image, sheets
from nst_jax.files.atomic import atomic_write
from nst_jax.session.progress import Progress

# The events a log records: every chunk of stylize, every training step, every finished
# frame (a frame's chunks only move the bar).
LOGGED = {("stylize", "chunk"), ("fit", "step"), ("frames", "frame")}


class Checkpointer(Protocol):
    """What saves a driver's state (``event.state``): :class:`~nst_jax.session.checkpoint.
    RunCheckpoint` for ``stylize``, :class:`~nst_jax.session.train_checkpoints.
    TrainCheckpoints` for training."""

    def save(self, state: Any) -> Path: ...


def crossed(previous: int, step: int, every: int | None) -> bool:
    """Whether a multiple of ``every`` lies in ``(previous, step]``."""
    return bool(every) and step // every > previous // every


@dataclasses.dataclass
class Watcher:
    """The hook that watches a run (module docstring); call :meth:`finish` after it.

    Attributes:
      progress: draw a progress bar on stderr (tqdm), over the events' steps (its timing
        is kept either way: :meth:`summary`).
      log: JSON-lines file, a line per logged event (:data:`LOGGED`): ``step``, each loss
        term of the first image and their ``total``, ``seconds`` since the watch began.
      resume_step: a continued run's step: the log keeps the lines up to it and goes on
        (``None``: a fresh log, started at the first line).
      output: the result's path; previews go beside it as ``OUT_0100.png``.
      save_every: steps between previews (``event.image``).
      previews: the preview paths checked before the run (``None``: any may be replaced).
        A preview elsewhere (a scale ended early by ``tol`` moves the later chunks' steps)
        is written only where no file is, never replacing one.
      animate: ``.gif`` or ``.mp4`` of the previews.
      checkpoint: saves ``event.state`` every ``checkpoint_every`` steps, when asked to
        stop, and at :meth:`finish`.
      checkpoint_every: steps between checkpoints (``None``: only when stopping and at the
        end).
      plot: a plot of the logged terms, written at :meth:`finish` (needs matplotlib).
      stop: asked after each event; when true the state is checkpointed and the run ended
        (:class:`~nst_jax.events.StopRun`): a signal's handler sets it, say.
    """

    progress: bool = False
    log: Path | None = None
    resume_step: int | None = None
    output: Path | None = None
    save_every: int | None = None
    previews: frozenset[Path] | None = None
    animate: Path | None = None
    checkpoint: Checkpointer | None = None
    checkpoint_every: int | None = None
    plot: Path | None = None
    stop: Callable[[], bool] | None = None
    last_event: Event | None = None
    last_checkpoint: Path | None = None
    stopped: bool = False
    records: list[dict] = dataclasses.field(default_factory=list)
    frames: list[np.ndarray] = dataclasses.field(default_factory=list)
    bar: Progress | None = None
    began: float = dataclasses.field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.last_step = self.resume_step or 0
        if self.log is not None and self.resume_step is not None:
            self.records = kept_records(self.log, self.resume_step)
        self._kept = len(self.records)

    def __call__(self, event: Event) -> None:
        if self.bar is None:  # its timing is kept quiet or not (summary())
            self.bar = Progress(
                event.total, self.resume_step or 0, quiet=not self.progress, start=self.began
            )
        self.bar(event)
        if (event.driver, event.kind) in LOGGED:
            self._log(event)
        if crossed(self.last_step, event.step, self.save_every) and event.image is not None:
            self._preview(event)
        if crossed(self.last_step, event.step, self.checkpoint_every):
            self.save_checkpoint(event.state)
        self.last_step, self.last_event = event.step, event
        if self.stop is not None and self.stop():
            self.stopped = True
            if self.checkpoint is not None:
                self.save_checkpoint(event.state)
            raise StopRun

    def save_checkpoint(self, state: Any) -> None:
        if self.checkpoint is not None:
            self.last_checkpoint = self.checkpoint.save(state)

    def _preview(self, event: Event) -> None:
        frame = np.asarray(event.image)
        path = preview_path(self.output, event.step)
        planned = self.previews is None or path in self.previews
        try:
            image.save(path, frame, replace=planned)
        except OutputError:
            if planned:
                raise  # off the plan, a file already there stays as it is
        if self.animate is not None:
            self.frames.append(sheets.thumbnail(frame, 512))

    def _log(self, event: Event) -> None:
        first = lambda v: float(np.ravel(v)[0])  # noqa: E731 (the batch's first image)
        record = {"step": event.step, **{k: first(v) for k, v in event.terms.items()}}
        record.setdefault("total", first(event.loss))
        record["seconds"] = round(time.perf_counter() - self.began, 3)
        self.records.append(record)
        if self.log is None:
            return
        if len(self.records) == self._kept + 1:
            # The log is written afresh at this run's first record (a run refused before
            # any work leaves it alone): a fresh run's empty, a continued one's with the
            # lines up to its step (the steps after it are redone).
            write_records(self.log, self.records[:-1])
        try:
            with self.log.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise OutputError(f"{self.log}: cannot write ({e.strerror})") from None

    def summary(self, images: int, steps: int) -> str:
        """The closing line: image-steps per second after compile (:class:`Progress`)."""
        if self.bar is None:
            return f"{images} image(s) x {steps} steps: nothing left to run"
        return self.bar.summary(images, steps)

    def finish(self) -> None:
        """The last checkpoint (when checkpointing on a cadence), the plot, the animation,
        the bar closed."""
        if self.bar is not None:
            self.bar.close()
        if self.checkpoint_every and self.last_event is not None:
            self.save_checkpoint(self.last_event.state)
        if self.plot is not None and self.records:
            plot_losses(self.records, self.plot)
        if self.animate is not None and self.frames:
            write_animation(self.frames, self.animate)


def kept_records(log: Path, step: int) -> list[dict]:
    """The records of a log up to ``step`` (a continued run redoes the steps after it); a
    line cut short by a kill ends them. The log is untrusted: what is not a record ends
    them too."""
    records = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                break
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                break
            if record["step"] > step:
                break
            records.append(record)
    return records


def write_records(log: Path, records: list[dict]) -> None:
    """``log`` as these records, written atomically."""
    lines = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(log, lambda tmp: tmp.write_text(lines))


def preview_path(output: Path, step: int) -> Path:
    """Where ``save_every`` writes the image after ``step``: ``OUT_0100.png`` beside OUT."""
    return output.with_name(f"{output.stem}_{step:04d}.png")


def preview_steps(scale_steps: list[int], steps_per_call: int, every: int) -> list[int]:
    """The steps after which ``save_every=every`` writes an image: the ends of the chunks
    (``steps_per_call`` long, restarted at each scale) that cross a multiple of ``every``."""
    ends, done = [], 0
    for steps in scale_steps:
        end = done + steps
        while done < end:
            done = min(done + steps_per_call, end)
            ends.append(done)
    previous, chosen = 0, []
    for step in ends:
        if crossed(previous, step, every):
            chosen.append(step)
        previous = step
    return chosen


def check_extras(plot: Path | None, animate: Path | None, save_every: int | None = None) -> None:
    """Fail before any work when an optional library a requested output needs is missing, or
    when ``animate`` has no frames to show (it animates the ``save_every`` images)."""
    if animate is not None and not save_every:
        raise InputError(f"{animate}: --animate shows the --save-every images; add --save-every N")
    if plot is not None:
        _require("matplotlib", "--plot")
        _check_plot_format(plot)
    if animate is not None:
        if animate.suffix.lower() not in (".gif", ".mp4"):
            raise InputError(f"{animate}: --animate writes .gif or .mp4")
        if animate.suffix.lower() == ".mp4":
            _require("imageio", "--animate .mp4")  # its writer, with imageio-ffmpeg's binary
            _require("imageio_ffmpeg", "--animate .mp4")


def _check_plot_format(plot: Path) -> None:
    """The plot's extension is one matplotlib writes (it is the format: plot_losses)."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = plot.suffix.lower().lstrip(".")
    if suffix and suffix not in formats:
        raise InputError(f"{plot}: --plot writes {', '.join(sorted(formats))}, not .{suffix}")


def _require(module: str, option: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"{option} needs {module}: pip install 'nst_jax[viz]'")


def plot_losses(records: list[dict], path: Path) -> None:
    """Each logged term against steps, log scale, written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in records]
    terms = [k for k in records[0] if k not in ("step", "seconds")]
    for term in sorted(terms, key=lambda t: t != "total"):
        ax.plot(steps, [max(r.get(term, np.nan), 1e-30) for r in records], label=term)
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
