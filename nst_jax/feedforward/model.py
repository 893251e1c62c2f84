"""A trained model's folder, and applying a model to images.

A model folder holds ``params.msgpack`` (the network's params, a Flax msgpack: no pickle)
and ``model.json``: the method, the training settings, the objective (Johnson), the style
(Johnson), the VGG19 weights' MD5 and the params file's SHA-256. An imported network's
record (``magenta26``, ``arbitrary``: :mod:`.onnx_import`) holds its architecture, its
source files' SHA-256 and their licence in place of the training settings. ``model.json`` is written
last, so a folder without it is not a model. On load everything is checked before use: the
record's fields, the params file's digest, and the params' structure, shapes and values
against the network the settings describe.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from nst_jax.core.conv import NETWORK_WINOGRAD_MIN_PIXELS, prepare_params, resolve_conv
from nst_jax.core.fields import check_count
from nst_jax.core.targets import check_image
from nst_jax.errors import InputError, shown
from nst_jax.feedforward import adain, pretrained
from nst_jax.feedforward.magenta import METHODS as IMPORTED
from nst_jax.feedforward.magenta import MagentaSettings
from nst_jax.feedforward.train import TrainSettings, example_input, network
from nst_jax.files import json_record
from nst_jax.files.atomic import atomic_write, check_writable

RECORD_FILE, PARAMS_FILE = "model.json", "params.msgpack"
FORMAT = "nst_jax-model"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded model: its settings (an imported network's architecture), record and params
    (NumPy arrays)."""

    settings: TrainSettings | MagentaSettings
    record: dict
    params: Any


def save_model(
    folder: str | os.PathLike, settings: TrainSettings | MagentaSettings, params: Any, info: dict
) -> None:
    """Write ``params`` and the record (``info`` added to the method and settings: an
    imported network's architecture is stored as ``architecture``)."""
    import hashlib

    folder = Path(folder)
    payload = serialization.msgpack_serialize(jax.tree.map(np.asarray, params))
    atomic_write(folder / PARAMS_FILE, lambda tmp: tmp.write_bytes(payload))
    field = "architecture" if isinstance(settings, MagentaSettings) else "settings"
    record = {
        "format": FORMAT,
        "version": VERSION,
        "method": settings.method,
        field: dataclasses.asdict(settings),
        "params_sha256": hashlib.sha256(payload).hexdigest(),
        **info,
    }
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / RECORD_FILE, lambda tmp: tmp.write_text(text))


def check_destination(folder: str | os.PathLike, force: bool, reads=()) -> Path:
    """``folder`` as a place to write a model: a folder (or nothing yet) whose model files
    are absent, or replaced with ``force``, and are none of ``reads`` (the inputs).

    Raises:
      InputError: refused, before any work (one line).
    """
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise InputError(f"-o: a model folder's path is needed, got {folder!r}")
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise InputError(f"{shown(folder)}: a link to nothing")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{shown(folder)}: exists and is not a folder")
    files = [folder / RECORD_FILE, folder / PARAMS_FILE]
    for path in files:
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise InputError(f"{shown(path)}: not a regular file")
    if not force and any(path.exists() for path in files):
        raise InputError(f"{shown(folder)}: already holds a model (--force replaces it)")
    check_not_inputs(files, reads)
    check_writable(files[0], "the model")
    return folder


def check_not_inputs(outputs, reads) -> None:
    """Refuse any of ``outputs`` that is one of ``reads`` (the same file, through a link or
    a hard link): inputs are never replaced, ``--force`` or not.

    Raises:
      InputError: one line naming both.
    """
    for path in map(Path, outputs):
        for read in map(Path, reads):
            if path.exists() and read.exists() and os.path.samefile(path, read):
                raise InputError(f"{shown(path)}: is the input {shown(read)}; inputs are "
                                 "never replaced")  # fmt: skip


def replace_model(folder: Path, settings: MagentaSettings, params: Any, info: dict) -> None:
    """Write a model into the checked ``folder`` (:func:`check_destination`): the old
    record goes first, so a failure leaves no model rather than a mismatched one.

    Raises:
      InputError: the folder cannot be written (one line).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RECORD_FILE).unlink(missing_ok=True)
        save_model(folder, settings, params, info)
    except OSError as e:
        raise InputError(f"{shown(e.filename or folder)}: cannot write ({e.strerror})") from None


def read_record(folder: str | os.PathLike) -> dict:
    """The checked ``model.json`` of ``folder``.

    Raises:
      InputError: not a model folder, or a damaged record (one line).
    """
    folder = Path(folder)
    path = folder / RECORD_FILE
    if not path.is_file():
        raise InputError(f"{shown(folder)}: not a model folder (no {RECORD_FILE})")
    try:
        record = json_record.read(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{shown(path)}: damaged model record ({e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{shown(path)}: not an nst_jax model record")
    if record.get("version") != VERSION:
        raise InputError(f"{shown(path)}: model format version {record.get('version')!r}")
    try:
        settings = settings_of(record)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{shown(path)}: damaged model settings ({e})") from None
    if settings.method != record.get("method"):
        raise InputError(f"{shown(path)}: damaged model record (two methods)")
    digest = record.get("params_sha256")
    if not (isinstance(digest, str) and len(digest) == 64):
        raise InputError(f"{shown(path)}: damaged model record (no params_sha256)")
    return record


def settings_of(record: dict) -> TrainSettings | MagentaSettings:
    """The settings of a record: a trained model's, or an imported network's architecture."""
    if record.get("method") in IMPORTED:
        return pretrained.settings_from_record(record["architecture"])
    return TrainSettings(**record["settings"]).resolved()


def load_model(folder: str | os.PathLike, method: str | None = None) -> Model:
    """The model in ``folder``, checked (module docstring); ``method`` refuses another's.

    Raises:
      InputError: not a model, a damaged one, or one of another method (one line).
    """
    import hashlib

    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a model folder's path, got {folder!r}")
    folder = Path(folder)
    record = read_record(folder)
    if method is not None and record["method"] != method:
        raise InputError(f"{shown(folder)}: a {record['method']} model, not {method}")
    path = folder / PARAMS_FILE
    try:
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):  # a pipe would block
            raise InputError(f"{shown(path)}: not a regular file")
        payload = path.read_bytes()
    except OSError as e:
        raise InputError(f"{shown(path)}: cannot read ({e.strerror})") from None
    if hashlib.sha256(payload).hexdigest() != record.get("params_sha256"):
        raise InputError(f"{shown(path)}: damaged (its SHA-256 is not the record's)")
    settings = settings_of(record)
    return Model(settings, record, _checked_params(path, payload, settings))


def _checked_params(path: Path, payload: bytes, settings: TrainSettings) -> Any:
    """The params in ``payload``, with the structure and shapes of ``settings``' network."""
    try:
        params = serialization.msgpack_restore(payload)
    except Exception as e:  # msgpack raises several unrelated types for corrupt input
        raise InputError(f"{shown(path)}: damaged params ({type(e).__name__})") from None
    if isinstance(settings, MagentaSettings):
        expected = pretrained.expected_params(settings)
    else:
        init = network(settings).init
        expected = jax.eval_shape(init, jax.random.key(0), example_input(settings))
    try:
        same = _leaf_paths(params) == _leaf_paths(serialization.to_state_dict(expected))
    except RecursionError:
        same = False
    if not same:
        raise InputError(f"{shown(path)}: params of another network (other entries)")
    try:
        params = serialization.from_state_dict(expected, params)
    except Exception as e:  # a foreign tree fails in many ways (AttributeError, ...)
        raise InputError(f"{shown(path)}: params of another network ({e})") from None
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        if not isinstance(got, np.ndarray) or got.shape != want.shape or got.dtype != want.dtype:
            raise InputError(f"{shown(path)}: params of another network (shapes differ)")
        if not np.all(np.isfinite(got)):
            raise InputError(f"{shown(path)}: params hold non-finite values")
    return params


def _leaf_paths(tree: Any) -> set[str] | None:
    """The paths of a restored state dict's leaves (``None``: not a tree of dicts)."""
    if not isinstance(tree, dict):
        return None
    paths = set()
    for key, value in tree.items():
        below = _leaf_paths(value) if isinstance(value, dict) else {""}
        if below is None or not isinstance(key, str):
            return None
        paths |= {f"{key}/{p}" for p in below}
    return paths


def _pad_to(image: jax.Array, multiple: int) -> jax.Array:
    """``image`` reflected at its bottom and right edges to sides that are multiples."""
    height, width = image.shape[:2]
    pad = ((0, -height % multiple), (0, -width % multiple), (0, 0))
    return jnp.pad(image, pad, mode="reflect" if min(height, width) > 1 else "edge")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _johnson(settings: TrainSettings, conv: str, params: Any, contents: jax.Array) -> jax.Array:
    def one(content):
        out = network(settings, conv).apply(params, _pad_to(content, 4))
        return out[: content.shape[0], : content.shape[1]]

    return jax.vmap(one)(contents)


@functools.partial(jax.jit, static_argnums=0)
def _adain(conv, params, vgg_params, contents, style_features, weights, alpha) -> jax.Array:
    def one(content):
        padded = _pad_to(content, 8)
        features = adain.encode(vgg_params, padded)[adain.ENCODER_LAYER]
        target = adain.blend_targets(features, style_features, weights, alpha)
        decoded = adain.Decoder(conv).apply(params, target)
        return jnp.clip(decoded, 0.0, 1.0)[: content.shape[0], : content.shape[1]]

    return jax.vmap(one)(contents)


def encode_styles(vgg_params: Any, styles: Sequence[jax.Array]) -> list[jax.Array]:
    """AdaIN's encoder features of each ``(h, w, 3)`` style image (any size): encode them
    once and pass them to :func:`apply_model` for every batch of a job."""
    return [
        adain.encode(vgg_params, _pad_to(jnp.asarray(s), 8))[adain.ENCODER_LAYER] for s in styles
    ]


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float when it is a number from 0 to 1 (not a bool).

    Raises:
      ValueError: anything else, naming ``alpha``.
    """
    real = isinstance(alpha, numbers.Real) and not isinstance(alpha, (bool, np.bool_))
    if not (real and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be a number from 0 to 1, got {alpha!r}")
    return float(alpha)


def apply_model(
    model: Model,
    contents: jax.Array,
    vgg_params: Any = None,
    styles: Sequence[jax.Array] = (),
    weights: Sequence[float] | None = None,
    alpha: float = 1.0,
    style_features: Sequence[jax.Array] | None = None,
    conv: str = "auto",
    pixel_steps: int | None = None,
    style_index: int | Sequence[int] | None = None,
) -> jax.Array:
    """Stylise ``(N, H, W, 3)`` contents in one forward pass (any ``H``, ``W``: the images
    are reflected up to the network's multiple and cropped back).

    Args:
      model: a loaded model.
      contents: images in [0, 1].
      vgg_params: VGG19 params (AdaIN's encoder; the weights it was trained with).
      styles: AdaIN and ``arbitrary``: one or more ``(h, w, 3)`` style images, mixed by
        ``weights``.
      weights: one per style (or style index), >= 0 (normalised to sum 1; ``None``: equal).
      alpha: AdaIN: 0 keeps the content's features, 1 takes the style's statistics;
        ``arbitrary``: 0 the content's own style vector, 1 the style's.
      style_features: the styles already encoded, in place of ``styles``: AdaIN's
        (:func:`encode_styles`), or an ``arbitrary`` model's style vectors
        (:func:`nst_jax.feedforward.pretrained.predict_styles`).
      conv: how the convolutions are computed: ``"direct"``, ``"winograd"`` (the project's
        CPU engine: :func:`nst_jax.core.conv.conv2d`) or ``"auto"`` (Winograd on CPU for
        runs of at least :data:`nst_jax.core.conv.NETWORK_WINOGRAD_MIN_PIXELS` pixels,
        whose faster calls repay its longer compilation).
      pixel_steps: the pixels the whole run applies the model to, for ``"auto"`` (a job's
        images x pixels; ``None``: this call's).
      style_index: ``magenta26``: the style (or styles, mixed by ``weights``) to apply.

    Returns:
      ``(N, H, W, 3)`` images in [0, 1].

    Raises:
      TypeError, ValueError: an argument of the wrong type, shape, dtype or range, named.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a loaded Model (load_model), got {type(model).__name__}")
    contents = check_image(contents, "contents", batched=True)
    if contents.ndim != 4:
        raise ValueError(f"contents: expected (N, H, W, 3), got {tuple(contents.shape)}; "
                         "add the batch axis (contents[None])")  # fmt: skip
    check_count("pixel_steps", pixel_steps, optional=True)
    if pixel_steps is None:
        pixel_steps = int(np.prod(contents.shape[:3]))
    conv = resolve_conv(conv, pixel_steps, NETWORK_WINOGRAD_MIN_PIXELS)
    alpha = check_alpha(alpha)
    if 0 in contents.shape[:3]:
        raise ValueError(f"contents: no pixels to stylise, shape {tuple(contents.shape)}")
    if isinstance(model.settings, MagentaSettings):
        if style_features is None:
            styles = [check_image(s, f"styles[{k}]") for k, s in enumerate(styles)]
        return pretrained.apply_pretrained(model, contents, style_index, styles, weights, alpha,
                                           style_features, conv)  # fmt: skip
    if style_index is not None:
        raise ValueError(f"style_index: for magenta26 models, not {model.settings.method}")
    if model.settings.method == "johnson":
        return _johnson(model.settings, conv, model.params, contents)
    if vgg_params is None:
        raise ValueError("vgg_params: an adain model encodes with VGG19: give its params")
    if style_features is None:
        styles = [check_image(s, f"styles[{k}]") for k, s in enumerate(styles)]
    encoded = encode_styles(vgg_params, styles) if style_features is None else style_features
    count = len(encoded)
    if count == 0:
        raise ValueError("styles: an adain model needs at least one style")
    weights = jnp.asarray(pretrained.mix_weights(weights, count))
    vgg_params = prepare_params(
        vgg_params, conv, layers=(adain.ENCODER_LAYER,), input_gradient=False
    )
    return _adain(conv, model.params, vgg_params, contents, encoded, weights, alpha)
