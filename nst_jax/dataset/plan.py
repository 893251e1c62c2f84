"""A dataset job's plan: every item (an input with its style(s) and setting), its output, its
seed and its batch, worked out from file names and image headers alone, before any pixel.

The plan is a pure function of the inputs, the styles and the settings: walking the same
folders gives the same items in the same batches, whichever machine or shard plans it. That
is what lets a killed job continue by planning again, and shards split one job without a
coordinator. Style choices and seeds come from a hash of the item's relative name and the
seed, never from an order: ``--styles-per-image 2 --seed 7`` gives each input the same two
styles whole, in shards or after kills.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from nst_jax.config import StyleConfig
from nst_jax.core import targets
from nst_jax.core.fields import check_choice, check_count, setting
from nst_jax.dataset import buckets
from nst_jax.dataset.styles import Styles, job_styles
from nst_jax.errors import InputError, shown
from nst_jax.files import image
from nst_jax.files.walk import as_paths, walk_inputs

# Short labels of the swept settings, in output names and sheet labels.
SHORT = {"content_weight": "cw", "style_weight": "sw", "tv_weight": "tv", "learning_rate": "lr"}
# Swept settings that change the program: a batch holds one value of each.
STATIC_SWEPT = ("style_loss",)


@dataclasses.dataclass(frozen=True)
class Item:
    """One result to make.

    Attributes:
      index: its place in the plan.
      input: the content file.
      output: the result's path (under the job's folder).
      styles: indices of its style images (all of them for a blend or regions).
      setting: ``((field, value), ...)``: its values of the swept settings.
      seed: its own seed (noise initialisation), from its name and the job's seed.
      batch: its batch's index, or -1 when it failed at planning.
      shape: ``(height, width)`` of its result, or None when it failed at planning.
      reason: why it failed at planning, or None.
    """

    index: int
    input: str
    output: str
    styles: tuple[int, ...]
    setting: tuple
    seed: int
    batch: int = -1
    shape: tuple[int, int] | None = None
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Batch:
    """Items run together as one compiled program of ``shape`` for ``slots`` images (a
    batch with fewer items is padded to them, so it reuses its bucket's program)."""

    index: int
    shape: tuple[int, int]
    items: tuple[int, ...]
    program: tuple = ()
    slots: int = 1

    @property
    def key(self) -> tuple:
        """What the compiled program depends on: its shape, static settings and slots."""
        return (self.shape, self.program, self.slots)


@dataclasses.dataclass
class Plan:
    """A whole job: its settings (JSON-able, compared when it is continued), its styles, its
    items and batches; ``passed``: the files its walk passed over, with why;
    ``style_names``: each style's name in outputs and records."""

    out: Path
    settings: dict
    styles: tuple[str, ...]
    items: list[Item]
    batches: list[Batch]
    passed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    style_names: tuple[str, ...] = ()

    def shard(self, index: int, count: int) -> list[Batch]:
        """The batches of part ``index`` of ``count`` (``--shard I/N``): every count-th."""
        return self.batches[index::count]

    @property
    def settings_hash(self) -> str:
        """The SHA-256 of the settings, as each item records them."""
        text = json.dumps(self.settings, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


BUCKETS = ("grid", "fixed")
FITS = ("crop", "pad")
EXTENSIONS = tuple(image.SAVE_FORMATS)


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """How a job is planned, beyond the run's ``StyleConfig``; each field's help is its
    metadata (the ``nst-jax stylize`` options are generated from it; the fields of kind
    ``"derived"`` follow from other options).

    Attributes:
      max_dim: longest side of every content (and style) after loading.
      batch_size: items per batch (the last of a bucket is padded to it, so every batch of
        a bucket runs one program).
      styles_per_image: K styles chosen per input by hash, or None: every style.
      buckets: ``"grid"`` or ``"fixed"`` (:mod:`nst_jax.dataset.buckets`).
      size: ``(height, width)`` with ``"fixed"``.
      fit: ``"crop"`` or ``"pad"`` with ``"fixed"``.
      ext: the results' extension.
      style_losses: several style losses, one result each; or None.
      regions: content masks pair each style with a region (every style in each item).
    """

    max_dim: int = setting(
        image.DEFAULT_MAX_DIM, "longest side of content and style after loading, in px"
    )
    batch_size: int = setting(
        8, "most images stylised at once (images of equal size share a batch)"
    )
    styles_per_image: int | None = setting(
        None,
        "K of the --style images per content, chosen by a hash of its name and --seed "
        "(default: every style)",
    )
    buckets: str = setting("grid", "grid of a few shapes, or fixed (size)", "derived", BUCKETS)
    size: tuple[int, int] | None = setting(
        None,
        "every result this size (HxW; the option reads WxH; --fit) (default: each keeps its "
        "aspect, run at one of a few shapes)",
        "size",
    )
    fit: str = setting("crop", "how --size is filled", choices=FITS)
    ext: str = setting(".png", "the results' extension", "derived", EXTENSIONS)
    style_losses: tuple[str, ...] | None = setting(
        None, "several style losses, one result each", "derived"
    )
    regions: bool = setting(False, "content masks pair each style with a region", "derived")

    def __post_init__(self) -> None:
        check_count("max_dim", self.max_dim)
        check_count("batch_size", self.batch_size)
        check_count("styles_per_image", self.styles_per_image, optional=True)
        check_choice("buckets", self.buckets, BUCKETS)
        check_choice("fit", self.fit, FITS)
        check_choice("ext", self.ext, EXTENSIONS)
        if self.size is not None:
            size = tuple(self.size)
            if len(size) != 2:
                raise ValueError(f"size must be (height, width), got {self.size!r}")
            for side in size:
                check_count("size", side)
            object.__setattr__(self, "size", size)
        if self.buckets == "fixed" and self.size is None:
            raise ValueError("buckets fixed needs a size: give size=(height, width)")
        if self.style_losses is not None:
            object.__setattr__(self, "style_losses", tuple(self.style_losses))


def plan_job(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    styles: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: StyleConfig,
    job: JobSettings = JobSettings(),
    files_from: str | os.PathLike | None = None,
    extra_settings: dict | None = None,
    styles_from: str | os.PathLike | None = None,
) -> Plan:
    """Plan a job from file names and image headers (nothing is decoded).

    Args:
      inputs: content files and folders (walked recursively: :mod:`.walk`).
      styles: style image files and folders of them (:mod:`.styles`), or
        :class:`~nst_jax.dataset.styles.Styles` made already.
      out: the folder the results go to, mirroring the inputs' tree (never walked).
      config: the run's settings (sweeps as tuples).
      job: how the job is planned (:class:`JobSettings`).
      files_from: a file listing more inputs, one per line.
      extra_settings: more settings to record and compare (the weights' hash, say).
      styles_from: a file listing more styles, one per line.

    Raises:
      TypeError: an argument of the wrong type, named.
      InputError: no inputs, a missing or doubled input or style, a style that is no
        image, a bad count of styles, or two results with one name (one line each).
    """
    _check_arguments(out, config, job, extra_settings)
    chosen = styles if isinstance(styles, Styles) else job_styles(styles, styles_from)
    _check_job(chosen, config, job)
    walked = walk_inputs(as_paths(inputs, "inputs"), files_from, exclude=out)
    sets = [_styles_of(rel, chosen.names, config, job) for _, rel in walked.found]
    items = _name_items(walked.found, sets, chosen.names, config, job, Path(out))
    items, batches = _batch(items, config, job)
    settings = _settings(chosen, config, job, extra_settings)
    return Plan(Path(out), settings, chosen.paths, items, batches, walked.passed, chosen.names)


def _check_arguments(out, config, job, extra) -> None:
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder's path, got {out!r}")
    if not isinstance(config, StyleConfig):
        raise TypeError(f"config must be a StyleConfig, got {type(config).__name__}")
    if not isinstance(job, JobSettings):
        raise TypeError(f"job must be a JobSettings, got {type(job).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra_settings must be a dict, got {type(extra).__name__}")


def _check_job(styles: Styles, config: StyleConfig, job: JobSettings) -> None:
    count = len(styles.paths)
    alone = config.style_blend is None and not job.regions  # a result per style
    twice = [p for k, p in enumerate(styles.paths) if p in styles.paths[:k]]
    if alone and twice:
        raise InputError(f"{shown(twice[0])}: given twice as a style; give each style once")
    if job.styles_per_image is not None and job.styles_per_image > count:
        raise InputError(f"styles_per_image={job.styles_per_image} with {count} style images")
    try:
        config.check_style_count(count)
    except ValueError as e:
        raise InputError(str(e)) from None


def hashed(*parts: object) -> int:
    """A 64-bit number from ``parts``: the same on every machine and in every order. A
    name's bytes are the file system's (:func:`nst_jax.files.walk.name_bytes`)."""
    text = "\0".join(map(str, parts))
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # non-negative, within int64


def _styles_of(rel: str, names: Sequence[str], config, job: JobSettings) -> list[tuple]:
    """The style sets of one input: all styles together (a blend, regions), K chosen by
    a hash of the input's and the style's names and the seed, or each style alone."""
    if config.style_blend is not None or job.regions:
        return [tuple(range(len(names)))]
    if job.styles_per_image is None:
        return [(s,) for s in range(len(names))]
    ranked = sorted(range(len(names)), key=lambda s: hashed(rel, config.seed, names[s]))
    return [(s,) for s in sorted(ranked[: job.styles_per_image])]


def settings_of(config: StyleConfig) -> list[tuple]:
    """The swept settings as ``((field, value), ...)`` per setting; ``[()]`` without."""
    if config.sweep_size is None:
        return [()]
    swept = [f for f in SHORT if isinstance(getattr(config, f), tuple)]
    return [tuple((f, getattr(config, f)[i]) for f in swept) for i in range(config.sweep_size)]


def _name_items(found, style_sets, names, config, job: JobSettings, out: Path) -> list[Item]:
    """Every input x style set x setting x style loss, named after the input's relative
    path (``a/b.jpg`` -> ``OUT/a/b[_style][_sw0.01][_w2].png``)."""
    losses = [(("style_loss", loss),) for loss in job.style_losses or ()] or [()]
    several = max(len(sets) for sets in style_sets) > 1
    items, seen = [], {}
    for (path, rel), sets in zip(found, style_sets, strict=True):
        stem, seed = PurePosixPath(rel).with_suffix(""), hashed(rel, config.seed)
        for chosen, swept, loss in itertools.product(sets, settings_of(config), losses):
            parts = [stem.name, *([names[chosen[0]]] if several else [])]
            parts += [f"{SHORT[f]}{v:g}" for f, v in swept] + [v for _, v in loss]
            output = out / (str(stem.parent / "_".join(parts)) + job.ext)
            item = Item(len(items), str(path), str(output), chosen, swept + loss, seed)
            _refuse_clash(seen, item)
            items.append(item)
    return items


def _refuse_clash(seen: dict, item: Item) -> None:
    first = seen.setdefault(item.output, item)
    if first is not item:
        raise InputError(
            f"{shown(item.input)}: its result would be {shown(item.output)}, as that of "
            f"{shown(first.input)}; rename an input"
        )


def _batch(items: list[Item], config: StyleConfig, job: JobSettings):
    """Each item's shape from its header, and the batches of those with one."""
    smallest = targets.min_side(config)
    shapes: dict[str, tuple] = {}
    planned = []
    for item in items:
        if item.input not in shapes:
            shapes[item.input] = _shape(item.input, job, smallest)
        shape, reason = shapes[item.input]
        planned.append(dataclasses.replace(item, shape=shape, reason=reason))
    batches = batches_of([it for it in planned if it.reason is None], config, job, 0)
    return with_batches(planned, batches), batches


def batches_of(items: list[Item], config: StyleConfig, job: JobSettings, first: int):
    """The batches of ``items`` (each with its shape), numbered from ``first``: items of
    one bucket and program, sorted by style, ``batch_size`` at a time. Every batch of a
    bucket runs its one program, padded to the batch size: an image's result does not
    depend on which others share its batch (the package's docstring)."""
    groups: dict[tuple, list[Item]] = {}
    for item in items:
        groups.setdefault(batch_key(item, config, job), []).append(item)
    chunks = []
    for (bucket, program), members in sorted(groups.items(), key=lambda g: g[1][0].index):
        members.sort(key=lambda it: (it.styles, it.index))
        indices = [it.index for it in members]
        for start in range(0, len(indices), job.batch_size):
            chunks.append((bucket, program, indices[start : start + job.batch_size]))
    return [
        Batch(first + k, bucket, tuple(chunk), program, job.batch_size)
        for k, (bucket, program, chunk) in enumerate(chunks)
    ]


def batch_key(item: Item, config: StyleConfig, job: JobSettings) -> tuple[tuple, tuple]:
    """The bucket (the shape it runs at) and program (static swept settings) of the batches
    ``item`` can run in."""
    bucket = (
        job.size
        if job.buckets == "fixed"
        else buckets.grid_shape(*item.shape, job.max_dim, targets.min_side(config))
    )
    return tuple(bucket), tuple((f, v) for f, v in item.setting if f in STATIC_SWEPT)


def with_batches(items: list[Item], batches: list[Batch]) -> list[Item]:
    """``items`` with each batch's members marked as in it."""
    items = list(items)
    for batch in batches:
        for index in batch.items:
            items[index] = dataclasses.replace(items[index], batch=batch.index)
    return items


def _shape(path: str, job: JobSettings, smallest: int) -> tuple:
    """``(result shape, None)`` from the image's header, or ``(None, reason)``."""
    if job.buckets == "fixed":
        size = image.probe_size(path)
        return (job.size, None) if size is not None else (None, _unreadable(path))
    size = image.probe_size(path)
    if size is None:
        return None, _unreadable(path)
    shape = image.scaled_shape(*size, job.max_dim)
    if why := targets.too_small(shape[1], shape[0], smallest, f" at max_dim={job.max_dim}"):
        return None, f"{size[1]}x{size[0]} px is {why}"
    return shape, None


def _unreadable(path: str) -> str:
    """Why a header could not be read, as decoding the whole file says it (one line: a
    truncated file says so, not a pixel limit)."""
    try:
        image.decode(path)
    except Exception as e:  # noqa: BLE001 (any failure is the reason to report)
        return str(e).removeprefix(f"{path}: ")
    return "unreadable image header"


def style_dims(config: StyleConfig, count: int, max_dim: int | None) -> list[int | None]:
    """The longest side each of ``count`` styles is loaded at: ``max_dim``, or with a style
    scale that times ``max_dim`` (the style is resized relative to the content, so it is
    loaded at that size rather than upsampled from ``max_dim`` later)."""
    scales = config.style_scales or (None,) * count
    dims = []
    for scale in scales:
        scale = scale if scale is not None else config.style_scale
        dims.append(max_dim if scale is None or max_dim is None else max(1, round(scale * max_dim)))
    return dims


def _settings(styles: Styles, config: StyleConfig, job: JobSettings, extra: dict | None) -> dict:
    """The job's settings as JSON-able values, compared field by field when it continues:
    a style whose bytes changed (its SHA-256) is another job."""
    settings = {
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "job": json.loads(json.dumps(dataclasses.asdict(job))),
        "styles": list(styles.paths),
        "styles_sha256": list(styles.sha256),
    }
    return {**settings, **json.loads(json.dumps(extra or {}))}
