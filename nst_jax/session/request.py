"""What a stylisation by optimisation is asked to do (:class:`StylizeRequest`: the files, the
settings, the outputs and how the run is watched), checked as a whole before any work, and
whether it makes one result (:mod:`nst_jax.session.single`) or a job of many
(:mod:`nst_jax.session.jobs`).

One result: one content file, and one style (or a blend of several, or one per region),
with no sweep, written to an output with an image extension. Everything else is a job into
the output folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from nst_jax.config import StyleConfig
from nst_jax.dataset import JobSettings
from nst_jax.dataset.styles import job_styles
from nst_jax.errors import InputError
from nst_jax.files import image
from nst_jax.session import outputs
from nst_jax.session.memory import tiling_default
from nst_jax.session.plugins import Plugin, plugin_records

ENGINES = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class StylizeRequest:
    """A stylisation by optimisation: what it reads, its settings, what it writes.

    Attributes:
      contents: content files and folders.
      styles: style image files.
      output: an image file for one result, else a folder.
      config: the run's settings.
      job: how the inputs are loaded (``max_dim``) and, for a job, planned.
      files_from: a file listing more contents, one per line.
      styles_from: a file listing more styles, one per line (styles may also be folders).
      style_losses: several style losses swept, one result each (or ``None``).
      masks: one content region file per style (spatial control), or ``None``.
      mask_labels: a label image whose colours are the regions, or ``None``.
      style_masks: each style's own region file (or ``None`` for all of it), or ``None``.
      weights: the VGG19 weights file (``None``: searched).
      max_pixels: inputs larger than this are refused (decompression bombs).
      force: replace existing outputs (never an input).
      sheet: also write a labelled grid of the results here.
      resume: continue one result from its checkpoint.
      checkpoint_every, save_every: steps between checkpoints, previews.
      log, plot, animate: the watcher's JSON-lines log, loss plot and animation.
      memory_limit: GiB the run may take (default: what is available).
      compile_cache: the persistent compilation cache folder; ``off`` (the default: JAX's
        settings are left as the process has them, as a library must); ``None``: as the
        command does, ``$NST_JAX_COMPILE_CACHE`` or nst_jax's cache folder.
      shard: ``(I, N)``: part I of N of a job (``None``: all, or this host's part).
      retry_failed: a job's items that failed before are run again.
      engine: ``local`` or ``ray``; ``ray_address``, ``ray_workers``: Ray's.
      workers: threads decoding inputs ahead of the run.
      progress: draw progress bars.
      command: the command line, stored in each result's provenance.
      plugins: the plug-ins the run's terms come from (:mod:`nst_jax.session.plugins`):
        recorded in provenance and manifests, loaded by Ray's workers.
    """

    contents: tuple[str, ...]
    styles: tuple[str, ...]
    output: str
    config: StyleConfig = StyleConfig()
    job: JobSettings = JobSettings()
    files_from: str | None = None
    styles_from: str | None = None
    style_losses: tuple[str, ...] | None = None
    masks: tuple[str, ...] | None = None
    mask_labels: str | None = None
    style_masks: tuple[str | None, ...] | None = None
    weights: str | None = None
    max_pixels: int | None = image.MAX_PIXELS
    force: bool = False
    sheet: str | None = None
    resume: bool = False
    checkpoint_every: int | None = None
    save_every: int | None = None
    log: str | None = None
    plot: str | None = None
    animate: str | None = None
    memory_limit: float | None = None
    compile_cache: str | None = "off"
    shard: tuple[int, int] | None = None
    retry_failed: bool = False
    engine: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    workers: int = 2
    progress: bool = False
    command: tuple[str, ...] = ()
    plugins: tuple[Plugin, ...] = ()

    @property
    def masked(self) -> bool:
        return bool(self.masks or self.mask_labels)

    @property
    def max_dim(self) -> int:
        return self.job.max_dim

    def watching(self) -> list[str]:
        """The options that watch one result's run that this request sets."""
        names = ("checkpoint_every", "resume", "save_every", "log", "plot", "animate")
        return [name for name in names if getattr(self, name)]


def checked(request: StylizeRequest) -> StylizeRequest:
    """``request`` checked as a whole, with its style folders and list expanded into their
    files (each a readable image: :func:`nst_jax.dataset.styles.job_styles`) and
    ``tile="auto"`` where no tile is set and the run can be tiled (a run that would not fit
    is tiled rather than refused). Checking a checked request changes nothing.

    Raises:
      TypeError: a request of another type.
      InputError: settings that do not fit the files or each other (one line).
    """
    if not isinstance(request, StylizeRequest):
        raise TypeError(f"request must be a StylizeRequest, got {type(request).__name__}")
    has_styles = request.styles or request.styles_from
    if not (request.contents or request.files_from) or not has_styles or not request.output:
        raise InputError("contents, styles and an output are required")
    if request.engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}")
    image.check_max_pixels(request.max_pixels)
    outputs.check_resume_or_force(request.resume, request.force)
    styles = job_styles(request.styles, request.styles_from).paths
    request = dataclasses.replace(request, styles=styles, styles_from=None)
    config = request.config
    try:
        config.check_style_count(len(request.styles))
        if request.masks and len(request.masks) != len(request.styles):
            raise ValueError(
                f"{len(request.masks)} mask regions for {len(request.styles)} style images: "
                "give one style per region"
            )
        config = tiling_default(config, request.masked, request.style_losses)
        each = [config.replace(style_loss=s) for s in request.style_losses or ()] or [config]
        reasons = [c.unmaskable() for c in each] if request.masked else []
    except ValueError as e:
        raise InputError(str(e)) from None
    if request.style_masks is not None and not request.masked:
        raise InputError(
            "style_masks choose a style's part for a content region: give masks or mask_labels"
        )
    reason = next((r for r in reasons if r is not None), None)
    if reason is not None:
        raise InputError(reason)
    return dataclasses.replace(request, config=config)


def is_single(request: StylizeRequest) -> bool:
    """Whether ``request`` makes a single result (module docstring). An output that names
    one file (:func:`nst_jax.files.image.names_a_file`) with an unknown extension is refused
    here, a folder named like an image by the output checks, and a job of several results
    into an image file by the job's own check."""
    config = request.config
    blended = config.style_blend is not None or request.masked
    styles = 1 if blended else len(request.styles)
    single = (
        len(request.contents) == 1
        and not request.files_from
        and not Path(request.contents[0]).is_dir()
        and styles == 1
        and config.sweep_size is None
        and not (request.style_losses and len(request.style_losses) > 1)
    )
    names_a_file = image.names_a_file(request.output)
    if single and names_a_file:
        image.check_output_path(request.output)  # one line: an unknown extension
    return single and names_a_file


def metadata(request: StylizeRequest, weights_md5: str) -> dict[str, Any]:
    """Provenance stored in each PNG result (and a checkpoint's settings)."""
    return {
        "command": list(request.command),
        "config": dataclasses.asdict(request.config),
        "max_dim": request.max_dim,
        "weights_md5": weights_md5,
        "style": [str(s) for s in request.styles],
        "mask": list(request.masks) if request.masks else None,
        "mask_labels": request.mask_labels,
        "style_mask": list(request.style_masks) if request.style_masks is not None else None,
    } | plugin_records(request.plugins)
