"""Stylising many files: folders expanded, jobs planned (content x style x setting), grouped by
shape into batches, each result saved under its input's name, and an optional contact sheet.

The command's multi-file mode is these calls::

    work = jobs.prepare(["photos/"], ["style.jpg"], config)
    for job, path in jobs.run(work, outputs.output_paths(work.jobs, "out/"), params=params):
        ...
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from nst_jax.config import INITS, StyleConfig
from nst_jax.core import objective
from nst_jax.errors import ImageError, InputError, shown
from nst_jax.files import image
from nst_jax.run.stylize import stylize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Short labels of the swept settings, used in output names and sheet labels.
SHORT = {"content_weight": "cw", "style_weight": "sw", "tv_weight": "tv", "learning_rate": "lr"}
# Swept settings that change the program: a batch holds one value of each.
STATIC_SWEPT = ("style_loss",)


@dataclasses.dataclass(frozen=True)
class Job:
    """One result: a content file, a style (index), a setting (values of the swept fields)."""

    content: Path
    style: int
    setting: tuple[tuple[str, float], ...]
    name: str  # output file stem, also its label on a contact sheet


@dataclasses.dataclass
class Work:
    """What :func:`prepare` found: loaded images, jobs in batches, and per-file errors."""

    contents: dict[Path, np.ndarray]
    styles: list[np.ndarray]
    jobs: list[Job]
    batches: list[list[Job]]
    errors: list[str]
    config: StyleConfig
    masks: list[np.ndarray] | None = None  # (H, W) content regions, one per style
    style_masks: list[np.ndarray | None] | None = None  # each style's own region


def expand_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders replaced by their image files (by suffix, sorted, not recursive)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    return files


def check_named(paths: Sequence[str | os.PathLike]) -> None:
    """Refuse, in one line before any work, inputs named that do not exist (however many:
    a record replayed with ``--from`` may name thousands)."""
    missing = []
    for path in paths:
        try:
            exists = Path(path).exists()
        except OSError:  # a name too long to look at
            exists = False
        if not exists:
            missing.append(path)
    if missing:
        more = (
            f" (and {len(missing) - 1} more inputs that do not exist)" if len(missing) > 1 else ""
        )
        raise InputError(f"{shown(missing[0])}: no such file{more}")


def settings(config: StyleConfig) -> list[tuple[tuple[str, float], ...]]:
    """The swept settings as ``((field, value), ...)`` per setting; ``[()]`` without a sweep."""
    size = config.sweep_size
    if size is None:
        return [()]
    swept = [f for f in SHORT if isinstance(getattr(config, f), tuple)]
    return [tuple((f, getattr(config, f)[i]) for f in swept) for i in range(size)]


def plan_jobs(
    contents: Sequence[Path],
    style_paths: Sequence[Path],
    config: StyleConfig,
    regions: bool = False,
    style_losses: Sequence[str] | None = None,
) -> list[Job]:
    """Every content x style x setting (x style loss), named
    ``content[_style][_sw0.01...][_w2]``.

    Raises:
      InputError: two jobs would get the same name (inputs with the same stem).
    """
    jobs = []
    # A blend, or regions, make one result of all the style files (style index -1).
    shared = config.style_blend is not None or regions
    styles = [(-1, None)] if shared else list(enumerate(style_paths))
    losses = [(("style_loss", loss),) for loss in style_losses] if style_losses else [()]
    for content in contents:
        for s, style in styles:
            for setting in settings(config):
                for loss in losses:
                    parts = [content.stem]
                    if style is not None and len(style_paths) > 1:
                        parts.append(style.stem)
                    parts.extend(f"{SHORT[field]}{value:g}" for field, value in setting)
                    parts.extend(value for _, value in loss)
                    jobs.append(Job(content, s, setting + loss, "_".join(parts)))
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.name in seen:
            first = seen[job.name]
            raise InputError(
                f"{job.content}: two results would be named {job.name!r} ({_describe(first)} "
                f"and {_describe(job, style_paths)}); rename an input"
            )
        seen[job.name] = job
    return jobs


def _describe(job: Job, style_paths: Sequence[Path] = ()) -> str:
    style = f", style {style_paths[job.style]}" if 0 <= job.style < len(style_paths) else ""
    setting = "".join(f", {field}={value!r}" for field, value in job.setting)
    return f"content {job.content}{style}{setting}"


def plan(
    contents: Sequence[str | os.PathLike],
    styles: Sequence[str | os.PathLike],
    config: StyleConfig,
    process_index: int = 0,
    process_count: int = 1,
    *,
    regions: int | None = None,
    style_losses: Sequence[str] | None = None,
) -> list[Job]:
    """This host's jobs, from file names alone (nothing is read).

    Args:
      contents: files or folders.
      styles: style files.
      config: settings (sweeps as tuples).
      process_index: this host's index, for multi-host runs (each host takes every
        ``process_count``-th job).
      process_count: number of hosts.
      regions: the number of content regions (masks), one per style; ``None``: no masks.
      style_losses: several style losses, one result each.

    Raises:
      InputError: no image files, a blend, regions or per-style settings of another count
        than the styles, or two results with one name.
    """
    try:
        config.check_style_count(len(styles))
    except ValueError as e:
        raise InputError(str(e)) from None
    if regions is not None and regions != len(styles):
        raise InputError(
            f"{regions} mask regions for {len(styles)} --style images: give one region per style"
        )
    check_named(contents)
    files = expand_inputs(contents)
    if not files:
        raise InputError(f"no image files in {', '.join(shown(c) for c in contents)}")
    style_paths = [Path(s) for s in styles]
    jobs = plan_jobs(files, style_paths, config, regions is not None, style_losses)
    return jobs[process_index::process_count]


def _batches(jobs: Sequence[Job], shape_of: dict, batch_size: int) -> list[list[Job]]:
    """Jobs grouped by their content's shape, at most ``batch_size`` to a batch."""
    by_shape: dict[tuple, list[Job]] = {}
    for job in jobs:
        program = tuple((f, v) for f, v in job.setting if f in STATIC_SWEPT)
        by_shape.setdefault((shape_of[job.content], program), []).append(job)
    return [
        group[i : i + batch_size]
        for group in by_shape.values()
        for i in range(0, len(group), batch_size)
    ]


def planned_shapes(
    jobs: Sequence[Job], config: StyleConfig, max_dim: int | None, batch_size: int
) -> list[tuple[Path, int, int, int]]:
    """``(first content, n, height, width)`` of each batch the jobs will run in, from the
    files' headers: no pixel is decoded or resized, so the memory a size needs can be checked
    first. Files whose header cannot be read, or that are too small for the layers, are left
    out (:func:`load` reports them)."""
    smallest = objective.min_side(config)
    shape_of = {}
    for path in dict.fromkeys(job.content for job in jobs):
        size = image.probe_size(path)
        if size is not None and max_dim is not None:
            size = image.scaled_shape(*size, max_dim)
        if size is not None and min(size) >= smallest:
            shape_of[path] = size
    batches = _batches([job for job in jobs if job.content in shape_of], shape_of, batch_size)
    return list(dict.fromkeys((b[0].content, len(b), *shape_of[b[0].content]) for b in batches))


def load(
    jobs: Sequence[Job],
    styles: Sequence[str | os.PathLike],
    config: StyleConfig,
    max_dim: int | None = 512,
    batch_size: int = 8,
    max_pixels: int | None = image.MAX_PIXELS,
    masks: Sequence[str | os.PathLike] | None = None,
    mask_labels: str | os.PathLike | None = None,
    style_masks: Sequence[str | os.PathLike | None] | None = None,
) -> Work:
    """Load the images of ``jobs`` and group them into batches of equal shape.

    A content file that cannot be used becomes one line in ``errors`` and its jobs are dropped;
    a style that cannot be used raises, since no job could run without it.

    Args:
      jobs: from :func:`plan`.
      styles: style files.
      config: settings.
      max_dim: longest side of every image after loading (``None``: as stored).
      batch_size: most images per batch (bounds memory).
      max_pixels: larger inputs are refused (decompression bombs).
      masks: one grey mask file per style (content regions), or
      mask_labels: one label image whose colours are the regions.
      style_masks: each style's own region file, or ``None``.

    Raises:
      InputError: a style, mask or init file is unreadable or too small; a label image with
        another number of regions than styles.
    """
    style_arrays = []
    for path, style_dim in zip(styles, style_dims(styles, config, max_dim), strict=True):
        array = image.load(path, style_dim, max_pixels)
        _check_size(path, array, config, style_dim, style=True)
        style_arrays.append(array)
    regions = _load_regions(masks, mask_labels, len(styles), max_pixels)
    own = None
    if style_masks is not None:
        own = [None if p is None else image.load_mask(p, max_pixels) for p in style_masks]
    if config.init not in INITS:
        image.load(config.init, None, max_pixels)  # fail now, naming the file, not mid-run
    loaded, errors = {}, []
    for path in dict.fromkeys(job.content for job in jobs):
        try:
            array = image.load(path, max_dim, max_pixels)
            _check_size(path, array, config, max_dim)
            loaded[path] = array
        except ImageError as e:
            errors.append(str(e))
    jobs = [job for job in jobs if job.content in loaded]
    shapes = {path: array.shape for path, array in loaded.items()}
    batches = _batches(jobs, shapes, batch_size)
    return Work(loaded, style_arrays, jobs, batches, errors, config, regions, own)


def style_dims(styles: Sequence, config: StyleConfig, max_dim: int | None) -> list:
    """The longest side each style is loaded at: ``max_dim``, or with a style scale that
    times ``max_dim`` (the style is resized relative to the content, so it is loaded at that
    size rather than upsampled from ``max_dim`` later)."""
    scales = config.style_scales or (None,) * len(styles)
    dims = []
    for scale in scales:
        scale = scale if scale is not None else config.style_scale
        dims.append(max_dim if scale is None or max_dim is None else max(1, round(scale * max_dim)))
    return dims


def planned_styles(
    styles: Sequence, config: StyleConfig, max_dim: int | None, max_pixels: int | None
) -> list[tuple[Path, int, int]]:
    """``(style, height, width)`` of each style as it will be loaded, from its header.

    Raises:
      InputError: a style scaled past ``max_pixels`` (``--style-scale 1e6``).
    """
    shapes = []
    for path, dim in zip(styles, style_dims(styles, config, max_dim), strict=True):
        size = image.probe_size(path)
        if size is None:
            continue  # unreadable: loading says why, in one line
        height, width = size if dim is None else image.scaled_shape(*size, dim)
        need = objective.min_side(config, style=True)
        if min(height, width) < need:
            raise InputError(
                f"{path}: style is {width}x{height} px after scaling; the layers used need "
                f"both sides >= {need} px"
            )
        if max_pixels is not None and height * width > max_pixels:
            raise InputError(
                f"{path}: loaded with its longest side {dim} px it would be {width}x{height} "
                f"px, over max_pixels={max_pixels}"
            )
        shapes.append((Path(path), height, width))
    return shapes


def _load_regions(masks, mask_labels, n_styles: int, max_pixels) -> list[np.ndarray] | None:
    """The content regions, one ``(H, W)`` mask per style, from mask files or a label image."""
    if mask_labels is not None:
        regions = list(image.load_labels(mask_labels, max_pixels))
        if len(regions) != n_styles:
            raise InputError(
                f"{mask_labels}: {len(regions)} regions (colours other than black) for "
                f"{n_styles} --style images: give one style per region"
            )
        return regions
    if masks is None:
        return None
    return [image.load_mask(path, max_pixels) for path in masks]


def prepare(
    contents: Sequence[str | os.PathLike],
    styles: Sequence[str | os.PathLike],
    config: StyleConfig,
    max_dim: int | None = 512,
    batch_size: int = 8,
    process_index: int = 0,
    process_count: int = 1,
    max_pixels: int | None = image.MAX_PIXELS,
) -> Work:
    """:func:`plan` then :func:`load`: the jobs, their images and batches."""
    jobs = plan(contents, styles, config, process_index, process_count)
    return load(jobs, styles, config, max_dim, batch_size, max_pixels)


def _check_size(path, array: np.ndarray, config, max_dim: int | None, style=False) -> None:
    try:
        objective.check_size(config, array.shape, "image", style)
    except ValueError as e:
        raise ImageError(f"{path}: {e} (after scaling to max-dim {max_dim})") from None


def _batch_config(config: StyleConfig, jobs: Sequence[Job]) -> StyleConfig:
    """``config`` for one batch: each swept field replaced by the batch's per-image values
    (or its one value, for settings that change the program), and per-style settings by
    each image's style's, when each image has one style."""
    swept = {field for job in jobs for field, _ in job.setting}
    changes = {f: tuple(dict(job.setting)[f] for job in jobs) for f in swept}
    for field in STATIC_SWEPT:
        if field in changes:
            changes[field] = changes[field][0]  # _batches groups jobs by these
    if jobs[0].style >= 0:
        for field in ("style_weights", "style_scales"):
            if getattr(config, field) is not None:
                changes[field] = tuple(getattr(config, field)[job.style] for job in jobs)
    return config.replace(**changes)


def _batch_masks(work: Work, shape: tuple[int, ...]) -> np.ndarray | None:
    """The regions fitted to a batch's content ``shape``, ``(K, H, W)``."""
    if work.masks is None:
        return None
    return np.stack(
        [np.asarray(objective.resize_masks(m[None], *shape[:2])[0]) for m in work.masks]
    )


def run(
    work: Work,
    outputs: dict[Job, Path],
    *,
    params,
    metadata: dict | None = None,
    replace: bool = False,
    **stylize_options,
) -> Iterator[tuple[Job, np.ndarray]]:
    """Stylise every batch and save each result atomically as soon as its batch ends.

    Args:
      work: from :func:`prepare`.
      outputs: from :func:`nst_jax.cli.outputs.output_paths`.
      replace: whether a result replaces an existing file (else a file that appeared since
        the outputs were checked, another run's, is kept and this run refused).
      params: VGG19 params.
      metadata: provenance stored in each PNG result, with the job's own inputs added.
      **stylize_options: passed to :func:`nst_jax.stylize` (``on_chunk``, ``resume``, ...).

    Yields:
      ``(job, result image)`` after each result is written.
    """
    for jobs in work.batches:
        config = _batch_config(work.config, jobs)
        contents = np.stack([work.contents[job.content] for job in jobs])
        # Style -1: every image blends all the styles, or has all the regions.
        shared = jobs[0].style < 0
        styles = work.styles if shared else [work.styles[job.style] for job in jobs]
        masks = _batch_masks(work, contents.shape[1:])
        result = stylize(
            contents,
            styles,
            params=params,
            config=config,
            masks=masks,
            style_masks=work.style_masks if masks is not None else None,
            **stylize_options,
        )
        images = np.asarray(result.image).reshape(len(jobs), *contents.shape[1:])
        for job, result_image in zip(jobs, images, strict=True):
            meta = job_metadata(job, metadata)
            image.save(outputs[job], result_image, metadata=meta, replace=replace)
            yield job, result_image


def job_metadata(job: Job, metadata: dict | None) -> dict | None:
    """``metadata`` with the job's content file and setting added (``None`` stays ``None``)."""
    if metadata is None:
        return None
    # The job's own values of swept settings, so that --from replays this one result.
    config = {**metadata["config"], **dict(job.setting)} if "config" in metadata else None
    job_meta = {**metadata, "content": str(job.content), "setting": dict(job.setting)}
    return job_meta if config is None else {**job_meta, "config": config}


def init_distributed() -> tuple[int, int]:
    """Join a multi-host run if asked to; return ``(process index, process count)``.

    ``NST_JAX_DISTRIBUTED=1`` calls ``jax.distributed.initialize()`` with JAX's own cluster
    detection (Cloud TPU pod slices, Slurm, Open MPI). Elsewhere set ``JAX_COORDINATOR_ADDRESS``
    (host:port of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` on every host.
    Each host then stylises every ``count``-th job on its own devices and writes only its own
    results, so hosts never wait for each other.
    """
    import jax

    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    elif env.get("NST_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
    return jax.process_index(), jax.process_count()
